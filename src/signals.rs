//! SIGTERM, SIGINT and SIGHUP for `run`, through a signalfd.
//!
//! The signals are blocked in every thread (the mask is set before the
//! first thread starts, and threads inherit it) and read from a signalfd
//! inside `smol::Async`, so a signal is an ordinary event on the executor:
//! no handler runs at an arbitrary point, and nothing half-written is left
//! by one. [`Stop`] tells the tasks to finish what is in flight.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use smol::Async;

use crate::error::{Error, Result};

/// What a signal asks for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Signal {
    /// SIGTERM or SIGINT: finish what is in flight and exit 0.
    Stop(i32),
    /// SIGHUP: load the configuration again.
    Reload,
}

pub struct Signals {
    fd: Async<OwnedFd>,
}

fn set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset only write the set we own.
    unsafe {
        let mut s: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut s);
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut s, sig);
        }
        s
    }
}

impl Signals {
    /// Blocks the three signals in this thread (call it before any other
    /// thread exists) and opens the signalfd that receives them.
    pub fn new() -> Result<Signals> {
        let s = set();
        // SAFETY: plain libc calls on a set we own; the fd returned is new
        // and owned by the OwnedFd from here on.
        let fd = unsafe {
            if libc::pthread_sigmask(libc::SIG_BLOCK, &s, std::ptr::null_mut()) != 0 {
                return Err(Error::io("signals", io::Error::last_os_error()));
            }
            let fd = libc::signalfd(-1, &s, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC);
            if fd < 0 {
                return Err(Error::io("signalfd", io::Error::last_os_error()));
            }
            OwnedFd::from_raw_fd(fd)
        };
        let fd = Async::new(fd).map_err(|e| Error::io("signalfd", e))?;
        Ok(Signals { fd })
    }

    /// The next signal.
    pub async fn next(&self) -> Result<Signal> {
        loop {
            let signo = self
                .fd
                .read_with(|fd| {
                    // SAFETY: reads one signalfd_siginfo into memory we own.
                    let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
                    let size = std::mem::size_of::<libc::signalfd_siginfo>();
                    let n = unsafe {
                        libc::read(
                            fd.as_raw_fd(),
                            (&mut info as *mut libc::signalfd_siginfo).cast(),
                            size,
                        )
                    };
                    if n < 0 {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(info.ssi_signo as i32)
                })
                .await
                .map_err(|e| Error::io("signalfd", e))?;
            match signo {
                libc::SIGHUP => return Ok(Signal::Reload),
                libc::SIGTERM | libc::SIGINT => return Ok(Signal::Stop(signo)),
                _ => continue,
            }
        }
    }
}

/// Tells every task that the daemon is stopping. Cheap to check, and
/// awaitable, so a task waiting on a timer or a socket wakes at once.
pub struct Stop {
    tx: std::sync::Mutex<Option<smol::channel::Sender<()>>>,
    rx: smol::channel::Receiver<()>,
}

impl Default for Stop {
    fn default() -> Self {
        let (tx, rx) = smol::channel::bounded(1);
        Stop {
            tx: std::sync::Mutex::new(Some(tx)),
            rx,
        }
    }
}

impl Stop {
    pub fn set(&self) {
        // Closing the channel wakes every waiter.
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    pub fn is_set(&self) -> bool {
        self.rx.is_closed()
    }

    /// Resolves once [`Stop::set`] has been called.
    pub async fn wait(&self) {
        let _ = self.rx.recv().await;
    }
}
