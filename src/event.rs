//! The event file schema (CONTRACT section 3): validation and defaults.
//!
//! Pure: bytes in, an [`Event`] or a reason a person can act on out. The
//! schema is the original system's, so files its MCP server writes work
//! unchanged; unknown types are not an error, they render generically.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One of the original system's event types, with the category its MCP
/// server listed it under (`types.ts`) and what it is for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EventType {
    pub name: &'static str,
    pub category: &'static str,
    pub description: &'static str,
}

/// The categories of [`TYPES`], in their order.
pub const CATEGORIES: &[&str] = &[
    "task_management",
    "code_operations",
    "file_system",
    "build_development",
    "git_operations",
    "system_monitoring",
    "user_interaction",
    "notifications",
    "integration",
    "custom",
];

/// The original system's 47 event types: the one list the daemon and the MCP
/// server share. Anything else is delivered as a generic notification.
pub const TYPES: &[EventType] = &[
    EventType {
        name: "task_completion",
        category: "task_management",
        description: "A task finished, with its results",
    },
    EventType {
        name: "task_started",
        category: "task_management",
        description: "A task began",
    },
    EventType {
        name: "task_failed",
        category: "task_management",
        description: "A task failed, with the error",
    },
    EventType {
        name: "task_progress",
        category: "task_management",
        description: "How far a task has got; one message, edited in place",
    },
    EventType {
        name: "task_cancelled",
        category: "task_management",
        description: "A task was cancelled",
    },
    EventType {
        name: "code_generation",
        category: "code_operations",
        description: "Code was written or generated",
    },
    EventType {
        name: "code_analysis",
        category: "code_operations",
        description: "Code was analysed",
    },
    EventType {
        name: "code_refactoring",
        category: "code_operations",
        description: "Code was refactored",
    },
    EventType {
        name: "code_review",
        category: "code_operations",
        description: "A code review finished",
    },
    EventType {
        name: "code_testing",
        category: "code_operations",
        description: "Code was tested",
    },
    EventType {
        name: "code_deployment",
        category: "code_operations",
        description: "Code was deployed",
    },
    EventType {
        name: "file_created",
        category: "file_system",
        description: "A file was created",
    },
    EventType {
        name: "file_modified",
        category: "file_system",
        description: "A file was changed",
    },
    EventType {
        name: "file_deleted",
        category: "file_system",
        description: "A file was deleted",
    },
    EventType {
        name: "directory_created",
        category: "file_system",
        description: "A directory was created",
    },
    EventType {
        name: "directory_deleted",
        category: "file_system",
        description: "A directory was deleted",
    },
    EventType {
        name: "build_started",
        category: "build_development",
        description: "A build began",
    },
    EventType {
        name: "build_completed",
        category: "build_development",
        description: "A build succeeded",
    },
    EventType {
        name: "build_failed",
        category: "build_development",
        description: "A build failed",
    },
    EventType {
        name: "test_suite_run",
        category: "build_development",
        description: "A test suite ran, with its counts",
    },
    EventType {
        name: "test_passed",
        category: "build_development",
        description: "A test passed",
    },
    EventType {
        name: "test_failed",
        category: "build_development",
        description: "A test failed",
    },
    EventType {
        name: "lint_check",
        category: "build_development",
        description: "A linter ran",
    },
    EventType {
        name: "type_check",
        category: "build_development",
        description: "A type checker ran",
    },
    EventType {
        name: "git_commit",
        category: "git_operations",
        description: "A commit was made",
    },
    EventType {
        name: "git_push",
        category: "git_operations",
        description: "Commits were pushed",
    },
    EventType {
        name: "git_merge",
        category: "git_operations",
        description: "Branches were merged",
    },
    EventType {
        name: "git_branch",
        category: "git_operations",
        description: "A branch was created or switched",
    },
    EventType {
        name: "git_tag",
        category: "git_operations",
        description: "A tag was created",
    },
    EventType {
        name: "pull_request_created",
        category: "git_operations",
        description: "A pull request was opened",
    },
    EventType {
        name: "pull_request_merged",
        category: "git_operations",
        description: "A pull request was merged",
    },
    EventType {
        name: "system_health",
        category: "system_monitoring",
        description: "The health of a system",
    },
    EventType {
        name: "performance_alert",
        category: "system_monitoring",
        description: "A measurement crossed its threshold",
    },
    EventType {
        name: "security_alert",
        category: "system_monitoring",
        description: "Something needs attention for security",
    },
    EventType {
        name: "error_occurred",
        category: "system_monitoring",
        description: "An error happened",
    },
    EventType {
        name: "resource_usage",
        category: "system_monitoring",
        description: "Memory, CPU or disk use",
    },
    EventType {
        name: "approval_request",
        category: "user_interaction",
        description: "A question with buttons; the press comes back as a response file",
    },
    EventType {
        name: "user_response",
        category: "user_interaction",
        description: "An answer from a person",
    },
    EventType {
        name: "command_executed",
        category: "user_interaction",
        description: "A command was run",
    },
    EventType {
        name: "progress_update",
        category: "notifications",
        description: "Progress of something; edited in place like task_progress",
    },
    EventType {
        name: "status_change",
        category: "notifications",
        description: "Something changed state",
    },
    EventType {
        name: "alert_notification",
        category: "notifications",
        description: "An alert",
    },
    EventType {
        name: "info_notification",
        category: "notifications",
        description: "Information, no action needed",
    },
    EventType {
        name: "api_call",
        category: "integration",
        description: "An API was called",
    },
    EventType {
        name: "webhook_received",
        category: "integration",
        description: "A webhook arrived",
    },
    EventType {
        name: "service_integration",
        category: "integration",
        description: "Something happened in a connected service",
    },
    EventType {
        name: "custom_event",
        category: "custom",
        description: "Anything else",
    },
];

/// Longest `event_id`, `task_id`, `source` or `type` we accept: ids end up
/// in callback data and logs, and no real writer needs more.
const MAX_ID: usize = 256;

/// A validated event with every default filled in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub event_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub source: String,
    pub timestamp: String,
    pub task_id: String,
    pub title: String,
    pub description: String,
    pub data: Map<String, Value>,
}

/// Why a file was refused; `Display` is the text of its `.error` file.
#[derive(Debug, Clone, PartialEq)]
pub enum Invalid {
    TooLarge {
        size: u64,
        limit: u64,
    },
    NotRegular(&'static str),
    NotUtf8 {
        offset: usize,
    },
    Json {
        line: usize,
        column: usize,
        problem: String,
    },
    NotObject(&'static str),
    Missing(&'static str),
    Empty(&'static str),
    WrongType {
        field: String,
        want: &'static str,
        found: &'static str,
    },
    TooLong {
        field: &'static str,
        limit: usize,
    },
    Unreadable(String),
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Invalid::TooLarge { size, limit } => write!(
                f,
                "the file is {size} bytes, over the limit of {limit} bytes; \
                 shorten the description or raise [limits] max_event_bytes"
            ),
            Invalid::NotRegular(what) => write!(
                f,
                "this is {what}, not a regular file; write each event as a plain file"
            ),
            Invalid::NotUtf8 { offset } => write!(
                f,
                "the file is not valid UTF-8 (first bad byte at offset {offset}); \
                 write event files as UTF-8 JSON"
            ),
            Invalid::Json {
                line,
                column,
                problem,
            } => write!(
                f,
                "not valid JSON at line {line}, column {column}: {problem}"
            ),
            Invalid::NotObject(found) => write!(
                f,
                "the file holds {found}; an event file holds one JSON object {{...}}"
            ),
            Invalid::Missing(field) => write!(
                f,
                "the required field \"{field}\" is missing; add it, e.g. \"{field}\": \"...\""
            ),
            Invalid::Empty(field) => write!(f, "the field \"{field}\" is empty; give it a value"),
            Invalid::WrongType { field, want, found } => {
                write!(f, "the field \"{field}\" must be {want}, but it is {found}")
            }
            Invalid::TooLong { field, limit } => write!(
                f,
                "the field \"{field}\" is longer than {limit} characters; shorten it"
            ),
            Invalid::Unreadable(why) => write!(f, "the file could not be read: {why}"),
        }
    }
}

/// What kind of JSON value `v` is, as a person says it.
pub fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Takes an optional string field; `null` counts as absent.
fn opt_string(
    obj: &mut Map<String, Value>,
    field: &'static str,
) -> Result<Option<String>, Invalid> {
    match obj.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(v) => Err(Invalid::WrongType {
            field: field.into(),
            want: "a string",
            found: kind_of(&v),
        }),
    }
}

fn id_field(obj: &mut Map<String, Value>, field: &'static str) -> Result<Option<String>, Invalid> {
    let v = opt_string(obj, field)?;
    match v {
        Some(s) if s.trim().is_empty() => Err(Invalid::Empty(field)),
        Some(s) if s.chars().count() > MAX_ID => Err(Invalid::TooLong {
            field,
            limit: MAX_ID,
        }),
        Some(s) if s.chars().any(char::is_control) => Err(Invalid::WrongType {
            field: field.into(),
            want: "text without control characters",
            found: "text with one",
        }),
        other => Ok(other),
    }
}

/// Validates one event file's bytes. `now` is the ISO timestamp to default
/// to and `new_id` makes an id when the file has neither `event_id` nor
/// `task_id`.
pub fn parse(bytes: &[u8], now: &str, new_id: impl FnOnce() -> String) -> Result<Event, Invalid> {
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    let text = std::str::from_utf8(bytes).map_err(|e| Invalid::NotUtf8 {
        offset: e.valid_up_to(),
    })?;
    let value: Value = serde_json::from_str(text).map_err(|e| Invalid::Json {
        line: e.line(),
        column: e.column(),
        problem: e
            .to_string()
            .split(" at line")
            .next()
            .unwrap_or_default()
            .to_string(),
    })?;
    let mut obj = match value {
        Value::Object(o) => o,
        other => return Err(Invalid::NotObject(kind_of(&other))),
    };
    let kind = id_field(&mut obj, "type")?.ok_or(Invalid::Missing("type"))?;
    let title = opt_string(&mut obj, "title")?.ok_or(Invalid::Missing("title"))?;
    if title.trim().is_empty() {
        return Err(Invalid::Empty("title"));
    }
    let event_id = id_field(&mut obj, "event_id")?;
    let task_id = id_field(&mut obj, "task_id")?;
    let source = id_field(&mut obj, "source")?;
    let timestamp = opt_string(&mut obj, "timestamp")?;
    let description = opt_string(&mut obj, "description")?;
    let data = match obj.remove("data") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m,
        Some(v) => {
            return Err(Invalid::WrongType {
                field: "data".into(),
                want: "an object",
                found: kind_of(&v),
            })
        }
    };
    check_options(&data)?;
    check_timeout(&data)?;
    let event_id = match (event_id, &task_id) {
        (Some(e), _) => e,
        (None, Some(t)) => t.clone(),
        (None, None) => new_id(),
    };
    Ok(Event {
        task_id: task_id.unwrap_or_else(|| event_id.clone()),
        event_id,
        kind,
        source: source.unwrap_or_else(|| "cctelegram".into()),
        timestamp: timestamp.unwrap_or_else(|| now.to_string()),
        title,
        description: description.unwrap_or_default(),
        data,
    })
}

/// Button labels must be text; a wrong `options` list is the writer's bug
/// and is refused rather than silently replaced by Approve/Deny.
fn check_options(data: &Map<String, Value>) -> Result<(), Invalid> {
    for field in ["options", "response_options"] {
        match data.get(field) {
            None | Some(Value::Null) => {}
            Some(Value::Array(items)) => {
                if items
                    .iter()
                    .any(|i| i.as_str().is_none_or(|s| s.trim().is_empty()))
                {
                    return Err(Invalid::WrongType {
                        field: format!("data.{field}"),
                        want: "a list of non-empty strings",
                        found: "a list with something else in it",
                    });
                }
                if items.len() > 20 {
                    return Err(Invalid::TooLong {
                        field: "data.options",
                        limit: 20,
                    });
                }
            }
            Some(v) => {
                return Err(Invalid::WrongType {
                    field: format!("data.{field}"),
                    want: "a list of strings",
                    found: kind_of(v),
                })
            }
        }
    }
    Ok(())
}

/// `data.timeout_minutes`, when given, is a number of minutes, 0 or more
/// (0: never expires). A huge one is clamped where it is used
/// (`approvals::MAX_TIMEOUT_MINUTES`); a meaningless one is refused.
fn check_timeout(data: &Map<String, Value>) -> Result<(), Invalid> {
    match data.get("timeout_minutes") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Number(n)) if n.as_f64().is_some_and(|m| m >= 0.0) => Ok(()),
        Some(Value::Number(_)) => Err(Invalid::WrongType {
            field: "data.timeout_minutes".into(),
            want: "a number of minutes, 0 or more",
            found: "a negative number",
        }),
        Some(v) => Err(Invalid::WrongType {
            field: "data.timeout_minutes".into(),
            want: "a number of minutes, 0 or more",
            found: kind_of(v),
        }),
    }
}

impl Event {
    pub fn is_approval(&self) -> bool {
        self.kind == "approval_request"
    }

    /// The approval buttons: `data.options`, else `data.response_options`,
    /// else Approve and Deny.
    pub fn options(&self) -> Vec<String> {
        for field in ["options", "response_options"] {
            if let Some(Value::Array(items)) = self.data.get(field) {
                let v: Vec<String> = items
                    .iter()
                    .filter_map(|i| i.as_str().map(str::to_string))
                    .collect();
                if !v.is_empty() {
                    return v;
                }
            }
        }
        vec!["Approve".into(), "Deny".into()]
    }

    pub fn str_data(&self, key: &str) -> Option<&str> {
        self.data
            .get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
    }
}

/// What a writer puts into a new event file; [`submit`] adds the rest.
#[derive(Debug, Clone, Default)]
pub struct Draft {
    pub kind: String,
    pub title: String,
    pub description: String,
    /// `None`: a fresh id.
    pub event_id: Option<String>,
    /// `None`: the same as the event id.
    pub task_id: Option<String>,
    pub source: String,
    pub data: Map<String, Value>,
}

/// Writes one event file atomically into `dir` and returns its event id
/// and the file's path:
/// the one writer that `cctelegram send` and `cctelegram mcp` share. It is
/// refused here when the daemon would refuse it, while the writer can still
/// see why, and it waits in `dir` whether or not a daemon is running.
pub fn submit(dir: &std::path::Path, draft: Draft) -> crate::Result<(String, std::path::PathBuf)> {
    use crate::Error;
    let id = draft.event_id.unwrap_or_else(new_id);
    let mut obj = serde_json::json!({
        "event_id": id,
        "type": draft.kind,
        "source": draft.source,
        "timestamp": crate::clock::iso8601(crate::clock::now_ms()),
        "title": draft.title,
        "description": draft.description,
        "data": draft.data,
    });
    if let Some(t) = draft.task_id {
        obj["task_id"] = t.into();
    }
    let bytes = serde_json::to_vec_pretty(&obj).unwrap_or_default();
    parse(&bytes, "", String::new).map_err(|why| Error::Usage(format!("not sent: {why}")))?;
    if !dir.is_dir() {
        return Err(Error::io(
            dir,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the events directory does not exist; start the daemon once or pass --events-dir",
            ),
        ));
    }
    // Never named after the id: an id is the writer's text, and must not
    // be able to name a path.
    let name = format!("{}.json", new_id());
    crate::spool::write_atomic(dir, &name, &bytes, 0o644)?;
    Ok((id, dir.join(name)))
}

/// A fresh `evt_` + 12 hex id.
pub fn new_id() -> String {
    format!(
        "evt_{}",
        crate::store::hex(&crate::store::random_bytes::<6>())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Event, Invalid> {
        parse(s.as_bytes(), "2026-01-01T00:00:00.000Z", || {
            "evt_000000000001".into()
        })
    }

    #[test]
    fn minimal_event_gets_defaults() {
        let e = p(r#"{"type":"info_notification","title":"Hi"}"#).unwrap();
        assert_eq!(e.event_id, "evt_000000000001");
        assert_eq!(e.task_id, e.event_id);
        assert_eq!(e.source, "cctelegram");
        assert_eq!(e.timestamp, "2026-01-01T00:00:00.000Z");
        assert_eq!(e.description, "");
        assert!(e.data.is_empty());
    }

    #[test]
    fn task_id_becomes_event_id() {
        let e = p(r#"{"type":"x","title":"t","task_id":"T1"}"#).unwrap();
        assert_eq!(e.event_id, "T1");
    }

    #[test]
    fn refusals_say_what_to_fix() {
        let cases = [
            ("{", "not valid JSON at line 1"),
            ("[1]", "holds a list"),
            (r#"{"type":"x"}"#, "\"title\" is missing"),
            (r#"{"title":"x"}"#, "\"type\" is missing"),
            (r#"{"type":"x","title":"  "}"#, "\"title\" is empty"),
            (r#"{"type":"x","title":5}"#, "\"title\" must be a string"),
            (
                r#"{"type":"x","title":"t","data":[]}"#,
                "\"data\" must be an object",
            ),
            (
                r#"{"type":"approval_request","title":"t","data":{"options":[1]}}"#,
                "data.options",
            ),
        ];
        for (input, want) in cases {
            let err = p(input).unwrap_err().to_string();
            assert!(err.contains(want), "{input}: {err}");
        }
        let err = parse(b"{\"type\":\"x\",\"title\":\"\xff\"}", "", String::new).unwrap_err();
        assert_eq!(err, Invalid::NotUtf8 { offset: 21 });
    }

    #[test]
    fn meaningless_timeouts_are_refused() {
        let with = |t: &str| {
            p(&format!(
                r#"{{"type":"approval_request","title":"t","data":{{"timeout_minutes":{t}}}}}"#
            ))
        };
        assert!(with("30").is_ok());
        assert!(with("1e300").is_ok(), "huge is clamped at use, not refused");
        assert!(with("0").is_ok());
        for bad in ["-5", "\"30\"", "[]", "true"] {
            let e = with(bad).unwrap_err().to_string();
            assert!(e.contains("data.timeout_minutes"), "{bad}: {e}");
        }
    }

    #[test]
    fn options_fall_back() {
        let e = p(r#"{"type":"approval_request","title":"t"}"#).unwrap();
        assert_eq!(e.options(), ["Approve", "Deny"]);
        let e = p(
            r#"{"type":"approval_request","title":"t","data":{"response_options":["A","B","C"]}}"#,
        )
        .unwrap();
        assert_eq!(e.options(), ["A", "B", "C"]);
    }

    #[test]
    fn the_type_list_is_complete_and_unique() {
        let mut v: Vec<&str> = TYPES.iter().map(|t| t.name).collect();
        v.sort();
        v.dedup();
        assert_eq!(v.len(), 47);
        assert!(TYPES.iter().all(|t| CATEGORIES.contains(&t.category)));
    }
}
