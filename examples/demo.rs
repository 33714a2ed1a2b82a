//! `cargo run --example demo`: cctelegram end to end, no Telegram account needed.
//!
//! It starts a stand-in for the Telegram Bot API on 127.0.0.1 (the fake the
//! integration tests use, `tests/support/telegram.rs`), runs the real daemon
//! (`cctelegram::daemon::run`) on a thread against it over real HTTP, drops
//! event files into its events directory the way a script would, and prints
//! what a phone would show. The daemon's own log lines are shown dimmed and
//! indented under each step. Nothing leaves this machine; the daemon's
//! directories live in a temporary directory that is removed at the end.

#[path = "../tests/support/telegram.rs"]
mod telegram;

use std::fmt::Write as _;
use std::fs;
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cctelegram::config::ParseMode;
use cctelegram::telegram::render;
use telegram::{FakeTelegram, Sent};

/// How long anything may take before the demo gives up.
const PATIENCE: Duration = Duration::from_secs(15);
/// How long to wait for a daemon log line that only keeps the output in order.
const LOG_GRACE: Duration = Duration::from_secs(2);
/// The one Telegram user the demo bot serves; its private chat gets every message.
const USER: i64 = 111;
/// Telegram accepts at most this many characters in one message.
const TELEGRAM_MAX: usize = 4096;

// ---- terminal colours (off when piped, or with NO_COLOR) ----

static COLOR: AtomicBool = AtomicBool::new(false);

fn paint(code: &str, text: &str) -> String {
    if COLOR.load(Ordering::Relaxed) {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

fn dim(text: &str) -> String {
    paint("2", text)
}

fn bold(text: &str) -> String {
    paint("1", text)
}

fn green(text: &str) -> String {
    paint("32", text)
}

fn yellow(text: &str) -> String {
    paint("33", text)
}

fn red(text: &str) -> String {
    paint("31", text)
}

fn cyan(text: &str) -> String {
    paint("36", text)
}

fn heading(text: &str) {
    println!("\n{}", bold(&format!("━━ {text} ━━")));
}

// ---- the daemon's log, shown as it happens and kept for waiting on ----

/// A `log` logger that prints the daemon's lines dimmed and indented, and
/// remembers them so the demo can wait for one before it narrates on.
struct DaemonLog {
    lines: Mutex<Vec<String>>,
    changed: Condvar,
    quiet: AtomicBool,
}

static LOG: DaemonLog = DaemonLog {
    lines: Mutex::new(Vec::new()),
    changed: Condvar::new(),
    quiet: AtomicBool::new(false),
};

impl log::Log for DaemonLog {
    fn enabled(&self, m: &log::Metadata) -> bool {
        // The daemon's own lines at info; anybody's warnings and errors.
        m.level() <= log::Level::Warn
            || (m.level() <= log::Level::Info && m.target().starts_with("cctelegram"))
    }

    fn log(&self, r: &log::Record) {
        if !self.enabled(r.metadata()) || self.quiet.load(Ordering::SeqCst) {
            return;
        }
        let module = r
            .target()
            .strip_prefix("cctelegram::")
            .unwrap_or(r.target());
        let level = match r.level() {
            log::Level::Info => dim("INFO "),
            log::Level::Error => red("ERROR"),
            level => yellow(&format!("{level:<5}")),
        };
        let text = dim(&format!("[{module}] {}", r.args()));
        let mut lines = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        println!("      {level} {text}");
        lines.push(format!("{} {}", r.target(), r.args()));
        drop(lines);
        self.changed.notify_all();
    }

    fn flush(&self) {}
}

impl DaemonLog {
    /// Waits up to `within` for a line (`target message`) that `pred` accepts.
    fn wait_for(&self, within: Duration, pred: impl Fn(&str) -> bool) -> bool {
        let end = Instant::now() + within;
        let mut lines = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if lines.iter().any(|l| pred(l)) {
                return true;
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            lines = self
                .changed
                .wait_timeout(lines, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

// ---- the events the demo drops ----

struct Step {
    /// Its file name in the events directory.
    name: &'static str,
    /// What it shows, in a few words.
    about: &'static str,
    json: String,
}

const BROKEN: &str = r#"{
  "type": "info_notification",
  "title": "Disk almost full",
  "description": "/var is 93% full",
}
"#;

fn steps() -> Vec<Step> {
    let step = |name, about, json: &str| Step {
        name,
        about,
        json: json.to_string(),
    };
    vec![
        step(
            "task_completion.json",
            "the original system's sample, from examples/events/",
            include_str!("events/task_completion.json"),
        ),
        step(
            "info_notification.json",
            "the original system's sample, from examples/events/",
            include_str!("events/info_notification.json"),
        ),
        step(
            "approval_request.json",
            "the original system's sample, from examples/events/: it gets buttons",
            include_str!("events/approval_request.json"),
        ),
        step(
            "build_failed.json",
            "compiler output full of <, > and &, and literal <b> tags",
            include_str!("events/build_failed.json"),
        ),
        step(
            "nightly_tests.json",
            "150 lines of test log: more than one Telegram message holds",
            &long_event(),
        ),
        step(
            "broken.json",
            "hand-written JSON with a trailing comma",
            BROKEN,
        ),
    ]
}

fn long_event() -> String {
    let mut log = String::new();
    for i in 1..=150 {
        let _ = writeln!(log, "test parser::cases::case_{i:03} ... ok");
    }
    let event = serde_json::json!({
        "type": "test_suite_run",
        "source": "ci",
        "event_id": "nightly-2026-11-29",
        "title": "Nightly tests: 150 passed",
        "description": log,
        "data": {"tests_passed": 150, "tests_failed": 0, "test_count": 150, "duration_ms": 73_400},
    });
    serde_json::to_string_pretty(&event).unwrap_or_default()
}

/// Writes `.NAME.tmp`, then renames it to NAME: the daemon never sees half a file.
fn drop_event(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), String> {
    let tmp = dir.join(format!(".{name}.tmp"));
    fs::write(&tmp, bytes)
        .and_then(|()| fs::rename(&tmp, dir.join(name)))
        .map_err(|e| format!("cannot write {name} into {}: {e}", dir.display()))
}

/// What became of one step's file.
enum Outcome {
    Sent(Vec<Sent>),
    Refused { moved_to: PathBuf, note: String },
}

// ---- the daemon on its thread, and waiting for it ----

struct Daemon {
    thread: Option<JoinHandle<cctelegram::Result<()>>>,
}

impl Daemon {
    /// An error if the daemon has stopped (it only returns on a fatal error).
    fn check(&mut self) -> Result<(), String> {
        if !self.thread.as_ref().is_some_and(JoinHandle::is_finished) {
            return Ok(());
        }
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(Err(e))) => Err(format!("the daemon stopped: {e}")),
            Some(Ok(Ok(()))) => Err("the daemon stopped without an error".into()),
            Some(Err(_)) => Err("the daemon thread panicked".into()),
            None => Err("the daemon is not running".into()),
        }
    }

    /// Waits until the stand-in has accepted `n` messages in all.
    fn wait_messages(&mut self, fake: &FakeTelegram, n: usize, what: &str) -> Result<(), String> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            // Sleep on the stand-in's condition variable, waking every 200 ms
            // to see whether the daemon is still alive. The condition turns
            // true at the slice's end, before `wait_until`'s own deadline
            // (50 ms later), so that never times out (it would panic).
            let slice_end = (Instant::now() + Duration::from_millis(200)).min(deadline);
            let slice = slice_end.saturating_duration_since(Instant::now());
            let margin = Duration::from_millis(50);
            fake.wait_until(slice + margin, what, |s| {
                s.messages.len() >= n || Instant::now() >= slice_end
            });
            if fake.messages().len() >= n {
                return Ok(());
            }
            self.check()?;
            if Instant::now() >= deadline {
                let mut why = format!("{what} did not arrive within {} s", PATIENCE.as_secs());
                let calls = fake.calls("sendMessage");
                if let Some(c) = calls.iter().rev().find(|c| c.status != 200) {
                    let answer = c.description.as_deref().unwrap_or("no answer");
                    let _ = write!(
                        why,
                        "; the stand-in last refused sendMessage with {}: {answer}",
                        c.status
                    );
                }
                return Err(why);
            }
        }
    }

    /// Waits until `path` exists. There is nothing to sleep on for a file,
    /// so this looks every 20 ms until the deadline.
    fn wait_file(&mut self, path: &Path) -> Result<(), String> {
        let deadline = Instant::now() + PATIENCE;
        while !path.exists() {
            self.check()?;
            if Instant::now() >= deadline {
                return Err(format!(
                    "{} did not appear within {} s",
                    path.display(),
                    PATIENCE.as_secs()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

// ---- the demo ----

fn config_text(api_url: &str, root: &Path) -> String {
    let dir = |name: &str| format!("{:?}", root.join(name).display().to_string());
    let lines = [
        ("[telegram]".to_string(), ""),
        (
            "bot_token = \"123456:DEMOtoken_notreal\"".into(),
            "well-formed, not real",
        ),
        (format!("allowed_users = [{USER}]"), "who may use the bot"),
        (
            "chat_ids = []".into(),
            "none: each allowed user's private chat",
        ),
        (
            format!("api_url = \"{api_url}\""),
            "the stand-in, not https://api.telegram.org",
        ),
        (String::new(), ""),
        ("[paths]".into(), ""),
        (format!("events_dir = {}", dir("events")), ""),
        (format!("responses_dir = {}", dir("responses")), ""),
        (format!("state_dir = {}", dir("state")), ""),
        (String::new(), ""),
        ("[limits]".into(), ""),
        (
            "per_chat_per_second = 50".into(),
            "Telegram allows about 1; 50 keeps the demo quick",
        ),
        (String::new(), ""),
        ("[health]".into(), ""),
        ("listen = \"\"".into(), "no HTTP health endpoint"),
    ];
    let mut text = String::new();
    for (setting, comment) in lines {
        let _ = match comment {
            "" => writeln!(text, "{setting}"),
            _ => writeln!(text, "{setting:<40} # {comment}"),
        };
    }
    text
}

fn run(fake: &FakeTelegram, root: &Path) -> Result<(), String> {
    println!(
        "{}",
        bold("cctelegram demo: event files in, Telegram messages out")
    );
    println!(
        "{}",
        dim(
            "No Telegram account needed: the real daemon talks HTTP to a stand-in for\n\
             the Telegram Bot API on this machine, and nothing leaves it."
        )
    );

    heading("Start");
    println!("Stand-in for api.telegram.org listening on {}", fake.url());
    let text = config_text(&fake.url(), root);
    let (cfg, warnings) =
        cctelegram::config::parse(&text).map_err(|e| format!("the demo's config: {e}"))?;
    for w in warnings {
        println!("{}", yellow(&format!("config warning: {w}")));
    }
    cctelegram::config::validate(&cfg, true).map_err(|e| format!("the demo's config: {e}"))?;
    println!("The daemon's config (what ~/.cc_telegram/config.toml would hold):");
    for line in text.lines() {
        match line {
            "" => println!(),
            _ => println!("    {}", dim(line)),
        }
    }
    let events = cfg.paths.events_dir.clone();
    let mode: ParseMode = cfg.telegram.parse_mode;
    println!("Starting cctelegram::daemon::run on a thread:");
    let mut daemon = Daemon {
        thread: Some(std::thread::spawn(move || {
            cctelegram::daemon::run(cfg, None)
        })),
    };
    daemon.wait_file(&events.join("failed"))?;
    LOG.wait_for(LOG_GRACE, |l| l.starts_with("cctelegram::daemon "));

    heading("Drop event files into events/, as a script would (write .NAME.tmp, rename)");
    let mut outcomes = Vec::new();
    for step in steps() {
        println!("\n{} {}  {}", cyan("▸"), bold(step.name), dim(step.about));
        // The daemon's own parser and renderer say what to wait for: how
        // many messages, or a refusal.
        let parsed = cctelegram::event::parse(step.json.as_bytes(), "", String::new);
        let before = fake.messages().len();
        drop_event(&events, step.name, step.json.as_bytes())?;
        let outcome = match parsed {
            Ok(ev) => {
                let parts = render::render(&ev, mode).len();
                let what = format!("the message(s) for {}", step.name);
                daemon.wait_messages(fake, before + parts, &what)?;
                // "delivered" is logged just after Telegram's answer.
                LOG.wait_for(LOG_GRACE, |l| {
                    l.starts_with("cctelegram::telegram") && l.contains(&ev.event_id)
                });
                Outcome::Sent(fake.messages().split_off(before))
            }
            Err(_) => {
                let moved_to = events.join("failed").join(step.name);
                daemon.wait_file(&moved_to)?;
                LOG.wait_for(LOG_GRACE, |l| {
                    l.starts_with("cctelegram::ingest") && l.contains(step.name)
                });
                let note_path = events.join("failed").join(format!("{}.error", step.name));
                let note = fs::read_to_string(&note_path)
                    .map_err(|e| format!("cannot read {}: {e}", note_path.display()))?;
                Outcome::Refused { moved_to, note }
            }
        };
        outcomes.push((step, outcome));
    }

    let messages = fake.messages();
    heading(&format!(
        "What the phone shows: the bot's chat with user {USER}, {} messages",
        messages.len()
    ));
    for m in &messages {
        show_message(m);
    }

    heading("Checked");
    for (step, outcome) in &outcomes {
        check(step, outcome, root)?;
    }

    heading("Next: the real thing");
    println!("  1. Make a bot with @BotFather and note your numeric Telegram user id.");
    println!("  2. TELEGRAM_BOT_TOKEN=... TELEGRAM_ALLOWED_USERS=<your id> cargo run -- run");
    println!("  3. In another shell: cargo run -- send --type task_completion --title 'Hello'");
    println!("     or copy any file from examples/events/ into ~/.cc_telegram/events/");
    Ok(())
}

/// One message as a phone shows it: the visible text, then the buttons.
fn show_message(m: &Sent) {
    let how = m
        .parse_mode
        .as_deref()
        .map_or("plain text".to_string(), |p| format!("sent as {p}"));
    println!();
    println!("  {}", dim(&format!("╭─ message {} · {how}", m.message_id)));
    let lines: Vec<&str> = m.text.lines().collect();
    let bar = dim("│");
    let row = |line: &str| match line {
        "" => println!("  {bar}"),
        _ => println!("  {bar} {line}"),
    };
    let (head, tail) = if lines.len() > 16 {
        (&lines[..8], &lines[lines.len() - 3..])
    } else {
        (&lines[..], &lines[lines.len()..])
    };
    head.iter().for_each(|l| row(l));
    if !tail.is_empty() {
        let hidden = lines.len() - head.len() - tail.len();
        row(&dim(&format!("⋮  ({hidden} more lines)")));
        tail.iter().for_each(|l| row(l));
    }
    println!("  {}", dim("╰─"));
    let rows = m
        .reply_markup
        .as_ref()
        .and_then(|k| k["inline_keyboard"].as_array());
    for row in rows.into_iter().flatten() {
        let buttons = row.as_array().into_iter().flatten();
        let labels: Vec<String> = buttons
            .map(|b| format!("[ {} ]", b["text"].as_str().unwrap_or("?")))
            .collect();
        println!("    {}", bold(&labels.join("  ")));
    }
    let buttons = rows
        .into_iter()
        .flatten()
        .flat_map(|r| r.as_array())
        .flatten();
    for b in buttons {
        let (label, data) = (b["text"].as_str().unwrap_or("?"), &b["callback_data"]);
        println!(
            "    {}",
            dim(&format!("{label}: a tap sends callback_data {data}"))
        );
    }
}

fn without_space(s: &str) -> String {
    s.chars().filter(|c| !c.is_whitespace()).collect()
}

/// Says what a step proves, after checking that it does.
fn check(step: &Step, outcome: &Outcome, root: &Path) -> Result<(), String> {
    let ok = green("✓");
    match outcome {
        Outcome::Sent(parts) => {
            let event: serde_json::Value = serde_json::from_str(&step.json).unwrap_or_default();
            let description = event["description"].as_str().unwrap_or("").trim();
            let shown: Vec<&str> = parts.iter().map(|m| m.text.as_str()).collect();
            // Every character of the description reached the phone (a split
            // may fall where a line break was; nothing else may differ).
            if !without_space(&shown.concat()).contains(&without_space(description)) {
                return Err(format!(
                    "{}: the description did not arrive intact",
                    step.name
                ));
            }
            if parts.len() > 1 {
                let sizes: Vec<String> = shown
                    .iter()
                    .map(|t| t.encode_utf16().count().to_string())
                    .collect();
                println!(
                    "  {ok} {}: the {}-character log arrived whole, split over {} messages",
                    step.name,
                    description.chars().count(),
                    parts.len(),
                );
                println!(
                    "    of {} characters (Telegram takes at most {TELEGRAM_MAX} in one)",
                    sizes.join(" and "),
                );
            } else if description.contains('<') {
                if !shown[0].contains(description) {
                    return Err(format!(
                        "{}: the markup did not arrive as written",
                        step.name
                    ));
                }
                println!(
                    "  {ok} {}: the description arrived character for character, <b> and & included;",
                    step.name
                );
                println!("    the daemon escaped them in the HTML it sent:");
                let raw = parts[0]
                    .raw_text
                    .lines()
                    .filter(|l| l.contains("&lt;b&gt;"));
                for line in raw {
                    println!("      {}", dim(line));
                }
            } else {
                println!("  {ok} {}: delivered, description intact", step.name);
            }
        }
        Outcome::Refused { moved_to, note } => {
            let shown = moved_to.strip_prefix(root).unwrap_or(moved_to);
            println!(
                "  {ok} {}: refused and moved to {}, with this .error file beside it:",
                step.name,
                shown.display()
            );
            for line in note.lines() {
                println!("      {}", yellow(line));
            }
        }
    }
    Ok(())
}

/// The demo's directory under the system temp dir, removed on drop.
struct TempRoot(PathBuf);

impl TempRoot {
    fn new() -> Result<TempRoot, String> {
        let dir = std::env::temp_dir().join(format!("cctelegram-demo-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        Ok(TempRoot(dir))
    }
}

impl Drop for TempRoot {
    fn drop(&mut self) {
        // The daemon notices its directory going; that is no news here.
        LOG.quiet.store(true, Ordering::SeqCst);
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn main() -> ExitCode {
    let color = std::io::stdout().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::env::var("TERM").map_or(true, |t| t != "dumb");
    COLOR.store(color, Ordering::Relaxed);
    if log::set_logger(&LOG).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
    let fake = FakeTelegram::start();
    let result = TempRoot::new().and_then(|root| {
        let result = run(&fake, &root.0);
        drop(root);
        result
    });
    match result {
        Ok(()) => {
            println!(
                "\n{}",
                dim("Done; the demo's temporary directory is removed.")
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("\ndemo failed: {e}");
            ExitCode::FAILURE
        }
    }
}
