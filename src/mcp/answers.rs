//! Response files (CONTRACT section 5), read the way any outside program
//! reads them: list `responses_dir`, parse each `telegram_*.json`, skip what
//! is not ours. The daemon writes them atomically, so a file that exists is
//! whole; one that does not parse is skipped with a warning, never trusted.

use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use crate::error::{Error, Result};

/// One response file.
#[derive(Debug, Clone)]
pub struct Answer {
    pub file: String,
    /// Modification time, unix ms: when the daemon wrote it.
    pub written_ms: u64,
    pub body: Value,
}

impl Answer {
    pub fn kind(&self) -> &str {
        self.body["response_type"].as_str().unwrap_or("")
    }

    pub fn event_id(&self) -> Option<&str> {
        self.body["event_id"].as_str()
    }

    /// The body with its file name, as the tools return it.
    pub fn to_json(&self) -> Value {
        let mut v = self.body.clone();
        if let Value::Object(m) = &mut v {
            m.insert("file".into(), json!(self.file));
        }
        v
    }

    /// A decision (a press or an expiry) as `process_pending_responses`
    /// lists it. Response files carry no `task_id` for presses; the long
    /// callback forms (`approve_<task_id>`, `opt<N>_<task_id>`) name it,
    /// and the short persisted key does not, so the event id stands in.
    pub fn decision(&self) -> Option<Value> {
        let b = &self.body;
        let kind = self.kind();
        if kind != "callback_query" && kind != "expired" {
            return None;
        }
        let event_id = b["event_id"].as_str().unwrap_or("");
        let task_id = b["task_id"]
            .as_str()
            .map(str::to_string)
            .or_else(|| task_of_callback(b["callback_data"].as_str().unwrap_or("")))
            .unwrap_or_else(|| event_id.to_string());
        Some(json!({
            "event_id": event_id,
            "task_id": task_id,
            "option": b["option"],
            "decision": if kind == "expired" { "expired" } else { "chosen" },
            "user_id": b["user_id"],
            "username": b["username"],
            "first_name": b["first_name"],
            "timestamp": b["timestamp"],
            "file": self.file,
        }))
    }
}

fn task_of_callback(data: &str) -> Option<String> {
    let (prefix, task) = data.split_once('_')?;
    let known = prefix == "approve"
        || prefix == "deny"
        || prefix
            .strip_prefix("opt")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    (known && !task.is_empty()).then(|| task.to_string())
}

/// Whether a file name is a response file.
pub fn is_response_file(name: &str) -> bool {
    name.starts_with("telegram_") && name.ends_with(".json")
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}

/// Reads one response file; `None` if it is gone or not a response.
pub fn read(dir: &Path, name: &str) -> Option<Answer> {
    if !is_response_file(name) {
        return None;
    }
    let path = dir.join(name);
    let bytes = fs::read(&path).ok()?;
    let written_ms = fs::metadata(&path)
        .and_then(|m| m.modified())
        .map(unix_ms)
        .unwrap_or(0);
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(body @ Value::Object(_)) => Some(Answer {
            file: name.to_string(),
            written_ms,
            body,
        }),
        _ => {
            log::warn!("{}: not a response file's JSON; skipped", path.display());
            None
        }
    }
}

/// Every response file in `dir`, oldest first. A missing directory is an
/// empty list: no daemon has answered anything yet.
pub fn all(dir: &Path) -> Result<Vec<Answer>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    let mut v: Vec<Answer> = entries
        .flatten()
        .filter_map(|e| read(dir, &e.file_name().to_string_lossy()))
        .collect();
    v.sort_by(|a, b| (a.written_ms, &a.file).cmp(&(b.written_ms, &b.file)));
    Ok(v)
}

/// Deletes response files written more than `hours` ago; returns how many
/// went and how many stayed.
pub fn clear_older_than(dir: &Path, hours: f64, now_ms: u64) -> Result<(usize, usize)> {
    let cutoff = now_ms.saturating_sub((hours * 3_600_000.0) as u64);
    let (mut gone, mut kept) = (0, 0);
    for a in all(dir)? {
        if a.written_ms < cutoff {
            fs::remove_file(dir.join(&a.file)).map_err(|e| Error::io(dir.join(&a.file), e))?;
            gone += 1;
        } else {
            kept += 1;
        }
    }
    Ok((gone, kept))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_press_names_its_task() {
        assert_eq!(
            task_of_callback("approve_deploy_1").as_deref(),
            Some("deploy_1")
        );
        assert_eq!(task_of_callback("opt2_t").as_deref(), Some("t"));
        assert_eq!(task_of_callback("k1:abc"), None);
        assert_eq!(task_of_callback("optx_t"), None);
        let a = Answer {
            file: "f".into(),
            written_ms: 0,
            body: json!({"response_type": "callback_query", "event_id": "e1",
                         "callback_data": "k0:zz", "option": "Ship", "user_id": 5}),
        };
        let d = a.decision().unwrap();
        assert_eq!(d["task_id"], "e1");
        assert_eq!(d["option"], "Ship");
    }
}
