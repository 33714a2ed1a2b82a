//! `GET /health` and `GET /metrics` on `[health].listen`.
//!
//! A deliberately small HTTP/1.1 server: one request per connection, a
//! request head of at most 8 KiB read within 5 seconds, at most 16
//! connections at once (more are closed at once). A slow or malicious
//! client costs one small task until its deadline and nothing more.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use smol::future::FutureExt as _;
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::{Async, LocalExecutor};

use crate::error::Result;
use crate::health::Monitor;

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
                "cannot serve /health and /metrics on {addr}: {e}; continuing without them"
            );
            return std::future::pending().await;
        }
    };
    log::info!("serving /health and /metrics on http://{addr}");
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
            handle(stream, &monitor).or(deadline).await;
            open.fetch_sub(1, Ordering::Relaxed);
        })
        .detach();
    }
}

async fn handle(mut stream: Async<TcpStream>, monitor: &Monitor) {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > MAX_HEAD {
            let _ = respond(&mut stream, 431, "text/plain", b"request head too large\n").await;
            return;
        }
    }
    let line = String::from_utf8_lossy(head.split(|b| *b == b'\r').next().unwrap_or(b""));
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    if method != "GET" && method != "HEAD" {
        let _ = respond(&mut stream, 405, "text/plain", b"only GET\n").await;
        return;
    }
    let (status, kind, body) = match path {
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
                        body.to_string().into_bytes(),
                    )
                }
                None => (
                    503,
                    "application/json",
                    br#"{"status":"starting"}"#.to_vec(),
                ),
            }
        }
        "/metrics" => (
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            monitor.metrics().into_bytes(),
        ),
        _ => (
            404,
            "text/plain",
            b"not found: try /health or /metrics\n".to_vec(),
        ),
    };
    let body = if method == "HEAD" { &[][..] } else { &body[..] };
    let _ = respond(&mut stream, status, kind, body).await;
}

async fn respond(
    stream: &mut Async<TcpStream>,
    status: u16,
    kind: &str,
    body: &[u8],
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.flush().await
}
