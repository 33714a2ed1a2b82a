//! `--channel`: the server as a Claude Code channel (the channels reference
//! at code.claude.com/docs/en/channels-reference: experimental capabilities
//! `claude/channel` and `claude/channel/permission`, the
//! `notifications/claude/channel` event with `content` and string-valued
//! `meta`, and the permission relay of `request_id` and `behavior`).
//!
//! Everything still goes through files: a new response file of type
//! `message` is a chat message for the session; a permission prompt becomes
//! an approval request event with Allow and Deny buttons, and the response
//! file of its press becomes the verdict. The daemon answers only allowed
//! users, so strangers never write a file; the check here is a second lock
//! for files written by something else.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::{json, Map, Value};

use super::answers::{self, Answer};
use super::protocol::notification;
use super::wait::{Watch, Woke};
use super::{tools, Ctx};
use crate::error::Result;

/// What Claude reads about the channel, in its system prompt.
pub const INSTRUCTIONS: &str = "Messages from the owner's Telegram chat arrive as \
<channel source=\"cctelegram\" user=\"...\" user_id=\"...\"> events (event_id is set when the \
message replies to one of your notifications). Answer with the reply tool; the chat sees nothing \
else you write. Use send_approval_request and wait_for_response to ask before risky steps.";

const ALLOW: &str = "Allow";
const DENY: &str = "Deny";

pub fn capabilities() -> Value {
    json!({"claude/channel": {}, "claude/channel/permission": {}})
}

/// Starts watching `responses_dir` for answers that arrive from now on.
pub fn start(ctx: Arc<Ctx>) -> Result<()> {
    let dir = ctx.cfg.paths.responses_dir.clone();
    crate::spool::ensure_dir(&dir)?;
    let mut watch = Watch::new(&dir)?;
    // Answers older than this process belong to earlier sessions.
    let mut seen: HashSet<String> = answers::all(&dir)?.into_iter().map(|a| a.file).collect();
    std::thread::spawn(move || loop {
        let names: Vec<String> = match watch.next(None, None) {
            Ok(Woke::Names(n)) => n.iter().map(|n| n.to_string_lossy().into_owned()).collect(),
            Ok(Woke::Rescan) => match answers::all(&dir) {
                Ok(all) => all.into_iter().map(|a| a.file).collect(),
                Err(e) => {
                    log::warn!("channel: {e}");
                    continue;
                }
            },
            Ok(_) => continue,
            Err(e) => {
                log::error!("channel: cannot watch the responses directory any longer: {e}");
                return;
            }
        };
        for name in names {
            if !answers::is_response_file(&name) || !seen.insert(name.clone()) {
                continue;
            }
            if let Some(a) = answers::read(&dir, &name) {
                on_answer(&ctx, &a);
            }
        }
    });
    Ok(())
}

fn on_answer(ctx: &Ctx, a: &Answer) {
    let b = &a.body;
    let user_id = b["user_id"].as_i64();
    let allowed = ctx.cfg.telegram.allowed_users.is_empty()
        || user_id.is_some_and(|u| ctx.cfg.telegram.allowed_users.contains(&u));
    match a.kind() {
        "message" if !allowed => log::warn!(
            "channel: {} is from user {:?}, who is not in allowed_users; not passed on",
            a.file,
            user_id
        ),
        "message" => {
            let mut meta = Map::new();
            let user = b["username"]
                .as_str()
                .or(b["first_name"].as_str())
                .unwrap_or("unknown");
            meta.insert("user".into(), json!(user));
            if let Some(u) = user_id {
                meta.insert("user_id".into(), json!(u.to_string()));
            }
            if let Some(e) = a.event_id() {
                meta.insert("event_id".into(), json!(e));
            }
            if let Some(t) = b["timestamp"].as_str() {
                meta.insert("ts".into(), json!(t));
            }
            let content = b["message_text"].as_str().unwrap_or("");
            ctx.send(&notification(
                "notifications/claude/channel",
                json!({"content": content, "meta": meta}),
            ));
        }
        "callback_query" if allowed => {
            let Some(event_id) = a.event_id() else { return };
            let request = ctx.lock_permissions().remove(event_id);
            if let Some(request_id) = request {
                let behavior = if b["option"].as_str() == Some(ALLOW) {
                    "allow"
                } else {
                    "deny"
                };
                log::info!(
                    "channel: permission {request_id}: {behavior} (from {})",
                    a.file
                );
                ctx.send(&notification(
                    "notifications/claude/channel/permission",
                    json!({"request_id": request_id, "behavior": behavior}),
                ));
            }
        }
        _ => {}
    }
}

/// `notifications/claude/channel/permission_request`: asks the chat with
/// Allow and Deny buttons. Claude Code keeps its own dialog open meanwhile,
/// so whichever answer comes first wins there.
pub fn permission_request(ctx: &Ctx, params: &Value) {
    let field = |k: &str| params[k].as_str().unwrap_or("").trim().to_string();
    let request_id = field("request_id");
    if request_id.is_empty() {
        log::warn!("channel: a permission_request without request_id; ignored");
        return;
    }
    let tool = field("tool_name");
    let mut description = field("description");
    let preview = field("input_preview");
    if !preview.is_empty() {
        description = format!("{description}\n\n{preview}");
    }
    if description.trim().is_empty() {
        description = format!("Claude wants to use {tool}");
    }
    let title = format!(
        "Allow {}?",
        if tool.is_empty() { "this tool" } else { &tool }
    );
    // Known before the file exists, so even the quickest press finds it.
    let event_id = crate::event::new_id();
    ctx.lock_permissions()
        .insert(event_id.clone(), request_id.clone());
    match tools::approval(
        ctx,
        event_id.clone(),
        title,
        description,
        vec![ALLOW.into(), DENY.into()],
        None,
        "claude-code-channel",
    ) {
        Ok(_) => log::info!("channel: permission {request_id} asked as {event_id}"),
        Err(e) => {
            ctx.lock_permissions().remove(&event_id);
            log::error!("channel: permission {request_id} not relayed: {e:?}");
        }
    }
}
