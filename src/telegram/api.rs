//! A blocking Bot API client on ureq (rustls, ring).
//!
//! The bot token is part of every URL, so it is held here and nowhere else,
//! and every error text that leaves this module passes [`redact`]. Calls
//! block: the daemon runs them on threads of its own (`crate::pool`).

use std::time::Duration;

use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::telegram::render::Part;

pub struct Api {
    agent: ureq::Agent,
    base: String,
    token: String,
}

/// Replaces the token, and its bot-id-less secret half, wherever it appears.
pub fn redact(text: &str, token: &str) -> String {
    if token.is_empty() {
        return text.to_string();
    }
    let mut out = text.replace(token, "<token>");
    if let Some((_, secret)) = token.split_once(':') {
        if secret.len() >= 8 {
            out = out.replace(secret, "<token>");
        }
    }
    out
}

impl Api {
    pub fn new(api_url: &str, token: &str) -> Api {
        Api {
            agent: crate::net::agent(Duration::from_secs(60)),
            base: api_url.trim_end_matches('/').to_string(),
            token: token.to_string(),
        }
    }

    fn transport(&self, what: impl std::fmt::Display) -> Error {
        Error::Transport(redact(&what.to_string(), &self.token))
    }

    /// A POST to `method`, given up after `timeout`.
    fn post(
        &self,
        method: &str,
        timeout: Duration,
    ) -> ureq::RequestBuilder<ureq::typestate::WithBody> {
        let url = format!("{}/bot{}/{method}", self.base, self.token);
        self.agent
            .post(&url)
            .config()
            .timeout_global(Some(timeout))
            .build()
    }

    /// Calls `method` with JSON `params`; returns the `result` on `ok: true`.
    pub fn call(&self, method: &str, params: &Value, timeout: Duration) -> Result<Value> {
        let body = serde_json::to_vec(params).unwrap_or_default();
        let resp = self
            .post(method, timeout)
            .header("content-type", "application/json")
            .send(&body[..])
            .map_err(|e| self.transport(e))?;
        self.answer(method, resp)
    }

    /// Reads the Bot API's envelope: the `result` on `ok: true`, else the
    /// error with Telegram's code, description and `retry_after`.
    fn answer(&self, method: &str, mut resp: ureq::http::Response<ureq::Body>) -> Result<Value> {
        let status = resp.status().as_u16();
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(8 << 20)
            .read_to_vec()
            .map_err(|e| self.transport(e))?;
        let mut answer: Value = match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            Err(_) if status >= 400 => {
                return Err(Error::Telegram {
                    status,
                    description: format!("{method}: an answer that is not the Bot API's JSON"),
                    retry_after: None,
                })
            }
            Err(_) => return Err(self.transport(format!("{method}: an answer that is not JSON"))),
        };
        if answer["ok"].as_bool() == Some(true) {
            return Ok(answer["result"].take());
        }
        let code = answer["error_code"]
            .as_u64()
            .map(|c| c as u16)
            .unwrap_or(status);
        Err(Error::Telegram {
            status: if code == 0 { status } else { code },
            description: redact(
                answer["description"].as_str().unwrap_or("no description"),
                &self.token,
            ),
            retry_after: answer["parameters"]["retry_after"].as_u64(),
        })
    }

    /// Calls `method` with a `multipart/form-data` body streamed from
    /// `body` (see `upload`): `len` bytes, known up front, so the request
    /// has a Content-Length and memory does not grow with the files.
    pub fn call_form(
        &self,
        method: &str,
        content_type: &str,
        len: u64,
        body: impl std::io::Read + Send + 'static,
        timeout: Duration,
    ) -> Result<Value> {
        let resp = self
            .post(method, timeout)
            .header("content-type", content_type)
            .header("content-length", len.to_string())
            .send(ureq::SendBody::from_owned_reader(body))
            .map_err(|e| self.transport(e))?;
        self.answer(method, resp)
    }

    /// Streams the file Telegram keeps at `file_path` (from `getFile`) into
    /// `sink`, refusing more than `max` bytes. Its URL holds the token: it
    /// is never logged, and errors are redacted.
    pub fn fetch_file(
        &self,
        file_path: &str,
        max: u64,
        timeout: Duration,
        sink: impl FnOnce(&mut dyn std::io::Read) -> Result<u64>,
    ) -> Result<u64> {
        let url = format!("{}/file/bot{}/{file_path}", self.base, self.token);
        let mut resp = self
            .agent
            .get(&url)
            .config()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .build()
            .call()
            .map_err(|e| self.transport(e))?;
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(Error::Telegram {
                status,
                description: "the file download was refused".into(),
                retry_after: None,
            });
        }
        // A bound the caller can see (more than `max` read means too big),
        // not ureq's limit, whose error would look like a network failure.
        let mut reader = std::io::Read::take(resp.body_mut().as_reader(), max);
        sink(&mut reader).map_err(|e| match e {
            Error::Io { path, source } if source.kind() == std::io::ErrorKind::Other => Error::Io {
                path,
                source: std::io::Error::other(redact(&source.to_string(), &self.token)),
            },
            e => e,
        })
    }

    /// Sends one message part; returns Telegram's `message_id`. `silent`
    /// delivers it without sound; `force_reply` opens the reply field
    /// (`expects_reply`) when the part has no buttons.
    pub fn send_message(
        &self,
        chat: &str,
        part: &Part,
        silent: bool,
        force_reply: bool,
    ) -> Result<i64> {
        let mut params = json!({
            "chat_id": chat_param(chat),
            "text": part.text,
            "link_preview_options": {"is_disabled": true},
        });
        if let Some(t) = thread_of(chat) {
            params["message_thread_id"] = json!(t);
        }
        if silent {
            params["disable_notification"] = json!(true);
        }
        if let Some(mode) = part.parse_mode {
            params["parse_mode"] = json!(mode);
        }
        if let Some(markup) = part.reply_markup() {
            params["reply_markup"] = markup;
        } else if force_reply {
            params["reply_markup"] = json!({"force_reply": true});
        }
        let result = self.call("sendMessage", &params, Duration::from_secs(30))?;
        result["message_id"]
            .as_i64()
            .ok_or_else(|| self.transport("sendMessage: the answer has no message_id"))
    }
}

impl Api {
    /// Replaces the text of message `message_id` in `chat` (its buttons go).
    pub fn edit_text(&self, chat: &str, message_id: i64, part: &Part) -> Result<()> {
        let mut params = json!({
            "chat_id": chat_param(chat),
            "message_id": message_id,
            "text": part.text,
            "link_preview_options": {"is_disabled": true},
        });
        if let Some(mode) = part.parse_mode {
            params["parse_mode"] = json!(mode);
        }
        self.call("editMessageText", &params, Duration::from_secs(30))
            .map(|_| ())
    }
}

/// Numeric chat ids go as numbers, `@channel` names as strings; a forum
/// topic target `"CHAT/TOPIC"` names its chat.
pub fn chat_param(chat: &str) -> Value {
    let chat = base_chat(chat);
    chat.parse::<i64>()
        .map(Value::from)
        .unwrap_or_else(|_| json!(chat))
}

/// The chat of a target, without its forum topic: what updates name.
pub fn base_chat(chat: &str) -> &str {
    chat.split_once('/').map_or(chat, |(c, _)| c)
}

/// The forum topic (`message_thread_id`) of a `"CHAT/TOPIC"` target.
pub fn thread_of(chat: &str) -> Option<i64> {
    chat.split_once('/').and_then(|(_, t)| t.parse().ok())
}

/// Same chat, whatever the topic: message ids are per chat.
pub fn same_chat(a: &str, b: &str) -> bool {
    base_chat(a) == base_chat(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_covers_both_halves() {
        let t = "123456:AAHsecretsecret";
        let s = redact(
            "GET https://x/bot123456:AAHsecretsecret/getMe and AAHsecretsecret",
            t,
        );
        assert!(!s.contains("AAHsecret"), "{s}");
    }
}
