//! The resources of CONTRACT section 8: read-only JSON views of what the
//! tools also return, for clients that attach context rather than call.

use serde_json::{json, Value};

use super::protocol::RpcError;
use super::{answers, bridge, tools, Ctx};

const RESOURCES: &[(&str, &str, &str)] = &[
    (
        "cctelegram://event-types",
        "event-types",
        "The 47 event types with category and description",
    ),
    (
        "cctelegram://bridge-status",
        "bridge-status",
        "The running daemon's health, or that it is not running",
    ),
    (
        "cctelegram://responses",
        "responses",
        "The 20 newest response files, newest first",
    ),
];

pub fn list() -> Value {
    let resources: Vec<Value> = RESOURCES
        .iter()
        .map(|(uri, name, description)| {
            json!({"uri": uri, "name": name, "description": description,
                   "mimeType": "application/json"})
        })
        .collect();
    json!({ "resources": resources })
}

/// `resources/read`; an unknown URI is -32602 naming the known ones.
pub fn read(ctx: &Ctx, uri: &str) -> Result<Value, RpcError> {
    let body = match uri {
        "cctelegram://event-types" => tools::event_types(None),
        "cctelegram://bridge-status" => bridge::status(&ctx.cfg),
        "cctelegram://responses" => {
            let all = answers::all(&ctx.cfg.paths.responses_dir)
                .map_err(|e| RpcError::new(super::protocol::INTERNAL_ERROR, e.to_string()))?;
            let newest: Vec<Value> = all.iter().rev().take(20).map(|a| a.to_json()).collect();
            json!({"count": newest.len(), "total": all.len(), "responses": newest})
        }
        other => {
            let known: Vec<&str> = RESOURCES.iter().map(|r| r.0).collect();
            return Err(RpcError::params(format!(
                "Resource not found: {other:?}; this server has {}",
                known.join(", ")
            )));
        }
    };
    let text = serde_json::to_string_pretty(&body).unwrap_or_default();
    Ok(json!({"contents": [{"uri": uri, "mimeType": "application/json", "text": text}]}))
}
