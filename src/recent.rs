//! The last few events and how their sends went, for the status page.
//!
//! Counters say how many; a person looking at the page wants to see *which*
//! event went where a moment ago. A small ring in memory is enough for
//! that: it holds at most [`KEEP`] entries, one per event and chat, the
//! newest first, and starts empty with the daemon like the counters.

use std::collections::VecDeque;
use std::sync::Mutex;

/// How many entries the ring keeps (the page shows them all).
pub const KEEP: usize = 20;

/// One event's send to one chat, as it last stood.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Unix ms of the latest outcome.
    pub at_ms: u64,
    pub event_id: String,
    pub chat: String,
    pub kind: String,
    pub title: String,
    /// `delivered`, `pending` (will be retried) or `failed` (for good).
    pub outcome: &'static str,
    /// Why it is pending or failed.
    pub error: Option<String>,
}

#[derive(Debug, Default)]
pub struct Recent {
    ring: Mutex<VecDeque<Entry>>,
}

impl Recent {
    /// Records an outcome: a later outcome of the same event in the same
    /// chat replaces the earlier one and moves to the front.
    pub fn note(&self, e: Entry) {
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        ring.retain(|x| !(x.event_id == e.event_id && x.chat == e.chat));
        ring.push_front(e);
        ring.truncate(KEEP);
    }

    /// The entries, newest first.
    pub fn list(&self) -> Vec<Entry> {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        ring.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, outcome: &'static str, at_ms: u64) -> Entry {
        Entry {
            at_ms,
            event_id: id.into(),
            chat: "1".into(),
            kind: "info_notification".into(),
            title: id.into(),
            outcome,
            error: None,
        }
    }

    #[test]
    fn keeps_the_newest_and_one_entry_per_send() {
        let r = Recent::default();
        for i in 0..(KEEP as u64 + 5) {
            r.note(entry(&format!("e{i}"), "delivered", i));
        }
        let l = r.list();
        assert_eq!(l.len(), KEEP);
        assert_eq!(l[0].event_id, format!("e{}", KEEP + 4));
        assert_eq!(l[KEEP - 1].event_id, "e5");
        r.note(entry("e10", "failed", 100));
        let l = r.list();
        assert_eq!(l.len(), KEEP);
        assert_eq!((l[0].event_id.as_str(), l[0].outcome), ("e10", "failed"));
        assert_eq!(l.iter().filter(|e| e.event_id == "e10").count(), 1);
    }
}
