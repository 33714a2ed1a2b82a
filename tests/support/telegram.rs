//! A fake Telegram Bot API server for integration tests (std + serde_json).
//!
//! It listens on 127.0.0.1 only and answers `{url}/bot<TOKEN>/<method>` the
//! way Telegram does: same JSON envelope, HTTP statuses and error
//! descriptions for the mistakes a client can make (bad HTML/MarkdownV2, too
//! long text, bad buttons, unknown chat, edits of missing messages, "message
//! is not modified", 409 between pollers, 429 with `parameters.retry_after`).
//! Where it differs it is stricter, so a client that passes here should
//! pass against Telegram.
//!
//! Include it with `#[path = "support/telegram.rs"] mod telegram;` from a
//! test, or `#[path = "../../tests/support/telegram.rs"]` from examples/demo/: the
//! `#[path]` below resolves next to this file in both cases, because a file
//! loaded through `#[path]` owns its directory, like a `mod.rs`.
#![allow(dead_code)]

#[path = "http.rs"]
pub mod http;

use http::{Request, Response};
use serde_json::{json, Map, Value};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Methods the fake knows, spelled like Telegram (which matches them case-insensitively).
const METHODS: &str = "getMe deleteWebhook setMyCommands sendMessage getUpdates \
    answerCallbackQuery editMessageText editMessageReplyMarkup sendPhoto sendDocument \
    sendMediaGroup getFile";
/// Telegram's upload limits for bots: photos, other files; and downloads.
const PHOTO_MAX: usize = 10 << 20;
const DOCUMENT_MAX: usize = 50 << 20;
const DOWNLOAD_MAX: usize = 20 << 20;
const CONFLICT: &str = "Conflict: terminated by other getUpdates request; \
    make sure that only one bot instance is running";
/// Callback query ids start here so they cannot be mistaken for message ids.
const CALLBACK_ID_BASE: i64 = 4_000_000_000;

fn canonical(method: &str) -> Option<&'static str> {
    METHODS.split(' ').find(|m| m.eq_ignore_ascii_case(method))
}

/// An accepted sendMessage, as sent (`FakeTelegram::current` has its edited state).
#[derive(Debug, Clone)]
pub struct Sent {
    pub message_id: i64,
    /// "42", "-100123" or "@channel".
    pub chat_id: String,
    /// Visible text: markup removed, entities and escapes resolved, trimmed.
    pub text: String,
    pub raw_text: String,
    pub parse_mode: Option<String>,
    pub reply_markup: Option<Value>,
    pub at: Instant,
    /// Unix time, as in the Message object.
    pub date: i64,
    /// The forum topic it was sent into (`message_thread_id`).
    pub thread_id: Option<i64>,
    /// Sent with `disable_notification`: arrives without sound.
    pub silent: bool,
}

/// A file part of a multipart request.
#[derive(Debug, Clone)]
pub struct FilePart {
    pub field: String,
    pub file_name: String,
    pub content_type: String,
    pub bytes: Arc<Vec<u8>>,
}

/// A file the bot sent (sendPhoto, sendDocument, one photo of sendMediaGroup).
#[derive(Debug, Clone)]
pub struct Upload {
    pub method: String,
    pub chat_id: String,
    pub message_id: i64,
    pub file_name: String,
    pub bytes: Arc<Vec<u8>>,
    /// Visible caption (markup resolved).
    pub caption: Option<String>,
    pub media_group_id: Option<String>,
    pub reply_markup: Option<Value>,
}

/// One request to a method, recorded on arrival. `status` stays 0 while it
/// is in flight (a long poll), or for good if `set_down` dropped it (then
/// `description` says so).
#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    pub params: Value,
    pub status: u16,
    pub description: Option<String>,
    pub at: Instant,
}

/// An API error; the HTTP status is `code`.
#[derive(Debug)]
struct ApiErr {
    code: u16,
    description: String,
    retry_after: Option<u64>,
}

fn api_err(code: u16, description: &str) -> ApiErr {
    let description = description.to_string();
    ApiErr {
        code,
        description,
        retry_after: None,
    }
}

fn bad(what: &str) -> ApiErr {
    api_err(400, &format!("Bad Request: {what}"))
}

/// Everything the fake knows, as seen by `wait_until` conditions.
#[derive(Default)]
pub struct State {
    /// Accepted sendMessage calls, in order, as sent.
    pub messages: Vec<Sent>,
    /// Files the bot sent, in order.
    pub uploads: Vec<Upload>,
    /// Files users sent, by file_id: (file_path, bytes).
    user_files: HashMap<String, (String, Arc<Vec<u8>>)>,
    /// Requests for files under /file/bot<token>/, by file_path.
    pub downloads: Vec<String>,
    last_media_group: i64,
    /// Bot messages as they are now, after edits.
    pub current: HashMap<i64, Sent>,
    /// Every request, in arrival order.
    pub calls: Vec<Call>,
    /// Distinct tokens seen in URLs, valid or not, in order of first use.
    pub tokens: Vec<String>,
    /// The last commands accepted by setMyCommands.
    pub commands: Option<Value>,
    /// Updates not yet confirmed by a getUpdates offset.
    pub updates: VecDeque<Value>,
    /// Messages written by users (`user_message`): id -> (chat id, Message).
    user_messages: HashMap<i64, (String, Value)>,
    last_message_id: i64,
    last_update_id: i64,
    last_callback_id: i64,
    open_queries: HashSet<String>,
    bot_id: i64,
    faults: HashMap<String, VecDeque<ApiErr>>,
    unknown_chats: HashSet<String>,
    /// Well-formed tokens Telegram does not know (revoked, or never issued).
    refused_tokens: HashSet<String>,
    down: bool,
    slow: Duration,
    conflict: bool,
    stopped: bool,
    /// Remembered across calls, as Telegram does; empty means every kind.
    allowed_updates: Vec<String>,
    /// Per token, bumped by each getUpdates: a poll that sees it move was superseded.
    poll_generation: HashMap<String, u64>,
}

impl State {
    /// Requests to `method` (any case), answered or not, in arrival order.
    pub fn calls(&self, method: &str) -> Vec<Call> {
        let calls = self
            .calls
            .iter()
            .filter(|c| c.method.eq_ignore_ascii_case(method));
        calls.cloned().collect()
    }

    /// Requests to `method` being processed right now (e.g. long polls).
    pub fn in_flight(&self, method: &str) -> usize {
        let calls = self
            .calls
            .iter()
            .filter(|c| c.method.eq_ignore_ascii_case(method));
        calls
            .filter(|c| c.status == 0 && c.description.is_none())
            .count()
    }

    fn dump(&self) -> String {
        let (n, pending) = (self.messages.len(), self.updates.len());
        let mut s =
            format!("fake Telegram: {n} messages, {pending} pending updates, last calls:\n");
        for c in self.calls.iter().rev().take(12).rev() {
            let description = c.description.as_deref().unwrap_or("");
            s += &format!("  {} -> {} {description}\n", c.method, c.status);
        }
        for m in self.messages.iter().rev().take(5).rev() {
            let text: String = m.text.chars().take(80).collect();
            s += &format!("  message {} to {}: {text:?}\n", m.message_id, m.chat_id);
        }
        s
    }

    fn message_json(&self, m: &Sent) -> Value {
        let (id, from, chat) = (m.message_id, bot_user(self.bot_id), chat_json(&m.chat_id));
        let mut v =
            json!({"message_id": id, "from": from, "chat": chat, "date": m.date, "text": m.text});
        if let Some(t) = m.thread_id {
            (v["message_thread_id"], v["is_topic_message"]) = (json!(t), json!(true));
        }
        // Telegram only shows inline keyboards in the Message it returns.
        if let Some(k) = m
            .reply_markup
            .as_ref()
            .filter(|k| k.get("inline_keyboard").is_some())
        {
            v["reply_markup"] = k.clone();
        }
        v
    }

    fn chat_param(&self, p: &Value) -> Result<String, ApiErr> {
        let chat = match param(p, "chat_id") {
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::String(s)) => s.trim().to_string(),
            _ => return Err(bad("chat_id is empty")),
        };
        match chat.parse::<i64>() {
            _ if chat.is_empty() => Err(bad("chat_id is empty")),
            Ok(id) if !self.unknown_chats.contains(&id.to_string()) => Ok(id.to_string()),
            Err(_) if chat.starts_with('@') && !self.unknown_chats.contains(&chat) => Ok(chat),
            _ => Err(bad("chat not found")),
        }
    }

    fn by_user(&self, chat: &str, id: i64) -> bool {
        self.user_messages.get(&id).is_some_and(|(c, _)| c == chat)
    }

    fn by_bot(&self, chat: &str, id: i64) -> Option<&Sent> {
        self.current.get(&id).filter(|m| m.chat_id == chat)
    }

    fn send_message(&mut self, p: &Value) -> Result<Value, ApiErr> {
        let chat_id = self.chat_param(p)?;
        let (raw_text, text, parse_mode) = content(p)?;
        let reply_markup = markup(p)?;
        let thread_id = int_param(p, "message_thread_id");
        // Topics exist in supergroups only; elsewhere Telegram refuses them.
        if thread_id.is_some_and(|t| t <= 0 || !chat_id.starts_with('-')) {
            return Err(bad("message thread not found"));
        }
        let silent = matches!(param(p, "disable_notification"), Some(Value::Bool(true)))
            || str_param(p, "disable_notification").as_deref() == Some("true");
        let reply = json_param(p, "reply_parameters").ok().flatten();
        let reply = reply.and_then(|r| r.get("message_id")?.as_i64());
        if let Some(id) = int_param(p, "reply_to_message_id").or(reply) {
            if !self.by_user(&chat_id, id) && self.by_bot(&chat_id, id).is_none() {
                return Err(bad("message to be replied not found"));
            }
        }
        self.last_message_id += 1;
        let (message_id, at, date) = (self.last_message_id, Instant::now(), unix_now());
        let sent = Sent {
            message_id,
            chat_id,
            text,
            raw_text,
            parse_mode,
            reply_markup,
            at,
            date,
            thread_id,
            silent,
        };
        self.messages.push(sent.clone());
        self.current.insert(message_id, sent.clone());
        Ok(self.message_json(&sent))
    }

    /// sendPhoto and sendDocument (`field` "photo" or "document").
    fn send_file(
        &mut self,
        p: &Value,
        files: &[FilePart],
        method: &str,
        field: &str,
    ) -> Result<Value, ApiErr> {
        let chat_id = self.chat_param(p)?;
        let reply_markup = markup(p)?;
        let f = files
            .iter()
            .find(|f| f.field == field)
            .ok_or_else(|| bad(&format!("there is no {field} in the request")))?;
        let max = if field == "photo" {
            PHOTO_MAX
        } else {
            DOCUMENT_MAX
        };
        if f.bytes.len() > max {
            return Err(api_err(413, "Request Entity Too Large"));
        }
        let caption = caption(p)?;
        let id = self.upload(&chat_id, method, f, caption, None, reply_markup);
        let mut m = json!({"message_id": id, "chat": chat_json(&chat_id), "date": unix_now()});
        m[field] = json!({"file_id": format!("sent{id}"), "file_size": f.bytes.len()});
        Ok(m)
    }

    fn send_media_group(&mut self, p: &Value, files: &[FilePart]) -> Result<Value, ApiErr> {
        let chat_id = self.chat_param(p)?;
        let media = json_param(p, "media").map_err(|_| bad("can't parse media JSON"))?;
        let media = media
            .as_ref()
            .and_then(Value::as_array)
            .ok_or_else(|| bad("media is empty"))?;
        if !(2..=10).contains(&media.len()) {
            return Err(bad("wrong number of media items: must contain 2-10 items"));
        }
        let mut parts = Vec::new();
        for m in media {
            if m["type"] != "photo" {
                return Err(bad("the fake only takes photo albums"));
            }
            let name = m["media"]
                .as_str()
                .and_then(|s| s.strip_prefix("attach://"));
            let f = name
                .and_then(|n| files.iter().find(|f| f.field == n))
                .ok_or_else(|| bad("wrong file identifier/HTTP URL specified"))?;
            if f.bytes.len() > PHOTO_MAX {
                return Err(api_err(413, "Request Entity Too Large"));
            }
            parts.push((f.clone(), caption(m)?));
        }
        self.last_media_group += 1;
        let group = format!("group{}", self.last_media_group);
        let mut out = Vec::new();
        for (f, c) in parts {
            let id = self.upload(&chat_id, "sendMediaGroup", &f, c, Some(group.clone()), None);
            out.push(
                json!({"message_id": id, "chat": chat_json(&chat_id), "date": unix_now(),
                "media_group_id": group, "photo": [{"file_id": format!("sent{id}")}]}),
            );
        }
        Ok(Value::Array(out))
    }

    fn upload(
        &mut self,
        chat_id: &str,
        method: &str,
        f: &FilePart,
        caption: Option<String>,
        media_group_id: Option<String>,
        reply_markup: Option<Value>,
    ) -> i64 {
        self.last_message_id += 1;
        let message_id = self.last_message_id;
        let sent = Sent {
            message_id,
            chat_id: chat_id.to_string(),
            text: caption.clone().unwrap_or_default(),
            raw_text: String::new(),
            parse_mode: None,
            reply_markup: reply_markup.clone(),
            at: Instant::now(),
            date: unix_now(),
            // Uploads are not checked for sound or topic (yet).
            silent: false,
            thread_id: None,
        };
        self.current.insert(message_id, sent);
        self.uploads.push(Upload {
            method: method.to_string(),
            chat_id: chat_id.to_string(),
            message_id,
            file_name: f.file_name.clone(),
            bytes: f.bytes.clone(),
            caption,
            media_group_id,
            reply_markup,
        });
        message_id
    }

    fn get_file(&mut self, p: &Value) -> Result<Value, ApiErr> {
        let id = str_param(p, "file_id").unwrap_or_default();
        let (path, bytes) = self
            .user_files
            .get(&id)
            .ok_or_else(|| bad("invalid file_id"))?;
        if bytes.len() > DOWNLOAD_MAX {
            return Err(bad("file is too big"));
        }
        Ok(json!({"file_id": id, "file_unique_id": format!("u{id}"),
            "file_size": bytes.len(), "file_path": path}))
    }

    /// editMessageText (`with_text`) and editMessageReplyMarkup.
    fn edit(&mut self, p: &Value, with_text: bool) -> Result<Value, ApiErr> {
        let chat = self.chat_param(p)?;
        let id = int_param(p, "message_id");
        let id = id.ok_or_else(|| bad("message identifier is not specified"))?;
        let content = if with_text { Some(content(p)?) } else { None };
        let reply_markup = markup(p)?; // as on Telegram, leaving it out removes the keyboard
        if self.by_user(&chat, id) {
            return Err(bad("message can't be edited"));
        }
        let old = self
            .by_bot(&chat, id)
            .ok_or_else(|| bad("message to edit not found"))?;
        let mut new = Sent {
            reply_markup,
            ..old.clone()
        };
        if let Some((raw_text, text, parse_mode)) = content {
            (new.raw_text, new.text, new.parse_mode) = (raw_text, text, parse_mode);
        }
        let key = |m: &Sent| (m.text.clone(), m.raw_text.clone(), m.reply_markup.clone());
        if key(&new) == key(old) {
            return Err(bad(
                "message is not modified: specified new message content and reply \
                markup are exactly the same as a content and reply markup of the current message",
            ));
        }
        let result = self.message_json(&new);
        self.current.insert(id, new);
        Ok(result)
    }

    fn answer_callback(&mut self, p: &Value) -> Result<Value, ApiErr> {
        let id = str_param(p, "callback_query_id").unwrap_or_default();
        if !self.open_queries.remove(&id) {
            let why = "query is too old and response timeout expired or query ID is invalid";
            return Err(bad(why));
        }
        Ok(json!(true))
    }

    fn set_my_commands(&mut self, p: &Value) -> Result<Value, ApiErr> {
        let commands = json_param(p, "commands").ok().flatten();
        let Some(list) = commands.as_ref().and_then(Value::as_array) else {
            return Err(bad("can't parse commands JSON object"));
        };
        for c in list {
            let name = c["command"].as_str().unwrap_or("");
            let name = name.strip_prefix('/').unwrap_or(name);
            let ok = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_';
            if !(1..=32).contains(&name.len()) || !name.bytes().all(ok) {
                return Err(bad("BOT_COMMAND_INVALID"));
            }
            if c["description"]
                .as_str()
                .is_none_or(|d| d.trim().is_empty() || d.len() > 256)
            {
                return Err(bad("BOT_COMMAND_DESCRIPTION_INVALID"));
            }
        }
        self.commands = commands;
        Ok(json!(true))
    }

    /// Long-poll step: forget confirmed updates; the deliverable ones.
    fn take_updates(&mut self, offset: Option<i64>, limit: usize) -> Vec<Value> {
        match offset {
            // A negative offset keeps only the last -offset updates.
            Some(o) if o < 0 => {
                let excess = self.updates.len().saturating_sub(o.unsigned_abs() as usize);
                self.updates.drain(..excess);
            }
            Some(o) => self.updates.retain(|u| u["update_id"].as_i64() >= Some(o)),
            None => {}
        }
        let kinds = &self.allowed_updates;
        let wanted = |u: &&Value| {
            kinds.is_empty()
                || u.as_object()
                    .is_some_and(|o| o.keys().any(|k| kinds.contains(k)))
        };
        self.updates
            .iter()
            .filter(wanted)
            .take(limit)
            .cloned()
            .collect()
    }
}

struct Shared {
    state: Mutex<State>,
    /// Notified on every change: long polls and `wait_until` sleep on it.
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test must not turn every later call into a poison panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wait<'a>(&self, st: MutexGuard<'a, State>, until: Instant) -> MutexGuard<'a, State> {
        let timeout = until.saturating_duration_since(Instant::now());
        self.changed
            .wait_timeout(st, timeout)
            .unwrap_or_else(PoisonError::into_inner)
            .0
    }

    fn handle(&self, req: &Request) -> Response {
        let path = String::from_utf8_lossy(&http::percent_decode(&req.path, false)).into_owned();
        if let Some((token, file_path)) = path
            .strip_prefix("/file/bot")
            .and_then(|p| p.split_once('/'))
        {
            let mut st = self.lock();
            st.downloads.push(file_path.to_string());
            let found = st.user_files.values().find(|(p, _)| p == file_path);
            let body = found.map(|(_, b)| b.clone());
            drop(st);
            self.changed.notify_all();
            return match body {
                Some(b) if token_bot_id(token).is_some() => {
                    Response::new(200, "application/octet-stream", b.as_ref().clone())
                }
                _ => Response::new(
                    404,
                    "application/json",
                    r#"{"ok":false,"error_code":404,"description":"Not Found"}"#,
                ),
            };
        }
        let Some((token, method)) = path.strip_prefix("/bot").and_then(|p| p.split_once('/'))
        else {
            return reply(Err(api_err(404, "Not Found")));
        };
        let method = canonical(method).unwrap_or(method);
        let params = parse_params(req);
        let files = multipart_files(req);

        // Record on arrival, so that tests can see a long poll in flight.
        let mut st = self.lock();
        if !st.tokens.iter().any(|t| t == token) {
            st.tokens.push(token.to_string());
        }
        let (method_name, logged) = (
            method.to_string(),
            params.as_ref().map_or(Value::Null, Value::clone),
        );
        let call = Call {
            method: method_name,
            params: logged,
            status: 0,
            description: None,
            at: Instant::now(),
        };
        st.calls.push(call);
        let (index, slow, down) = (st.calls.len() - 1, st.slow, st.down);
        // A poll is newer than another if it arrived later: number it now, under this lock.
        let generation = st.poll_generation.entry(token.to_string()).or_default();
        *generation += u64::from(method == "getUpdates");
        let generation = *generation;
        if down {
            st.calls[index].description = Some("dropped: fake Telegram is down".to_string());
        }
        drop(st);
        self.changed.notify_all();
        if down {
            return Response::abort();
        }

        let outcome = params.and_then(|p| self.dispatch(token, method, &p, &files, generation));
        let mut st = self.lock();
        (st.calls[index].status, st.calls[index].description) = match &outcome {
            Ok(_) => (200, None),
            Err(e) => (e.code, Some(e.description.clone())),
        };
        drop(st);
        self.changed.notify_all();
        // The request has taken effect; only the answer is late, as on a slow network.
        std::thread::sleep(slow);
        reply(outcome)
    }

    fn dispatch(
        &self,
        token: &str,
        method: &str,
        p: &Value,
        files: &[FilePart],
        poll: u64,
    ) -> Result<Value, ApiErr> {
        let bot_id = token_bot_id(token).ok_or_else(|| api_err(401, "Unauthorized"))?;
        canonical(method).ok_or_else(|| api_err(404, "Not Found"))?;
        let mut st = self.lock();
        if st.refused_tokens.contains(token) {
            return Err(api_err(401, "Unauthorized"));
        }
        st.bot_id = bot_id;
        if let Some(fault) = st.faults.get_mut(method).and_then(VecDeque::pop_front) {
            return Err(fault);
        }
        match method {
            "getMe" => Ok(bot_user(bot_id)),
            "deleteWebhook" => Ok(json!(true)),
            "setMyCommands" => st.set_my_commands(p),
            "sendMessage" => st.send_message(p),
            "answerCallbackQuery" => st.answer_callback(p),
            "editMessageText" => st.edit(p, true),
            "editMessageReplyMarkup" => st.edit(p, false),
            "getUpdates" => self.get_updates(st, token, p, poll),
            "sendPhoto" => st.send_file(p, files, method, "photo"),
            "sendDocument" => st.send_file(p, files, method, "document"),
            "sendMediaGroup" => st.send_media_group(p, files),
            "getFile" => st.get_file(p),
            _ => unreachable!("{method} is in METHODS without a handler"),
        }
    }

    /// Long polling: answers at once if updates are queued, else waits up to `timeout`.
    fn get_updates(
        &self,
        mut st: MutexGuard<State>,
        token: &str,
        p: &Value,
        poll: u64,
    ) -> Result<Value, ApiErr> {
        if st.conflict {
            return Err(api_err(409, CONFLICT));
        }
        let timeout = Duration::from_secs(int_param(p, "timeout").unwrap_or(0).max(0) as u64);
        let limit = int_param(p, "limit").unwrap_or(100).clamp(1, 100) as usize;
        let offset = int_param(p, "offset");
        if let Ok(Some(Value::Array(kinds))) = json_param(p, "allowed_updates") {
            st.allowed_updates = kinds
                .iter()
                .filter_map(|k| Some(k.as_str()?.to_string()))
                .collect();
        }
        let deadline = Instant::now() + timeout;
        loop {
            // A newer poll on the same token supersedes this one, as on Telegram.
            if st.poll_generation[token] != poll || st.conflict {
                return Err(api_err(409, CONFLICT));
            }
            let ready = st.take_updates(offset, limit);
            if !ready.is_empty() || st.stopped || Instant::now() >= deadline {
                return Ok(Value::Array(ready));
            }
            st = self.wait(st, deadline);
        }
    }
}

/// The handle tests hold. Dropping it stops the server.
pub struct FakeTelegram {
    shared: Arc<Shared>,
    server: http::Server,
    pace: Arc<http::Pace>,
}

impl FakeTelegram {
    /// Starts a fake on 127.0.0.1 with a port chosen by the OS.
    pub fn start() -> FakeTelegram {
        let state = Mutex::new(State::default());
        let shared = Arc::new(Shared {
            state,
            changed: Condvar::new(),
        });
        let for_server = shared.clone();
        let pace = Arc::new(http::Pace::default());
        let server = http::Server::start_paced(
            Arc::new(move |req: &Request| for_server.handle(req)),
            pace.clone(),
        );
        FakeTelegram {
            shared,
            server,
            pace,
        }
    }

    /// Like "http://127.0.0.1:PORT"; clients append "/bot<TOKEN>/<method>".
    pub fn url(&self) -> String {
        self.server.url()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.lock()
    }

    pub fn messages(&self) -> Vec<Sent> {
        self.lock().messages.clone()
    }

    /// The message as it is now, after edits.
    pub fn current(&self, message_id: i64) -> Option<Sent> {
        self.lock().current.get(&message_id).cloned()
    }

    pub fn calls(&self, method: &str) -> Vec<Call> {
        self.lock().calls(method)
    }

    pub fn tokens_seen(&self) -> Vec<String> {
        self.lock().tokens.clone()
    }

    pub fn commands(&self) -> Option<Value> {
        self.lock().commands.clone()
    }

    /// Waits on the condition variable (no polling) until `cond` holds;
    /// panics after `deadline` with `what` and a dump of the state.
    pub fn wait_until(&self, deadline: Duration, what: &str, cond: impl Fn(&State) -> bool) {
        let end = Instant::now() + deadline;
        let mut st = self.lock();
        while !cond(&st) {
            if Instant::now() >= end {
                let dump = st.dump();
                drop(st);
                panic!("timed out after {deadline:?} waiting for {what}\n{dump}");
            }
            st = self.shared.wait(st, end);
        }
    }

    /// Like `wait_until`, but says whether `cond` held instead of panicking.
    pub fn try_wait_until(&self, deadline: Duration, cond: impl Fn(&State) -> bool) -> bool {
        let end = Instant::now() + deadline;
        let mut st = self.lock();
        while !cond(&st) {
            if Instant::now() >= end {
                return false;
            }
            st = self.shared.wait(st, end);
        }
        true
    }

    /// Waits until at least `n` messages were accepted; returns them all.
    pub fn wait_messages(&self, n: usize, deadline: Duration) -> Vec<Sent> {
        self.wait_until(deadline, &format!("{n} messages"), |s| {
            s.messages.len() >= n
        });
        self.messages()
    }

    /// The next `n` calls to `method` fail with this status and description
    /// (e.g. 500 "Internal Server Error"); `retry_after` goes to `parameters`.
    pub fn fail_next(
        &self,
        method: &str,
        n: usize,
        status: u16,
        description: &str,
        retry_after: Option<u64>,
    ) {
        let method = canonical(method).unwrap_or(method).to_string();
        let fault = || ApiErr {
            code: status,
            description: description.to_string(),
            retry_after,
        };
        self.lock()
            .faults
            .entry(method)
            .or_default()
            .extend((0..n).map(|_| fault()));
    }

    /// The next `n` calls to `method` get Telegram's flood-control 429.
    pub fn rate_limit(&self, method: &str, n: usize, retry_after_secs: u64) {
        let description = format!("Too Many Requests: retry after {retry_after_secs}");
        self.fail_next(method, n, 429, &description, Some(retry_after_secs));
    }

    /// Files the bot sent, in order.
    pub fn uploads(&self) -> Vec<Upload> {
        self.lock().uploads.clone()
    }

    /// Paths of file downloads requested (`/file/bot<token>/<path>`).
    pub fn downloads(&self) -> Vec<String> {
        self.lock().downloads.clone()
    }

    /// Reads request bodies at about `bytes_per_sec` (0: at full speed),
    /// as a slow uplink would, so that an upload can be caught in flight.
    pub fn set_upload_pace(&self, bytes_per_sec: u64) {
        use std::sync::atomic::Ordering;
        self.pace
            .bytes_per_sec
            .store(bytes_per_sec, Ordering::SeqCst);
    }

    /// Request body bytes read so far, all requests together.
    pub fn body_bytes_read(&self) -> u64 {
        self.pace.read.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// User `user` sends a file in `chat_id`: a `document`, or a `photo`
    /// (as Telegram does, a list of sizes, the largest last). Returns the
    /// message id.
    #[allow(clippy::too_many_arguments)]
    pub fn user_file(
        &self,
        user: i64,
        username: &str,
        chat_id: i64,
        photo: bool,
        file_name: &str,
        mime_type: &str,
        bytes: Vec<u8>,
        caption: Option<&str>,
    ) -> i64 {
        let mut st = self.lock();
        st.last_message_id += 1;
        let id = st.last_message_id;
        let file_id = format!("AgAD{id}file");
        let dir = if photo { "photos" } else { "documents" };
        let path = format!(
            "{dir}/file_{id}.{}",
            file_name.rsplit('.').next().unwrap_or("bin")
        );
        let size = bytes.len();
        st.user_files
            .insert(file_id.clone(), (path, Arc::new(bytes)));
        let chat = chat_json(&chat_id.to_string());
        let mut m = json!({"message_id": id, "from": user_json(user, username), "chat": chat,
            "date": unix_now()});
        if photo {
            let thumb = format!("{file_id}_thumb");
            m["photo"] = json!([
                {"file_id": thumb, "file_unique_id": "t", "width": 90, "height": 60, "file_size": 100},
                {"file_id": file_id, "file_unique_id": "u", "width": 1280, "height": 853, "file_size": size},
            ]);
        } else {
            m["document"] = json!({"file_id": file_id, "file_unique_id": "u",
                "file_name": file_name, "mime_type": mime_type, "file_size": size});
        }
        if let Some(c) = caption {
            m["caption"] = json!(c);
        }
        st.user_messages
            .insert(id, (chat_id.to_string(), m.clone()));
        drop(st);
        self.push_update(json!({ "message": m }));
        id
    }

    /// While down, each request is read and its connection closed without an answer.
    pub fn set_down(&self, down: bool) {
        self.lock().down = down;
    }

    /// Idle keep-alive connections are closed after `after` (60 s unless
    /// set), as servers close them between requests.
    pub fn close_idle_after(&self, after: Duration) {
        self.pace.idle_close_ms.store(
            after.as_millis() as u64,
            std::sync::atomic::Ordering::SeqCst,
        );
    }

    /// Connections accepted so far, and those closed for being idle.
    pub fn connections(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::SeqCst;
        (
            self.pace.accepted.load(SeqCst),
            self.pace.idle_closed.load(SeqCst),
        )
    }

    /// Delays every answer by `delay`, after the request took effect.
    pub fn set_slow(&self, delay: Duration) {
        self.lock().slow = delay;
    }

    /// While set, every getUpdates, including those in flight, answers 409 Conflict.
    pub fn set_conflict(&self, conflict: bool) {
        self.lock().conflict = conflict;
        self.shared.changed.notify_all();
    }

    /// Every call with this token answers 401 Unauthorized, as for a revoked token.
    pub fn refuse_token(&self, token: &str) {
        self.lock().refused_tokens.insert(token.to_string());
    }

    /// The message is deleted (by a person): edits of it are refused.
    pub fn delete_message(&self, message_id: i64) {
        self.lock().current.remove(&message_id);
    }

    /// Requests for this chat answer "chat not found".
    pub fn set_unknown_chat(&self, chat_id: impl std::fmt::Display) {
        self.lock().unknown_chats.insert(chat_id.to_string());
    }

    /// Queues an update; gives it the next `update_id` (from 1) if it has none.
    pub fn push_update(&self, mut update: Value) -> i64 {
        assert!(update.is_object(), "an update is a JSON object");
        let mut st = self.lock();
        let id = update["update_id"]
            .as_i64()
            .unwrap_or(st.last_update_id + 1);
        st.last_update_id = st.last_update_id.max(id);
        update["update_id"] = json!(id);
        st.updates.push_back(update);
        drop(st);
        self.shared.changed.notify_all();
        id
    }

    /// User `user` presses an inline button of `message_id`; returns the callback query id.
    pub fn press(
        &self,
        user: i64,
        username: &str,
        message_id: i64,
        chat_id: i64,
        data: &str,
    ) -> i64 {
        let mut st = self.lock();
        st.last_callback_id += 1;
        let query_id = CALLBACK_ID_BASE + st.last_callback_id;
        st.open_queries.insert(query_id.to_string());
        let chat = chat_id.to_string();
        let message = match st.by_bot(&chat, message_id) {
            Some(m) => st.message_json(m),
            // What Telegram sends for a message the bot can no longer access.
            None => json!({"chat": chat_json(&chat), "message_id": message_id, "date": 0}),
        };
        drop(st);
        let chat_instance = (chat_id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) as i64;
        self.push_update(json!({"callback_query": {
            "id": query_id.to_string(), "from": user_json(user, username), "message": message,
            "chat_instance": chat_instance.to_string(), "data": data,
        }}));
        query_id
    }

    /// User `user` writes `text` in `chat_id`; returns the new message id.
    pub fn user_message(
        &self,
        user: i64,
        username: &str,
        chat_id: i64,
        text: &str,
        reply_to: Option<i64>,
    ) -> i64 {
        let mut st = self.lock();
        st.last_message_id += 1;
        let (id, chat) = (st.last_message_id, chat_json(&chat_id.to_string()));
        let from = user_json(user, username);
        let mut m =
            json!({"message_id": id, "from": from, "chat": chat, "date": unix_now(), "text": text});
        if text.starts_with('/') {
            let length = text
                .split_whitespace()
                .next()
                .unwrap_or("")
                .encode_utf16()
                .count();
            m["entities"] = json!([{"offset": 0, "length": length, "type": "bot_command"}]);
        }
        if let Some(r) = reply_to {
            let mut quoted = match (st.current.get(&r), st.user_messages.get(&r)) {
                (Some(sent), _) => st.message_json(sent),
                (None, Some((_, m))) => m.clone(),
                (None, None) => json!({"message_id": r, "chat": chat, "date": 0}),
            };
            quoted.as_object_mut().unwrap().remove("reply_to_message"); // one level only
            m["reply_to_message"] = quoted;
        }
        st.user_messages
            .insert(id, (chat_id.to_string(), m.clone()));
        drop(st);
        self.push_update(json!({ "message": m }));
        id
    }
}

impl Drop for FakeTelegram {
    fn drop(&mut self) {
        self.lock().stopped = true; // long polls return [] at once
        self.shared.changed.notify_all();
        // then `server` is dropped: it stops accepting and joins its thread
    }
}

// ---- envelope and parameters ----

fn reply(outcome: Result<Value, ApiErr>) -> Response {
    let (status, body) = match outcome {
        Ok(result) => (200, json!({"ok": true, "result": result})),
        Err(e) => {
            let mut body = json!({"ok": false, "error_code": e.code, "description": e.description});
            if let Some(secs) = e.retry_after {
                body["parameters"] = json!({ "retry_after": secs });
            }
            (e.code, body)
        }
    };
    Response::new(status, "application/json", body.to_string())
}

/// Query string, then a JSON or form-encoded body (the body wins on duplicates).
fn parse_params(req: &Request) -> Result<Value, ApiErr> {
    let not_utf8 = || bad("strings must be encoded in UTF-8");
    let mut map = Map::new();
    let mut add_form = |s: &str| -> Result<(), ApiErr> {
        let pairs = http::parse_form(s).map_err(|_| not_utf8())?;
        map.extend(pairs.into_iter().map(|(k, v)| (k, Value::String(v))));
        Ok(())
    };
    add_form(&req.query)?;
    let content_type = req
        .header("content-type")
        .unwrap_or("")
        .to_ascii_lowercase();
    if content_type.starts_with("application/x-www-form-urlencoded") {
        add_form(std::str::from_utf8(&req.body).map_err(|_| not_utf8())?)?;
    } else if content_type.starts_with("multipart/form-data") {
        for part in multipart(req).map_err(|e| bad(&e))? {
            if part.file_name.is_none() {
                let v = String::from_utf8(part.bytes).map_err(|_| not_utf8())?;
                map.insert(part.field, Value::String(v));
            }
        }
    } else if content_type.starts_with("application/json") && !req.body.is_empty() {
        match serde_json::from_slice(&req.body) {
            Ok(Value::Object(body)) => map.extend(body),
            _ => return Err(bad("can't parse JSON object")),
        }
    } else if !req.body.is_empty() {
        return Err(bad(&format!(
            "the fake does not support Content-Type {content_type:?}"
        )));
    }
    Ok(Value::Object(map))
}

struct RawPart {
    field: String,
    file_name: Option<String>,
    content_type: String,
    bytes: Vec<u8>,
}

/// Splits a multipart/form-data body (RFC 7578) into its parts, strictly:
/// a missing boundary, a part without a name or a missing final boundary
/// is an error.
fn multipart(req: &Request) -> Result<Vec<RawPart>, String> {
    let ct = req.header("content-type").unwrap_or("");
    let boundary = ct
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))
        .map(|b| b.trim_matches('"').to_string())
        .ok_or("multipart without a boundary")?;
    let body = &req.body[..];
    let delim = format!("--{boundary}").into_bytes();
    let find = |from: usize, pat: &[u8]| {
        body[from..]
            .windows(pat.len())
            .position(|w| w == pat)
            .map(|i| i + from)
    };
    let mut at = find(0, &delim).ok_or("the body does not start with the boundary")?;
    let mut parts = Vec::new();
    loop {
        at += delim.len();
        if body[at..].starts_with(b"--") {
            return Ok(parts);
        }
        at += 2; // CRLF after the boundary
        let head_end = find(at, b"\r\n\r\n").ok_or("a part without headers")?;
        let head = String::from_utf8_lossy(&body[at..head_end]).into_owned();
        let mut next_delim = b"\r\n".to_vec();
        next_delim.extend_from_slice(&delim);
        let end =
            find(head_end + 4, &next_delim).ok_or("the body does not end with the boundary")?;
        let (mut field, mut file_name, mut content_type) = (None, None, String::new());
        for line in head.split("\r\n") {
            let lower = line.to_ascii_lowercase();
            if lower.starts_with("content-disposition:") {
                for attr in line.split(';').skip(1) {
                    let (k, v) = attr.trim().split_once('=').unwrap_or((attr.trim(), ""));
                    let v = v.trim_matches('"').to_string();
                    match k {
                        "name" => field = Some(v),
                        "filename" => file_name = Some(v),
                        _ => {}
                    }
                }
            } else if let Some(v) = lower.strip_prefix("content-type:") {
                content_type = v.trim().to_string();
            }
        }
        parts.push(RawPart {
            field: field.ok_or("a part without a name")?,
            file_name,
            content_type,
            bytes: body[head_end + 4..end].to_vec(),
        });
        at = end + 2;
    }
}

fn multipart_files(req: &Request) -> Vec<FilePart> {
    let multi = req
        .header("content-type")
        .is_some_and(|c| c.to_ascii_lowercase().starts_with("multipart/form-data"));
    if !multi {
        return Vec::new();
    }
    let parts = multipart(req).unwrap_or_default();
    parts
        .into_iter()
        .filter_map(|p| {
            Some(FilePart {
                file_name: p.file_name?,
                field: p.field,
                content_type: p.content_type,
                bytes: Arc::new(p.bytes),
            })
        })
        .collect()
}

/// A caption with its parse_mode; at most 1024 visible characters.
fn caption(p: &Value) -> Result<Option<String>, ApiErr> {
    let Some(raw) = str_param(p, "caption") else {
        return Ok(None);
    };
    let mode = str_param(p, "parse_mode").filter(|m| !m.is_empty());
    let visible = match mode.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None => Ok(raw),
        Some("html") => parse_html(&raw),
        Some("markdownv2") => parse_markdown_v2(&raw),
        Some(_) => return Err(bad("unsupported parse_mode")),
    }
    .map_err(|e| bad(&format!("can't parse entities: {e}")))?;
    if visible.encode_utf16().count() > 1024 {
        return Err(bad("message caption is too long"));
    }
    Ok(Some(visible))
}

fn param<'a>(p: &'a Value, key: &str) -> Option<&'a Value> {
    p.get(key).filter(|v| !v.is_null())
}

fn str_param(p: &Value, key: &str) -> Option<String> {
    match param(p, key)? {
        Value::String(s) => Some(s.clone()),
        v @ (Value::Number(_) | Value::Bool(_)) => Some(v.to_string()),
        _ => None,
    }
}

fn int_param(p: &Value, key: &str) -> Option<i64> {
    match param(p, key)? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A JSON-valued parameter: a JSON value, or its serialization in a string (forms).
fn json_param(p: &Value, key: &str) -> Result<Option<Value>, serde_json::Error> {
    match param(p, key) {
        Some(Value::String(s)) => serde_json::from_str(s).map(Some),
        v => Ok(v.cloned()),
    }
}

/// Validates text + parse_mode; returns (raw text, visible text, parse_mode).
fn content(p: &Value) -> Result<(String, String, Option<String>), ApiErr> {
    let raw = str_param(p, "text").unwrap_or_default();
    let mode = str_param(p, "parse_mode").filter(|m| !m.is_empty());
    let visible = match mode.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None => Ok(raw.clone()),
        Some("html") => parse_html(&raw),
        Some("markdownv2") => parse_markdown_v2(&raw),
        Some(_) => return Err(bad("unsupported parse_mode")), // the fake has no legacy Markdown
    };
    let visible = visible.map_err(|why| bad(&format!("can't parse entities: {why}")))?;
    if visible.trim().is_empty() {
        return Err(bad("message text is empty"));
    }
    // Strict: the untrimmed visible text, in UTF-16 code units like Telegram counts.
    if visible.encode_utf16().count() > 4096 {
        return Err(bad("message is too long"));
    }
    Ok((raw, visible.trim().to_string(), mode))
}

fn markup(p: &Value) -> Result<Option<Value>, ApiErr> {
    let not_json = || bad("can't parse reply keyboard markup JSON object");
    let markup = json_param(p, "reply_markup").map_err(|_| not_json())?;
    let Some(markup) = markup else {
        return Ok(None);
    };
    let rows = match markup.get("inline_keyboard") {
        _ if !markup.is_object() => return Err(not_json()),
        None => return Ok(Some(markup)),
        Some(Value::Array(rows)) if rows.iter().all(Value::is_array) => rows,
        Some(_) => {
            let why = "field \"inline_keyboard\" of the InlineKeyboardMarkup should be an Array of Arrays";
            return Err(bad(why));
        }
    };
    rows.iter()
        .flat_map(|row| row.as_array().unwrap())
        .try_for_each(check_button)?;
    Ok(Some(markup))
}

fn check_button(button: &Value) -> Result<(), ApiErr> {
    const ACTIONS: &str = "callback_data url web_app login_url switch_inline_query copy_text \
        switch_inline_query_current_chat switch_inline_query_chosen_chat callback_game pay";
    let unparsable = |why: &str| bad(&format!("can't parse inline keyboard button: {why}"));
    let mistyped = |field: &str| unparsable(&format!("Field \"{field}\" must be of type String"));
    let b = button.as_object();
    let b = b.ok_or_else(|| unparsable("InlineKeyboardButton must be an Object"))?;
    let text = b
        .get("text")
        .and_then(Value::as_str)
        .ok_or_else(|| mistyped("text"))?;
    if text.trim().is_empty() {
        return Err(bad("BUTTON_TEXT_EMPTY"));
    }
    // A field that is present but null is mistyped, as on Telegram.
    if let Some(data) = b.get("callback_data") {
        let data = data.as_str().ok_or_else(|| mistyped("callback_data"))?;
        if !(1..=64).contains(&data.len()) {
            return Err(bad("BUTTON_DATA_INVALID"));
        }
    }
    if let Some(url) = b.get("url") {
        let url = url.as_str().ok_or_else(|| mistyped("url"))?;
        if !["http://", "https://", "tg://"]
            .iter()
            .any(|s| url.starts_with(s))
        {
            return Err(bad("BUTTON_URL_INVALID"));
        }
    }
    if !ACTIONS.split_whitespace().any(|a| b.contains_key(a)) {
        return Err(unparsable(
            "Text buttons are unallowed in the inline keyboard",
        ));
    }
    Ok(())
}

// ---- objects ----

fn token_bot_id(token: &str) -> Option<i64> {
    let (id, secret) = token.split_once(':')?;
    let secret_ok = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
    let valid = !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) && !secret.is_empty();
    (valid && secret.bytes().all(secret_ok)).then(|| id.parse().unwrap_or(0))
}

fn bot_user(id: i64) -> Value {
    json!({
        "id": id, "is_bot": true, "first_name": "Fake Bot", "username": "fake_test_bot",
        "can_join_groups": true, "can_read_all_group_messages": false, "supports_inline_queries": false,
    })
}

fn user_json(id: i64, username: &str) -> Value {
    let mut u = json!({"id": id, "is_bot": false, "first_name": "User", "language_code": "en"});
    if !username.is_empty() {
        (u["first_name"], u["username"]) = (json!(username), json!(username));
    }
    u
}

/// Positive ids are private chats, negative ones supergroups, "@name" a channel.
fn chat_json(chat: &str) -> Value {
    match chat.parse::<i64>() {
        Ok(id) if id > 0 => json!({"id": id, "type": "private", "first_name": "User"}),
        Ok(id) => json!({"id": id, "type": "supergroup", "title": "Test group"}),
        Err(_) => json!({"id": -1_001_000_000_001_i64, "type": "channel", "username": &chat[1..]}),
    }
}

fn unix_now() -> i64 {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH);
    since_epoch.map_or(0, |d| d.as_secs() as i64)
}

// ---- parse modes: the visible text, or tdlib's reason for refusing ----

const HTML_TAGS: &str =
    "a b strong i em u ins s strike del span tg-spoiler tg-emoji code pre blockquote";

fn scan(b: &[u8], mut i: usize, while_: impl Fn(u8) -> bool) -> usize {
    while i < b.len() && while_(b[i]) {
        i += 1;
    }
    i
}

/// `s` starts with '&': the decoded character and the entity's length. Only
/// Telegram's four named entities and numeric ones exist.
fn html_entity(s: &str) -> Option<(char, usize)> {
    let named = [
        ("&lt;", '<'),
        ("&gt;", '>'),
        ("&amp;", '&'),
        ("&quot;", '"'),
    ];
    if let Some((name, c)) = named.iter().find(|(name, _)| s.starts_with(name)) {
        return Some((*c, name.len()));
    }
    let body = &s[..s.find(';')?];
    let (digits, radix) = match body.strip_prefix("&#x").or(body.strip_prefix("&#X")) {
        Some(hex) => (hex, 16),
        None => (body.strip_prefix("&#")?, 10),
    };
    if digits.is_empty() || digits.len() > 8 || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let c = char::from_u32(u32::from_str_radix(digits, radix).ok()?).filter(|&c| c != '\0')?;
    Some((c, body.len() + 1))
}

/// Appends `s[from..to]` with entities decoded; a bare '&' is an error.
fn decode_entities(s: &str, from: usize, to: usize, out: &mut String) -> Result<(), String> {
    let mut i = from;
    while i < to {
        let (c, len) = match s.as_bytes()[i] {
            b'&' => {
                html_entity(&s[i..]).ok_or(format!("Unsupported HTML entity at byte offset {i}"))?
            }
            _ => s[i..].chars().next().map(|c| (c, c.len_utf8())).unwrap(),
        };
        out.push(c);
        i += len;
    }
    Ok(())
}

fn parse_html(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let (mut out, mut open, mut i) = (String::new(), Vec::<String>::new(), 0);
    while i < b.len() {
        let start = i;
        if b[i] != b'<' {
            i = scan(b, i, |c| c != b'<');
            decode_entities(s, start, i, &mut out)?;
        } else if b.get(i + 1) == Some(&b'/') {
            let name_end = scan(b, i + 2, |c| c.is_ascii_alphanumeric() || c == b'-');
            let name = s[i + 2..name_end].to_ascii_lowercase();
            i = scan(b, name_end, |c| c.is_ascii_whitespace()) + 1;
            match open.pop() {
                _ if b.get(i - 1) != Some(&b'>') => {
                    return Err(format!("Unclosed end tag at byte offset {start}"))
                }
                None => return Err(format!("Unexpected end tag at byte offset {start}")),
                Some(o) if o != name => {
                    let expected = format!("expected \"</{o}>\", found \"</{name}>\"");
                    return Err(format!(
                        "Unmatched end tag at byte offset {start}, {expected}"
                    ));
                }
                Some(_) => {}
            }
        } else {
            let name;
            (name, i) = start_tag(s, i)?;
            open.push(name);
        }
    }
    match open.last() {
        Some(o) => Err(format!(
            "Can't find end tag corresponding to start tag \"{o}\""
        )),
        None => Ok(out),
    }
}

/// The start tag at `start` (a '<'): its lowercased name and the index after its '>'.
fn start_tag(s: &str, start: usize) -> Result<(String, usize), String> {
    let (b, space) = (s.as_bytes(), |c: u8| c.is_ascii_whitespace());
    let unclosed = || format!("Unclosed start tag at byte offset {start}");
    let name_end = scan(b, start + 1, |c| c.is_ascii_alphanumeric() || c == b'-');
    let name = s[start + 1..name_end].to_ascii_lowercase();
    if !HTML_TAGS.split(' ').any(|t| t == name) {
        return Err(format!(
            "Unsupported start tag \"{name}\" at byte offset {start}"
        ));
    }
    let (mut attrs, mut i) = (HashMap::new(), name_end);
    loop {
        i = scan(b, i, space);
        match b.get(i) {
            None => return Err(unclosed()),
            Some(b'>') => break,
            Some(_) => {}
        }
        let attr_end = scan(b, i, |c| {
            c.is_ascii_alphanumeric() || c == b'-' || c == b'_'
        });
        if attr_end == i {
            return Err(format!(
                "Empty attribute name in the tag \"{name}\" at byte offset {start}"
            ));
        }
        let (attr, mut value) = (s[i..attr_end].to_ascii_lowercase(), String::new());
        i = scan(b, attr_end, space);
        if b.get(i) == Some(&b'=') {
            i = scan(b, i + 1, space);
            let (from, to) = match b.get(i) {
                None => return Err(unclosed()),
                Some(&q @ (b'"' | b'\'')) => (i + 1, scan(b, i + 1, |c| c != q)),
                Some(_) => (i, scan(b, i, |c| !space(c) && c != b'>')),
            };
            decode_entities(s, from, to, &mut value)?;
            i = if from > i { to + 1 } else { to }; // past the closing quote
            if i > b.len() {
                return Err(unclosed());
            }
        }
        attrs.insert(attr, value); // unknown attributes are ignored, as by Telegram
    }
    let attr = |name: &str| attrs.get(name).map_or("", String::as_str);
    if name == "span" && attr("class") != "tg-spoiler" {
        return Err(format!(
            "Tag \"span\" must have class \"tg-spoiler\" at byte offset {start}"
        ));
    }
    let emoji_id = attr("emoji-id");
    if name == "tg-emoji" && (emoji_id.is_empty() || !emoji_id.bytes().all(|c| c.is_ascii_digit()))
    {
        return Err(format!(
            "Invalid custom emoji identifier specified at byte offset {start}"
        ));
    }
    Ok((name, i + 1))
}

/// MarkdownV2 markers, longest first, with tdlib's entity names for errors.
const MD_MARKS: [(&str, &str); 9] = [
    ("```", "Pre"),
    ("__", "Underline"),
    ("||", "Spoiler"),
    ("![", "CustomEmoji"),
    ("*", "Bold"),
    ("_", "Italic"),
    ("~", "Strikethrough"),
    ("[", "TextUrl"),
    ("`", "Code"),
];

/// MarkdownV2, after tdlib's parser: every reserved character outside markup
/// must be escaped with '\'; inside `code` and ```pre``` only '`' and '\'.
fn parse_markdown_v2(s: &str) -> Result<String, String> {
    let t = s.as_bytes();
    let at = |i: usize| t.get(i).copied().unwrap_or(0);
    let escaped = |i: usize| t[i] == b'\\' && (1..=126).contains(&at(i + 1));
    let (mut out, mut open, mut i) = (Vec::new(), Vec::<(&str, usize)>::new(), 0);
    while i < t.len() {
        let c = t[i];
        let in_code = matches!(open.last(), Some(("`" | "```", _)));
        let special: &[u8] = if in_code { b"`" } else { b"_*[]()~`>#+-=|{}.!" };
        let closes = |&&(mark, _): &&(&str, usize)| match mark {
            "[" | "![" => c == b']',
            "_" => c == b'_' && at(i + 1) != b'_',
            _ => t[i..].starts_with(mark.as_bytes()),
        };
        if escaped(i) {
            out.push(t[i + 1]);
            i += 2;
        } else if !special.contains(&c) {
            out.push(c);
            i += 1;
        } else if c == b'>' && (i == 0 || t[i - 1] == b'\n') {
            i += 1; // a blockquote line
        } else if let Some(&(mark, _)) = open.last().filter(closes) {
            open.pop();
            i += if mark.ends_with('[') { 1 } else { mark.len() };
            if mark.ends_with('[') && at(i) == b'(' {
                let url = i + 1;
                i = url;
                while i < t.len() && t[i] != b')' {
                    i += if escaped(i) { 2 } else { 1 };
                }
                if i == t.len() {
                    return Err(format!("Can't find end of a URL at byte offset {url}"));
                }
                i += 1;
            } else if mark == "![" {
                return Err(format!(
                    "Custom emoji entity must have a URL at byte offset {i}"
                ));
            }
        } else {
            let Some(&(mark, _)) = MD_MARKS
                .iter()
                .find(|(m, _)| t[i..].starts_with(m.as_bytes()))
            else {
                let c = c as char;
                return Err(format!(
                    "Character '{c}' is reserved and must be escaped with the preceding '\\'"
                ));
            };
            open.push((mark, i));
            i += mark.len();
            if mark == "```" {
                // An optional language up to the first whitespace, then one newline, are not text.
                let lang_end = scan(t, i, |c| !c.is_ascii_whitespace() && c != b'`');
                if lang_end > i && lang_end < t.len() && t[lang_end] != b'`' {
                    i = lang_end;
                }
                i += match (at(i), at(i + 1)) {
                    (b'\r', b'\n') | (b'\n', b'\r') => 2,
                    (b'\r' | b'\n', _) => 1,
                    _ => 0,
                };
            }
        }
    }
    if let Some((mark, start)) = open.pop() {
        let name = MD_MARKS
            .iter()
            .find(|(m, _)| *m == mark)
            .map_or("", |(_, n)| n);
        return Err(format!(
            "Can't find end of {name} entity at byte offset {start}"
        ));
    }
    String::from_utf8(out).map_err(|_| "Strings must be encoded in UTF-8".to_string())
}
