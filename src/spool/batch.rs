//! Queue entries accepted together share one file, `queue/<name>.batch`.
//!
//! A burst of a thousand events was a thousand queue files, each an inode
//! created, renamed into place and later unlinked: three directory
//! operations of 40 to 150 us each on ext4 here, which no shared fsync
//! saves, and on flash a thousand metadata writes. Accepted together, they
//! are one file: a line per entry, `<entry name> <item as JSON>`, written
//! once (temporary name, fdatasync, rename) and never changed in place.
//!
//! Which copy of an entry counts: its own `queue/<name>` file when it has
//! one (an entry gets one when it is rewritten: a part sent, a retry time),
//! else its line in its batch. An entry leaves its batch
//!
//! - once sent with its group ([`Batches::finish_sent`]): the file stays
//!   as it is, since `sent.log` has the send. After a crash the entry is read back from
//!   the batch and finished from the log, not sent again, exactly as one
//!   whose own file a crash left behind;
//! - any other way ([`Batches::drop_entry`]: refused for good, finished
//!   one by one, a progress state superseded): the batch is rewritten
//!   without it.
//!
//! The batch file goes with the last of its entries. (A batch kept for
//! more than `sent.log`'s 30 days by one entry Telegram will not take
//! would, after a restart, send its other entries again.)

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

use super::Item;
use crate::error::Result;
use crate::store::{write_file, Records, FILE_MODE};

/// How a batch file's name ends.
const SUFFIX: &str = ".batch";

/// The batches in `queue/` and the entries of each not finished yet.
pub struct Batches {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Entry name -> `2 * i + own`: its batch is `batches[i]`; `own` (1)
    /// when it has a file of its own too. (A `u64` value: the binary
    /// has that map already.)
    of: HashMap<String, u64>,
    /// Each batch's file name and how many of its entries are left.
    batches: Vec<(String, usize)>,
}

impl Batches {
    /// Reads every batch in `queue`. A batch with a line that does not
    /// parse is moved to `damaged/`, after each line that does was written
    /// as an entry of its own: what can be read is not lost.
    pub fn open(queue: &Records) -> Result<Batches> {
        let mut st = State::default();
        let dir = &queue.dir;
        for entry in std::fs::read_dir(dir).map_err(|e| crate::error::Error::io(dir, e))? {
            let entry = entry.map_err(|e| crate::error::Error::io(dir, e))?;
            let batch = entry.file_name().to_string_lossy().into_owned();
            if batch.starts_with('.') || !batch.ends_with(SUFFIX) {
                continue;
            }
            let lines = read(queue, &batch)?;
            if lines.iter().any(|(_, item)| item.is_none()) {
                for (name, item) in &lines {
                    if let Some(item) = item {
                        if !queue.exists(name) {
                            queue.put_unsynced(name, item)?;
                        }
                    }
                }
                queue.sync()?;
                queue.quarantine(&batch, "a line does not parse");
                continue;
            }
            // An entry counts in the first batch that has it.
            let i = st.batches.len() as u64;
            let mut left = 0;
            for (name, _) in lines {
                if let std::collections::hash_map::Entry::Vacant(e) = st.of.entry(name) {
                    let own = u64::from(queue.exists(e.key()));
                    e.insert(2 * i + own);
                    left += 1;
                }
            }
            if left == 0 {
                queue.remove(&batch)?;
                continue;
            }
            st.batches.push((batch, left));
        }
        Ok(Batches {
            state: Mutex::new(st),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes `items` as queue entries without the directory fsync: two or
    /// more new ones as one batch, the rest (already queued, or alone, or
    /// on a fleet device) as files of their own.
    pub fn write(&self, queue: &Records, items: &[Item]) -> Result<()> {
        let named: Vec<(String, &Item)> = items.iter().map(|i| (i.file_name(), i)).collect();
        let (fresh, known): (Vec<_>, Vec<_>) = {
            let st = self.lock();
            named
                .into_iter()
                .partition(|(n, _)| !st.of.contains_key(n) && !queue.exists(n))
        };
        // Named after its first entry. (A batch of that name still here
        // had that entry first and kept others: the same event again, a
        // day later. Not overwritten.)
        let batch = fresh
            .first()
            .map(|(n, _)| format!("{}{SUFFIX}", n.trim_end_matches(".json")))
            .filter(|b| !queue.exists(b));
        // A fleet device retires entries one by one as the broker takes
        // them, not by sending: a batch would be rewritten at every one.
        let batch = match batch {
            Some(b) if fresh.len() > 1 && !crate::fleet::is_device() => b,
            _ => return queue.put_all_unsynced(&[fresh, known].concat()),
        };
        queue.put_all_unsynced(&known)?;
        let mut bytes = Vec::new();
        for (name, item) in &fresh {
            bytes.extend_from_slice(name.as_bytes());
            bytes.push(b' ');
            // Our own struct with string keys: serialising cannot fail.
            serde_json::to_writer(&mut bytes, item).unwrap_or_default();
            bytes.push(b'\n');
        }
        write_file(&queue.dir, &batch, &bytes, FILE_MODE)?;
        let mut st = self.lock();
        let i = st.batches.len() as u64;
        st.batches.push((batch, fresh.len()));
        for (name, _) in fresh {
            st.of.insert(name, 2 * i);
        }
        Ok(())
    }

    /// Whether `name` is an unfinished entry of a batch.
    pub fn contains(&self, name: &str) -> bool {
        self.lock().of.contains_key(name)
    }

    /// Notes that `name` is about to get a file of its own (call before
    /// writing it): that file is what counts from now on.
    pub fn owned(&self, name: &str) {
        if let Some(m) = self.lock().of.get_mut(name) {
            *m |= 1;
        }
    }

    /// `name`'s line in its batch (not its own file; `None` when it is in
    /// no batch).
    pub fn get(&self, queue: &Records, name: &str) -> Result<Option<Item>> {
        let st = self.lock();
        let Some(batch) = st.batch_of(name) else {
            return Ok(None);
        };
        Ok(read(queue, batch)?
            .into_iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, item)| item))
    }

    /// Every entry: own files, and batch lines of entries with none.
    pub fn pending(&self, queue: &Records) -> Result<Vec<(String, Item)>> {
        let mut st = self.lock();
        let mut out = queue.load_all::<Item>()?;
        let own: HashSet<String> = out.iter().map(|(n, _)| n.clone()).collect();
        for i in 0..st.batches.len() {
            if st.batches[i].1 == 0 {
                continue;
            }
            for (name, item) in read(queue, &st.batches[i].0)? {
                let Some(m) = st.of.get_mut(&name).filter(|m| **m / 2 == i as u64) else {
                    continue;
                };
                if own.contains(&name) {
                    *m |= 1;
                } else if let Some(item) = item {
                    out.push((name, item));
                }
            }
        }
        Ok(out)
    }

    /// Removes sent entries (their sends are in `sent.log`): own files
    /// go, and each batch whose last entry this was. Returns whether a
    /// file went (the directory then needs its fsync).
    pub fn finish_sent(&self, queue: &Records, names: &[String]) -> Result<bool> {
        let mut st = self.lock();
        let mut gone = false;
        for name in names {
            if st.of.get(name).is_none_or(|m| m & 1 == 1) {
                gone |= queue.remove_unsynced(name)?;
            }
            gone |= st.leave(queue, name)?;
        }
        Ok(gone)
    }

    /// Removes an entry that was not sent: its own file, and its line by
    /// rewriting its batch without it. Returns whether a file changed.
    pub fn drop_entry(&self, queue: &Records, name: &str) -> Result<bool> {
        let mut st = self.lock();
        let mut gone = queue.remove_unsynced(name)?;
        let Some(&m) = st.of.get(name) else {
            return Ok(gone);
        };
        let (batch, left) = &st.batches[(m / 2) as usize];
        if *left > 1 {
            let mut bytes = Vec::new();
            for (n, line) in read_lines(queue, batch)? {
                if n != name && st.of.get(&n).is_some_and(|o| o / 2 == m / 2) {
                    bytes.extend_from_slice(line.as_bytes());
                    bytes.push(b'\n');
                }
            }
            write_file(&queue.dir, batch, &bytes, FILE_MODE)?;
            gone = true;
        }
        gone |= st.leave(queue, name)?;
        Ok(gone)
    }
}

impl State {
    fn batch_of(&self, name: &str) -> Option<&String> {
        let m = self.of.get(name)?;
        Some(&self.batches[(m / 2) as usize].0)
    }

    /// `name` is finished: it leaves its batch, and the batch file goes
    /// with its last entry. Returns whether the file went.
    fn leave(&mut self, queue: &Records, name: &str) -> Result<bool> {
        let Some(m) = self.of.remove(name) else {
            return Ok(false);
        };
        let (batch, left) = &mut self.batches[(m / 2) as usize];
        *left -= 1;
        if *left > 0 {
            return Ok(false);
        }
        let gone = queue.remove_unsynced(batch);
        if self.of.is_empty() {
            // A burst's table is not kept through the idle hours after it.
            *self = State::default();
        }
        gone
    }
}

/// A batch's lines, each with the entry name it starts with.
fn read_lines(queue: &Records, batch: &str) -> Result<Vec<(String, String)>> {
    let path = queue.path(batch);
    let bytes = std::fs::read(&path).map_err(|e| crate::error::Error::io(&path, e))?;
    Ok(String::from_utf8_lossy(&bytes)
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            (
                l.split(' ').next().unwrap_or_default().to_string(),
                l.to_string(),
            )
        })
        .collect())
}

/// A batch's entries; `None` for a line that does not parse, or whose
/// name is not its item's (the name is a file name in `queue/`).
fn read(queue: &Records, batch: &str) -> Result<Vec<(String, Option<Item>)>> {
    Ok(read_lines(queue, batch)?
        .into_iter()
        .map(|(name, line)| {
            let json = line.get(name.len() + 1..).unwrap_or_default();
            let item = serde_json::from_slice::<Item>(json.as_bytes()).ok();
            let item = item.filter(|i| i.file_name() == name);
            (name, item)
        })
        .collect())
}
