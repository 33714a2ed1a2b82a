//! Files coming back: a photo or document an allowed user sends the bot is
//! fetched (`getFile`, then the file URL) into `responses_dir/files/`, and
//! its response file names the saved copy.
//!
//! The file URL holds the bot token, so it is built and used only inside
//! `Api::fetch_file` and never logged. The size is bounded twice: by what
//! `getFile` announces and by the bytes actually read. The saved name comes
//! from the update id and a cleaned-up original name, never a raw one.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::clock;
use crate::error::{Error, Result};
use crate::stats::Stats;
use crate::store;
use crate::telegram::api::{chat_param, Api};
use crate::telegram::poll::{update_source, Poller};
use crate::telegram::update::{File, Message};
use crate::webhook::payload;

/// Telegram lets bots download files up to 20 MB.
pub const DOWNLOAD_MAX: u64 = 20 * 1024 * 1024;

/// A name safe to create: letters, digits, `.`, `-` and `_`, no leading
/// dot, at most 80 characters; prefixed by the update id so names never
/// collide.
pub fn saved_name(update_id: i64, original: Option<&str>, photo: bool) -> String {
    let fallback = if photo { "photo.jpg" } else { "file" };
    let base = original.unwrap_or(fallback);
    let base = base.rsplit(['/', '\\']).next().unwrap_or(base);
    let clean: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let clean = clean.trim_start_matches('.');
    let clean: String = clean
        .chars()
        .rev()
        .take(80)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let clean = if clean.is_empty() {
        fallback.to_string()
    } else {
        clean
    };
    format!("{update_id}_{clean}")
}

/// Fetches `f` into `dir`; returns the saved name and its size.
fn fetch(api: &Api, f: &File, limit: u64, dir: &Path, name: &str) -> Result<u64> {
    let r = api.call(
        "getFile",
        &json!({"file_id": f.file_id}),
        Duration::from_secs(30),
    )?;
    let path = r["file_path"]
        .as_str()
        .filter(|p| !p.is_empty())
        .ok_or_else(|| Error::Transport("getFile: the answer has no file_path".into()))?;
    if let Some(size) = r["file_size"].as_u64() {
        if size > limit {
            return Err(too_big(size, limit));
        }
    }
    store::ensure_dir(dir)?;
    let timeout = Duration::from_secs(60 + limit / (64 * 1024));
    let n = api.fetch_file(path, limit + 1, timeout, |body| {
        store::write_from(dir, name, body, crate::responses::MODE)
    })?;
    store::sync_dir(dir)?;
    Ok(n)
}

fn too_big(size: u64, limit: u64) -> Error {
    Error::Telegram {
        status: 400,
        description: format!("the file is {size} bytes, over the limit of {limit} bytes"),
        retry_after: None,
    }
}

impl Poller {
    /// A photo or document from an allowed user (the caller checked):
    /// saved, then its `user_response` webhook and its response file. An
    /// error means the update is handled again later.
    pub async fn file_message(&self, m: &Message, f: &File) -> Result<()> {
        let update_id = m.update_id;
        if self.responses.is_handled(update_id) {
            return Ok(());
        }
        let limit = self
            .live
            .get()
            .limits
            .max_attachment_bytes
            .min(DOWNLOAD_MAX);
        let dir = self.responses.dir.join("files");
        let name = saved_name(update_id, f.file_name.as_deref(), f.photo);
        let fetched = match f.file_size {
            Some(s) if s as u64 > limit => Err(too_big(s as u64, limit)),
            _ => {
                let (api, f2, d, n) = (self.api.clone(), f.clone(), dir.clone(), name.clone());
                crate::pool::unblock(move || fetch(&api, &f2, limit, &d, &n)).await
            }
        };
        let (saved, size, problem) = match fetched {
            Ok(n) if n > limit => {
                let _ = std::fs::remove_file(dir.join(&name));
                (None, None, Some(too_big(n, limit).to_string()))
            }
            Ok(n) => (Some(dir.join(&name)), Some(n), None),
            Err(e) if e.is_retryable() => return Err(e),
            Err(e) => (None, None, Some(e.to_string())),
        };
        if let Some(p) = &problem {
            log::warn!("a file from user {} was not saved: {p}", m.from.id);
            let text = format!("The file was not saved: {p}.");
            let params = json!({"chat_id": chat_param(&m.chat), "text": text});
            let api = self.api.clone();
            let _ = crate::pool::unblock(move || {
                api.call("sendMessage", &params, Duration::from_secs(30))
            })
            .await;
        }
        let kind = if f.photo { "photo" } else { "document" };
        let caption = m.caption.clone().unwrap_or_default();
        let replied = m
            .reply_to
            .and_then(|r| self.spool.event_of_message(&m.chat, r));
        let event_id = replied.as_ref().map(|e| e.event_id.clone());
        let file_json = json!({
            "path": saved.as_ref().map(|p| p.display().to_string()),
            "file_name": f.file_name,
            "mime_type": f.mime_type,
            "file_size": size,
        });
        let user = payload::User {
            id: m.from.id,
            username: m.from.username.as_deref(),
            first_name: m.from.first_name.as_deref(),
            last_name: m.from.last_name.as_deref(),
        };
        let answer = payload::Answer {
            response_id: format!("resp_{update_id}"),
            event_id: event_id.as_deref(),
            message_id: m.message_id,
            text: &caption,
            chat_id: &m.chat,
            interaction: "message",
            callback_data: None,
        };
        let original = payload::Original {
            kind: replied.as_ref().map(|e| e.kind.as_str()),
            title: replied.as_ref().map(|e| e.title.as_str()),
            options: Vec::new(),
        };
        let mut p = payload::user_response(
            Some(&user),
            &answer,
            &original,
            clock::now_ms(),
            &self.outbox.info(),
        );
        // Extra fields: version 1 receivers ignore them.
        if let Some(msg) = p.pointer_mut("/response/message") {
            msg["file"] = file_json.clone();
            msg["message_type"] = json!(kind);
        }
        self.outbox
            .enqueue("user_response", &update_source(update_id), &p)?;
        let body: Value = json!({
            "timestamp": clock::iso8601(clock::now_ms()),
            "user_id": m.from.id,
            "username": m.from.username,
            "first_name": m.from.first_name,
            "message_text": caption,
            "message_type": kind,
            "response_type": "message",
            "event_id": event_id,
            "reply_to_message_id": m.reply_to,
            "chat_id": m.chat,
            "update_id": update_id,
            "file": file_json["path"],
            "file_name": f.file_name,
            "mime_type": f.mime_type,
            "file_size": size,
            "file_error": problem,
        });
        let written = self
            .responses
            .write("response", m.from.id, update_id, &body)?;
        Stats::bump(&self.stats.responses_written);
        log::info!("a {kind} from user {} recorded as {written}", m.from.id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_names_are_plain() {
        assert_eq!(saved_name(7, Some("../../etc/passwd"), false), "7_passwd");
        assert_eq!(saved_name(7, Some(".bashrc"), false), "7_bashrc");
        assert_eq!(
            saved_name(8, Some("my log (1).txt"), false),
            "8_my_log__1_.txt"
        );
        assert_eq!(saved_name(9, None, true), "9_photo.jpg");
        assert_eq!(saved_name(9, Some(".."), false), "9_file");
    }
}
