//! `cctelegram mcp`: a Model Context Protocol server on stdio (CONTRACT
//! section 8), so a coding agent sends events and reads answers.
//!
//! It is a writer and reader of the daemon's files, nothing more: events go
//! into `events_dir` as files, answers come from `responses_dir`, and it
//! never talks to Telegram (a bot token has one poller; two collide with
//! 409). That makes it work with no daemon yet running, and beside a daemon
//! under another user on the same directories.
//!
//! Threads, not the async executor: one client, a handful of requests, and
//! the only long call (`wait_for_response`) sleeps in `poll(2)` on inotify.
//! stdin is read on the main thread; each `tools/call` runs on its own
//! thread so a wait never holds up other requests; every line written to
//! stdout goes through one lock, and nothing else is ever printed there.

mod answers;
pub mod bridge;
mod channel;
pub mod protocol;
mod resources;
mod tools;
mod wait;

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{json, Value};

use crate::config::Config;
use crate::error::Result;
use protocol::{Incoming, RpcError};
use tools::Failure;
use wait::Cancel;

/// Marks a call ended by `notifications/cancelled` (the code the SDKs use).
const CANCELLED: i64 = -32800;

/// What every request handler shares.
pub struct Ctx {
    pub cfg: Config,
    pub channel: bool,
    out: Mutex<std::io::Stdout>,
    /// The version `initialize` agreed, for requests without `_meta`.
    negotiated: Mutex<Option<String>>,
    /// Running `tools/call`s that a `notifications/cancelled` can end, by
    /// their request id's JSON text.
    running: Mutex<HashMap<String, Arc<Cancel>>>,
    /// Permission prompts asked in the chat: event id -> request id.
    permissions: Mutex<HashMap<String, String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Ctx {
    /// Writes one message as one line.
    pub fn send(&self, msg: &Value) {
        let mut line = serde_json::to_vec(msg).unwrap_or_default();
        line.push(b'\n');
        let mut out = lock(&self.out);
        if let Err(e) = out.write_all(&line).and_then(|()| out.flush()) {
            log::debug!("stdout: {e}");
        }
    }

    fn lock_permissions(&self) -> MutexGuard<'_, HashMap<String, String>> {
        lock(&self.permissions)
    }

    fn capabilities(&self) -> Value {
        let mut c = json!({
            "tools": {"listChanged": false},
            "resources": {"subscribe": false, "listChanged": false},
        });
        if self.channel {
            c["experimental"] = channel::capabilities();
        }
        c
    }

    fn instructions(&self) -> &'static str {
        if self.channel {
            channel::INSTRUCTIONS
        } else {
            "Send notifications and approval requests to the owner's Telegram through the \
             cctelegram daemon. Send tools return an event_id at once; wait_for_response \
             returns the answer to one."
        }
    }
}

/// Serves stdin until it closes.
pub fn serve(cfg: Config, channel: bool) -> Result<()> {
    let ctx = Arc::new(Ctx {
        cfg,
        channel,
        out: Mutex::new(std::io::stdout()),
        negotiated: Mutex::new(None),
        running: Mutex::new(HashMap::new()),
        permissions: Mutex::new(HashMap::new()),
    });
    if channel {
        channel::start(ctx.clone())?;
    }
    log::info!(
        "MCP server on stdio{}: events to {}, responses from {}",
        if channel {
            " (Claude Code channel)"
        } else {
            ""
        },
        ctx.cfg.paths.events_dir.display(),
        ctx.cfg.paths.responses_dir.display()
    );
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let mut buf = Vec::new();
    let mut calls = Vec::new();
    loop {
        buf.clear();
        match input.read_until(b'\n', &mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => return Err(crate::Error::io("standard input", e)),
        }
        let incoming = match std::str::from_utf8(&buf) {
            Ok(line) if line.trim().is_empty() => continue,
            Ok(line) => protocol::parse_line(line.trim_end()),
            Err(_) => Incoming::Invalid {
                id: Value::Null,
                error: RpcError::new(protocol::PARSE_ERROR, "Parse error: the line is not UTF-8"),
            },
        };
        match incoming {
            Incoming::Invalid { id, error } => {
                log::warn!("refused a message: {}", error.message);
                ctx.send(&protocol::error_response(&id, &error));
            }
            Incoming::Response => {}
            Incoming::Notification { method, params } => notified(&ctx, &method, &params),
            Incoming::Request { id, method, params } => {
                if let Some(t) = request(&ctx, id, method, params) {
                    calls.push(t);
                }
                calls.retain(|t| !t.is_finished());
            }
        }
    }
    // The client has gone: waits end now, quick calls still write their
    // answer (a client that pipes requests and closes stdin gets them all).
    for c in lock(&ctx.running).values() {
        c.cancel();
    }
    for t in calls {
        let _ = t.join();
    }
    log::info!("standard input closed; MCP server done");
    Ok(())
}

fn notified(ctx: &Ctx, method: &str, params: &Value) {
    match method {
        "notifications/initialized" => log::debug!("client initialized"),
        "notifications/cancelled" => {
            let key = params["requestId"].to_string();
            if let Some(c) = lock(&ctx.running).get(&key) {
                log::info!("request {key} cancelled by the client");
                c.cancel();
            }
        }
        "notifications/claude/channel/permission_request" if ctx.channel => {
            channel::permission_request(ctx, params)
        }
        other => log::debug!("notification {other} ignored"),
    }
}

/// Answers a request; a `tools/call` runs on the thread returned.
fn request(
    ctx: &Arc<Ctx>,
    id: Value,
    method: String,
    params: Value,
) -> Option<std::thread::JoinHandle<()>> {
    let era = match protocol::era_of(&method, &params, lock(&ctx.negotiated).as_deref()) {
        Ok(e) => e,
        Err(e) => {
            ctx.send(&protocol::error_response(&id, &e));
            return None;
        }
    };
    if method == "tools/call" {
        let cancel = match Cancel::new() {
            Ok(c) => Arc::new(c),
            Err(e) => {
                let err = RpcError::new(protocol::INTERNAL_ERROR, e.to_string());
                ctx.send(&protocol::error_response(&id, &err));
                return None;
            }
        };
        let key = id.to_string();
        lock(&ctx.running).insert(key.clone(), cancel.clone());
        let ctx = ctx.clone();
        return Some(std::thread::spawn(move || {
            let answer = call_tool(&ctx, &params, &cancel);
            lock(&ctx.running).remove(&key);
            match answer {
                Ok(result) => ctx.send(&protocol::response(
                    &id,
                    protocol::finish(result, &era, false),
                )),
                // The client has stopped waiting; the spec asks for no answer.
                Err(e) if e.code == CANCELLED => {}
                Err(e) => ctx.send(&protocol::error_response(&id, &e)),
            }
        }));
    }
    let answer = match method.as_str() {
        "initialize" => {
            let wanted = params["protocolVersion"].as_str();
            let version = protocol::negotiate(wanted);
            *lock(&ctx.negotiated) = Some(version.to_string());
            log::info!(
                "initialize: client {} asked for {}, serving {version}",
                params["clientInfo"]["name"].as_str().unwrap_or("?"),
                wanted.unwrap_or("nothing")
            );
            Ok((
                json!({
                    "protocolVersion": version,
                    "capabilities": ctx.capabilities(),
                    "serverInfo": protocol::server_info(),
                    "instructions": ctx.instructions(),
                }),
                false,
            ))
        }
        "server/discover" => Ok((
            json!({
                "supportedVersions": protocol::MODERN_VERSIONS,
                "capabilities": ctx.capabilities(),
                "instructions": ctx.instructions(),
            }),
            true,
        )),
        "ping" => Ok((json!({}), false)),
        "tools/list" => Ok((json!({ "tools": tools::list(ctx.channel) }), true)),
        "resources/list" => Ok((resources::list(), true)),
        "resources/templates/list" => Ok((json!({"resourceTemplates": []}), true)),
        "resources/read" => match params["uri"].as_str() {
            Some(uri) => resources::read(ctx, uri).map(|r| (r, false)),
            None => Err(RpcError::params("resources/read needs \"uri\", a string")),
        },
        other => Err(RpcError::new(
            protocol::METHOD_NOT_FOUND,
            format!("Method not found: {other}"),
        )),
    };
    match answer {
        Ok((result, cacheable)) => ctx.send(&protocol::response(
            &id,
            protocol::finish(result, &era, cacheable),
        )),
        Err(e) => ctx.send(&protocol::error_response(&id, &e)),
    }
    None
}

/// `tools/call`: a result (possibly `isError`), or -32602 for arguments
/// that do not fit, or [`CANCELLED`], which is never sent.
fn call_tool(ctx: &Ctx, params: &Value, cancel: &Cancel) -> std::result::Result<Value, RpcError> {
    let Some(name) = params["name"].as_str() else {
        return Err(RpcError::params("tools/call needs \"name\", a string"));
    };
    let empty = serde_json::Map::new();
    let args = match &params["arguments"] {
        Value::Null => &empty,
        Value::Object(m) => m,
        _ => {
            return Err(RpcError::params(format!(
                "{name}: \"arguments\" must be an object"
            )))
        }
    };
    match tools::call(ctx, name, args, Some(cancel)) {
        Ok(structured) => {
            let text = serde_json::to_string(&structured).unwrap_or_default();
            Ok(json!({
                "content": [{"type": "text", "text": text}],
                "structuredContent": structured,
                "isError": false,
            }))
        }
        Err(Failure::BadArgs(why)) => Err(RpcError::params(why)),
        Err(Failure::Failed(why)) => {
            log::warn!("{name} failed: {why}");
            Ok(json!({"content": [{"type": "text", "text": why}], "isError": true}))
        }
        Err(Failure::Cancelled) => Err(RpcError::new(CANCELLED, "Request cancelled")),
    }
}
