//! `cctelegram init`: from a bot token to a working, paired config.
//!
//! The hard step for a new user is finding their numeric Telegram user id
//! and writing it into a config. Here the bot finds it: init checks the
//! token with `getMe`, prints a six-digit code, and long-polls `getUpdates`
//! until a private message carrying that code arrives; its sender is the
//! one allowed user of the config it writes. Messages without the code are
//! ignored, so a stranger who finds the bot pairs nothing.
//!
//! Every update seen is acknowledged (the offset advanced) before init
//! exits, so the daemon started next does not answer the `/start` again.
//! The config is written once, atomically and mode 0600 (it holds the
//! token), and never over an existing file without `--force`.
//!
//! The decisions (which message pairs, the config text) are pure functions
//! below; [`run`] is the thin layer of prompts and Bot API calls.

use std::fs::{self, OpenOptions};
use std::io::{BufRead, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::telegram::api::Api;
use crate::{clock, config, spool};

/// How long init waits for the code, at most (CONTRACT section 9).
pub const PAIRING_WINDOW: Duration = Duration::from_secs(600);
/// One long poll; Telegram holds it open up to this long.
const POLL_SECS: u64 = 30;
const DEFAULT_API: &str = "https://api.telegram.org";

/// What `cctelegram init` was given.
pub struct Options {
    pub config: Option<PathBuf>,
    pub token: Option<String>,
    pub force: bool,
}

/// The user who sent the code, and the private chat it came from.
#[derive(Debug, PartialEq)]
pub struct Paired {
    pub user_id: i64,
    pub chat_id: i64,
    /// `@username`, else the first name: how to name them in messages.
    pub name: String,
}

/// Six decimal digits from the system's random source.
pub fn new_code() -> String {
    let mut b = [0u8; 4];
    // SystemRandom reads getrandom(2); failure would mean a broken kernel.
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    format!("{:06}", u32::from_le_bytes(b) % 1_000_000)
}

/// Whether `update` is a private message from a person carrying `code`:
/// `/start CODE` (what the t.me deep link sends), `/start@bot CODE`, or
/// the code alone.
pub fn pairing(update: &Value, code: &str) -> Option<Paired> {
    let m = update.get("message")?;
    if m["chat"]["type"].as_str() != Some("private") || m["from"]["is_bot"].as_bool() != Some(false)
    {
        return None;
    }
    let words: Vec<&str> = m["text"].as_str()?.split_whitespace().collect();
    let carries = match words.as_slice() {
        [only] => *only == code,
        [start, given] => {
            let command = start.split('@').next().unwrap_or("");
            command == "/start" && *given == code
        }
        _ => false,
    };
    if !carries {
        return None;
    }
    let from = &m["from"];
    let name = match (from["username"].as_str(), from["first_name"].as_str()) {
        (Some(u), _) if !u.is_empty() => format!("@{u}"),
        (_, Some(f)) => f.to_string(),
        _ => "this user".to_string(),
    };
    Some(Paired {
        user_id: from["id"].as_i64().filter(|id| *id > 0)?,
        chat_id: m["chat"]["id"].as_i64()?,
        name,
    })
}

/// The config init writes: the token and the paired user, and every other
/// setting as a commented default. `api_url` is written only when it is
/// not Telegram's (init was pointed elsewhere, and `run` must go there too).
pub fn config_text(token: &str, user: i64, name: &str, api_url: &str, written: &str) -> String {
    // A JSON string literal is a valid TOML basic string.
    let quoted = |s: &str| serde_json::to_string(s).unwrap_or_default();
    // A name is the user's own text and goes into a comment: one line of it.
    let name: String = name.chars().filter(|c| !c.is_control()).collect();
    let api_line = if api_url == DEFAULT_API {
        format!("# api_url = {}", quoted(DEFAULT_API))
    } else {
        format!("api_url = {}", quoted(api_url))
    };
    format!(
        r#"# cctelegram configuration, written by `cctelegram init` on {written}.
#
# It holds the bot token, so it is mode 0600: keep it that way. Check it after
# every edit with `cctelegram check-config`. A commented line shows the
# default; remove the `#` to change it. An unknown key is a warning; a wrong
# value stops the daemon with exit code 78.

[telegram]
# From @BotFather. TELEGRAM_BOT_TOKEN in the environment wins.
bot_token = {token}
# Numeric Telegram user ids allowed to press buttons and reply; {name}
# paired with /start. TELEGRAM_ALLOWED_USERS="1,2" wins.
allowed_users = [{user}]
# Where notifications go; empty: each allowed user's private chat.
# chat_ids = []
# TELEGRAM_API_URL in the environment wins; http:// only for loopback.
{api_line}
# poll_timeout_seconds = 30
# parse_mode = "HTML"          # HTML | MarkdownV2 | plain

[paths]
# Programs drop *.json event files here (write a temporary name, then rename).
# events_dir = "~/.cc_telegram/events"        # env CC_TELEGRAM_EVENTS_DIR
# responses_dir = "~/.cc_telegram/responses"  # env CC_TELEGRAM_RESPONSES_DIR
# state_dir = "~/.cc_telegram/state"          # env CC_TELEGRAM_STATE_DIR

[limits]
# Telegram's own limits.
# per_chat_per_second = 1
# per_group_per_minute = 20
# global_per_second = 30
# Event files above this are refused unread and moved to events/failed/.
# max_event_bytes = 1048576

[webhook]
# Signed deliveries of every event, answer and health change to your own
# HTTP endpoints (CCTELEGRAM_WEBHOOK_SECRET wins for the secret).
# enabled = true
# secret = ""
# endpoints = []               # e.g. ["https://your-app.example/webhook/events"]
# timeout_seconds = 30
# max_in_flight = 4

[webhook.retry]
# max_attempts = 3
# initial_delay_ms = 1000
# max_delay_ms = 30000
# backoff_multiplier = 2.0

[health]
# interval_seconds = 30
# memory_threshold_mb = 100
# GET /health and /metrics; "" turns the listener off.
# listen = "127.0.0.1:8080"
"#,
        token = quoted(token),
    )
}

/// Writes `text` to `path` mode 0600: a temporary file in the same
/// directory, fsynced, then renamed (with `force`) or hard-linked (without:
/// linking fails if the name exists, so a config that appeared meanwhile is
/// not replaced either), and the directory fsynced.
pub fn write_config(path: &Path, text: &str, force: bool) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    spool::ensure_dir(&dir)?;
    let name = path.file_name().map_or_else(
        || "config.toml".into(),
        |n| n.to_string_lossy().into_owned(),
    );
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        if force {
            fs::rename(&tmp, path)
        } else {
            fs::hard_link(&tmp, path).and_then(|()| fs::remove_file(&tmp))
        }
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            return Err(exists(path));
        }
        return Err(Error::io(path, e));
    }
    spool::sync_dir(&dir)
}

fn exists(path: &Path) -> Error {
    Error::Failed(format!(
        "{} already exists and was left as it is; pass --force to replace it, \
         or --config PATH to write another file",
        path.display()
    ))
}

/// What to tell the user when a Bot API call fails.
fn advice(e: Error, api_url: &str) -> Error {
    match e {
        Error::Telegram { status, .. } if status == 401 || status == 404 => Error::Failed(format!(
            "Telegram refused the bot token ({status} Unauthorized). Copy it again from \
             @BotFather (/mybots, then API Token) and run 'cctelegram init' again"
        )),
        Error::Telegram { status: 409, .. } => Error::Failed(
            "another program is polling this bot (409 Conflict): stop it (a running \
             'cctelegram run' too) and run 'cctelegram init' again"
                .into(),
        ),
        Error::Transport(why) => Error::Failed(format!(
            "cannot reach the Bot API at {api_url}: {why}; check the network \
             (or TELEGRAM_API_URL) and run 'cctelegram init' again"
        )),
        other => other,
    }
}

/// One line from stdin; when stdin is a terminal, typed without echo, as
/// passwords are: the token is a secret and stays off the screen.
fn read_unechoed_line() -> std::io::Result<String> {
    let fd = libc::STDIN_FILENO;
    // SAFETY: tcgetattr and tcsetattr only read and write the termios
    // struct given, which lives on this stack frame.
    let saved = unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        (libc::isatty(fd) == 1 && libc::tcgetattr(fd, &mut t) == 0).then_some(t)
    };
    if let Some(mut quiet) = saved {
        quiet.c_lflag &= !libc::ECHO;
        // SAFETY: as above.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &quiet) };
    }
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    if let Some(t) = saved {
        // SAFETY: as above; the terminal gets its echo back.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &t) };
    }
    read.map(|_| line)
}

/// The token: `--token`, else `TELEGRAM_BOT_TOKEN`, else one line typed on stdin.
fn token(opts: &Options, get: &dyn Fn(&str) -> Option<String>) -> Result<String> {
    let given = opts
        .token
        .clone()
        .or_else(|| get("TELEGRAM_BOT_TOKEN"))
        .filter(|t| !t.trim().is_empty());
    let token = match given {
        Some(t) => t,
        None => {
            eprint!("Bot token (from @BotFather): ");
            let _ = std::io::stderr().flush();
            let line = read_unechoed_line().map_err(|e| Error::io("standard input", e))?;
            eprintln!(); // the Enter that was not echoed, or the end of input
            line
        }
    };
    let token = token.trim().to_string();
    if token.is_empty() {
        return Err(Error::Usage(
            "no bot token: pass --token, set TELEGRAM_BOT_TOKEN or type it when asked; \
             @BotFather gives one (/newbot)"
                .into(),
        ));
    }
    Ok(token)
}

/// `cctelegram init`. Prints the code and what to do on stdout; returns
/// once the config is written, or with an error saying what to do next.
pub fn run(opts: &Options, get: &dyn Fn(&str) -> Option<String>) -> Result<()> {
    let path = match (&opts.config, get("HOME").filter(|h| !h.is_empty())) {
        (Some(p), _) => p.clone(),
        (None, Some(home)) => Path::new(&home).join(".cc_telegram/config.toml"),
        (None, None) => {
            return Err(Error::Usage(
                "HOME is not set: pass --config PATH to say where the config goes".into(),
            ))
        }
    };
    // Before anything is asked or sent: a refusal now costs the user nothing.
    if !opts.force && fs::symlink_metadata(&path).is_ok() {
        return Err(exists(&path));
    }
    let token = token(opts, get)?;
    let api_url = get("TELEGRAM_API_URL")
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| DEFAULT_API.to_string());
    // The config about to be written must load; this also refuses a plain
    // http:// API URL that is not loopback before the token is sent there.
    let (cfg, _) = config::parse(&config_text(&token, 1, "", &api_url, ""))?;
    config::validate(&cfg, true)?;

    let api = Api::new(&api_url, &token);
    let me = api
        .call("getMe", &json!({}), Duration::from_secs(30))
        .map_err(|e| advice(e, &api_url))?;
    let bot = me["username"].as_str().unwrap_or("your_bot").to_string();
    // A webhook set on the bot would make every getUpdates a 409.
    api.call("deleteWebhook", &json!({}), Duration::from_secs(30))
        .map_err(|e| advice(e, &api_url))?;

    let code = new_code();
    let mut out = std::io::stdout().lock();
    let _ = write!(
        out,
        "The token works: this is the bot @{bot}.\n\
         To pair your phone, send /start {code} to @{bot} in Telegram,\n\
         or open https://t.me/{bot}?start={code} and press Start.\n\
         Waiting up to {} minutes for it; Ctrl-C stops.\n",
        PAIRING_WINDOW.as_secs() / 60
    );
    let _ = out.flush();
    drop(out);

    let (paired, offset) = wait_for_code(&api, &api_url, &code)?;
    // Acknowledge everything seen, the pairing message included, so the
    // daemon's first getUpdates does not get it again.
    let ack = json!({"offset": offset, "timeout": 0, "allowed_updates": ["message"]});
    api.call("getUpdates", &ack, Duration::from_secs(30))
        .map_err(|e| advice(e, &api_url))?;

    let written = clock::iso8601(clock::now_ms());
    let text = config_text(&token, paired.user_id, &paired.name, &api_url, &written);
    write_config(&path, &text, opts.force)?;

    let hello = format!(
        "Paired. cctelegram will send its notifications to this chat, and takes \
         button presses and replies from {} (user id {}).",
        paired.name, paired.user_id
    );
    let answer = json!({"chat_id": paired.chat_id, "text": hello});
    if let Err(e) = api.call("sendMessage", &answer, Duration::from_secs(30)) {
        log::warn!("the config is written, but the answer to the chat failed: {e}");
    }
    let config_arg = match &opts.config {
        Some(p) => format!(" --config {}", p.display()),
        None => String::new(),
    };
    println!(
        "Paired with {} (user id {}).\n\
         Wrote {} (mode 0600).\n\n\
         Next:\n  \
         cctelegram run{config_arg}\n  \
         cctelegram send{config_arg} --type task_completion --title 'Hello from cctelegram'",
        paired.name,
        paired.user_id,
        path.display()
    );
    Ok(())
}

/// Long-polls until a message carries `code`; returns who sent it and the
/// offset that acknowledges every update seen.
fn wait_for_code(api: &Api, api_url: &str, code: &str) -> Result<(Paired, i64)> {
    let deadline = Instant::now() + PAIRING_WINDOW;
    let mut offset: Option<i64> = None;
    let mut failures: u32 = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::Failed(format!(
                "no message with the code arrived within {} minutes; run 'cctelegram init' \
                 again and send the new code to the bot from your phone",
                PAIRING_WINDOW.as_secs() / 60
            )));
        }
        let wait = left.as_secs().clamp(1, POLL_SECS);
        let mut params = json!({"timeout": wait, "allowed_updates": ["message"]});
        if let Some(o) = offset {
            params["offset"] = json!(o);
        }
        let updates = match api.call("getUpdates", &params, Duration::from_secs(wait + 15)) {
            Ok(u) => {
                failures = 0;
                u
            }
            Err(e) if e.is_retryable() && !matches!(e, Error::Telegram { status: 409, .. }) => {
                // A network hiccup during ten minutes of waiting is no reason to give up.
                failures += 1;
                log::warn!("getUpdates failed ({e}); trying again");
                let pause = Duration::from_secs(u64::from(failures.min(5)));
                std::thread::sleep(pause.min(deadline.saturating_duration_since(Instant::now())));
                continue;
            }
            Err(e) => return Err(advice(e, api_url)),
        };
        for u in updates.as_array().into_iter().flatten() {
            if let Some(id) = u["update_id"].as_i64() {
                offset = Some(offset.map_or(id + 1, |o| o.max(id + 1)));
            }
            if let Some(p) = pairing(u, code) {
                return Ok((p, offset.unwrap_or(0)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(chat_type: &str, text: &str) -> Value {
        json!({"update_id": 7, "message": {
            "message_id": 1, "date": 0, "text": text,
            "from": {"id": 42, "is_bot": false, "first_name": "Ada", "username": "ada"},
            "chat": {"id": 42, "type": chat_type},
        }})
    }

    #[test]
    fn only_a_private_message_with_the_code_pairs() {
        let want = Some(Paired {
            user_id: 42,
            chat_id: 42,
            name: "@ada".into(),
        });
        assert_eq!(
            pairing(&message("private", "/start 123456"), "123456"),
            want
        );
        assert_eq!(
            pairing(&message("private", "/start@demo_bot 123456"), "123456"),
            want
        );
        assert_eq!(pairing(&message("private", " 123456 "), "123456"), want);
        for (chat, text) in [
            ("private", "/start 654321"),
            ("private", "/start"),
            ("private", "hello 123456"),
            ("private", "/start 123456 extra"),
            ("private", "/stop 123456"),
            ("group", "/start 123456"),
        ] {
            assert_eq!(
                pairing(&message(chat, text), "123456"),
                None,
                "{chat} {text}"
            );
        }
        let mut from_bot = message("private", "123456");
        from_bot["message"]["from"]["is_bot"] = json!(true);
        assert_eq!(pairing(&from_bot, "123456"), None);
        assert_eq!(pairing(&json!({"update_id": 1}), "123456"), None);
    }

    #[test]
    fn codes_are_six_digits() {
        for _ in 0..50 {
            let c = new_code();
            assert!(c.len() == 6 && c.bytes().all(|b| b.is_ascii_digit()), "{c}");
        }
    }

    #[test]
    fn the_config_loads_with_the_token_and_the_user_and_defaults_elsewhere() {
        let text = config_text("123:abc", 42, "@ada", DEFAULT_API, "now");
        let (cfg, warnings) = config::parse(&text).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        config::validate(&cfg, true).unwrap();
        assert_eq!(cfg.telegram.bot_token, "123:abc");
        assert_eq!(cfg.telegram.allowed_users, vec![42]);
        let defaults = config::Config::default();
        assert_eq!(cfg.telegram.api_url, defaults.telegram.api_url);
        assert_eq!(cfg.paths.events_dir, defaults.paths.events_dir);
        assert_eq!(cfg.health.listen, defaults.health.listen);

        let odd = config_text(
            "123:abc",
            42,
            "Ada\n[telegram]\nbot_token = 1",
            DEFAULT_API,
            "",
        );
        let (cfg, warnings) = config::parse(&odd).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(
            cfg.telegram.bot_token, "123:abc",
            "a name cannot add settings"
        );

        let elsewhere = config_text("123:abc", 42, "@ada", "http://127.0.0.1:9/", "now");
        let (cfg, _) = config::parse(&elsewhere).unwrap();
        assert_eq!(cfg.telegram.api_url, "http://127.0.0.1:9/");
    }
}
