//! The blocking pool: threads for the calls that block (HTTP, fsync).
//!
//! smol's own pool (the `blocking` crate) wakes every idle thread twice a
//! second to ask whether it should exit, and never lets it exit below its
//! 500-thread limit: a daemon that is idle for days would wake thousands
//! of times an hour for nothing. These threads sleep on a condition
//! variable with no timeout, so an idle daemon's only waking thread is the
//! one in the long poll; and since they stay, a lone event after an idle
//! hour finds a thread ready instead of paying for a new one.
//!
//! A job starts when it is submitted, whether or not its result is awaited.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Condvar, Mutex, OnceLock};
use std::task::{Context, Poll};

type Work = Box<dyn FnOnce() + Send>;

/// More threads than this and jobs wait their turn; each blocks on one
/// call (the long poll, a send, up to `max_in_flight` webhooks).
const MAX_THREADS: usize = 128;

struct State {
    queue: VecDeque<Work>,
    idle: usize,
    threads: usize,
}

struct Pool {
    state: Mutex<State>,
    ready: Condvar,
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| Pool {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            idle: 0,
            threads: 0,
        }),
        ready: Condvar::new(),
    })
}

impl Pool {
    fn submit(&'static self, work: Work) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.queue.push_back(work);
        if st.idle >= st.queue.len() {
            drop(st);
            self.ready.notify_one();
            return;
        }
        if st.threads < MAX_THREADS {
            st.threads += 1;
            drop(st);
            let spawned = std::thread::Builder::new()
                .name("pool".into())
                .stack_size(256 * 1024)
                .spawn(move || self.work());
            if let Err(e) = spawned {
                // The job waits for a thread that exists; say why it waits.
                log::error!("cannot start a thread for blocking work: {e}");
                let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
                st.threads -= 1;
            }
        }
    }

    fn work(&'static self) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(work) = st.queue.pop_front() {
                drop(st);
                work();
                st = self.state.lock().unwrap_or_else(|p| p.into_inner());
                continue;
            }
            st.idle += 1;
            st = self.ready.wait(st).unwrap_or_else(|p| p.into_inner());
            st.idle -= 1;
        }
    }
}

/// The result of a job on the pool.
pub struct Job<T> {
    rx: smol::channel::Receiver<T>,
}

/// Runs `f` on a pool thread now; await the result, or `detach` it.
pub fn unblock<T, F>(f: F) -> Job<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (tx, rx) = smol::channel::bounded(1);
    pool().submit(Box::new(move || {
        let _ = tx.try_send(f());
    }));
    Job { rx }
}

impl<T: Send + 'static> Job<T> {
    /// Lets the job finish on its own; its result is dropped.
    pub fn detach(self) {}
}

impl<T: Send + 'static> Future for Job<T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        use smol::stream::Stream as _;
        // SAFETY: `rx` is pinned with its Job (structural pinning): it is
        // never moved out of a pinned Job, and Job has no Drop of its own.
        let rx = unsafe { self.map_unchecked_mut(|j| &mut j.rx) };
        rx.poll_next(cx).map(finish)
    }
}

/// A job that panicked panics its awaiter too, as smol's `unblock` does
/// (the release build aborts at the first panic anyway).
fn finish<T>(out: Option<T>) -> T {
    match out {
        Some(v) => v,
        None => panic!("a blocking job panicked"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_run_and_answer_in_parallel() {
        let (tx, rx) = std::sync::mpsc::channel();
        // Two jobs that each wait for the other: they need two threads.
        let a = unblock(move || rx.recv_timeout(std::time::Duration::from_secs(10)).is_ok());
        let b = unblock(move || tx.send(()).is_ok());
        assert!(smol::block_on(async { b.await && a.await }));
    }
}
