//! `GET /` (the status page), `GET /health` and `GET /metrics` on
//! `[health].listen`.
//!
//! A deliberately small HTTP/1.1 server: one request per connection, a
//! request head of at most 8 KiB read within 5 seconds, at most 16
//! connections at once (more are closed at once). A slow or malicious
//! client costs one small task until its deadline and nothing more.
//!
//! With `[health].token` set (required off loopback), every request needs
//! `Authorization: Bearer <token>`, compared in constant time; without it
//! the answer is 401 and says nothing about the bridge.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use smol::future::FutureExt as _;
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::{Async, LocalExecutor};

use ring::hmac;

use crate::error::Result;
use crate::health::Monitor;
use crate::page;

const MAX_HEAD: usize = 8 * 1024;
const DEADLINE: Duration = Duration::from_secs(5);
const MAX_CONNECTIONS: usize = 16;

/// Serves until the daemon stops. A port that cannot be bound is logged and
/// the daemon carries on without the endpoint: notifications matter more.
pub async fn serve(ex: Rc<LocalExecutor<'_>>, listen: &str, monitor: Arc<Monitor>) -> Result<()> {
    let addr: SocketAddr = match listen.parse() {
        Ok(a) => a,
        Err(_) => return std::future::pending().await,
    };
    let listener = match TcpListener::bind(addr).and_then(Async::new) {
        Ok(l) => l,
        Err(e) => {
            log::error!(
                "cannot serve the status page, /health and /metrics on {addr}: {e}; continuing without them"
            );
            return std::future::pending().await;
        }
    };
    log::info!("serving the status page, /health and /metrics on http://{addr}");
    let open = Rc::new(AtomicUsize::new(0));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, say: wait a moment, keep serving.
                log::warn!("health listener {addr}: accept failed, retrying in 1 s: {e}");
                smol::Timer::after(Duration::from_secs(1)).await;
                continue;
            }
        };
        if open.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
            drop(stream);
            continue;
        }
        open.fetch_add(1, Ordering::Relaxed);
        let (open, monitor) = (open.clone(), monitor.clone());
        ex.spawn(async move {
            let deadline = async {
                smol::Timer::after(DEADLINE).await;
            };
            handle(stream, monitor).or(deadline).await;
            open.fetch_sub(1, Ordering::Relaxed);
        })
        .detach();
    }
}

/// Whether `head` carries `Authorization: Bearer <token>`. Both sides go
/// through HMAC under a key made from the token, so the comparison takes the
/// same time whatever the guess, its length included.
pub fn authorized(head: &str, token: &str) -> bool {
    let given = head
        .split("\r\n")
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("authorization"))
        .and_then(|(_, v)| {
            let v = v.trim();
            let (scheme, rest) = v.split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| rest.trim().to_string())
        });
    let Some(given) = given else {
        return false;
    };
    let key = hmac::Key::new(hmac::HMAC_SHA256, token.as_bytes());
    let expected = hmac::sign(&key, token.as_bytes());
    hmac::verify(&key, given.as_bytes(), expected.as_ref()).is_ok()
}

/// What `/` answers with: no script runs, nothing is fetched, even if an
/// escape were ever missed.
const PAGE_HEADERS: &str = "Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'; img-src data:\r\nX-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\n";

async fn handle(mut stream: Async<TcpStream>, monitor: Arc<Monitor>) {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > MAX_HEAD {
            let _ = respond(
                &mut stream,
                431,
                "text/plain",
                "",
                b"request head too large\n",
            )
            .await;
            return;
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let line = head.split('\r').next().unwrap_or("");
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, kind, extra, body) = route(method, path, &head, &monitor).await;
    // The path only (a query could carry anything), bounded, quoted.
    let shown: String = path.chars().take(100).collect();
    log::debug!("health listener: {method:.8} {shown:?} answered {status}");
    let body = if method == "HEAD" { &[][..] } else { &body[..] };
    let _ = respond(&mut stream, status, kind, extra, body).await;
}

async fn route(
    method: &str,
    path: &str,
    head: &str,
    monitor: &Arc<Monitor>,
) -> (u16, &'static str, &'static str, Vec<u8>) {
    if method != "GET" && method != "HEAD" {
        return (405, "text/plain", "", b"only GET\n".to_vec());
    }
    let token = monitor.live.get().health.token.clone();
    if !token.is_empty() && !authorized(head, &token) {
        return (
            401,
            "text/plain",
            "WWW-Authenticate: Bearer realm=\"cctelegram\"\r\n",
            b"needs Authorization: Bearer <[health] token>\n".to_vec(),
        );
    }
    match path {
        "/" => {
            let m = monitor.clone();
            let html = crate::pool::unblock(move || page::render(&page::gather(&m))).await;
            (
                200,
                "text/html; charset=utf-8",
                PAGE_HEADERS,
                html.into_bytes(),
            )
        }
        "/health" => {
            let latest = monitor.latest.lock().unwrap_or_else(|p| p.into_inner());
            match &*latest {
                Some(s) => {
                    // Mute and pause as they are now, not at the last check.
                    let mut body = s.body.clone();
                    body["notifications"] = monitor.notifications();
                    (
                        if s.unhealthy { 503 } else { 200 },
                        "application/json",
                        "",
                        body.to_string().into_bytes(),
                    )
                }
                None => (
                    503,
                    "application/json",
                    "",
                    br#"{"status":"starting"}"#.to_vec(),
                ),
            }
        }
        "/metrics" => (
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            "",
            monitor.metrics().into_bytes(),
        ),
        _ => (
            404,
            "text/plain",
            "",
            b"not found: try /, /health or /metrics\n".to_vec(),
        ),
    }
}

async fn respond(
    stream: &mut Async<TcpStream>,
    status: u16,
    kind: &str,
    extra: &str,
    body: &[u8],
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\n{extra}\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_right_bearer_token_passes() {
        let head = |auth: &str| format!("GET / HTTP/1.1\r\nHost: x\r\n{auth}\r\n\r\n");
        assert!(authorized(&head("Authorization: Bearer s3cret"), "s3cret"));
        assert!(authorized(
            &head("authorization:   bearer  s3cret "),
            "s3cret"
        ));
        for wrong in [
            "Authorization: Bearer s3cre",
            "Authorization: Bearer s3crett",
            "Authorization: Basic s3cret",
            "Authorization: s3cret",
            "X-Token: s3cret",
            "",
        ] {
            assert!(!authorized(&head(wrong), "s3cret"), "{wrong}");
        }
        // The request line is not a header.
        assert!(!authorized(
            "GET /Authorization: Bearer s3cret HTTP/1.1\r\n\r\n",
            "s3cret"
        ));
    }
}
