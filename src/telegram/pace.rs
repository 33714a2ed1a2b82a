//! Sending rates of `[limits]`, as "not before" instants.
//!
//! Pure bookkeeping: the sender asks when a chat may next be sent to and
//! reports each send. Groups (negative ids, `@channels`) get the stricter of
//! the per-chat and per-group rates; everything shares the global rate.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::config::Limits;

pub struct Pacer {
    private_gap: Duration,
    group_gap: Duration,
    global_gap: Duration,
    next_chat: HashMap<String, Instant>,
    next_global: Option<Instant>,
}

fn gap(per_second: f64) -> Duration {
    Duration::from_secs_f64(1.0 / per_second)
}

pub fn is_group(chat: &str) -> bool {
    chat.starts_with('-') || chat.starts_with('@')
}

impl Pacer {
    pub fn new(l: &Limits) -> Pacer {
        let private_gap = gap(l.per_chat_per_second);
        Pacer {
            private_gap,
            group_gap: private_gap.max(gap(l.per_group_per_minute / 60.0)),
            global_gap: gap(l.global_per_second),
            next_chat: HashMap::new(),
            next_global: None,
        }
    }

    /// Takes new limits (a reload) for the sends that follow.
    pub fn set_limits(&mut self, l: &Limits) {
        let fresh = Pacer::new(l);
        self.private_gap = fresh.private_gap;
        self.group_gap = fresh.group_gap;
        self.global_gap = fresh.global_gap;
    }

    /// The earliest instant `chat` may be sent to (possibly in the past).
    pub fn ready_at(&self, chat: &str, now: Instant) -> Instant {
        let c = self.next_chat.get(chat).copied().unwrap_or(now);
        let g = self.next_global.unwrap_or(now);
        c.max(g)
    }

    /// Records a send to `chat` at `at`.
    pub fn sent(&mut self, chat: &str, at: Instant) {
        let gap = if is_group(chat) {
            self.group_gap
        } else {
            self.private_gap
        };
        self.next_chat.insert(chat.to_string(), at + gap);
        self.next_global = Some(at + self.global_gap);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            per_chat_per_second: 1.0,
            per_group_per_minute: 20.0,
            global_per_second: 30.0,
            max_event_bytes: 1,
            max_attachment_bytes: 1,
        }
    }

    #[test]
    fn spaces_sends_per_chat_group_and_globally() {
        let mut p = Pacer::new(&limits());
        let t = Instant::now();
        assert_eq!(p.ready_at("1", t), t);
        p.sent("1", t);
        assert_eq!(p.ready_at("1", t), t + Duration::from_secs(1));
        // Another chat waits only for the global gap.
        assert_eq!(p.ready_at("2", t), t + gap(30.0));
        p.sent("-100", t);
        assert_eq!(p.ready_at("-100", t), t + Duration::from_secs(3));
    }
}
