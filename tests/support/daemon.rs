//! Runs the real `cctelegram` binary against loopback servers, in its own
//! temporary directories, and captures what it prints.
#![allow(dead_code)]

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

pub const TOKEN: &str = "123456:TESTtokenSECRETvalue_abc";
pub const BIN: &str = env!("CARGO_BIN_EXE_cctelegram");

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("cct-{tag}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Output of a process, collected line by line as it comes.
#[derive(Clone, Default)]
pub struct Output(Arc<(Mutex<String>, Condvar)>);

impl Output {
    fn collect(&self, r: impl std::io::Read + Send + 'static) {
        Output::collect_into(r, vec![self.clone()]);
    }

    /// Appends each line of `r` to every one of `outs`.
    fn collect_into(r: impl std::io::Read + Send + 'static, outs: Vec<Output>) {
        std::thread::spawn(move || {
            for line in BufReader::new(r).lines().map_while(Result::ok) {
                for out in &outs {
                    let (m, cv) = &*out.0;
                    let mut s = m.lock().unwrap_or_else(|p| p.into_inner());
                    s.push_str(&line);
                    s.push('\n');
                    cv.notify_all();
                }
            }
        });
    }

    /// Waits until `find` finds something in the output; returns it.
    pub fn wait_match<T>(
        &self,
        what: &str,
        deadline: Duration,
        find: impl Fn(&str) -> Option<T>,
    ) -> T {
        let (m, cv) = &*self.0;
        let end = Instant::now() + deadline;
        let mut s = m.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(v) = find(&s) {
                return v;
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let text = s.clone();
                drop(s); // a panic while holding the lock would poison it
                panic!("timed out waiting for {what} in output:\n{text}");
            }
            s = cv
                .wait_timeout(s, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    pub fn text(&self) -> String {
        self.0 .0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Waits until the output contains `needle`.
    pub fn wait_for(&self, needle: &str, deadline: Duration) {
        let (m, cv) = &*self.0;
        let end = Instant::now() + deadline;
        let mut s = m.lock().unwrap();
        while !s.contains(needle) {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let text = s.clone();
                drop(s); // a panic while holding the lock would poison it
                panic!("timed out waiting for {needle:?} in output:\n{text}");
            }
            s = cv.wait_timeout(s, left).unwrap().0;
        }
    }
}

/// The directories of one daemon, kept across restarts.
pub struct Setup {
    pub root: TempDir,
    pub events: PathBuf,
    pub responses: PathBuf,
    pub state: PathBuf,
    pub config: PathBuf,
}

impl Setup {
    /// `chats` are the target chat ids; `extra` is appended to the config.
    pub fn new(tag: &str, api_url: &str, chats: &[i64], extra: &str) -> Setup {
        let root = TempDir::new(tag);
        let events = root.0.join("events");
        let responses = root.0.join("responses");
        let state = root.0.join("state");
        let config = root.0.join("config.toml");
        let chats: Vec<String> = chats.iter().map(|c| c.to_string()).collect();
        let text = format!(
            r#"[telegram]
bot_token = "{TOKEN}"
allowed_users = [111]
chat_ids = [{chats}]
api_url = "{api_url}"

[paths]
events_dir = "{events}"
responses_dir = "{responses}"
state_dir = "{state}"

[limits]
per_chat_per_second = 100000
per_group_per_minute = 6000000
global_per_second = 100000

[health]
listen = ""
{extra}
"#,
            chats = chats.join(", "),
            events = events.display(),
            responses = responses.display(),
            state = state.display(),
        );
        fs::write(&config, text).unwrap();
        fs::create_dir_all(&events).unwrap();
        Setup {
            root,
            events,
            responses,
            state,
            config,
        }
    }

    pub fn start(&self) -> Daemon {
        Daemon::spawn(&["run", "--config", self.config.to_str().unwrap()])
    }

    /// Writes an event the recommended way: temporary name, then rename.
    pub fn drop_event(&self, name: &str, body: &str) {
        let tmp = self.events.join(format!(".{name}.tmp"));
        fs::write(&tmp, body).unwrap();
        fs::rename(&tmp, self.events.join(name)).unwrap();
    }

    /// Writes an event in place, in two writes, as the original MCP server does.
    pub fn write_in_place(&self, name: &str, body: &str) {
        let mut f = fs::File::create(self.events.join(name)).unwrap();
        let (a, b) = body.split_at(body.len() / 2);
        f.write_all(a.as_bytes()).unwrap();
        f.flush().unwrap();
        f.write_all(b.as_bytes()).unwrap();
    }

    pub fn failed(&self) -> PathBuf {
        self.events.join("failed")
    }

    /// Names of the files left in `dir` (not hidden).
    pub fn files(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| !n.starts_with('.'))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

/// A simple event body.
pub fn event(kind: &str, title: &str) -> String {
    serde_json::json!({"type": kind, "title": title, "description": "d"}).to_string()
}

/// A running `cctelegram` process; killed on drop.
pub struct Daemon {
    pub child: Child,
    /// stdout and stderr, interleaved by line.
    pub out: Output,
    /// stdout alone.
    pub stdout: Output,
}

impl Daemon {
    pub fn spawn(args: &[&str]) -> Daemon {
        Daemon::spawn_with(BIN, &[], args)
    }

    /// The binary with `args`, these environment variables set on top of
    /// the test's (HOME, TELEGRAM_API_URL...), and stdin a pipe the test
    /// may write to (`child.stdin`).
    pub fn spawn_env(args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env_remove("TELEGRAM_BOT_TOKEN")
            .env_remove("CCTELEGRAM_CONFIG")
            .env("CCTELEGRAM_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::piped());
        Daemon::start_cmd(cmd)
    }

    /// Runs `program` with `prefix` then `args` as its arguments: another
    /// build of the binary, or an emulator and the binary.
    pub fn spawn_with(
        program: impl AsRef<std::ffi::OsStr>,
        prefix: &[&std::ffi::OsStr],
        args: &[&str],
    ) -> Daemon {
        let mut cmd = Command::new(program);
        cmd.args(prefix)
            .args(args)
            .env_remove("TELEGRAM_BOT_TOKEN")
            .env_remove("CCTELEGRAM_CONFIG")
            .env("CCTELEGRAM_LOG", "info")
            .stdin(Stdio::null());
        Daemon::start_cmd(cmd)
    }

    fn start_cmd(mut cmd: Command) -> Daemon {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start cctelegram (or its emulator)");
        let (out, stdout) = (Output::default(), Output::default());
        Output::collect_into(
            child.stdout.take().unwrap(),
            vec![out.clone(), stdout.clone()],
        );
        out.collect(child.stderr.take().unwrap());
        Daemon { child, out, stdout }
    }

    /// Waits for the process to exit; its exit code. Panics after `deadline`.
    pub fn wait_exit(&mut self, deadline: Duration) -> i32 {
        let end = Instant::now() + deadline;
        // std has no wait with a timeout; the exit is observed every 10 ms.
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < end,
                "still running after {deadline:?}; output:\n{}",
                self.out.text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `kill -9`: no chance to clean up.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!("--- cctelegram output ---\n{}", self.out.text());
        }
    }
}

/// Runs the binary to completion; returns exit code and all output.
pub fn run_cli(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("TELEGRAM_BOT_TOKEN")
        .env_remove("CCTELEGRAM_CONFIG")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run cctelegram");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}
