//! Counters, gauges and latency histograms every part of the daemon
//! updates, and their Prometheus text form for `GET /metrics`.
//!
//! Plain atomics: cheap enough for the hot path, readable from any thread
//! without a lock, and nothing here allocates per event.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A fixed-bucket latency histogram.
#[derive(Debug, Default)]
pub struct Histogram {
    counts: [AtomicU64; 13],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| s <= *b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// Each bucket's upper bound in seconds and its own (not cumulative)
    /// count, then the count above the last bound, for the status page.
    pub fn buckets(&self) -> (Vec<(f64, u64)>, u64) {
        let v: Vec<(f64, u64)> = BUCKETS
            .iter()
            .zip(&self.counts)
            .map(|(b, c)| (*b, c.load(Ordering::Relaxed)))
            .collect();
        let within: u64 = v.iter().map(|(_, c)| c).sum();
        let over = self.count.load(Ordering::Relaxed).saturating_sub(within);
        (v, over)
    }

    fn render(&self, name: &str, help: &str, out: &mut String) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, b) in BUCKETS.iter().enumerate() {
            cumulative += self.counts[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

#[derive(Debug, Default)]
pub struct Stats {
    /// Event files accepted into the queue.
    pub events_accepted: AtomicU64,
    /// Event files moved to `failed/`.
    pub events_refused: AtomicU64,
    /// Event files skipped because their id was delivered in the last 24 h.
    pub events_duplicate: AtomicU64,
    /// Events delivered to a chat (all parts).
    pub events_delivered: AtomicU64,
    /// Messages (parts) Telegram accepted.
    pub messages_sent: AtomicU64,
    /// Sends that will be tried again (network, 5xx, 429).
    pub send_retries: AtomicU64,
    /// Sends Telegram refused for good.
    pub send_failures: AtomicU64,
    /// Queue entries waiting to be sent.
    pub backlog: AtomicU64,
    /// Updates received from `getUpdates`.
    pub updates_received: AtomicU64,
    /// Response files written.
    pub responses_written: AtomicU64,
    /// Webhook deliveries put in the outbox.
    pub webhooks_queued: AtomicU64,
    /// Webhook deliveries a receiver accepted (2xx).
    pub webhooks_delivered: AtomicU64,
    /// Webhook attempts that will be tried again.
    pub webhook_retries: AtomicU64,
    /// Webhook deliveries moved to the dead letter queue.
    pub webhooks_dead: AtomicU64,
    /// Webhook deliveries waiting in the outbox.
    pub webhooks_pending: AtomicU64,
    /// `getUpdates` answers 409: another program polls the same token.
    pub polling_conflict: AtomicBool,
    /// Writes to `state_dir` that failed (a full disk, I/O errors); each
    /// is retried.
    pub state_write_errors: AtomicU64,
    /// Unix ms of the latest of them (0: none).
    pub state_error_ms: AtomicU64,
    /// Unix ms the oldest waiting send was accepted (0: none waiting).
    pub oldest_queued_ms: AtomicU64,
    /// The last events and how their sends went (the status page).
    pub recent: crate::recent::Recent,
    /// Time of one `sendMessage` call.
    pub telegram_request: Histogram,
    /// From an event's acceptance to its delivery in a chat.
    pub event_delivery: Histogram,
    /// Time of one webhook attempt.
    pub webhook_request: Histogram,
}

impl Stats {
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub fn set(gauge: &AtomicU64, v: u64) {
        gauge.store(v, Ordering::Relaxed);
    }

    /// Counts a failed write to the state directory, for health.
    pub fn state_error(&self) {
        Stats::bump(&self.state_write_errors);
        Stats::set(&self.state_error_ms, crate::clock::now_ms());
    }

    /// The Prometheus text exposition of everything here, plus the gauges
    /// the caller measures (`extra`: name, help, value).
    pub fn prometheus(&self, extra: &[(&str, &str, f64)]) -> String {
        let mut out = String::with_capacity(4096);
        let counters = [
            (
                "cctelegram_events_accepted_total",
                "Event files accepted",
                &self.events_accepted,
            ),
            (
                "cctelegram_events_refused_total",
                "Event files moved to failed/",
                &self.events_refused,
            ),
            (
                "cctelegram_events_duplicate_total",
                "Event files skipped as duplicates",
                &self.events_duplicate,
            ),
            (
                "cctelegram_events_delivered_total",
                "Events delivered to a chat",
                &self.events_delivered,
            ),
            (
                "cctelegram_messages_sent_total",
                "Telegram messages sent",
                &self.messages_sent,
            ),
            (
                "cctelegram_telegram_retries_total",
                "Telegram sends to be retried",
                &self.send_retries,
            ),
            (
                "cctelegram_telegram_failures_total",
                "Telegram sends refused for good",
                &self.send_failures,
            ),
            (
                "cctelegram_updates_received_total",
                "Telegram updates received",
                &self.updates_received,
            ),
            (
                "cctelegram_responses_written_total",
                "Response files written",
                &self.responses_written,
            ),
            (
                "cctelegram_webhook_deliveries_queued_total",
                "Webhook deliveries queued",
                &self.webhooks_queued,
            ),
            (
                "cctelegram_webhook_deliveries_total",
                "Webhook deliveries accepted by a receiver",
                &self.webhooks_delivered,
            ),
            (
                "cctelegram_webhook_retries_total",
                "Webhook attempts to be retried",
                &self.webhook_retries,
            ),
            (
                "cctelegram_webhook_dead_letters_total",
                "Webhook deliveries moved to the dead letter queue",
                &self.webhooks_dead,
            ),
        ];
        for (name, help, c) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                Stats::get(c)
            );
        }
        let gauges = [
            (
                "cctelegram_backlog",
                "Telegram sends waiting",
                Stats::get(&self.backlog) as f64,
            ),
            (
                "cctelegram_webhook_outbox",
                "Webhook deliveries waiting",
                Stats::get(&self.webhooks_pending) as f64,
            ),
            (
                "cctelegram_polling_conflict",
                "1 while another program polls the same bot token",
                f64::from(u8::from(self.polling_conflict.load(Ordering::Relaxed))),
            ),
        ];
        for (name, help, v) in gauges.iter().chain(extra) {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        self.telegram_request.render(
            "cctelegram_telegram_request_seconds",
            "Duration of sendMessage calls",
            &mut out,
        );
        self.event_delivery.render(
            "cctelegram_event_delivery_seconds",
            "From an event's acceptance to its delivery in a chat",
            &mut out,
        );
        self.webhook_request.render(
            "cctelegram_webhook_request_seconds",
            "Duration of webhook attempts",
            &mut out,
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(20));
        h.observe(Duration::from_secs(60));
        let mut out = String::new();
        h.render("x", "help", &mut out);
        assert!(out.contains("x_bucket{le=\"0.001\"} 1\n"));
        assert!(out.contains("x_bucket{le=\"0.025\"} 2\n"));
        assert!(out.contains("x_bucket{le=\"10\"} 2\n"));
        assert!(out.contains("x_bucket{le=\"+Inf\"} 3\n"));
        assert!(out.contains("x_count 3\n"));
    }
}
