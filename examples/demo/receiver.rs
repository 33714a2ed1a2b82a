//! The demo's webhook receiver: what a user's endpoint should do, done with
//! the library's own verification (`cctelegram::webhook::sign`).
//!
//! Every request is checked under both schemes of CONTRACT section 6:
//! `X-CCTelegram-Signature` (`sha256=<hex>` of the body) with
//! `X-CCTelegram-Timestamp` inside the 5-minute window, and Standard
//! Webhooks (`webhook-signature: v1,<base64>` of `id.timestamp.body`). Both
//! must hold for a 200; anything else is a 401 with the reason. Each request
//! is printed as it arrives and kept, so the narration can wait for one.

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cctelegram::webhook::sign;
use serde_json::Value;

use crate::telegram::http::{Request, Response, Server};
use crate::{dim, fit, green, red};

/// One request, as received and answered.
#[derive(Clone)]
pub struct Delivery {
    pub path: String,
    /// Its `webhook_type`, or "" if the body says none.
    pub kind: String,
    /// What the receiver answered: 200, or 401.
    pub status: u16,
    /// Why it was refused; empty when accepted.
    pub refused: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Delivery {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_default()
    }
}

type Shared = Arc<(Mutex<Vec<Delivery>>, Condvar)>;

pub struct Receiver {
    server: Server,
    got: Shared,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Both signatures and both timestamps, or why not.
fn check(secret: &str, req: &Request) -> Result<(), String> {
    let now = unix_now();
    let header = |name: &str| req.header(name).ok_or(format!("no {name} header"));
    let stamp = |name: &str| {
        let text = header(name)?;
        text.trim()
            .parse::<u64>()
            .map_err(|_| format!("{name} is not unix seconds"))
    };
    let ts = stamp("X-CCTelegram-Timestamp")?;
    let sig = header("X-CCTelegram-Signature")?;
    sign::verify(secret, None, Some(ts), sig, &req.body, now)
        .map_err(|e| format!("X-CCTelegram-Signature: {e}"))?;
    let (id, ts) = (header("webhook-id")?, stamp("webhook-timestamp")?);
    let sig = header("webhook-signature")?;
    sign::verify(secret, Some(id), Some(ts), sig, &req.body, now)
        .map_err(|e| format!("webhook-signature: {e}"))
}

/// What a delivery reports, in a few words.
pub fn summary(kind: &str, v: &Value) -> String {
    let s = |v: &Value| v.as_str().unwrap_or("?").to_string();
    match kind {
        "event_processed" => {
            let e = &v["event"];
            format!("{} {}", s(&e["type"]), s(&e["status"]))
        }
        "user_response" => {
            let r = &v["response"];
            let what = match r["callback_data"].as_str() {
                Some(data) => format!("press {data}"),
                None => format!("reply {:?}", r["message"]["text"].as_str().unwrap_or("")),
            };
            format!("@{}: {what}", s(&r["user"]["username"]))
        }
        "health_update" => format!("{}, now {}", s(&v["alert_type"]), s(&v["health"]["status"])),
        _ => String::new(),
    }
}

impl Receiver {
    /// Listens on 127.0.0.1; checks every request against `secret`.
    pub fn start(secret: &'static str) -> Receiver {
        let got: Shared = Arc::default();
        let shared = got.clone();
        let server = Server::start(Arc::new(move |req: &Request| {
            let verdict = check(secret, req);
            let body: Value = serde_json::from_slice(&req.body).unwrap_or_default();
            let kind = body["webhook_type"].as_str().unwrap_or("").to_string();
            let line = format!("⇢ POST {:<19}", req.path);
            match &verdict {
                Ok(()) => println!(
                    "  {} {kind:<15} {} {}",
                    dim(&line),
                    fit(&summary(&kind, &body), 34),
                    green("✓ verified")
                ),
                Err(why) => {
                    println!("  {} {}", dim(&line), red("✗ refused with 401:"));
                    println!("      {}", red(&fit(why, 92)));
                }
            }
            let (status, refused) = match verdict {
                Ok(()) => (200, String::new()),
                Err(why) => (401, why),
            };
            let d = Delivery {
                path: req.path.clone(),
                kind,
                status,
                refused: refused.clone(),
                headers: req.headers.clone(),
                body: req.body.clone(),
            };
            let (m, cv) = &*shared;
            m.lock().unwrap_or_else(PoisonError::into_inner).push(d);
            cv.notify_all();
            let answer = if status == 200 {
                "ok"
            } else {
                refused.as_str()
            };
            Response::new(status, "text/plain", answer)
        }));
        Receiver { server, got }
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.url())
    }

    pub fn deliveries(&self) -> Vec<Delivery> {
        self.got
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits (on the condition variable) until `found` picks a delivery.
    pub fn wait_for(
        &self,
        within: Duration,
        what: &str,
        found: impl Fn(&[Delivery]) -> Option<Delivery>,
    ) -> Result<Delivery, String> {
        let (m, cv) = &*self.got;
        let end = Instant::now() + within;
        let mut got = m.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(d) = found(&got) {
                return Ok(d);
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "{what} did not arrive at the receiver within {} s",
                    within.as_secs()
                ));
            }
            got = cv
                .wait_timeout(got, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}
