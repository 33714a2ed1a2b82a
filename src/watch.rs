//! Watches `events_dir` with inotify and hands new files to ingest.
//!
//! The watcher runs inside [`crate::wake::block_on`] on the pipeline
//! thread, which sleeps in poll(2) on the inotify fd: an idle daemon costs
//! no CPU, and a new file wakes the thread that accepts and sends it. The watch is added before the start-up scan, so
//! a file written during the scan is seen by one or the other (ingest
//! ignores the second sighting). A queue overflow, or a batch the state
//! directory could not take, triggers a full rescan. Any error (the
//! directory removed, a scan that fails) is logged and the watch is set up
//! again after a backoff; it never ends the daemon.

use std::ffi::OsString;
use std::sync::Arc;
use std::time::{Duration, Instant};

use inotify::{EventMask, Inotify, WatchMask};
use std::os::fd::AsRawFd;

use smol::future::FutureExt as _;

use crate::error::{Error, Result};
use crate::ingest::{is_candidate, Ingest, Seen};
use crate::signals::Stop;
use crate::telegram::send::backoff_up_to;

/// The most files accepted (and synced) together.
const BATCH: usize = 64;

/// How long to wait before retrying files the state directory refused.
const RETRY_AFTER: Duration = Duration::from_secs(5);

enum Batch {
    Names(Vec<(OsString, Seen)>),
    Rescan,
}

/// Watches until `stop`; errors are waited out. Run it inside
/// [`crate::wake::block_on`], beside the sender: it accepts batches
/// (reads, fsyncs) inline.
pub async fn run(ingest: Arc<Ingest>, stop: Arc<Stop>) -> Result<()> {
    let mut attempt = 0;
    loop {
        let watched = async { Some(watch(&ingest).await) };
        let stopped = async {
            stop.wait().await;
            None
        };
        match watched.or(stopped).await {
            None => {
                ingest.finish_removing();
                return Ok(());
            }
            Some(Ok(())) => attempt = 0,
            Some(Err(e)) => {
                attempt += 1;
                let wait = Duration::from_millis(backoff_up_to(attempt, 30_000));
                log::error!(
                    "watching the events directory failed, starting again in {:.1} s: {e}",
                    wait.as_secs_f64()
                );
                let timer = async {
                    smol::Timer::after(wait).await;
                };
                timer.or(stop.wait()).await;
                if let Err(e) = crate::store::ensure_dir(&ingest.events_dir) {
                    log::error!("{e}");
                }
            }
        }
    }
}

async fn watch(ingest: &Arc<Ingest>) -> Result<()> {
    let dir = ingest.events_dir.clone();
    let inotify = Inotify::init().map_err(|e| Error::io(&dir, e))?;
    inotify
        .watches()
        .add(
            &dir,
            WatchMask::CLOSE_WRITE | WatchMask::MOVED_TO | WatchMask::CREATE | WatchMask::ONLYDIR,
        )
        .map_err(|e| Error::io(&dir, e))?;
    let mut inotify = inotify;
    let fd = inotify.as_raw_fd();
    let mut buf = vec![0u8; 64 * 1024];
    let mut next = Batch::Rescan;
    // When to rescan for files a batch could not finish with; it stands
    // until a rescan happens, however many other batches come first.
    let mut rescan_at: Option<Instant> = None;
    loop {
        let names = match next {
            Batch::Names(n) => n,
            Batch::Rescan => {
                rescan_at = None;
                ingest.scan()?
            }
        };
        let mut look_again = None;
        // The batch runs inline, on the thread that sends (see `daemon`):
        // a lone event is sent before it is synced. Many names go in
        // slices, so the sender sends one while the next is synced.
        let mut names = names.into_iter().peekable();
        while names.peek().is_some() {
            let slice: Vec<_> = names.by_ref().take(BATCH).collect();
            match ingest.batch(slice).await {
                Ok(done) => look_again = look_again.or(done.look_again),
                Err(e) => {
                    log::error!(
                        "cannot queue new events, will retry in {} s: {e}",
                        RETRY_AFTER.as_secs()
                    );
                    look_again = Some(RETRY_AFTER);
                    break;
                }
            }
        }
        let read = async {
            let batch = crate::wake::readable(fd, || {
                let mut names = Vec::new();
                let mut overflow = false;
                for ev in inotify.read_events(&mut buf)? {
                    if ev.mask.contains(EventMask::Q_OVERFLOW) {
                        overflow = true;
                    } else if ev.mask.contains(EventMask::IGNORED) {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::NotFound,
                            "the events directory was removed or unmounted",
                        ));
                    } else if let Some(name) =
                        ev.name.filter(|n| is_candidate(&n.to_string_lossy()))
                    {
                        let how = if ev.mask.contains(EventMask::CREATE) {
                            Seen::Created
                        } else {
                            Seen::Ready
                        };
                        names.push((name.to_os_string(), how));
                    }
                }
                Ok(if overflow {
                    log::warn!("inotify queue overflowed; rescanning the events directory");
                    Batch::Rescan
                } else {
                    Batch::Names(names)
                })
            })
            .await;
            batch.map_err(|e| Error::io(&dir, e))
        };
        if let Some(wait) = look_again {
            let at = Instant::now() + wait;
            rescan_at = Some(rescan_at.map_or(at, |t| t.min(at)));
        }
        next = if let Some(at) = rescan_at {
            let timer = async {
                smol::Timer::at(at).await;
                Ok(Batch::Rescan)
            };
            // New files during the wait are picked up by the rescan.
            read.or(timer).await?
        } else {
            read.await?
        };
    }
}
