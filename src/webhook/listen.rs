//! `cctelegram listen`: a local webhook receiver to develop one against,
//! the way `stripe listen` is used.
//!
//! Point an endpoint (or `webhook test URL`) at it and see exactly what
//! arrives: one line per delivery (type, id, attempt, verdict), then the
//! body, indented. Every request is checked as a careful receiver would:
//! each signature scheme present must verify with one of the secrets, and
//! its timestamp must be within 5 minutes; the answer is 200 or 401. A
//! developer tool, so a small blocking server on std::net, one connection
//! at a time, bounded: a request head of at most 16 KiB and a body of at
//! most 1 MiB, each read within 5 seconds.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use serde_json::Value;

use crate::clock;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::webhook::endpoint;
use crate::webhook::sign;

const MAX_HEAD: usize = 16 * 1024;
const MAX_BODY: usize = 1024 * 1024;
const DEADLINE: Duration = Duration::from_secs(5);
/// The spec's receivers listen on 3000.
pub const DEFAULT_PORT: u16 = 3000;

/// First header with this (case-insensitive) name.
fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn unix(name: &str, v: &str) -> std::result::Result<u64, String> {
    v.trim()
        .parse()
        .map_err(|_| format!("{name} is not unix seconds: {v:?}"))
}

/// Checks a request as a receiver should (pure): every scheme present must
/// verify with one of `secrets` within 5 minutes of `now`, and at least one
/// must be present. Ok: the schemes that verified.
pub fn check(
    headers: &[(String, String)],
    body: &[u8],
    secrets: &[&str],
    now: u64,
) -> std::result::Result<Vec<&'static str>, String> {
    let mut verified = Vec::new();
    if let Some(sig) = header(headers, "x-cctelegram-signature") {
        let ts = header(headers, "x-cctelegram-timestamp")
            .ok_or("X-CCTelegram-Signature came without X-CCTelegram-Timestamp")?;
        let ts = unix("X-CCTelegram-Timestamp", ts)?;
        // During a rotation the previous secret's signature is in its own header.
        let all = match header(headers, "x-cctelegram-signature-previous") {
            Some(prev) => format!("{sig} {prev}"),
            None => sig.to_string(),
        };
        sign::verify_any(secrets, None, Some(ts), &all, body, now)
            .map_err(|e| format!("X-CCTelegram-Signature: {e}"))?;
        verified.push("X-CCTelegram-Signature");
    }
    if let Some(sig) = header(headers, "webhook-signature") {
        let (Some(id), Some(ts)) = (
            header(headers, "webhook-id"),
            header(headers, "webhook-timestamp"),
        ) else {
            return Err("webhook-signature came without webhook-id and webhook-timestamp".into());
        };
        let ts = unix("webhook-timestamp", ts)?;
        sign::verify_any(secrets, Some(id), Some(ts), sig, body, now)
            .map_err(|e| format!("webhook-signature: {e}"))?;
        verified.push("webhook-signature");
    }
    if verified.is_empty() {
        return Err("no signature: neither X-CCTelegram-Signature nor webhook-signature".into());
    }
    Ok(verified)
}

/// The line printed for one delivery, then its body indented (pure).
pub fn describe(
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
    status: u16,
    verdict: &str,
    now_ms: u64,
) -> String {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let kind = parsed
        .as_ref()
        .and_then(|v| v["webhook_type"].as_str().or(v["type"].as_str()))
        .unwrap_or("?")
        .to_string();
    let id = header(headers, "webhook-id")
        .or(header(headers, "x-cctelegram-delivery"))
        .unwrap_or("?");
    let attempt = header(headers, "x-cctelegram-retry-count")
        .and_then(|n| n.trim().parse::<u64>().ok())
        .map_or(1, |n| n + 1);
    let version = header(headers, "x-cctelegram-payload-version").unwrap_or("?");
    let text = match &parsed {
        Some(v) => serde_json::to_string_pretty(v).unwrap_or_default(),
        None => String::from_utf8_lossy(body).into_owned(),
    };
    let mut out = format!(
        "{} {method} {path} {kind} {id} attempt {attempt} (payload version {version}): {status} {verdict}\n",
        clock::iso8601(now_ms)
    );
    for line in text.lines() {
        out.push_str("    ");
        out.push_str(line);
        out.push('\n');
    }
    out
}

struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// Reads one request, or the status and reason to refuse it with.
fn read_request(stream: &mut TcpStream) -> std::result::Result<Request, (u16, String)> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_HEAD {
            return Err((431, "request head larger than 16 KiB".into()));
        }
        match stream.read(&mut chunk) {
            Ok(0) => return Err((400, "connection closed in the request head".into())),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err((408, format!("reading the request: {e}"))),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split_whitespace();
    let method = first.next().unwrap_or("").to_string();
    let target = first.next().unwrap_or("/");
    let path = target.split('?').next().unwrap_or("/").to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    if header(&headers, "transfer-encoding").is_some() {
        return Err((411, "send the body with a Content-Length".into()));
    }
    let len = match header(&headers, "content-length") {
        None => 0,
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| (400, format!("bad Content-Length {v:?}")))?,
    };
    if len > MAX_BODY {
        return Err((
            413,
            format!("a body of {len} bytes is over the 1 MiB limit"),
        ));
    }
    let mut body = buf[head_end + 4..].to_vec();
    body.truncate(len);
    while body.len() < len {
        let want = (len - body.len()).min(chunk.len());
        match stream.read(&mut chunk[..want]) {
            Ok(0) => return Err((400, "connection closed in the body".into())),
            Ok(n) => body.extend_from_slice(&chunk[..n]),
            Err(e) => return Err((408, format!("reading the body: {e}"))),
        }
    }
    Ok(Request {
        method,
        path,
        headers,
        body,
    })
}

fn respond(stream: &mut TcpStream, status: u16, body: &Value) {
    let reason = match status {
        200 => "OK",
        401 => "Unauthorized",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        _ => "Bad Request",
    };
    let body = body.to_string();
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body.as_bytes());
    let _ = stream.flush();
}

fn serve_one(mut stream: TcpStream, secrets: &[&str]) {
    let _ = stream.set_read_timeout(Some(DEADLINE));
    let _ = stream.set_write_timeout(Some(DEADLINE));
    let now_ms = clock::now_ms();
    let req = match read_request(&mut stream) {
        Ok(r) => r,
        Err((status, why)) => {
            respond(&mut stream, status, &serde_json::json!({ "error": why }));
            println!(
                "{} refused a request: {status} {why}",
                clock::iso8601(now_ms)
            );
            return;
        }
    };
    let (status, verdict, answer) = if req.method != "POST" {
        let why = format!("{} is not a delivery: POST only", req.method);
        (405, why.clone(), serde_json::json!({ "error": why }))
    } else {
        match check(&req.headers, &req.body, secrets, now_ms / 1000) {
            Ok(schemes) => (
                200,
                format!("verified ({})", schemes.join(", ")),
                serde_json::json!({"status": "received"}),
            ),
            Err(why) => (
                401,
                format!("NOT VERIFIED: {why}"),
                serde_json::json!({ "error": why }),
            ),
        }
    };
    respond(&mut stream, status, &answer);
    let text = describe(
        &req.method,
        &req.path,
        &req.headers,
        &req.body,
        status,
        &verdict,
        now_ms,
    );
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// Runs `cctelegram listen` until it is stopped (Ctrl-C).
pub fn command(
    bind: Option<&str>,
    port: Option<&str>,
    mut secrets: Vec<String>,
    cfg: Option<&Config>,
) -> Result<()> {
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| Error::Usage(format!("--port must be 0 to 65535, found {p:?}")))?,
    };
    let ip = bind.unwrap_or("127.0.0.1");
    let addr: SocketAddr = format!("{ip}:{port}")
        .parse()
        .or_else(|_| format!("[{ip}]:{port}").parse())
        .map_err(|_| Error::Usage(format!("--bind must be an IP address, found {ip:?}")))?;
    if secrets.is_empty() {
        if let Some(c) = cfg {
            secrets = endpoint::all_secrets(&c.webhook);
        }
    }
    if secrets.is_empty() {
        return Err(Error::Usage(
            "listen needs a secret to verify with: --secret S, or [webhook] secret(s) in the config"
                .into(),
        ));
    }
    for (i, s) in secrets.iter().enumerate() {
        endpoint::check_secret(&format!("--secret #{}", i + 1), s)?;
    }
    let listener = TcpListener::bind(addr).map_err(|e| Error::io(addr.to_string(), e))?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::io(addr.to_string(), e))?;
    println!(
        "listening on http://{local}/ (any path), verifying with {} secret(s); Ctrl-C stops",
        secrets.len()
    );
    let _ = std::io::stdout().flush();
    let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
    for stream in listener.incoming() {
        match stream {
            Ok(s) => serve_one(s, &secrets),
            Err(e) => {
                // Out of file descriptors, say: wait a moment, keep serving.
                log::warn!("accept failed, retrying in 1 s: {e}");
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(body: &[u8], secrets: &[String], ts: u64) -> Vec<(String, String)> {
        vec![
            (
                "x-cctelegram-signature".into(),
                sign::cctelegram_signature(&secrets[0], body),
            ),
            ("x-cctelegram-timestamp".into(), ts.to_string()),
            ("webhook-id".into(), "msg_1".into()),
            ("webhook-timestamp".into(), ts.to_string()),
            (
                "webhook-signature".into(),
                sign::standard_signatures(secrets, "msg_1", ts, body),
            ),
            ("x-cctelegram-retry-count".into(), "2".into()),
        ]
    }

    #[test]
    fn good_deliveries_pass_and_tampered_or_stale_ones_do_not() {
        let body = br#"{"webhook_type":"test","x":1}"#;
        let both = ["new".to_string(), "old".to_string()];
        let h = headers(body, &both, 1000);
        assert_eq!(
            check(&h, body, &["new"], 1000),
            Ok(vec!["X-CCTelegram-Signature", "webhook-signature"])
        );
        let mut h_prev = headers(body, &both, 1000);
        h_prev.push((
            "x-cctelegram-signature-previous".into(),
            sign::cctelegram_signature("old", body),
        ));
        assert!(check(&h_prev, body, &["old"], 1000).is_ok());
        assert!(
            check(&h, body, &["old"], 1000).is_err(),
            "no -Previous header"
        );
        let tampered = br#"{"webhook_type":"test","x":2}"#;
        assert!(check(&h, tampered, &["new"], 1000).is_err());
        let stale = check(&h, body, &["new"], 1000 + 301).unwrap_err();
        assert!(stale.contains("301 s from now"), "{stale}");
        assert!(check(&[], body, &["new"], 1000).is_err());
        let text = describe("POST", "/hook", &h, body, 200, "verified", 0);
        assert!(
            text.starts_with("1970-01-01T00:00:00.000Z POST /hook test msg_1 attempt 3"),
            "{text}"
        );
        assert!(text.contains("\n      \"x\": 1\n"), "{text}");
    }
}
