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

#[path = "../tests/support/telegram.rs"]
mod telegram;

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use telegram::FakeTelegram;

const TOKEN: &str = "123456:BENCHtoken_x";
const CHAT: i64 = 111;
const WARMUP_EVENTS: usize = 10;
const LATENCY_EVENTS: usize = 300;
const BURST_EVENTS: usize = 1000;
const SETTLE: Duration = Duration::from_secs(2);
const IDLE_WINDOW: Duration = Duration::from_secs(10);
const WAIT: Duration = Duration::from_secs(30);
const BURST_WAIT: Duration = Duration::from_secs(120);

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

/// The run's directory under the system temp dir, removed at the end.
struct Workdir {
    root: PathBuf,
    events: PathBuf,
    queue: PathBuf,
    config: PathBuf,
    log: PathBuf,
}

impl Workdir {
    fn new(api_url: &str) -> Workdir {
        let root = std::env::temp_dir().join(format!("cct-bench-{}", std::process::id()));
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
"#,
            events = events.display(),
            responses = root.join("responses").display(),
            state = state.display(),
        );
        fs::write(&config, text).expect("write the config");
        fs::create_dir_all(&events).expect("create the events directory");
        Workdir {
            queue: state.join("queue"),
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
        fs::read_dir(&self.queue).map_or(0, |d| {
            d.filter_map(Result::ok)
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .count()
        })
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
        let child = Command::new(bin)
            .args(["run", "--config"])
            .arg(&dir.config)
            .env_remove("TELEGRAM_BOT_TOKEN")
            .env_remove("CCTELEGRAM_CONFIG")
            .env("CCTELEGRAM_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
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

// ---- the run ----

fn main() {
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
    let dir = Workdir::new(&tg.url());
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

    // Latency, one event at a time, each after the daemon went quiet.
    let background = Background::start(&daemon);
    let mut lat = Vec::with_capacity(LATENCY_EVENTS);
    for i in 0..LATENCY_EVENTS {
        let marker = format!("lat-{i:04}-end");
        let (tmp, dst) = dir.stage(&format!("l{i}"), &event(&format!("bench-l{i}"), &marker));
        let t0 = Instant::now();
        fs::rename(&tmp, &dst).unwrap();
        let at = wait_marker(&tg, seen, &marker);
        lat.push(ms(at.saturating_duration_since(t0)));
        seen += 1;
        dir.wait_queue_empty();
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
    println!("  other processes used {busy_latency:.0}% of the machine's CPU meanwhile");
    println!();

    // Idle.
    std::thread::sleep(SETTLE);
    let idle_rss = daemon.status_kib("VmRSS");
    let (ticks0, (ns0, sw0, _)) = (daemon.cpu_ticks(), daemon.threads());
    let t_idle = Instant::now();
    std::thread::sleep(IDLE_WINDOW);
    let (ticks1, (ns1, sw1, nthreads)) = (daemon.cpu_ticks(), daemon.threads());
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
    println!();

    // Burst: each file is written and renamed in while the daemon works.
    let mut renamed = Vec::with_capacity(BURST_EVENTS);
    let background = Background::start(&daemon);
    let t0 = Instant::now();
    for i in 0..BURST_EVENTS {
        let marker = format!("burst-{i:04}-end");
        let (tmp, dst) = dir.stage(&format!("b{i}"), &event(&format!("bench-b{i}"), &marker));
        fs::rename(&tmp, &dst).unwrap();
        renamed.push(Instant::now());
    }
    let written = t0.elapsed();
    tg.wait_messages(seen + BURST_EVENTS, BURST_WAIT);
    let msgs = tg.messages();
    let mut last = t0;
    let mut got = vec![0usize; BURST_EVENTS];
    let mut burst_lat = Vec::with_capacity(BURST_EVENTS);
    for m in &msgs[seen..] {
        let Some(i) = m
            .text
            .split("burst-")
            .nth(1)
            .and_then(|r| r.get(..4)?.parse::<usize>().ok())
        else {
            continue;
        };
        got[i] += 1;
        last = last.max(m.at);
        burst_lat.push(ms(m.at.saturating_duration_since(renamed[i])));
    }
    let missing = got.iter().filter(|&&n| n == 0).count();
    let repeated = got.iter().filter(|&&n| n > 1).count();
    assert!(
        missing == 0 && repeated == 0,
        "burst: {missing} events missing, {repeated} sent more than once"
    );
    let busy_burst = background.percent(&daemon);
    dir.wait_queue_empty();
    daemon.assert_running();
    let burst = last - t0;
    let rate = BURST_EVENTS as f64 / burst.as_secs_f64();
    burst_lat.sort_by(f64::total_cmp);
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
        percentile(&burst_lat, 50.0),
        percentile(&burst_lat, 95.0),
        burst_lat[burst_lat.len() - 1]
    );
    println!("  other processes used {busy_burst:.0}% of the machine's CPU meanwhile");
    println!(
        "  peak RSS (VmHWM) {peak} KiB = {peak_mib:.2} MiB   target < {PEAK_RSS_MIB} MiB   {}",
        verdict(peak_mib < PEAK_RSS_MIB)
    );
    println!();
    drop(daemon);

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
    println!();
    println!(
        "Measured on {cores} CPU(s), Linux {}, state directory on {}; fake Bot API on 127.0.0.1; \
         other processes used {busy_latency:.0}% / {busy_burst:.0}% of the CPU during the latency / burst runs.",
        kernel.trim(),
        fs_type(&dir.root)
    );
    if busy_latency.max(busy_burst) > BUSY_PERCENT {
        println!(
            "WARNING: other processes kept the machine busy while measuring; the latency and \
             burst figures are not representative. Run again on a quiet machine."
        );
    }
}
