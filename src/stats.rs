//! Counters every part of the daemon bumps and health will read.
//!
//! Plain atomics: cheap enough for the hot path, and readable from any
//! thread without a lock.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Stats {
    /// Event files accepted into the queue.
    pub events_accepted: AtomicU64,
    /// Event files moved to `failed/`.
    pub events_refused: AtomicU64,
    /// Event files skipped because their id was delivered in the last 24 h.
    pub events_duplicate: AtomicU64,
    /// Messages (parts) Telegram accepted.
    pub messages_sent: AtomicU64,
    /// Sends that will be tried again (network, 5xx, 429).
    pub send_retries: AtomicU64,
    /// Sends Telegram refused for good.
    pub send_failures: AtomicU64,
    /// Queue entries waiting to be sent.
    pub backlog: AtomicU64,
    /// Updates received from `getUpdates`.
    pub updates_received: AtomicU64,
    /// Response files written.
    pub responses_written: AtomicU64,
    /// Webhook deliveries put in the outbox.
    pub webhooks_queued: AtomicU64,
    /// Webhook deliveries a receiver accepted (2xx).
    pub webhooks_delivered: AtomicU64,
    /// Webhook attempts that will be tried again.
    pub webhook_retries: AtomicU64,
    /// Webhook deliveries moved to the dead letter queue.
    pub webhooks_dead: AtomicU64,
    /// `getUpdates` answers 409: another program polls the same token.
    pub polling_conflict: AtomicBool,
}

impl Stats {
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
