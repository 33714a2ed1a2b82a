//! What approval buttons mean, who pressed first, and when they expire.
//!
//! One file per approval in `state_dir/buttons/`, named by the key that
//! short callback data carries, rewritten whole (temporary name, rename)
//! under one lock: the sender adds the messages that carry the buttons, the
//! poller records the decision, the expiry timer records an expiry. The
//! first decision written wins; later presses read it and are told so.

use std::fs;
use std::io;
use std::path::PathBuf;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::event::Event;
use crate::spool;
use crate::telegram::render::button_key;

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
    dir: PathBuf,
    lock: Mutex<()>,
}

/// The approval key and option index a button's callback data names.
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
    pub fn new(dir: PathBuf) -> Approvals {
        Approvals {
            dir,
            lock: Mutex::new(()),
        }
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.json"))
    }

    pub fn get(&self, key: &str) -> Result<Option<Approval>> {
        let path = self.path(key);
        match fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| Error::Json { path, source: e }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    fn put(&self, a: &Approval, sync: bool) -> Result<()> {
        let bytes = serde_json::to_vec(a).unwrap_or_default();
        let name = format!("{}.json", a.key());
        if sync {
            spool::write_atomic(&self.dir, &name, &bytes, 0o600)
        } else {
            spool::write_file(&self.dir, &name, &bytes, 0o600)
        }
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
        if !a.messages.contains(&entry) {
            a.messages.push(entry);
        }
        let mut set = None;
        if a.expires_at.is_none() {
            if let Some(m) = ev.data.get("timeout_minutes").and_then(|v| v.as_f64()) {
                if m > 0.0 {
                    let at = now + (m * 60_000.0) as u64;
                    a.expires_at = Some(at);
                    set = Some(at);
                }
            }
        }
        self.put(&a, true)?;
        Ok(Delivered {
            expires_at: set,
            decided: a.decision.is_some().then_some(a),
        })
    }

    /// Records `d` as the decision unless one exists. A press carried by the
    /// same update as the recorded decision counts as that decision.
    /// `first` runs, under the lock, for the press that decides (and for a
    /// replay of it), before the decision is recorded: it writes the
    /// response file, so the file never lags behind the decision.
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

    /// Undecided approvals with an expiry, soonest first.
    pub fn expiries(&self) -> Result<Vec<(u64, String)>> {
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        let dir = fs::read_dir(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        for entry in dir.filter_map(|e| e.ok()) {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(key) = name
                .strip_suffix(".json")
                .filter(|_| !name.starts_with('.'))
            else {
                continue;
            };
            match self.get(key) {
                Ok(Some(a)) if a.decision.is_none() => {
                    if let Some(at) = a.expires_at {
                        out.push((at, key.to_string()));
                    }
                }
                Ok(_) => {}
                Err(e) => log::warn!("approval {key} cannot be read: {e}"),
            }
        }
        out.sort();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
