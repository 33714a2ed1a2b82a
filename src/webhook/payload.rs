//! Webhook bodies, exactly as the spec's examples shape them.
//!
//! Pure. The bytes are what `JSON.stringify(JSON.parse(body))` gives in
//! JavaScript, so receivers that re-serialise before checking the signature
//! (the spec's Express example does) still verify it: compact, non-ASCII
//! unescaped, numbers as JavaScript prints them (`2`, not `2.0`; `1e+21`),
//! and object keys in the order JavaScript keeps them (integer-like keys
//! first, ascending, then the rest in order).

use std::fmt::Write as _;

use serde_json::{json, Map, Value};

use crate::clock;
use crate::event::Event;

/// `bridge_info`, on every payload.
pub struct BridgeInfo {
    pub uptime_seconds: u64,
}

impl BridgeInfo {
    fn value(&self) -> Value {
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_seconds": self.uptime_seconds,
            "process_id": std::process::id(),
        })
    }
}

/// Telegram delivery status of one event in one chat.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Status {
    Delivered,
    Failed,
    Pending,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Delivered => "delivered",
            Status::Failed => "failed",
            Status::Pending => "pending",
        }
    }
}

/// `event_processed`: one per event and target chat.
pub fn event_processed(
    ev: &Event,
    chat: &str,
    status: Status,
    message_id: Option<i64>,
    error: Option<&str>,
    now_ms: u64,
    info: &BridgeInfo,
) -> Value {
    let mut event = json!({
        "id": ev.event_id,
        "type": ev.kind,
        "source": ev.source,
        "title": ev.title,
        "description": ev.description,
        "task_id": ev.task_id,
        "status": status.name(),
        "telegram_message_id": message_id,
        "chat_id": chat,
        "data": ev.data,
    });
    if status == Status::Delivered {
        event["delivery_timestamp"] = json!(clock::iso8601(now_ms));
    }
    if let Some(e) = error {
        event["error"] = json!(e);
    }
    let mut p = json!({
        "webhook_type": "event_processed",
        "timestamp": clock::iso8601(now_ms),
        "event": event,
        "bridge_info": info.value(),
    });
    // Fleet mode: the hub names the device the event came from.
    if let Some(d) = crate::fleet::device_of(ev) {
        p["bridge_info"]["device"] = json!(d);
    }
    p
}

/// Who answered, as the Bot API's `from` has it.
pub struct User<'a> {
    pub id: i64,
    pub username: Option<&'a str>,
    pub first_name: Option<&'a str>,
    pub last_name: Option<&'a str>,
}

/// What was answered to.
pub struct Original<'a> {
    pub kind: Option<&'a str>,
    pub title: Option<&'a str>,
    pub options: Vec<String>,
}

/// The answer itself.
pub struct Answer<'a> {
    pub response_id: String,
    pub event_id: Option<&'a str>,
    pub message_id: Option<i64>,
    /// The chosen option's label, or the message text.
    pub text: &'a str,
    pub chat_id: &'a str,
    /// `callback_query` or `message`.
    pub interaction: &'a str,
    pub callback_data: Option<&'a str>,
}

/// `user_response`: a button press, a message, or an expiry (no user).
pub fn user_response(
    user: Option<&User>,
    answer: &Answer,
    original: &Original,
    now_ms: u64,
    info: &BridgeInfo,
) -> Value {
    let mut p = json!({
        "webhook_type": "user_response",
        "timestamp": clock::iso8601(now_ms),
        "response": {
            "id": answer.response_id,
            "event_id": answer.event_id,
            "user": user.map(|u| json!({
                "id": u.id,
                "username": u.username,
                "first_name": u.first_name,
                "last_name": u.last_name,
            })),
            "message": {
                "id": answer.message_id,
                "text": answer.text,
                "chat_id": answer.chat_id,
                "timestamp": clock::iso8601(now_ms),
            },
            "interaction_type": answer.interaction,
            "callback_data": answer.callback_data,
        },
        "original_event": {
            "type": original.kind,
            "title": original.title,
            "options": original.options,
        },
        "bridge_info": info.value(),
    });
    // Fleet mode: the hub names the device the answered event came from.
    if let Some(d) = answer.event_id.and_then(crate::fleet::device_of_event) {
        p["bridge_info"]["device"] = json!(d);
    }
    p
}

/// `health_update`: `health` is the health object of `GET /health`.
pub fn health_update(
    health: Value,
    alert_type: &str,
    alert_message: &str,
    now_ms: u64,
    info: &BridgeInfo,
) -> Value {
    json!({
        "webhook_type": "health_update",
        "timestamp": clock::iso8601(now_ms),
        "health": health,
        "alert_type": alert_type,
        "alert_message": alert_message,
        "bridge_info": info.value(),
    })
}

/// The Standard Webhooks envelope of a version 1 payload, for endpoints
/// with `format = "standard"`: `{"type", "timestamp", "data"}`, in that
/// order, `timestamp` the payload's own (RFC 3339, UTC) and `data` the
/// payload exactly as the `cctelegram` format sends it.
pub fn standard_envelope(kind: &str, payload: &Value) -> String {
    let timestamp = payload["timestamp"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| clock::iso8601(clock::now_ms()));
    let mut out = String::from("{\"type\":");
    write_string(kind, &mut out);
    out.push_str(",\"timestamp\":");
    write_string(&timestamp, &mut out);
    out.push_str(",\"data\":");
    write_value(payload, &mut out);
    out.push('}');
    out
}

/// `test`, from `cctelegram webhook test`: a delivery that reports nothing
/// but shows that the receiver is reachable and verifies signatures.
pub fn test(now_ms: u64, info: &BridgeInfo) -> Value {
    json!({
        "webhook_type": "test",
        "timestamp": clock::iso8601(now_ms),
        "message": "Test delivery from cctelegram webhook test: if this verifies, your receiver is ready",
        "bridge_info": info.value(),
    })
}

/// The compact JSON text JavaScript's `JSON.stringify` would write.
pub fn to_js_json(v: &Value) -> String {
    let mut out = String::new();
    write_value(v, &mut out);
    out
}

fn write_value(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => write_number(n, out),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (k, item)) in js_key_order(map).into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(k, out);
                out.push(':');
                write_value(item, out);
            }
            out.push('}');
        }
    }
}

/// JavaScript orders "array index" keys (canonical integers below 2^32 - 1)
/// first, ascending, then the others in insertion order.
fn js_key_order(map: &Map<String, Value>) -> Vec<(&String, &Value)> {
    let index = |k: &str| -> Option<u32> {
        let n: u32 = k.parse().ok()?;
        (n != u32::MAX && n.to_string() == k).then_some(n)
    };
    let mut ints: Vec<(u32, &String, &Value)> = Vec::new();
    let mut rest = Vec::new();
    for (k, v) in map {
        match index(k) {
            Some(n) => ints.push((n, k, v)),
            None => rest.push((k, v)),
        }
    }
    ints.sort_by_key(|(n, _, _)| *n);
    ints.into_iter()
        .map(|(_, k, v)| (k, v))
        .chain(rest)
        .collect()
}

fn write_number(n: &serde_json::Number, out: &mut String) {
    if n.is_i64() || n.is_u64() {
        // Integers beyond 2^53 lose precision in JavaScript whatever we do.
        let _ = write!(out, "{n}");
        return;
    }
    let f = n.as_f64().unwrap_or(0.0);
    out.push_str(&js_float(f));
}

/// `Number.prototype.toString()` for a finite double: the shortest digits
/// that round-trip (Rust's `{:e}` gives those), laid out as ECMAScript's
/// Number::toString says.
pub fn js_float(f: f64) -> String {
    if f == 0.0 {
        return "0".into();
    }
    let sci = format!("{:e}", f.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let digits: String = mantissa.chars().filter(|c| c.is_ascii_digit()).collect();
    let e: i32 = exp.parse().unwrap_or(0);
    let k = digits.len() as i32;
    let n = e + 1; // position of the decimal point after the first digit
    let mut s = String::new();
    if f < 0.0 {
        s.push('-');
    }
    if k <= n && n <= 21 {
        s.push_str(&digits);
        s.extend(std::iter::repeat_n('0', (n - k) as usize));
    } else if 0 < n && n <= 21 {
        s.push_str(&digits[..n as usize]);
        s.push('.');
        s.push_str(&digits[n as usize..]);
    } else if -6 < n && n <= 0 {
        s.push_str("0.");
        s.extend(std::iter::repeat_n('0', (-n) as usize));
        s.push_str(&digits);
    } else {
        s.push_str(&digits[..1]);
        if k > 1 {
            s.push('.');
            s.push_str(&digits[1..]);
        }
        let _ = write!(s, "e{}{}", if n > 0 { "+" } else { "-" }, (n - 1).abs());
    }
    s
}

fn write_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_print_as_javascript_prints_them() {
        for (f, js) in [
            (2.0, "2"),
            (-2.5, "-2.5"),
            (0.1, "0.1"),
            (42.5, "42.5"),
            (1e21, "1e+21"),
            (1.5e21, "1.5e+21"),
            (1e20, "100000000000000000000"),
            (0.000001, "0.000001"),
            (1.5e-7, "1.5e-7"),
            (123456.789, "123456.789"),
        ] {
            assert_eq!(js_float(f), js, "{f}");
        }
    }

    #[test]
    fn the_standard_envelope_wraps_the_payload_unchanged() {
        let p = test(0, &BridgeInfo { uptime_seconds: 1 });
        let env = standard_envelope("test", &p);
        assert!(
            env.starts_with(r#"{"type":"test","timestamp":"1970-01-01T00:00:00.000Z","data":{"#)
        );
        let v: Value = serde_json::from_str(&env).unwrap();
        assert_eq!(to_js_json(&v["data"]), to_js_json(&p));
    }

    #[test]
    fn strings_keys_and_nesting_match_json_stringify() {
        let v: Value = serde_json::from_str(
            r#"{"b":"é😀\"\\\n\u0001/","a":[1,2.0,{"10":1,"9":2,"x":null}],"2":true}"#,
        )
        .unwrap();
        assert_eq!(
            to_js_json(&v),
            r#"{"2":true,"a":[1,2,{"9":2,"10":1,"x":null}],"b":"é😀\"\\\n\u0001/"}"#
        );
    }
}
