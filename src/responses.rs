//! Response files (CONTRACT section 5): what people answered, for other
//! programs to read.
//!
//! Each is written atomically with mode [`MODE`]. The `<n>` in a name is the
//! Telegram `update_id` that carried the answer: unique, so names never
//! collide, and a replay of the same update after a crash finds its file
//! and is not written twice.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::Value;

use crate::clock;
use crate::error::{Error, Result};
use crate::spool;

/// Group-readable, never world-readable (CONTRACT section 5): members of
/// the `cctelegram` group, such as an MCP server run by one of them, read
/// the answers.
pub const MODE: u32 = 0o640;

/// Told of every response before its file is written: the source it
/// answers (stable across a replay), the file name and the body. The fleet
/// hub uses it to owe the answer to the device the event came from.
pub type Forward = Box<dyn Fn(&str, &str, &Value) + Send + Sync>;

pub struct Responses {
    pub dir: PathBuf,
    forward: std::sync::OnceLock<Forward>,
    /// Update ids at or after the saved offset that already have a file.
    handled: Mutex<HashSet<i64>>,
}

/// The update id in a response file name, if it is one of ours.
fn update_id_of(name: &str) -> Option<i64> {
    let stem = name.strip_suffix(".json")?;
    if !stem.starts_with("telegram_callback_") && !stem.starts_with("telegram_response_") {
        return None;
    }
    stem.rsplit('_').next()?.parse().ok()
}

impl Responses {
    /// Opens `dir`, noting which updates from `offset` on already have a
    /// file (the crash window between a file and the saved offset).
    pub fn open(dir: &Path, offset: i64) -> Result<Responses> {
        spool::ensure_dir(dir)?;
        let mut handled = HashSet::new();
        for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))?.flatten() {
            if let Some(id) = update_id_of(&entry.file_name().to_string_lossy()) {
                if id >= offset {
                    handled.insert(id);
                }
            }
        }
        Ok(Responses {
            dir: dir.to_path_buf(),
            forward: std::sync::OnceLock::new(),
            handled: Mutex::new(handled),
        })
    }

    pub fn set_forward(&self, f: Forward) {
        let _ = self.forward.set(f);
    }

    fn forwarded(&self, source: &str, name: &str, body: &Value) {
        if let Some(f) = self.forward.get() {
            f(source, name, body);
        }
    }

    pub fn is_handled(&self, update_id: i64) -> bool {
        self.handled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&update_id)
    }

    /// Writes `telegram_<kind>_<user_id>_<stamp>_<update_id>.json`.
    pub fn write(&self, kind: &str, user_id: i64, update_id: i64, body: &Value) -> Result<String> {
        let name = format!(
            "telegram_{kind}_{user_id}_{}_{update_id}.json",
            clock::compact_stamp(clock::now_ms())
        );
        self.forwarded(&format!("{kind}_{user_id}_{update_id}"), &name, body);
        let mut bytes = serde_json::to_vec_pretty(body).unwrap_or_default();
        bytes.push(b'\n');
        spool::write_atomic(&self.dir, &name, &bytes, MODE)?;
        self.handled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(update_id);
        Ok(name)
    }

    /// Writes the response for an approval nobody answered in time, once:
    /// `None` when its file is there already (a replay after a crash).
    pub fn write_expired(&self, key: &str, body: &Value) -> Result<Option<String>> {
        let suffix = format!("_{key}.json");
        let exists = fs::read_dir(&self.dir)
            .map_err(|e| Error::io(&self.dir, e))?
            .flatten()
            .any(|e| {
                let n = e.file_name();
                let n = n.to_string_lossy();
                n.starts_with("telegram_expired_") && n.ends_with(&suffix)
            });
        if exists {
            return Ok(None);
        }
        let name = format!(
            "telegram_expired_{}_{key}.json",
            clock::compact_stamp(clock::now_ms())
        );
        self.forwarded(&format!("expired_{key}"), &name, body);
        let mut bytes = serde_json::to_vec_pretty(body).unwrap_or_default();
        bytes.push(b'\n');
        spool::write_atomic(&self.dir, &name, &bytes, MODE)?;
        Ok(Some(name))
    }

    /// Forgets ids below the new offset; Telegram will not send them again.
    pub fn confirm(&self, offset: i64) {
        self.handled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|id| *id >= offset);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_update_id() {
        assert_eq!(
            update_id_of("telegram_callback_5_20261129_065002_42.json"),
            Some(42)
        );
        assert_eq!(
            update_id_of("telegram_response_5_20261129_065002_7.json"),
            Some(7)
        );
        assert_eq!(update_id_of("other_1.json"), None);
    }
}
