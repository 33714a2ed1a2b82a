//! The tools of CONTRACT section 8, with the original system's argument
//! names: their JSON Schemas, argument checks, and what each one does.
//!
//! Send tools write event files with [`event::submit`], the writer
//! `cctelegram send` uses, and return the event id at once: the file waits
//! in `events_dir` whether or not a daemon runs, so nothing here blocks on
//! Telegram. Arguments that do not fit the schema are -32602; a tool that
//! cannot do its work is `isError` with what to do about it.

use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use super::answers::{self, Answer};
use super::wait::{Cancel, Watch, Woke, MAX_WAIT};
use super::{bridge, Ctx};
use crate::event::{self, Draft, CATEGORIES, TYPES};

/// Why a call did not produce a result.
#[derive(Debug)]
pub enum Failure {
    /// The arguments do not fit the schema: JSON-RPC -32602.
    BadArgs(String),
    /// The tool ran and failed: `isError: true` with this text.
    Failed(String),
    /// `notifications/cancelled` ended it: no answer is sent.
    Cancelled,
}

impl From<crate::Error> for Failure {
    fn from(e: crate::Error) -> Failure {
        Failure::Failed(match &e {
            crate::Error::Io { source, .. }
                if source.kind() == std::io::ErrorKind::PermissionDenied =>
            {
                format!(
                    "{e}. On a device, add this user to the cctelegram group \
                     (usermod -aG cctelegram USER) and log in again"
                )
            }
            _ => e.to_string(),
        })
    }
}

type Out = Result<Value, Failure>;

/// The tools' names, descriptions and JSON Schemas, as `tools/list` shows
/// them: data, not code (as `json!` literals they cost several times their
/// size in the binary).
const TOOLS: &str = include_str!("tools.json");

/// The tools; `reply` only in channel mode.
pub fn list(channel: bool) -> Vec<Value> {
    let tools: Vec<Value> = serde_json::from_str(TOOLS).unwrap_or_default();
    tools
        .into_iter()
        .filter(|t| channel || t["name"] != "reply")
        .collect()
}

/// Typed access to one call's arguments; every miss is -32602 naming the field.
struct Args<'a> {
    tool: &'a str,
    m: &'a Map<String, Value>,
}

impl<'a> Args<'a> {
    fn bad(&self, why: String) -> Failure {
        Failure::BadArgs(format!("{}: {why}", self.tool))
    }

    fn only(&self, known: &[&str]) -> Result<(), Failure> {
        match self.m.keys().find(|k| !known.contains(&k.as_str())) {
            Some(k) => Err(self.bad(format!(
                "unknown argument \"{k}\"; it takes {}",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ))),
            None => Ok(()),
        }
    }

    fn opt_str(&self, k: &str) -> Result<Option<String>, Failure> {
        match self.m.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(self.bad(format!("\"{k}\" must be a string"))),
        }
    }

    fn req_str(&self, k: &str) -> Result<String, Failure> {
        match self.opt_str(k)? {
            Some(s) if !s.trim().is_empty() => Ok(s),
            Some(_) => Err(self.bad(format!("\"{k}\" is empty; give it a value"))),
            None => Err(self.bad(format!("\"{k}\" is required"))),
        }
    }

    fn opt_num(&self, k: &str, min: f64, max: f64) -> Result<Option<f64>, Failure> {
        match self.m.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => match n.as_f64() {
                Some(x) if x >= min && x <= max => Ok(Some(x)),
                _ => Err(self.bad(format!("\"{k}\" must be between {min} and {max}"))),
            },
            Some(_) => Err(self.bad(format!("\"{k}\" must be a number"))),
        }
    }

    fn req_num(&self, k: &str) -> Result<f64, Failure> {
        self.opt_num(k, f64::MIN, f64::MAX)?
            .ok_or_else(|| self.bad(format!("\"{k}\" is required")))
    }

    fn opt_list(&self, k: &str) -> Result<Option<Vec<String>>, Failure> {
        match self.m.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| match i.as_str() {
                    Some(s) if !s.trim().is_empty() => Ok(s.to_string()),
                    _ => Err(self.bad(format!("\"{k}\" must be a list of non-empty strings"))),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(self.bad(format!("\"{k}\" must be a list of strings"))),
        }
    }

    fn opt_obj(&self, k: &str) -> Result<Option<Map<String, Value>>, Failure> {
        match self.m.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(o)) => Ok(Some(o.clone())),
            Some(_) => Err(self.bad(format!("\"{k}\" must be an object"))),
        }
    }
}

/// Runs tool `name`. `cancel` ends a wait early.
pub fn call(ctx: &Ctx, name: &str, args: &Map<String, Value>, cancel: Option<&Cancel>) -> Out {
    let a = Args {
        tool: name,
        m: args,
    };
    match name {
        "send_telegram_event" => {
            a.only(&["type", "title", "description", "task_id", "source", "data"])?;
            let draft = Draft {
                kind: a.req_str("type")?,
                title: a.req_str("title")?,
                description: a.opt_str("description")?.unwrap_or_default(),
                task_id: a.opt_str("task_id")?,
                source: a.opt_str("source")?.unwrap_or_else(|| "claude-code".into()),
                data: a.opt_obj("data")?.unwrap_or_default(),
                ..Default::default()
            };
            send(ctx, draft)
        }
        "send_telegram_message" => {
            a.only(&["message"])?;
            send(
                ctx,
                message("Claude Code", a.req_str("message")?, "claude-code"),
            )
        }
        "reply" if ctx.channel => {
            a.only(&["text"])?;
            send(
                ctx,
                message("Claude", a.req_str("text")?, "claude-code-channel"),
            )
        }
        "send_task_completion" => {
            a.only(&[
                "task_id",
                "title",
                "results",
                "files_affected",
                "duration_ms",
            ])?;
            let mut data = Map::new();
            data.insert("status".into(), json!("completed"));
            let results = a.opt_str("results")?;
            if let Some(r) = &results {
                data.insert("results".into(), json!(r));
            }
            if let Some(f) = a.opt_list("files_affected")? {
                data.insert("files_affected".into(), json!(f));
            }
            if let Some(d) = a.opt_num("duration_ms", 0.0, f64::MAX)? {
                data.insert("duration_ms".into(), json!(d));
            }
            send(
                ctx,
                Draft {
                    kind: "task_completion".into(),
                    title: a.req_str("title")?,
                    description: results.unwrap_or_default(),
                    task_id: Some(a.req_str("task_id")?),
                    source: "claude-code".into(),
                    data,
                    ..Default::default()
                },
            )
        }
        "send_performance_alert" => {
            a.only(&["title", "current_value", "threshold", "severity"])?;
            let (current, threshold) = (a.req_num("current_value")?, a.req_num("threshold")?);
            let severity = a.opt_str("severity")?.unwrap_or_else(|| "medium".into());
            if !["low", "medium", "high", "critical"].contains(&severity.as_str()) {
                return Err(a.bad("\"severity\" must be low, medium, high or critical".into()));
            }
            let mut data = Map::new();
            data.insert("current_value".into(), json!(current));
            data.insert("threshold".into(), json!(threshold));
            data.insert("severity".into(), json!(severity));
            send(
                ctx,
                Draft {
                    kind: "performance_alert".into(),
                    title: a.req_str("title")?,
                    description: format!("Current value {current} against threshold {threshold}"),
                    source: "claude-code".into(),
                    data,
                    ..Default::default()
                },
            )
        }
        "send_approval_request" => {
            a.only(&["title", "description", "options", "timeout_minutes"])?;
            let title = a.req_str("title")?;
            let description = a.req_str("description")?;
            let options = a
                .opt_list("options")?
                .unwrap_or_else(|| vec!["Approve".into(), "Deny".into()]);
            if options.is_empty() || options.len() > 20 {
                return Err(a.bad("\"options\" must hold 1 to 20 labels".into()));
            }
            let timeout = a.opt_num("timeout_minutes", f64::MIN_POSITIVE, 10080.0)?;
            let mut out = approval(
                ctx,
                event::new_id(),
                title,
                description,
                options.clone(),
                timeout,
                "claude-code",
            )?;
            out["options"] = json!(options);
            out["timeout_minutes"] = json!(timeout);
            Ok(out)
        }
        "get_telegram_responses" => {
            a.only(&["limit"])?;
            let limit = a.opt_num("limit", 1.0, 1000.0)?.unwrap_or(10.0) as usize;
            let all = answers::all(&ctx.cfg.paths.responses_dir)?;
            let total = all.len();
            let responses: Vec<Value> = all.iter().rev().take(limit).map(Answer::to_json).collect();
            Ok(json!({"count": responses.len(), "total": total, "responses": responses}))
        }
        "process_pending_responses" => {
            a.only(&["since_minutes"])?;
            let since = a
                .opt_num("since_minutes", f64::MIN_POSITIVE, 525_600.0)?
                .unwrap_or(10.0);
            let cutoff = crate::clock::now_ms().saturating_sub((since * 60_000.0) as u64);
            let decisions: Vec<Value> = answers::all(&ctx.cfg.paths.responses_dir)?
                .iter()
                .rev()
                .filter(|r| r.written_ms >= cutoff)
                .filter_map(Answer::decision)
                .collect();
            Ok(json!({"since_minutes": since, "count": decisions.len(), "decisions": decisions}))
        }
        "clear_old_responses" => {
            a.only(&["older_than_hours"])?;
            let hours = a
                .opt_num("older_than_hours", 0.0, f64::MAX)?
                .unwrap_or(24.0);
            let dir = &ctx.cfg.paths.responses_dir;
            let (deleted, kept) = answers::clear_older_than(dir, hours, crate::clock::now_ms())
                .map_err(|e| match &e {
                    crate::Error::Io { source, .. }
                        if source.kind() == std::io::ErrorKind::PermissionDenied =>
                    {
                        Failure::Failed(format!(
                            "{e}. Only the daemon's user may delete response files in {} \
                             (the group may read them, not remove them); run this as that user",
                            dir.display()
                        ))
                    }
                    _ => Failure::from(e),
                })?;
            Ok(json!({"older_than_hours": hours, "deleted": deleted, "kept": kept}))
        }
        "get_bridge_status" => {
            a.only(&[])?;
            Ok(bridge::status(&ctx.cfg))
        }
        "list_event_types" => {
            a.only(&["category"])?;
            let category = a.opt_str("category")?;
            if let Some(c) = category.as_deref().filter(|c| !CATEGORIES.contains(c)) {
                return Err(a.bad(format!(
                    "unknown category \"{c}\"; one of {}",
                    CATEGORIES.join(", ")
                )));
            }
            Ok(event_types(category.as_deref()))
        }
        "wait_for_response" => {
            a.only(&["event_id", "timeout_seconds"])?;
            let id = a.req_str("event_id")?;
            let secs = a
                .opt_num("timeout_seconds", 0.0, MAX_WAIT.as_secs() as f64)?
                .unwrap_or(60.0);
            wait_for(ctx, &id, Duration::from_secs_f64(secs), cancel)
        }
        other => Err(Failure::BadArgs(format!(
            "unknown tool \"{other}\"; tools/list shows the tools"
        ))),
    }
}

/// The `event-types` listing, whole or for one category.
pub fn event_types(category: Option<&str>) -> Value {
    let types: Vec<Value> = TYPES
        .iter()
        .filter(|t| category.is_none_or(|c| t.category == c))
        .map(|t| json!({"type": t.name, "category": t.category, "description": t.description}))
        .collect();
    json!({"count": types.len(), "categories": CATEGORIES, "types": types})
}

fn message(title: &str, text: String, source: &str) -> Draft {
    Draft {
        kind: "info_notification".into(),
        title: title.into(),
        description: text,
        source: source.into(),
        ..Default::default()
    }
}

/// Writes an approval request whose event id is also its task id, so a
/// press's response file and an expiry both name the id returned here.
pub fn approval(
    ctx: &Ctx,
    id: String,
    title: String,
    description: String,
    options: Vec<String>,
    timeout_minutes: Option<f64>,
    source: &str,
) -> Out {
    let mut data = Map::new();
    data.insert("approval_prompt".into(), json!(description));
    data.insert("options".into(), json!(options));
    data.insert("requires_response".into(), json!(true));
    if let Some(t) = timeout_minutes {
        data.insert("timeout_minutes".into(), json!(t));
    }
    send(
        ctx,
        Draft {
            kind: "approval_request".into(),
            title,
            description,
            event_id: Some(id.clone()),
            task_id: Some(id),
            source: source.into(),
            data,
        },
    )
}

fn send(ctx: &Ctx, draft: Draft) -> Out {
    let dir = &ctx.cfg.paths.events_dir;
    // The daemon creates it at start; a writer that comes first makes it,
    // so the event waits for the daemon instead of being lost.
    crate::spool::ensure_dir(dir)?;
    let kind = draft.kind.clone();
    let task = draft.task_id.clone();
    let (id, file) = event::submit(dir, draft)?;
    log::info!("wrote {}", file.display());
    Ok(json!({
        "event_id": id,
        "task_id": task.unwrap_or_else(|| id.clone()),
        "type": kind,
        "file": file.display().to_string(),
        "message": format!("queued as {id}: the daemon sends it, or it waits in the events directory until one runs"),
    }))
}

/// The first response to `event_id`: one already there, else the next
/// that inotify shows, until `timeout` or a cancel.
fn wait_for(ctx: &Ctx, event_id: &str, timeout: Duration, cancel: Option<&Cancel>) -> Out {
    let dir = &ctx.cfg.paths.responses_dir;
    let start = Instant::now();
    let deadline = start + timeout;
    let answered = |r: Answer| {
        Ok(json!({
            "answered": true,
            "event_id": event_id,
            "message": format!("answered: {}", r.kind()),
            "response": r.to_json(),
            "waited_ms": start.elapsed().as_millis() as u64,
        }))
    };
    crate::spool::ensure_dir(dir)?;
    let mut watch = Watch::new(dir)?;
    let find = || -> Result<Option<Answer>, Failure> {
        Ok(answers::all(dir)?
            .into_iter()
            .find(|r| r.event_id() == Some(event_id)))
    };
    if let Some(r) = find()? {
        return answered(r);
    }
    loop {
        match watch.next(Some(deadline), cancel)? {
            Woke::Cancelled => {
                log::info!(
                    "wait_for_response {event_id}: cancelled after {} ms",
                    start.elapsed().as_millis()
                );
                return Err(Failure::Cancelled);
            }
            Woke::TimedOut => {
                return Ok(json!({
                    "answered": false,
                    "event_id": event_id,
                    "response": null,
                    "message": format!("no answer yet after {} s; call wait_for_response again to keep waiting",
                                       timeout.as_secs()),
                    "waited_ms": start.elapsed().as_millis() as u64,
                }))
            }
            Woke::Rescan => {
                if let Some(r) = find()? {
                    return answered(r);
                }
            }
            Woke::Names(names) => {
                for n in names {
                    if let Some(r) = answers::read(dir, &n.to_string_lossy()) {
                        if r.event_id() == Some(event_id) {
                            return answered(r);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tool_list_parses_and_names_every_category() {
        let tools = list(true);
        assert_eq!(tools.len(), 12);
        assert_eq!(list(false).len(), 11);
        let lt = tools
            .iter()
            .find(|t| t["name"] == "list_event_types")
            .unwrap();
        assert_eq!(
            lt["inputSchema"]["properties"]["category"]["enum"],
            json!(CATEGORIES)
        );
        for t in &tools {
            assert_eq!(t["inputSchema"]["type"], "object", "{t}");
            assert_eq!(t["outputSchema"]["type"], "object", "{t}");
        }
    }
}
