//! The `cctelegram` command: arguments, logger, configuration, exit code.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use cctelegram::config::{self, Config};
use cctelegram::webhook::deliver::{DeadLetters, Outcome};
use cctelegram::webhook::sign;

/// See `src/alloc.rs`: musl's allocator would map and unmap pages for
/// every lone event after idle.
#[global_allocator]
static ALLOC: cctelegram::alloc::Cached = cctelegram::alloc::Cached;
use cctelegram::{clock, event, Error, Result};

const HELP: &str = "\
cctelegram: event files in, Telegram messages out

Usage:
  cctelegram run [--config PATH]            the daemon, in the foreground
  cctelegram send --type T --title S [--description S] [--task-id ID]
                  [--data JSON] [--option LABEL]... [--priority P] [--silent]
                  [--attach FILE]... [--expects-reply]
                  [--events-dir DIR] [--config PATH]
                                            write one event file, print its id
  cctelegram init [--config PATH] [--token TOKEN] [--force]
                                            pair a phone with the bot, write a config
  cctelegram check-config [--config PATH]   validate; print the effective settings
  cctelegram status [--config PATH] [--json] health and counters of the running daemon
  cctelegram dlq [--config PATH] list|replay ID|--all|purge ID|--all
                                            dead-lettered webhook deliveries
  cctelegram verify --secret S [--secret S2]... --signature SIG [--timestamp T] [--id ID] < body
                                            check a webhook signature: exit 0 if valid
  cctelegram mcp [--config PATH] [--channel] an MCP server on stdio (--channel: a Claude Code channel)
  cctelegram webhook test [--config PATH] [URL]
                                            one signed test delivery to every endpoint
  cctelegram listen [--bind ADDR] [--port N] [--secret S]...
                                            a local receiver that verifies what arrives
  cctelegram help [COMMAND]                 this text
  cctelegram --version

Config: --config, else $CCTELEGRAM_CONFIG, else ~/.cc_telegram/config.toml
if it exists, else built-in defaults plus environment.
Logging: CCTELEGRAM_LOG=error|warn|info|debug (default info), to stderr.
Exit codes: 0 ok, 64 bad usage, 78 bad configuration, 1 other failure.
";

const DLQ_HELP: &str = "\
cctelegram dlq: webhook deliveries that failed for good

  dlq list            id, type, endpoint, attempts, last error, age
  dlq replay ID       send again with a fresh timestamp and signature;
  dlq replay --all    a delivered entry leaves the queue
  dlq purge ID        delete without sending
  dlq purge --all

ID may be a unique prefix of the id. Add --config PATH as for 'run'.
";

const VERIFY_HELP: &str = "\
cctelegram verify: check a webhook signature the way a receiver should

  cctelegram verify --secret S --signature 'sha256=<hex>' [--timestamp T] < body
  cctelegram verify --secret S --signature 'v1,<base64>' --id ID --timestamp T < body

The body is read from standard input, byte for byte. A sha256= signature
is X-CCTelegram-Signature (T is X-CCTelegram-Timestamp); a v1, signature is
webhook-signature (ID is webhook-id, T is webhook-timestamp). Comparison is
constant-time, and a timestamp more than 5 minutes from now is not valid.
During a rotation give every secret (--secret new --secret old) and the
whole header: valid if any secret matches any of its signatures.
Exit 0: valid. Exit 1: not valid, with the reason.
";

const INIT_HELP: &str = "\
cctelegram init: pair a phone with the bot and write a working config

  cctelegram init [--config PATH] [--token TOKEN] [--force]

The token comes from --token, else TELEGRAM_BOT_TOKEN, else it is asked for
(@BotFather gives one: /newbot). init checks it, prints a six-digit code and
waits up to 10 minutes for '/start <code>' in a private chat with the bot.
The sender becomes the allowed user of the config it writes (mode 0600) to
--config, else ~/.cc_telegram/config.toml. An existing file is kept unless
--force is given. TELEGRAM_API_URL points it at another Bot API server.
Exit 0: written. Exit 1: no code in time or a refused token, with what to do.
";

const SEND_HELP: &str = "\
cctelegram send: write one event file atomically into the events directory

  --type T          event type, e.g. task_completion, approval_request
  --title S         title (required)
  --description S   longer text
  --task-id ID      task id (approval buttons carry it)
  --data JSON       a JSON object of extra fields, e.g. '{\"status\":\"ok\"}'
  --option LABEL    an approval button; repeat for each
  --priority P      low (never rings), normal, high, urgent (rings even in
                    quiet hours, during /mute and through /pause)
  --silent          deliver without sound
  --attach FILE     send FILE with the event (photos as photos, others as
                    documents); copied into events_dir/files/ first, so FILE
                    may be removed at once; repeat for each
  --expects-reply   open the reply field on the phone; the answer's response
                    file carries this event's id
  --events-dir DIR  where to write (default: the configured events_dir)

Prints the new event's id. Example:
  cctelegram send --type task_completion --title 'Backup done' --data '{\"duration_ms\":5321}'
";

/// Parsed `--flag value` pairs and the command.
struct Args {
    command: String,
    flags: Vec<(String, String)>,
    switches: Vec<String>,
    /// Words after the command (`dlq replay ID`, `help send`).
    positional: Vec<String>,
}

const VALUE_FLAGS: &[&str] = &[
    "--config",
    "--type",
    "--title",
    "--description",
    "--task-id",
    "--data",
    "--option",
    "--attach",
    "--events-dir",
    "--priority",
    "--secret",
    "--signature",
    "--timestamp",
    "--id",
    "--token",
    "--bind",
    "--port",
];

fn parse_args(argv: Vec<String>) -> Result<Args> {
    let mut it = argv.into_iter();
    let mut args = Args {
        command: String::new(),
        flags: Vec::new(),
        switches: Vec::new(),
        positional: Vec::new(),
    };
    while let Some(a) = it.next() {
        if let Some((k, v)) = a.split_once('=').filter(|(k, _)| VALUE_FLAGS.contains(k)) {
            args.flags.push((k.to_string(), v.to_string()));
        } else if VALUE_FLAGS.contains(&a.as_str()) {
            let v = it
                .next()
                .ok_or_else(|| Error::Usage(format!("{a} needs a value")))?;
            args.flags.push((a, v));
        } else if a.starts_with('-') {
            args.switches.push(a);
        } else if args.command.is_empty() {
            args.command = a;
        } else {
            args.positional.push(a);
        }
    }
    Ok(args)
}

impl Args {
    fn one(&self, flag: &str) -> Option<&str> {
        self.flags
            .iter()
            .rev()
            .find(|(k, _)| k == flag)
            .map(|(_, v)| v.as_str())
    }

    /// A flag the command cannot do without.
    fn need(&self, flag: &str) -> Result<&str> {
        self.one(flag).ok_or_else(|| {
            Error::Usage(format!(
                "'{}' needs {flag}; see 'cctelegram help {}'",
                self.command, self.command
            ))
        })
    }

    fn all(&self, flag: &str) -> Vec<&str> {
        self.flags
            .iter()
            .filter(|(k, _)| k == flag)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Refuses flags and words the command does not take.
    fn only(&self, flags: &[&str], switches: &[&str], positional: bool) -> Result<()> {
        if let Some((k, _)) = self
            .flags
            .iter()
            .find(|(k, _)| !flags.contains(&k.as_str()))
        {
            return Err(Error::Usage(format!(
                "'{}' does not take {k}; see 'cctelegram help {}'",
                self.command, self.command
            )));
        }
        if let Some(s) = self
            .switches
            .iter()
            .find(|s| !switches.contains(&s.as_str()))
        {
            return Err(Error::Usage(format!(
                "'{}' does not take '{s}'; see 'cctelegram help {}'",
                self.command, self.command
            )));
        }
        if let Some(p) = self.positional.first().filter(|_| !positional) {
            return Err(Error::Usage(format!(
                "'{}' does not take '{p}'; see 'cctelegram help {}'",
                self.command, self.command
            )));
        }
        Ok(())
    }
}

fn env(key: &str) -> Option<String> {
    std::env::var(key).ok()
}

fn load_config(args: &Args, run_daemon: bool) -> Result<(Config, Option<PathBuf>)> {
    let path = config::locate(args.one("--config").map(Path::new), &env);
    let (cfg, warnings) = config::load(path.as_deref(), &env, run_daemon)?;
    for w in warnings {
        log::warn!("{w}");
    }
    Ok((cfg, path))
}

fn init_logger() {
    let level = match env("CCTELEGRAM_LOG").as_deref() {
        Some("error") => log::LevelFilter::Error,
        Some("warn") => log::LevelFilter::Warn,
        Some("debug") => log::LevelFilter::Debug,
        // Trace is compiled out (Cargo.toml: log's release_max_level_debug).
        Some("trace") => log::LevelFilter::Debug,
        _ => log::LevelFilter::Info,
    };
    // The HTTP stack's own debug output would print request URLs, and the
    // bot token is part of every one of them: it stays at warnings.
    let _ = simple_logger::SimpleLogger::new()
        .with_level(level)
        .with_module_level("ureq", log::LevelFilter::Warn)
        .with_module_level("ureq_proto", log::LevelFilter::Warn)
        .with_module_level("rustls", log::LevelFilter::Warn)
        .with_module_level("polling", log::LevelFilter::Warn)
        .with_module_level("async_io", log::LevelFilter::Warn)
        .init();
}

fn send(args: &Args) -> Result<()> {
    args.only(
        &[
            "--config",
            "--type",
            "--title",
            "--description",
            "--task-id",
            "--data",
            "--option",
            "--attach",
            "--events-dir",
            "--priority",
        ],
        &["--silent", "--expects-reply"],
        false,
    )?;
    let kind = args.need("--type")?;
    let title = args.need("--title")?;
    let mut data = match args.one("--data") {
        None => serde_json::Map::new(),
        Some(text) => match serde_json::from_str(text) {
            Ok(serde_json::Value::Object(m)) => m,
            Ok(_) => return Err(Error::Usage("--data must be a JSON object {...}".into())),
            Err(e) => return Err(Error::Usage(format!("--data is not valid JSON: {e}"))),
        },
    };
    let options = args.all("--option");
    if !options.is_empty() {
        data.insert("options".into(), options.into());
    }
    if let Some(p) = args.one("--priority") {
        if cctelegram::notify::Priority::parse(p).is_none() {
            return Err(Error::Usage(format!(
                "--priority must be low, normal, high or urgent, not {p:?}"
            )));
        }
        data.insert("priority".into(), p.trim().to_ascii_lowercase().into());
    }
    if args.switches.iter().any(|s| s == "--silent") {
        data.insert("silent".into(), true.into());
    }
    let dir = match args.one("--events-dir") {
        Some(d) => PathBuf::from(d),
        None => load_config(args, false)?.0.paths.events_dir,
    };
    if args.switches.iter().any(|s| s == "--expects-reply") {
        data.insert("expects_reply".into(), true.into());
    }
    let attach = args.all("--attach");
    let mut staged: Vec<String> = Vec::new();
    if !attach.is_empty() {
        let mut list: Vec<serde_json::Value> = match data.remove("attachments") {
            Some(serde_json::Value::Array(a)) => a,
            _ => Vec::new(),
        };
        for f in attach {
            match cctelegram::attach::stage(&dir, std::path::Path::new(f)) {
                Ok(name) => {
                    list.push(name.clone().into());
                    staged.push(name);
                }
                Err(e) => {
                    for name in &staged {
                        let _ = std::fs::remove_file(dir.join("files").join(name));
                    }
                    return Err(e);
                }
            }
        }
        data.insert("attachments".into(), list.into());
    }
    let submitted = event::submit(
        &dir,
        event::Draft {
            kind: kind.into(),
            title: title.into(),
            description: args.one("--description").unwrap_or("").into(),
            task_id: args.one("--task-id").map(str::to_string),
            source: "cctelegram-send".into(),
            data,
            ..Default::default()
        },
    );
    let (id, _) = submitted.inspect_err(|_| {
        // No event names them: they would never be sent nor removed.
        for name in &staged {
            let _ = std::fs::remove_file(dir.join("files").join(name));
        }
    })?;
    println!("{id}");
    Ok(())
}

fn dlq(args: &Args) -> Result<()> {
    args.only(&["--config"], &["--all"], true)?;
    let mut words: Vec<&str> = args.positional.iter().map(String::as_str).collect();
    if args.switches.iter().any(|s| s == "--all") {
        words.push("--all");
    }
    let (cfg, _) = load_config(args, false)?;
    let dead = DeadLetters::new(&cfg.paths.state_dir)?;
    match words.as_slice() {
        ["list"] | [] => {
            let (list, damaged) = dead.list()?;
            for d in &damaged {
                println!("{}: {}", d.name, d.problem);
            }
            if !damaged.is_empty() {
                println!(
                    "{} damaged entr{} (the daemon moves them to damaged/ at its next start).",
                    damaged.len(),
                    if damaged.len() == 1 { "y" } else { "ies" }
                );
            }
            if list.is_empty() {
                println!("The dead letter queue is empty.");
                return Ok(());
            }
            let now = clock::now_ms();
            println!(
                "{:<28} {:<16} {:>8} {:>8}  ENDPOINT / LAST ERROR",
                "ID", "TYPE", "ATTEMPTS", "AGE"
            );
            for (_, d) in &list {
                let age = clock::age_ms(d.died_ms.unwrap_or(d.created_ms), now) / 1000;
                println!(
                    "{:<28} {:<16} {:>8} {:>8}  {}\n{:>64}  {}",
                    d.id,
                    d.kind,
                    d.attempts,
                    human_age(age),
                    d.endpoint,
                    "",
                    d.last_error.as_deref().unwrap_or("")
                );
            }
            println!("{} dead letter(s).", list.len());
            Ok(())
        }
        ["replay", which] | [which, "replay"] => {
            let mut failed = 0;
            for (name, d) in dead.select(which)? {
                let id = d.id.clone();
                match dead.replay(&name, d, &cfg.webhook)? {
                    Outcome::Delivered(status) => {
                        println!("{id}: delivered ({status}), removed from the queue")
                    }
                    Outcome::Retry { error, .. }
                    | Outcome::Refused { error, .. }
                    | Outcome::Gone(error) => {
                        failed += 1;
                        println!("{id}: not delivered, kept: {error}");
                    }
                }
            }
            if failed > 0 {
                return Err(Error::Failed(format!("{failed} deliveries failed again")));
            }
            Ok(())
        }
        ["purge", which] | [which, "purge"] => {
            let list = dead.select(which)?;
            for (name, _) in &list {
                dead.purge(name)?;
            }
            println!("Purged {} dead letter(s).", list.len());
            Ok(())
        }
        _ => Err(Error::Usage(
            "dlq takes list, replay ID|--all or purge ID|--all; see 'cctelegram help dlq'".into(),
        )),
    }
}

fn human_age(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

fn verify(args: &Args) -> Result<()> {
    args.only(
        &["--secret", "--signature", "--timestamp", "--id"],
        &[],
        false,
    )?;
    args.need("--secret")?;
    let secrets = args.all("--secret");
    let signature = args.need("--signature")?;
    let timestamp =
        match args.one("--timestamp") {
            None => None,
            Some(t) => Some(t.trim().parse::<u64>().map_err(|_| {
                Error::Usage(format!("--timestamp must be unix seconds, found {t:?}"))
            })?),
        };
    let mut body = Vec::new();
    std::io::Read::read_to_end(&mut std::io::stdin(), &mut body)
        .map_err(|e| Error::io("standard input", e))?;
    match sign::verify_any(
        &secrets,
        args.one("--id"),
        timestamp,
        signature,
        &body,
        clock::now_ms() / 1000,
    ) {
        Ok(()) => {
            println!("valid");
            Ok(())
        }
        Err(why) => Err(Error::Failed(format!("not valid: {why}"))),
    }
}

fn status(args: &Args) -> Result<()> {
    args.only(&["--config"], &["--json"], false)?;
    let (cfg, _) = load_config(args, false)?;
    use cctelegram::mcp::bridge::{ask, Unasked};
    let (url, code, text) = ask(&cfg).map_err(|e| match e {
        Unasked::NoListener(why) => Error::Failed(format!("cannot ask the daemon: {why}")),
        Unasked::NotRunning { url, error } => Error::Failed(format!(
            "cctelegram is not running: nothing answers at {url} ({error})"
        )),
    })?;
    if code == 401 {
        return Err(Error::Failed(format!(
            "{url} answered 401: set [health] token in this config to the daemon's token"
        )));
    }
    let h: serde_json::Value = serde_json::from_str(&text).map_err(|_| {
        Error::Failed(format!(
            "{url} answered something that is not cctelegram's health"
        ))
    })?;
    if args.switches.iter().any(|s| s == "--json") {
        println!("{text}");
        return Ok(());
    }
    print!("{}", status_table(&h));
    Ok(())
}

/// `cctelegram status` as a person reads it.
fn status_table(h: &serde_json::Value) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let up = h["uptime_seconds"].as_u64().unwrap_or(0);
    let _ = writeln!(
        out,
        "cctelegram is {} (up {}h {}m)\n",
        h["status"].as_str().unwrap_or("unknown"),
        up / 3600,
        up % 3600 / 60
    );
    let _ = writeln!(out, "{:<27} {:<6} DETAIL", "CHECK", "STATUS");
    for c in h["checks"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "{:<27} {:<6} {}",
            c["name"].as_str().unwrap_or(""),
            c["status"].as_str().unwrap_or(""),
            c["message"].as_str().unwrap_or("")
        );
    }
    let _ = writeln!(out);
    let n = &h["notifications"];
    for (label, key) in [("muted", "muted_until"), ("paused", "paused_until")] {
        let v = n[key]
            .as_str()
            .map_or("no".to_string(), |t| format!("until {t}"));
        let _ = writeln!(out, "{label:<27} {v}");
    }
    if let Some(counters) = h["counters"].as_object() {
        for (k, v) in counters {
            let _ = writeln!(out, "{:<27} {v}", k.replace('_', " "));
        }
    }
    out.push_str(&cctelegram::webhook::figures::status_lines(h));
    out.push_str(&cctelegram::fleet::status_table(h));
    out
}

fn init(args: &Args) -> Result<()> {
    args.only(&["--config", "--token"], &["--force"], false)?;
    let opts = cctelegram::init::Options {
        config: args.one("--config").map(PathBuf::from),
        token: args.one("--token").map(str::to_string),
        force: args.switches.iter().any(|s| s == "--force"),
    };
    cctelegram::init::run(&opts, &env)
}

fn check_config(args: &Args) -> Result<()> {
    args.only(&["--config"], &[], false)?;
    let (cfg, path) = load_config(args, false)?;
    match path {
        Some(p) => println!("# from {} plus environment", p.display()),
        None => println!("# built-in defaults plus environment (no config file)"),
    }
    print!("{}", cfg.masked());
    println!("\n# where events go (first matching route, else chat_ids):");
    print!("{}", cfg.where_events_go());
    if cfg.telegram.bot_token.is_empty() && !cfg.mqtt.is_device() {
        eprintln!("note: no bot token is set; 'cctelegram run' needs TELEGRAM_BOT_TOKEN or [telegram] bot_token");
    }
    Ok(())
}

fn real_main() -> Result<()> {
    let args = parse_args(std::env::args().skip(1).collect())?;
    if args.switches.iter().any(|s| s == "--version" || s == "-V") && args.command.is_empty() {
        println!("cctelegram {}", env!("CARGO_PKG_VERSION"));
        return Ok(());
    }
    let wants_help = args.switches.iter().any(|s| s == "--help" || s == "-h");
    match args.command.as_str() {
        "" if wants_help => print!("{HELP}"),
        "help" => match args.positional.first().map(String::as_str) {
            Some("send") => print!("{SEND_HELP}"),
            Some("dlq") => print!("{DLQ_HELP}"),
            Some("verify") => print!("{VERIFY_HELP}"),
            Some("init") => print!("{INIT_HELP}"),
            _ => print!("{HELP}"),
        },
        "send" if wants_help => print!("{SEND_HELP}"),
        "init" if wants_help => print!("{INIT_HELP}"),
        _ if wants_help => print!("{HELP}"),
        "run" => {
            args.only(&["--config"], &[], false)?;
            let (cfg, path) = load_config(&args, true)?;
            cctelegram::daemon::run(cfg, path)?;
        }
        "send" => send(&args)?,
        "init" => init(&args)?,
        "check-config" => check_config(&args)?,
        "dlq" => dlq(&args)?,
        "status" => status(&args)?,
        "verify" => verify(&args)?,
        "mcp" => {
            args.only(&["--config"], &["--channel"], false)?;
            let (cfg, _) = load_config(&args, false)?;
            let channel = args.switches.iter().any(|s| s == "--channel");
            cctelegram::mcp::serve(cfg, channel)?;
        }
        "webhook" => {
            args.only(&["--config"], &[], true)?;
            let (cfg, _) = load_config(&args, false)?;
            cctelegram::webhook::probe::command(&cfg, &args.positional)?;
        }
        "listen" => {
            args.only(&["--config", "--bind", "--port", "--secret"], &[], false)?;
            let (bind, port) = (args.one("--bind"), args.one("--port"));
            let secrets: Vec<String> = args.all("--secret").iter().map(|s| s.to_string()).collect();
            let cfg = if secrets.is_empty() {
                Some(load_config(&args, false)?.0)
            } else {
                None
            };
            cctelegram::webhook::listen::command(bind, port, secrets, cfg.as_ref())?;
        }
        "" => {
            return Err(Error::Usage(
                "no command given; try 'cctelegram help'".into(),
            ))
        }
        other => {
            return Err(Error::Usage(format!(
                "unknown command '{other}'; try 'cctelegram help'"
            )))
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    init_logger();
    match real_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cctelegram: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}
