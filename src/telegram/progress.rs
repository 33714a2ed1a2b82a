//! Progress edited in place: one message per task and chat.
//!
//! A job that reports each step would otherwise fill the chat with one
//! message per step. `task_progress` and `progress_update` events of one
//! `task_id` share a message: the first is sent, later ones edit it (the
//! sender paces the edits and skips states that a newer one replaced), and
//! a `task_completion`, `task_failed` or `task_cancelled` edits it a last
//! time before it is sent as a message of its own. Which message shows a
//! task is a record in `state_dir/progress/`, named from the chat and the
//! task id, so a restart keeps editing the same message. What is shown is
//! pure ([`part`], [`bar`]); the sender's loop calls in here for the events
//! this module owns.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use std::sync::Arc;
use std::time::Instant;

use crate::clock;
use crate::config::ParseMode;
use crate::error::Result;
use crate::event::Event;
use crate::ingest::Durable;
use crate::notify;
use crate::spool::hex_digest;
use crate::spool::Item;
use crate::stats::Stats;
use crate::store::Records;
use crate::telegram::render::{self, Part};
use crate::telegram::send::Sender;

/// Cells of the bar.
const BAR_CELLS: usize = 10;

pub fn is_progress(ev: &Event) -> bool {
    matches!(ev.kind.as_str(), "task_progress" | "progress_update")
}

/// An event that ends a task's progress message.
pub fn is_terminal(ev: &Event) -> bool {
    matches!(
        ev.kind.as_str(),
        "task_completion" | "task_failed" | "task_cancelled"
    )
}

/// The message that shows a task's progress in one chat.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Shown {
    pub chat: String,
    pub message_id: i64,
    /// Unix ms of the last send or edit, for pacing.
    pub edited_ms: u64,
    /// The latest state shown.
    pub event: Event,
}

pub struct Progress {
    records: Records,
    /// The names of the records on disk: a task's end looks up its progress
    /// message, and most tasks have none, so most look-ups touch no file.
    known: std::sync::Mutex<std::collections::HashSet<String>>,
}

fn record_name(chat: &str, task_id: &str) -> String {
    format!(
        "{}.json",
        &hex_digest(&[chat.as_bytes(), b"\0", task_id.as_bytes()])[..32]
    )
}

impl Progress {
    pub fn open(state_dir: &std::path::Path) -> Result<Progress> {
        let records = Records::open(state_dir, "progress")?;
        let known = records.names()?.into_iter().collect();
        Ok(Progress {
            records,
            known: std::sync::Mutex::new(known),
        })
    }

    fn known(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The message showing `task_id` in `chat`; a damaged record is moved
    /// aside and is `None` (the next state becomes a new message).
    pub fn get(&self, chat: &str, task_id: &str) -> Option<Shown> {
        let name = record_name(chat, task_id);
        if !self.known().contains(&name) {
            return None;
        }
        match self.records.get(&name) {
            Ok(s) => s,
            Err(e) => {
                log::warn!("cannot read the progress record of task {task_id} in chat {chat}: {e}");
                None
            }
        }
    }

    pub fn put(&self, s: &Shown) -> Result<()> {
        let name = record_name(&s.chat, &s.event.task_id);
        self.records.put(&name, s)?;
        self.known().insert(name);
        Ok(())
    }

    pub fn remove(&self, chat: &str, task_id: &str) -> Result<()> {
        let name = record_name(chat, task_id);
        if !self.known().contains(&name) {
            return Ok(());
        }
        self.records.remove(&name)?;
        self.known().remove(&name);
        Ok(())
    }
}

/// How far along: `data.percentage`, else `data.current` of `data.total`,
/// clamped to 0..=100.
pub fn percent(ev: &Event) -> Option<f64> {
    let num = |k: &str| match ev.data.get(k)? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().trim_end_matches('%').parse().ok(),
        _ => None,
    };
    let p = match num("percentage") {
        Some(p) => p,
        None => {
            let (c, t) = (num("current")?, num("total")?);
            if t <= 0.0 {
                return None;
            }
            c / t * 100.0
        }
    };
    p.is_finite().then(|| p.clamp(0.0, 100.0))
}

/// `▓▓▓▓░░░░░░ 40%` (and `(4/10)` when counted).
pub fn bar(ev: &Event) -> Option<String> {
    let p = percent(ev)?;
    let full = ((p / 100.0) * BAR_CELLS as f64).round() as usize;
    let mut s: String = "▓".repeat(full.min(BAR_CELLS));
    s.push_str(&"░".repeat(BAR_CELLS - full.min(BAR_CELLS)));
    s.push_str(&format!(" {}%", p.round()));
    if ev.data.get("percentage").is_none() {
        if let (Some(c), Some(t)) = (ev.data.get("current"), ev.data.get("total")) {
            s.push_str(&format!(" ({c}/{t})"));
        }
    }
    Some(s)
}

/// The progress message's text: the event with its bar, and, once the
/// task ended, how (`ending` is the terminal event).
pub fn part(ev: &Event, mode: ParseMode, ending: Option<&Event>) -> Part {
    let mut note = match ending {
        Some(end) if end.kind == "task_completion" => {
            let mut done = ev.clone();
            done.data.insert("percentage".into(), 100.into());
            bar(&done).unwrap_or_default()
        }
        _ => bar(ev).unwrap_or_default(),
    };
    if let Some(end) = ending {
        let how = match end.kind.as_str() {
            "task_completion" => "✅ Completed",
            "task_failed" => "❌ Failed",
            _ => "🚫 Cancelled",
        };
        if !note.is_empty() {
            note.push_str(" · ");
        }
        note.push_str(how);
    }
    if note.is_empty() {
        let mut first = render::render(ev, mode).into_iter().next().unwrap_or(Part {
            text: ev.title.clone(),
            parse_mode: None,
            buttons: Vec::new(),
        });
        first.buttons.clear();
        return first;
    }
    render::with_note(ev, mode, &note)
}

/// The sender's side: progress events are sent, edited or retired here,
/// with the sender's hand-off (Telegram's answer on disk first, then the
/// progress record, then the webhook, then the queue entry goes).
impl Sender {
    /// Whether a later progress state of `task` waits in `chat`'s queue
    /// behind its head: the head's state is then never shown.
    fn superseded(&self, chat: &str, task: &str) -> bool {
        self.chats.get(chat).is_some_and(|l| {
            l.iter()
                .skip(1)
                .any(|p| p.progress.as_deref() == Some(task))
        })
    }

    /// A progress event: the first of its task in this chat is sent, later
    /// ones edit that message, at most every `progress_min_edit_seconds`;
    /// a state a newer one replaced is retired unshown, reported as
    /// delivered in the message that shows its task.
    pub(crate) async fn send_progress(
        &mut self,
        chat: &str,
        name: &str,
        mut item: Item,
        early: Option<(Item, Arc<Durable>)>,
    ) {
        if let Some((_, durable)) = early {
            if !durable.wait().await {
                log::warn!(
                    "event {} could not be queued on disk; its file stays in the events directory to be accepted again",
                    item.event.event_id
                );
                self.pop(chat);
                return;
            }
        }
        let task = item.event.task_id.clone();
        let shown = self.progress.get(chat, &task);
        let now = clock::now_ms();
        if item.parts_sent > 0 {
            // Telegram took it before a restart: only the records are left.
            if let Some(&mid) = item.message_ids.last() {
                self.shown(chat, name, item, mid, now).await;
            }
            return;
        }
        if let Some(s) = &shown {
            if self.superseded(chat, &task) {
                item.message_ids = vec![s.message_id];
                self.finish(chat, name, item).await;
                return;
            }
            let min_ms = self.live.get().notifications.progress_min_edit_seconds * 1000;
            let due = s.edited_ms.saturating_add(min_ms);
            if now < due && clock::age_ms(s.edited_ms, now) < min_ms {
                // Wait for the pace; states arriving meanwhile replace it.
                if let Some(p) = self.chats.get_mut(chat).and_then(|l| l.front_mut()) {
                    p.not_before = due;
                    p.item = Some(item);
                }
                return;
            }
        }
        let mode = if item.plain {
            ParseMode::Plain
        } else {
            self.mode
        };
        let part = part(&item.event, mode, None);
        let silent = notify::silent(&item.event, &self.quiet(now), now);
        self.pacer.sent(chat, Instant::now());
        let api = self.api.clone();
        let to = chat.to_string();
        let editing = shown.as_ref().map(|s| s.message_id);
        let started = Instant::now();
        let result = crate::pool::unblock(move || match editing {
            Some(mid) => match api.edit_text(&to, mid, &part) {
                Ok(()) => Ok(mid),
                Err(e) if e.is_not_modified() => Ok(mid),
                Err(e) if e.is_message_gone() => {
                    log::info!(
                        "progress message {mid} in chat {to} is gone ({e}); sending a new one"
                    );
                    api.send_message(&to, &part, silent, false)
                }
                Err(e) => Err(e),
            },
            None => api.send_message(&to, &part, silent, false),
        })
        .await;
        self.stats.telegram_request.observe(started.elapsed());
        match result {
            Ok(mid) => {
                Stats::bump(&self.stats.messages_sent);
                item.parts_sent = 1;
                item.message_ids = vec![mid];
                // Telegram's answer goes to disk before anything else.
                if let Err(e) = self.record(chat, &item, &[(0, mid)]) {
                    self.stall(chat, Some(item), vec![(0, mid)], &e);
                    return;
                }
                self.shown(chat, name, item, mid, clock::now_ms()).await;
            }
            Err(e) => self.failed(chat, name, item, e),
        }
    }

    /// After Telegram showed progress `item` as `mid`: the progress record,
    /// then the usual hand-off.
    async fn shown(&mut self, chat: &str, name: &str, item: Item, mid: i64, now: u64) {
        let s = Shown {
            chat: chat.to_string(),
            message_id: mid,
            edited_ms: now,
            event: item.event.clone(),
        };
        if let Err(e) = self.progress.put(&s) {
            self.stall(chat, Some(item), Vec::new(), &e);
            return;
        }
        self.finish(chat, name, item).await;
    }

    /// The last edit of a task's progress message, before its terminal
    /// event is sent; false when the task has none in this chat. Best
    /// effort: the terminal message itself is what notifies.
    pub(crate) async fn end_progress(&mut self, chat: &str, item: &Item) -> bool {
        let Some(s) = self.progress.get(chat, &item.event.task_id) else {
            return false;
        };
        let part = part(&s.event, self.mode, Some(&item.event));
        self.pacer.sent(chat, Instant::now());
        let api = self.api.clone();
        let to = chat.to_string();
        let mid = s.message_id;
        let result = crate::pool::unblock(move || api.edit_text(&to, mid, &part)).await;
        match result {
            Ok(()) => {}
            Err(e) if e.is_not_modified() || e.is_message_gone() => {}
            Err(e) => log::warn!(
                "cannot show the end of task {} on progress message {mid} in chat {chat}: {e}",
                item.event.task_id
            ),
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: &str, data: &str) -> Event {
        crate::event::parse(
            format!(r#"{{"type":"{kind}","title":"Copy","task_id":"t","data":{data}}}"#).as_bytes(),
            "now",
            || "e".into(),
        )
        .unwrap()
    }

    #[test]
    fn bars() {
        assert_eq!(
            bar(&ev("task_progress", r#"{"percentage":40}"#)).unwrap(),
            "▓▓▓▓░░░░░░ 40%"
        );
        assert_eq!(
            bar(&ev("task_progress", r#"{"current":3,"total":4}"#)).unwrap(),
            "▓▓▓▓▓▓▓▓░░ 75% (3/4)"
        );
        assert_eq!(
            bar(&ev("task_progress", r#"{"percentage":250}"#)).unwrap(),
            "▓▓▓▓▓▓▓▓▓▓ 100%"
        );
        assert!(bar(&ev("task_progress", r#"{"current":3,"total":0}"#)).is_none());
        assert!(bar(&ev("task_progress", "{}")).is_none());
    }

    #[test]
    fn the_last_edit_says_how_it_ended() {
        let p = ev("task_progress", r#"{"percentage":60}"#);
        let done = part(&p, ParseMode::Plain, Some(&ev("task_completion", "{}")));
        assert!(
            done.text.contains("100%") && done.text.contains("Completed"),
            "{}",
            done.text
        );
        let failed = part(&p, ParseMode::Plain, Some(&ev("task_failed", "{}")));
        assert!(failed.text.contains("60%") && failed.text.contains("Failed"));
        assert!(part(&ev("task_progress", "{}"), ParseMode::Plain, None)
            .text
            .contains("Copy"));
    }
}
