//! Health checks, status transitions and the `health_update` webhook.
//!
//! Every `[health].interval_seconds` the monitor measures (Telegram's
//! `getMe`, polling conflicts, memory, backlog, webhook success, disk), turns
//! the measurements into checks and a status with pure functions, keeps the
//! result for `GET /health` and `cctelegram status`, and queues a
//! `health_update` webhook when the status changes, and only then.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use smol::future::FutureExt as _;

use crate::clock;
use crate::error::Result;
use crate::stats::Stats;
use crate::telegram::api::Api;
use crate::webhook::deliver::Outbox;
use crate::webhook::endpoint::redact_url;
use crate::webhook::figures;
use crate::webhook::payload;

/// One check's verdict, worst last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Pass,
    Warn,
    Fail,
}

impl Level {
    fn name(self) -> &'static str {
        match self {
            Level::Pass => "pass",
            Level::Warn => "warn",
            Level::Fail => "fail",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Healthy,
    Degraded,
    Unhealthy,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Healthy => "healthy",
            Status::Degraded => "degraded",
            Status::Unhealthy => "unhealthy",
        }
    }
}

/// What the monitor measured.
#[derive(Debug, Clone)]
pub struct Inputs {
    /// `getMe`: its time in ms, or why it failed.
    pub telegram: std::result::Result<u64, String>,
    /// A 429 answer to `getMe` means Telegram is there but busy.
    pub telegram_rate_limited: bool,
    pub polling_conflict: bool,
    pub rss_mb: f64,
    pub memory_threshold_mb: u64,
    pub backlog: u64,
    /// Unix ms until which Telegram asked us to hold sends.
    pub hold_until: u64,
    /// Webhook deliveries and failed attempts since the last check.
    pub webhooks: Option<(u64, u64)>,
    pub disabled_endpoints: Vec<String>,
    /// Endpoints (shown without credentials) whose every attempt has failed
    /// for an hour or more.
    pub failing_endpoints: Vec<String>,
    pub disk_free_mb: Option<f64>,
    /// Seconds since a write to the state directory last failed, if one
    /// failed since the previous check.
    pub state_write_failed_s: Option<u64>,
    pub now_ms: u64,
}

pub struct Check {
    pub name: &'static str,
    pub level: Level,
    pub message: String,
    pub fields: Value,
}

fn check(name: &'static str, level: Level, message: String, fields: Value) -> Check {
    Check {
        name,
        level,
        message,
        fields,
    }
}

/// Backlog sizes at which the event_backlog check warns and fails.
const BACKLOG_WARN: u64 = 100;
const BACKLOG_FAIL: u64 = 10_000;
/// Free space in `state_dir`, MB, below which disk_space warns and fails.
const DISK_WARN_MB: f64 = 100.0;
const DISK_FAIL_MB: f64 = 10.0;

/// The checks for a set of measurements (pure).
pub fn evaluate(i: &Inputs) -> Vec<Check> {
    let now_iso = clock::iso8601(i.now_ms);
    let mut v = Vec::new();
    v.push(match &i.telegram {
        Ok(ms) => check(
            "telegram_api_connectivity",
            if *ms > 5000 { Level::Warn } else { Level::Pass },
            format!("getMe answered in {ms} ms"),
            json!({"response_time_ms": ms, "last_check": now_iso}),
        ),
        Err(e) if i.telegram_rate_limited => check(
            "telegram_api_connectivity",
            Level::Warn,
            format!("Telegram is rate limiting us: {e}"),
            json!({"last_check": now_iso}),
        ),
        Err(e) => check(
            "telegram_api_connectivity",
            Level::Fail,
            format!("getMe failed: {e}"),
            json!({"last_check": now_iso}),
        ),
    });
    v.push(if i.polling_conflict {
        check(
            "telegram_polling",
            Level::Fail,
            "409 Conflict: another program is polling this bot token".into(),
            json!({}),
        )
    } else {
        check("telegram_polling", Level::Pass, "polling".into(), json!({}))
    });
    let threshold = i.memory_threshold_mb as f64;
    let mem_level = if i.rss_mb > 2.0 * threshold {
        Level::Fail
    } else if i.rss_mb > threshold {
        Level::Warn
    } else {
        Level::Pass
    };
    let rss = (i.rss_mb * 10.0).round() / 10.0;
    v.push(check(
        "memory_usage",
        mem_level,
        format!("{rss} MB resident, threshold {threshold} MB"),
        json!({"value": rss, "unit": "MB", "threshold": i.memory_threshold_mb}),
    ));
    let held = i.hold_until > i.now_ms;
    let (level, message) = if i.backlog >= BACKLOG_FAIL {
        (Level::Fail, format!("{} sends waiting", i.backlog))
    } else if i.backlog >= BACKLOG_WARN || (held && i.backlog > 0) {
        let why = if held {
            format!(
                ", held by Telegram for {} s more",
                (i.hold_until - i.now_ms).div_ceil(1000)
            )
        } else {
            String::new()
        };
        (Level::Warn, format!("{} sends waiting{why}", i.backlog))
    } else {
        (Level::Pass, format!("{} sends waiting", i.backlog))
    };
    v.push(check(
        "event_backlog",
        level,
        message,
        json!({"value": i.backlog, "threshold": BACKLOG_WARN}),
    ));
    v.push(match i.webhooks {
        None => check(
            "webhook_delivery",
            Level::Pass,
            "no webhook endpoints configured".into(),
            json!({}),
        ),
        Some((ok, failed)) => {
            let total = ok + failed;
            let rate = if total == 0 {
                100.0
            } else {
                (ok as f64 * 1000.0 / total as f64).round() / 10.0
            };
            let (level, message) = if !i.disabled_endpoints.is_empty() {
                (
                    Level::Warn,
                    format!(
                        "disabled after 410 Gone: {}",
                        i.disabled_endpoints.join(", ")
                    ),
                )
            } else if !i.failing_endpoints.is_empty() {
                (
                    Level::Warn,
                    format!(
                        "every attempt has failed for over an hour: {}",
                        i.failing_endpoints.join(", ")
                    ),
                )
            } else if total > 0 && rate < 90.0 {
                (
                    Level::Warn,
                    format!("{rate}% of {total} recent attempts succeeded"),
                )
            } else {
                (
                    Level::Pass,
                    format!("{rate}% of {total} recent attempts succeeded"),
                )
            };
            check(
                "webhook_delivery",
                level,
                message,
                json!({"value": rate, "unit": "%", "disabled_endpoints": i.disabled_endpoints,
                       "failing_endpoints": i.failing_endpoints}),
            )
        }
    });
    v.push(match i.disk_free_mb {
        None => check(
            "disk_space",
            Level::Warn,
            "free space of the state directory unknown".into(),
            json!({}),
        ),
        _ if i.state_write_failed_s.is_some() => check(
            "disk_space",
            Level::Fail,
            format!(
                "writing to the state directory failed {} s ago (full disk?); it is retried, see the log",
                i.state_write_failed_s.unwrap_or(0)
            ),
            json!({"value": i.disk_free_mb.map(f64::round), "unit": "MB", "threshold": DISK_WARN_MB}),
        ),
        Some(mb) => {
            let level = if mb < DISK_FAIL_MB {
                Level::Fail
            } else if mb < DISK_WARN_MB {
                Level::Warn
            } else {
                Level::Pass
            };
            let mb = mb.round();
            check(
                "disk_space",
                level,
                format!("{mb} MB free in the state directory"),
                json!({"value": mb, "unit": "MB", "threshold": DISK_WARN_MB}),
            )
        }
    });
    v
}

/// The status the checks add up to.
pub fn status_of(checks: &[Check]) -> Status {
    match checks.iter().map(|c| c.level).max() {
        Some(Level::Fail) => Status::Unhealthy,
        Some(Level::Warn) => Status::Degraded,
        _ => Status::Healthy,
    }
}

/// The alert for a change of status, if it changed. Before the first check
/// the bridge counts as healthy.
pub fn transition(
    previous: Status,
    now: Status,
    checks: &[Check],
) -> Option<(&'static str, String)> {
    if previous == now {
        return None;
    }
    let why: Vec<String> = checks
        .iter()
        .filter(|c| c.level != Level::Pass)
        .map(|c| format!("{}: {}", c.name, c.message))
        .collect();
    Some(match now {
        Status::Healthy => (
            "health_recovered",
            format!("Bridge health recovered from {} state", previous.name()),
        ),
        Status::Degraded => (
            "health_degraded",
            format!("Bridge health degraded: {}", why.join("; ")),
        ),
        Status::Unhealthy => (
            "health_unhealthy",
            format!("Bridge unhealthy: {}", why.join("; ")),
        ),
    })
}

/// The `health` object of the spec's payload (and of `GET /health`).
pub fn health_object(
    status: Status,
    previous: Option<Status>,
    checks: &[Check],
    uptime_seconds: u64,
    stats: &Stats,
) -> Value {
    let checks: Vec<Value> = checks
        .iter()
        .map(|c| {
            let mut v = json!({"name": c.name, "status": c.level.name(), "message": c.message});
            if let (Value::Object(m), Value::Object(f)) = (&mut v, &c.fields) {
                m.extend(f.clone());
            }
            v
        })
        .collect();
    let mut h = json!({
        "status": status.name(),
        "checks": checks,
        "uptime_seconds": uptime_seconds,
        "events_processed_total": Stats::get(&stats.events_accepted),
        "counters": {
            "events_accepted": Stats::get(&stats.events_accepted),
            "events_refused": Stats::get(&stats.events_refused),
            "events_delivered": Stats::get(&stats.events_delivered),
            "messages_sent": Stats::get(&stats.messages_sent),
            "backlog": Stats::get(&stats.backlog),
            "responses_written": Stats::get(&stats.responses_written),
            "webhooks_delivered": Stats::get(&stats.webhooks_delivered),
            "webhooks_pending": Stats::get(&stats.webhooks_pending),
            "dead_letters": Stats::get(&stats.webhooks_dead),
        },
    });
    if let Some(p) = previous {
        h["previous_status"] = json!(p.name());
    }
    h
}

/// Resident set size in MB, from `/proc/self/statm`.
pub fn rss_mb() -> f64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    // SAFETY: sysconf only reads a system constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as f64;
    pages as f64 * page / 1_048_576.0
}

/// Free space for unprivileged users on the file system of `path`, MB.
pub fn disk_free_mb(path: &Path) -> Option<f64> {
    let c = CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs writes into the zeroed struct we own; `c` outlives the call.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(st.f_bavail as f64 * st.f_frsize as f64 / 1_048_576.0)
}

/// What `GET /health` serves: the health object and its HTTP status.
pub struct Snapshot {
    pub body: Value,
    pub unhealthy: bool,
}

pub struct Monitor {
    pub api: Arc<Api>,
    pub stats: Arc<Stats>,
    pub outbox: Arc<Outbox>,
    pub spool_hold: Box<dyn Fn() -> u64 + Send + Sync>,
    pub state_dir: PathBuf,
    pub interval: Duration,
    pub memory_threshold_mb: u64,
    pub started: Instant,
    pub latest: Mutex<Option<Snapshot>>,
    pub controls: Arc<crate::notify::Controls>,
    /// For the status page's undecided approvals.
    pub approvals: Arc<crate::approvals::Approvals>,
    /// The configuration in force (`[health].token`).
    pub live: Arc<crate::reload::Live>,
}

impl Monitor {
    /// `{"muted_until", "paused_until"}`: RFC 3339, or null when not set.
    pub fn notifications(&self) -> Value {
        let (muted, paused) = self.controls.get();
        let now = clock::now_ms();
        let at = |t: u64| {
            if t > now {
                json!(clock::iso8601(t))
            } else {
                Value::Null
            }
        };
        json!({"muted_until": at(muted), "paused_until": at(paused)})
    }

    /// The Prometheus text for `GET /metrics`.
    pub fn metrics(&self) -> String {
        let status = self
            .latest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .and_then(|s| s.body["status"].as_str().map(str::to_string));
        let code = match status.as_deref() {
            Some("healthy") => 0.0,
            Some("degraded") => 1.0,
            Some("unhealthy") => 2.0,
            _ => -1.0,
        };
        let mut text = self.stats.prometheus(&[
            (
                "cctelegram_resident_memory_bytes",
                "Resident set size",
                rss_mb() * 1_048_576.0,
            ),
            (
                "cctelegram_uptime_seconds",
                "Seconds since start",
                self.started.elapsed().as_secs() as f64,
            ),
            (
                "cctelegram_health_status",
                "0 healthy, 1 degraded, 2 unhealthy, -1 not checked yet",
                code,
            ),
        ]);
        text.push_str(&figures::prometheus(&self.outbox.endpoint_figures()));
        text
    }

    /// The first check is due at once.
    pub fn rhythm(&self) -> Rhythm {
        Rhythm {
            previous: Status::Healthy,
            last_counts: (0, 0),
            last_check_ms: clock::now_ms(),
            next: Instant::now(),
        }
    }

    /// How long until the next check is due (zero: now).
    pub fn until_due(&self, r: &Rhythm) -> Duration {
        r.next.saturating_duration_since(Instant::now())
    }

    /// Runs the check if it is due. The long poll calls this between polls
    /// and shortens its timeout to the next one, so an idle daemon has no
    /// timer of its own for health: only the long poll's thread wakes.
    pub fn check_if_due(&self, r: &mut Rhythm) {
        if self.until_due(r).is_zero() {
            self.check(r);
            r.next = Instant::now() + self.interval;
        }
    }

    /// For a fleet device, which has no long poll: checks on a timer.
    pub async fn run(self: Arc<Self>, stop: Arc<crate::signals::Stop>) -> Result<()> {
        let mut r = self.rhythm();
        loop {
            self.check_if_due(&mut r);
            let timer = async {
                smol::Timer::after(self.until_due(&r)).await;
            };
            timer.or(stop.wait()).await;
            if stop.is_set() {
                return Ok(());
            }
        }
    }

    /// One check: asks Telegram (`getMe`, blocking this thread), records
    /// the snapshot, and queues a `health_update` if the status changed.
    fn check(&self, r: &mut Rhythm) {
        let started = Instant::now();
        // A fleet device has no bot: nothing to ask Telegram.
        let me = if crate::fleet::is_device() {
            Ok(json!({}))
        } else {
            self.api.call("getMe", &json!({}), Duration::from_secs(10))
        };
        let telegram_rate_limited = matches!(&me, Err(crate::Error::Telegram { status: 429, .. }));
        let delivered = Stats::get(&self.stats.webhooks_delivered);
        let failed =
            Stats::get(&self.stats.webhook_retries) + Stats::get(&self.stats.webhooks_dead);
        let window = (delivered - r.last_counts.0, failed - r.last_counts.1);
        r.last_counts = (delivered, failed);
        let figures = self.outbox.endpoint_figures();
        let inputs = Inputs {
            telegram: me
                .map(|_| started.elapsed().as_millis() as u64)
                .map_err(|e| e.to_string()),
            telegram_rate_limited,
            polling_conflict: self.stats.polling_conflict.load(Ordering::Relaxed),
            rss_mb: rss_mb(),
            memory_threshold_mb: self.memory_threshold_mb,
            backlog: Stats::get(&self.stats.backlog),
            hold_until: (self.spool_hold)(),
            webhooks: self.outbox.active().then_some(window),
            disabled_endpoints: self
                .outbox
                .disabled
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .map(|u| redact_url(u))
                .collect(),
            failing_endpoints: figures
                .iter()
                .filter(|(_, e)| e.failing_for_long(clock::now_ms()))
                .map(|(u, _)| redact_url(u))
                .collect(),
            disk_free_mb: disk_free_mb(&self.state_dir),
            state_write_failed_s: {
                let at = Stats::get(&self.stats.state_error_ms);
                (at > 0 && at >= r.last_check_ms).then(|| clock::age_ms(at, clock::now_ms()) / 1000)
            },
            now_ms: clock::now_ms(),
        };
        r.last_check_ms = inputs.now_ms;
        let mut checks = evaluate(&inputs);
        crate::fleet::health_checks(&mut checks);
        let status = status_of(&checks);
        let uptime = self.started.elapsed().as_secs();
        let mut body = health_object(status, Some(r.previous), &checks, uptime, &self.stats);
        body["webhooks"] = figures::health_json(&figures);
        crate::fleet::health_body(&mut body);
        if let Some((alert_type, message)) = transition(r.previous, status, &checks) {
            log::warn!("health is now {}: {message}", status.name());
            let p = payload::health_update(
                body.clone(),
                alert_type,
                &message,
                clock::now_ms(),
                &self.outbox.info(),
            );
            let source = format!(
                "{}:{}:{}",
                r.previous.name(),
                status.name(),
                clock::now_ms()
            );
            match self.outbox.enqueue("health_update", &source, &p) {
                // On failure the transition is reported at the next check.
                Err(e) => log::error!("cannot queue the health_update webhook, retrying: {e}"),
                Ok(()) => r.previous = status,
            }
        }
        *self.latest.lock().unwrap_or_else(|p| p.into_inner()) = Some(Snapshot {
            body,
            unhealthy: status == Status::Unhealthy,
        });
    }
}

/// What a check remembers for the next one.
pub struct Rhythm {
    previous: Status,
    last_counts: (u64, u64),
    last_check_ms: u64,
    next: Instant,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> Inputs {
        Inputs {
            telegram: Ok(120),
            telegram_rate_limited: false,
            polling_conflict: false,
            rss_mb: 2.4,
            memory_threshold_mb: 100,
            backlog: 0,
            hold_until: 0,
            webhooks: Some((10, 0)),
            disabled_endpoints: vec![],
            failing_endpoints: vec![],
            disk_free_mb: Some(5000.0),
            state_write_failed_s: None,
            now_ms: 1_000_000,
        }
    }

    #[test]
    fn all_well_is_healthy() {
        let c = evaluate(&inputs());
        assert_eq!(c.len(), 6);
        assert_eq!(status_of(&c), Status::Healthy);
        assert!(transition(Status::Healthy, Status::Healthy, &c).is_none());
    }

    #[test]
    fn each_problem_moves_the_status() {
        let mut i = inputs();
        i.telegram = Err("connection refused".into());
        assert_eq!(status_of(&evaluate(&i)), Status::Unhealthy);
        let mut i = inputs();
        i.polling_conflict = true;
        assert_eq!(status_of(&evaluate(&i)), Status::Unhealthy);
        let mut i = inputs();
        i.rss_mb = 150.0;
        assert_eq!(status_of(&evaluate(&i)), Status::Degraded);
        let mut i = inputs();
        i.backlog = 3;
        i.hold_until = 2_000_000;
        let c = evaluate(&i);
        assert_eq!(status_of(&c), Status::Degraded);
        assert!(
            c[3].message.contains("held by Telegram for 1000 s"),
            "{}",
            c[3].message
        );
        let mut i = inputs();
        i.webhooks = Some((1, 9));
        assert_eq!(status_of(&evaluate(&i)), Status::Degraded);
        let mut i = inputs();
        i.disabled_endpoints = vec!["http://x/gone".into()];
        assert_eq!(status_of(&evaluate(&i)), Status::Degraded);
        let mut i = inputs();
        i.failing_endpoints = vec!["https://x/hook".into()];
        let c = evaluate(&i);
        assert_eq!(status_of(&c), Status::Degraded);
        assert!(c[4].message.contains("https://x/hook"), "{}", c[4].message);
        let mut i = inputs();
        i.disk_free_mb = Some(5.0);
        assert_eq!(status_of(&evaluate(&i)), Status::Unhealthy);
    }

    #[test]
    fn transitions_name_the_alert() {
        let mut i = inputs();
        i.telegram = Err("down".into());
        let c = evaluate(&i);
        let (t, m) = transition(Status::Healthy, Status::Unhealthy, &c).unwrap();
        assert_eq!(t, "health_unhealthy");
        assert!(
            m.contains("telegram_api_connectivity: getMe failed: down"),
            "{m}"
        );
        let (t, m) = transition(Status::Degraded, Status::Healthy, &[]).unwrap();
        assert_eq!(t, "health_recovered");
        assert_eq!(m, "Bridge health recovered from degraded state");
        assert_eq!(
            transition(Status::Unhealthy, Status::Degraded, &[])
                .unwrap()
                .0,
            "health_degraded"
        );
    }
}
