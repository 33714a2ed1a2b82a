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
//! - once sent ([`Batches::finish_sent`]): the file stays as it is, since
//!   `sent.log` has the send. After a crash the entry is read back from
//!   the batch and finished from the log, not sent again, exactly as one
//!   whose own file a crash left behind;
//! - any other way ([`Batches::drop_entry`], refused for good): the batch
//!   is rewritten without it.
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
    /// Entry name -> (its batch, whether it has a file of its own too).
    of: HashMap<String, (String, bool)>,
    /// Batch name -> how many of its entries are not finished.
    left: HashMap<String, usize>,
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
            if lines.is_empty() {
                queue.remove(&batch)?;
                continue;
            }
            st.left.insert(batch.clone(), lines.len());
            for (name, _) in lines {
                let own = queue.exists(&name);
                st.of.insert(name, (batch.clone(), own));
            }
        }
        Ok(Batches {
            state: Mutex::new(st),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes `items` as queue entries without the directory fsync: two or
    /// more new ones as one batch, the rest (already queued, or alone) as
    /// files of their own.
    pub fn write(&self, queue: &Records, items: &[Item]) -> Result<()> {
        let named: Vec<(String, &Item)> = items.iter().map(|i| (i.file_name(), i)).collect();
        let (fresh, known): (Vec<_>, Vec<_>) = {
            let st = self.lock();
            named
                .into_iter()
                .partition(|(n, _)| !st.of.contains_key(n) && !queue.exists(n))
        };
        let batch = fresh
            .first()
            .map(|(n, _)| format!("{}{SUFFIX}", n.trim_end_matches(".json")));
        let batch = match batch {
            Some(b) if fresh.len() > 1 && !self.lock().left.contains_key(&b) => b,
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
        st.left.insert(batch.clone(), fresh.len());
        for (name, _) in fresh {
            st.of.insert(name, (batch.clone(), false));
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
            m.1 = true;
        }
    }

    /// `name`'s line in its batch (not its own file; `None` when it is in
    /// no batch).
    pub fn get(&self, queue: &Records, name: &str) -> Result<Option<Item>> {
        let st = self.lock();
        let Some((batch, _)) = st.of.get(name) else {
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
        let batches: Vec<String> = st.left.keys().cloned().collect();
        for batch in batches {
            for (name, item) in read(queue, &batch)? {
                let Some(m) = st.of.get_mut(&name).filter(|m| m.0 == batch) else {
                    continue;
                };
                if own.contains(&name) {
                    m.1 = true;
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
            let own = st.of.get(name).is_none_or(|m| m.1);
            if own {
                gone |= queue.remove_unsynced(name)?;
            }
            if let Some((batch, _)) = st.of.remove(name) {
                gone |= st.leave(queue, &batch)?;
            }
        }
        Ok(gone)
    }

    /// Removes an entry that was not sent: its own file, and its line by
    /// rewriting its batch without it. Returns whether a file changed.
    pub fn drop_entry(&self, queue: &Records, name: &str) -> Result<bool> {
        let mut st = self.lock();
        let mut gone = queue.remove_unsynced(name)?;
        let Some((batch, _)) = st.of.get(name).cloned() else {
            return Ok(gone);
        };
        if st.left.get(&batch) > Some(&1) {
            let mut bytes = Vec::new();
            for line in read_lines(queue, &batch)? {
                let n = line.split(' ').next().unwrap_or_default();
                if n != name && st.of.get(n).is_some_and(|m| m.0 == batch) {
                    bytes.extend_from_slice(line.as_bytes());
                    bytes.push(b'\n');
                }
            }
            write_file(&queue.dir, &batch, &bytes, FILE_MODE)?;
            gone = true;
        }
        st.of.remove(name);
        gone |= st.leave(queue, &batch)?;
        Ok(gone)
    }
}

impl State {
    /// One entry of `batch` is finished; the file goes with the last.
    fn leave(&mut self, queue: &Records, batch: &str) -> Result<bool> {
        let Some(left) = self.left.get_mut(batch) else {
            return Ok(false);
        };
        *left -= 1;
        if *left > 0 {
            return Ok(false);
        }
        self.left.remove(batch);
        queue.remove_unsynced(batch)
    }
}

/// A batch's lines as text.
fn read_lines(queue: &Records, batch: &str) -> Result<Vec<String>> {
    let path = queue.path(batch);
    let bytes = std::fs::read(&path).map_err(|e| crate::error::Error::io(&path, e))?;
    Ok(String::from_utf8_lossy(&bytes)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

/// A batch's entries; `None` for a line that does not parse, or whose
/// name is not its item's (the name is a file name in `queue/`).
fn read(queue: &Records, batch: &str) -> Result<Vec<(String, Option<Item>)>> {
    Ok(read_lines(queue, batch)?
        .into_iter()
        .map(|line| match line.split_once(' ') {
            Some((name, json)) => {
                let item = serde_json::from_str::<Item>(json).ok();
                let item = item.filter(|i| i.file_name() == name);
                (name.to_string(), item)
            }
            None => (line, None),
        })
        .collect())
}
