//! What approval buttons mean, who pressed first, and when they expire.
//!
//! One file per approval in `state_dir/buttons/`, named by the key that
//! short callback data carries, rewritten whole (temporary name, rename)
//! under one lock: the sender adds the messages that carry the buttons, the
//! poller records the decision, the expiry timer records an expiry. The
//! first decision written wins; later presses read it and are told so.

use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::clock;
use crate::error::Result;
use crate::event::Event;
use crate::store::Records;
use crate::telegram::render::button_key;

/// The longest `timeout_minutes` honoured: a week. Larger values are
/// clamped to it (a typo of `30000000` must not arm a timer for decades).
pub const MAX_TIMEOUT_MINUTES: f64 = 7.0 * 24.0 * 60.0;

/// How long a decided (or expired) approval's record is kept, so that a
/// late press is told "already decided" rather than "unknown".
pub const KEEP_DECIDED_MS: u64 = 30 * 24 * 3600 * 1000;

/// How long an approval nobody decided and that never expires is kept.
pub const KEEP_UNDECIDED_MS: u64 = 90 * 24 * 3600 * 1000;

/// The approval's timeout in milliseconds: `data.timeout_minutes` when it
/// is a positive number, at most [`MAX_TIMEOUT_MINUTES`].
pub fn timeout_ms(ev: &Event) -> Option<u64> {
    let m = ev.data.get("timeout_minutes").and_then(Value::as_f64)?;
    (m.is_finite() && m > 0.0).then(|| (m.min(MAX_TIMEOUT_MINUTES) * 60_000.0) as u64)
}

/// Who decided what, and when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// The chosen option's label; `None` when the approval expired.
    pub option: Option<String>,
    pub callback_data: Option<String>,
    pub user_id: Option<i64>,
    pub username: Option<String>,
    pub first_name: Option<String>,
    /// Unix ms.
    pub at: u64,
    /// The update that carried the press, so a replay after a crash is
    /// recognised as the same press.
    pub update_id: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Approval {
    pub event: Event,
    /// `(chat, message_id)` of each message that carries the buttons.
    #[serde(default)]
    pub messages: Vec<(String, i64)>,
    /// Unix ms after which it expires (`data.timeout_minutes` after the
    /// first delivery).
    #[serde(default)]
    pub expires_at: Option<u64>,
    /// Unix ms of the first delivery; the timeout counts from here.
    #[serde(default)]
    pub delivered_ms: Option<u64>,
    #[serde(default)]
    pub decision: Option<Decision>,
}

impl Approval {
    pub fn key(&self) -> String {
        button_key(&self.event.task_id)
    }
}

/// What recording a delivered message found.
pub struct Delivered {
    /// The expiry time, if this delivery set it.
    pub expires_at: Option<u64>,
    /// Already decided (a press in another chat, or an expiry, came first):
    /// this message's buttons must go at once.
    pub decided: Option<Approval>,
}

/// What a press resolved to.
pub enum Press {
    /// This press decided it (or was the press that already had).
    Decided(Approval),
    /// Someone decided first, or it expired.
    AlreadyDecided(Approval),
    /// No approval with these buttons is known.
    Unknown,
}

pub struct Approvals {
    records: Records,
    lock: Mutex<()>,
}

/// The approval key and option index a button's callback data names.
/// Anything else (including a short key that is not one of ours, which
/// could otherwise name a path) is `None`.
pub fn parse_callback(data: &str) -> Option<(String, Option<usize>, &'static str)> {
    if let Some(rest) = data.strip_prefix('k') {
        let (n, key) = rest.split_once(':')?;
        // Only what `button_key` makes: forged data must not name a file
        // outside `state_dir/buttons/`.
        if key.len() != 20 || !key.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        return Some((key.to_string(), Some(n.parse().ok()?), ""));
    }
    let (prefix, task) = data.split_once('_')?;
    match prefix {
        "approve" => Some((button_key(task), None, "approve")),
        "deny" => Some((button_key(task), None, "deny")),
        p => {
            let n = p.strip_prefix("opt")?.parse().ok()?;
            Some((button_key(task), Some(n), ""))
        }
    }
}

/// The option a parsed callback names: by position for `opt<N>` and
/// `k<N>:` data, else the first option whose label is `word` (`approve`,
/// `deny`) in any case. `None` when the options have no such button.
pub fn option_label<'a>(
    options: &'a [String],
    index: Option<usize>,
    word: &str,
) -> Option<&'a String> {
    match index {
        Some(i) => options.get(i),
        None => options.iter().find(|o| o.trim().eq_ignore_ascii_case(word)),
    }
}

impl Approvals {
    pub fn new(records: Records) -> Approvals {
        Approvals {
            records,
            lock: Mutex::new(()),
        }
    }

    /// The approval a key names; a damaged record is moved aside and is
    /// `None`, so it never stops anything else.
    pub fn get(&self, key: &str) -> Result<Option<Approval>> {
        self.records.get(&format!("{key}.json"))
    }

    fn put(&self, a: &Approval, sync: bool) -> Result<()> {
        let name = format!("{}.json", a.key());
        if sync {
            self.records.put(&name, a)
        } else {
            self.records.put_unsynced(&name, a)
        }
    }

    /// Syncs the directory after [`Approvals::record`]s.
    pub fn sync(&self) -> Result<()> {
        self.records.sync()
    }

    /// Records a newly accepted approval request; the caller syncs the
    /// directory. Accepting the same event again keeps what is known.
    pub fn record(&self, ev: &Event) -> Result<()> {
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = self.get(&button_key(&ev.task_id))? {
            if old.event.event_id == ev.event_id {
                return Ok(());
            }
        }
        let a = Approval {
            event: ev.clone(),
            messages: Vec::new(),
            expires_at: None,
            delivered_ms: None,
            decision: None,
        };
        self.put(&a, false)
    }

    /// Notes that `message_id` in `chat` carries the buttons.
    pub fn delivered(
        &self,
        ev: &Event,
        chat: &str,
        message_id: i64,
        now: u64,
    ) -> Result<Delivered> {
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let none = Delivered {
            expires_at: None,
            decided: None,
        };
        let Some(mut a) = self.get(&button_key(&ev.task_id))? else {
            return Ok(none);
        };
        if a.event.event_id != ev.event_id {
            return Ok(none); // a newer approval took over this task id
        }
        let entry = (chat.to_string(), message_id);
        if a.messages.contains(&entry) && a.delivered_ms.is_some() {
            return Ok(Delivered {
                expires_at: None,
                decided: a.decision.is_some().then_some(a),
            });
        }
        if !a.messages.contains(&entry) {
            a.messages.push(entry);
        }
        let mut set = None;
        if a.delivered_ms.is_none() {
            a.delivered_ms = Some(now);
            if let Some(t) = timeout_ms(ev) {
                a.expires_at = Some(now + t);
                set = Some(now + t);
            }
        }
        self.put(&a, true)?;
        Ok(Delivered {
            expires_at: set,
            decided: a.decision.is_some().then_some(a),
        })
    }

    /// Notes another message that carries the buttons of the approval
    /// `key` (`/pending` showed it again).
    pub fn add_message(&self, key: &str, chat: &str, message_id: i64) -> Result<()> {
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let Some(mut a) = self.get(key)? else {
            return Ok(());
        };
        let entry = (chat.to_string(), message_id);
        if !a.messages.contains(&entry) {
            a.messages.push(entry);
            self.put(&a, true)?;
        }
        Ok(())
    }

    /// Records `d` as the decision unless one exists. A press carried by the
    /// same update as the recorded decision counts as that decision.
    /// `first` runs, under the lock, for the press that decides (and for a
    /// replay of it), before the decision is recorded: it writes the
    /// webhook and the response file, so neither ever lags behind the
    /// decision.
    pub fn decide(
        &self,
        key: &str,
        d: Decision,
        first: impl FnOnce(&Approval) -> Result<()>,
    ) -> Result<Press> {
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let Some(mut a) = self.get(key)? else {
            return Ok(Press::Unknown);
        };
        if let Some(prev) = &a.decision {
            if prev.update_id.is_some() && prev.update_id == d.update_id {
                first(&a)?;
                return Ok(Press::Decided(a));
            }
            return Ok(Press::AlreadyDecided(a));
        }
        a.decision = Some(d);
        first(&a)?;
        self.put(&a, true)?;
        Ok(Press::Decided(a))
    }

    /// Undecided approvals with an expiry: how long until each expires
    /// (0: due), soonest first. Records past their retention are pruned on
    /// the way.
    pub fn expiries(&self, now: u64) -> Result<Vec<(u64, String)>> {
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        for (name, a) in self.records.load_all::<Approval>()? {
            let key = name.trim_end_matches(".json").to_string();
            match (&a.decision, a.delivered_ms) {
                (Some(d), _) => {
                    if clock::passed(d.at, KEEP_DECIDED_MS, now) {
                        self.records.remove(&name)?;
                    }
                }
                (None, Some(at)) => match timeout_ms(&a.event) {
                    Some(t) => out.push((clock::remaining_ms(at, t, now), key)),
                    None => {
                        if clock::passed(at, KEEP_UNDECIDED_MS, now) {
                            log::info!(
                                "approval {} was never decided in 90 days; forgotten",
                                a.event.event_id
                            );
                            self.records.remove(&name)?;
                        }
                    }
                },
                (None, None) => {}
            }
        }
        out.sort();
        Ok(out)
    }

    /// Approvals delivered and not decided, oldest first.
    pub fn undecided(&self) -> Result<Vec<Approval>> {
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<Approval> = self
            .records
            .load_all::<Approval>()?
            .into_iter()
            .map(|(_, a)| a)
            .filter(|a| a.decision.is_none() && a.delivered_ms.is_some())
            .collect();
        out.sort_by_key(|a| a.delivered_ms);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn approval(task: &str, timeout: Option<u32>) -> Event {
        let data = match timeout {
            Some(t) => format!(r#","data":{{"timeout_minutes":{t}}}"#),
            None => String::new(),
        };
        crate::event::parse(
            format!(r#"{{"type":"approval_request","title":"t","task_id":"{task}"{data}}}"#)
                .as_bytes(),
            "now",
            String::new,
        )
        .unwrap()
    }

    /// Growth (issue 9): decided approvals go after 30 days, never-decided
    /// ones without a timeout after 90, and an expiry is never pruned early.
    #[test]
    fn records_are_pruned_once_decided_or_forgotten_and_retention_has_passed() {
        let d = std::env::temp_dir().join(format!("cct-appr-prune-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let a = Approvals::new(Records::open(&d, "buttons").unwrap());
        let day = 86_400_000;
        let t0 = clock::PLAUSIBLE_MS + 10 * day;
        for (task, timeout) in [
            ("decided", None),
            ("forgotten", None),
            ("expiring", Some(60)),
        ] {
            let ev = approval(task, timeout);
            a.record(&ev).unwrap();
            a.delivered(&ev, "1", 7, t0).unwrap();
        }
        let decision = Decision {
            option: Some("Approve".into()),
            callback_data: None,
            user_id: Some(1),
            username: None,
            first_name: None,
            at: t0,
            update_id: Some(1),
        };
        a.decide(&button_key("decided"), decision, |_| Ok(()))
            .unwrap();
        let names = |a: &Approvals| a.records.names().unwrap().len();
        // Within every retention: all three kept; the expiry is due in an hour.
        let due = a.expiries(t0 + 29 * day).unwrap();
        assert_eq!(names(&a), 3);
        assert_eq!(due, vec![(0, button_key("expiring"))]);
        a.expiries(t0 + 31 * day).unwrap();
        assert_eq!(names(&a), 2, "the decided one goes after 30 days");
        a.expiries(t0 + 91 * day).unwrap();
        assert_eq!(names(&a), 1, "the forgotten one goes after 90 days");
        assert!(a.get(&button_key("expiring")).unwrap().is_some());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn callback_data_resolves_to_key_and_option() {
        assert_eq!(
            parse_callback("approve_T_1"),
            Some((button_key("T_1"), None, "approve"))
        );
        assert_eq!(
            parse_callback("deny_T"),
            Some((button_key("T"), None, "deny"))
        );
        assert_eq!(
            parse_callback("opt2_T"),
            Some((button_key("T"), Some(2), ""))
        );
        let key = button_key("long task");
        assert_eq!(
            parse_callback(&format!("k1:{key}")),
            Some((key, Some(1), ""))
        );
        assert_eq!(parse_callback("hello"), None);
        assert_eq!(parse_callback("optx_T"), None);
    }

    /// Found by the `callback_data` fuzz target: `k1:<anything>` named any
    /// key, so forged data such as `k0:../../x` read a file outside
    /// `state_dir/buttons/`.
    #[test]
    fn fuzz_forged_key_callback_names_no_file_outside_buttons() {
        for data in [
            "k0:../../x",
            "k1:abc",
            "k1:012\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\x003456789abcdef7408",
            "k0:0123456789ABCDEF0123",
            "k0:0123456789abcdef01234",
            "k0:",
        ] {
            assert_eq!(parse_callback(data), None, "{data:?}");
        }
    }
}
