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
//! pure ([`part`], [`bar`]); this module holds no loop of its own.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::ParseMode;
use crate::error::Result;
use crate::event::Event;
use crate::spool::hex_digest;
use crate::store::Records;
use crate::telegram::render::{self, Part};

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
}

fn record_name(chat: &str, task_id: &str) -> String {
    format!(
        "{}.json",
        &hex_digest(&[chat.as_bytes(), b"\0", task_id.as_bytes()])[..32]
    )
}

impl Progress {
    pub fn open(state_dir: &std::path::Path) -> Result<Progress> {
        Ok(Progress {
            records: Records::open(state_dir, "progress")?,
        })
    }

    /// The message showing `task_id` in `chat`; a damaged record is moved
    /// aside and is `None` (the next state becomes a new message).
    pub fn get(&self, chat: &str, task_id: &str) -> Option<Shown> {
        match self.records.get(&record_name(chat, task_id)) {
            Ok(s) => s,
            Err(e) => {
                log::warn!("cannot read the progress record of task {task_id} in chat {chat}: {e}");
                None
            }
        }
    }

    pub fn put(&self, s: &Shown) -> Result<()> {
        self.records.put(&record_name(&s.chat, &s.event.task_id), s)
    }

    pub fn remove(&self, chat: &str, task_id: &str) -> Result<()> {
        self.records.remove(&record_name(chat, task_id))
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
