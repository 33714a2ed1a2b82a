//! The on-disk state: crash-safe queues made of small files.
//!
//! Maildir's lesson: a file written once to a temporary name, fsynced,
//! renamed into place, with its directory fsynced, is a durable queue entry
//! with no database. Layout under `state_dir`:
//!
//! - `queue/`: one file per pending Telegram send (event, chat, progress,
//!   `not_before`); it is deleted once the send is recorded. Entries
//!   accepted together share a `*.batch` file instead ([`batch`]).
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
//! Nothing is rewritten in place; retry times are data in the files. The
//! files themselves are [`crate::store`]'s: records, cells and logs, with
//! damaged ones moved to `damaged/`.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::clock;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::store::{Cell, Log, Records};

mod batch;

pub use crate::store::{digest as hex_digest, ensure_dir, sync_dir, write_atomic, write_file};

/// How long an event id is remembered for duplicate detection.
pub const SEEN_FOR_MS: u64 = 24 * 3600 * 1000;

/// How long a sent message can still be replied to with its event known.
const SENT_FOR_MS: u64 = 30 * 24 * 3600 * 1000;

/// How long a send Telegram refused for good stays in `undeliverable/`.
const KEEP_UNDELIVERABLE_MS: u64 = 30 * 24 * 3600 * 1000;

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
    /// The event's attachments, copied into `state_dir/files/`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<crate::attach::Stored>,
    /// Every chat the event was queued for: its copies go when none of
    /// them has an entry left.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fanout: Vec<String>,
}

impl Item {
    /// A send not tried yet, with no attachments.
    pub fn new(seq: u64, chat: String, event: Event) -> Item {
        Item {
            seq,
            chat,
            event,
            parts_sent: 0,
            message_ids: Vec::new(),
            attempts: 0,
            not_before: 0,
            plain: false,
            last_error: None,
            accepted_ms: 0,
            pending_notified: false,
            files: Vec::new(),
            fanout: Vec::new(),
        }
    }

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

/// The state directory and the duplicate memory.
pub struct Spool {
    pub root: PathBuf,
    pub queue: Records,
    batches: batch::Batches,
    pub undeliverable: Records,
    seen: Mutex<HashMap<String, u64>>,
    seen_log: Log,
    sent: Log,
    offset: Cell,
    hold: Cell,
    /// Parts Telegram took for queued entries before a crash, by entry
    /// name: `(part, message_id)`, from the sent log.
    recovered: Mutex<HashMap<String, Vec<(usize, i64)>>>,
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
    /// Which part of a split message this is.
    #[serde(default)]
    part: usize,
}

/// The event a sent message showed.
#[derive(Debug, Clone, PartialEq)]
pub struct SentEvent {
    pub event_id: String,
    pub kind: String,
    pub title: String,
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
        ensure_dir(root)?;
        let queue = Records::open(root, "queue")?;
        let undeliverable = Records::open(root, "undeliverable")?;
        // Refused sends are kept for a person for a while, not for ever.
        for (name, item) in undeliverable.load_all::<Item>()? {
            if clock::passed(item.accepted_ms, KEEP_UNDELIVERABLE_MS, now_ms) {
                log::info!(
                    "forgetting undeliverable/{name} (event {}, refused by Telegram more than 30 days ago)",
                    item.event.event_id
                );
                undeliverable.remove(&name)?;
            }
        }
        let batches = batch::Batches::open(&queue)?;
        let pending = batches.pending(&queue)?;
        let (seen_log, lines) = Log::open::<SeenLine>(root, "seen.log", |l| {
            clock::age_ms(l.at, now_ms) < SEEN_FOR_MS
        })?;
        let mut ids: HashMap<String, u64> = lines.into_iter().map(|l| (l.id, l.at)).collect();
        // Entries whose file exists in the queue were accepted even if the
        // crash came before their id reached the log.
        let mut repaired = Vec::new();
        for (_, item) in &pending {
            if !ids.contains_key(&item.event.event_id) {
                ids.insert(item.event.event_id.clone(), now_ms);
                repaired.push(SeenLine {
                    at: now_ms,
                    id: item.event.event_id.clone(),
                });
            }
        }
        seen_log.append(&repaired)?;
        let wanted: HashSet<(&str, &str)> = pending
            .iter()
            .map(|(_, i)| (i.event.event_id.as_str(), i.chat.as_str()))
            .collect();
        let mut recovered: HashMap<String, Vec<(usize, i64)>> = HashMap::new();
        let (sent, sent_lines) = Log::open::<SentLine>(root, "sent.log", |l| {
            clock::age_ms(l.at, now_ms) < SENT_FOR_MS
        })?;
        for l in sent_lines {
            if wanted.contains(&(l.event_id.as_str(), l.chat.as_str())) {
                let parts = recovered
                    .entry(file_name(&l.event_id, &l.chat))
                    .or_default();
                if !parts.iter().any(|(p, _)| *p == l.part) {
                    parts.push((l.part, l.message_id));
                }
            }
        }
        Ok(Spool {
            root: root.to_path_buf(),
            queue,
            batches,
            undeliverable,
            seen: Mutex::new(ids),
            seen_log,
            sent,
            offset: Cell::new(root, "offset"),
            hold: Cell::new(root, "hold"),
            recovered: Mutex::new(recovered),
        })
    }

    /// Records, durably and before anything else happens, that Telegram
    /// took parts of `ev` in `chat` as these messages: `(part, message_id)`.
    /// After a crash the entry is finished from this record instead of
    /// being sent again.
    pub fn record_sent(
        &self,
        chat: &str,
        parts: &[(usize, i64)],
        ev: &Event,
        now_ms: u64,
    ) -> Result<()> {
        self.record_sent_as(chat, parts, ev, now_ms, true)
    }

    /// Makes every sent record written so far durable (one fdatasync).
    pub fn sync_sent(&self) -> Result<()> {
        self.sent.sync()
    }

    /// [`Spool::record_sent`], or with `sync` false without waiting for
    /// the disk (group commit): [`Spool::sync_sent`] makes it durable,
    /// before anything that follows from it is written.
    pub fn record_sent_as(
        &self,
        chat: &str,
        parts: &[(usize, i64)],
        ev: &Event,
        now_ms: u64,
        sync: bool,
    ) -> Result<()> {
        let lines: Vec<SentLine> = parts
            .iter()
            .map(|&(part, message_id)| SentLine {
                at: now_ms,
                chat: chat.to_string(),
                message_id,
                event_id: ev.event_id.clone(),
                kind: ev.kind.clone(),
                title: ev.title.clone(),
                part,
            })
            .collect();
        if sync {
            self.sent.append(&lines)?;
        } else {
            self.sent.append_unsynced(&lines)?;
        }
        if self.sent.due() {
            // Months of running must not grow the log without bound.
            let now = clock::now_ms();
            if let Err(e) = self
                .sent
                .compact::<SentLine>(|l| clock::age_ms(l.at, now) < SENT_FOR_MS)
            {
                log::warn!("cannot compact sent.log (retried later): {e}");
            }
        }
        Ok(())
    }

    /// Brings a queue entry up to date with the parts the sent log says
    /// Telegram already took (a crash came before the entry was rewritten).
    pub fn recover(&self, name: &str, item: &mut Item) {
        let Some(mut parts) = self
            .recovered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name)
        else {
            return;
        };
        parts.sort();
        let mut ids = Vec::new();
        for (i, (part, mid)) in parts.into_iter().enumerate() {
            if part != i {
                break;
            }
            ids.push(mid);
        }
        if ids.len() > item.parts_sent {
            log::info!(
                "event {} was sent to chat {} before a restart (message {:?}); not sending it again",
                item.event.event_id,
                item.chat,
                ids
            );
            item.parts_sent = ids.len();
            item.message_ids = ids;
        }
    }

    /// The event a message of ours showed, if it was sent in the last 30
    /// days. Replies are rare, so this reads the log instead of keeping it
    /// in memory.
    pub fn event_of_message(&self, chat: &str, message_id: i64) -> Option<SentEvent> {
        self.sent
            .read::<SentLine>()
            .into_iter()
            .rev()
            .find(|l| crate::telegram::api::same_chat(&l.chat, chat) && l.message_id == message_id)
            .map(|l| SentEvent {
                event_id: l.event_id,
                kind: l.kind,
                title: l.title,
            })
    }

    /// The saved `getUpdates` offset (0 when none).
    pub fn offset(&self) -> i64 {
        self.offset.get().unwrap_or(0)
    }

    pub fn set_offset(&self, offset: i64) -> Result<()> {
        self.offset.set(offset)
    }

    pub fn is_seen(&self, event_id: &str, now_ms: u64) -> bool {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.get(event_id)
            .is_some_and(|at| clock::age_ms(*at, now_ms) < SEEN_FOR_MS)
    }

    /// Records accepted ids durably (one fsync for the whole batch).
    pub fn mark_seen(&self, ids: &[String], now_ms: u64) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let lines: Vec<SeenLine> = ids
            .iter()
            .map(|id| SeenLine {
                at: now_ms,
                id: id.clone(),
            })
            .collect();
        self.seen_log.append(&lines)?;
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        for id in ids {
            seen.insert(id.clone(), now_ms);
        }
        if self.seen_log.due() {
            seen.retain(|_, at| clock::age_ms(*at, now_ms) < SEEN_FOR_MS);
            if let Err(e) = self
                .seen_log
                .compact::<SeenLine>(|l| clock::age_ms(l.at, now_ms) < SEEN_FOR_MS)
            {
                log::warn!("cannot compact seen.log (retried later): {e}");
            }
        }
        Ok(())
    }

    /// Writes (or rewrites) a queue entry, durably.
    pub fn put(&self, item: &Item) -> Result<()> {
        let name = item.file_name();
        self.batches.owned(&name);
        self.queue.put(&name, item)
    }

    /// Writes new queue entries at the cost of about one fdatasync, two or
    /// more as one batch file, without syncing the directory; call
    /// `queue.sync()` before relying on them.
    pub fn put_all_unsynced(&self, items: &[Item]) -> Result<()> {
        self.batches.write(&self.queue, items)
    }

    /// Removes an entry durably, however it ended (refused for good,
    /// handed to a fleet hub, finished on its own): a batch that holds
    /// it is rewritten without it.
    pub fn remove(&self, name: &str) -> Result<()> {
        if self.batches.drop_entry(&self.queue, name)? {
            self.queue.sync()?;
        }
        Ok(())
    }

    /// Removes entries whose sends are in the sent log, without the
    /// directory fsync; whether a file went.
    pub fn finish_sent_unsynced(&self, names: &[String]) -> Result<bool> {
        self.batches.finish_sent(&self.queue, names)
    }

    /// Whether `name` is still queued.
    pub fn is_queued(&self, name: &str) -> bool {
        self.batches.contains(name) || self.queue.exists(name)
    }

    /// A queue entry; `None` when it is gone or was damaged (moved aside).
    pub fn get(&self, name: &str) -> Result<Option<Item>> {
        match self.queue.get(name)? {
            Some(item) => Ok(Some(item)),
            None => self.batches.get(&self.queue, name),
        }
    }

    /// Moves an entry Telegram refused for good out of the queue, keeping it
    /// for a person to look at.
    pub fn give_up(&self, item: &Item) -> Result<()> {
        let name = item.file_name();
        self.undeliverable.put(&name, item)?;
        self.remove(&name)
    }

    /// Every queued entry, oldest first; damaged ones are moved aside.
    pub fn pending(&self) -> Result<Vec<(String, Item)>> {
        let mut out = self.batches.pending(&self.queue)?;
        out.sort_by_key(|(_, i)| i.seq);
        Ok(out)
    }

    /// Unix ms before which nothing may be sent (Telegram's `retry_after`).
    pub fn hold(&self) -> u64 {
        self.hold.get().unwrap_or(0)
    }

    pub fn set_hold(&self, until_ms: u64) -> Result<()> {
        self.hold.set(until_ms)
    }
}

/// An error that only says a record is missing.
pub fn is_not_found(e: &Error) -> bool {
    matches!(e, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::{self, OpenOptions};
    use std::io::Write;

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
        Item::new(seq, "1".into(), event)
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
        assert!(d.join("damaged/queue_zz.json").exists());
        assert!(d.join("damaged/seen.log").exists());
        fs::remove_dir_all(&d).unwrap();
    }

    fn queue_files(d: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(d.join("queue"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn ids(s: &Spool) -> Vec<(String, u32)> {
        s.pending()
            .unwrap()
            .into_iter()
            .map(|(_, i)| (i.event.event_id, i.attempts))
            .collect()
    }

    #[test]
    fn a_burst_shares_one_file_until_its_last_entry_is_sent() {
        let d = tmp("batch");
        let s = Spool::open(&d, 1000).unwrap();
        let items = [item("a", 1), item("b", 2), item("c", 3)];
        s.put_all_unsynced(&items).unwrap();
        let files = queue_files(&d);
        assert!(
            files.len() == 1 && files[0].ends_with(".batch"),
            "{files:?}"
        );
        assert_eq!(ids(&s), [("a".into(), 0), ("b".into(), 0), ("c".into(), 0)]);
        let (a, b, c) = (
            items[0].file_name(),
            items[1].file_name(),
            items[2].file_name(),
        );
        assert_eq!(s.get(&b).unwrap().unwrap().event.event_id, "b");
        assert!(s.finish_sent_unsynced(&[a.clone(), b.clone()]).is_ok());
        assert_eq!(queue_files(&d), files, "c still needs the batch");
        assert!(!s.is_queued(&a) && s.is_queued(&c));
        assert!(s.get(&a).unwrap().is_none());
        assert!(s.finish_sent_unsynced(std::slice::from_ref(&c)).unwrap());
        assert!(queue_files(&d).is_empty());
        // A batch still here under the name a new one would take is kept.
        s.put_all_unsynced(&[item("a", 1), item("b", 2)]).unwrap();
        let first = queue_files(&d);
        s.finish_sent_unsynced(std::slice::from_ref(&a)).unwrap();
        s.put_all_unsynced(&[item("a", 5), item("e", 6)]).unwrap();
        assert!(s.is_queued(&b), "b's batch was not overwritten");
        assert_eq!(s.get(&b).unwrap().unwrap().event.event_id, "b");
        assert!(queue_files(&d)
            .iter()
            .all(|f| first.contains(f) || f.ends_with(".json")));
        let names: Vec<String> = [&a, &b, &item("e", 6).file_name()]
            .iter()
            .map(|n| n.to_string())
            .collect();
        s.finish_sent_unsynced(&names).unwrap();
        assert!(queue_files(&d).is_empty(), "{:?}", queue_files(&d));
        // Alone, an entry has a file of its own.
        s.put_all_unsynced(&[item("d", 4)]).unwrap();
        assert_eq!(queue_files(&d), [item("d", 4).file_name()]);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_batch_entry_sent_before_a_crash_is_finished_not_sent_again() {
        let d = tmp("batch-crash");
        let s = Spool::open(&d, 1000).unwrap();
        let items = [item("a", 1), item("b", 2)];
        s.put_all_unsynced(&items).unwrap();
        s.record_sent("1", &[(0, 77)], &items[0].event, 1000)
            .unwrap();
        s.finish_sent_unsynced(&[items[0].file_name()]).unwrap();
        drop(s); // a crash: the batch still holds a's line
        let s = Spool::open(&d, 1001).unwrap();
        assert_eq!(ids(&s), [("a".into(), 0), ("b".into(), 0)]);
        let mut a = s.get(&items[0].file_name()).unwrap().unwrap();
        s.recover(&items[0].file_name(), &mut a);
        assert_eq!((a.parts_sent, a.message_ids), (1, vec![77]));
        let names: Vec<String> = items.iter().map(Item::file_name).collect();
        s.finish_sent_unsynced(&names).unwrap();
        assert!(queue_files(&d).is_empty());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_rewritten_or_refused_batch_entry_counts_as_it_is_now() {
        let d = tmp("batch-change");
        let s = Spool::open(&d, 1000).unwrap();
        let mut items = [item("a", 1), item("b", 2), item("c", 3)];
        s.put_all_unsynced(&items).unwrap();
        items[1].attempts = 3;
        s.put(&items[1]).unwrap(); // a retry time: b gets a file of its own
        s.give_up(&items[2]).unwrap(); // refused for good: c leaves the batch
        assert!(!s.is_queued(&items[2].file_name()));
        drop(s);
        let s = Spool::open(&d, 1001).unwrap();
        assert_eq!(ids(&s), [("a".into(), 0), ("b".into(), 3)]);
        assert_eq!(s.get(&items[1].file_name()).unwrap().unwrap().attempts, 3);
        assert!(d.join("undeliverable").join(items[2].file_name()).exists());
        let names: Vec<String> = items[..2].iter().map(Item::file_name).collect();
        s.finish_sent_unsynced(&names).unwrap();
        assert!(queue_files(&d).is_empty(), "{:?}", queue_files(&d));
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_damaged_batch_is_set_aside_and_its_readable_entries_kept() {
        let d = tmp("batch-damaged");
        let s = Spool::open(&d, 1000).unwrap();
        s.put_all_unsynced(&[item("a", 1), item("b", 2)]).unwrap();
        drop(s);
        let batch = queue_files(&d).remove(0);
        let mut f = OpenOptions::new()
            .append(true)
            .open(d.join("queue").join(&batch))
            .unwrap();
        f.write_all(b"0123 {\"seq\":").unwrap();
        // A line whose name is not its item's is damaged too.
        let moved = format!(
            "../x.json {}\n",
            serde_json::to_string(&item("c", 3)).unwrap()
        );
        f.write_all(format!("\n{moved}").as_bytes()).unwrap();
        let s = Spool::open(&d, 1001).unwrap();
        assert_eq!(ids(&s), [("a".into(), 0), ("b".into(), 0)]);
        assert!(d.join("damaged").join(format!("queue_{batch}")).exists());
        assert!(!queue_files(&d).contains(&batch));
        assert!(
            !d.join("x.json").exists(),
            "a name from the file is not a path"
        );
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_send_telegram_took_before_a_crash_is_not_sent_again() {
        let d = tmp("recover");
        let s = Spool::open(&d, 1000).unwrap();
        let mut it = item("sent-then-crash", 1);
        s.put(&it).unwrap();
        s.record_sent("1", &[(0, 77)], &it.event, 1000).unwrap();
        drop(s);
        let s = Spool::open(&d, 1001).unwrap();
        s.recover(&it.file_name(), &mut it);
        assert_eq!((it.parts_sent, it.message_ids.clone()), (1, vec![77]));
        fs::remove_dir_all(&d).unwrap();
    }
}
