//! The send loop: queue entries on disk become Telegram messages.
//!
//! One task owns the order of sends. It keeps only names and times in
//! memory (the entries themselves stay on disk), sends each chat's entries
//! in the order they were accepted, paces them by `[limits]`, and turns
//! every failure into data on disk: a `not_before` for retries, the `hold`
//! file for Telegram's 429 `retry_after`, `undeliverable/` for refusals.
//!
//! The hand-off after Telegram answers: the sent record goes to disk before
//! anything else, then the button record and the `event_processed` webhook,
//! then the queue entry is retired. Each step is idempotent, and a step
//! that fails (a full disk) stops the hand-off, which is retried with
//! backoff; the message is never sent again for it. A message repeats only
//! if the process dies between Telegram's answer and the sent record.
//!
//! Group commit: when several sends are due back to back (a burst), each
//! send's answer still goes to the sent log (fdatasync) before anything
//! else, the next send included, so a kill repeats at most the send in
//! flight. The rest of its hand-off waits in `done` while the next goes
//! out, and is written for the whole group together: the `event_processed`
//! records at the cost of about one fdatasync and one directory fsync,
//! then the queue entries go with one more. A lone send is handed off at
//! once.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use smol::channel::Receiver;
use smol::future::FutureExt as _;

use crate::approvals::{Approval, Approvals};
use crate::attach;
use crate::clock;
use crate::config::ParseMode;
use crate::error::{Error, Result};
use crate::ingest::{Durable, Queued};
use crate::notify::{self, Controls, Quiet};
use crate::reload::Live;
use crate::signals::Stop;
use crate::spool::{Item, Spool};
use crate::stats::Stats;
use crate::telegram::api::Api;
use crate::telegram::pace::Pacer;
use crate::telegram::poll::{decision_note, show_outcome};
use crate::telegram::progress::{self, Progress};
use crate::telegram::upload;
use crate::tz::Zone;
use crate::webhook::deliver::Outbox;
use crate::webhook::payload::{self, Status};

/// Retries of one entry back off from 1 s up to this, with jitter.
const MAX_BACKOFF_MS: u64 = 5 * 60 * 1000;

/// The most sends whose hand-off is written together. A kill before it is
/// written repeats none of them (their answers are in the sent log); they
/// are finished from it after the restart.
const GROUP: usize = 64;

/// The most sends whose `sent.log` lines share one fdatasync (group
/// commit). The lines are on disk before anything that follows from them
/// (the hand-off), but a kill before their fdatasync repeats those sends:
/// at most this many, and the one in flight, per kill, during a burst. A
/// lone send is synced before the sender waits for the next.
pub const SENT_GROUP: usize = 8;

/// In a burst the watcher gets its turn after this many sends: often
/// enough that new files wait little, seldom enough that they come in
/// batches that share their fsyncs.
const YIELD_EVERY: usize = 4;

/// The longest `retry_after` obeyed. Telegram asks for seconds to hours;
/// more than a day is not a rate limit but a broken answer.
pub const MAX_RETRY_AFTER_S: u64 = 24 * 3600;

pub(crate) struct Pending {
    name: String,
    seq: u64,
    pub(crate) not_before: u64,
    accepted_ms: u64,
    /// The entry, when ingest handed it over before it was on disk.
    early: Option<(Item, Arc<Durable>)>,
    /// The entry as it stands after Telegram took parts of it, while its
    /// hand-off waits to be retried (it is not sent again).
    pub(crate) item: Option<Item>,
    /// Parts Telegram took that are not yet in the sent log.
    unrecorded: Vec<(usize, i64)>,
    /// Failed hand-off steps in a row, for the backoff.
    stalls: u32,
    /// A pause does not hold it.
    never_held: bool,
    /// The task id of a progress event.
    pub(crate) progress: Option<String>,
    /// A terminal event's last edit of its progress message is done.
    ended_progress: bool,
}

/// A send Telegram took, recorded in the sent log, whose hand-off waits
/// for its group.
struct Done {
    chat: String,
    name: String,
    seq: u64,
    item: Item,
}

/// A group's hand-off being written on the pool, and the group.
type HandOff = (crate::pool::Job<Result<()>>, Arc<Vec<Done>>);

pub struct Sender {
    /// Finished sends whose hand-off is written with the next group.
    done: Vec<Done>,
    /// Sent records of `done` written but not yet fdatasynced.
    unsynced: usize,
    /// The last group's hand-off, on a pool thread, and the group (put
    /// back if it could not be written).
    removing: Option<HandOff>,
    /// Sends since the watcher last had its turn.
    sends_since_yield: usize,
    pub(crate) api: Arc<Api>,
    spool: Arc<Spool>,
    approvals: Arc<Approvals>,
    outbox: Arc<Outbox>,
    pub(crate) live: Arc<Live>,
    generation: u64,
    /// Tells the expiry timer that an approval now has a deadline.
    expiries: smol::channel::Sender<()>,
    pub(crate) pacer: Pacer,
    pub(crate) mode: ParseMode,
    pub(crate) chats: HashMap<String, VecDeque<Pending>>,
    /// Names of every entry in `chats`, so a second sighting is cheap to skip.
    known: HashSet<String>,
    hold_until: u64,
    pub(crate) stats: Arc<Stats>,
    controls: Arc<Controls>,
    pub(crate) progress: Progress,
    /// The zone of `[notifications] timezone`, loaded per configuration.
    zone: Zone,
}

/// The zone a configuration names; a zone that stopped loading (tzdata
/// removed meanwhile) is UTC with a log line, never a stop.
fn zone_of(live: &Live) -> Zone {
    let cfg = live.get();
    let tz = std::env::var("TZ").ok();
    crate::tz::load(&cfg.notifications.timezone, tz.as_deref()).unwrap_or_else(|e| {
        log::warn!("quiet hours use UTC: {e}");
        Zone::utc()
    })
}

enum Wake {
    New(Vec<Queued>),
    Closed,
    Timer,
    Stop,
}

/// Exponential backoff with jitter: 1 s, 2 s, 4 s ... up to five minutes,
/// each scaled by a random factor in [0.5, 1.0) so that many waiting
/// senders do not return in step.
pub fn backoff_ms(attempts: u32) -> u64 {
    backoff_up_to(attempts, MAX_BACKOFF_MS)
}

/// [`backoff_ms`] with another ceiling.
pub fn backoff_up_to(attempts: u32, max_ms: u64) -> u64 {
    let base = 1000u64.saturating_mul(1 << attempts.saturating_sub(1).min(20));
    let base = base.min(max_ms);
    let r: [u8; 2] = crate::store::random_bytes();
    let f = 0.5 + f64::from(u16::from_le_bytes(r)) / 131_072.0;
    (base as f64 * f) as u64
}

/// The delivery id source of an `event_processed` report.
pub fn processed_source(event_id: &str, chat: &str, status: Status) -> String {
    format!("{event_id}\0{chat}\0{}", status.name())
}

impl Sender {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        api: Arc<Api>,
        spool: Arc<Spool>,
        approvals: Arc<Approvals>,
        outbox: Arc<Outbox>,
        live: Arc<Live>,
        expiries: smol::channel::Sender<()>,
        stats: Arc<Stats>,
        controls: Arc<Controls>,
    ) -> Result<Sender> {
        let cfg = live.get();
        let mut hold_until = spool.hold();
        // A hold from a clock that was wrong (or a damaged file) must not
        // stop sending for decades.
        let now = clock::now_ms();
        if hold_until > now + MAX_RETRY_AFTER_S * 1000 {
            hold_until = 0;
        }
        let mut s = Sender {
            done: Vec::new(),
            unsynced: 0,
            removing: None,
            sends_since_yield: 0,
            hold_until,
            generation: live.generation(),
            pacer: Pacer::new(&cfg.limits),
            mode: cfg.telegram.parse_mode,
            api,
            spool,
            approvals,
            outbox,
            live,
            expiries,
            chats: HashMap::new(),
            known: HashSet::new(),
            stats,
            controls,
            progress: Progress::open(&cfg.paths.state_dir)?,
            zone: Zone::utc(),
        };
        s.zone = zone_of(&s.live);
        let pending = s.spool.pending()?;
        // Copies of events that never reached the queue (refused or gone
        // after their files were copied); an hour spares ingest's new ones.
        let referenced = pending
            .iter()
            .flat_map(|(_, i)| i.files.iter().map(|f| f.file.clone()))
            .collect();
        attach::prune(&s.spool.root, &referenced, 3600 * 1000);
        s.add(
            pending
                .into_iter()
                .map(|(name, i)| Queued::of(name, &i, None)),
        );
        Ok(s)
    }

    fn add(&mut self, items: impl IntoIterator<Item = Queued>) {
        for q in items {
            // Already known (accepted again after a crash): keep one. If the
            // one kept was handed over early and its queue file could not be
            // written, this acceptance is the one on disk: it counts, or the
            // early copy's failure would drop the event until a restart.
            if !self.known.insert(q.name.clone()) {
                if let Some(p) = self
                    .chats
                    .get_mut(&q.chat)
                    .and_then(|l| l.iter_mut().find(|p| p.name == q.name))
                {
                    if p.early.is_some() {
                        p.early = q.early;
                    }
                }
                continue;
            }
            let list = self.chats.entry(q.chat).or_default();
            let p = Pending {
                name: q.name,
                seq: q.seq,
                not_before: q.not_before,
                accepted_ms: q.accepted_ms,
                early: q.early,
                item: None,
                unrecorded: Vec::new(),
                stalls: 0,
                never_held: q.never_held,
                progress: q.progress,
                ended_progress: false,
            };
            let at = list.partition_point(|x| x.seq < p.seq);
            list.insert(at, p);
        }
        self.update_backlog();
    }

    fn update_backlog(&self) {
        let n: usize = self.chats.values().map(VecDeque::len).sum::<usize>() + self.done.len();
        self.stats
            .backlog
            .store(n as u64, std::sync::atomic::Ordering::Relaxed);
        // Each chat's list is in acceptance order: the heads hold the oldest.
        let oldest = self
            .chats
            .values()
            .filter_map(|l| l.front().map(|p| p.accepted_ms).filter(|ms| *ms > 0))
            .min()
            .unwrap_or(0);
        Stats::set(&self.stats.oldest_queued_ms, oldest);
    }

    /// Notes `item`'s outcome in `chat` for the status page.
    fn note(&self, chat: &str, item: &Item, outcome: &'static str, error: Option<String>) {
        self.stats.recent.note(crate::recent::Entry {
            at_ms: clock::now_ms(),
            event_id: item.event.event_id.clone(),
            chat: chat.to_string(),
            kind: item.event.kind.clone(),
            title: item.event.title.clone(),
            outcome,
            error,
        });
    }

    /// The chat whose next send is due soonest, and how long until then.
    fn next_due(&self) -> Option<(String, Duration)> {
        let now = Instant::now();
        let now_ms = clock::now_ms();
        let (_, paused_until) = self.controls.get();
        self.chats
            .iter()
            .filter_map(|(chat, list)| {
                let head = list.front()?;
                let paused = if head.never_held { 0 } else { paused_until };
                let wall = Duration::from_millis(
                    head.not_before
                        .max(self.hold_until)
                        .max(paused)
                        .saturating_sub(now_ms)
                        .min(MAX_RETRY_AFTER_S * 1000),
                );
                let paced = self
                    .pacer
                    .ready_at(chat, now)
                    .saturating_duration_since(now);
                Some((chat.clone(), wall.max(paced)))
            })
            .min_by_key(|(_, wait)| *wait)
    }

    /// Applies a reloaded configuration to what is sent next.
    fn follow_config(&mut self) {
        let g = self.live.generation();
        if g != self.generation {
            self.generation = g;
            let cfg = self.live.get();
            self.pacer.set_limits(&cfg.limits);
            self.mode = cfg.telegram.parse_mode;
            self.zone = zone_of(&self.live);
        }
    }

    /// During a pause, an entry a pause does not hold (an approval, an
    /// urgent event) goes before the held ones of its chat, which keep
    /// their order behind it.
    fn let_unheld_pass(&mut self) {
        let (_, paused_until) = self.controls.get();
        if paused_until <= clock::now_ms() {
            return;
        }
        for list in self.chats.values_mut() {
            let Some(head) = list.front() else { continue };
            // A head Telegram has taken parts of is finished first.
            if head.never_held || head.item.is_some() || !head.unrecorded.is_empty() {
                continue;
            }
            if let Some(i) = list.iter().position(|p| p.never_held) {
                if let Some(p) = list.remove(i) {
                    list.push_front(p);
                }
            }
        }
    }

    /// Mute, pause and quiet hours as they stand now.
    pub(crate) fn quiet(&self, now_ms: u64) -> Quiet {
        let (muted_until, paused_until) = self.controls.get();
        Quiet {
            muted_until,
            paused_until,
            quiet_hours: notify::in_quiet_hours(&self.live.get().notifications, &self.zone, now_ms),
        }
    }

    /// Sends until the channel closes or `stop` is set; a send in flight
    /// is finished and recorded first. Run it on a thread of its own: it
    /// calls Telegram inline.
    pub async fn run(mut self, rx: Receiver<Vec<Queued>>, stop: Arc<Stop>) -> Result<()> {
        loop {
            if stop.is_set() {
                self.hand_off();
                self.finish_removing();
                return Ok(());
            }
            self.follow_config();
            while let Ok(batch) = rx.try_recv() {
                self.add(batch);
            }
            self.let_unheld_pass();
            if self.unsynced >= SENT_GROUP {
                // A failure is met again by the hand-off, which stalls.
                if self.spool.sync_sent().is_ok() {
                    self.unsynced = 0;
                }
            }
            let due = self.next_due();
            if !self.done.is_empty()
                && (self.done.len() >= GROUP || !due.as_ref().is_some_and(|(_, w)| w.is_zero()))
            {
                // Nothing more to send right now (or the group is full).
                self.hand_off();
                continue;
            }
            if self.removing.is_some() && !due.as_ref().is_some_and(|(_, w)| w.is_zero()) {
                // Nothing to send now: the last hand-off is waited for
                // here, so one that failed is put back (and said) now, not
                // when the next group comes.
                self.finish_removing();
                continue;
            }
            let recv = async {
                match rx.recv().await {
                    Ok(b) => Wake::New(b),
                    Err(_) => Wake::Closed,
                }
            };
            let stopped = async {
                stop.wait().await;
                Wake::Stop
            };
            let wake = match due {
                Some((chat, wait)) if wait.is_zero() => {
                    self.send_head(&chat).await;
                    // The watcher beside us (see `daemon`) takes in the
                    // files that came meanwhile every few sends, and syncs
                    // them on a pool thread while we go on.
                    self.sends_since_yield += 1;
                    if self.sends_since_yield >= YIELD_EVERY {
                        self.sends_since_yield = 0;
                        smol::future::yield_now().await;
                    }
                    continue;
                }
                Some((_, wait)) => {
                    let timer = async {
                        smol::Timer::after(wait).await;
                        Wake::Timer
                    };
                    timer.or(recv).or(stopped).await
                }
                None => recv.or(stopped).await,
            };
            match wake {
                Wake::New(b) => self.add(b),
                Wake::Timer => {}
                Wake::Closed | Wake::Stop => {
                    self.hand_off();
                    self.finish_removing();
                    return Ok(());
                }
            }
        }
    }

    /// Writes the hand-off of the sends in `done` together. A failed step
    /// puts them back at the head of their chats with what is on disk of
    /// them, to finish one by one after a backoff.
    fn hand_off(&mut self) {
        if self.done.is_empty() {
            return;
        }
        let group = std::mem::take(&mut self.done);
        if self.unsynced > 0 {
            if let Err(e) = self.spool.sync_sent() {
                return self.put_back(group, &e);
            }
            self.unsynced = 0;
        }
        // The last group's hand-off first: webhooks go out in order.
        self.finish_removing();
        let now = clock::now_ms();
        // `done` is empty now: the backlog must say so (ingest's early
        // send waits for an idle sender).
        self.update_backlog();
        for d in &group {
            self.known.remove(&d.name);
            self.note(&d.chat, &d.item, "delivered", None);
            Stats::bump(&self.stats.events_delivered);
            if d.item.accepted_ms > 0 {
                let ms = clock::age_ms(d.item.accepted_ms, now);
                self.stats.event_delivery.observe(Duration::from_millis(ms));
            }
        }
        if group.len() == 1 {
            if let Err(e) = write_hand_off(&self.outbox, &self.spool, &group, now) {
                self.known.insert(group[0].name.clone());
                self.put_back(group, &e);
            }
            return;
        }
        // A burst's hand-offs (webhook files, queue removals) are written
        // on a pool thread while the next sends go out; the next group's
        // waits for this one. Telegram has these messages and sent.log
        // says so: a failure puts them back to be finished one by one (as
        // a kill before this would at the next start), never sent again.
        let (outbox, spool) = (self.outbox.clone(), self.spool.clone());
        let group = Arc::new(group);
        let theirs = Arc::clone(&group);
        let job = crate::pool::unblock(move || write_hand_off(&outbox, &spool, &theirs, now));
        self.removing = Some((job, group));
    }

    /// Waits for the last group's hand-off, if it is still being written;
    /// one that failed is put back.
    fn finish_removing(&mut self) {
        let Some((job, group)) = self.removing.take() else {
            return;
        };
        if let Err(e) = smol::future::block_on(job) {
            // The job's own reference went with its closure, before its
            // answer; if not, the group stays on disk, to be finished
            // from the sent log at the next start.
            let group = Arc::try_unwrap(group).unwrap_or_default();
            for d in &group {
                self.known.insert(d.name.clone());
            }
            self.put_back(group, &e);
        }
    }

    /// Returns a group whose hand-off failed to the heads of their chats,
    /// to be finished one by one after a backoff.
    fn put_back(&mut self, group: Vec<Done>, e: &Error) {
        let mut chats = Vec::new();
        for d in group {
            let list = self.chats.entry(d.chat.clone()).or_default();
            let at = list.partition_point(|x| x.seq < d.seq);
            list.insert(
                at,
                Pending {
                    name: d.name,
                    seq: d.seq,
                    not_before: 0,
                    accepted_ms: d.item.accepted_ms,
                    early: None,
                    item: Some(d.item),
                    unrecorded: Vec::new(),
                    stalls: 0,
                    never_held: true,
                    progress: None,
                    ended_progress: false,
                },
            );
            if !chats.contains(&d.chat) {
                chats.push(d.chat);
            }
        }
        for chat in chats {
            let Some(p) = self.chats.get_mut(&chat).and_then(|l| l.front_mut()) else {
                continue;
            };
            let (item, unrecorded) = (p.item.take(), std::mem::take(&mut p.unrecorded));
            self.stall(&chat, item, unrecorded, e);
        }
        self.update_backlog();
    }

    /// Moves the head of `chat`, which Telegram took whole, to `done`; its
    /// name stays known until its hand-off is written.
    fn group(&mut self, chat: &str, name: String, item: Item) {
        let Some(list) = self.chats.get_mut(chat) else {
            return;
        };
        let seq = list.front().map_or(item.seq, |p| p.seq);
        list.pop_front();
        if list.is_empty() {
            self.chats.remove(chat);
        }
        self.done.push(Done {
            chat: chat.to_string(),
            name,
            seq,
            item,
        });
        self.update_backlog();
    }

    pub(crate) fn pop(&mut self, chat: &str) {
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

    /// Keeps the head of `chat` with what is known of it, to take up again
    /// after a backoff: a hand-off step failed.
    pub(crate) fn stall(
        &mut self,
        chat: &str,
        item: Option<Item>,
        unrecorded: Vec<(usize, i64)>,
        e: &Error,
    ) {
        self.stats.state_error();
        let Some(p) = self.chats.get_mut(chat).and_then(|l| l.front_mut()) else {
            return;
        };
        p.stalls += 1;
        let wait = backoff_up_to(p.stalls, 30_000);
        let what = match &item {
            Some(i) if i.parts_sent > 0 => format!(
                "event {} was sent to chat {chat} but its delivery cannot be recorded; retrying in {:.1} s (it is not sent again)",
                i.event.event_id,
                wait as f64 / 1000.0
            ),
            Some(i) => format!(
                "event {} for chat {chat}: cannot record its outcome, retrying in {:.1} s",
                i.event.event_id,
                wait as f64 / 1000.0
            ),
            None => format!(
                "queue entry {} cannot be read, retrying in {:.1} s",
                p.name,
                wait as f64 / 1000.0
            ),
        };
        log::error!("{what}: {e}");
        p.not_before = clock::now_ms() + wait;
        p.item = item;
        p.unrecorded = unrecorded;
    }

    /// Sends the next part of `chat`'s oldest entry and records the outcome.
    async fn send_head(&mut self, chat: &str) {
        let Some(front) = self.chats.get_mut(chat).and_then(|l| l.front_mut()) else {
            return;
        };
        let name = front.name.clone();
        let ended = front.ended_progress;
        let early = front.early.take();
        let kept = front.item.take();
        let mut unrecorded = std::mem::take(&mut front.unrecorded);
        let loaded = match (kept, &early) {
            (Some(item), _) => Ok(Some(item)),
            (None, Some((item, _))) => Ok(Some(item.clone())),
            (None, None) => self.spool.get(&name).map(|found| {
                found.map(|mut item| {
                    self.spool.recover(&name, &mut item);
                    item
                })
            }),
        };
        let mut item = match loaded {
            Ok(Some(i)) => i,
            Ok(None) => {
                // Gone (or damaged, and moved aside with a log line).
                self.pop(chat);
                return;
            }
            Err(e) => {
                self.stall(chat, None, Vec::new(), &e);
                return;
            }
        };
        if !unrecorded.is_empty() {
            if let Err(e) = self.record(chat, &item, &unrecorded) {
                self.stall(chat, Some(item), unrecorded, &e);
                return;
            }
            unrecorded.clear();
        }
        if progress::is_progress(&item.event) {
            self.send_progress(chat, &name, item, early).await;
            return;
        }
        if progress::is_terminal(&item.event)
            && item.parts_sent == 0
            && !ended
            && self.end_progress(chat, &item).await
        {
            // The send itself waits for its turn with the pacer.
            if let Some(p) = self.chats.get_mut(chat).and_then(|l| l.front_mut()) {
                p.item = Some(item);
                p.early = early;
                p.ended_progress = true;
            }
            return;
        }
        let mode = if item.plain {
            ParseMode::Plain
        } else {
            self.mode
        };
        // Text parts, then attachments (see upload.rs): one call a step.
        let steps = upload::plan(&item, mode);
        let Some(step) = steps.get(item.parts_sent).cloned() else {
            self.finish(chat, &name, item).await;
            return;
        };
        self.pacer.sent(chat, Instant::now());
        let files = attach::dir(&self.spool.root);
        let started = Instant::now();
        let now_ms = clock::now_ms();
        let silent = notify::silent(&item.event, &self.quiet(now_ms), now_ms);
        // The sender runs on a thread of its own (see `daemon`), so the
        // call blocks only it: no hand-off to another thread and back.
        let result = step.send(&self.api, chat, &files, silent);
        self.stats.telegram_request.observe(started.elapsed());
        if let Some((_, durable)) = early {
            // Nothing about this entry may be recorded before it exists.
            // It may have been accepted again, and written, since.
            if !durable.wait().await && !matches!(self.spool.get(&name), Ok(Some(_))) {
                log::warn!(
                    "event {} could not be queued on disk; its file stays in the events directory to be accepted again",
                    item.event.event_id
                );
                self.pop(chat);
                return;
            }
        }
        match result {
            Ok(ids) => {
                // An album is one step with a message per photo.
                let part: Vec<(usize, i64)> = ids.iter().map(|&id| (item.parts_sent, id)).collect();
                item.parts_sent += 1;
                item.message_ids.extend(&ids);
                Stats::bump(&self.stats.messages_sent);
                // A task's end has a progress message to retire only if
                // one was shown; most have none, and go with the group.
                let grouped = item.parts_sent >= steps.len()
                    && !item.event.is_approval()
                    && item.files.is_empty()
                    && (!progress::is_terminal(&item.event)
                        || self.progress.get(chat, &item.event.task_id).is_none());
                // Telegram's answer goes to disk before anything else: at
                // once, or for a group's send with its group's fdatasync,
                // before the group's hand-off.
                let recorded = if grouped {
                    self.spool
                        .record_sent_as(chat, &part, &item.event, clock::now_ms(), false)
                } else {
                    self.record(chat, &item, &part)
                };
                if let Err(e) = recorded {
                    self.stall(chat, Some(item), part, &e);
                    return;
                }
                if grouped {
                    // The rest of its hand-off is written with its group's.
                    self.unsynced += 1;
                    self.group(chat, name, item);
                    return;
                }
                // That fdatasync covered the group's lines too.
                self.unsynced = 0;
                if item.parts_sent >= steps.len() {
                    self.finish(chat, &name, item).await;
                } else {
                    // The sent log already has it; this only saves a
                    // look-up after a restart.
                    let _ = self.spool.put(&item);
                    if let Some(p) = self.chats.get_mut(chat).and_then(|l| l.front_mut()) {
                        p.item = Some(item);
                    }
                }
            }
            Err(e) => self.failed(chat, &name, item, e),
        }
    }

    /// What a failed or refused call for `item` in `chat` leaves on disk.
    pub(crate) fn failed(&mut self, chat: &str, name: &str, mut item: Item, e: Error) {
        match e {
            e if e.is_bad_entities() && !item.plain => {
                log::warn!(
                    "Telegram refused the formatting of event {} ({e}); sending it as plain text",
                    item.event.event_id
                );
                item.plain = true;
                self.save_retry(chat, name, &mut item, 0, e);
            }
            Error::Telegram {
                status: 429,
                retry_after,
                ..
            } => {
                let secs = retry_after.unwrap_or(5).min(MAX_RETRY_AFTER_S);
                self.hold_until = clock::now_ms() + secs * 1000;
                self.note(
                    chat,
                    &item,
                    "pending",
                    Some("Telegram rate limit (429)".into()),
                );
                Stats::bump(&self.stats.send_retries);
                if !item.pending_notified
                    && self.notify(
                        chat,
                        &item,
                        Status::Pending,
                        Some("Telegram rate limit (429)"),
                    )
                {
                    item.pending_notified = true;
                    if let Err(e) = self.spool.put(&item) {
                        log::warn!("cannot record progress of {name}: {e}");
                    }
                }
                if let Err(e) = self.spool.set_hold(self.hold_until) {
                    self.stats.state_error();
                    log::warn!("cannot record the hold on disk (it holds in memory): {e}");
                }
                log::warn!(
                    "Telegram asks to wait {secs} s (429 Too Many Requests); all sends held"
                );
            }
            e if e.is_retryable() => {
                item.attempts += 1;
                let wait = backoff_ms(item.attempts);
                log::warn!(
                    "send of event {} to chat {chat} failed (attempt {}), retrying in {:.1} s: {e}{}",
                    item.event.event_id,
                    item.attempts,
                    wait as f64 / 1000.0,
                    clock_hint(&e)
                );
                Stats::bump(&self.stats.send_retries);
                self.note(chat, &item, "pending", Some(e.to_string()));
                if !item.pending_notified
                    && self.notify(chat, &item, Status::Pending, Some(&e.to_string()))
                {
                    item.pending_notified = true;
                }
                self.save_retry(chat, name, &mut item, wait, e);
            }
            e => {
                log::error!(
                    "Telegram refused event {} for chat {chat}; kept in undeliverable/: {e}",
                    item.event.event_id
                );
                item.last_error = Some(e.to_string());
                if !self.notify(chat, &item, Status::Failed, Some(&e.to_string())) {
                    self.stall(chat, Some(item), Vec::new(), &e);
                    return;
                }
                if let Err(e) = self.spool.give_up(&item) {
                    self.stall(chat, Some(item), Vec::new(), &e);
                    return;
                }
                self.release_files(&item);
                Stats::bump(&self.stats.send_failures);
                self.note(chat, &item, "failed", Some(e.to_string()));
                self.pop(chat);
            }
        }
    }

    pub(crate) fn record(&self, chat: &str, item: &Item, parts: &[(usize, i64)]) -> Result<()> {
        self.spool
            .record_sent(chat, parts, &item.event, clock::now_ms())
    }

    /// Queues an `event_processed` webhook for `item` in `chat`; false if
    /// it could not be written (the caller retries the hand-off).
    fn notify(&self, chat: &str, item: &Item, status: Status, error: Option<&str>) -> bool {
        let mut payload = payload::event_processed(
            &item.event,
            chat,
            status,
            item.message_ids.last().copied(),
            error,
            clock::now_ms(),
            &self.outbox.info(),
        );
        upload::describe(&mut payload, &item.files);
        let source = processed_source(&item.event.event_id, chat, status);
        match self.outbox.enqueue("event_processed", &source, &payload) {
            Ok(()) => true,
            Err(e) => {
                self.stats.state_error();
                log::error!(
                    "cannot queue the event_processed webhook for {} (retried): {e}",
                    item.event.event_id
                );
                false
            }
        }
    }

    fn save_retry(&mut self, chat: &str, name: &str, item: &mut Item, wait_ms: u64, e: Error) {
        item.not_before = clock::now_ms() + wait_ms;
        item.last_error = Some(e.to_string());
        if let Err(e) = self.spool.put(item) {
            // The retry time holds in memory; on disk the entry keeps its
            // older one, which only makes it due sooner after a restart.
            self.stats.state_error();
            log::warn!("cannot record retry of {name}: {e}");
        }
        if let Some(p) = self.chats.get_mut(chat).and_then(|l| l.front_mut()) {
            p.not_before = item.not_before;
        }
    }

    /// The hand-off of a delivered entry: button record, webhook, then the
    /// queue entry goes. A failed step keeps the entry to try again.
    pub(crate) async fn finish(&mut self, chat: &str, name: &str, item: Item) {
        match self.finish_steps(chat, name, &item) {
            Ok(decided) => {
                Stats::bump(&self.stats.events_delivered);
                self.note(chat, &item, "delivered", None);
                if item.accepted_ms > 0 {
                    let ms = clock::age_ms(item.accepted_ms, clock::now_ms());
                    self.stats.event_delivery.observe(Duration::from_millis(ms));
                }
                log::info!(
                    "delivered {} to chat {chat} as message {:?}",
                    item.event.event_id,
                    item.message_ids
                );
                self.pop(chat);
                if let Some(a) = decided {
                    show_outcome(&self.api, self.mode, &a, &decision_note(&a)).await;
                }
            }
            Err(e) => self.stall(chat, Some(item), Vec::new(), &e),
        }
    }

    /// Returns the approval this message belongs to if it was decided
    /// before the message was recorded, so the caller removes its buttons.
    fn finish_steps(&mut self, chat: &str, name: &str, item: &Item) -> Result<Option<Approval>> {
        let now = clock::now_ms();
        let mut decided = None;
        if item.event.is_approval() {
            // The buttons are on the last part.
            if let Some(&last) = item.message_ids.last() {
                let d = self.approvals.delivered(&item.event, chat, last, now)?;
                if d.expires_at.is_some() {
                    let _ = self.expiries.try_send(());
                }
                if let Some(mut a) = d.decided {
                    a.messages = vec![(chat.to_string(), last)];
                    decided = Some(a);
                }
            }
        }
        let mut payload = payload::event_processed(
            &item.event,
            chat,
            Status::Delivered,
            item.message_ids.last().copied(),
            None,
            now,
            &self.outbox.info(),
        );
        upload::describe(&mut payload, &item.files);
        let source = processed_source(&item.event.event_id, chat, Status::Delivered);
        self.outbox.enqueue("event_processed", &source, &payload)?;
        if progress::is_terminal(&item.event) {
            self.progress.remove(chat, &item.event.task_id)?;
        }
        // Not always after a send of its own (a progress state superseded
        // before it was shown): a batch is rewritten without it.
        self.spool.remove(name)?;
        self.release_files(item);
        Ok(decided)
    }

    /// Removes an event's attachment copies once no chat has it queued.
    fn release_files(&self, item: &Item) {
        if item.files.is_empty() {
            return;
        }
        let id = &item.event.event_id;
        let queued = item
            .fanout
            .iter()
            .any(|c| self.spool.is_queued(&crate::spool::file_name(id, c)));
        if !queued {
            attach::remove(&self.spool.root, &item.files);
        }
    }
}

/// Writes the hand-off of sent entries: their `event_processed` webhooks,
/// then the entries leave the queue, and only then is "delivered" logged.
fn write_hand_off(outbox: &Outbox, spool: &Spool, group: &[Done], now: u64) -> Result<()> {
    let info = outbox.info();
    // With webhooks off there is nothing to build (a payload costs as
    // much as rendering the message).
    let hooks = outbox.enabled();
    let reports: Vec<(String, serde_json::Value)> = group
        .iter()
        .filter(|_| hooks)
        .map(|d| {
            let payload = payload::event_processed(
                &d.item.event,
                &d.chat,
                Status::Delivered,
                d.item.message_ids.last().copied(),
                None,
                now,
                &info,
            );
            let source = processed_source(&d.item.event.event_id, &d.chat, Status::Delivered);
            (source, payload)
        })
        .collect();
    let refs: Vec<(&str, &str, &serde_json::Value)> = reports
        .iter()
        .map(|(s, p)| ("event_processed", s.as_str(), p))
        .collect();
    outbox.enqueue_all(&refs)?;
    let names: Vec<String> = group.iter().map(|d| d.name.clone()).collect();
    remove_entries(spool, &names)?;
    for d in group {
        log::info!(
            "delivered {} to chat {} as message {:?}",
            d.item.event.event_id,
            d.chat,
            d.item.message_ids
        );
    }
    Ok(())
}

/// Removes sent entries from the queue, with one directory fsync.
fn remove_entries(spool: &Spool, names: &[String]) -> Result<()> {
    if spool.finish_sent_unsynced(names)? {
        spool.queue.sync()?;
    }
    Ok(())
}

/// Why TLS may fail on a device that has no real-time clock.
pub fn clock_hint(e: &Error) -> &'static str {
    if matches!(e, Error::Transport(_)) && !clock::plausible(clock::now_ms()) {
        " (the system clock reads a date before 2026, so certificates cannot be checked until NTP sets it; retrying)"
    } else {
        ""
    }
}
