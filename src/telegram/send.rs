//! The send loop: queue entries on disk become Telegram messages.
//!
//! One task owns the order of sends. It keeps only names and times in
//! memory (the entries themselves stay on disk), sends each chat's entries
//! in the order they were accepted, paces them by `[limits]`, and turns
//! every failure into data on disk: a `not_before` for retries, the `hold`
//! file for Telegram's 429 `retry_after`, `undeliverable/` for refusals.
//! A message repeats only if the process dies between Telegram's answer and
//! the rewrite of its queue entry.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use smol::channel::Receiver;
use smol::future::FutureExt as _;

use crate::approvals::{Approval, Approvals};
use crate::clock;
use crate::config::ParseMode;
use crate::error::{Error, Result};
use crate::ingest::{Durable, Queued};
use crate::spool::{Item, Spool};
use crate::stats::Stats;
use crate::telegram::api::Api;
use crate::telegram::pace::Pacer;
use crate::telegram::poll::{decision_note, show_outcome};
use crate::telegram::render;
use crate::webhook::deliver::Outbox;
use crate::webhook::payload::{self, Status};

/// Retries of one entry back off from 1 s up to this, with jitter.
const MAX_BACKOFF_MS: u64 = 5 * 60 * 1000;

struct Pending {
    name: String,
    seq: u64,
    not_before: u64,
    /// The entry, when ingest handed it over before it was on disk.
    early: Option<(Item, Arc<Durable>)>,
}

pub struct Sender {
    api: Arc<Api>,
    spool: Arc<Spool>,
    approvals: Arc<Approvals>,
    outbox: Arc<Outbox>,
    /// Tells the expiry timer that an approval now has a deadline.
    expiries: smol::channel::Sender<()>,
    pacer: Pacer,
    mode: ParseMode,
    chats: HashMap<String, VecDeque<Pending>>,
    /// Names of every entry in `chats`, so a second sighting is cheap to skip.
    known: HashSet<String>,
    hold_until: u64,
    stats: Arc<Stats>,
}

enum Wake {
    New(Vec<Queued>),
    Closed,
    Timer,
}

/// Exponential backoff with jitter: 1 s, 2 s, 4 s ... up to five minutes,
/// each scaled by a random factor in [0.5, 1.0) so that many waiting
/// senders do not return in step.
pub fn backoff_ms(attempts: u32) -> u64 {
    let base = 1000u64.saturating_mul(1 << attempts.saturating_sub(1).min(20));
    let base = base.min(MAX_BACKOFF_MS);
    let mut r = [0u8; 2];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut r);
    let f = 0.5 + f64::from(u16::from_le_bytes(r)) / 131_072.0;
    (base as f64 * f) as u64
}

impl Sender {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        api: Arc<Api>,
        spool: Arc<Spool>,
        approvals: Arc<Approvals>,
        outbox: Arc<Outbox>,
        expiries: smol::channel::Sender<()>,
        pacer: Pacer,
        mode: ParseMode,
        stats: Arc<Stats>,
    ) -> Result<Sender> {
        let mut s = Sender {
            hold_until: spool.hold(),
            api,
            spool,
            approvals,
            outbox,
            expiries,
            pacer,
            mode,
            chats: HashMap::new(),
            known: HashSet::new(),
            stats,
        };
        let pending = s.spool.pending()?;
        s.add(pending.into_iter().map(|(name, i)| Queued {
            name,
            chat: i.chat,
            seq: i.seq,
            not_before: i.not_before,
            early: None,
        }));
        Ok(s)
    }

    fn add(&mut self, items: impl IntoIterator<Item = Queued>) {
        for q in items {
            // Already known (accepted again after a crash): keep one.
            if !self.known.insert(q.name.clone()) {
                continue;
            }
            let list = self.chats.entry(q.chat).or_default();
            let p = Pending {
                name: q.name,
                seq: q.seq,
                not_before: q.not_before,
                early: q.early,
            };
            let at = list.partition_point(|x| x.seq < p.seq);
            list.insert(at, p);
        }
        self.update_backlog();
    }

    fn update_backlog(&self) {
        let n: usize = self.chats.values().map(VecDeque::len).sum();
        self.stats
            .backlog
            .store(n as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// The chat whose next send is due soonest, and how long until then.
    fn next_due(&self) -> Option<(String, Duration)> {
        let now = Instant::now();
        let now_ms = clock::now_ms();
        self.chats
            .iter()
            .filter_map(|(chat, list)| {
                let head = list.front()?;
                let wall = Duration::from_millis(
                    head.not_before.max(self.hold_until).saturating_sub(now_ms),
                );
                let paced = self
                    .pacer
                    .ready_at(chat, now)
                    .saturating_duration_since(now);
                Some((chat.clone(), wall.max(paced)))
            })
            .min_by_key(|(_, wait)| *wait)
    }

    pub async fn run(mut self, rx: Receiver<Vec<Queued>>) -> Result<()> {
        loop {
            while let Ok(batch) = rx.try_recv() {
                self.add(batch);
            }
            let wake = match self.next_due() {
                Some((chat, wait)) if wait.is_zero() => {
                    self.send_head(&chat).await;
                    continue;
                }
                Some((_, wait)) => {
                    let timer = async {
                        smol::Timer::after(wait).await;
                        Wake::Timer
                    };
                    let recv = async {
                        match rx.recv().await {
                            Ok(b) => Wake::New(b),
                            Err(_) => Wake::Closed,
                        }
                    };
                    timer.or(recv).await
                }
                None => match rx.recv().await {
                    Ok(b) => Wake::New(b),
                    Err(_) => Wake::Closed,
                },
            };
            match wake {
                Wake::New(b) => self.add(b),
                Wake::Timer => {}
                Wake::Closed => return Ok(()),
            }
        }
    }

    fn pop(&mut self, chat: &str) {
        if let Some(list) = self.chats.get_mut(chat) {
            if let Some(p) = list.pop_front() {
                self.known.remove(&p.name);
            }
            if list.is_empty() {
                self.chats.remove(chat);
            }
        }
        self.update_backlog();
    }

    /// Sends the next part of `chat`'s oldest entry and records the outcome.
    async fn send_head(&mut self, chat: &str) {
        let Some(front) = self.chats.get_mut(chat).and_then(|l| l.front_mut()) else {
            return;
        };
        let name = front.name.clone();
        let early = front.early.take();
        let loaded = match &early {
            Some((item, _)) => Ok(item.clone()),
            None => self.spool.get(&name),
        };
        let mut item = match loaded {
            Ok(i) => i,
            Err(e) => {
                if !matches!(&e, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
                {
                    log::error!("queue entry {name} cannot be read, skipped: {e}");
                }
                self.pop(chat);
                return;
            }
        };
        let mode = if item.plain {
            ParseMode::Plain
        } else {
            self.mode
        };
        let parts = render::render(&item.event, mode);
        let Some(part) = parts.get(item.parts_sent).cloned() else {
            if let Some(a) = self.finish(chat, &name, &item) {
                show_outcome(&self.api, self.mode, &a, &decision_note(&a)).await;
            }
            return;
        };
        self.pacer.sent(chat, Instant::now());
        let api = self.api.clone();
        let to = chat.to_string();
        let started = Instant::now();
        let result = smol::unblock(move || api.send_message(&to, &part)).await;
        self.stats.telegram_request.observe(started.elapsed());
        if let Some((_, durable)) = early {
            // Nothing about this entry may be recorded before it exists.
            if !durable.wait().await {
                log::warn!(
                    "event {} could not be queued on disk; its file stays in the events directory to be accepted again",
                    item.event.event_id
                );
                self.pop(chat);
                return;
            }
        }
        match result {
            Ok(message_id) => {
                item.parts_sent += 1;
                item.message_ids.push(message_id);
                Stats::bump(&self.stats.messages_sent);
                if item.parts_sent >= parts.len() {
                    if let Some(a) = self.finish(chat, &name, &item) {
                        show_outcome(&self.api, self.mode, &a, &decision_note(&a)).await;
                    }
                } else if let Err(e) = self.spool.put(&item) {
                    log::error!("cannot record progress of {name}: {e}");
                }
            }
            Err(e) if e.is_bad_entities() && !item.plain => {
                log::warn!(
                    "Telegram refused the formatting of event {} ({e}); sending it as plain text",
                    item.event.event_id
                );
                item.plain = true;
                self.save_retry(chat, &name, &mut item, 0, e);
            }
            Err(Error::Telegram {
                status: 429,
                retry_after,
                ..
            }) => {
                let secs = retry_after.unwrap_or(5);
                self.hold_until = clock::now_ms() + secs * 1000;
                Stats::bump(&self.stats.send_retries);
                if !item.pending_notified {
                    self.notify(
                        chat,
                        &item,
                        Status::Pending,
                        Some("Telegram rate limit (429)"),
                    );
                    item.pending_notified = true;
                    if let Err(e) = self.spool.put(&item) {
                        log::error!("cannot record progress of {name}: {e}");
                    }
                }
                if let Err(e) = self.spool.set_hold(self.hold_until) {
                    log::error!("cannot record the hold: {e}");
                }
                log::warn!(
                    "Telegram asks to wait {secs} s (429 Too Many Requests); all sends held"
                );
            }
            Err(e) if e.is_retryable() => {
                item.attempts += 1;
                let wait = backoff_ms(item.attempts);
                log::warn!(
                    "send of event {} to chat {chat} failed (attempt {}), retrying in {:.1} s: {e}",
                    item.event.event_id,
                    item.attempts,
                    wait as f64 / 1000.0
                );
                Stats::bump(&self.stats.send_retries);
                if !item.pending_notified {
                    self.notify(chat, &item, Status::Pending, Some(&e.to_string()));
                    item.pending_notified = true;
                }
                self.save_retry(chat, &name, &mut item, wait, e);
            }
            Err(e) => {
                log::error!(
                    "Telegram refused event {} for chat {chat}; kept in undeliverable/: {e}",
                    item.event.event_id
                );
                item.last_error = Some(e.to_string());
                Stats::bump(&self.stats.send_failures);
                self.notify(chat, &item, Status::Failed, Some(&e.to_string()));
                if let Err(e) = self.spool.give_up(&item) {
                    log::error!("cannot move {name} to undeliverable/: {e}");
                    return;
                }
                self.pop(chat);
            }
        }
    }

    /// Queues an `event_processed` webhook for `item` in `chat`.
    fn notify(&self, chat: &str, item: &Item, status: Status, error: Option<&str>) {
        let payload = payload::event_processed(
            &item.event,
            chat,
            status,
            item.message_ids.last().copied(),
            error,
            clock::now_ms(),
            &self.outbox.info(),
        );
        if let Err(e) = self.outbox.enqueue("event_processed", &payload) {
            log::error!(
                "cannot queue the event_processed webhook for {}: {e}",
                item.event.event_id
            );
        }
    }

    fn save_retry(&mut self, chat: &str, name: &str, item: &mut Item, wait_ms: u64, e: Error) {
        item.not_before = clock::now_ms() + wait_ms;
        item.last_error = Some(e.to_string());
        if let Err(e) = self.spool.put(item) {
            log::error!("cannot record retry of {name}: {e}");
        }
        if let Some(p) = self.chats.get_mut(chat).and_then(|l| l.front_mut()) {
            p.not_before = item.not_before;
        }
    }

    /// Records a delivered entry. Returns the approval this message belongs
    /// to if it was decided before the message was recorded, so the caller
    /// removes its buttons.
    fn finish(&mut self, chat: &str, name: &str, item: &Item) -> Option<Approval> {
        let now = clock::now_ms();
        let mut decided = None;
        if let Err(e) = self
            .spool
            .record_sent(chat, &item.message_ids, &item.event, now)
        {
            log::error!(
                "cannot record which event messages {:?} show: {e}",
                item.message_ids
            );
        }
        if item.event.is_approval() {
            // The buttons are on the last part.
            if let Some(&last) = item.message_ids.last() {
                match self.approvals.delivered(&item.event, chat, last, now) {
                    Ok(d) => {
                        if d.expires_at.is_some() {
                            let _ = self.expiries.try_send(());
                        }
                        if let Some(mut a) = d.decided {
                            a.messages = vec![(chat.to_string(), last)];
                            decided = Some(a);
                        }
                    }
                    Err(e) => {
                        log::error!("cannot record the buttons of {}: {e}", item.event.event_id)
                    }
                }
            }
        }
        // Queued before the entry goes: a crash in between repeats the
        // webhook (at least once), never loses it.
        self.notify(chat, item, Status::Delivered, None);
        if let Err(e) = self.spool.remove(name) {
            log::error!("cannot remove finished entry {name}: {e}");
        }
        Stats::bump(&self.stats.events_delivered);
        if item.accepted_ms > 0 {
            let ms = clock::now_ms().saturating_sub(item.accepted_ms);
            self.stats.event_delivery.observe(Duration::from_millis(ms));
        }
        log::info!(
            "delivered {} to chat {chat} as message {:?}",
            item.event.event_id,
            item.message_ids
        );
        self.pop(chat);
        decided
    }
}
