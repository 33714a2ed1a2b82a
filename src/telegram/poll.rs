//! The way back from Telegram: `getUpdates` long polling, button presses,
//! messages, bot commands, and approvals that expire unanswered.
//!
//! The hand-off of an answer: its `user_response` webhook record (named by
//! the update id), then its response file (the update id is in the name),
//! then the decision, then the offset that confirms the update. Each step
//! is idempotent, so a crash at any point replays the update, which finds
//! what was already written and writes only what is missing: nothing lost,
//! nothing twice. A step that fails stops the update, which is tried again.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use smol::channel::Receiver;
use smol::future::FutureExt as _;

use crate::approvals::{option_label, parse_callback, Approval, Approvals, Decision, Press};
use crate::clock;
use crate::config::ParseMode;
use crate::error::{Error, Result};
use crate::notify::{self, Controls};
use crate::reload::Live;
use crate::responses::Responses;
use crate::signals::Stop;
use crate::spool::Spool;
use crate::stats::Stats;
use crate::telegram::api::{chat_param, Api};
use crate::telegram::render;
use crate::telegram::send::{backoff_up_to, clock_hint};
use crate::telegram::update::{self, Update, User};
use crate::webhook::deliver::Outbox;
use crate::webhook::payload;

const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Polling is retried at least this often, whatever went wrong, so that it
/// (and health) recover within a minute of the trouble ending.
const MAX_POLL_WAIT_MS: u64 = 30_000;

/// Counts a failed attempt and returns how long to wait before the next.
fn next_wait(attempt: &mut u32) -> Duration {
    *attempt += 1;
    Duration::from_millis(backoff_up_to(*attempt, MAX_POLL_WAIT_MS))
}

pub struct Poller {
    pub api: Arc<Api>,
    pub spool: Arc<Spool>,
    pub approvals: Arc<Approvals>,
    pub responses: Arc<Responses>,
    pub outbox: Arc<Outbox>,
    pub live: Arc<Live>,
    pub stats: Arc<Stats>,
    pub started: Instant,
    pub stop: Arc<Stop>,
    /// Mute and pause.
    pub controls: Arc<Controls>,
    /// Wakes the sender when a pause ends early (an empty batch).
    pub wake: smol::channel::Sender<Vec<crate::ingest::Queued>>,
    /// The health checks, run between long polls (none for a fleet device).
    pub health: Option<(
        Arc<crate::health::Monitor>,
        std::sync::Mutex<crate::health::Rhythm>,
    )>,
    /// Set while a long poll is in flight: a stop need not wait for it.
    pub in_long_poll: Arc<std::sync::atomic::AtomicBool>,
}

/// The delivery id source of a `user_response` for a Telegram update.
pub fn update_source(update_id: i64) -> String {
    format!("update:{update_id}")
}

async fn call(
    api: &Arc<Api>,
    method: &'static str,
    params: Value,
    timeout: Duration,
) -> Result<Value> {
    let api = api.clone();
    crate::pool::unblock(move || api.call(method, &params, timeout)).await
}

fn user_payload(u: &User) -> payload::User<'_> {
    payload::User {
        id: u.id,
        username: u.username.as_deref(),
        first_name: u.first_name.as_deref(),
        last_name: u.last_name.as_deref(),
    }
}

/// How a person is named in logs and notes.
fn name_of(u: &User) -> String {
    match (&u.username, &u.first_name) {
        (Some(n), _) => format!("@{n}"),
        (None, Some(f)) => f.clone(),
        (None, None) => format!("user {}", u.id),
    }
}

const COMMANDS_HELP: &str = "I forward notifications from this machine. \
Press a button to answer an approval; write to me and your message is \
recorded for the program that asked.\n\n/status: what the bridge is doing\n\
/mute [30m|2h|1d]: notifications without sound (default 1h); /unmute\n\
/pause [30m|2h|1d]: hold notifications until then (approvals and urgent ones still come); /resume\n\
/pending: the approvals nobody has decided yet, with their buttons\n/help: this text";

impl Poller {
    fn mode(&self) -> ParseMode {
        self.live.get().telegram.parse_mode
    }

    /// Whether `from` is not in `allowed_users` (logged, with the user id).
    fn stranger(&self, from: &User, what: &str) -> bool {
        let stranger = !self.live.get().telegram.allowed_users.contains(&from.id);
        if stranger {
            log::warn!(
                "{what} by user {} ({}), who is not in allowed_users: not authorized",
                from.id,
                name_of(from)
            );
        }
        stranger
    }

    /// Sleeps for `wait`, or less if the daemon is stopping; health checks
    /// that come due meanwhile are run.
    async fn pause(&self, wait: Duration) {
        let end = Instant::now() + wait;
        loop {
            self.check_health();
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() || self.stop.is_set() {
                return;
            }
            let nap = left.min(self.health_due());
            let stopped = async { self.stop.wait().await };
            async {
                smol::Timer::after(nap).await;
            }
            .or(stopped)
            .await;
        }
    }

    /// Runs the health check if it is due.
    fn check_health(&self) {
        if let Some((m, r)) = &self.health {
            m.check_if_due(&mut r.lock().unwrap_or_else(|p| p.into_inner()));
        }
    }

    /// How long until the next health check.
    fn health_due(&self) -> Duration {
        match &self.health {
            Some((m, r)) => m.until_due(&r.lock().unwrap_or_else(|p| p.into_inner())),
            None => Duration::MAX,
        }
    }

    /// Polls until the daemon stops; network trouble and 409s are waited out.
    pub async fn run(self) -> Result<()> {
        self.check_health();
        let mut attempt = 0;
        loop {
            if self.stop.is_set() {
                return Ok(());
            }
            match call(&self.api, "deleteWebhook", json!({}), CALL_TIMEOUT).await {
                Ok(_) => break,
                Err(e) => {
                    let wait = next_wait(&mut attempt);
                    log::warn!(
                        "deleteWebhook failed, retrying in {:.1} s: {e}{}",
                        wait.as_secs_f64(),
                        clock_hint(&e)
                    );
                    self.pause(wait).await;
                }
            }
        }
        let commands = json!({"commands": [
            {"command": "status", "description": "What the bridge is doing"},
            {"command": "mute", "description": "Notifications without sound for a while (1h, 30m, 1d)"},
            {"command": "unmute", "description": "Notifications with sound again"},
            {"command": "pause", "description": "Hold notifications for a while (1h, 30m, 1d)"},
            {"command": "resume", "description": "Deliver held notifications now"},
            {"command": "pending", "description": "Approvals nobody has decided yet"},
            {"command": "help", "description": "What this bot does"},
            {"command": "start", "description": "Start"},
        ]});
        if let Err(e) = call(&self.api, "setMyCommands", commands, CALL_TIMEOUT).await {
            log::warn!("setMyCommands failed (the command menu may be missing): {e}");
        }
        let mut offset = self.spool.offset();
        let mut attempt = 0;
        loop {
            if self.stop.is_set() {
                return Ok(());
            }
            // The long poll is the health check's timer too: it returns
            // by the time the next check is due.
            self.check_health();
            let due_s = self.health_due().as_secs_f64().ceil() as u64;
            let poll_timeout = self
                .live
                .get()
                .telegram
                .poll_timeout_seconds
                .min(due_s.max(1));
            let params = json!({
                "offset": offset,
                "timeout": poll_timeout,
                "allowed_updates": ["message", "callback_query"],
            });
            let poll_wait = Duration::from_secs(poll_timeout + 15);
            // The poller has a thread of its own (see `daemon`): the call
            // blocks only it, and an idle daemon's only waking thread is
            // this one. A stop does not wait for it; its updates are not
            // confirmed, so Telegram sends them again.
            self.in_long_poll.store(true, Ordering::SeqCst);
            if self.stop.is_set() {
                // Set before the flag: the stop may be waiting for us.
                return Ok(());
            }
            let polled = self.api.call("getUpdates", &params, poll_wait);
            self.in_long_poll.store(false, Ordering::SeqCst);
            if self.stop.is_set() {
                return Ok(());
            }
            let polled = polled.and_then(|result| {
                update::parse_all(&result).map_err(|e| Error::Transport(e.to_string()))
            });
            let updates = match polled {
                Ok(u) => {
                    if self.stats.polling_conflict.swap(false, Ordering::Relaxed) {
                        log::info!("getUpdates works again; no other poller is in the way");
                    }
                    attempt = 0;
                    u
                }
                Err(e) => {
                    let wait = next_wait(&mut attempt);
                    if matches!(e, Error::Telegram { status: 409, .. }) {
                        self.stats.polling_conflict.store(true, Ordering::Relaxed);
                        log::warn!(
                            "getUpdates: 409 Conflict: another program is polling this bot token; \
                             retrying in {:.1} s",
                            wait.as_secs_f64()
                        );
                    } else {
                        log::warn!(
                            "getUpdates failed, retrying in {:.1} s: {e}{}",
                            wait.as_secs_f64(),
                            clock_hint(&e)
                        );
                    }
                    self.pause(wait).await;
                    continue;
                }
            };
            let mut next = offset;
            let mut failed = None;
            for u in updates {
                let u = match u {
                    Ok(u) => u,
                    Err(bad) => {
                        // Nothing to act on; confirmed so it does not come
                        // back forever.
                        log::warn!("{bad}; ignored");
                        if let Some(id) = bad.update_id.filter(|id| *id >= next) {
                            next = id + 1;
                        }
                        continue;
                    }
                };
                let id = u.update_id();
                if id < offset {
                    continue;
                }
                if let Err(e) = self.handle(&u).await {
                    failed = Some(e);
                    break;
                }
                next = next.max(id + 1);
            }
            if next != offset {
                match self.spool.set_offset(next) {
                    Ok(()) => {
                        self.responses.confirm(next);
                        offset = next;
                    }
                    Err(e) => failed = Some(e),
                }
            }
            if let Some(e) = failed {
                // Unconfirmed updates come again: nothing is skipped.
                let wait = next_wait(&mut attempt);
                if matches!(e, Error::Io { .. }) {
                    self.stats.state_error();
                }
                log::warn!(
                    "an answer is not recorded yet, retrying in {:.1} s: {e}",
                    wait.as_secs_f64()
                );
                self.pause(wait).await;
            }
        }
    }

    /// Handles one update. An error means it must be handled again later.
    async fn handle(&self, u: &Update) -> Result<()> {
        Stats::bump(&self.stats.updates_received);
        match u {
            Update::Press(p) => self.press(p).await,
            Update::Message(m) => self.message(m).await,
            Update::Other { .. } => Ok(()),
        }
    }

    /// Answers a button press (stops its spinner). Inline: the poller has
    /// a thread of its own (see `daemon`).
    async fn answer(&self, query_id: &str, text: &str) {
        let params = json!({"callback_query_id": query_id, "text": text});
        if let Err(e) = self.api.call("answerCallbackQuery", &params, CALL_TIMEOUT) {
            log::warn!("answerCallbackQuery failed: {e}");
        }
    }

    async fn reply(&self, chat: &str, text: &str) {
        let mut params = json!({"chat_id": chat_param(chat), "text": text});
        if let Some(t) = crate::telegram::api::thread_of(chat) {
            params["message_thread_id"] = json!(t);
        }
        if let Err(e) = call(&self.api, "sendMessage", params, CALL_TIMEOUT).await {
            log::warn!("reply to chat {chat} failed: {e}");
        }
    }

    async fn press(&self, p: &update::Press) -> Result<()> {
        let (update_id, query_id, from) = (p.update_id, p.query_id.as_str(), &p.from);
        if self.stranger(from, "button press") {
            self.answer(query_id, "Not authorized.").await;
            return Ok(());
        }
        let data = p.data.as_str();
        let chat = p.chat.clone().unwrap_or_default();
        let message_id = p.message_id;
        let resolved = parse_callback(data).and_then(|(key, index, word)| {
            let a = self.approvals.get(&key).ok().flatten()?;
            let label = option_label(&a.event.options(), index, word)?.clone();
            Some((key, label, a))
        });
        let Some((key, label, approval)) = resolved else {
            log::warn!(
                "button press with unknown callback data {data:?} by {}",
                name_of(from)
            );
            self.answer(query_id, "This button is no longer known.")
                .await;
            return Ok(());
        };
        // Callback data naming another approval than the one its message
        // shows is forged: it decides nothing. A message we have no record
        // of (the press beat the sender's bookkeeping, or a copy whose send
        // a crash left unrecorded) is taken at its word: only the bot puts
        // buttons on its messages.
        if let Some(mid) = message_id {
            if self.shows_other(&approval, &chat, mid) {
                log::warn!(
                    "button press by {} with callback data {data:?} on message {mid}, which shows another event: ignored",
                    name_of(from)
                );
                self.answer(query_id, "This button is no longer known.")
                    .await;
                return Ok(());
            }
        }
        let decision = Decision {
            option: Some(label.clone()),
            callback_data: Some(data.to_string()),
            user_id: Some(from.id),
            username: from.username.clone(),
            first_name: from.first_name.clone(),
            at: clock::now_ms(),
            update_id: Some(update_id),
        };
        // The webhook and the response file are written before the decision
        // is recorded: a crash in between replays this update, which finds
        // them (by update id) and records the same decision.
        let press = self.approvals.decide(&key, decision, |a| {
            let answer = payload::Answer {
                response_id: format!("resp_{update_id}"),
                event_id: Some(&a.event.event_id),
                message_id,
                text: &label,
                chat_id: &chat,
                interaction: "callback_query",
                callback_data: Some(data),
            };
            let original = payload::Original {
                kind: Some(&a.event.kind),
                title: Some(&a.event.title),
                options: a.event.options(),
            };
            self.notify(update_id, Some(from), &answer, &original)?;
            if !self.responses.is_handled(update_id) {
                let body = json!({
                    "timestamp": clock::iso8601(clock::now_ms()),
                    "user_id": from.id,
                    "username": from.username,
                    "first_name": from.first_name,
                    "callback_data": data,
                    "original_message_id": message_id,
                    "response_type": "callback_query",
                    "event_id": a.event.event_id,
                    "task_id": a.event.task_id,
                    "option": label,
                    "update_id": update_id,
                });
                let name = self
                    .responses
                    .write("callback", from.id, update_id, &body)?;
                Stats::bump(&self.stats.responses_written);
                log::info!(
                    "{} chose {label:?} for event {}; wrote {name}",
                    name_of(from),
                    a.event.event_id
                );
            }
            Ok(())
        })?;
        match press {
            Press::Decided(a) => {
                // The pressed message may not be in the record yet (the
                // press can beat the sender's bookkeeping); it is updated
                // anyway.
                let mut a = a;
                if let Some(mid) = message_id.filter(|_| !chat.is_empty()) {
                    if !a
                        .messages
                        .iter()
                        .any(|(c, m)| crate::telegram::api::same_chat(c, &chat) && *m == mid)
                    {
                        a.messages.push((chat.clone(), mid));
                    }
                }
                // "Recorded" once it is: the files are written first (a
                // millisecond, against Telegram's round trip).
                self.answer(query_id, &format!("Recorded: {label}")).await;
                self.show_outcome(&a, &decision_note(&a)).await;
            }
            Press::AlreadyDecided(a) => {
                let text = match &a.decision {
                    Some(Decision {
                        option: Some(o), ..
                    }) => format!("Already decided: {o}"),
                    _ => "Already decided: it expired".to_string(),
                };
                self.answer(query_id, &text).await;
            }
            Press::Unknown => {
                self.answer(query_id, "This button is no longer known.")
                    .await
            }
        }
        Ok(())
    }

    /// Whether message `mid` in `chat` is known to show another event than
    /// approval `a`.
    fn shows_other(&self, a: &Approval, chat: &str, mid: i64) -> bool {
        if a.messages
            .iter()
            .any(|(c, m)| crate::telegram::api::same_chat(c, chat) && *m == mid)
        {
            return false;
        }
        self.spool
            .event_of_message(chat, mid)
            .is_some_and(|e| e.event_id != a.event.event_id)
    }

    /// Removes the buttons from every copy of the approval and appends `note`.
    async fn show_outcome(&self, a: &Approval, note: &str) {
        show_outcome(&self.api, self.mode(), a, note).await
    }

    async fn message(&self, m: &update::Message) -> Result<()> {
        let (update_id, from, chat) = (m.update_id, &m.from, m.chat.as_str());
        if self.stranger(from, "message") {
            self.reply(chat, "Not authorized.").await;
            return Ok(());
        }
        let Some(text) = m.text.as_deref() else {
            if let Some(f) = &m.file {
                return self.file_message(m, f).await; // see download.rs
            }
            self.reply(chat, "Only text messages are recorded.").await;
            return Ok(());
        };
        // A command from a forum topic is answered in that topic.
        let here = match m.thread_id {
            Some(t) => format!("{chat}/{t}"),
            None => chat.to_string(),
        };
        let arg = text.split_whitespace().nth(1).unwrap_or("");
        let command = text.strip_prefix('/').map(|c| {
            c.split_whitespace()
                .next()
                .unwrap_or("")
                .split('@')
                .next()
                .unwrap_or("")
        });
        match command {
            Some("start") | Some("help") => {
                self.reply(chat, COMMANDS_HELP).await;
                return Ok(());
            }
            Some("status") => {
                self.reply(&here, &self.status_text()).await;
                return Ok(());
            }
            Some(c @ ("mute" | "pause")) => {
                let text = self.mute_or_pause(c, arg, &name_of(from))?;
                self.reply(&here, &text).await;
                return Ok(());
            }
            Some("unmute") => {
                self.controls.set_muted(0)?;
                log::info!("{} unmuted notifications", name_of(from));
                self.reply(&here, "🔔 Notifications ring again.").await;
                return Ok(());
            }
            Some("resume") => {
                let (_, paused) = self.controls.get();
                self.controls.set_paused(0)?;
                let _ = self.wake.try_send(Vec::new());
                log::info!("{} resumed notifications", name_of(from));
                let text = if paused > clock::now_ms() {
                    "▶️ Resumed: held notifications are on their way."
                } else {
                    "▶️ Nothing was paused."
                };
                self.reply(&here, text).await;
                return Ok(());
            }
            Some("pending") => {
                self.pending(&here).await?;
                return Ok(());
            }
            _ => {}
        }
        let chat_id = chat.to_string();
        let reply_to = m.reply_to;
        let replied = reply_to.and_then(|r| self.spool.event_of_message(&chat_id, r));
        let event_id = replied.as_ref().map(|e| e.event_id.clone());
        let answer = payload::Answer {
            response_id: format!("resp_{update_id}"),
            event_id: event_id.as_deref(),
            message_id: m.message_id,
            text,
            chat_id: &chat_id,
            interaction: "message",
            callback_data: None,
        };
        let original = payload::Original {
            kind: replied.as_ref().map(|e| e.kind.as_str()),
            title: replied.as_ref().map(|e| e.title.as_str()),
            options: Vec::new(),
        };
        // Webhook record first, then the response file; both by update id.
        self.notify(update_id, Some(from), &answer, &original)?;
        if self.responses.is_handled(update_id) {
            return Ok(());
        }
        let body = json!({
            "timestamp": clock::iso8601(clock::now_ms()),
            "user_id": from.id,
            "username": from.username,
            "first_name": from.first_name,
            "message_text": text,
            "message_type": "text",
            "response_type": "message",
            "event_id": event_id,
            "reply_to_message_id": reply_to,
            "chat_id": chat_id,
            "update_id": update_id,
        });
        let name = self
            .responses
            .write("response", from.id, update_id, &body)?;
        Stats::bump(&self.stats.responses_written);
        log::info!("message from {} recorded as {name}", name_of(from));
        Ok(())
    }

    /// Queues the `user_response` webhook of update `update_id` (once,
    /// however often the update is replayed).
    fn notify(
        &self,
        update_id: i64,
        from: Option<&User>,
        answer: &payload::Answer,
        original: &payload::Original,
    ) -> Result<()> {
        let user = from.map(user_payload);
        let p = payload::user_response(
            user.as_ref(),
            answer,
            original,
            clock::now_ms(),
            &self.outbox.info(),
        );
        self.outbox
            .enqueue("user_response", &update_source(update_id), &p)
    }

    /// `HH:MM` of unix ms `t` in the zone quiet hours use, and which zone.
    fn when(&self, t: u64) -> String {
        let cfg = self.live.get();
        let name = &cfg.notifications.timezone;
        let tz = std::env::var("TZ").ok();
        let Ok(zone) = crate::tz::load(name, tz.as_deref()) else {
            return clock::hh_mm(t);
        };
        let offset = i64::from(zone.offset_at((t / 1000) as i64)) * 1000;
        let local = clock::hh_mm((t as i64 + offset).max(0) as u64);
        let hm = local.trim_end_matches(" UTC");
        match (name.is_empty(), offset) {
            (true, 0) => format!("{hm} UTC"),
            (true, _) => format!("{hm} local time"),
            (false, _) => format!("{hm} ({name})"),
        }
    }

    /// `/mute DURATION` or `/pause DURATION`: the reply.
    fn mute_or_pause(&self, command: &str, arg: &str, who: &str) -> Result<String> {
        let ms = if arg.is_empty() {
            Some(3_600_000)
        } else {
            notify::parse_duration_ms(arg)
        };
        let Some(ms) = ms else {
            return Ok(format!(
                "Not understood: {arg:?}. Say /{command} 30m, /{command} 2h or /{command} 1d (at most 30 days)."
            ));
        };
        let until = clock::now_ms() + ms;
        if command == "mute" {
            self.controls.set_muted(until)?;
            log::info!("{who} muted notifications until {}", clock::iso8601(until));
            Ok(format!(
                "🔕 Muted until {}: notifications arrive without sound (urgent ones still ring). /unmute ends it.",
                self.when(until)
            ))
        } else {
            self.controls.set_paused(until)?;
            let _ = self.wake.try_send(Vec::new());
            log::info!("{who} paused notifications until {}", clock::iso8601(until));
            Ok(format!(
                "⏸ Paused until {}: notifications wait and come then, in order. Approvals and urgent events still come. /resume ends it.",
                self.when(until)
            ))
        }
    }

    /// `/pending`: every undecided approval again, with its buttons; the
    /// new copy is recorded on the approval, so a press on it decides it
    /// and both copies show the outcome.
    async fn pending(&self, chat: &str) -> Result<()> {
        let open = self.approvals.undecided()?;
        if open.is_empty() {
            self.reply(chat, "No approvals are waiting for a decision.")
                .await;
            return Ok(());
        }
        let mode = self.mode();
        for a in open {
            // The buttons are on the last part, and the last part is what
            // a long approval's copy shows.
            let last = |m| render::render(&a.event, m).pop();
            let (Some(styled), Some(plain)) = (last(mode), last(ParseMode::Plain)) else {
                continue;
            };
            let (api, to) = (self.api.clone(), chat.to_string());
            let sent = crate::pool::unblock(move || {
                api.send_message(&to, &styled, false, false).or_else(|e| {
                    if e.is_bad_entities() {
                        api.send_message(&to, &plain, false, false)
                    } else {
                        Err(e)
                    }
                })
            })
            .await;
            match sent {
                Ok(mid) => {
                    // A reply to the copy names its event, as for the first.
                    self.spool
                        .record_sent(chat, &[(0, mid)], &a.event, clock::now_ms())?;
                    self.approvals.add_message(&a.key(), chat, mid)?;
                    log::info!(
                        "approval {} shown again as message {mid} in chat {chat}",
                        a.event.event_id
                    );
                }
                Err(e) => log::warn!(
                    "cannot show approval {} again in chat {chat}: {e}",
                    a.event.event_id
                ),
            }
        }
        Ok(())
    }

    fn status_text(&self) -> String {
        let s = &self.stats;
        let up = self.started.elapsed().as_secs();
        let (muted, paused) = self.controls.get();
        let now = clock::now_ms();
        let until = |t: u64| {
            if t > now {
                format!("until {}", self.when(t))
            } else {
                "no".to_string()
            }
        };
        format!(
            "{}\nMuted: {}\nPaused: {}",
            self.counters_text(s, up),
            until(muted),
            until(paused)
        )
    }

    fn counters_text(&self, s: &Stats, up: u64) -> String {
        format!(
            "cctelegram {} up {}h {}m\nEvents accepted: {} (refused {}, duplicates {})\n\
             Messages sent: {}\nWaiting to send: {}\nRetries: {}, failures: {}\nAnswers recorded: {}",
            env!("CARGO_PKG_VERSION"),
            up / 3600,
            up % 3600 / 60,
            Stats::get(&s.events_accepted),
            Stats::get(&s.events_refused),
            Stats::get(&s.events_duplicate),
            Stats::get(&s.messages_sent),
            Stats::get(&s.backlog),
            Stats::get(&s.send_retries),
            Stats::get(&s.send_failures),
            Stats::get(&s.responses_written),
        ) + &crate::fleet::status_lines()
    }
}

/// The line an approval shows once decided or expired.
pub fn decision_note(a: &Approval) -> String {
    match &a.decision {
        Some(Decision {
            option: Some(label),
            username,
            first_name,
            user_id,
            at,
            ..
        }) => {
            let who = match (username, first_name) {
                (Some(u), _) => format!("@{u}"),
                (None, Some(f)) => f.clone(),
                (None, None) => format!("user {}", user_id.unwrap_or(0)),
            };
            format!("✅ {label}: by {who} at {}", clock::hh_mm(*at))
        }
        _ => {
            let minutes = a
                .event
                .data
                .get("timeout_minutes")
                .and_then(Value::as_f64)
                .unwrap_or(0.0);
            format!("⌛ Expired: no answer within {minutes} min")
        }
    }
}

/// Removes the buttons from every message of `a` and appends `note`.
pub async fn show_outcome(api: &Arc<Api>, mode: ParseMode, a: &Approval, note: &str) {
    if a.messages.is_empty() {
        log::warn!(
            "approval {} has no sent message to update",
            a.event.event_id
        );
    }
    for (chat, message_id) in &a.messages {
        let chat_id = chat_param(chat);
        let remove = json!({"chat_id": chat_id, "message_id": message_id,
            "reply_markup": {"inline_keyboard": []}});
        if let Err(e) = call(api, "editMessageReplyMarkup", remove, CALL_TIMEOUT).await {
            log::warn!("cannot remove the buttons of message {message_id} in chat {chat}: {e}");
        }
        let mut part = render::with_note(&a.event, mode, note);
        for attempt in 0..2 {
            let mut params =
                json!({"chat_id": chat_id, "message_id": message_id, "text": part.text});
            if let Some(m) = part.parse_mode {
                params["parse_mode"] = json!(m);
            }
            match call(api, "editMessageText", params, CALL_TIMEOUT).await {
                Ok(_) => break,
                Err(e) if e.is_bad_entities() && attempt == 0 => {
                    part = render::with_note(&a.event, ParseMode::Plain, note);
                }
                Err(e) => {
                    log::warn!(
                        "cannot show the outcome on message {message_id} in chat {chat}: {e}"
                    );
                    break;
                }
            }
        }
    }
}

/// The delivery id source of the `user_response` an expiry sends.
pub fn expiry_source(event_id: &str) -> String {
    format!("expired:{event_id}")
}

/// Expires approvals whose `timeout_minutes` passed without a press. `wake`
/// brings news of a new expiry time. The hand-off: the `user_response`
/// webhook, the expired response file, then the decision; a step that
/// fails is retried with backoff, and the task never ends but on `stop`.
pub async fn expire(
    api: Arc<Api>,
    approvals: Arc<Approvals>,
    responses: Arc<Responses>,
    outbox: Arc<Outbox>,
    live: Arc<Live>,
    wake: Receiver<()>,
    stop: Arc<Stop>,
) -> Result<()> {
    let mut attempt = 0;
    loop {
        if stop.is_set() {
            return Ok(());
        }
        let now = clock::now_ms();
        let mut failed = None;
        let due = approvals.expiries(now).unwrap_or_else(|e| {
            failed = Some(e);
            Vec::new()
        });
        for (_, key) in due.iter().take_while(|(left, _)| *left == 0) {
            let d = Decision {
                option: None,
                callback_data: None,
                user_id: None,
                username: None,
                first_name: None,
                at: now,
                update_id: None,
            };
            let decided = approvals.decide(key, d, |a| {
                let minutes = a
                    .event
                    .data
                    .get("timeout_minutes")
                    .and_then(Value::as_f64)
                    .unwrap_or(0.0);
                let first = a.messages.first();
                let answer = payload::Answer {
                    response_id: format!("resp_expired_{key}"),
                    event_id: Some(&a.event.event_id),
                    message_id: first.map(|m| m.1),
                    text: "",
                    chat_id: first.map(|m| m.0.as_str()).unwrap_or(""),
                    interaction: "expired",
                    callback_data: None,
                };
                let original = payload::Original {
                    kind: Some(&a.event.kind),
                    title: Some(&a.event.title),
                    options: a.event.options(),
                };
                let p = payload::user_response(None, &answer, &original, now, &outbox.info());
                outbox.enqueue("user_response", &expiry_source(&a.event.event_id), &p)?;
                let body = json!({
                    "timestamp": clock::iso8601(now),
                    "response_type": "expired",
                    "event_id": a.event.event_id,
                    "task_id": a.event.task_id,
                    "option": null,
                    "callback_data": null,
                    "original_message_id": first.map(|m| m.1),
                    "timeout_minutes": minutes,
                });
                if let Some(name) = responses.write_expired(key, &body)? {
                    log::info!(
                        "approval {} expired unanswered; wrote {name}",
                        a.event.event_id
                    );
                }
                Ok(())
            });
            match decided {
                Ok(Press::Decided(a)) => {
                    show_outcome(&api, live.get().telegram.parse_mode, &a, &decision_note(&a)).await
                }
                Ok(_) => {}
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        let wait = match failed {
            Some(e) => {
                let wait = next_wait(&mut attempt);
                log::error!(
                    "cannot record an expiry, retrying in {:.1} s: {e}",
                    wait.as_secs_f64()
                );
                wait
            }
            None => {
                attempt = 0;
                // Looked at again at least hourly, so a clock set meanwhile
                // is noticed.
                let next = due.iter().map(|(left, _)| *left).find(|l| *l > 0);
                Duration::from_millis(next.unwrap_or(3_600_000).min(3_600_000))
            }
        };
        let timer = async {
            smol::Timer::after(wait).await;
        };
        let woke = async {
            if wake.recv().await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        let stopped = async { stop.wait().await };
        timer.or(woke).or(stopped).await;
    }
}
