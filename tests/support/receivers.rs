//! Webhook receivers for integration tests, all on 127.0.0.1.
//!
//! - [`External`]: the receivers a user of the spec would run, as real
//!   processes: the spec's Express and Flask handlers, copied verbatim into
//!   `tests/receivers/` ([`start_express`], [`start_flask`]), and the
//!   reference Standard Webhooks library ([`start_standard`]). Each logs one
//!   `REQ <method> <path> <status>` line per request, so a test can see that
//!   every delivery was accepted and none rejected.
//! - [`Recorder`]: an in-process receiver on `http.rs` that records every
//!   request as it came (headers lowercased, body bytes) and answers from a
//!   script (failures, `Retry-After`, outages, slowness).
//! - Signing and verification of both signature schemes of CONTRACT.md
//!   section 6 ([`verify_cctelegram`], [`verify_standard`], ...), on ring's
//!   HMAC with a small base64 here.
//!
//! Include it with `#[path = "support/receivers.rs"] mod receivers;`. The
//! `#[path]` below resolves next to this file, as in telegram.rs, so this
//! module has its own copy of `http.rs` as `receivers::http`. A test that
//! also includes telegram.rs compiles http.rs twice, once in each module:
//! that is harmless (neither exposes the other's types), but clippy's
//! `duplicate_mod` lint flags a file loaded by two `mod` items. The lint
//! stays quiet when all but one of those items allow it, so the `allow`
//! below is the whole fix: tests include either file, or both, as they
//! like, and nothing else has to change.
//!
//! The external receivers need `node` with the `express` package (`npm ci
//! --prefix tests/receivers`) and `python3` with `flask` and
//! `standardwebhooks` (`pip install -r tests/receivers/requirements.txt`).
//! When one is missing the test fails and says what to install (`tools.rs`):
//! it never skips.
#![allow(dead_code)]

#[allow(clippy::duplicate_mod)]
#[path = "http.rs"]
pub mod http;
#[allow(clippy::duplicate_mod)]
#[path = "tools.rs"]
pub mod tools;

use http::{Request, Response};
use ring::hmac;
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long an external receiver may take to start listening.
const START_DEADLINE: Duration = Duration::from_secs(30);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Where the receivers' scripts live: `tests/receivers/` of this crate.
pub fn receivers_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/receivers")
}

// ---------------------------------------------------------------------------
// External receivers
// ---------------------------------------------------------------------------

/// One request as an external receiver logged it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    pub method: String,
    /// Path without the query string.
    pub path: String,
    /// The status it answered; 0 if the connection closed before an answer.
    pub status: u16,
}

impl Logged {
    /// Parses a `REQ <method> <path> <status>` line.
    pub fn parse(line: &str) -> Option<Logged> {
        let mut words = line.strip_prefix("REQ ")?.split(' ');
        let (method, path, status) = (words.next()?, words.next()?, words.next()?);
        Some(Logged {
            method: method.to_string(),
            path: path.to_string(),
            status: status.parse().ok()?,
        })
    }
}

/// Lines a process prints on stdout and stderr, as they come.
#[derive(Clone, Default)]
struct Lines(Arc<(Mutex<LinesState>, Condvar)>);

#[derive(Default)]
struct LinesState {
    lines: Vec<String>,
    /// Output streams not at EOF yet.
    open: usize,
}

impl Lines {
    fn collect(&self, r: impl Read + Send + 'static) {
        lock(&self.0 .0).open += 1;
        let me = self.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(r);
            let mut buf = Vec::new();
            // Lossy, so one odd byte does not end the collection.
            while matches!(reader.read_until(b'\n', &mut buf), Ok(n) if n > 0) {
                let line = String::from_utf8_lossy(&buf);
                let line = line.trim_end_matches(['\n', '\r']).to_string();
                buf.clear();
                let (m, cv) = &*me.0;
                lock(m).lines.push(line);
                cv.notify_all();
            }
            let (m, cv) = &*me.0;
            lock(m).open -= 1;
            cv.notify_all();
        });
    }

    fn snapshot(&self) -> Vec<String> {
        lock(&self.0 .0).lines.clone()
    }

    /// Waits until `done(lines)` gives a value. Err(text) once `deadline`
    /// has passed or both streams are closed (the process is gone).
    fn wait<T>(
        &self,
        deadline: Duration,
        mut done: impl FnMut(&[String]) -> Option<T>,
    ) -> Result<T, String> {
        let (m, cv) = &*self.0;
        let end = Instant::now() + deadline;
        let mut s = lock(m);
        loop {
            if let Some(v) = done(&s.lines) {
                return Ok(v);
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() || s.open == 0 {
                let why = if s.open == 0 {
                    "the process closed its output"
                } else {
                    "timed out"
                };
                return Err(format!("{why}; its output:\n{}", s.lines.join("\n")));
            }
            s = cv
                .wait_timeout(s, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// Which receiver an [`External`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The spec's "Express.js Webhook Handler"; answers 200 or 401.
    Express,
    /// The spec's "Python Flask Webhook Handler"; answers 200 or 401.
    Flask,
    /// `standardwebhooks.Webhook.verify` on every POST; answers 204 or 401.
    Standard,
}

impl Kind {
    fn command(self) -> (&'static str, Vec<&'static str>) {
        match self {
            Kind::Express => ("node", vec!["run_express.js"]),
            Kind::Flask => ("python3", vec!["-u", "run_flask.py"]),
            Kind::Standard => ("python3", vec!["-u", "standard_verify.py"]),
        }
    }

    /// Panics, naming the install command, unless its program and packages are there.
    fn require(self) {
        let why = format!("the {self:?} webhook receiver");
        match self {
            Kind::Express => tools::require_node_package("express", &why),
            Kind::Flask => tools::require_python_module("flask", &why),
            Kind::Standard => tools::require_python_module("standardwebhooks", &why),
        }
    }

    /// The status it answers to a delivery it accepts.
    pub fn accepted(self) -> u16 {
        match self {
            Kind::Express | Kind::Flask => 200,
            Kind::Standard => 204,
        }
    }
}

/// A receiver running as a child process on 127.0.0.1, on a port the OS
/// chose (PORT=0; the process prints it). Killed on drop; its output is
/// printed then if the test is panicking.
pub struct External {
    pub kind: Kind,
    pub port: u16,
    child: Child,
    /// Held open: the process exits when it closes (EXIT_ON_STDIN_EOF), so
    /// a test process that dies without dropping this leaves nothing behind.
    stdin: Option<ChildStdin>,
    out: Lines,
}

/// The spec's Express receiver, `X-CCTelegram-Signature` over `JSON.stringify(req.body)`.
pub fn start_express(secret: &str) -> External {
    External::start(Kind::Express, secret)
}

/// The spec's Flask receiver, `X-CCTelegram-Signature` over the raw body.
pub fn start_flask(secret: &str) -> External {
    External::start(Kind::Flask, secret)
}

/// The reference Standard Webhooks verifier (`webhook-*` headers).
pub fn start_standard(secret: &str) -> External {
    External::start(Kind::Standard, secret)
}

impl External {
    /// Starts `kind` with `CCTELEGRAM_WEBHOOK_SECRET=secret` (no NUL bytes)
    /// and waits until it accepts connections.
    pub fn start(kind: Kind, secret: &str) -> External {
        kind.require();
        let (program, args) = kind.command();
        let hint = "run `tests/run` as root to install the receivers' packages";
        let mut child = Command::new(program)
            .args(&args)
            .current_dir(receivers_dir())
            .env("PORT", "0")
            .env("CCTELEGRAM_WEBHOOK_SECRET", secret)
            .env("EXIT_ON_STDIN_EOF", "1")
            .env("PYTHONUNBUFFERED", "1")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start the {kind:?} receiver ({program}: {e}); {hint}")
            });
        let out = Lines::default();
        out.collect(child.stdout.take().expect("stdout"));
        out.collect(child.stderr.take().expect("stderr"));
        let stdin = child.stdin.take();
        let listening = out.wait(START_DEADLINE, |lines| {
            lines.iter().find_map(|l| {
                let addr = l.strip_prefix("LISTENING 127.0.0.1:")?;
                addr.trim().parse::<u16>().ok()
            })
        });
        match listening {
            Ok(port) => External {
                kind,
                port,
                child,
                stdin,
                out,
            },
            Err(text) => {
                let _ = child.kill();
                let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
                panic!("the {kind:?} receiver did not start listening ({status}): {text}\n{hint}");
            }
        }
    }

    /// `http://127.0.0.1:PORT{path}`, e.g. `url("/webhook/events")`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Everything it printed so far, stdout and stderr interleaved.
    pub fn lines(&self) -> Vec<String> {
        self.out.snapshot()
    }

    /// Waits for a line that satisfies `pred` and returns it; panics with
    /// the output after `deadline` or if the process is gone.
    pub fn wait_for_line(&self, pred: impl Fn(&str) -> bool, deadline: Duration) -> String {
        self.out
            .wait(deadline, |lines| lines.iter().find(|l| pred(l)).cloned())
            .unwrap_or_else(|text| panic!("{:?} receiver: no matching line: {text}", self.kind))
    }

    /// All requests logged so far, in order.
    pub fn requests(&self) -> Vec<Logged> {
        self.lines()
            .iter()
            .filter_map(|l| Logged::parse(l))
            .collect()
    }

    /// Statuses it answered to requests for `path`, in order.
    pub fn statuses(&self, path: &str) -> Vec<u16> {
        statuses_for(&self.requests(), path)
    }

    /// Waits until at least `n` requests for `path` are logged; returns the
    /// statuses of all of them.
    pub fn wait_for_statuses(&self, path: &str, n: usize, deadline: Duration) -> Vec<u16> {
        self.out
            .wait(deadline, |lines| {
                let logged: Vec<Logged> = lines.iter().filter_map(|l| Logged::parse(l)).collect();
                let statuses = statuses_for(&logged, path);
                (statuses.len() >= n).then_some(statuses)
            })
            .unwrap_or_else(|text| {
                panic!(
                    "{:?} receiver: fewer than {n} requests for {path}: {text}",
                    self.kind
                )
            })
    }
}

fn statuses_for(logged: &[Logged], path: &str) -> Vec<u16> {
    logged
        .iter()
        .filter(|r| r.path == path)
        .map(|r| r.status)
        .collect()
}

impl Drop for External {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- {:?} receiver output ---\n{}",
                self.kind,
                self.lines().join("\n")
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Recorder
// ---------------------------------------------------------------------------

/// One request the [`Recorder`] received, recorded on arrival.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path without the query string, as sent.
    pub path: String,
    pub query: String,
    /// Names lowercased, values trimmed, in the order sent.
    pub headers: Vec<(String, String)>,
    /// The body bytes exactly as received.
    pub body: Vec<u8>,
    /// When the whole request had been read.
    pub at: Instant,
    /// What the recorder answered; 0 if it aborted the connection.
    pub status: u16,
}

impl Recorded {
    /// First header with this (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// The body as UTF-8; panics if it is not.
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("UTF-8 body")
    }

    /// The body parsed as JSON; panics if it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

#[derive(Debug, Clone)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
}

impl Reply {
    fn new(status: u16, headers: &[(&str, &str)]) -> Reply {
        let headers = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        Reply { status, headers }
    }
}

struct Script {
    log: Vec<Recorded>,
    /// One-shot answers, used before `default`.
    next: VecDeque<Reply>,
    default: Reply,
    down: bool,
    slow: Duration,
}

/// An in-process receiver on 127.0.0.1 that records every request and
/// answers 200 `{"status":"received"}` unless scripted otherwise. Any path
/// and method is accepted. Stopped on drop.
pub struct Recorder {
    server: http::Server,
    state: Arc<(Mutex<Script>, Condvar)>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::start()
    }
}

impl Recorder {
    pub fn start() -> Recorder {
        let state = Arc::new((
            Mutex::new(Script {
                log: Vec::new(),
                next: VecDeque::new(),
                default: Reply::new(200, &[]),
                down: false,
                slow: Duration::ZERO,
            }),
            Condvar::new(),
        ));
        let shared = state.clone();
        let server = http::Server::start(Arc::new(move |req: &Request| answer(&shared, req)));
        Recorder { server, state }
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.url())
    }

    pub fn port(&self) -> u16 {
        self.server.addr.port()
    }

    fn script(&self) -> MutexGuard<'_, Script> {
        lock(&self.state.0)
    }

    /// The next `n` requests get `status` (after any answers already queued).
    pub fn fail_next(&self, n: usize, status: u16) {
        self.respond_next(n, status, &[]);
    }

    /// The next `n` requests get `status` with these extra headers, e.g.
    /// `respond_next(1, 429, &[("Retry-After", "1")])`.
    pub fn respond_next(&self, n: usize, status: u16, headers: &[(&str, &str)]) {
        let reply = Reply::new(status, headers);
        self.script().next.extend(std::iter::repeat_n(reply, n));
    }

    /// Every request without a queued answer gets this from now on
    /// (`respond_with(200, &[])` restores the default).
    pub fn respond_with(&self, status: u16, headers: &[(&str, &str)]) {
        self.script().default = Reply::new(status, headers);
    }

    /// While down, each request is read and recorded (status 0), then its
    /// connection is closed without an answer. Queued answers wait.
    pub fn set_down(&self, down: bool) {
        self.script().down = down;
    }

    /// Each answer is held back this long (counted from the request's arrival).
    pub fn set_slow(&self, delay: Duration) {
        self.script().slow = delay;
    }

    /// Stops listening for good: further connections are refused.
    pub fn stop(&mut self) {
        self.server.stop();
    }

    /// All requests so far, in order of arrival.
    pub fn requests(&self) -> Vec<Recorded> {
        self.script().log.clone()
    }

    /// Waits until at least `n` requests arrived; returns all of them.
    pub fn wait_for(&self, n: usize, deadline: Duration) -> Vec<Recorded> {
        self.wait_until(deadline, &format!("{n} requests"), |r| r.len() >= n)
    }

    /// Waits until `cond` holds for the requests so far; returns them.
    /// Panics after `deadline`, saying `what` it waited for and what came.
    pub fn wait_until(
        &self,
        deadline: Duration,
        what: &str,
        cond: impl Fn(&[Recorded]) -> bool,
    ) -> Vec<Recorded> {
        let (m, cv) = &*self.state;
        let end = Instant::now() + deadline;
        let mut s = lock(m);
        while !cond(&s.log) {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let got = summary(&s.log);
                drop(s); // no panic while holding the lock
                panic!("timed out after {deadline:?} waiting for {what}; received:\n{got}");
            }
            s = cv
                .wait_timeout(s, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        s.log.clone()
    }
}

/// One line per request, for failure messages.
pub fn summary(log: &[Recorded]) -> String {
    let lines: Vec<String> = log
        .iter()
        .map(|r| {
            format!(
                "  {} {} -> {} ({} bytes) {}",
                r.method,
                r.path,
                r.status,
                r.body.len(),
                String::from_utf8_lossy(&r.body)
                    .chars()
                    .take(200)
                    .collect::<String>()
            )
        })
        .collect();
    if lines.is_empty() {
        "  (nothing)".to_string()
    } else {
        lines.join("\n")
    }
}

fn answer(state: &(Mutex<Script>, Condvar), req: &Request) -> Response {
    let at = Instant::now();
    let (reply, down, slow) = {
        let mut s = lock(&state.0);
        let (reply, down) = if s.down {
            (Reply::new(0, &[]), true)
        } else {
            let default = s.default.clone();
            (s.next.pop_front().unwrap_or(default), false)
        };
        s.log.push(Recorded {
            method: req.method.clone(),
            path: req.path.clone(),
            query: req.query.clone(),
            headers: req.headers.clone(),
            body: req.body.clone(),
            at,
            status: reply.status,
        });
        state.1.notify_all();
        (reply, down, s.slow)
    };
    // The recorder plays a slow server on this connection's own thread.
    let left = (at + slow).saturating_duration_since(Instant::now());
    if !left.is_zero() {
        std::thread::sleep(left);
    }
    if down {
        return Response::abort();
    }
    let body = if (200..300).contains(&reply.status) {
        r#"{"status":"received"}"#.to_string()
    } else {
        format!(r#"{{"error":"scripted {}"}}"#, reply.status)
    };
    let body = if reply.status == 204 {
        String::new()
    } else {
        body
    };
    let mut response = Response::new(reply.status, "application/json", body);
    response.headers.extend(reply.headers);
    response
}

// ---------------------------------------------------------------------------
// Signatures (CONTRACT.md section 6)
// ---------------------------------------------------------------------------

/// First header with this (case-insensitive) name.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

pub fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    hmac::sign(&key, data).as_ref().to_vec()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 (RFC 4648 section 4) with padding.
pub fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Standard base64, padded or not; None on any other character or a
/// length no encoding has.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    if s.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = B64.iter().position(|&b| b == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// The Standard Webhooks key for `secret`: its UTF-8 bytes, or for a
/// secret written `whsec_<base64>`, the decoded base64 (a `whsec_` secret
/// that is not valid base64 is taken as plain text here).
pub fn standard_key(secret: &str) -> Vec<u8> {
    secret
        .strip_prefix("whsec_")
        .and_then(base64_decode)
        .unwrap_or_else(|| secret.as_bytes().to_vec())
}

/// `sha256=<hex HMAC-SHA256(secret's UTF-8 bytes, body)>`.
pub fn sign_cctelegram(secret: &str, body: &[u8]) -> String {
    format!("sha256={}", hex(&hmac_sha256(secret.as_bytes(), body)))
}

/// `v1,<base64 HMAC-SHA256(standard_key(secret), "{id}.{timestamp}.{body}")>`.
pub fn sign_standard(secret: &str, id: &str, timestamp: &str, body: &[u8]) -> String {
    let mut content = format!("{id}.{timestamp}.").into_bytes();
    content.extend_from_slice(body);
    let tag = hmac_sha256(&standard_key(secret), &content);
    format!("v1,{}", base64_encode(&tag))
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// The headers of one attempt as CONTRACT.md section 6 lists them
/// (without the retry headers), signed now, with delivery id `id`.
pub fn signed_headers(secret: &str, id: &str, body: &[u8]) -> Vec<(String, String)> {
    let ts = unix_now().to_string();
    [
        ("Content-Type", "application/json".to_string()),
        ("User-Agent", "CCTelegram-Bridge/test".to_string()),
        ("X-CCTelegram-Signature", sign_cctelegram(secret, body)),
        ("X-CCTelegram-Timestamp", ts.clone()),
        ("X-CCTelegram-Delivery", id.to_string()),
        ("webhook-id", id.to_string()),
        ("webhook-timestamp", ts.clone()),
        ("webhook-signature", sign_standard(secret, id, &ts, body)),
    ]
    .into_iter()
    .map(|(n, v)| (n.to_string(), v))
    .collect()
}

/// Whether `X-CCTelegram-Signature` is `sha256=<hex HMAC-SHA256(secret, body)>`.
/// The signature only: the timestamp's freshness is not checked here.
pub fn verify_cctelegram(secret: &str, headers: &[(String, String)], body: &[u8]) -> bool {
    let Some(tag) = header(headers, "x-cctelegram-signature")
        .and_then(|v| v.strip_prefix("sha256="))
        .and_then(hex_decode)
    else {
        return false;
    };
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    hmac::verify(&key, body, &tag).is_ok()
}

/// Whether one of the space-separated `v1,<base64>` entries of
/// `webhook-signature` is the HMAC of `"{webhook-id}.{webhook-timestamp}.{body}"`
/// under [`standard_key`]. The signature only: the timestamp's freshness
/// is not checked here (the Standard verifier process does check it).
pub fn verify_standard(secret: &str, headers: &[(String, String)], body: &[u8]) -> bool {
    let (Some(id), Some(ts), Some(sigs)) = (
        header(headers, "webhook-id"),
        header(headers, "webhook-timestamp"),
        header(headers, "webhook-signature"),
    ) else {
        return false;
    };
    let mut content = format!("{id}.{ts}.").into_bytes();
    content.extend_from_slice(body);
    let key = hmac::Key::new(hmac::HMAC_SHA256, &standard_key(secret));
    sigs.split(' ').any(|sig| {
        sig.strip_prefix("v1,")
            .and_then(base64_decode)
            .is_some_and(|tag| hmac::verify(&key, &content, &tag).is_ok())
    })
}
