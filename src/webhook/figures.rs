//! Delivery figures per webhook endpoint, for `/health`, `/metrics` and
//! `cctelegram status` (CONTRACT section 6).
//!
//! The global counters say that webhooks fail; these say which receiver
//! fails, how slowly it answers and what it last said, which is what the
//! owner needs to fix it. Counted per attempt, so they match what a receiver
//! sees: `attempts` (every request), `delivered` (2xx answers), `failed`
//! (the rest, including timeouts and refused connections), `retries`
//! (requests carrying `X-CCTelegram-Retry-Count`), `dead_letters`
//! (deliveries moved to the dead letter queue). The response times are those
//! of the last [`SAMPLES`] attempts. In memory only: they start again at
//! zero with the daemon, like the other counters.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::Mutex;

use serde_json::{json, Value};

use crate::clock;
use crate::webhook::endpoint::redact_url;

/// Response times kept per endpoint (the spec's WebhookMetrics keeps 1000).
pub const SAMPLES: usize = 1000;

/// How long an endpoint must have failed every attempt before the
/// `webhook_delivery` check warns and names it.
pub const FAILING_WARN_MS: u64 = 3_600_000;

/// One endpoint's figures.
#[derive(Debug, Clone, Default)]
pub struct Endpoint {
    pub attempts: u64,
    pub delivered: u64,
    pub failed: u64,
    pub retries: u64,
    pub dead_letters: u64,
    /// Response times of the latest attempts, µs.
    times_us: VecDeque<u64>,
    pub last_error: Option<String>,
    pub last_error_ms: Option<u64>,
    /// Unix ms of the first failed attempt since the last success.
    pub failing_since_ms: Option<u64>,
}

/// How one attempt went, as the figures count it.
#[derive(Debug, Clone, PartialEq)]
pub enum Attempt {
    Delivered,
    /// Failed; `dead` when the delivery went to the dead letter queue.
    Failed {
        error: String,
        dead: bool,
    },
}

impl Endpoint {
    /// Percent of attempts answered 2xx, one decimal; None before any.
    pub fn delivery_rate(&self) -> Option<f64> {
        (self.attempts > 0)
            .then(|| (self.delivered as f64 * 1000.0 / self.attempts as f64).round() / 10.0)
    }

    pub fn mean_ms(&self) -> Option<f64> {
        if self.times_us.is_empty() {
            return None;
        }
        let sum: u64 = self.times_us.iter().sum();
        Some(round1(sum as f64 / self.times_us.len() as f64 / 1000.0))
    }

    /// The 95th percentile (nearest rank) of the kept response times.
    pub fn p95_ms(&self) -> Option<f64> {
        if self.times_us.is_empty() {
            return None;
        }
        let mut v: Vec<u64> = self.times_us.iter().copied().collect();
        v.sort_unstable();
        let rank = ((v.len() as f64) * 0.95).ceil() as usize;
        Some(round1(v[rank.clamp(1, v.len()) - 1] as f64 / 1000.0))
    }

    /// Whether every attempt has failed for at least [`FAILING_WARN_MS`].
    pub fn failing_for_long(&self, now_ms: u64) -> bool {
        self.failing_since_ms
            .is_some_and(|at| clock::age_ms(at, now_ms) >= FAILING_WARN_MS)
    }
}

fn round1(f: f64) -> f64 {
    (f * 10.0).round() / 10.0
}

/// The figures of every endpoint that has been tried, by URL.
#[derive(Debug, Default)]
pub struct Figures {
    by_url: Mutex<HashMap<String, Endpoint>>,
}

impl Figures {
    /// Counts one attempt to `url`: `retry` when it was not the first of
    /// its delivery, `elapsed_us` its time, `now_ms` when it ended.
    pub fn record(&self, url: &str, retry: bool, elapsed_us: u64, result: Attempt, now_ms: u64) {
        let mut map = self.by_url.lock().unwrap_or_else(|p| p.into_inner());
        let e = map.entry(url.to_string()).or_default();
        e.attempts += 1;
        if retry {
            e.retries += 1;
        }
        if e.times_us.len() >= SAMPLES {
            e.times_us.pop_front();
        }
        e.times_us.push_back(elapsed_us);
        match result {
            Attempt::Delivered => {
                e.delivered += 1;
                e.failing_since_ms = None;
            }
            Attempt::Failed { error, dead } => {
                e.failed += 1;
                if dead {
                    e.dead_letters += 1;
                }
                e.last_error = Some(error);
                e.last_error_ms = Some(now_ms);
                e.failing_since_ms.get_or_insert(now_ms);
            }
        }
    }

    /// The figures of `urls` (the configured endpoints, in order), then of
    /// any other endpoint tried since the start (one removed by a reload).
    pub fn snapshot(&self, urls: &[String]) -> Vec<(String, Endpoint)> {
        let map = self.by_url.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<(String, Endpoint)> = urls
            .iter()
            .map(|u| (u.clone(), map.get(u).cloned().unwrap_or_default()))
            .collect();
        let mut rest: Vec<(String, Endpoint)> = map
            .iter()
            .filter(|(u, _)| !urls.contains(u))
            .map(|(u, e)| (u.clone(), e.clone()))
            .collect();
        rest.sort_by(|a, b| a.0.cmp(&b.0));
        out.extend(rest);
        out
    }
}

/// The `webhooks` section of `/health`: one object per endpoint, its URL
/// without credentials.
pub fn health_json(snapshot: &[(String, Endpoint)]) -> Value {
    Value::Array(
        snapshot
            .iter()
            .map(|(url, e)| {
                json!({
                    "endpoint": redact_url(url),
                    "attempts": e.attempts,
                    "delivered": e.delivered,
                    "failed": e.failed,
                    "retries": e.retries,
                    "dead_letters": e.dead_letters,
                    "delivery_rate": e.delivery_rate(),
                    "mean_response_time_ms": e.mean_ms(),
                    "p95_response_time_ms": e.p95_ms(),
                    "last_error": e.last_error,
                    "last_error_at": e.last_error_ms.map(clock::iso8601),
                    "failing_since": e.failing_since_ms.map(clock::iso8601),
                })
            })
            .collect(),
    )
}

/// A Prometheus label value: backslash, double quote and newline escaped.
fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The per-endpoint families of `/metrics`, labelled `endpoint="<url>"`.
pub fn prometheus(snapshot: &[(String, Endpoint)]) -> String {
    type Get = fn(&Endpoint) -> Option<f64>;
    let families: [(&str, &str, &str, Get); 9] = [
        (
            "cctelegram_webhook_endpoint_attempts_total",
            "counter",
            "Webhook attempts to this endpoint",
            |e| Some(e.attempts as f64),
        ),
        (
            "cctelegram_webhook_endpoint_delivered_total",
            "counter",
            "Attempts this endpoint answered 2xx",
            |e| Some(e.delivered as f64),
        ),
        (
            "cctelegram_webhook_endpoint_failed_total",
            "counter",
            "Attempts to this endpoint that failed",
            |e| Some(e.failed as f64),
        ),
        (
            "cctelegram_webhook_endpoint_retries_total",
            "counter",
            "Attempts to this endpoint that were retries",
            |e| Some(e.retries as f64),
        ),
        (
            "cctelegram_webhook_endpoint_dead_letters_total",
            "counter",
            "Deliveries to this endpoint moved to the dead letter queue",
            |e| Some(e.dead_letters as f64),
        ),
        (
            "cctelegram_webhook_endpoint_delivery_rate_percent",
            "gauge",
            "Percent of attempts to this endpoint answered 2xx",
            Endpoint::delivery_rate,
        ),
        (
            "cctelegram_webhook_endpoint_response_mean_seconds",
            "gauge",
            "Mean time of the latest attempts to this endpoint",
            |e| e.mean_ms().map(|ms| ms / 1000.0),
        ),
        (
            "cctelegram_webhook_endpoint_response_p95_seconds",
            "gauge",
            "95th percentile time of the latest attempts to this endpoint",
            |e| e.p95_ms().map(|ms| ms / 1000.0),
        ),
        (
            "cctelegram_webhook_endpoint_last_error_timestamp_seconds",
            "gauge",
            "Unix time of the last failed attempt to this endpoint",
            |e| e.last_error_ms.map(|ms| ms as f64 / 1000.0),
        ),
    ];
    let mut out = String::new();
    for (name, kind, help, get) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (url, e) in snapshot {
            if let Some(v) = get(e) {
                let _ = writeln!(
                    out,
                    "{name}{{endpoint=\"{}\"}} {v}",
                    label(&redact_url(url))
                );
            }
        }
    }
    out
}

/// The endpoints section of `cctelegram status`, from `/health`'s JSON.
pub fn status_lines(h: &Value) -> String {
    let Some(list) = h["webhooks"].as_array().filter(|l| !l.is_empty()) else {
        return String::new();
    };
    let num = |v: &Value| match v.as_f64() {
        Some(f) => format!("{f}"),
        None => "-".into(),
    };
    let mut out = String::from("\nWEBHOOK ENDPOINT\n");
    for e in list {
        let _ = writeln!(out, "{}", e["endpoint"].as_str().unwrap_or(""));
        let _ = writeln!(
            out,
            "  {} attempts, {} delivered, {} failed, {} retries, {} dead letters; rate {}%, mean {} ms, p95 {} ms",
            e["attempts"], e["delivered"], e["failed"], e["retries"], e["dead_letters"],
            num(&e["delivery_rate"]), num(&e["mean_response_time_ms"]), num(&e["p95_response_time_ms"]),
        );
        if let Some(err) = e["last_error"].as_str() {
            let _ = writeln!(
                out,
                "  last error at {}: {err}",
                e["last_error_at"].as_str().unwrap_or("?")
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(dead: bool) -> Attempt {
        Attempt::Failed {
            error: "HTTP 503".into(),
            dead,
        }
    }

    #[test]
    fn attempts_add_up_and_times_are_summarised() {
        let f = Figures::default();
        let url = "https://u:p@x.example/hook?token=t";
        f.record(url, false, 10_000, failed(false), 1_000);
        f.record(url, true, 30_000, failed(true), 2_000);
        f.record(url, false, 20_000, Attempt::Delivered, 3_000);
        let snap = f.snapshot(&[url.to_string(), "https://idle/".into()]);
        let e = &snap[0].1;
        assert_eq!(
            (e.attempts, e.delivered, e.failed, e.retries, e.dead_letters),
            (3, 1, 2, 1, 1)
        );
        assert_eq!(e.delivery_rate(), Some(33.3));
        assert_eq!(e.mean_ms(), Some(20.0));
        assert_eq!(e.p95_ms(), Some(30.0));
        assert_eq!(e.last_error_ms, Some(2_000));
        assert_eq!(e.failing_since_ms, None, "a success ends the failing run");
        assert_eq!(snap[1].1.attempts, 0);
        let text = prometheus(&snap);
        assert!(text.contains(
            "cctelegram_webhook_endpoint_attempts_total{endpoint=\"https://***@x.example/hook?token=***\"} 3\n"
        ), "{text}");
        assert!(!text.contains("u:p") && !text.contains("token=t"));
        let h = health_json(&snap);
        assert_eq!(h[0]["retries"], json!(1));
        assert_eq!(h[1]["delivery_rate"], Value::Null);
        let lines = status_lines(&json!({ "webhooks": h }));
        assert!(
            lines.contains("3 attempts, 1 delivered, 2 failed"),
            "{lines}"
        );
    }

    #[test]
    fn an_endpoint_failing_everything_for_an_hour_is_flagged() {
        let f = Figures::default();
        f.record("https://x/", false, 1, failed(false), 1_000);
        f.record("https://x/", true, 1, failed(true), 2_000_000);
        let e = f.snapshot(&[]).remove(0).1;
        assert!(!e.failing_for_long(1_000 + FAILING_WARN_MS - 1));
        assert!(e.failing_for_long(1_000 + FAILING_WARN_MS));
    }

    #[test]
    fn only_the_latest_samples_are_kept() {
        let f = Figures::default();
        for i in 0..(SAMPLES as u64 + 10) {
            f.record("https://x/", false, i * 1000, Attempt::Delivered, i);
        }
        let e = f.snapshot(&[]).remove(0).1;
        assert_eq!(e.times_us.len(), SAMPLES);
        assert_eq!(e.attempts, SAMPLES as u64 + 10);
        assert_eq!(e.p95_ms(), Some(959.0));
    }
}
