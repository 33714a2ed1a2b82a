//! `cargo run --example demo`: cctelegram end to end, no Telegram account needed.
//!
//! It starts a stand-in for the Telegram Bot API on 127.0.0.1 (the fake the
//! integration tests use, `tests/support/telegram.rs`) and a webhook
//! receiver, runs the real daemon (`cctelegram::daemon::run`) on a thread
//! against them over real HTTP, and shows the whole round trip: event files
//! dropped into its events directory the way a script would, what a phone
//! would show, a button press and a reply (simulated: the stand-in plays the
//! phone), the response files written, and every signed webhook arriving at
//! the receiver, which verifies both signature schemes with the library's
//! own code (`cctelegram::webhook::sign`) and refuses a forged one. Telegram
//! is made unreachable for a moment so that health changes, as it would in
//! an outage, and the `health_update` webhooks report it.
//!
//! The daemon's own log lines are shown dimmed and indented under each step.
//! Nothing leaves this machine; the daemon's directories live in a temporary
//! directory that is removed at the end. No colour when stdout is not a
//! terminal (or with NO_COLOR).

mod receiver;
#[path = "../../tests/support/telegram.rs"]
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
use receiver::{Delivery, Receiver};
use telegram::{FakeTelegram, Sent};

/// How long anything may take before the demo gives up.
const PATIENCE: Duration = Duration::from_secs(15);
/// How long to wait for a daemon log line that only keeps the output in order.
const LOG_GRACE: Duration = Duration::from_secs(2);
/// The one Telegram user the demo bot serves; its private chat gets every message.
const USER: i64 = 111;
/// Telegram accepts at most this many characters in one message.
const TELEGRAM_MAX: usize = 4096;
/// The webhook secret the daemon signs with and the receiver checks.
const SECRET: &str = "demo-webhook-secret";
/// The demo's output fits a terminal this wide.
const COLUMNS: usize = 100;

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

/// `text` cut to `width` characters, with "…" where it was cut.
fn fit(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
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
        let text = dim(&fit(&format!("[{module}] {}", r.args()), COLUMNS - 12));
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
        self.wait_count(within, 1, pred)
    }

    /// Waits up to `within` for `n` lines that `pred` accepts.
    fn wait_count(&self, within: Duration, n: usize, pred: impl Fn(&str) -> bool) -> bool {
        let end = Instant::now() + within;
        let mut lines = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if lines.iter().filter(|l| pred(l)).count() >= n {
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
            include_str!("../events/task_completion.json"),
        ),
        step(
            "info_notification.json",
            "the original system's sample, from examples/events/",
            include_str!("../events/info_notification.json"),
        ),
        step(
            "approval_request.json",
            "the original system's sample, from examples/events/: it gets buttons",
            include_str!("../events/approval_request.json"),
        ),
        step(
            "build_failed.json",
            "compiler output full of <, > and &, and literal <b> tags",
            include_str!("../events/build_failed.json"),
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

    /// Waits for the first file in `dir` whose name starts with `prefix`;
    /// its name. Looks every 20 ms, as `wait_file` does.
    fn wait_response(&mut self, dir: &Path, prefix: &str) -> Result<String, String> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let found = fs::read_dir(dir).ok().and_then(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .find(|n| n.starts_with(prefix) && n.ends_with(".json"))
            });
            if let Some(name) = found {
                return Ok(name);
            }
            self.check()?;
            if Instant::now() >= deadline {
                return Err(format!(
                    "no {prefix}*.json appeared in {} within {} s",
                    dir.display(),
                    PATIENCE.as_secs()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until message `id` has no buttons left (the decision's edit).
    fn wait_edit(&mut self, fake: &FakeTelegram, id: i64) -> Result<(), String> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            // As in wait_messages: a slice on the stand-in's condition
            // variable, then a look at whether the daemon is alive.
            let slice_end = (Instant::now() + Duration::from_millis(200)).min(deadline);
            let slice = slice_end.saturating_duration_since(Instant::now());
            let gone = |st: &telegram::State| {
                st.current
                    .get(&id)
                    .is_some_and(|m| m.reply_markup.is_none())
            };
            fake.wait_until(slice + Duration::from_millis(50), "an edit", |st| {
                gone(st) || Instant::now() >= slice_end
            });
            if fake.current(id).is_some_and(|m| m.reply_markup.is_none()) {
                return Ok(());
            }
            self.check()?;
            if Instant::now() >= deadline {
                return Err(format!("message {id} kept its buttons after the press"));
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

fn config_text(api_url: &str, hooks: &Receiver, root: &Path) -> String {
    let dir = |name: &str| format!("{:?}", root.join(name).display().to_string());
    let hook = |path: &str| format!("    \"{}\",", hooks.url(path));
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
            "Telegram allows about 1; 50 is quicker",
        ),
        (String::new(), ""),
        ("[webhook]".into(), ""),
        (
            format!("secret = \"{SECRET}\""),
            "the receiver checks with it too",
        ),
        ("endpoints = [".into(), "by the path's end:"),
        (hook("/webhook/events"), "event_processed"),
        (hook("/webhook/responses"), "user_response"),
        (hook("/webhook/health"), "health_update"),
        ("]".into(), ""),
        (String::new(), ""),
        ("[webhook.retry]".into(), ""),
        ("initial_delay_ms = 200".into(), "default 1000"),
        (String::new(), ""),
        ("[health]".into(), ""),
        (
            "interval_seconds = 1".into(),
            "default 30; so an outage shows at once",
        ),
        (
            "memory_threshold_mb = 512".into(),
            "a debug build is bigger than a release",
        ),
        ("listen = \"\"".into(), "no HTTP health endpoint"),
        (String::new(), ""),
        ("[notifications]".into(), ""),
        (
            "progress_min_edit_seconds = 1".into(),
            "default 3; edits of a progress message",
        ),
    ];
    let mut text = String::new();
    for (setting, comment) in lines {
        let _ = match comment {
            "" => writeln!(text, "{setting}"),
            _ => writeln!(text, "{setting:<48} # {comment}"),
        };
    }
    text
}

/// Waits for the daemon to log each delivery the receiver accepted, so
/// that its lines come before the narration's next step.
fn settle(hooks: &Receiver) {
    let accepted = hooks
        .deliveries()
        .iter()
        .filter(|d| d.status == 200)
        .count();
    LOG.wait_count(LOG_GRACE, accepted, |l| {
        l.starts_with("cctelegram::webhook") && l.contains(" delivered to ")
    });
}

/// The first delivery of `kind` that `pred` accepts, if any.
fn find(
    got: &[Delivery],
    kind: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> Option<Delivery> {
    got.iter()
        .find(|d| d.kind == kind && d.status == 200 && pred(&d.json()))
        .cloned()
}

fn run(fake: &FakeTelegram, hooks: &Receiver, root: &Path) -> Result<(), String> {
    println!(
        "{}",
        bold("cctelegram demo: event files in, Telegram messages out, answers and webhooks back")
    );
    println!(
        "{}",
        dim(
            "No Telegram account needed: the real daemon talks HTTP to a stand-in for the\n\
             Telegram Bot API and to a webhook receiver, both on this machine; nothing leaves it."
        )
    );

    heading("Start");
    println!("Stand-in for api.telegram.org listening on {}", fake.url());
    println!(
        "Webhook receiver listening on {}; it verifies both signature schemes",
        hooks.url("")
    );
    let text = config_text(&fake.url(), hooks, root);
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
    let responses = cfg.paths.responses_dir.clone();
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
                // "delivered" is logged just after Telegram's answer, and
                // the event_processed webhook follows.
                LOG.wait_for(LOG_GRACE, |l| {
                    l.starts_with("cctelegram::telegram") && l.contains(&ev.event_id)
                });
                let what = format!("the event_processed webhook for {}", step.name);
                hooks.wait_for(PATIENCE, &what, |got| {
                    find(got, "event_processed", |v| {
                        v["event"]["id"] == ev.event_id.as_str()
                            && v["event"]["status"] == "delivered"
                    })
                })?;
                settle(hooks);
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

    let answers = answer_on_the_phone(fake, hooks, &mut daemon, &messages, &responses)?;
    let edits = progress_in_place(fake, &mut daemon, &events)?;
    show_response_files(&responses, root)?;
    let health = outage(fake, hooks)?;
    let forged = forge(hooks, &answers.press)?;

    heading("Checked");
    for (step, outcome) in &outcomes {
        check(step, outcome, root)?;
    }
    let ok = green("✓");
    println!(
        "  {ok} the press and the reply became response files in responses/ and user_response webhooks"
    );
    let got = hooks.deliveries();
    let verified: Vec<&Delivery> = got.iter().filter(|d| d.status == 200).collect();
    let count = |kind: &str| verified.iter().filter(|d| d.kind == kind).count();
    let sent = outcomes
        .iter()
        .filter(|(_, o)| matches!(o, Outcome::Sent(_)))
        .count();
    if count("event_processed") < sent || count("user_response") < 2 || count("health_update") < 2 {
        return Err(format!(
            "the receiver verified too few webhooks: {} event_processed (want {sent}), \
             {} user_response (want 2), {} health_update (want 2)",
            count("event_processed"),
            count("user_response"),
            count("health_update")
        ));
    }
    println!(
        "  {ok} 6 progress events became one message edited {edits} time(s) in place, then the completion"
    );
    println!(
        "  {ok} {} webhooks verified under both signature schemes: {} event_processed,",
        verified.len(),
        count("event_processed")
    );
    println!(
        "    {} user_response, {} health_update ({})",
        count("user_response"),
        count("health_update"),
        health.join(", then ")
    );
    println!(
        "  {ok} the forged delivery was refused with {}:",
        forged.status
    );
    println!("    {}", fit(&forged.refused, COLUMNS - 4));

    heading("Next: the real thing");
    println!("  1. Make a bot with @BotFather (/newbot), then pair your phone with it:");
    println!("       cargo run -- init            (asks for the token; writes ~/.cc_telegram/config.toml)");
    println!("  2. cargo run -- run");
    println!("  3. In another shell: cargo run -- send --type task_completion --title 'Hello'");
    println!("     or copy any file from examples/events/ into ~/.cc_telegram/events/");
    Ok(())
}

/// A backup reports its progress six times in under two seconds: one
/// message, edited in place, then the completion as a message of its own.
/// Returns how many edits the progress message got.
fn progress_in_place(
    fake: &FakeTelegram,
    daemon: &mut Daemon,
    events: &Path,
) -> Result<usize, String> {
    heading("Progress, edited in place: six task_progress events, one message");
    let before = fake.messages().len();
    let edits_before = fake.calls("editMessageText").len();
    for n in 1..=6 {
        let ev = serde_json::json!({"type": "task_progress", "title": "Nightly backup",
            "task_id": "backup_9", "event_id": format!("backup_9_step{n}"),
            "description": format!("copying part {n} of 6"),
            "data": {"current": n, "total": 6}});
        println!("  {} task_progress {n} of 6", cyan("▸"));
        drop_event(
            events,
            &format!("progress_{n}.json"),
            ev.to_string().as_bytes(),
        )?;
        std::thread::sleep(Duration::from_millis(300)); // the job's own pace
    }
    daemon.wait_messages(fake, before + 1, "the progress message")?;
    let id = fake.messages()[before].message_id;
    let shows = |text: &str| fake.current(id).is_some_and(|m| m.text.contains(text));
    let deadline = Instant::now() + PATIENCE;
    while !shows("part 6 of 6") {
        daemon.check()?;
        if Instant::now() >= deadline {
            return Err("the progress message never showed the last step".into());
        }
        // As in wait_messages: a slice on the stand-in's condition variable.
        let slice_end = (Instant::now() + Duration::from_millis(200)).min(deadline);
        let slice = slice_end.saturating_duration_since(Instant::now());
        fake.wait_until(slice + Duration::from_millis(50), "the last step", |st| {
            Instant::now() >= slice_end
                || st
                    .current
                    .get(&id)
                    .is_some_and(|m| m.text.contains("part 6 of 6"))
        });
    }
    let edits = fake.calls("editMessageText").len() - edits_before;
    let done = serde_json::json!({"type": "task_completion", "title": "Nightly backup done",
        "task_id": "backup_9", "event_id": "backup_9_done", "description": "6 parts, 2.1 GB"});
    println!("  {} task_completion", cyan("▸"));
    drop_event(events, "progress_done.json", done.to_string().as_bytes())?;
    daemon.wait_messages(fake, before + 2, "the completion")?;
    println!("  The progress message (edited {edits} time(s), then once more at the end), and the completion:");
    if let Some(m) = fake.current(id) {
        show_message(&m);
    }
    if let Some(m) = fake.messages().get(before + 1) {
        show_message(m);
    }
    if fake.messages().len() != before + 2 {
        return Err(format!(
            "progress should be one message and the completion another; {} were sent",
            fake.messages().len() - before
        ));
    }
    Ok(edits)
}

/// What the simulated phone sent.
struct Answers {
    /// The user_response webhook of the button press.
    press: Delivery,
}

/// Simulates a tap on the approval's first button and a reply to the build
/// failure, and waits for their response files and webhooks.
fn answer_on_the_phone(
    fake: &FakeTelegram,
    hooks: &Receiver,
    daemon: &mut Daemon,
    messages: &[Sent],
    responses: &Path,
) -> Result<Answers, String> {
    heading("On the phone (simulated: the stand-in plays the user): a tap, then a reply");
    let approval = messages
        .iter()
        .find(|m| m.reply_markup.is_some())
        .ok_or("no message with buttons was sent")?;
    let button = &approval
        .reply_markup
        .as_ref()
        .and_then(|k| k["inline_keyboard"][0][0].as_object().cloned())
        .ok_or("the approval has no first button")?;
    let label = button["text"].as_str().unwrap_or("?");
    let data = button["callback_data"].as_str().unwrap_or("");
    println!(
        "\n{} {} taps [ {label} ] on message {}",
        cyan("▸"),
        bold(&format!("Simulated: user {USER}")),
        approval.message_id
    );
    println!("  {}", dim(&format!("callback_data {data:?}")));
    fake.press(USER, "demo_user", approval.message_id, USER, data);
    let file = daemon.wait_response(responses, "telegram_callback_")?;
    hooks.wait_for(PATIENCE, "the user_response webhook of the press", |got| {
        find(got, "user_response", |v| {
            v["response"]["callback_data"] == data
        })
    })?;
    settle(hooks);
    // The message's edit follows the file; wait for the buttons to go.
    daemon.wait_edit(fake, approval.message_id)?;
    println!("  response file: {}", bold(&file));
    println!("  The message now, buttons gone and the decision added:");
    if let Some(now) = fake.current(approval.message_id) {
        show_message(&now);
    }
    let press = hooks
        .deliveries()
        .into_iter()
        .find(|d| d.kind == "user_response" && d.json()["response"]["callback_data"] == data)
        .ok_or("the press's webhook went missing")?;

    let failure = messages
        .iter()
        .find(|m| m.text.contains("<b>"))
        .unwrap_or(&messages[0]);
    let text = "Looking at it now; the fix goes in before lunch.";
    println!(
        "\n{} {} replies to message {}: {text:?}",
        cyan("▸"),
        bold(&format!("Simulated: user {USER}")),
        failure.message_id
    );
    fake.user_message(USER, "demo_user", USER, text, Some(failure.message_id));
    let file = daemon.wait_response(responses, "telegram_response_")?;
    hooks.wait_for(PATIENCE, "the user_response webhook of the reply", |got| {
        find(got, "user_response", |v| {
            v["response"]["message"]["text"] == text
        })
    })?;
    settle(hooks);
    println!("  response file: {}", bold(&file));
    Ok(Answers { press })
}

/// Prints every response file the daemon wrote, with its mode and content.
fn show_response_files(responses: &Path, root: &Path) -> Result<(), String> {
    heading("Response files in responses/, for the program that asked (e.g. an MCP server)");
    let mut names: Vec<_> = fs::read_dir(responses)
        .map_err(|e| format!("cannot list {}: {e}", responses.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    names.sort();
    for path in names {
        let text = fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mode = fs::metadata(&path)
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
            .unwrap_or(0);
        let shown = path.strip_prefix(root).unwrap_or(&path);
        println!(
            "\n  {} {}",
            bold(&shown.display().to_string()),
            dim(&format!("(mode {mode:o})"))
        );
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        for (k, v) in v
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(_, v)| !v.is_null())
        {
            println!("    {}", dim(&fit(&format!("{k:<22} {v}"), COLUMNS - 4)));
        }
    }
    Ok(())
}

/// Makes the stand-in unreachable until health turns unhealthy, then
/// brings it back until health changes again; returns the alert types.
fn outage(fake: &FakeTelegram, hooks: &Receiver) -> Result<Vec<String>, String> {
    heading("Telegram unreachable for a moment: health changes, and says so by webhook");
    let seen = hooks.deliveries().len();
    println!(
        "\n{} The stand-in stops answering (every connection is closed unanswered).",
        cyan("▸")
    );
    fake.set_down(true);
    let down = hooks.wait_for(PATIENCE, "a health_update webhook", |got| {
        got[seen..]
            .iter()
            .find(|d| d.kind == "health_update" && d.status == 200)
            .cloned()
    });
    let down = match down {
        Ok(d) => d,
        Err(e) => {
            fake.set_down(false);
            return Err(e);
        }
    };
    settle(hooks);
    let after = hooks.deliveries().len();
    println!("\n{} The stand-in answers again.", cyan("▸"));
    fake.set_down(false);
    let up = hooks.wait_for(PATIENCE, "the next health_update webhook", |got| {
        got[after..]
            .iter()
            .find(|d| d.kind == "health_update" && d.status == 200)
            .cloned()
    })?;
    settle(hooks);
    let alert = |d: &Delivery| d.json()["alert_type"].as_str().unwrap_or("?").to_string();
    for d in [&down, &up] {
        let v = d.json();
        println!(
            "  {}",
            dim(&fit(
                &format!(
                    "{}: {}",
                    alert(d),
                    v["alert_message"].as_str().unwrap_or("")
                ),
                COLUMNS - 2
            ))
        );
    }
    Ok(vec![alert(&down), alert(&up)])
}

/// Sends the receiver a copy of the press's webhook with the choice
/// changed, under the original signatures; returns what it made of it.
fn forge(hooks: &Receiver, press: &Delivery) -> Result<Delivery, String> {
    heading("A forged delivery: the press's webhook with its option changed, same signatures");
    let body = String::from_utf8_lossy(&press.body).into_owned();
    let original = press.json()["response"]["callback_data"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let forged_data = match original.split_once('_') {
        Some((_, rest)) => format!("deny_{rest}"),
        None => format!("{original}x"),
    };
    let forged = body.replace(&original, &forged_data);
    println!(
        "\n{} POST {} with callback_data {forged_data:?}",
        cyan("▸"),
        press.path
    );
    let agent = cctelegram::net::agent(Duration::from_secs(10));
    let mut req = agent.post(&hooks.url(&press.path));
    for (k, v) in &press.headers {
        if k.starts_with("x-cctelegram-") || k.starts_with("webhook-") || k == "content-type" {
            req = req.header(k.as_str(), v.as_str());
        }
    }
    let seen = hooks.deliveries().len();
    let resp = req
        .send(forged.as_bytes())
        .map_err(|e| format!("cannot send the forgery: {e}"))?;
    let got = hooks.wait_for(PATIENCE, "the forged delivery", |got| {
        got.get(seen..)?.iter().find(|d| d.status != 200).cloned()
    })?;
    settle(hooks);
    if resp.status().as_u16() != 401 {
        return Err(format!(
            "the receiver answered the forgery with {}",
            resp.status()
        ));
    }
    Ok(got)
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
                    println!("      {}", dim(&fit(line, COLUMNS - 6)));
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
    let hooks = Receiver::start(SECRET);
    let result = TempRoot::new().and_then(|root| {
        let result = run(&fake, &hooks, &root.0);
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
