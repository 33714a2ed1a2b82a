//! Pieces shared by the robustness tests (issue 9): starting a daemon and
//! waiting for its poll, signals, waiting on the file system with a
//! deadline, response files, config edits, webhook config, file-tree
//! snapshots and loopback HTTP GETs.
//!
//! It uses the `daemon`, `telegram` and `receivers` modules, so a test
//! declares those too: `#[path = "support/harness.rs"] mod harness;`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::daemon::{Daemon, Setup};
use crate::telegram::FakeTelegram;

pub const WAIT: Duration = Duration::from_secs(30);
/// The allowed user of `Setup::new`, also its private chat.
pub const ME: i64 = 111;

/// Starts the daemon of `setup` and waits until it long-polls.
pub fn start_polling(tg: &FakeTelegram, setup: &Setup) -> Daemon {
    let before = tg.calls("getUpdates").len();
    let d = setup.start();
    wait_polling(tg, &d, before);
    d
}

/// Waits until a getUpdates call beyond the first `before` is in flight:
/// this daemon polls (a killed one's long poll may still look in flight).
pub fn wait_polling(tg: &FakeTelegram, d: &Daemon, before: usize) {
    let end = Instant::now() + WAIT;
    while Instant::now() < end {
        // Short slices, so a daemon that died is reported with its output.
        if tg.try_wait_until(Duration::from_millis(250), |s| {
            let calls = s.calls("getUpdates");
            calls.len() > before && calls[before..].iter().any(|c| c.status == 0)
        }) {
            return;
        }
        assert!(
            d.child_running(),
            "the daemon exited before polling:\n{}",
            d.out.text()
        );
    }
    panic!("no getUpdates long poll within {WAIT:?}:\n{}", d.out.text());
}

/// Polls `cond` every 20 ms until it holds; panics after `deadline` with
/// `what` and the output of `d`, if given, or at once if `d` exits. For
/// conditions on files and HTTP answers, which have no condition variable
/// to wait on.
pub fn wait_fs(deadline: Duration, what: &str, d: Option<&Daemon>, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    while !cond() {
        if let Some(d) = d.filter(|d| !d.child_running()) {
            panic!(
                "the daemon exited while waiting for {what}:\n{}",
                d.out.text()
            );
        }
        if Instant::now() >= end {
            let out = d.map(|d| d.out.text()).unwrap_or_default();
            panic!("timed out after {deadline:?} waiting for {what}\n{out}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Daemon {
    /// Sends `sig` (libc::SIGTERM, ...) to the process.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid has no memory effects.
        let rc = unsafe { libc::kill(self.child.id() as i32, sig) };
        assert_eq!(rc, 0, "kill({}, {sig})", self.child.id());
    }

    /// Whether the process is still running (without needing `&mut`).
    pub fn child_running(&self) -> bool {
        // SAFETY: signal 0 only checks that the pid exists; a zombie still
        // exists, so also look at its state in /proc.
        let pid = self.child.id();
        let alive = unsafe { libc::kill(pid as i32, 0) } == 0;
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rsplit(')').next().unwrap_or("").trim().chars().next();
        alive && state != Some('Z')
    }

    /// Waits up to `deadline` for the process to exit; its exit code, or
    /// `None` if it is still running (or was killed by a signal: -signal).
    pub fn exit_within(&mut self, deadline: Duration) -> Option<i32> {
        use std::os::unix::process::ExitStatusExt;
        let end = Instant::now() + deadline;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return Some(st.code().unwrap_or_else(|| -st.signal().unwrap_or(0)));
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// An approval request for `task` with Approve and Deny.
pub fn approval(task: &str, title: &str) -> String {
    json!({"type": "approval_request", "title": title, "task_id": task, "event_id": task,
           "description": "Go ahead?",
           "data": {"options": ["Approve", "Deny"], "requires_response": true}})
    .to_string()
}

/// A notification with a chosen event id.
pub fn notice(id: &str, title: &str) -> String {
    json!({"type": "info_notification", "title": title, "event_id": id, "description": "d"})
        .to_string()
}

/// Response files in `dir`, parsed (a file that does not parse is `Null`).
pub fn responses(dir: &Path) -> Vec<(String, Value)> {
    Setup::files(dir)
        .into_iter()
        .filter(|n| n.ends_with(".json"))
        .map(|n| {
            let v = fs::read(dir.join(&n))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or(Value::Null);
            (n, v)
        })
        .collect()
}

/// `[webhook]` and `[webhook.retry]` tables for these endpoints, with fast retries.
pub fn webhook_toml(secret: &str, endpoints: &[String]) -> String {
    let list: Vec<String> = endpoints.iter().map(|e| format!("{e:?}")).collect();
    format!(
        "[webhook]\nenabled = true\nsecret = {secret:?}\nendpoints = [{}]\ntimeout_seconds = 5\n\n\
         [webhook.retry]\nmax_attempts = 5\ninitial_delay_ms = 100\nmax_delay_ms = 1000\n\
         backoff_multiplier = 2.0\n",
        list.join(", ")
    )
}

/// Rewrites the config of `setup`: every `from` becomes `to`; panics if
/// `from` is not there, so a harness change cannot silently void a test.
pub fn edit_config(setup: &Setup, from: &str, to: &str) {
    let text = fs::read_to_string(&setup.config).unwrap();
    assert!(text.contains(from), "{from:?} not in the config:\n{text}");
    fs::write(&setup.config, text.replace(from, to)).unwrap();
}

/// Serves /health on `port` instead of the harness's `listen = ""`.
pub fn listen_on(setup: &Setup, port: u16) {
    edit_config(
        setup,
        "[health]\nlisten = \"\"\n",
        &format!("[health]\ninterval_seconds = 1\nlisten = \"127.0.0.1:{port}\"\n"),
    );
}

pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// GET on 127.0.0.1:`port`: status and body, or `None` if nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// The `status` of GET /health, if it answers with JSON.
pub fn health_status(port: u16) -> Option<String> {
    let (_, body) = http_get(port, "/health")?;
    let v: Value = serde_json::from_str(&body).ok()?;
    v["status"].as_str().map(str::to_string)
}

/// Every path under `root` (relative), with its size; directories as -1.
pub fn tree(root: &Path) -> BTreeMap<PathBuf, i64> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, i64>) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            match e.file_type() {
                Ok(t) if t.is_dir() => {
                    out.insert(rel, -1);
                    walk(root, &p, out);
                }
                _ => {
                    let len = e.metadata().map(|m| m.len() as i64).unwrap_or(0);
                    out.insert(rel, len);
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// A small seeded random number generator (xorshift64*), so a failing run
/// can be repeated with the seed it printed.
pub struct Rng(u64);

impl Rng {
    /// Seed from `var` if set, else from the clock; prints it either way.
    pub fn from_env(var: &str) -> Rng {
        let seed = std::env::var(var)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("random seed: {seed} (repeat with {var}={seed})");
        Rng(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `lo..hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo).max(1)
    }
}

/// Waits until chat `chat` got a message containing `needle`; fails at
/// once, with the output, if the daemon exits meanwhile.
pub fn wait_message(tg: &FakeTelegram, d: &Daemon, chat: &str, needle: &str, deadline: Duration) {
    let end = Instant::now() + deadline;
    loop {
        let found = tg.try_wait_until(Duration::from_millis(250), |s| {
            s.messages
                .iter()
                .any(|m| m.chat_id == chat && m.text.contains(needle))
        });
        if found {
            return;
        }
        assert!(
            d.child_running(),
            "the daemon exited before {needle:?} reached chat {chat}:\n{}",
            d.out.text()
        );
        assert!(
            Instant::now() < end,
            "{needle:?} did not reach chat {chat} within {deadline:?}:\n{}",
            d.out.text()
        );
    }
}

/// Copies the directory tree `from` into `to` (created), keeping modes.
pub fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap().flatten() {
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if e.file_type().unwrap().is_dir() {
            copy_tree(&src, &dst);
        } else {
            fs::copy(&src, &dst).unwrap();
        }
    }
}

/// The `event_processed` requests `log` holds for event `id` (any chat).
pub fn processed<'a>(
    log: &'a [crate::receivers::Recorded],
    id: &str,
) -> Vec<&'a crate::receivers::Recorded> {
    log.iter()
        .filter(|r| {
            serde_json::from_slice::<Value>(&r.body)
                .is_ok_and(|v| v["webhook_type"] == "event_processed" && v["event"]["id"] == id)
        })
        .collect()
}

/// How many messages containing `needle` chat `chat` got.
pub fn count_in(tg: &FakeTelegram, chat: &str, needle: &str) -> usize {
    tg.messages()
        .iter()
        .filter(|m| m.chat_id == chat && m.text.contains(needle))
        .count()
}

/// Runs the binary with `args` until it exits or `deadline` passes (then
/// it is killed): its exit code (`None`: still running at the deadline)
/// and everything it printed, read after it ended.
pub fn run_timed(args: &[&str], env: &[(&str, &str)], deadline: Duration) -> (Option<i32>, String) {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("cct-out-{}-{n}", std::process::id()));
    let file = fs::File::create(&path).unwrap();
    let mut cmd = std::process::Command::new(crate::daemon::BIN);
    cmd.args(args)
        .env_remove("TELEGRAM_BOT_TOKEN")
        .env_remove("CCTELEGRAM_CONFIG")
        .stdin(std::process::Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("run cctelegram");
    let end = Instant::now() + deadline;
    let code = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st.code().unwrap_or(-1));
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let out = String::from_utf8_lossy(&fs::read(&path).unwrap_or_default()).into_owned();
    let _ = fs::remove_file(&path);
    (code, out)
}
