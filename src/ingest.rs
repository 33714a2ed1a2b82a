//! Event files in `events_dir` become queue entries in `state_dir`.
//!
//! The order of a batch is the durability argument: queue files are written
//! and synced, then the ids reach the duplicate memory, and only then do the
//! event files leave `events_dir`. A crash at any point leaves either the
//! event file (accepted again, into the same queue file names) or the queue
//! entries, never neither. Bad files go to `events_dir/failed/` with a
//! `NAME.error` beside them; nothing is deleted unread.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::approvals::Approvals;
use crate::attach;
use crate::clock;
use crate::error::Result;
use crate::event::{self, Event, Invalid};
use crate::reload::Live;
use crate::spool::{self, Item, Spool};
use crate::stats::Stats;

/// What a batch asks of the watcher.
#[derive(Debug, Default)]
pub struct Accepted {
    /// Some file looked half-written; look again after this long.
    pub look_again: Option<Duration>,
}

/// Tells the sender when a queue entry it already has is on disk.
pub struct Durable {
    ok: AtomicBool,
    tx: std::sync::Mutex<Option<smol::channel::Sender<()>>>,
    rx: smol::channel::Receiver<()>,
}

impl Durable {
    fn new() -> Arc<Durable> {
        let (tx, rx) = smol::channel::bounded(1);
        Arc::new(Durable {
            ok: AtomicBool::new(false),
            tx: std::sync::Mutex::new(Some(tx)),
            rx,
        })
    }

    fn done(&self, ok: bool) {
        self.ok.store(ok, Ordering::SeqCst);
        // Closing the channel wakes every waiter.
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    /// Waits until the entry is on disk; false if it could not be written
    /// (the event file then stays, to be accepted again).
    pub async fn wait(&self) -> bool {
        let _ = self.rx.recv().await;
        self.ok.load(Ordering::SeqCst)
    }
}

/// How long a file found half-written by a scan is given to be finished.
const WRITER_GRACE: Duration = Duration::from_secs(2);

/// What the sender needs to know about a new queue entry.
pub struct Queued {
    pub name: String,
    pub chat: String,
    pub seq: u64,
    pub not_before: u64,
    /// A pause does not hold it (an approval, or urgent).
    pub never_held: bool,
    /// The task id of a progress event, whose sends coalesce.
    pub progress: Option<String>,
    /// Unix ms the event was accepted (the status page's oldest wait).
    pub accepted_ms: u64,
    /// The entry itself, handed over before it is on disk.
    pub early: Option<(Item, Arc<Durable>)>,
}

impl Queued {
    /// What the sender keeps in memory of a queue entry.
    pub fn of(name: String, i: &Item, early: Option<(Item, Arc<Durable>)>) -> Queued {
        Queued {
            name,
            chat: i.chat.clone(),
            seq: i.seq,
            not_before: i.not_before,
            never_held: crate::notify::never_held(&i.event),
            progress: crate::telegram::progress::is_progress(&i.event)
                .then(|| i.event.task_id.clone()),
            accepted_ms: i.accepted_ms,
            early,
        }
    }
}

/// How a file name came to our attention.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Seen {
    /// Closed after writing, or moved in: complete, read it now.
    Ready,
    /// Found by a scan: read it now, but its writer may still be at it.
    Scanned,
    /// Only created: a regular file is still being written, but a symlink,
    /// directory or pipe will never be "closed after writing".
    Created,
}

enum Outcome {
    Accept(Event),
    Duplicate(String),
    Refuse(Invalid),
    /// Gone, or not ours.
    Skip,
    /// Found by a scan half-written: its writer may still be at it.
    Unfinished,
}

pub struct Ingest {
    pub events_dir: PathBuf,
    failed_dir: PathBuf,
    spool: Arc<Spool>,
    approvals: Arc<Approvals>,
    live: Arc<Live>,
    seq: AtomicU64,
    stats: Arc<Stats>,
    tx: smol::channel::Sender<Vec<Queued>>,
    /// Accepted files still to be removed, on a pool thread.
    removals: Arc<std::sync::Mutex<Removals>>,
}

/// Accepted files waiting to be removed, and the one pool job removing
/// them: a batch hands its files over and goes on, it never waits.
#[derive(Default)]
struct Removals {
    todo: Vec<PathBuf>,
    job: Option<crate::pool::Job<()>>,
    running: bool,
}

fn lock(r: &std::sync::Mutex<Removals>) -> std::sync::MutexGuard<'_, Removals> {
    r.lock().unwrap_or_else(|p| p.into_inner())
}

/// Makes a batch durable: button files, queue files, their directories,
/// then the duplicate memory.
fn persist(
    spool: &Spool,
    approvals: &Approvals,
    accepted: &[(PathBuf, Event)],
    items: &[Item],
    now: u64,
) -> Result<()> {
    let mut buttons = false;
    for (_, ev) in accepted {
        if ev.is_approval() {
            approvals.record(ev)?;
            buttons = true;
        }
    }
    spool.put_all_unsynced(items)?;
    spool.queue.sync()?;
    if buttons {
        approvals.sync()?;
    }
    let ids: Vec<String> = accepted.iter().map(|(_, e)| e.event_id.clone()).collect();
    spool.mark_seen(&ids, now)
}

/// Removes accepted files from the events directory.
fn remove_all(paths: &[PathBuf]) {
    for path in paths {
        if let Err(e) = fs::remove_file(path) {
            if e.kind() != io::ErrorKind::NotFound {
                log::warn!("{}: accepted but could not be removed: {e}", path.display());
            }
        }
    }
}

/// Names we read: `*.json`, not hidden, not a writer's temporary file.
pub fn is_candidate(name: &str) -> bool {
    name.ends_with(".json") && !name.starts_with('.') && name.len() > ".json".len()
}

impl Ingest {
    pub fn new(
        events_dir: &Path,
        spool: Arc<Spool>,
        approvals: Arc<Approvals>,
        live: Arc<Live>,
        stats: Arc<Stats>,
        tx: smol::channel::Sender<Vec<Queued>>,
    ) -> Result<Ingest> {
        let failed_dir = events_dir.join("failed");
        spool::ensure_dir(events_dir)?;
        spool::ensure_dir(&failed_dir)?;
        Ok(Ingest {
            events_dir: events_dir.to_path_buf(),
            failed_dir,
            spool,
            approvals,
            live,
            // Sequence numbers order sends; starting from the clock keeps
            // them increasing across restarts.
            seq: AtomicU64::new(clock::now_ms() * 1000),
            stats,
            tx,
            removals: Default::default(),
        })
    }

    /// The candidate files present now, oldest first.
    pub fn scan(&self) -> Result<Vec<(OsString, Seen)>> {
        let dir = fs::read_dir(&self.events_dir)
            .map_err(|e| crate::error::Error::io(&self.events_dir, e))?;
        let mut found: Vec<(SystemTime, OsString)> = dir
            .filter_map(|e| e.ok())
            .filter(|e| is_candidate(&e.file_name().to_string_lossy()))
            .map(|e| {
                let t = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                (t, e.file_name())
            })
            .collect();
        found.sort();
        Ok(found.into_iter().map(|(_, n)| (n, Seen::Scanned)).collect())
    }

    /// Waits for the removals handed over so far, if any are running.
    pub fn finish_removing(&self) {
        let job = lock(&self.removals).job.take();
        if let Some(job) = job {
            smol::future::block_on(job);
        }
    }

    /// Removes accepted files: a lone one here and now, a burst's (or
    /// one that came while the sender is busy) on a pool thread while this
    /// one sends. The burst's unlinks wait there for the writer, which
    /// holds the directory while it creates the next files, instead of
    /// here. Each file is accepted already: one found
    /// again before it is gone is a duplicate, skipped.
    fn remove(&self, paths: Vec<PathBuf>) {
        let mut r = lock(&self.removals);
        let busy = Stats::get(&self.stats.backlog) > 0;
        if !r.running && !busy && paths.len() <= 1 {
            drop(r);
            remove_all(&paths);
            return;
        }
        r.todo.extend(paths);
        if r.running {
            return;
        }
        r.running = true;
        let shared = self.removals.clone();
        r.job = Some(crate::pool::unblock(move || loop {
            let next = {
                let mut r = lock(&shared);
                if r.todo.is_empty() {
                    r.running = false;
                    return;
                }
                std::mem::take(&mut r.todo)
            };
            remove_all(&next);
        }));
    }

    /// Accepts a batch of file names. Returns the new queue entries, or an
    /// error when the state directory could not take them (disk full): the
    /// event files then stay where they are, to be tried again.
    pub async fn batch(&self, names: Vec<(OsString, Seen)>) -> Result<Accepted> {
        let cfg = self.live.get();
        let max_bytes = cfg.limits.max_event_bytes;
        let now = clock::now_ms();
        let now_iso = clock::iso8601(now);
        let mut accepted: Vec<(PathBuf, Event)> = Vec::new();
        // The attachments of each accepted event, in the same order.
        let mut files: Vec<attach::Taken> = Vec::new();
        let mut done: Vec<PathBuf> = Vec::new();
        let mut look_again = None;
        for (name, how) in one_sighting_each(names) {
            if !is_candidate(&name.to_string_lossy()) {
                continue;
            }
            let path = self.events_dir.join(&name);
            match self.examine(&path, how, &now_iso, max_bytes) {
                Outcome::Skip => {}
                Outcome::Unfinished => look_again = Some(WRITER_GRACE),
                Outcome::Refuse(why) => {
                    if !self.refuse(&path, &why) {
                        look_again = Some(WRITER_GRACE);
                    }
                }
                Outcome::Duplicate(id) => {
                    log::info!(
                        "{}: event {id} was already accepted; skipped",
                        name.to_string_lossy()
                    );
                    Stats::bump(&self.stats.events_duplicate);
                    done.push(path);
                }
                Outcome::Accept(ev) => {
                    if self.spool.is_seen(&ev.event_id, now)
                        || accepted.iter().any(|(_, a)| a.event_id == ev.event_id)
                    {
                        log::info!(
                            "{}: event {} was already accepted; skipped",
                            name.to_string_lossy(),
                            ev.event_id
                        );
                        Stats::bump(&self.stats.events_duplicate);
                        done.push(path);
                    } else {
                        match self.take_files(&ev, &cfg) {
                            Ok(Ok(taken)) => {
                                accepted.push((path, ev));
                                files.push(taken);
                            }
                            Ok(Err(why)) => {
                                if !self.refuse(&path, &why) {
                                    look_again = Some(WRITER_GRACE);
                                }
                            }
                            Err(e) => {
                                // The state directory cannot take the copies
                                // (a full disk): the event file stays.
                                self.stats.state_error();
                                log::error!(
                                    "{}: cannot copy its attachments into the state directory, tried again: {e}",
                                    name.to_string_lossy()
                                );
                                look_again = Some(WRITER_GRACE);
                            }
                        }
                    }
                }
            }
        }
        if !accepted.is_empty() {
            let mut items: Vec<Item> = accepted
                .iter()
                .zip(&files)
                .flat_map(|((_, ev), taken)| {
                    // Routes are read per batch, so SIGHUP applies to what
                    // is accepted next.
                    let chats = cfg.chats_for_event(ev);
                    let all = chats.clone();
                    chats
                        .into_iter()
                        .map(move |chat| (ev, taken, chat, all.clone()))
                })
                .map(|(ev, taken, chat, chats)| Item {
                    accepted_ms: now,
                    files: taken.stored.clone(),
                    fanout: if taken.stored.is_empty() {
                        Vec::new()
                    } else {
                        chats
                    },
                    ..Item::new(self.seq.fetch_add(1, Ordering::Relaxed), chat, ev.clone())
                })
                .collect();
            // A lone event goes to the sender at once, while it is made
            // durable: its latency is then the send, not the fsyncs. The
            // sender waits for `durable` before it records anything, and the
            // event file stays until then, so a crash can only repeat this
            // one message. A burst takes the plain path: a crash in it must
            // not repeat hundreds.
            // Not for an approval: its buttons must mean something (the
            // button file must exist) before anyone can press them.
            // Only when the sender has nothing else: in a burst, files
            // arriving one at a time go the batch's way (synced on the
            // pool, together with those that come meanwhile).
            let idle = Stats::get(&self.stats.backlog) == 0;
            let early =
                (idle && accepted.len() == 1 && !accepted[0].1.is_approval()).then(Durable::new);
            let queued = |items: &[Item], with: &Arc<Durable>| -> Vec<Queued> {
                items
                    .iter()
                    .map(|i| Queued::of(i.file_name(), i, Some((i.clone(), with.clone()))))
                    .collect()
            };
            if let Some(d) = &early {
                let _ = self.tx.send_blocking(queued(&items, d));
                // The sender runs beside us on this thread (see `daemon`):
                // let it send before the fsyncs below.
                smol::future::yield_now().await;
                let written = self.persist(&accepted, &items, now);
                d.done(written.is_ok());
                written?;
            } else {
                // A batch is made durable on a pool thread while the
                // sender, beside us, sends what came before it.
                let (spool, approvals) = (self.spool.clone(), self.approvals.clone());
                let (written, acc, its) = crate::pool::unblock(move || {
                    let written = persist(&spool, &approvals, &accepted, &items, now);
                    (written, accepted, items)
                })
                .await;
                written?;
                (accepted, items) = (acc, its);
                // Handed over whole and on disk: the sender need not read
                // the entries back.
                let durable = Durable::new();
                durable.done(true);
                let _ = self.tx.send_blocking(queued(&items, &durable));
            }
            for (path, ev) in &accepted {
                log::info!(
                    "accepted {} ({}) from {}",
                    ev.event_id,
                    ev.kind,
                    path.file_name().unwrap_or_default().to_string_lossy()
                );
                Stats::bump(&self.stats.events_accepted);
            }
            done.extend(accepted.into_iter().map(|(p, _)| p));
        }
        // The writer's attachment files in events_dir/files/ go with the
        // event file: the copies in state_dir are what is sent.
        let paths: Vec<PathBuf> = done
            .into_iter()
            .chain(files.into_iter().flat_map(|t| t.sources))
            .collect();
        self.remove(paths);
        Ok(Accepted { look_again })
    }

    /// Checks and copies `ev`'s attachments (see [`attach::take`]).
    fn take_files(
        &self,
        ev: &Event,
        cfg: &crate::config::Config,
    ) -> Result<std::result::Result<attach::Taken, Invalid>> {
        let place = attach::Place {
            events_dir: &self.events_dir,
            allowed: &cfg.paths.attachment_dirs,
            max_bytes: cfg.limits.max_attachment_bytes,
        };
        attach::take(ev, &place, &self.spool.root)
    }

    /// Makes a batch durable (see [`persist`]).
    fn persist(&self, accepted: &[(PathBuf, Event)], items: &[Item], now: u64) -> Result<()> {
        persist(&self.spool, &self.approvals, accepted, items, now)
    }

    fn examine(&self, path: &Path, how: Seen, now_iso: &str, max_bytes: u64) -> Outcome {
        let meta = match fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(_) => return Outcome::Skip,
        };
        let ft = meta.file_type();
        if ft.is_symlink() {
            return Outcome::Refuse(Invalid::NotRegular("a symbolic link"));
        }
        if ft.is_dir() {
            return Outcome::Refuse(Invalid::NotRegular("a directory"));
        }
        if ft.is_fifo() || ft.is_socket() || ft.is_block_device() || ft.is_char_device() {
            return Outcome::Refuse(Invalid::NotRegular("a pipe, socket or device"));
        }
        if how == Seen::Created {
            return Outcome::Skip; // its close-after-write follows
        }
        if meta.len() > max_bytes {
            return Outcome::Refuse(Invalid::TooLarge {
                size: meta.len(),
                limit: max_bytes,
            });
        }
        let bytes = match read_bounded(path, max_bytes) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Outcome::Skip,
            Err(e) if e.kind() == io::ErrorKind::FileTooLarge => {
                return Outcome::Refuse(Invalid::TooLarge {
                    size: max_bytes + 1,
                    limit: max_bytes,
                })
            }
            Err(e) => return Outcome::Refuse(Invalid::Unreadable(e.to_string())),
        };
        // An event without an id gets one derived from this very file, so
        // reading it again after a crash yields the same id and the
        // duplicate memory recognises it.
        let file_id = || file_event_id(path, &meta);
        match event::parse(&bytes, now_iso, file_id) {
            Ok(ev) => {
                if self.spool.is_seen(&ev.event_id, clock::now_ms()) {
                    Outcome::Duplicate(ev.event_id)
                } else {
                    Outcome::Accept(ev)
                }
            }
            // A file found by a scan while its writer is still at it ends
            // early; give the writer a moment before calling it broken.
            Err(Invalid::Json { ref problem, .. })
                if how == Seen::Scanned && problem.contains("EOF") && recently_modified(&meta) =>
            {
                Outcome::Unfinished
            }
            Err(why) => Outcome::Refuse(why),
        }
    }

    /// Moves a bad file to `failed/` with a `.error` file saying why; false
    /// when that could not be done (the file then stays to be tried again:
    /// never moved without its reason, never dropped).
    fn refuse(&self, path: &Path, why: &Invalid) -> bool {
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let mut target = name.clone();
        let mut n = 1;
        while self.failed_dir.join(&target).symlink_metadata().is_ok()
            || self.failed_dir.join(format!("{target}.error")).exists()
        {
            target = format!("{name}.{n}");
            n += 1;
        }
        let text = format!(
            "cctelegram did not send this event: {why}.\nFile: {name}\nAt: {}\n\
             Fix the file and move it back into the events directory to send it.\n",
            clock::iso8601(clock::now_ms())
        );
        let note = format!("{target}.error");
        if let Err(e) = spool::write_atomic(&self.failed_dir, &note, text.as_bytes(), 0o644) {
            log::error!("{name}: refused ({why}), but the note could not be written, so it stays and is tried again: {e}");
            return false;
        }
        match fs::rename(path, self.failed_dir.join(&target)) {
            Ok(()) => {
                log::warn!("{name}: refused, moved to failed/{target}: {why}");
                Stats::bump(&self.stats.events_refused);
                true
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let _ = fs::remove_file(self.failed_dir.join(&note));
                true
            }
            Err(e) => {
                log::error!(
                    "{name}: refused ({why}) but could not be moved to failed/, tried again: {e}"
                );
                let _ = fs::remove_file(self.failed_dir.join(&note));
                false
            }
        }
    }
}

/// Keeps the first sighting of each name, in order; a name also seen as
/// ready to read counts as ready.
fn one_sighting_each(names: Vec<(OsString, Seen)>) -> Vec<(OsString, Seen)> {
    let mut out: Vec<(OsString, Seen)> = Vec::with_capacity(names.len());
    let mut at: std::collections::HashMap<OsString, usize> = std::collections::HashMap::new();
    for (name, how) in names {
        match at.get(&name) {
            Some(&i) => {
                if out[i].1 == Seen::Created {
                    out[i].1 = how;
                }
            }
            None => {
                at.insert(name.clone(), out.len());
                out.push((name, how));
            }
        }
    }
    out
}

/// `evt_` + 12 hex digits from the file's name, inode, size and
/// modification time: stable across re-reads, new for every new file.
fn file_event_id(path: &Path, meta: &fs::Metadata) -> String {
    use std::os::unix::fs::MetadataExt;
    let stamp = format!(
        "{}:{}:{}:{}.{}",
        path.display(),
        meta.ino(),
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec()
    );
    format!("evt_{}", &spool::hex_digest(&[stamp.as_bytes()])[..12])
}

fn recently_modified(meta: &fs::Metadata) -> bool {
    meta.modified()
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age < WRITER_GRACE)
}

/// Reads at most `max` bytes without following a symlink or blocking on a
/// pipe swapped in after the check.
fn read_bounded(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    let f: File = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    // Room for the whole file and the read that finds its end: two reads,
    // not one per doubling of the buffer.
    let mut buf = Vec::with_capacity(meta.len().min(max) as usize + 1);
    f.take(max + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > max {
        return Err(io::Error::from(io::ErrorKind::FileTooLarge));
    }
    Ok(buf)
}
