//! Pipeline benchmark: event file in, `sendMessage` out, against the fake
//! Bot API on 127.0.0.1. Prints the figures for the README beside their
//! targets, then a markdown table to paste.
//!
//! `cargo bench --bench pipeline` measures the binary cargo builds for the
//! bench profile; `bench/run` builds the stripped static musl release binary
//! and passes it in `CCTELEGRAM_BIN`, which is the build the RSS and size
//! targets are about.
//!
//! Nothing leaves the machine: the daemon's `api_url` is the fake's
//! `http://127.0.0.1:PORT`, and its health listener is off.
//!
//! The state directory is made under `TMPDIR` (default /tmp). Its
//! filesystem matters: the daemon fsyncs before each send, so
//! `TMPDIR=/dev/shm` (tmpfs, where fsync is free) shows the pipeline without
//! the disk. The run also says how busy other processes kept the CPUs, as
//! on a 2-core machine a compiler running beside it moves the figures.
//!
//! Two more measurements follow the pipeline's. A button press to its
//! response file: the daemon long-polls `getUpdates` on the fake, the press
//! is pushed into that poll, and inotify on `responses_dir` sees the file
//! renamed in. And signed webhook deliveries to a receiver run here, on a
//! second daemon with `[webhook]` on (the first runs without webhooks, so
//! its figures stay comparable with earlier runs). Those are timed twice:
//! during the event burst, where they can go no faster than the messages
//! that cause them; and on their own, by starting the daemon on an outbox
//! that already holds the deliveries (written with the library's own
//! `Delivery` type). A receiver that holds its answers is no way to fill
//! the outbox: with the outbox as it is at this writing, once its one
//! endpoint has no free slot the outbox loop re-arms a zero timer and the
//! daemon's single executor thread spins, starving the sender.

#[path = "../bench/floor.rs"]
mod floor;
#[path = "../tests/support/telegram.rs"]
mod telegram;

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use inotify::{Inotify, WatchMask};
use ring::hmac;
use serde_json::{json, Value};
use telegram::http::{Request, Response, Server};
use telegram::FakeTelegram;

use cctelegram::approvals::Approvals;
use cctelegram::telegram::render::button_key;
use cctelegram::webhook::deliver::Delivery;

/// Start-up to the first `getUpdates` on x86_64 (issue "Ship to the edge").
const STARTUP_MS: f64 = 50.0;
const TOKEN: &str = "123456:BENCHtoken_x";
const CHAT: i64 = 111;
const WARMUP_EVENTS: usize = 10;
const LATENCY_EVENTS: usize = 300;
/// Events 1.5 s apart, each finding the daemon (and the floor) idle.
const IDLE_EVENTS: usize = 40;
const IDLE_GAP: Duration = Duration::from_millis(1500);
/// Targets against the floor (issue 15), as ratios measured in one run.
const IDLE_P50_RATIO: f64 = 1.5;
const IDLE_P95_RATIO: f64 = 2.0;
const BURST_RATIO: f64 = 2.0;
const HOOKS_BURST_RATIO: f64 = 2.5;
/// Press to response file: at most the disk's own new-file time plus this.
const PRESS_OVER_DISK_MS: f64 = 0.5;
const BURST_EVENTS: usize = 1000;
const SETTLE: Duration = Duration::from_secs(2);
const IDLE_WINDOW: Duration = Duration::from_secs(60);
const WAIT: Duration = Duration::from_secs(30);
const BURST_WAIT: Duration = Duration::from_secs(120);
/// Button presses, each on a fresh approval.
const PRESSES: usize = 100;
const WEBHOOK_SECRET: &str = "bench-secret";
const MAX_IN_FLIGHT: u64 = 4;
/// Delivery ids of the deliveries the bench puts in the outbox itself.
const SEEDED: &str = "msg_bench";
/// The larger outbox drained, to show how the rate depends on the backlog.
const BIG_OUTBOX: usize = 5000;

const MIB: f64 = 1024.0 * 1024.0;
/// Above this share of the CPU taken by other processes, say the figures are suspect.
const BUSY_PERCENT: f64 = 20.0;

// Targets.
const P50_MS: f64 = 1.0;
const P95_MS: f64 = 3.0;
const IDLE_RSS_MIB: f64 = 3.0;
const PEAK_RSS_MIB: f64 = 8.0;
const IDLE_CPU_S_PER_MIN: f64 = 0.05;
const BINARY_MIB: f64 = 3.0;
const PRESS_MS: f64 = 2.0;
const WEBHOOKS_PER_S: f64 = 1000.0;

/// `CCT_BENCH_STOP_AFTER=after-idle|idle|burst|press` ends the run after that
/// section: for trying a change, not for the figures in the README.
fn stop_after(section: &str) {
    if std::env::var("CCT_BENCH_STOP_AFTER").is_ok_and(|s| s == section) {
        println!("(CCT_BENCH_STOP_AFTER={section}: stopping here)");
        std::process::exit(0);
    }
}

/// `CCT_BENCH_QUICK=1`: a tenth of the after-idle and latency events and
/// a 2 s idle window, to reach the burst quickly while trying a change.
fn quick() -> bool {
    std::env::var_os("CCT_BENCH_QUICK").is_some()
}

fn scaled(n: usize) -> usize {
    if quick() {
        n.div_ceil(10)
    } else {
        n
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "MISS"
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

// ---- the run's directories and the daemon ----

/// A daemon's directory under the system temp dir, removed at the end.
struct Workdir {
    root: PathBuf,
    events: PathBuf,
    responses: PathBuf,
    queue: PathBuf,
    /// The approvals' button files.
    buttons: PathBuf,
    outbox: PathBuf,
    config: PathBuf,
    log: PathBuf,
}

impl Workdir {
    /// `extra` is appended to the config (more tables).
    fn new(api_url: &str, name: &str, extra: &str) -> Workdir {
        let root = std::env::temp_dir().join(format!("cct-bench-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).expect("create the bench directory");
        let events = root.join("events");
        let state = root.join("state");
        let config = root.join("config.toml");
        let text = format!(
            r#"[telegram]
bot_token = "{TOKEN}"
allowed_users = [{CHAT}]
chat_ids = [{CHAT}]
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
{extra}"#,
            events = events.display(),
            responses = root.join("responses").display(),
            state = state.display(),
        );
        fs::write(&config, text).expect("write the config");
        fs::create_dir_all(&events).expect("create the events directory");
        Workdir {
            responses: root.join("responses"),
            queue: state.join("queue"),
            buttons: state.join("buttons"),
            outbox: state.join("outbox"),
            log: root.join("daemon.log"),
            root,
            events,
            config,
        }
    }

    /// Writes `body` to a hidden temporary name; returns the final name's path.
    fn stage(&self, name: &str, body: &str) -> (PathBuf, PathBuf) {
        let tmp = self.events.join(format!(".{name}.tmp"));
        fs::write(&tmp, body).expect("write an event");
        (tmp, self.events.join(format!("{name}.json")))
    }

    /// Entries still in the daemon's send queue.
    fn queued(&self) -> usize {
        entries(&self.queue)
    }

    /// Webhook deliveries still in the outbox (in flight or waiting).
    fn outboxed(&self) -> usize {
        entries(&self.outbox)
    }

    /// Waits until the number of deliveries in the outbox satisfies `ok`;
    /// returns when it saw that.
    fn wait_outbox(&self, what: &str, ok: impl Fn(usize) -> bool) -> Instant {
        let end = Instant::now() + WAIT;
        loop {
            let now = self.outboxed();
            if ok(now) {
                return Instant::now();
            }
            assert!(
                Instant::now() < end,
                "the webhook outbox holds {now} deliveries, not {what}"
            );
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// Waits until the daemon has finished with everything it accepted.
    fn wait_queue_empty(&self) {
        let end = Instant::now() + WAIT;
        while self.queued() > 0 {
            assert!(Instant::now() < end, "the send queue did not drain");
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

/// Files in `dir` not hidden (temporary files start with a dot).
fn entries(dir: &Path) -> usize {
    fs::read_dir(dir).map_or(0, |d| {
        d.filter_map(Result::ok)
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .count()
    })
}

impl Drop for Workdir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// The running daemon; killed on drop, its log shown if the bench failed.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn start(bin: &Path, dir: &Workdir) -> Daemon {
        let log = File::create(&dir.log).expect("create the daemon log");
        let mut cmd = Command::new(bin);
        cmd.args(["run", "--config"])
            .arg(&dir.config)
            // The environment overrides the config; none of it may point
            // the daemon anywhere but the fakes on 127.0.0.1.
            .env_remove("TELEGRAM_BOT_TOKEN")
            .env_remove("TELEGRAM_ALLOWED_USERS")
            .env_remove("TELEGRAM_API_URL")
            .env_remove("CC_TELEGRAM_EVENTS_DIR")
            .env_remove("CC_TELEGRAM_RESPONSES_DIR")
            .env_remove("CC_TELEGRAM_STATE_DIR")
            .env_remove("CCTELEGRAM_WEBHOOK_SECRET")
            .env_remove("CCTELEGRAM_CONFIG")
            .env("CCTELEGRAM_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        // It dies with the benchmark, however the benchmark ends.
        // SAFETY: prctl with integer arguments, between fork and exec.
        unsafe {
            use std::os::unix::process::CommandExt as _;
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        Daemon {
            child,
            log: dir.log.clone(),
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn proc(&self, file: &str) -> String {
        let path = format!("/proc/{}/{file}", self.pid());
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"))
    }

    /// A `VmRSS:`-style line of /proc/PID/status, in KiB.
    fn status_kib(&self, key: &str) -> u64 {
        self.proc("status")
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in /proc/{}/status", self.pid()))
    }

    /// utime + stime of the whole process, in clock ticks.
    fn cpu_ticks(&self) -> u64 {
        process_ticks(&self.pid().to_string())
    }

    /// Nanoseconds on CPU and context switches, summed over live threads
    /// (finer than ticks); and the number of threads.
    fn threads(&self) -> (u64, u64, usize) {
        let dir = format!("/proc/{}/task", self.pid());
        let (mut ns, mut switches, mut n) = (0, 0, 0);
        for t in fs::read_dir(&dir)
            .expect("list threads")
            .filter_map(Result::ok)
        {
            let p = t.path();
            let Ok(sched) = fs::read_to_string(p.join("schedstat")) else {
                continue; // exited meanwhile
            };
            ns += sched
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
            let status = fs::read_to_string(p.join("status")).unwrap_or_default();
            switches += status
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>();
            n += 1;
        }
        (ns, switches, n)
    }

    fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().expect("wait for the daemon") {
            panic!("the daemon exited ({status})");
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = fs::read_to_string(&self.log).unwrap_or_default();
            eprintln!("--- cctelegram stderr ---\n{log}");
        }
    }
}

/// utime + stime of a process (`"self"` or a pid), in clock ticks.
fn process_ticks(who: &str) -> u64 {
    let path = format!("/proc/{who}/stat");
    let stat = fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    // Fields after the command name, which may contain spaces: state is
    // field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')').expect("a /proc stat line") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64
}

/// CPU time the other processes on the machine take while we measure: on
/// a small machine a compiler running beside the bench moves the figures.
struct Background {
    busy: u64,
    ours: u64,
    at: Instant,
}

impl Background {
    /// Busy ticks of all CPUs together, from /proc/stat.
    fn machine_busy() -> u64 {
        let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
        let f: Vec<u64> = stat
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .filter_map(|v| v.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal (guest time is
        // already in user).
        f.iter().take(8).sum::<u64>() - f.get(3).unwrap_or(&0) - f.get(4).unwrap_or(&0)
    }

    fn start(d: &Daemon) -> Background {
        Background {
            busy: Background::machine_busy(),
            ours: process_ticks("self") + d.cpu_ticks(),
            at: Instant::now(),
        }
    }

    /// Percent of the machine's CPU capacity used by other processes since `start`.
    fn percent(&self, d: &Daemon) -> f64 {
        let busy = Background::machine_busy().saturating_sub(self.busy);
        let ours = (process_ticks("self") + d.cpu_ticks()).saturating_sub(self.ours);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let capacity = self.at.elapsed().as_secs_f64() * cores * clock_ticks_per_second();
        (busy.saturating_sub(ours) as f64 / capacity * 100.0).min(100.0)
    }
}

fn event(id: &str, title: &str) -> String {
    json!({
        "type": "task_completion",
        "title": title,
        "description": "Benchmark event: written to a temporary name, then renamed in.",
        "event_id": id,
    })
    .to_string()
}

/// Waits for the message whose text contains `marker`, among those after
/// the first `from`; returns when the fake accepted it.
fn wait_marker(tg: &FakeTelegram, from: usize, marker: &str) -> Instant {
    tg.wait_until(WAIT, &format!("a message with {marker:?}"), |s| {
        s.messages
            .get(from..)
            .is_some_and(|m| m.iter().any(|m| m.text.contains(marker)))
    });
    let msgs = tg.messages();
    msgs[from..]
        .iter()
        .find(|m| m.text.contains(marker))
        .map(|m| m.at)
        .unwrap()
}

/// What one burst of events measured.
struct Burst {
    t0: Instant,
    /// How long writing and renaming the files took.
    written: Duration,
    /// When the fake accepted the last of the burst's messages.
    last: Instant,
    /// Rename -> sendMessage per event, ms, sorted.
    lat: Vec<f64>,
}

impl Burst {
    fn span(&self) -> Duration {
        self.last - self.t0
    }

    fn rate(&self) -> f64 {
        self.lat.len() as f64 / self.span().as_secs_f64()
    }
}

/// Writes `n` events (temporary name + rename) as fast as possible, while
/// the daemon works; waits for their messages, after the first `seen`, and
/// checks each was sent exactly once.
fn run_burst(tg: &FakeTelegram, dir: &Workdir, seen: usize, tag: &str, n: usize) -> Burst {
    let mut renamed = Vec::with_capacity(n);
    let t0 = Instant::now();
    for i in 0..n {
        let marker = format!("{tag}-{i:04}-end");
        let (tmp, dst) = dir.stage(&marker, &event(&format!("bench-{tag}-{i}"), &marker));
        fs::rename(&tmp, &dst).unwrap();
        renamed.push(Instant::now());
    }
    let written = t0.elapsed();
    tg.wait_messages(seen + n, BURST_WAIT);
    let msgs = tg.messages();
    let prefix = format!("{tag}-");
    let mut last = t0;
    let mut got = vec![0usize; n];
    let mut lat = Vec::with_capacity(n);
    for m in &msgs[seen..] {
        let Some(i) = m
            .text
            .split(prefix.as_str())
            .nth(1)
            .and_then(|r| r.get(..4)?.parse::<usize>().ok())
            .filter(|&i| i < n)
        else {
            continue;
        };
        got[i] += 1;
        last = last.max(m.at);
        lat.push(ms(m.at.saturating_duration_since(renamed[i])));
    }
    let missing = got.iter().filter(|&&k| k == 0).count();
    let repeated = got.iter().filter(|&&k| k > 1).count();
    assert!(
        missing == 0 && repeated == 0,
        "burst {tag}: {missing} events missing, {repeated} sent more than once"
    );
    lat.sort_by(f64::total_cmp);
    Burst {
        t0,
        written,
        last,
        lat,
    }
}

/// CPU nanoseconds (schedstat) of each live thread of `who` (`"self"` or a
/// pid), by thread id, with the thread's name.
fn thread_times(who: &str) -> HashMap<String, (String, u64)> {
    schedstat(who, 0)
}

/// Times each live thread of `who` was put on a CPU (schedstat's third
/// field), by thread id, with the thread's name.
fn thread_runs(who: &str) -> HashMap<String, (String, u64)> {
    schedstat(who, 2)
}

/// Field `field` of /proc/WHO/task/*/schedstat, by thread id, with the
/// thread's name.
fn schedstat(who: &str, field: usize) -> HashMap<String, (String, u64)> {
    let mut out = HashMap::new();
    let Ok(dir) = fs::read_dir(format!("/proc/{who}/task")) else {
        return out;
    };
    for t in dir.filter_map(Result::ok) {
        let p = t.path();
        let Ok(sched) = fs::read_to_string(p.join("schedstat")) else {
            continue; // exited meanwhile
        };
        let value = sched
            .split_whitespace()
            .nth(field)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        let name = fs::read_to_string(p.join("comm")).unwrap_or_default();
        out.insert(
            t.file_name().to_string_lossy().into_owned(),
            (name.trim().to_string(), value),
        );
    }
    out
}

/// CPU seconds spent between two [`thread_times`], per thread name (a
/// trailing `-N` dropped, so `blocking-3` counts as `blocking`), with the
/// number of threads; most first. Threads that exited in between are lost.
fn cpu_by_name(
    before: &HashMap<String, (String, u64)>,
    after: &HashMap<String, (String, u64)>,
) -> Vec<(String, usize, f64)> {
    let mut by: HashMap<String, (usize, u64)> = HashMap::new();
    for (tid, (name, ns)) in after {
        let was = before.get(tid).map_or(0, |(_, ns)| *ns);
        let group = name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '-');
        let e = by.entry(group.to_string()).or_default();
        e.0 += 1;
        e.1 += ns.saturating_sub(was);
    }
    let mut v: Vec<(String, usize, f64)> = by
        .into_iter()
        .map(|(name, (n, ns))| (name, n, ns as f64 / 1e9))
        .collect();
    v.sort_by(|a, b| b.2.total_cmp(&a.2));
    v
}

/// `cpu_by_name`'s figures as `name (threads) N ms, ...`.
fn cpu_text(cpu: &[(String, usize, f64)]) -> String {
    cpu.iter()
        .map(|(name, n, s)| format!("{name} ({n}) {:.0} ms", s * 1e3))
        .collect::<Vec<_>>()
        .join(", ")
}

// ---- button presses ----

/// Blocks (poll(2) on the inotify descriptor, no busy loop) until a file
/// whose name starts with `prefix` is renamed into the watched directory;
/// returns its name and when it was seen.
fn wait_moved_to(ino: &mut Inotify, buf: &mut [u8], prefix: &str) -> (String, Instant) {
    let end = Instant::now() + WAIT;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "no {prefix}* file appeared within {WAIT:?}"
        );
        let mut pfd = libc::pollfd {
            fd: ino.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, for the duration of the call.
        let n = unsafe { libc::poll(&mut pfd, 1, left.as_millis().max(1) as libc::c_int) };
        let seen = Instant::now();
        if n <= 0 {
            continue; // timed out or interrupted: the deadline decides
        }
        let events = match ino.read_events(buf) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => panic!("read inotify events: {e}"),
        };
        for e in events {
            if let Some(name) = e.name.and_then(|n| n.to_str()) {
                if name.starts_with(prefix) && name.ends_with(".json") {
                    return (name.to_string(), seen);
                }
            }
        }
    }
}

/// Reads whatever inotify events are queued, so a wait starts clean.
fn drain_inotify(ino: &mut Inotify, buf: &mut [u8]) {
    while ino.read_events(buf).is_ok_and(|e| e.count() > 0) {}
}

// ---- the webhook receiver ----

/// One request the receiver got.
struct Hit {
    at: Instant,
    body: Vec<u8>,
    signature: Option<String>,
    delivery: Option<String>,
    /// Carried `X-CCTelegram-Retry-Count`: not a first attempt.
    retry: bool,
    /// An `event_processed` payload.
    event: bool,
}

#[derive(Default)]
struct Inbox {
    hits: Vec<Hit>,
    events: usize,
    /// `arrived` is signalled when `events` reaches this.
    want: usize,
}

/// A keep-alive HTTP/1.1 receiver on 127.0.0.1 (the tests' server, one
/// thread per connection) that records each request and answers 200 at once.
struct Receiver {
    inbox: Mutex<Inbox>,
    arrived: Condvar,
}

impl Receiver {
    fn start() -> (Arc<Receiver>, Server) {
        let r = Arc::new(Receiver {
            inbox: Mutex::new(Inbox::default()),
            arrived: Condvar::new(),
        });
        let me = r.clone();
        let server = Server::start(Arc::new(move |req: &Request| me.handle(req)));
        (r, server)
    }

    fn lock(&self) -> MutexGuard<'_, Inbox> {
        self.inbox.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn handle(&self, req: &Request) -> Response {
        let at = Instant::now();
        const KIND: &[u8] = br#""webhook_type":"event_processed""#;
        let hit = Hit {
            at,
            event: req.body.windows(KIND.len()).any(|w| w == KIND),
            signature: req.header("x-cctelegram-signature").map(str::to_string),
            delivery: req.header("x-cctelegram-delivery").map(str::to_string),
            retry: req.header("x-cctelegram-retry-count").is_some(),
            body: req.body.clone(),
        };
        let mut inbox = self.lock();
        if hit.event {
            inbox.events += 1;
            if inbox.events == inbox.want {
                self.arrived.notify_all();
            }
        }
        inbox.hits.push(hit);
        drop(inbox);
        Response::new(200, "text/plain", "")
    }

    /// Waits (on a condition variable, woken once) until `n` event_processed
    /// deliveries arrived in all.
    fn wait_events(&self, n: usize, deadline: Duration) {
        let end = Instant::now() + deadline;
        let mut inbox = self.lock();
        inbox.want = n;
        while inbox.events < n {
            let left = end.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "the webhook receiver got {} of {n} event_processed deliveries",
                inbox.events
            );
            inbox = self
                .arrived
                .wait_timeout(inbox, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Whether `X-CCTelegram-Signature` is `sha256=` and the hex HMAC-SHA256 of
/// the body under the secret, checked with ring (constant time).
fn signature_ok(key: &hmac::Key, hit: &Hit) -> bool {
    hit.signature
        .as_deref()
        .and_then(|s| s.strip_prefix("sha256="))
        .and_then(unhex)
        .is_some_and(|tag| hmac::verify(key, &hit.body, &tag).is_ok())
}

/// The `event.id` of an event_processed body.
fn event_id(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    Some(v["event"]["id"].as_str()?.to_string())
}

/// What draining a pre-filled outbox measured.
struct Drain {
    n: usize,
    /// When the first delivery arrived, after the daemon was spawned.
    first_delay: Duration,
    /// First -> last delivery at the receiver.
    span: Duration,
    /// (n - 1) / span.
    rate: f64,
    /// Spawn -> outbox empty, seconds.
    window: f64,
    /// Daemon CPU seconds per thread name, spawn -> outbox empty.
    cpu: Vec<(String, usize, f64)>,
    daemon_s: f64,
    main_s: f64,
    /// CPU seconds of this process (receiver, fakes) meanwhile.
    bench_s: f64,
    /// Percent of the machine used by other processes meanwhile.
    busy: f64,
}

/// Fills the (stopped) daemon's outbox with `n` deliveries of `bodies`
/// (cycled) to `endpoint`, starts the daemon, and times the receiver
/// getting them all; `before` event_processed deliveries arrived earlier.
fn drain(
    bin: &Path,
    dir: &Workdir,
    receiver: &Receiver,
    endpoint: &str,
    bodies: &[String],
    n: usize,
    before: usize,
) -> Drain {
    let prefix = format!("{SEEDED}{n}_");
    let created_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    for (i, body) in bodies.iter().cycle().take(n).enumerate() {
        let d = Delivery::new(
            format!("{prefix}{i:08}"),
            "event_processed",
            endpoint.to_string(),
            body.clone(),
            created_ms,
        );
        let path = dir.outbox.join(format!("{}.json", d.id));
        fs::write(&path, serde_json::to_vec(&d).unwrap())
            .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }
    assert_eq!(dir.outboxed(), n, "deliveries put in the outbox");
    let s0 = thread_times("self");
    let spawned = Instant::now();
    let mut daemon = Daemon::start(bin, dir);
    let pid = daemon.pid().to_string();
    let background = Background::start(&daemon);
    receiver.wait_events(before + n, BURST_WAIT);
    let emptied = dir.wait_outbox("0", |k| k == 0);
    let (d1, s1) = (thread_times(&pid), thread_times("self"));
    let busy = background.percent(&daemon);
    daemon.assert_running();
    drop(daemon);
    let arrived: Vec<Instant> = receiver
        .lock()
        .hits
        .iter()
        .filter(|h| {
            h.delivery
                .as_deref()
                .is_some_and(|d| d.starts_with(&prefix))
        })
        .map(|h| h.at)
        .collect();
    assert_eq!(
        arrived.len(),
        n,
        "deliveries from the filled outbox received"
    );
    let first = *arrived.iter().min().unwrap();
    let span = *arrived.iter().max().unwrap() - first;
    let cpu = cpu_by_name(&HashMap::new(), &d1);
    let daemon_s = cpu.iter().map(|c| c.2).sum();
    let main_s = cpu
        .iter()
        .find(|c| c.0 == "cctelegram")
        .map_or(0.0, |c| c.2);
    Drain {
        n,
        first_delay: first - spawned,
        span,
        rate: (n - 1) as f64 / span.as_secs_f64(),
        window: (emptied - spawned).as_secs_f64(),
        cpu,
        daemon_s,
        main_s,
        bench_s: cpu_by_name(&s0, &s1).iter().map(|c| c.2).sum(),
        busy,
    }
}

// ---- the binary ----

struct BinaryFacts {
    size: u64,
    /// A 64-bit little-endian ELF file (not, say, a wrapper script).
    elf: bool,
    x86_64: bool,
    /// The program interpreter of a dynamically linked binary.
    interp: Option<String>,
    pie: bool,
    stripped: bool,
}

/// Reads what `file` would say from the ELF headers.
fn inspect(bin: &Path) -> BinaryFacts {
    let b = fs::read(bin).unwrap_or_else(|e| panic!("read {}: {e}", bin.display()));
    if !(b.len() > 64 && b.starts_with(b"\x7fELF") && b[4] == 2 && b[5] == 1) {
        return BinaryFacts {
            size: b.len() as u64,
            elf: false,
            x86_64: false,
            interp: None,
            pie: false,
            stripped: false,
        };
    }
    let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as usize;
    let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap()) as usize;
    let (phoff, shoff) = (u64_at(32), u64_at(40));
    let (phentsize, phnum, shentsize, shnum) = (u16_at(54), u16_at(56), u16_at(58), u16_at(60));
    let mut interp = None;
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        if u32_at(ph) == 3 {
            // PT_INTERP: a NUL-terminated path.
            let (off, len) = (u64_at(ph + 8), u64_at(ph + 32));
            let path = &b[off..off + len];
            let path = path.split(|&c| c == 0).next().unwrap_or_default();
            interp = Some(String::from_utf8_lossy(path).into_owned());
        }
    }
    // SHT_SYMTAB is what strip removes.
    let symtab = (0..shnum).any(|i| u32_at(shoff + i * shentsize + 4) == 2);
    BinaryFacts {
        size: b.len() as u64,
        elf: true,
        x86_64: u16_at(18) == 62,
        interp,
        pie: u16_at(16) == 3,
        stripped: !symtab,
    }
}

// ---- the filesystem under the state directory ----

/// The filesystem type of `dir`, from statfs.
fn fs_type(dir: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).unwrap();
    // SAFETY: statfs only writes into the zeroed struct we pass.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return "unknown".into();
    }
    match st.f_type as u64 {
        0xEF53 => "ext4".into(),
        0x0102_1994 => "tmpfs (fsync is free)".into(),
        0x794C_7630 => "overlayfs".into(),
        0x5846_5342 => "xfs".into(),
        0x9123_683E => "btrfs".into(),
        0x0102_1997 => "9p".into(),
        other => format!("type {other:#x}"),
    }
}

/// Median cost of an fdatasync of a small new file and of a directory
/// fsync, in `dir`: what the daemon pays per event before it sends.
fn sync_costs(dir: &Path) -> (f64, f64) {
    let (mut data, mut dirsync) = (Vec::new(), Vec::new());
    for i in 0..50 {
        let tmp = dir.join(format!(".probe{i}.tmp"));
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .unwrap();
        f.write_all(&[b'x'; 600]).unwrap();
        let t = Instant::now();
        f.sync_data().unwrap();
        data.push(ms(t.elapsed()));
        fs::rename(&tmp, dir.join(format!("probe{i}"))).unwrap();
        let d = File::open(dir).unwrap();
        let t = Instant::now();
        d.sync_all().unwrap();
        dirsync.push(ms(t.elapsed()));
    }
    for i in 0..50 {
        let _ = fs::remove_file(dir.join(format!("probe{i}")));
    }
    data.sort_by(f64::total_cmp);
    dirsync.sort_by(f64::total_cmp);
    (percentile(&data, 50.0), percentile(&dirsync, 50.0))
}

/// What writing one durable new file costs on this disk after a quiet
/// moment, the floor under the press-to-response-file latency: p50, p95.
fn new_file_floor(dir: &Path) -> (f64, f64) {
    let mut v = Vec::new();
    for i in 0..40 {
        std::thread::sleep(Duration::from_millis(50));
        let tmp = dir.join(format!(".floor{i}.tmp"));
        let t = Instant::now();
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .unwrap();
        f.write_all(&[b'x'; 400]).unwrap();
        f.sync_data().unwrap();
        fs::rename(&tmp, dir.join(format!("floor{i}"))).unwrap();
        v.push(ms(t.elapsed()));
        File::open(dir).unwrap().sync_all().unwrap();
    }
    for i in 0..40 {
        let _ = fs::remove_file(dir.join(format!("floor{i}")));
    }
    v.sort_by(f64::total_cmp);
    (percentile(&v, 50.0), percentile(&v, 95.0))
}

// ---- the run ----

/// `cctelegram mcp` on `dir`'s config once it has answered `initialize`,
/// `tools/list` and one `tools/call` and gone idle: its VmRSS, in KiB, and
/// its idle CPU in ticks over `IDLE_WINDOW`.
fn mcp_idle(bin: &Path, dir: &Workdir) -> (u64, u64) {
    use std::io::BufRead;
    let mut child = Command::new(bin)
        .args(["mcp", "--config", dir.config.to_str().unwrap()])
        .env("CCTELEGRAM_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start cctelegram mcp");
    let mut stdin = child.stdin.take().unwrap();
    let requests = [
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"bench","version":"0"}}}"#,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#,
        r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"list_event_types","arguments":{}}}"#,
    ];
    for r in requests {
        writeln!(stdin, "{r}").unwrap();
    }
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    for _ in 0..3 {
        line.clear();
        out.read_line(&mut line).expect("an MCP answer");
        assert!(
            line.contains("\"result\""),
            "cctelegram mcp answered {line}"
        );
    }
    std::thread::sleep(SETTLE);
    let status = |key: &str| -> u64 {
        fs::read_to_string(format!("/proc/{}/status", child.id()))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    let ticks = || -> u64 {
        let stat = fs::read_to_string(format!("/proc/{}/stat", child.id())).unwrap_or_default();
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<u64> = rest
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        // After the name: state is not a number, so utime and stime are the 11th and 12th numbers.
        f.get(10).copied().unwrap_or(0) + f.get(11).copied().unwrap_or(0)
    };
    let rss = status("VmRSS");
    let t0 = ticks();
    std::thread::sleep(IDLE_WINDOW);
    let idle_ticks = ticks() - t0;
    drop(stdin);
    let _ = child.wait();
    (rss, idle_ticks)
}

/// The attachment of the upload measurement.
const UPLOAD_MIB: usize = 30;

struct UploadRun {
    total: Duration,
    upload: Duration,
    rss_before: u64,
    rss_after: u64,
    identical: bool,
}

/// A fresh daemon sends one 30 MiB log: its peak RSS (the daemon's only
/// work is this upload, so VmHWM is the upload's), and how fast the body
/// reaches the fake (first body byte read to the last).
fn upload_bench(bin: &Path, tg: &FakeTelegram) -> UploadRun {
    let dir = Workdir::new(&tg.url(), "upload", "");
    let files = dir.events.join("files");
    fs::create_dir_all(&files).expect("create events/files");
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let log: Vec<u8> = (0..UPLOAD_MIB << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    fs::write(files.join("big.log"), &log).expect("write the log");
    let before_polls = tg.calls("getUpdates").len();
    let mut daemon = Daemon::start(bin, &dir);
    tg.wait_until(WAIT, "the upload daemon's getUpdates", |s| {
        s.calls("getUpdates").len() > before_polls
    });
    let rss_before = daemon.status_kib("VmHWM");
    let uploads = tg.uploads().len();
    let read0 = tg.body_bytes_read();
    let body = json!({"type": "info_notification", "title": "upload bench",
        "data": {"attachments": ["big.log"]}})
    .to_string();
    let (tmp, dst) = dir.stage("upload", &body);
    let t0 = Instant::now();
    fs::rename(&tmp, &dst).expect("rename the event");
    // Body bytes beyond a few KiB mean the file part is being read.
    let end = Instant::now() + BURST_WAIT;
    let first = loop {
        if tg.body_bytes_read() > read0 + 64 * 1024 {
            break Instant::now();
        }
        assert!(Instant::now() < end, "the upload did not start");
        std::thread::sleep(Duration::from_micros(200));
    };
    tg.wait_until(BURST_WAIT, "the upload", |s| s.uploads.len() > uploads);
    let done = Instant::now();
    daemon.assert_running();
    let rss_after = daemon.status_kib("VmHWM");
    let got = tg.uploads().pop().expect("the upload");
    let digest = |b: &[u8]| {
        ring::digest::digest(&ring::digest::SHA256, b)
            .as_ref()
            .to_vec()
    };
    UploadRun {
        total: done - t0,
        upload: done - first,
        rss_before,
        rss_after,
        identical: digest(&got.bytes) == digest(&log),
    }
}

fn main() {
    // This executable is also the floor (bench/floor.rs), started by itself.
    floor::run_if_asked();
    // `cargo bench` passes `--bench` (and any filter); there is one benchmark.
    let bin = std::env::var_os("CCTELEGRAM_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_cctelegram")));
    let bin = fs::canonicalize(&bin).unwrap_or(bin);
    let facts = inspect(&bin);
    let path_text = bin.to_string_lossy().into_owned();
    let musl = match &facts.interp {
        Some(i) => i.contains("musl"),
        None => path_text.contains("-musl/"),
    };
    let release = path_text.contains("/release/");
    let the_build =
        facts.elf && facts.x86_64 && facts.interp.is_none() && facts.stripped && musl && release;
    let kind = if !facts.elf {
        "not an ELF file: a wrapper script?".to_string()
    } else {
        format!(
            "{}, {}{}, {}, {}",
            if facts.x86_64 { "x86_64" } else { "not x86_64" },
            match &facts.interp {
                Some(i) => format!("dynamically linked ({i})"),
                None => "statically linked".into(),
            },
            if facts.pie { ", PIE" } else { "" },
            if facts.stripped {
                "stripped"
            } else {
                "not stripped"
            },
            if musl { "musl" } else { "glibc" },
        )
    };
    println!("cctelegram pipeline benchmark");
    println!("binary:  {} ({kind})", bin.display());
    if !the_build {
        println!(
            "NOTE:    not a stripped static x86_64 musl release build; the size and RSS \
             targets are for that build (bench/run builds it and measures it)"
        );
    }
    let tg = FakeTelegram::start();
    let dir = Workdir::new(&tg.url(), "pipeline", "");
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!(
        "machine: {cores} CPU(s), Linux {}; state on {} at {}",
        kernel.trim(),
        fs_type(&dir.root),
        dir.root.display()
    );
    let (fdatasync_ms, dirsync_ms) = sync_costs(&dir.root);
    println!(
        "disk:    fdatasync of a small file {fdatasync_ms:.3} ms, directory fsync \
         {dirsync_ms:.3} ms (median of 50)"
    );
    println!("fake Bot API: {}", tg.url());
    println!();

    // Start-up, then warm the connection and the blocking pool.
    let started = Instant::now();
    let mut daemon = Daemon::start(&bin, &dir);
    tg.wait_until(Duration::from_secs(10), "the first getUpdates", |s| {
        !s.calls("getUpdates").is_empty()
    });
    let first_poll = ms(tg.calls("getUpdates")[0].at - started);
    println!(
        "start-up: spawn to the first getUpdates {first_poll:.1} ms   target < 50 ms   {}",
        verdict(first_poll < STARTUP_MS)
    );
    let mut seen = 0;
    for i in 0..WARMUP_EVENTS {
        let marker = format!("warm-{i:04}-end");
        let (tmp, dst) = dir.stage(&format!("w{i}"), &event(&format!("bench-w{i}"), &marker));
        fs::rename(&tmp, &dst).unwrap();
        let at = wait_marker(&tg, seen, &marker);
        if i == 0 {
            println!(
                "start-up: spawn to first message delivered {:.1} ms",
                ms(at - started)
            );
        }
        seen += 1;
        dir.wait_queue_empty();
    }

    // The floor (bench/floor.rs): its own process and fake Bot API.
    let mut fl = Floor::start();

    // After idle: the floor and the daemon take turns, each event 1.5 s
    // after that program's previous one.
    let (mut f_idle, mut d_idle) = (Vec::new(), Vec::new());
    for i in 0..scaled(IDLE_EVENTS) {
        let t = Instant::now();
        f_idle.push(fl.one(&format!("fidle-{i:04}-end")));
        std::thread::sleep((t + IDLE_GAP / 2).saturating_duration_since(Instant::now()));
        d_idle.push(daemon_one(
            &tg,
            &dir,
            &mut seen,
            &format!("idle-{i:04}-end"),
        ));
        std::thread::sleep((t + IDLE_GAP).saturating_duration_since(Instant::now()));
    }
    daemon.assert_running();
    f_idle.sort_by(f64::total_cmp);
    d_idle.sort_by(f64::total_cmp);
    let (fi50, fi95) = (percentile(&f_idle, 50.0), percentile(&f_idle, 95.0));
    let (di50, di95) = (percentile(&d_idle, 50.0), percentile(&d_idle, 95.0));
    println!(
        "after idle: event file renamed in -> sendMessage accepted, {} events {:.1} s \
         apart, the floor's and the daemon's in turn",
        scaled(IDLE_EVENTS),
        IDLE_GAP.as_secs_f64()
    );
    println!(
        "  floor p50 {fi50:.3} ms p95 {fi95:.3} ms; cctelegram p50 {di50:.3} ms ({:.2}x, target \
         <= {IDLE_P50_RATIO}x {}) p95 {di95:.3} ms ({:.2}x, target <= {IDLE_P95_RATIO}x {})",
        di50 / fi50,
        verdict(di50 <= IDLE_P50_RATIO * fi50),
        di95 / fi95,
        verdict(di95 <= IDLE_P95_RATIO * fi95)
    );
    println!();
    stop_after("after-idle");

    // Latency, one event at a time, each after the daemon went quiet.
    let mut f_lat = Vec::with_capacity(LATENCY_EVENTS);
    for i in 0..scaled(LATENCY_EVENTS) {
        f_lat.push(fl.one(&format!("flat-{i:04}-end")));
        std::thread::sleep(Duration::from_millis(2));
    }
    f_lat.sort_by(f64::total_cmp);
    let background = Background::start(&daemon);
    let mut lat = Vec::with_capacity(LATENCY_EVENTS);
    for i in 0..scaled(LATENCY_EVENTS) {
        lat.push(daemon_one(&tg, &dir, &mut seen, &format!("lat-{i:04}-end")));
        std::thread::sleep(Duration::from_millis(2));
    }
    let busy_latency = background.percent(&daemon);
    daemon.assert_running();
    lat.sort_by(f64::total_cmp);
    let (p50, p95, p99, max) = (
        percentile(&lat, 50.0),
        percentile(&lat, 95.0),
        percentile(&lat, 99.0),
        lat[lat.len() - 1],
    );
    let mean = lat.iter().sum::<f64>() / lat.len() as f64;
    println!(
        "latency: event file renamed in -> sendMessage accepted, {LATENCY_EVENTS} events, one at a time"
    );
    println!(
        "  p50 {p50:.3} ms   target < {P50_MS} ms   {}",
        verdict(p50 < P50_MS)
    );
    println!(
        "  p95 {p95:.3} ms   target < {P95_MS} ms   {}",
        verdict(p95 < P95_MS)
    );
    println!(
        "  p99 {p99:.3} ms   max {max:.3} ms   min {:.3} ms   mean {mean:.3} ms",
        lat[0]
    );
    println!(
        "  the floor, just before, the same way: p50 {:.3} ms ({:.2}x) p95 {:.3} ms ({:.2}x)",
        percentile(&f_lat, 50.0),
        p50 / percentile(&f_lat, 50.0),
        percentile(&f_lat, 95.0),
        p95 / percentile(&f_lat, 95.0)
    );
    println!("  other processes used {busy_latency:.0}% of the machine's CPU meanwhile");
    println!();

    // Idle.
    std::thread::sleep(SETTLE);
    let idle_window = if quick() {
        Duration::from_secs(2)
    } else {
        IDLE_WINDOW
    };
    let idle_rss = daemon.status_kib("VmRSS");
    let (ticks0, (ns0, sw0, _)) = (daemon.cpu_ticks(), daemon.threads());
    let runs0 = thread_runs(&daemon.pid().to_string());
    let polls0 = tg.calls("getUpdates").len();
    let t_idle = Instant::now();
    std::thread::sleep(idle_window);
    let (ticks1, (ns1, sw1, nthreads)) = (daemon.cpu_ticks(), daemon.threads());
    let runs1 = thread_runs(&daemon.pid().to_string());
    let polls = tg.calls("getUpdates").len() - polls0;
    let window = t_idle.elapsed().as_secs_f64();
    daemon.assert_running();
    let hz = clock_ticks_per_second();
    let cpu_per_min = (ticks1 - ticks0) as f64 / hz * 60.0 / window;
    let cpu_per_min_ns = ns1.saturating_sub(ns0) as f64 / 1e9 * 60.0 / window;
    let wakeups = sw1.saturating_sub(sw0);
    let idle_rss_mib = idle_rss as f64 / 1024.0;
    println!("idle ({:.0} s after the last event)", SETTLE.as_secs_f64());
    println!(
        "  RSS {idle_rss} KiB = {idle_rss_mib:.2} MiB   target < {IDLE_RSS_MIB} MiB   {}",
        verdict(idle_rss_mib < IDLE_RSS_MIB)
    );
    println!(
        "  CPU {cpu_per_min:.3} s per idle minute (utime+stime over {window:.1} s, \
         {hz} ticks/s)   target <= {IDLE_CPU_S_PER_MIN}   {}",
        verdict(cpu_per_min <= IDLE_CPU_S_PER_MIN)
    );
    println!(
        "  CPU {cpu_per_min_ns:.6} s per idle minute by schedstat (ns), \
         {wakeups} context switches in the window, {nthreads} thread(s)"
    );
    // Wake-ups: times each thread was put on a CPU (schedstat's third
    // field), a few per long poll on the poll thread.
    let mut woke: Vec<(String, u64)> = runs1
        .iter()
        .map(|(tid, (name, n))| {
            let was = runs0.get(tid).map_or(0, |(_, n)| *n);
            (format!("{name} ({tid})"), n.saturating_sub(was))
        })
        .collect();
    woke.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let poll_threads = woke.iter().filter(|(_, n)| *n > 0).count();
    let per_poll = woke.iter().map(|(_, n)| *n).max().unwrap_or(0) as f64 / polls.max(1) as f64;
    // The long poll has a thread of its own ("poll"), which also runs the
    // health checks between polls: it is the only one that may wake.
    let silent = woke
        .iter()
        .filter(|(_, n)| *n > 0)
        .all(|(name, n)| name.starts_with("poll ") && *n <= 4 * (polls as u64 + 1));
    println!(
        "  wake-ups per thread over {window:.0} s, with {polls} long poll(s) answered by the fake \
         (timeout 30 s) in it: {}",
        woke.iter()
            .map(|(name, n)| format!("{name} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "  threads that woke: {poll_threads} ({per_poll:.1} wake-ups per long poll at most); \
         target: only the long poll's own thread   {}",
        verdict(silent)
    );
    println!();
    stop_after("idle");

    // Burst: each file is written and renamed in while the daemon works.
    let own_cpu = |since: &HashMap<String, (String, u64)>| -> f64 {
        cpu_by_name(since, &thread_times("self"))
            .iter()
            .map(|c| c.2)
            .sum()
    };
    let self0 = thread_times("self");
    let fb = run_burst(&fl.tg, &fl.dir, fl.seen, "fburst", BURST_EVENTS);
    let floor_harness_cpu = own_cpu(&self0);
    fl.seen += BURST_EVENTS;
    let background = Background::start(&daemon);
    let pid = daemon.pid().to_string();
    let cpu0 = thread_times(&pid);
    let self0 = thread_times("self");
    let b = run_burst(&tg, &dir, seen, "burst", BURST_EVENTS);
    seen += BURST_EVENTS;
    let busy_burst = background.percent(&daemon);
    let burst_cpu = cpu_by_name(&cpu0, &thread_times(&pid));
    let harness_cpu = own_cpu(&self0);
    dir.wait_queue_empty();
    daemon.assert_running();
    let (burst, rate, written, burst_lat) = (b.span(), b.rate(), b.written, &b.lat);
    let peak = daemon.status_kib("VmHWM");
    let peak_mib = peak as f64 / 1024.0;
    println!("burst: {BURST_EVENTS} events written (temporary name + rename) as fast as possible");
    println!(
        "  first write -> last sendMessage {:.3} s = {rate:.0} events/s (no target); \
         writing the files took {:.3} s",
        burst.as_secs_f64(),
        written.as_secs_f64()
    );
    println!(
        "  per event, rename -> sendMessage: p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms",
        percentile(burst_lat, 50.0),
        percentile(burst_lat, 95.0),
        burst_lat[burst_lat.len() - 1]
    );
    println!(
        "  the floor, just before: {:.3} s; cctelegram {:.2}x the floor's time   target <= \
         {BURST_RATIO}x   {}",
        fb.span().as_secs_f64(),
        burst.as_secs_f64() / fb.span().as_secs_f64(),
        verdict(burst.as_secs_f64() <= BURST_RATIO * fb.span().as_secs_f64())
    );
    println!("  other processes used {busy_burst:.0}% of the machine's CPU meanwhile");
    println!(
        "  CPU time over the burst: cctelegram's threads {}; this benchmark (the writer and \
         the fake Bot API) {:.0} ms ({:.0} ms over the floor's burst)",
        cpu_text(&burst_cpu),
        harness_cpu * 1e3,
        floor_harness_cpu * 1e3
    );
    stop_after("burst");
    println!(
        "  peak RSS (VmHWM) {peak} KiB = {peak_mib:.2} MiB   target < {PEAK_RSS_MIB} MiB   {}",
        verdict(peak_mib < PEAK_RSS_MIB)
    );
    println!();

    // Button presses: an approval request, its message at the fake, then a
    // press of its Approve button (only the first press of an approval
    // writes a file, so each press has its own approval).
    let mut ino = Inotify::init().expect("inotify_init1");
    ino.watches()
        .add(&dir.responses, WatchMask::MOVED_TO)
        .unwrap_or_else(|e| panic!("watch {}: {e}", dir.responses.display()));
    let mut buf = [0u8; 4096];
    let file_prefix = format!("telegram_callback_{CHAT}_");
    let buttons = Approvals::new(
        cctelegram::store::Records::open(dir.buttons.parent().unwrap(), "buttons").unwrap(),
    );
    let background = Background::start(&daemon);
    let (mut press, mut to_answer, mut answer_to_file) = (Vec::new(), Vec::new(), Vec::new());
    let mut not_shown = Vec::new();
    for i in 0..PRESSES {
        let marker = format!("approval-{i:03}-end");
        let task = format!("bench_{i}");
        let data = format!("approve_{task}");
        let body = json!({
            "type": "approval_request",
            "title": format!("Bench approval {marker}"),
            "task_id": task,
            "event_id": format!("bench-a{i}"),
            "data": {"options": ["Approve", "Deny"]},
        });
        let (tmp, dst) = dir.stage(&format!("a{i}"), &body.to_string());
        fs::rename(&tmp, &dst).unwrap();
        wait_marker(&tg, seen, &marker);
        let msgs = tg.messages();
        let m = msgs[seen..]
            .iter()
            .find(|m| m.text.contains(&marker))
            .unwrap();
        assert!(
            m.chat_id == CHAT.to_string()
                && m.reply_markup
                    .as_ref()
                    .is_some_and(|k| k.to_string().contains(&data)),
            "approval {i}: no {data:?} button in {:?}",
            m.reply_markup
        );
        let message_id = m.message_id;
        seen += 1;
        // Start from quiet: the sender has recorded the message on the
        // approval (it may send before it has: a press this fast would beat
        // its bookkeeping, which no person does), its queue entry is gone,
        // and the daemon waits in a long poll.
        let key = button_key(&task);
        let end = Instant::now() + WAIT;
        while !buttons
            .get(&key)
            .ok()
            .flatten()
            .is_some_and(|a| a.messages.contains(&(CHAT.to_string(), message_id)))
        {
            assert!(
                Instant::now() < end,
                "approval {i}: message {message_id} never recorded on it"
            );
            std::thread::sleep(Duration::from_micros(200));
        }
        dir.wait_queue_empty();
        // A person presses seconds after the message arrives; 50 ms lets
        // the file system finish the journal commits of the message's own
        // bookkeeping, which would otherwise be measured as press latency.
        std::thread::sleep(Duration::from_millis(50));
        tg.wait_until(WAIT, "a getUpdates long poll", |s| {
            s.in_flight("getUpdates") > 0
        });
        drain_inotify(&mut ino, &mut buf);
        let polls = |s: &telegram::State| {
            s.calls
                .iter()
                .filter(|c| c.method.eq_ignore_ascii_case("getUpdates"))
                .count()
        };
        let polls_before = tg.calls("getUpdates").len();
        let t0 = Instant::now();
        let query = tg.press(CHAT, "bench", message_id, CHAT, &data);
        let (name, at) = wait_moved_to(&mut ino, &mut buf, &file_prefix);
        press.push(ms(at.saturating_duration_since(t0)));
        // The press is handled once the daemon polls again.
        tg.wait_until(WAIT, "the next getUpdates after the press", |s| {
            polls(s) > polls_before && s.in_flight("getUpdates") > 0
        });
        if !tg.current(message_id).is_some_and(|m| {
            let keys = m.reply_markup.as_ref().map(|k| &k["inline_keyboard"]);
            m.text.contains("✅ Approve")
                && keys.is_none_or(|k| k.as_array().is_none_or(Vec::is_empty))
        }) {
            not_shown.push(i);
        }
        let query = query.to_string();
        // The daemon answers once the file is written: wait for it.
        let is_ours = |c: &serde_json::Value| {
            c.get("callback_query_id")
                .is_some_and(|v| v.as_str().map_or(v.to_string(), str::to_string) == query)
        };
        tg.wait_until(WAIT, "the press's answer", |s| {
            s.calls("answerCallbackQuery")
                .iter()
                .any(|c| is_ours(&c.params))
        });
        let answered = tg
            .calls("answerCallbackQuery")
            .into_iter()
            .find(|c| {
                c.params
                    .get("callback_query_id")
                    .is_some_and(|v| v.as_str().map_or(v.to_string(), str::to_string) == query)
            })
            .map(|c| c.at)
            .expect("the press was answered");
        to_answer.push(ms(answered.saturating_duration_since(t0)));
        answer_to_file.push(ms(answered.saturating_duration_since(at)));
        // telegram_callback_111_<YYYYmmdd>_<HHMMSS>_<update_id>.json, for this press.
        let parts: Vec<&str> = name[file_prefix.len()..]
            .trim_end_matches(".json")
            .split('_')
            .collect();
        let well_named = matches!(parts[..], [d, t, u] if d.len() == 8 && t.len() == 6
            && (d.to_string() + t + u).bytes().all(|c| c.is_ascii_digit()));
        assert!(well_named, "unexpected response file name {name}");
        let path = dir.responses.join(&name);
        let file: Value = serde_json::from_slice(&fs::read(&path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            file["callback_data"] == data.as_str()
                && file["option"] == "Approve"
                && file["update_id"].as_i64() == parts[2].parse().ok(),
            "{name} is not the answer to press {i}: {file}"
        );
    }
    let busy_press = background.percent(&daemon);
    daemon.assert_running();
    drop(ino);
    for v in [&mut press, &mut to_answer, &mut answer_to_file] {
        v.sort_by(f64::total_cmp);
    }
    let (press_p50, press_p95, press_max) = (
        percentile(&press, 50.0),
        percentile(&press, 95.0),
        press[press.len() - 1],
    );
    let press_mean = press.iter().sum::<f64>() / press.len() as f64;
    println!(
        "button press -> response file: {PRESSES} presses, one at a time, each on a fresh approval"
    );
    println!(
        "  (from pushing the callback_query into the pending getUpdates long poll to the \
         rename of telegram_callback_{CHAT}_*.json into responses_dir, seen by inotify; the \
         file's fdatasync comes before the rename and counts, the directory fsync after it does not)"
    );
    println!(
        "  p50 {press_p50:.3} ms   target < {PRESS_MS} ms   {}",
        verdict(press_p50 < PRESS_MS)
    );
    println!(
        "  p95 {press_p95:.3} ms   target < {PRESS_MS} ms   {}",
        verdict(press_p95 < PRESS_MS)
    );
    println!(
        "  max {press_max:.3} ms   min {:.3} ms   mean {press_mean:.3} ms",
        press[0]
    );
    let floor = new_file_floor(&dir.root);
    println!(
        "  the disk's own floor: create, write and fdatasync a new file, then rename it, 50 ms \
         after the last write (as each press is): p50 {:.3} ms, p95 {:.3} ms",
        floor.0, floor.1
    );
    println!(
        "  against the disk: p50 {press_p50:.3} ms <= {:.3} + {PRESS_OVER_DISK_MS} ms   {}",
        floor.0,
        verdict(press_p50 <= floor.0 + PRESS_OVER_DISK_MS)
    );
    println!(
        "  the answer (answerCallbackQuery, sent once the file is written): press -> answer \
         p50 {:.3} ms, file -> answer p50 {:.3} ms",
        percentile(&to_answer, 50.0),
        percentile(&answer_to_file, 50.0)
    );
    println!(
        "  the approval's message showed the outcome (buttons removed, \"✅ Approve: by ...\") \
         after {} of {PRESSES} presses{}",
        PRESSES - not_shown.len(),
        if not_shown.is_empty() {
            String::new()
        } else {
            format!(": NOTE presses {not_shown:?} left their message unchanged")
        }
    );
    println!("  other processes used {busy_press:.0}% of the machine's CPU meanwhile");
    println!();
    drop(daemon);

    stop_after("press");

    // Webhooks: a second daemon, the same config plus [webhook], with its
    // own fake Bot API (two pollers on one token would conflict) and a
    // receiver in this process.
    let (receiver, hook_server) = Receiver::start();
    let hook_url = format!("{}/hook", hook_server.url());
    let tg2 = FakeTelegram::start();
    let webhook_toml = format!(
        "\n[webhook]\nenabled = true\nsecret = \"{WEBHOOK_SECRET}\"\nendpoints = [\"{hook_url}\"]\n\
         max_in_flight = {MAX_IN_FLIGHT}\ntimeout_seconds = 30\n\n\
         [webhook.retry]\ninitial_delay_ms = 50\nmax_attempts = 20\nmax_delay_ms = 200\n"
    );
    let wdir = Workdir::new(&tg2.url(), "webhooks", &webhook_toml);
    let mut wdaemon = Daemon::start(&bin, &wdir);
    let mut wseen = 0;
    for i in 0..WARMUP_EVENTS {
        let marker = format!("warm-{i:04}-end");
        let (tmp, dst) = wdir.stage(&format!("w{i}"), &event(&format!("bench-ww{i}"), &marker));
        fs::rename(&tmp, &dst).unwrap();
        wait_marker(&tg2, wseen, &marker);
        wseen += 1;
        wdir.wait_queue_empty();
        receiver.wait_events(wseen, WAIT);
    }
    wdir.wait_outbox("0", |n| n == 0);

    // 1. The pipeline burst again; each sent message queues one
    // event_processed delivery (its file fsynced), which goes out at once.
    let wpid = wdaemon.pid().to_string();
    let cpu0 = thread_times(&wpid);
    let fb1 = run_burst(&fl.tg, &fl.dir, fl.seen, "fwb1", BURST_EVENTS);
    fl.seen += BURST_EVENTS;
    let background = Background::start(&wdaemon);
    let b1 = run_burst(&tg2, &wdir, wseen, "wb1", BURST_EVENTS);
    wseen += BURST_EVENTS;
    receiver.wait_events(wseen, BURST_WAIT);
    let busy_hooks = background.percent(&wdaemon);
    let b1_cpu = cpu_by_name(&cpu0, &thread_times(&wpid));
    let b1_main = b1_cpu
        .iter()
        .find(|c| c.0 == "cctelegram")
        .map_or(0.0, |c| c.2);
    let b1_window = b1.t0.elapsed().as_secs_f64();
    wdir.wait_queue_empty();
    wdir.wait_outbox("0", |n| n == 0);
    wdaemon.assert_running();
    drop(wdaemon);

    // 2. The outbox alone: the daemon starts on a state directory whose
    // outbox already holds the deliveries, as after a restart during an
    // outage. They carry the bodies the burst just delivered, in the
    // daemon's own file format (its `Delivery`), with new ids. Once with
    // as many as the burst made (the target), once with more, since the
    // outbox's cost per delivery depends on how many wait.
    let bodies: Vec<String> = receiver
        .lock()
        .hits
        .iter()
        .filter(|h| h.event && event_id(&h.body).is_some_and(|id| id.starts_with("bench-wb1-")))
        .map(|h| String::from_utf8_lossy(&h.body).into_owned())
        .collect();
    assert_eq!(
        bodies.len(),
        BURST_EVENTS,
        "bodies of the burst's deliveries"
    );
    let mut drains = Vec::new();
    for n in [BURST_EVENTS, BIG_OUTBOX] {
        let d = drain(&bin, &wdir, &receiver, &hook_url, &bodies, n, wseen);
        wseen += n;
        drains.push(d);
    }
    drop(hook_server);

    // What arrived.
    let inbox = receiver.lock();
    let key = hmac::Key::new(hmac::HMAC_SHA256, WEBHOOK_SECRET.as_bytes());
    let valid = inbox.hits.iter().filter(|h| signature_ok(&key, h)).count();
    let total = inbox.hits.len();
    let retries = inbox.hits.iter().filter(|h| h.retry).count();
    let others = inbox.hits.iter().filter(|h| !h.event).count();
    let ids = inbox
        .hits
        .iter()
        .filter_map(|h| h.delivery.as_deref())
        .collect::<HashSet<&str>>()
        .len();
    let mut during = Vec::new();
    let mut seen_events = HashSet::new();
    for h in inbox.hits.iter().filter(|h| h.event) {
        if let Some(id) = event_id(&h.body).filter(|id| id.starts_with("bench-wb1-")) {
            if !h.delivery.as_deref().is_some_and(|d| d.starts_with(SEEDED)) {
                during.push(h.at);
                seen_events.insert(id);
            }
        }
    }
    drop(inbox);
    assert_eq!(
        seen_events.len(),
        BURST_EVENTS,
        "events of the burst with an event_processed webhook"
    );
    let first = *during.iter().min().unwrap();
    let burst_span = *during.iter().max().unwrap() - first;
    let burst_hooks = (during.len() - 1) as f64 / burst_span.as_secs_f64();
    let (drain_rate, queued) = (drains[0].rate, drains[0].n);
    let busy_drain = drains.iter().map(|d| d.busy).fold(0.0, f64::max);

    println!(
        "webhooks: signed deliveries to a receiver on 127.0.0.1 (keep-alive HTTP/1.1, 200 to \
         every POST at once), max_in_flight = {MAX_IN_FLIGHT}, so at most {} at once to the one \
         endpoint; a second daemon, with its own fake Bot API",
        MAX_IN_FLIGHT - 1
    );
    println!(
        "  during a {BURST_EVENTS}-event burst: first -> last of {BURST_EVENTS} event_processed \
         deliveries {:.3} s = {burst_hooks:.0}/s; the burst's sends: {:.0}/s (first write -> \
         last sendMessage {:.3} s); first delivery {:.1} ms after the first write",
        burst_span.as_secs_f64(),
        b1.rate(),
        b1.span().as_secs_f64(),
        ms(first - b1.t0)
    );
    println!(
        "    the burst with webhooks on: {:.3} s, the floor just before {:.3} s: {:.2}x   \
         target <= {HOOKS_BURST_RATIO}x   {}",
        b1.span().as_secs_f64(),
        fb1.span().as_secs_f64(),
        b1.span().as_secs_f64() / fb1.span().as_secs_f64(),
        verdict(b1.span().as_secs_f64() <= HOOKS_BURST_RATIO * fb1.span().as_secs_f64())
    );
    println!(
        "    a delivery is queued only once its message is sent, so this cannot pass the send \
         rate: it says webhooks keep up with the sends, not how fast the outbox can go"
    );
    println!(
        "    the sends: {:.0}/s here, {rate:.0}/s in the burst above without webhooks; each sent \
         message now also writes and fsyncs its delivery file, and the outbox loop, on the \
         daemon's main thread, signs and posts it (on a CPU {:.0}% of the burst); other \
         processes used {busy_hooks:.0}% of the CPU meanwhile",
        b1.rate(),
        b1_main / b1_window * 100.0
    );
    println!(
        "    CPU time over it: cctelegram's threads {}",
        cpu_text(&b1_cpu)
    );
    println!(
        "  outbox alone: the daemon started on an outbox already holding the deliveries (the \
         burst's bodies, new ids: as after a restart during an outage); the receiver answers \
         at once. The time is first -> last delivery at the receiver:"
    );
    for (k, d) in drains.iter().enumerate() {
        let target = if k == 0 {
            format!(
                "   target >= {WEBHOOKS_PER_S:.0}/s   {}",
                verdict(d.rate >= WEBHOOKS_PER_S)
            )
        } else {
            "   (no target)".to_string()
        };
        println!(
            "    {} queued: {:.3} s = {:.0} deliveries/s{target}",
            d.n,
            d.span.as_secs_f64(),
            d.rate
        );
        let threads: Vec<String> = d
            .cpu
            .iter()
            .filter(|c| c.2 >= 0.0005)
            .map(|(name, n, s)| format!("{name} x{n} {:.0} ms", s * 1000.0))
            .collect();
        println!(
            "      spawn -> first delivery {:.1} ms, spawn -> outbox empty {:.3} s; CPU meanwhile: \
             daemon {:.0} ms ({}), this process (receiver, fakes) {:.0} ms, together {:.0}% of \
             {cores} CPU(s); per delivery: daemon {:.0} us, of which its main thread {:.0} us; \
             other processes {:.0}%",
            ms(d.first_delay),
            d.window,
            d.daemon_s * 1000.0,
            threads.join(", "),
            d.bench_s * 1000.0,
            (d.daemon_s + d.bench_s) / (d.window * cores.max(1) as f64) * 100.0,
            d.daemon_s * 1e6 / d.n as f64,
            d.main_s * 1e6 / d.n as f64,
            d.busy
        );
    }
    let (small, big) = (&drains[0], &drains[drains.len() - 1]);
    let main_share = small.main_s / small.window * 100.0;
    let pool_share = (small.daemon_s - small.main_s) / small.window * 100.0;
    let limit = if main_share >= 50.0 && small.main_s >= small.daemon_s - small.main_s {
        format!(
            "the daemon's main thread, its one async executor, where the outbox loop runs: on a \
             CPU {main_share:.0}% of the drain, against {pool_share:.0}% for the blocking pool \
             threads that sign and send the requests"
        )
    } else if (small.daemon_s + small.bench_s) / (small.window * cores.max(1) as f64) >= 0.9 {
        "the CPUs: the daemon and the receiver together kept them busy".to_string()
    } else {
        format!(
            "waiting: at most {} requests in flight, each a round trip to the receiver",
            MAX_IN_FLIGHT - 1
        )
    };
    println!("    what limits it: {limit}");
    println!(
        "    the main thread's time per delivery went from {:.0} us with {} queued to {:.0} us \
         with {} queued{}",
        small.main_s * 1e6 / small.n as f64,
        small.n,
        big.main_s * 1e6 / big.n as f64,
        big.n,
        if big.main_s / big.n as f64 > 1.5 * small.main_s / small.n as f64 {
            ": it grows with the backlog"
        } else {
            ""
        }
    );
    println!(
        "  signatures: X-CCTelegram-Signature (HMAC-SHA256 of the body, checked with ring) valid \
         on {valid} of {total} requests   {}",
        verdict(valid == total)
    );
    println!(
        "  {total} requests: {ids} distinct delivery ids, {retries} retries, {others} not \
         event_processed"
    );
    println!();

    let up = upload_bench(&bin, &tg);
    println!(
        "upload: one {UPLOAD_MIB} MiB log as an attachment (sendDocument, streamed multipart)"
    );
    println!(
        "  event file renamed in -> copy in state_dir -> upload received by the fake: {:.3} s",
        up.total.as_secs_f64()
    );
    println!(
        "  upload: first body byte -> whole body read {:.3} s = {:.0} MiB/s on loopback",
        up.upload.as_secs_f64(),
        UPLOAD_MIB as f64 / up.upload.as_secs_f64()
    );
    println!(
        "  peak RSS (VmHWM) of a fresh daemon {} KiB before, {} KiB after = {:.2} MiB   \
         target < {PEAK_RSS_MIB} MiB   {}",
        up.rss_before,
        up.rss_after,
        up.rss_after as f64 / 1024.0,
        verdict((up.rss_after as f64 / 1024.0) < PEAK_RSS_MIB)
    );
    println!("  bytes identical (SHA-256): {}", verdict(up.identical));
    println!();

    let (mcp_rss, mcp_ticks) = mcp_idle(&bin, &dir);
    let mcp_rss_mib = mcp_rss as f64 / 1024.0;
    let mcp_cpu_per_min = mcp_ticks as f64 / hz * 60.0 / IDLE_WINDOW.as_secs_f64();
    println!("cctelegram mcp, idle after initialize, tools/list and one tools/call");
    println!(
        "  RSS {mcp_rss} KiB = {mcp_rss_mib:.2} MiB   CPU {mcp_cpu_per_min:.3} s per idle minute"
    );
    // The MCP module's share of the binary: this build against one without
    // it (bench/run builds the commit before it when CCTELEGRAM_BASE_REV is set).
    let base_size = std::env::var_os("CCTELEGRAM_BASE_BIN")
        .and_then(|b| fs::metadata(b).ok())
        .map(|m| m.len());
    if let Some(b) = base_size {
        println!(
            "  binary without it: {b} bytes; the MCP server adds {} bytes ({:.1} KiB)",
            facts.size as i64 - b as i64,
            (facts.size as f64 - b as f64) / 1024.0
        );
    }
    println!();

    let size_mib = facts.size as f64 / MIB;
    let size_verdict = if the_build {
        verdict(size_mib < BINARY_MIB).to_string()
    } else {
        format!("{} (not the musl build)", verdict(size_mib < BINARY_MIB))
    };
    println!("binary: {} bytes = {size_mib:.2} MiB", facts.size);
    println!("  {kind}   target < {BINARY_MIB} MiB   {size_verdict}");
    println!();

    let note = if the_build {
        String::new()
    } else {
        " (not the musl build: see NOTE above)".to_string()
    };
    println!("Summary{note}, paste into the README:");
    println!();
    println!("| Measure | Measured | Target | Result |");
    println!("| --- | --- | --- | --- |");
    let row = |what: &str, got: String, target: &str, result: &str| {
        println!("| {what} | {got} | {target} | {result} |");
    };
    row(
        "Event file to `sendMessage`, p50 (loopback)",
        format!("{p50:.3} ms"),
        "< 1 ms",
        verdict(p50 < P50_MS),
    );
    row(
        "Event file to `sendMessage`, p95 (loopback)",
        format!("{p95:.3} ms"),
        "< 3 ms",
        verdict(p95 < P95_MS),
    );
    row(
        "Event file to `sendMessage`, p99 / max",
        format!("{p99:.3} / {max:.3} ms"),
        "-",
        "-",
    );
    row(
        &format!("Burst of {BURST_EVENTS} events, first file to last `sendMessage`"),
        format!("{:.3} s ({rate:.0} events/s)", burst.as_secs_f64()),
        "-",
        "-",
    );
    println!();
    println!("Against the floor (bench/floor.rs: inotify + one kept-alive connection), same run:");
    println!();
    println!("| Measure | Floor | cctelegram | Ratio | Target | Result |");
    println!("| --- | --- | --- | --- | --- | --- |");
    let vs = |what: &str, f: f64, d: f64, unit: &str, target: f64| {
        println!(
            "| {what} | {f:.3} {unit} | {d:.3} {unit} | {:.2}x | <= {target}x | {} |",
            d / f,
            verdict(d <= target * f)
        );
    };
    vs(
        &format!(
            "Event file to `sendMessage` after {:.1} s idle, p50",
            IDLE_GAP.as_secs_f64()
        ),
        fi50,
        di50,
        "ms",
        IDLE_P50_RATIO,
    );
    vs(
        &format!(
            "Event file to `sendMessage` after {:.1} s idle, p95",
            IDLE_GAP.as_secs_f64()
        ),
        fi95,
        di95,
        "ms",
        IDLE_P95_RATIO,
    );
    println!(
        "| Event file to `sendMessage` back to back, p50 / p95 | {:.3} / {:.3} ms | {p50:.3} / {p95:.3} ms | {:.2}x / {:.2}x | - | - |",
        percentile(&f_lat, 50.0),
        percentile(&f_lat, 95.0),
        p50 / percentile(&f_lat, 50.0),
        p95 / percentile(&f_lat, 95.0)
    );
    vs(
        &format!("Burst of {BURST_EVENTS}, first file to last `sendMessage`"),
        fb.span().as_secs_f64(),
        burst.as_secs_f64(),
        "s",
        BURST_RATIO,
    );
    vs(
        &format!("Burst of {BURST_EVENTS} with webhooks on"),
        fb1.span().as_secs_f64(),
        b1.span().as_secs_f64(),
        "s",
        HOOKS_BURST_RATIO,
    );
    println!(
        "| Button press to response file, p50 | {:.3} ms (the disk: new file, write, fdatasync, rename) | {press_p50:.3} ms | +{:.3} ms | <= +{PRESS_OVER_DISK_MS} ms | {} |",
        floor.0,
        press_p50 - floor.0,
        verdict(press_p50 <= floor.0 + PRESS_OVER_DISK_MS)
    );
    println!(
        "| Idle: threads woken over {window:.0} s | - | {poll_threads} ({polls} long polls) | - | the long poll's only | {} |",
        verdict(silent)
    );
    println!();
    println!("| Measure | Measured | Target | Result |");
    println!("| --- | --- | --- | --- |");
    row(
        "Button press to response file, p50 (loopback)",
        format!("{press_p50:.3} ms"),
        "< 2 ms",
        verdict(press_p50 < PRESS_MS),
    );
    row(
        "Button press to response file, p95 (loopback)",
        format!("{press_p95:.3} ms"),
        "< 2 ms",
        verdict(press_p95 < PRESS_MS),
    );
    row(
        "Button press to response file, max",
        format!("{press_max:.3} ms"),
        "-",
        "-",
    );
    row(
        &format!(
            "Signed webhook deliveries, outbox of {queued} drained (max_in_flight {MAX_IN_FLIGHT})"
        ),
        format!("{drain_rate:.0}/s"),
        ">= 1000/s",
        verdict(drain_rate >= WEBHOOKS_PER_S),
    );
    row(
        &format!(
            "Signed webhook deliveries, outbox of {} drained",
            drains[drains.len() - 1].n
        ),
        format!("{:.0}/s", drains[drains.len() - 1].rate),
        "-",
        "-",
    );
    row(
        &format!("Signed webhook deliveries during the {BURST_EVENTS}-event burst"),
        format!("{burst_hooks:.0}/s (sends: {:.0}/s)", b1.rate()),
        "- (bounded by the sends)",
        "-",
    );
    row(
        &format!("Peak RSS while uploading a {UPLOAD_MIB} MiB file (VmHWM)"),
        format!("{:.2} MiB", up.rss_after as f64 / 1024.0),
        "< 8 MiB",
        verdict((up.rss_after as f64 / 1024.0) < PEAK_RSS_MIB),
    );
    row(
        "Upload throughput to the fake (loopback, multipart streamed from disk)",
        format!("{:.0} MiB/s", UPLOAD_MIB as f64 / up.upload.as_secs_f64()),
        "-",
        "-",
    );
    row(
        "Webhook signatures valid (`X-CCTelegram-Signature`)",
        format!("{valid} of {total}"),
        "all",
        verdict(valid == total),
    );
    row(
        "Start-up: spawn to the first `getUpdates`",
        format!("{first_poll:.1} ms"),
        "< 50 ms",
        verdict(first_poll < STARTUP_MS),
    );
    row(
        "Idle RSS",
        format!("{idle_rss_mib:.2} MiB"),
        "< 3 MiB",
        verdict(idle_rss_mib < IDLE_RSS_MIB),
    );
    row(
        "Idle CPU",
        format!("{cpu_per_min:.3} s/min"),
        "<= 0.05 s/min",
        verdict(cpu_per_min <= IDLE_CPU_S_PER_MIN),
    );
    row(
        &format!("Peak RSS during the {BURST_EVENTS}-event burst"),
        format!("{peak_mib:.2} MiB"),
        "< 8 MiB",
        verdict(peak_mib < PEAK_RSS_MIB),
    );
    row(
        if the_build {
            "Binary, stripped static x86_64 musl release"
        } else {
            "Binary (NOT the stripped static musl release build)"
        },
        format!("{size_mib:.2} MiB ({} bytes)", facts.size),
        "< 3 MiB",
        &size_verdict,
    );
    row(
        "`cctelegram mcp` idle RSS (after a handshake and calls)",
        format!("{mcp_rss_mib:.2} MiB"),
        "-",
        "-",
    );
    row(
        "`cctelegram mcp` idle CPU",
        format!("{mcp_cpu_per_min:.3} s/min"),
        "-",
        "-",
    );
    if let Some(b) = base_size {
        row(
            "Bytes the MCP server adds to the binary",
            format!(
                "{} bytes ({:.1} KiB)",
                facts.size as i64 - b as i64,
                (facts.size as f64 - b as f64) / 1024.0
            ),
            "-",
            "-",
        );
    }
    println!();
    println!(
        "Measured on {cores} CPU(s), Linux {}, state directory on {}; fake Bot API on 127.0.0.1; \
         other processes used {busy_latency:.0}% / {busy_burst:.0}% / {busy_press:.0}% / \
         {busy_hooks:.0}% / {busy_drain:.0}% of the CPU during the latency / burst / button press / \
         webhook burst / webhook drain runs.",
        kernel.trim(),
        fs_type(&dir.root)
    );
    if [busy_latency, busy_burst, busy_press, busy_hooks, busy_drain]
        .into_iter()
        .any(|b| b > BUSY_PERCENT)
    {
        println!(
            "WARNING: other processes kept the machine busy while measuring; the latency, \
             burst, button press and webhook figures are not representative. Run again on a \
             quiet machine."
        );
    }
    println!();
    fleet_latency(&bin);
}

/// Events through one broker: a device's event file renamed in, published
/// QoS 1 to a Mosquitto on 127.0.0.1, taken by the hub into its events
/// directory and sent to the fake Bot API. One event at a time, like the
/// latency run above. Skipped (said so) without a `mosquitto` binary.
fn fleet_latency(bin: &Path) {
    const FLEET_EVENTS: usize = 100;
    let program = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    let Some(program) = program else {
        println!("fleet: skipped, mosquitto is not installed (apt-get install mosquitto)");
        return;
    };
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        l.local_addr().expect("its port").port()
    };
    let tg = FakeTelegram::start();
    let mqtt = |role: &str, name: &str| {
        format!(
            "\n[mqtt]\nurl = \"mqtt://127.0.0.1:{port}\"\nrole = \"{role}\"\ndevice = \"{name}\"\n"
        )
    };
    let hub = Workdir::new(&tg.url(), "fleet-hub", &mqtt("hub", "hub"));
    let dev = Workdir::new(&tg.url(), "fleet-dev", &mqtt("device", "bench-pi"));
    let conf = hub.root.join("mosquitto.conf");
    fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\nlog_type error\nuser root\n"),
    )
    .expect("write the broker config");
    let mut broker = Command::new(&program)
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start mosquitto");
    let end = Instant::now() + WAIT;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < end, "mosquitto does not accept");
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut h = Daemon::start(bin, &hub);
    let mut d = Daemon::start(bin, &dev);
    let mut seen = 0;
    // Warm: both connected, the first event through.
    let (tmp, dst) = dev.stage("fw", &event("fleet-warm", "fleet-warm-end"));
    fs::rename(&tmp, &dst).unwrap();
    wait_marker(&tg, seen, "fleet-warm-end");
    seen += 1;
    let mut lat = Vec::with_capacity(FLEET_EVENTS);
    for i in 0..FLEET_EVENTS {
        let marker = format!("fleet-{i:04}-end");
        let (tmp, dst) = dev.stage(&format!("f{i}"), &event(&format!("bench-f{i}"), &marker));
        let t0 = Instant::now();
        fs::rename(&tmp, &dst).unwrap();
        let at = wait_marker(&tg, seen, &marker);
        lat.push(ms(at.saturating_duration_since(t0)));
        seen += 1;
        dev.wait_queue_empty();
        hub.wait_queue_empty();
    }
    h.assert_running();
    d.assert_running();
    lat.sort_by(f64::total_cmp);
    println!(
        "fleet latency: device event file renamed in -> broker -> hub -> sendMessage accepted, \
         {FLEET_EVENTS} events, one at a time"
    );
    println!(
        "  p50 {:.3} ms   p95 {:.3} ms   p99 {:.3} ms   max {:.3} ms",
        percentile(&lat, 50.0),
        percentile(&lat, 95.0),
        percentile(&lat, 99.0),
        lat[lat.len() - 1]
    );
    drop(d);
    drop(h);
    let _ = broker.kill();
    let _ = broker.wait();
}

// ---- the floor ----

/// The floor program in a process of its own, with its own fake Bot API
/// (the same fake, so both are measured against the same server).
struct Floor {
    tg: FakeTelegram,
    dir: Workdir,
    child: Child,
    /// Messages the floor's fake has.
    seen: usize,
}

impl Floor {
    fn start() -> Floor {
        let tg = FakeTelegram::start();
        let dir = Workdir::new(&tg.url(), "floor", "");
        let exe = std::env::current_exe().expect("the benchmark's own path");
        let child = Command::new(exe)
            .env(floor::DIR_VAR, &dir.events)
            .env(
                floor::URL_VAR,
                format!("{}/bot{TOKEN}/sendMessage", tg.url()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start the floor");
        let mut f = Floor {
            tg,
            dir,
            child,
            seen: 0,
        };
        // Until its watch is in place, files go unseen: rename one in
        // until one is sent.
        let end = Instant::now() + WAIT;
        for k in 0.. {
            let (tmp, dst) = f.dir.stage(&format!("fready-{k}"), "{}");
            fs::rename(&tmp, &dst).unwrap();
            if f.tg
                .try_wait_until(Duration::from_millis(50), |s| !s.messages.is_empty())
            {
                break;
            }
            assert!(Instant::now() < end, "the floor never sent a message");
        }
        std::thread::sleep(Duration::from_millis(100));
        f.seen = f.tg.messages().len();
        for i in 0..WARMUP_EVENTS {
            f.one(&format!("fwarm-{i:04}-end"));
        }
        f
    }

    /// One event file renamed in: ms to the floor's `sendMessage`.
    fn one(&mut self, marker: &str) -> f64 {
        let (tmp, dst) = self.dir.stage(marker, "{}");
        let t0 = Instant::now();
        fs::rename(&tmp, &dst).unwrap();
        let at = wait_marker(&self.tg, self.seen, marker);
        self.seen += 1;
        ms(at.saturating_duration_since(t0))
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One event file renamed in: ms to the daemon's `sendMessage`; returns
/// once the daemon has finished with it.
fn daemon_one(tg: &FakeTelegram, dir: &Workdir, seen: &mut usize, marker: &str) -> f64 {
    let (tmp, dst) = dir.stage(marker, &event(&format!("bench-{marker}"), marker));
    let t0 = Instant::now();
    fs::rename(&tmp, &dst).unwrap();
    let at = wait_marker(tg, *seen, marker);
    *seen += 1;
    dir.wait_queue_empty();
    ms(at.saturating_duration_since(t0))
}
