//! JSON-RPC 2.0 framing and the two eras of MCP, as pure functions.
//!
//! One message per line, serde_json values in and out. Which era a request
//! speaks is read from the request itself, never from the connection: the
//! stateless revision 2026-07-28 puts the protocol version and the client's
//! capabilities into every request's `_meta`
//! (`io.modelcontextprotocol/protocolVersion`,
//! `io.modelcontextprotocol/clientCapabilities`), answers `server/discover`
//! instead of `initialize`, tags every result with `resultType`, and gives
//! list results `ttlMs` and `cacheScope`. A request without that envelope is
//! a handshake-era request (2024-11-05 to 2025-11-25: `initialize`,
//! `notifications/initialized`, `ping`).
//!
//! Built to: the specification pages of each revision
//! (modelcontextprotocol.io/specification/<rev>/basic/lifecycle, and for
//! 2026-07-28 basic/index "Per-request protocol fields", basic/versioning
//! and server/discover), cross-checked against the official Python SDK 2.3
//! (`mcp_types`: `PROTOCOL_VERSION_META_KEY`, `DiscoverResult`,
//! `CacheableResult`, `UnsupportedProtocolVersionErrorData`, error -32022)
//! and the TypeScript SDK 1.32 (`SUPPORTED_PROTOCOL_VERSIONS`).

use serde_json::{json, Map, Value};

/// Revisions reached through `initialize`, newest first.
pub const HANDSHAKE_VERSIONS: &[&str] = &["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];
/// Revisions that carry the version in each request's `_meta`.
pub const MODERN_VERSIONS: &[&str] = &["2026-07-28"];

pub const META_PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
pub const META_CLIENT_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
pub const META_SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";

pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;
pub const INTERNAL_ERROR: i64 = -32603;
/// 2026-07-28: the request's protocol version is not served.
pub const UNSUPPORTED_VERSION: i64 = -32022;

/// How long a client may cache a list: the lists are fixed for the life of
/// the process, but `private` because `--channel` changes them.
pub const LIST_TTL_MS: u64 = 3_600_000;

/// A JSON-RPC error object.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    pub data: Option<Value>,
}

impl RpcError {
    pub fn new(code: i64, message: impl Into<String>) -> RpcError {
        RpcError {
            code,
            message: message.into(),
            data: None,
        }
    }

    pub fn params(message: impl Into<String>) -> RpcError {
        RpcError::new(INVALID_PARAMS, message)
    }

    fn to_json(&self) -> Value {
        let mut e = json!({"code": self.code, "message": self.message});
        if let Some(d) = &self.data {
            e["data"] = d.clone();
        }
        e
    }
}

/// One line from the client.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    Request {
        id: Value,
        method: String,
        params: Value,
    },
    Notification {
        method: String,
        params: Value,
    },
    /// An answer to something we asked; we ask nothing, so it is dropped.
    Response,
    /// Not a message we can serve; `id` is `null` when none could be read.
    Invalid {
        id: Value,
        error: RpcError,
    },
}

/// Reads one line of input.
pub fn parse_line(line: &str) -> Incoming {
    let v: Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => {
            return Incoming::Invalid {
                id: Value::Null,
                error: RpcError::new(PARSE_ERROR, format!("Parse error: not JSON ({e})")),
            }
        }
    };
    let Value::Object(mut m) = v else {
        let why = if v.is_array() {
            "JSON-RPC batches are not served; send one message per line"
        } else {
            "a JSON-RPC message is an object"
        };
        return Incoming::Invalid {
            id: Value::Null,
            error: RpcError::new(INVALID_REQUEST, format!("Invalid Request: {why}")),
        };
    };
    let id = m.remove("id");
    let bad = |id: Option<Value>, why: &str| Incoming::Invalid {
        id: id.unwrap_or(Value::Null),
        error: RpcError::new(INVALID_REQUEST, format!("Invalid Request: {why}")),
    };
    if m.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return bad(id, "\"jsonrpc\" must be \"2.0\"");
    }
    if let Some(i) = &id {
        if !(i.is_string() || i.is_i64() || i.is_u64()) {
            return bad(None, "\"id\" must be a string or an integer");
        }
    }
    let method = match m.remove("method") {
        Some(Value::String(s)) => s,
        Some(_) => return bad(id, "\"method\" must be a string"),
        None if id.is_some() && (m.contains_key("result") || m.contains_key("error")) => {
            return Incoming::Response
        }
        None => return bad(id, "\"method\" is missing"),
    };
    let params = match m.remove("params") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(p @ Value::Object(_)) => p,
        Some(_) => return bad(id, "\"params\" must be an object"),
    };
    match id {
        Some(id) => Incoming::Request { id, method, params },
        None => Incoming::Notification { method, params },
    }
}

/// The revision one request speaks.
#[derive(Debug, Clone, PartialEq)]
pub enum Era {
    /// Negotiated by `initialize` (or assumed, for a client that skips it).
    Handshake(String),
    /// From the request's own `_meta`.
    Modern(String),
}

impl Era {
    pub fn is_modern(&self) -> bool {
        matches!(self, Era::Modern(_))
    }
}

/// Which era `params` speak. `negotiated` is what `initialize` agreed, if
/// it ran; a handshake request before any `initialize` is served as the
/// newest handshake revision rather than refused.
pub fn era_of(method: &str, params: &Value, negotiated: Option<&str>) -> Result<Era, RpcError> {
    let meta = params.get("_meta").and_then(Value::as_object);
    let version = meta.and_then(|m| m.get(META_PROTOCOL_VERSION));
    let Some(version) = version else {
        if method == "server/discover" {
            return Err(RpcError::params(format!(
                "server/discover needs \"_meta\": {{\"{META_PROTOCOL_VERSION}\": \"2026-07-28\", \
                 \"{META_CLIENT_CAPABILITIES}\": {{}}}}"
            )));
        }
        return Ok(Era::Handshake(
            negotiated.unwrap_or(HANDSHAKE_VERSIONS[0]).to_string(),
        ));
    };
    let Some(version) = version.as_str() else {
        return Err(RpcError::params(format!(
            "_meta \"{META_PROTOCOL_VERSION}\" must be a string"
        )));
    };
    if !meta.is_some_and(|m| {
        m.get(META_CLIENT_CAPABILITIES)
            .is_some_and(Value::is_object)
    }) {
        return Err(RpcError::params(format!(
            "_meta is missing \"{META_CLIENT_CAPABILITIES}\" (an object); \
             every 2026-07-28 request carries it"
        )));
    }
    if !MODERN_VERSIONS.contains(&version) {
        return Err(unsupported(version));
    }
    Ok(Era::Modern(version.to_string()))
}

/// Error -32022, naming what is served. `data.supported` lists every
/// revision, the handshake ones too: a client that shares no per-request
/// revision with us then falls back to `initialize` (as the Python SDK's
/// probe does when the list names a handshake revision) instead of giving
/// up on a server it could talk to.
pub fn unsupported(requested: &str) -> RpcError {
    RpcError {
        code: UNSUPPORTED_VERSION,
        message: format!(
            "Unsupported protocol version {requested:?}: this server serves {} in each \
             request's _meta, and {} through initialize",
            MODERN_VERSIONS.join(", "),
            HANDSHAKE_VERSIONS.join(", ")
        ),
        data: Some(json!({"supported": supported(), "requested": requested})),
    }
}

/// Every revision served, per-request ones first.
pub fn supported() -> Vec<&'static str> {
    MODERN_VERSIONS
        .iter()
        .chain(HANDSHAKE_VERSIONS)
        .copied()
        .collect()
}

/// The version `initialize` answers: the client's if we serve it, else our
/// newest handshake revision (the client then decides whether to go on).
pub fn negotiate(requested: Option<&str>) -> &'static str {
    HANDSHAKE_VERSIONS
        .iter()
        .find(|v| Some(**v) == requested)
        .copied()
        .unwrap_or(HANDSHAKE_VERSIONS[0])
}

pub fn server_info() -> Value {
    json!({"name": "cctelegram", "title": "cctelegram", "version": env!("CARGO_PKG_VERSION")})
}

/// Shapes a result for its era: 2026-07-28 results carry `resultType` and
/// the `serverInfo` stamp, and cacheable ones `ttlMs` and `cacheScope`.
pub fn finish(mut result: Value, era: &Era, cacheable: bool) -> Value {
    if let (Era::Modern(_), Value::Object(m)) = (era, &mut result) {
        m.entry("resultType").or_insert_with(|| json!("complete"));
        if cacheable {
            m.insert("ttlMs".into(), json!(LIST_TTL_MS));
            m.insert("cacheScope".into(), json!("private"));
        }
        let meta = m.entry("_meta").or_insert_with(|| json!({}));
        if let Value::Object(meta) = meta {
            meta.insert(META_SERVER_INFO.into(), server_info());
        }
    }
    result
}

pub fn response(id: &Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

pub fn error_response(id: &Value, error: &RpcError) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": error.to_json()})
}

pub fn notification(method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "method": method, "params": params})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_that_are_not_requests_get_the_right_code() {
        let code = |l: &str| match parse_line(l) {
            Incoming::Invalid { error, .. } => error.code,
            other => panic!("{l}: {other:?}"),
        };
        assert_eq!(code("hello"), PARSE_ERROR);
        assert_eq!(code("[]"), INVALID_REQUEST);
        assert_eq!(code(r#"{"id":1,"method":"ping"}"#), INVALID_REQUEST);
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","id":1,"method":"x","params":[1]}"#),
            INVALID_REQUEST
        );
        assert_eq!(
            parse_line(r#"{"jsonrpc":"2.0","id":3,"result":{}}"#),
            Incoming::Response
        );
        assert!(matches!(
            parse_line(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#),
            Incoming::Notification { .. }
        ));
    }

    #[test]
    fn the_era_comes_from_each_request() {
        let modern =
            json!({"_meta": {META_PROTOCOL_VERSION: "2026-07-28", META_CLIENT_CAPABILITIES: {}}});
        assert_eq!(
            era_of("tools/list", &modern, None),
            Ok(Era::Modern("2026-07-28".into()))
        );
        assert_eq!(
            era_of("tools/list", &json!({}), Some("2024-11-05")),
            Ok(Era::Handshake("2024-11-05".into()))
        );
        let old =
            json!({"_meta": {META_PROTOCOL_VERSION: "2099-01-01", META_CLIENT_CAPABILITIES: {}}});
        let e = era_of("tools/list", &old, None).unwrap_err();
        assert_eq!(e.code, UNSUPPORTED_VERSION);
        assert_eq!(
            e.data.unwrap()["supported"],
            json!([
                "2026-07-28",
                "2025-11-25",
                "2025-06-18",
                "2025-03-26",
                "2024-11-05"
            ])
        );
        assert!(e.message.contains("2024-11-05"));
        let half = json!({"_meta": {META_PROTOCOL_VERSION: "2026-07-28"}});
        assert_eq!(era_of("x", &half, None).unwrap_err().code, INVALID_PARAMS);
    }

    #[test]
    fn initialize_echoes_what_it_serves_else_offers_the_newest() {
        assert_eq!(negotiate(Some("2025-03-26")), "2025-03-26");
        assert_eq!(negotiate(Some("2024-10-07")), "2025-11-25");
        assert_eq!(negotiate(None), "2025-11-25");
    }

    #[test]
    fn modern_results_are_tagged() {
        let era = Era::Modern("2026-07-28".into());
        let r = finish(json!({"tools": []}), &era, true);
        assert_eq!(r["resultType"], "complete");
        assert_eq!(r["cacheScope"], "private");
        assert_eq!(r["ttlMs"], LIST_TTL_MS);
        assert_eq!(r["_meta"][META_SERVER_INFO]["name"], "cctelegram");
        let r = finish(
            json!({"tools": []}),
            &Era::Handshake("2025-11-25".into()),
            true,
        );
        assert_eq!(r, json!({"tools": []}));
    }
}
