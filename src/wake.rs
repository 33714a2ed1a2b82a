//! A thread's own `block_on` that the kernel wakes directly.
//!
//! `smol::block_on` (async-io's) shares one epoll reactor between every
//! thread that blocks on a future, and async-io's own thread holds it
//! whenever a caller lets go: an inotify event then wakes that thread,
//! which wakes ours. Each wake of a sleeping thread costs 50 to 150 us on
//! a small machine, so a lone event paid for two before its send began.
//! [`block_on`] instead sleeps in poll(2) on an eventfd (its waker) and on
//! the one fd the thread's futures wait for ([`readable`]): the inotify
//! event wakes the thread that reads it, sends, and fsyncs. Timers and
//! channels still work: whoever fires them calls the waker, which writes
//! the eventfd.
//!
//! One fd per thread is all the daemon needs (the watcher's inotify fd on
//! the pipeline thread); a second [`readable`] on the same thread replaces
//! the first's registration.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

thread_local! {
    /// The fd this thread's future waits to read, and whom to wake then.
    static WANTED: RefCell<Option<(RawFd, Waker)>> = const { RefCell::new(None) };
    /// Whether this thread is inside [`block_on`].
    static INSIDE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

struct Notify {
    efd: OwnedFd,
    /// The thread is in poll(2), or about to be.
    sleeping: AtomicBool,
    /// A wake came since the future was last polled.
    woken: AtomicBool,
}

impl Wake for Notify {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // The eventfd is written only when the thread sleeps (or is about
        // to): a wake while it runs costs two atomics, no system call.
        if !self.woken.swap(true, Ordering::SeqCst) && self.sleeping.load(Ordering::SeqCst) {
            let one = 1u64.to_ne_bytes();
            // SAFETY: writes 8 bytes from a live buffer to our own eventfd.
            // It can fail only if the counter would overflow, which means
            // it is already readable: the thread wakes either way.
            unsafe { libc::write(self.efd.as_raw_fd(), one.as_ptr().cast(), one.len()) };
        }
    }
}

/// Runs `fut` to completion on this thread, sleeping in poll(2) between
/// polls. Fails only if no eventfd can be made (out of file descriptors).
pub fn block_on<T>(fut: impl Future<Output = T>) -> io::Result<T> {
    // SAFETY: eventfd returns a new fd or -1; the fd is ours alone.
    let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a valid fd that nothing else owns.
    let efd = unsafe { OwnedFd::from_raw_fd(raw) };
    let notify = Arc::new(Notify {
        efd,
        sleeping: AtomicBool::new(false),
        woken: AtomicBool::new(false),
    });
    let waker = Waker::from(notify.clone());
    let mut cx = Context::from_waker(&waker);
    let mut fut = pin!(fut);
    INSIDE.with(|i| i.set(true));
    let out = loop {
        notify.woken.store(false, Ordering::SeqCst);
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            break v;
        }
        notify.sleeping.store(true, Ordering::SeqCst);
        let fd_ready = !notify.woken.load(Ordering::SeqCst) && sleep(&notify);
        notify.sleeping.store(false, Ordering::SeqCst);
        if fd_ready {
            // After `sleeping` is cleared: this wake costs no system call.
            if let Some((_, w)) = WANTED.with(|w| w.borrow_mut().take()) {
                w.wake();
            }
        }
    };
    INSIDE.with(|i| i.set(false));
    WANTED.with(|w| w.borrow_mut().take());
    Ok(out)
}

/// Sleeps until the eventfd or the wanted fd is readable; true if the
/// wanted fd is (or has an error or hang-up: its reader finds out which).
fn sleep(notify: &Notify) -> bool {
    let wanted = WANTED.with(|w| w.borrow().as_ref().map(|(fd, _)| *fd));
    let mut fds = [
        libc::pollfd {
            fd: notify.efd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: wanted.unwrap_or(-1),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    let n = if wanted.is_some() { 2 } else { 1 };
    // SAFETY: `fds` is a live array of `n` pollfd structs.
    let ready = unsafe { libc::poll(fds.as_mut_ptr(), n, -1) };
    if ready <= 0 {
        return false; // EINTR: poll the future again, which is harmless
    }
    if fds[0].revents != 0 {
        let mut count = [0u8; 8];
        // SAFETY: reads 8 bytes into a live buffer from our own eventfd,
        // which resets its counter (EAGAIN if another read got there).
        unsafe {
            libc::read(
                notify.efd.as_raw_fd(),
                count.as_mut_ptr().cast(),
                count.len(),
            )
        };
    }
    fds[1].revents != 0
}

/// Waits until `fd` (non-blocking) is readable, calling `read` until it
/// stops failing with `WouldBlock`. Only inside [`block_on`]: elsewhere it
/// fails at once rather than wait for a wake that never comes.
pub async fn readable<T>(fd: RawFd, mut read: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    if !INSIDE.with(|i| i.get()) {
        return Err(io::Error::other(
            "wake::readable used outside wake::block_on",
        ));
    }
    std::future::poll_fn(|cx| match read() {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            WANTED.with(|w| *w.borrow_mut() = Some((fd, cx.waker().clone())));
            Poll::Pending
        }
        other => Poll::Ready(other),
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn wakes_for_a_channel_from_another_thread() {
        let (tx, rx) = smol::channel::bounded(1);
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            tx.send_blocking(7).unwrap();
        });
        assert_eq!(block_on(async { rx.recv().await.unwrap() }).unwrap(), 7);
        t.join().unwrap();
    }

    #[test]
    fn wakes_for_a_timer_and_for_a_readable_fd() {
        let started = Instant::now();
        block_on(smol::Timer::after(Duration::from_millis(30))).unwrap();
        assert!(started.elapsed() >= Duration::from_millis(30));

        let mut fds = [0; 2];
        // SAFETY: pipe2 fills the two-element array.
        assert_eq!(
            unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK) },
            0
        );
        // SAFETY: both fds are new and owned here alone.
        let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            // SAFETY: writes one byte from a live buffer.
            unsafe { libc::write(w.as_raw_fd(), b"x".as_ptr().cast(), 1) };
        });
        let rfd = r.as_raw_fd();
        let got = block_on(readable(rfd, || {
            let mut b = [0u8; 4];
            // SAFETY: reads into a live 4-byte buffer.
            let n = unsafe { libc::read(rfd, b.as_mut_ptr().cast(), b.len()) };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(b[..n as usize].to_vec())
            }
        }))
        .unwrap()
        .unwrap();
        assert_eq!(got, b"x");
        writer.join().unwrap();
        assert!(smol::block_on(readable(rfd, || Ok(()))).is_err());
    }
}
