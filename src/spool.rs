//! The on-disk state: crash-safe queues made of small files.
//!
//! Maildir's lesson: a file written once to a temporary name, fsynced,
//! renamed into place, with its directory fsynced, is a durable queue entry
//! with no database. Layout under `state_dir`:
//!
//! - `queue/`: one file per pending Telegram send (event, chat, progress,
//!   `not_before`); it is deleted once the send is recorded.
//! - `undeliverable/`: sends Telegram refused for good, kept for a person.
//! - `buttons/`: what each approval's buttons mean, so a press resolves
//!   after a restart.
//! - `seen.log`: event ids accepted in the last 24 hours (append-only,
//!   compacted at start-up), the duplicate memory.
//! - `hold`: unix ms before which Telegram asked us not to send (429).
//! - `sent.log`: which event each sent message showed (30 days), so a
//!   reply to a message finds its event.
//! - `offset`: the next `getUpdates` offset.
//!
//! Nothing is rewritten in place; retry times are data in the files.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::event::Event;

/// How long an event id is remembered for duplicate detection.
pub const SEEN_FOR_MS: u64 = 24 * 3600 * 1000;

/// How long a sent message can still be replied to with its event known.
const SENT_FOR_MS: u64 = 30 * 24 * 3600 * 1000;

/// One pending send of one event to one chat.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Item {
    /// Order of acceptance; sends to a chat go out in this order.
    pub seq: u64,
    pub chat: String,
    pub event: Event,
    /// How many parts of a split message Telegram has already taken.
    #[serde(default)]
    pub parts_sent: usize,
    #[serde(default)]
    pub message_ids: Vec<i64>,
    #[serde(default)]
    pub attempts: u32,
    /// Unix ms; not sent before this.
    #[serde(default)]
    pub not_before: u64,
    /// Telegram refused the formatting once: send as plain text.
    #[serde(default)]
    pub plain: bool,
    #[serde(default)]
    pub last_error: Option<String>,
    /// Unix ms the event was accepted.
    #[serde(default)]
    pub accepted_ms: u64,
    /// A `pending` event_processed webhook has gone out for this send.
    #[serde(default)]
    pub pending_notified: bool,
}

impl Item {
    /// Deterministic, so accepting the same event again after a crash
    /// rewrites the same file instead of queueing a second send.
    pub fn file_name(&self) -> String {
        file_name(&self.event.event_id, &self.chat)
    }
}

pub fn file_name(event_id: &str, chat: &str) -> String {
    format!(
        "{}.json",
        &hex_digest(&[event_id.as_bytes(), b"\0", chat.as_bytes()])[..32]
    )
}

/// Lowercase hex SHA-256 of the concatenated parts.
pub fn hex_digest(parts: &[&[u8]]) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for p in parts {
        ctx.update(p);
    }
    ctx.finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Writes `bytes` as `dir/name` atomically and durably: temporary name,
/// fsync, rename, fsync of the directory. Readers see the old file or the
/// new one, never half of one.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> Result<()> {
    write_file(dir, name, bytes, mode)?;
    sync_dir(dir)
}

/// [`write_atomic`] without the directory fsync, for batches that sync the
/// directory once at the end.
pub fn write_file(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let dst = dir.join(name);
    let res = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_data()?;
        fs::rename(&tmp, &dst)
    })();
    res.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io(dst, e)
    })
}

pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// Creates `dir` (and parents) with mode 0700 if missing.
pub fn ensure_dir(dir: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::io(dir, e))
}

use std::os::unix::fs::DirBuilderExt;

/// The state directory and the duplicate memory.
pub struct Spool {
    pub root: PathBuf,
    pub queue: PathBuf,
    pub undeliverable: PathBuf,
    pub buttons: PathBuf,
    seen: Mutex<Seen>,
    sent: Mutex<File>,
}

#[derive(Serialize, Deserialize)]
struct SentLine {
    at: u64,
    chat: String,
    message_id: i64,
    event_id: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    title: String,
}

/// The event a sent message showed.
#[derive(Debug, Clone, PartialEq)]
pub struct SentEvent {
    pub event_id: String,
    pub kind: String,
    pub title: String,
}

struct Seen {
    ids: HashMap<String, u64>,
    log: File,
}

#[derive(Serialize, Deserialize)]
struct SeenLine {
    at: u64,
    id: String,
}

impl Spool {
    /// Opens (creating if needed) the state directory, compacts the
    /// duplicate memory to the last 24 hours and repairs it from the queue.
    pub fn open(root: &Path, now_ms: u64) -> Result<Spool> {
        let queue = root.join("queue");
        let undeliverable = root.join("undeliverable");
        let buttons = root.join("buttons");
        for d in [root, &queue, &undeliverable, &buttons] {
            ensure_dir(d)?;
        }
        let log_path = root.join("seen.log");
        let mut ids = HashMap::new();
        match fs::read_to_string(&log_path) {
            Ok(text) => {
                // A line cut short by a power cut is skipped, not trusted.
                for line in text.lines() {
                    if let Ok(l) = serde_json::from_str::<SeenLine>(line) {
                        if now_ms.saturating_sub(l.at) < SEEN_FOR_MS {
                            ids.insert(l.id, l.at);
                        }
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&log_path, e)),
        }
        // Entries whose file exists in the queue were accepted even if the
        // crash came before their id reached the log.
        let spool_items = list_items(&queue)?;
        for (_, item) in &spool_items {
            ids.entry(item.event.event_id.clone()).or_insert(now_ms);
        }
        let mut compact = String::new();
        for (id, at) in &ids {
            compact.push_str(&seen_line(id, *at));
        }
        write_atomic(root, "seen.log", compact.as_bytes(), 0o600)?;
        let log = OpenOptions::new()
            .append(true)
            .open(&log_path)
            .map_err(|e| Error::io(&log_path, e))?;
        let sent = compact_sent(root, now_ms)?;
        Ok(Spool {
            root: root.to_path_buf(),
            queue,
            undeliverable,
            buttons,
            seen: Mutex::new(Seen { ids, log }),
            sent: Mutex::new(sent),
        })
    }

    /// Records which event the messages in `chat` showed.
    pub fn record_sent(
        &self,
        chat: &str,
        message_ids: &[i64],
        ev: &Event,
        now_ms: u64,
    ) -> Result<()> {
        let mut buf = String::new();
        for &message_id in message_ids {
            let line = SentLine {
                at: now_ms,
                chat: chat.to_string(),
                message_id,
                event_id: ev.event_id.clone(),
                kind: ev.kind.clone(),
                title: ev.title.clone(),
            };
            buf.push_str(&serde_json::to_string(&line).unwrap_or_default());
            buf.push('\n');
        }
        let mut f = self.sent.lock().unwrap_or_else(|p| p.into_inner());
        f.write_all(buf.as_bytes())
            .and_then(|_| f.sync_data())
            .map_err(|e| Error::io(self.root.join("sent.log"), e))
    }

    /// The event a message of ours showed, if it was sent in the last 30
    /// days. Replies are rare, so this reads the log instead of keeping it
    /// in memory.
    pub fn event_of_message(&self, chat: &str, message_id: i64) -> Option<SentEvent> {
        let _g = self.sent.lock().unwrap_or_else(|p| p.into_inner());
        let text = fs::read_to_string(self.root.join("sent.log")).ok()?;
        text.lines()
            .rev()
            .filter_map(|l| serde_json::from_str::<SentLine>(l).ok())
            .find(|l| l.chat == chat && l.message_id == message_id)
            .map(|l| SentEvent {
                event_id: l.event_id,
                kind: l.kind,
                title: l.title,
            })
    }

    /// The saved `getUpdates` offset (0 when none).
    pub fn offset(&self) -> i64 {
        fs::read_to_string(self.root.join("offset"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    pub fn set_offset(&self, offset: i64) -> Result<()> {
        write_atomic(
            &self.root,
            "offset",
            format!("{offset}\n").as_bytes(),
            0o600,
        )
    }

    pub fn is_seen(&self, event_id: &str, now_ms: u64) -> bool {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.ids
            .get(event_id)
            .is_some_and(|at| now_ms.saturating_sub(*at) < SEEN_FOR_MS)
    }

    /// Records accepted ids durably (one fsync for the whole batch).
    pub fn mark_seen(&self, ids: &[String], now_ms: u64) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let mut buf = String::new();
        for id in ids {
            buf.push_str(&seen_line(id, now_ms));
        }
        let path = self.root.join("seen.log");
        seen.log
            .write_all(buf.as_bytes())
            .and_then(|_| seen.log.sync_data())
            .map_err(|e| Error::io(&path, e))?;
        for id in ids {
            seen.ids.insert(id.clone(), now_ms);
        }
        Ok(())
    }

    /// Writes (or rewrites) a queue entry, durably.
    pub fn put(&self, item: &Item) -> Result<()> {
        write_atomic(&self.queue, &item.file_name(), &to_json(item), 0o600)
    }

    /// Writes a queue entry without syncing the directory; call
    /// [`sync_dir`] on `queue` before relying on it.
    pub fn put_unsynced(&self, item: &Item) -> Result<()> {
        write_file(&self.queue, &item.file_name(), &to_json(item), 0o600)
    }

    /// Removes a finished entry durably.
    pub fn remove(&self, name: &str) -> Result<()> {
        let path = self.queue.join(name);
        match fs::remove_file(&path) {
            Ok(()) => sync_dir(&self.queue),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    pub fn get(&self, name: &str) -> Result<Item> {
        read_item(&self.queue.join(name))
    }

    /// Moves an entry Telegram refused for good out of the queue, keeping it
    /// for a person to look at.
    pub fn give_up(&self, item: &Item) -> Result<()> {
        let name = item.file_name();
        write_atomic(&self.undeliverable, &name, &to_json(item), 0o600)?;
        self.remove(&name)
    }

    /// Every queued entry, oldest first.
    pub fn pending(&self) -> Result<Vec<(String, Item)>> {
        list_items(&self.queue)
    }

    /// Unix ms before which nothing may be sent (Telegram's `retry_after`).
    pub fn hold(&self) -> u64 {
        fs::read_to_string(self.root.join("hold"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    pub fn set_hold(&self, until_ms: u64) -> Result<()> {
        write_atomic(
            &self.root,
            "hold",
            format!("{until_ms}\n").as_bytes(),
            0o600,
        )
    }
}

/// Rewrites `sent.log` without entries older than 30 days (and without a
/// line torn by a crash); returns it opened for appending.
fn compact_sent(root: &Path, now_ms: u64) -> Result<File> {
    let path = root.join("sent.log");
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(Error::io(&path, e)),
    };
    let mut keep = String::new();
    for line in text.lines() {
        if let Ok(l) = serde_json::from_str::<SentLine>(line) {
            if now_ms.saturating_sub(l.at) < SENT_FOR_MS {
                keep.push_str(line);
                keep.push('\n');
            }
        }
    }
    write_atomic(root, "sent.log", keep.as_bytes(), 0o600)?;
    OpenOptions::new()
        .append(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))
}

fn seen_line(id: &str, at: u64) -> String {
    let mut s = serde_json::to_string(&SeenLine { at, id: id.into() }).unwrap_or_default();
    s.push('\n');
    s
}

fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    // Serialising our own structs with string keys cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

fn read_item(path: &Path) -> Result<Item> {
    let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::Json {
        path: path.to_path_buf(),
        source: e,
    })
}

/// Reads every queue file, oldest first. A file that does not parse is
/// moved aside (`NAME.damaged`), never trusted and never deleted.
fn list_items(dir: &Path) -> Result<Vec<(String, Item)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !name.ends_with(".json") {
            continue;
        }
        match read_item(&entry.path()) {
            Ok(item) => out.push((name, item)),
            Err(e) => {
                log::error!("{e}; moved aside as {name}.damaged");
                let _ = fs::rename(entry.path(), dir.join(format!("{name}.damaged")));
            }
        }
    }
    out.sort_by_key(|(_, i)| i.seq);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("cct-spool-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn item(id: &str, seq: u64) -> Item {
        let event = crate::event::parse(
            format!(r#"{{"type":"x","title":"t","event_id":"{id}"}}"#).as_bytes(),
            "now",
            String::new,
        )
        .unwrap();
        Item {
            seq,
            chat: "1".into(),
            event,
            parts_sent: 0,
            message_ids: vec![],
            attempts: 0,
            not_before: 0,
            plain: false,
            last_error: None,
            pending_notified: false,
            accepted_ms: 0,
        }
    }

    #[test]
    fn seen_ids_survive_reopen_and_expire() {
        let d = tmp("seen");
        let s = Spool::open(&d, 1000).unwrap();
        s.mark_seen(&["a".into()], 1000).unwrap();
        drop(s);
        let s = Spool::open(&d, 2000).unwrap();
        assert!(s.is_seen("a", 2000));
        assert!(!s.is_seen("b", 2000));
        drop(s);
        let s = Spool::open(&d, 1000 + SEEN_FOR_MS).unwrap();
        assert!(!s.is_seen("a", 1000 + SEEN_FOR_MS));
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn queued_items_count_as_seen_after_a_crash() {
        let d = tmp("repair");
        let s = Spool::open(&d, 1000).unwrap();
        s.put(&item("queued-not-logged", 1)).unwrap();
        drop(s);
        let s = Spool::open(&d, 1001).unwrap();
        assert!(s.is_seen("queued-not-logged", 1001));
        assert_eq!(s.pending().unwrap().len(), 1);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn torn_log_line_and_damaged_item_are_set_aside() {
        let d = tmp("torn");
        let s = Spool::open(&d, 1000).unwrap();
        s.mark_seen(&["ok".into()], 1000).unwrap();
        s.put(&item("a", 2)).unwrap();
        s.put(&item("b", 1)).unwrap();
        drop(s);
        let mut f = OpenOptions::new()
            .append(true)
            .open(d.join("seen.log"))
            .unwrap();
        f.write_all(b"{\"at\":10").unwrap();
        fs::write(d.join("queue/zz.json"), b"{garbage").unwrap();
        let s = Spool::open(&d, 1001).unwrap();
        assert!(s.is_seen("ok", 1001));
        let ids: Vec<_> = s
            .pending()
            .unwrap()
            .into_iter()
            .map(|(_, i)| i.event.event_id)
            .collect();
        assert_eq!(ids, ["b", "a"], "oldest first");
        assert!(d.join("queue/zz.json.damaged").exists());
        fs::remove_dir_all(&d).unwrap();
    }
}
