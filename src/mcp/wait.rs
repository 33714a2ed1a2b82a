//! Waiting for a response file without polling: inotify on `responses_dir`
//! and a pipe that a `notifications/cancelled` writes to, in one `poll(2)`.
//!
//! The watch is added before the directory is scanned, so a file that lands
//! between the scan and the first wait is still seen.

use std::ffi::OsString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use inotify::{EventMask, Inotify, WatchMask};

use crate::error::{Error, Result};

/// Wakes a [`Watch`] from another thread.
pub struct Cancel {
    read: OwnedFd,
    write: OwnedFd,
}

impl Cancel {
    pub fn new() -> Result<Cancel> {
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills both descriptors or fails; they are owned below.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
            return Err(Error::io("pipe", std::io::Error::last_os_error()));
        }
        // SAFETY: fresh descriptors nobody else owns.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        Ok(Cancel { read, write })
    }

    pub fn cancel(&self) {
        // SAFETY: writes one byte from a valid buffer to our own pipe.
        let _ = unsafe { libc::write(self.write.as_raw_fd(), b"x".as_ptr().cast(), 1) };
    }
}

/// New names in a directory, as they are renamed in or closed after writing.
pub struct Watch {
    inotify: Inotify,
}

/// What one wait ended with.
pub enum Woke {
    Names(Vec<OsString>),
    /// The kernel's queue overflowed: names were lost, look at the directory.
    Rescan,
    TimedOut,
    Cancelled,
}

impl Watch {
    pub fn new(dir: &Path) -> Result<Watch> {
        let inotify = Inotify::init().map_err(|e| Error::io(dir, e))?;
        inotify
            .watches()
            .add(
                dir,
                WatchMask::CLOSE_WRITE | WatchMask::MOVED_TO | WatchMask::ONLYDIR,
            )
            .map_err(|e| Error::io(dir, e))?;
        Ok(Watch { inotify })
    }

    /// Blocks until names arrive, `deadline` passes or `cancel` fires.
    pub fn next(&mut self, deadline: Option<Instant>, cancel: Option<&Cancel>) -> Result<Woke> {
        loop {
            let timeout = match deadline {
                None => -1,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(Woke::TimedOut);
                    }
                    left.as_millis().min(i32::MAX as u128) as i32
                }
            };
            let mut fds = [
                libc::pollfd {
                    fd: self.inotify.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: cancel.map_or(-1, |c| c.read.as_raw_fd()),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // SAFETY: two valid pollfd structs; a negative fd is ignored by poll.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(Error::io("poll", e));
            }
            if fds[1].revents != 0 {
                return Ok(Woke::Cancelled);
            }
            if fds[0].revents == 0 {
                continue;
            }
            let mut buf = [0u8; 4096];
            let (mut names, mut overflow) = (Vec::new(), false);
            match self.inotify.read_events(&mut buf) {
                Ok(events) => {
                    for e in events {
                        match e.name {
                            Some(n) => names.push(n.to_os_string()),
                            None => overflow |= e.mask.contains(EventMask::Q_OVERFLOW),
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(Error::io("inotify", e)),
            }
            if overflow {
                return Ok(Woke::Rescan);
            }
            if !names.is_empty() {
                return Ok(Woke::Names(names));
            }
        }
    }
}

/// Longest `wait_for_response` the contract allows.
pub const MAX_WAIT: Duration = Duration::from_secs(600);
