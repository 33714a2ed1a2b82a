//! Whether a notification rings, waits or goes at once.
//!
//! People mute a phone that rings for everything. So each event has a
//! priority (`data.priority`, or `severity: "critical"`), and the person
//! has quiet hours, `/mute` and `/pause`. The decisions are pure functions
//! of the event, the settings and the time ([`silent`], [`held`]); mute
//! and pause themselves are two small cells in `state_dir` ([`Controls`]),
//! so they survive a restart, and the sender reads them from memory.

use std::sync::Mutex;

use serde_json::Value;

use crate::config::Notifications;
use crate::error::Result;
use crate::event::Event;
use crate::store::Cell;
use crate::tz::Zone;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Priority {
    Low,
    Normal,
    High,
    Urgent,
}

impl Priority {
    pub fn parse(s: &str) -> Option<Priority> {
        match s.trim().to_ascii_lowercase().as_str() {
            "low" => Some(Priority::Low),
            "normal" => Some(Priority::Normal),
            "high" => Some(Priority::High),
            "urgent" => Some(Priority::Urgent),
            _ => None,
        }
    }
}

/// The event's priority: `data.priority`; `severity: "critical"` (in
/// `data`) is urgent; anything else is normal.
pub fn priority(ev: &Event) -> Priority {
    let critical = ev
        .str_data("severity")
        .is_some_and(|s| s.eq_ignore_ascii_case("critical"));
    let p = ev
        .str_data("priority")
        .and_then(Priority::parse)
        .unwrap_or(Priority::Normal);
    if critical {
        Priority::Urgent
    } else {
        p
    }
}

/// Events a pause never holds: approvals (someone is waiting on them) and
/// urgent ones.
pub fn never_held(ev: &Event) -> bool {
    ev.is_approval() || priority(ev) == Priority::Urgent
}

/// What the sender knows of the person's wishes at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct Quiet {
    /// Unix ms; muted before this.
    pub muted_until: u64,
    /// Unix ms; paused before this.
    pub paused_until: u64,
    /// Now is inside `[notifications] quiet_hours`.
    pub quiet_hours: bool,
}

/// Whether `ev` goes without sound (`disable_notification`).
pub fn silent(ev: &Event, q: &Quiet, now_ms: u64) -> bool {
    let p = priority(ev);
    if p == Priority::Urgent {
        return false;
    }
    p == Priority::Low
        || ev.data.get("silent").and_then(Value::as_bool) == Some(true)
        || q.quiet_hours
        || q.muted_until > now_ms
}

/// Unix ms until which `ev` waits because of a pause (0: not held).
pub fn held(ev_never_held: bool, q: &Quiet, now_ms: u64) -> u64 {
    if ev_never_held || q.paused_until <= now_ms {
        0
    } else {
        q.paused_until
    }
}

/// Whether unix time `now_ms` is inside the quiet hours of `n` in `zone`.
pub fn in_quiet_hours(n: &Notifications, zone: &Zone, now_ms: u64) -> bool {
    match n.quiet_hours {
        Some(w) => w.contains(zone.minute_of_day((now_ms / 1000) as i64)),
        None => false,
    }
}

/// `/mute 30m`, `/pause 2h`: `s`, `m`, `h` or `d` after a whole number; a
/// bare number is minutes. At most 30 days.
pub fn parse_duration_ms(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "m"),
    };
    let n: u64 = num.parse().ok().filter(|n| *n > 0)?;
    let scale = match unit.trim().to_ascii_lowercase().as_str() {
        "s" | "sec" => 1_000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    let ms = n.checked_mul(scale)?;
    (ms <= 30 * 86_400_000).then_some(ms)
}

/// Mute and pause, on disk and in memory.
pub struct Controls {
    muted: Cell,
    paused: Cell,
    now: Mutex<(u64, u64)>,
}

impl Controls {
    pub fn open(state_dir: &std::path::Path) -> Controls {
        let muted = Cell::new(state_dir, "muted_until");
        let paused = Cell::new(state_dir, "paused_until");
        let now = Mutex::new((muted.get().unwrap_or(0), paused.get().unwrap_or(0)));
        Controls { muted, paused, now }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (u64, u64)> {
        self.now.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `(muted_until, paused_until)`, unix ms (0: not set).
    pub fn get(&self) -> (u64, u64) {
        *self.lock()
    }

    pub fn set_muted(&self, until_ms: u64) -> Result<()> {
        self.muted.set(until_ms)?;
        self.lock().0 = until_ms;
        Ok(())
    }

    pub fn set_paused(&self, until_ms: u64) -> Result<()> {
        self.paused.set(until_ms)?;
        self.lock().1 = until_ms;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(data: &str) -> Event {
        crate::event::parse(
            format!(r#"{{"type":"info_notification","title":"t","data":{data}}}"#).as_bytes(),
            "now",
            || "e1".into(),
        )
        .unwrap()
    }

    #[test]
    fn priorities_and_sound() {
        let q = Quiet::default();
        assert!(!silent(&ev("{}"), &q, 0));
        assert!(silent(&ev(r#"{"priority":"low"}"#), &q, 0));
        assert!(silent(&ev(r#"{"silent":true}"#), &q, 0));
        let quiet = Quiet {
            quiet_hours: true,
            ..q
        };
        assert!(silent(&ev(r#"{"priority":"high"}"#), &quiet, 0));
        assert!(!silent(&ev(r#"{"priority":"urgent"}"#), &quiet, 0));
        assert!(!silent(
            &ev(r#"{"severity":"critical","silent":true}"#),
            &quiet,
            0
        ));
        let muted = Quiet {
            muted_until: 10,
            ..q
        };
        assert!(silent(&ev("{}"), &muted, 5) && !silent(&ev("{}"), &muted, 10));
        assert!(never_held(&ev(r#"{"priority":"URGENT"}"#)) && !never_held(&ev("{}")));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("30m"), Some(1_800_000));
        assert_eq!(parse_duration_ms("2h"), Some(7_200_000));
        assert_eq!(parse_duration_ms("1d"), Some(86_400_000));
        assert_eq!(parse_duration_ms("5s"), Some(5_000));
        assert_eq!(parse_duration_ms("15"), Some(900_000));
        assert_eq!(parse_duration_ms("0m"), None);
        assert_eq!(parse_duration_ms("1y"), None);
        assert_eq!(parse_duration_ms("90d"), None);
    }
}
