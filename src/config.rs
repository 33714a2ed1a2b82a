//! Configuration: the TOML file of CONTRACT section 2, then the environment.
//!
//! [`parse`] is pure (text in, settings and warnings out) so every rule is
//! testable without a disk; [`load`] finds and reads the file and applies the
//! environment. The TOML grammar is basic-toml's; this module only walks the
//! resulting tree so that every wrong value is reported with its full key
//! (`limits.global_per_second`), which is what a person needs to fix it.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::webhook::endpoint::{self, Format};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseMode {
    Html,
    MarkdownV2,
    Plain,
}

impl ParseMode {
    pub fn name(self) -> &'static str {
        match self {
            ParseMode::Html => "HTML",
            ParseMode::MarkdownV2 => "MarkdownV2",
            ParseMode::Plain => "plain",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Telegram {
    pub bot_token: String,
    pub allowed_users: Vec<i64>,
    /// Chat ids as Telegram accepts them: a number or `@channelname`.
    pub chat_ids: Vec<String>,
    pub api_url: String,
    pub poll_timeout_seconds: u64,
    pub parse_mode: ParseMode,
}

#[derive(Debug, Clone)]
pub struct Paths {
    pub events_dir: PathBuf,
    pub responses_dir: PathBuf,
    pub state_dir: PathBuf,
    /// Absolute directories events may attach files from, besides
    /// `events_dir/files/`.
    pub attachment_dirs: Vec<PathBuf>,
}

/// Sending rates. Telegram allows about one message a second to a chat,
/// twenty a minute to a group and thirty a second overall.
#[derive(Debug, Clone)]
pub struct Limits {
    pub per_chat_per_second: f64,
    pub per_group_per_minute: f64,
    pub global_per_second: f64,
    pub max_event_bytes: u64,
    /// The largest attachment sent (Telegram's 50 MB for bots).
    pub max_attachment_bytes: u64,
}

#[derive(Debug, Clone)]
pub struct Retry {
    pub max_attempts: u64,
    pub initial_delay_ms: u64,
    pub max_delay_ms: u64,
    pub backoff_multiplier: f64,
}

#[derive(Debug, Clone)]
pub struct Webhook {
    pub enabled: bool,
    pub secret: String,
    /// Rotation: `[new, old, ...]`; when set, `secret` is not used.
    pub secrets: Vec<String>,
    pub format: Format,
    pub endpoints: Vec<String>,
    /// `[[webhook.endpoint]]`: per-endpoint settings (see `webhook::endpoint`).
    pub endpoint: Vec<endpoint::Settings>,
    pub timeout_seconds: u64,
    pub max_in_flight: u64,
    pub retry: Retry,
}

#[derive(Debug, Clone)]
pub struct Health {
    pub interval_seconds: u64,
    pub memory_threshold_mb: u64,
    /// Empty: no HTTP endpoint.
    pub listen: String,
    /// `Authorization: Bearer` token for `/`, `/health` and `/metrics`;
    /// required when `listen` is not a loopback address. A secret.
    pub token: String,
}

/// `[notifications]`: when a message rings, and how often progress is edited.
#[derive(Debug, Clone)]
pub struct Notifications {
    /// As written, for `check-config`.
    pub quiet_hours_text: String,
    pub quiet_hours: Option<crate::tz::Window>,
    /// IANA name; empty: `$TZ`, else `/etc/localtime`, else UTC.
    pub timezone: String,
    pub progress_min_edit_seconds: u64,
}

/// One `[[route]]`: events it matches go to its chats instead of `chat_ids`.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// Globs (`*`, `?`) on the event type; empty: any type.
    pub types: Vec<String>,
    /// Exact sources; empty: any source.
    pub sources: Vec<String>,
    /// Fleet devices (CONTRACT section 10); empty: any device, or none.
    pub devices: Vec<String>,
    pub chats: Vec<String>,
}

impl Route {
    pub fn matches(&self, kind: &str, source: &str) -> bool {
        (self.types.is_empty() || self.types.iter().any(|g| glob(g, kind)))
            && (self.sources.is_empty() || self.sources.iter().any(|s| s == source))
    }
}

/// `*` is any run of characters, `?` any one; everything else is itself.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[derive(Debug, Clone)]
pub struct Config {
    pub telegram: Telegram,
    pub paths: Paths,
    pub limits: Limits,
    pub webhook: Webhook,
    pub health: Health,
    pub notifications: Notifications,
    pub routes: Vec<Route>,
    /// `[mqtt]`: fleet mode (CONTRACT section 10).
    pub mqtt: crate::fleet::settings::Mqtt,
}

/// The longest delay any setting may ask for.
const DAY_MS: u64 = 86_400_000;

/// Stands for the whole file in errors that are not about one key.
const FILE: &str = "the config file";

/// Every key the file may hold, by table; anything else is warned about.
const KNOWN: &[(&str, &[&str])] = &[
    (
        "telegram",
        &[
            "bot_token",
            "allowed_users",
            "chat_ids",
            "api_url",
            "poll_timeout_seconds",
            "parse_mode",
        ],
    ),
    (
        "paths",
        &[
            "events_dir",
            "responses_dir",
            "state_dir",
            "attachment_dirs",
        ],
    ),
    (
        "limits",
        &[
            "per_chat_per_second",
            "per_group_per_minute",
            "global_per_second",
            "max_event_bytes",
            "max_attachment_bytes",
        ],
    ),
    (
        "webhook",
        &[
            "enabled",
            "secret",
            "secrets",
            "format",
            "endpoints",
            "endpoint",
            "timeout_seconds",
            "retry_attempts",
            "max_in_flight",
            "retry",
        ],
    ),
    (
        "webhook.retry",
        &[
            "max_attempts",
            "initial_delay_ms",
            "max_delay_ms",
            "backoff_multiplier",
        ],
    ),
    (
        "health",
        &["interval_seconds", "memory_threshold_mb", "listen", "token"],
    ),
    (
        "notifications",
        &["quiet_hours", "timezone", "progress_min_edit_seconds"],
    ),
    ("mqtt", crate::fleet::settings::KEYS),
];

const ROUTE_KEYS: &[&str] = &["types", "sources", "devices", "chats"];

impl Default for Config {
    fn default() -> Self {
        Config {
            telegram: Telegram {
                bot_token: String::new(),
                allowed_users: Vec::new(),
                chat_ids: Vec::new(),
                api_url: "https://api.telegram.org".into(),
                poll_timeout_seconds: 30,
                parse_mode: ParseMode::Html,
            },
            paths: Paths {
                events_dir: "~/.cc_telegram/events".into(),
                responses_dir: "~/.cc_telegram/responses".into(),
                state_dir: "~/.cc_telegram/state".into(),
                attachment_dirs: Vec::new(),
            },
            limits: Limits {
                per_chat_per_second: 1.0,
                per_group_per_minute: 20.0,
                global_per_second: 30.0,
                max_event_bytes: 1_048_576,
                max_attachment_bytes: 52_428_800,
            },
            webhook: Webhook {
                enabled: true,
                secret: String::new(),
                secrets: Vec::new(),
                format: Format::Cctelegram,
                endpoints: Vec::new(),
                endpoint: Vec::new(),
                timeout_seconds: 30,
                max_in_flight: 4,
                retry: Retry {
                    max_attempts: 3,
                    initial_delay_ms: 1000,
                    max_delay_ms: 30_000,
                    backoff_multiplier: 2.0,
                },
            },
            health: Health {
                interval_seconds: 30,
                memory_threshold_mb: 100,
                listen: "127.0.0.1:8080".into(),
                token: String::new(),
            },
            notifications: Notifications {
                quiet_hours_text: String::new(),
                quiet_hours: None,
                timezone: String::new(),
                progress_min_edit_seconds: 3,
            },
            routes: Vec::new(),
            mqtt: Default::default(),
        }
    }
}

/// Reads typed values out of one TOML table, naming `table.key` in errors.
struct Table<'a> {
    name: &'static str,
    map: Option<&'a Map<String, Value>>,
}

/// What kind of TOML value `v` is, as a person says it.
pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a table",
    }
}

impl<'a> Table<'a> {
    fn key(&self, key: &str) -> String {
        format!("{}.{key}", self.name)
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.and_then(|m| m.get(key))
    }

    fn wrong(&self, key: &str, want: &str, v: &Value) -> Error {
        Error::config(self.key(key), format!("expected {want}, found {}", kind(v)))
    }

    fn string(&self, key: &str, out: &mut String) -> Result<()> {
        match self.get(key) {
            None => Ok(()),
            Some(Value::String(s)) => {
                *out = s.clone();
                Ok(())
            }
            Some(v) => Err(self.wrong(key, "a string", v)),
        }
    }

    fn path(&self, key: &str, out: &mut PathBuf) -> Result<()> {
        let mut s = String::new();
        self.string(key, &mut s)?;
        if self.get(key).is_some() {
            if s.is_empty() {
                return Err(Error::config(self.key(key), "must not be empty"));
            }
            *out = s.into();
        }
        Ok(())
    }

    fn boolean(&self, key: &str, out: &mut bool) -> Result<()> {
        match self.get(key) {
            None => Ok(()),
            Some(Value::Bool(b)) => {
                *out = *b;
                Ok(())
            }
            Some(v) => Err(self.wrong(key, "true or false", v)),
        }
    }

    fn uint(&self, key: &str, out: &mut u64) -> Result<()> {
        match self.get(key) {
            None => Ok(()),
            Some(Value::Number(n)) => match (n.as_u64(), n.as_i64()) {
                (Some(u), _) => {
                    *out = u;
                    Ok(())
                }
                (None, Some(i)) => Err(Error::config(
                    self.key(key),
                    format!("must not be negative, found {i}"),
                )),
                _ => Err(Error::config(
                    self.key(key),
                    format!("expected a whole number, found {n}"),
                )),
            },
            Some(v) => Err(self.wrong(key, "a whole number", v)),
        }
    }

    fn positive(&self, key: &str, out: &mut f64) -> Result<()> {
        match self.get(key) {
            None => Ok(()),
            Some(Value::Number(n)) => {
                let f = n.as_f64().unwrap_or(f64::NAN);
                if f.is_finite() && f > 0.0 {
                    *out = f;
                    Ok(())
                } else {
                    Err(Error::config(
                        self.key(key),
                        format!("must be a number above zero, found {n}"),
                    ))
                }
            }
            Some(v) => Err(self.wrong(key, "a number", v)),
        }
    }

    fn list(&self, key: &str) -> Result<Option<&'a Vec<Value>>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(v) => Err(self.wrong(key, "a list", v)),
        }
    }
}

/// Finds the line (1-based) of `key` in `[table]`, for warnings only; the
/// parsing itself is basic-toml's.
fn line_of(text: &str, table: &str, key: Option<&str>) -> usize {
    let mut current = String::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if let Some(h) = line.strip_prefix('[') {
            let name: String = h
                .trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or("")
                .chars()
                .filter(|c| !c.is_whitespace() && *c != '"')
                .collect();
            current = name;
            if key.is_none() && current == table {
                return i + 1;
            }
            continue;
        }
        if let Some(key) = key {
            let rest = line.trim_start_matches('"');
            if current == table
                && rest.starts_with(key)
                && rest[key.len()..]
                    .trim_start_matches('"')
                    .trim_start()
                    .starts_with('=')
            {
                return i + 1;
            }
        }
    }
    0
}

fn unknown_keys(text: &str, root: &Map<String, Value>, warnings: &mut Vec<String>) {
    let mut warn = |table: &str, key: Option<&str>| {
        let name = match key {
            Some(k) if !table.is_empty() => format!("{table}.{k}"),
            Some(k) => k.to_string(),
            None => table.to_string(),
        };
        let line = line_of(text, table, key);
        let at = if line > 0 {
            format!(" (line {line})")
        } else {
            String::new()
        };
        warnings.push(format!("unknown config key {name}{at} is ignored"));
    };
    for (table, value) in root {
        if table == "route" {
            for r in value.as_array().into_iter().flatten() {
                for key in r.as_object().into_iter().flat_map(|m| m.keys()) {
                    if !ROUTE_KEYS.contains(&key.as_str()) {
                        warn("route", Some(key));
                    }
                }
            }
            continue;
        }
        let Some(known) = KNOWN.iter().find(|(t, _)| t == table).map(|(_, k)| *k) else {
            if value.is_object() {
                warn(table, None);
            } else {
                warn("", Some(table));
            }
            continue;
        };
        let Value::Object(map) = value else { continue };
        for key in map.keys() {
            if !known.contains(&key.as_str()) {
                warn(table, Some(key));
            }
        }
        if let Some(Value::Object(retry)) = map.get("retry").filter(|_| table == "webhook") {
            let known = KNOWN[4].1;
            for key in retry.keys() {
                if !known.contains(&key.as_str()) {
                    warn("webhook.retry", Some(key));
                }
            }
        }
    }
}

fn table<'a>(root: &'a Map<String, Value>, name: &'static str) -> Result<Table<'a>> {
    let map = match root.get(name) {
        None => None,
        Some(Value::Object(m)) => Some(m),
        Some(v) => {
            return Err(Error::config(
                name,
                format!("expected a table [{name}], found {}", kind(v)),
            ))
        }
    };
    Ok(Table { name, map })
}

/// Parses the file's text. Returns the settings (before the environment and
/// before validation) and one warning per unknown key.
pub fn parse(text: &str) -> Result<(Config, Vec<String>)> {
    let root: Map<String, Value> = basic_toml::from_str(text)
        .map_err(|e| Error::config(FILE, format!("not valid TOML: {e}")))?;
    let mut warnings = Vec::new();
    unknown_keys(text, &root, &mut warnings);
    let mut c = Config::default();

    let t = table(&root, "telegram")?;
    t.string("bot_token", &mut c.telegram.bot_token)?;
    if let Some(list) = t.list("allowed_users")? {
        c.telegram.allowed_users = list
            .iter()
            .map(|v| {
                v.as_i64().filter(|id| *id > 0).ok_or_else(|| {
                    Error::config(
                        t.key("allowed_users"),
                        format!("expected numeric Telegram user ids, found {v}"),
                    )
                })
            })
            .collect::<Result<_>>()?;
    }
    if let Some(list) = t.list("chat_ids")? {
        c.telegram.chat_ids = list
            .iter()
            .map(|v| match v {
                Value::Number(n) if n.is_i64() => Ok(n.to_string()),
                Value::String(s) if chat_id_ok(s) => Ok(s.clone()),
                _ => Err(Error::config(
                    t.key("chat_ids"),
                    format!(
                        "expected a numeric chat id, \"@channelname\" or \"CHAT/TOPIC\", found {v}"
                    ),
                )),
            })
            .collect::<Result<_>>()?;
    }
    t.string("api_url", &mut c.telegram.api_url)?;
    t.uint("poll_timeout_seconds", &mut c.telegram.poll_timeout_seconds)?;
    let mut mode = c.telegram.parse_mode.name().to_string();
    t.string("parse_mode", &mut mode)?;
    c.telegram.parse_mode = match mode.as_str() {
        "HTML" => ParseMode::Html,
        "MarkdownV2" => ParseMode::MarkdownV2,
        "plain" | "" => ParseMode::Plain,
        other => {
            return Err(Error::config(
                t.key("parse_mode"),
                format!("expected \"HTML\", \"MarkdownV2\" or \"plain\", found \"{other}\""),
            ))
        }
    };

    let p = table(&root, "paths")?;
    p.path("events_dir", &mut c.paths.events_dir)?;
    p.path("responses_dir", &mut c.paths.responses_dir)?;
    p.path("state_dir", &mut c.paths.state_dir)?;
    if let Some(list) = p.list("attachment_dirs")? {
        c.paths.attachment_dirs = list
            .iter()
            .map(|v| match v.as_str() {
                Some(s) if !s.is_empty() => Ok(PathBuf::from(s)),
                _ => Err(Error::config(
                    p.key("attachment_dirs"),
                    format!("expected directory paths, found {v}"),
                )),
            })
            .collect::<Result<_>>()?;
    }

    let l = table(&root, "limits")?;
    l.positive("per_chat_per_second", &mut c.limits.per_chat_per_second)?;
    l.positive("per_group_per_minute", &mut c.limits.per_group_per_minute)?;
    l.positive("global_per_second", &mut c.limits.global_per_second)?;
    l.uint("max_event_bytes", &mut c.limits.max_event_bytes)?;
    l.uint("max_attachment_bytes", &mut c.limits.max_attachment_bytes)?;

    let w = table(&root, "webhook")?;
    w.boolean("enabled", &mut c.webhook.enabled)?;
    w.string("secret", &mut c.webhook.secret)?;
    if let Some(list) = w.list("endpoints")? {
        c.webhook.endpoints = list
            .iter()
            .map(|v| {
                v.as_str().map(str::to_string).ok_or_else(|| {
                    Error::config(w.key("endpoints"), format!("expected URLs, found {v}"))
                })
            })
            .collect::<Result<_>>()?;
    }
    if let Some(v) = w.get("secrets") {
        c.webhook.secrets = endpoint::strings("webhook.secrets", v)?;
        if !c.webhook.secret.is_empty() && !c.webhook.secrets.is_empty() {
            warnings.push("webhook.secret is ignored: webhook.secrets is set".into());
        }
    }
    if let Some(v) = w.get("format") {
        let Value::String(f) = v else {
            return Err(w.wrong("format", "a string", v));
        };
        c.webhook.format = Format::parse("webhook.format", f)?;
    }
    if let Some(v) = w.get("endpoint") {
        c.webhook.endpoint = endpoint::parse(v, &mut warnings)?;
    }
    w.uint("timeout_seconds", &mut c.webhook.timeout_seconds)?;
    w.uint("max_in_flight", &mut c.webhook.max_in_flight)?;
    // The spec's older name; [webhook.retry].max_attempts wins when both are set.
    w.uint("retry_attempts", &mut c.webhook.retry.max_attempts)?;
    if let Some(v) = w.get("retry") {
        let Value::Object(map) = v else {
            return Err(w.wrong("retry", "a table [webhook.retry]", v));
        };
        let r = Table {
            name: "webhook.retry",
            map: Some(map),
        };
        r.uint("max_attempts", &mut c.webhook.retry.max_attempts)?;
        r.uint("initial_delay_ms", &mut c.webhook.retry.initial_delay_ms)?;
        r.uint("max_delay_ms", &mut c.webhook.retry.max_delay_ms)?;
        r.positive(
            "backoff_multiplier",
            &mut c.webhook.retry.backoff_multiplier,
        )?;
    }

    let h = table(&root, "health")?;
    h.uint("interval_seconds", &mut c.health.interval_seconds)?;
    h.uint("memory_threshold_mb", &mut c.health.memory_threshold_mb)?;
    h.string("listen", &mut c.health.listen)?;
    h.string("token", &mut c.health.token)?;

    let n = table(&root, "notifications")?;
    n.string("quiet_hours", &mut c.notifications.quiet_hours_text)?;
    let q = c.notifications.quiet_hours_text.trim();
    if !q.is_empty() {
        c.notifications.quiet_hours = Some(crate::tz::Window::parse(q).ok_or_else(|| {
            Error::config(
                n.key("quiet_hours"),
                format!("expected \"HH:MM-HH:MM\" such as \"22:00-07:00\", found \"{q}\""),
            )
        })?);
    }
    n.string("timezone", &mut c.notifications.timezone)?;
    n.uint(
        "progress_min_edit_seconds",
        &mut c.notifications.progress_min_edit_seconds,
    )?;
    c.routes = routes(&root)?;

    c.mqtt = crate::fleet::settings::parse(&root)?;

    Ok((c, warnings))
}

fn routes(root: &Map<String, Value>) -> Result<Vec<Route>> {
    let Some(v) = root.get("route") else {
        return Ok(Vec::new());
    };
    let Value::Array(list) = v else {
        return Err(Error::config(
            "route",
            format!("expected [[route]] tables, found {}", kind(v)),
        ));
    };
    let mut out = Vec::new();
    for (i, r) in list.iter().enumerate() {
        let key = |k: &str| format!("route[{}].{k}", i + 1);
        let Value::Object(map) = r else {
            return Err(Error::config(
                format!("route[{}]", i + 1),
                format!("expected a table, found {}", kind(r)),
            ));
        };
        let strings = |k: &str| -> Result<Vec<String>> {
            match map.get(k) {
                None => Ok(Vec::new()),
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|v| {
                        v.as_str().map(str::to_string).ok_or_else(|| {
                            Error::config(key(k), format!("expected strings, found {v}"))
                        })
                    })
                    .collect(),
                Some(v) => Err(Error::config(
                    key(k),
                    format!("expected a list, found {}", kind(v)),
                )),
            }
        };
        let chats: Vec<String> = match map.get("chats") {
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| match v {
                    Value::Number(n) if n.is_i64() => Ok(n.to_string()),
                    Value::String(s) if chat_id_ok(s) => Ok(s.clone()),
                    _ => Err(Error::config(
                        key("chats"),
                        format!("expected a numeric chat id, \"@channelname\" or \"CHAT/TOPIC\", found {v}"),
                    )),
                })
                .collect::<Result<_>>()?,
            _ => Vec::new(),
        };
        if chats.is_empty() {
            return Err(Error::config(
                key("chats"),
                "a route needs at least one chat",
            ));
        }
        let devices = strings("devices")?;
        if let Some(bad) = devices.iter().find(|d| !crate::fleet::settings::name_ok(d)) {
            return Err(Error::config(
                key("devices"),
                format!("\"{bad}\" is not a device name (letters, digits, - _ .)"),
            ));
        }
        out.push(Route {
            types: strings("types")?,
            sources: strings("sources")?,
            devices,
            chats,
        });
    }
    Ok(out)
}

fn chat_id_ok(s: &str) -> bool {
    // A forum topic: "CHAT/TOPIC", the topic a positive message_thread_id.
    if let Some((chat, topic)) = s.split_once('/') {
        return chat.parse::<i64>().is_ok() && topic.parse::<i64>().is_ok_and(|t| t > 0);
    }
    s.parse::<i64>().is_ok()
        || (s.len() > 1
            && s.starts_with('@')
            && s[1..]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_'))
}

/// Applies the environment variables of CONTRACT section 2; they win over
/// the file. `get` is the environment (a closure, so tests stay pure).
pub fn apply_env(c: &mut Config, get: impl Fn(&str) -> Option<String>) -> Result<()> {
    if let Some(v) = get("TELEGRAM_BOT_TOKEN") {
        c.telegram.bot_token = v;
    }
    if let Some(v) = get("TELEGRAM_ALLOWED_USERS") {
        c.telegram.allowed_users = v
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<i64>().ok().filter(|id| *id > 0).ok_or_else(|| {
                    Error::config(
                        "TELEGRAM_ALLOWED_USERS",
                        format!("expected comma-separated numeric user ids, found \"{s}\""),
                    )
                })
            })
            .collect::<Result<_>>()?;
    }
    if let Some(v) = get("TELEGRAM_API_URL") {
        c.telegram.api_url = v;
    }
    if let Some(v) = get("CC_TELEGRAM_EVENTS_DIR") {
        c.paths.events_dir = v.into();
    }
    if let Some(v) = get("CC_TELEGRAM_RESPONSES_DIR") {
        c.paths.responses_dir = v.into();
    }
    if let Some(v) = get("CC_TELEGRAM_STATE_DIR") {
        c.paths.state_dir = v.into();
    }
    if let Some(v) = get("CCTELEGRAM_WEBHOOK_SECRET") {
        c.webhook.secret = v;
    }
    crate::fleet::settings::apply_env(&mut c.mqtt, &get);
    Ok(())
}

/// `~/x` against `home`.
fn expand(p: &Path, home: Option<&str>) -> PathBuf {
    match (p.strip_prefix("~"), home) {
        (Ok(rest), Some(home)) => Path::new(home).join(rest),
        _ => p.to_path_buf(),
    }
}

/// Whether `url`'s host is loopback (`localhost`, 127.0.0.0/8, `::1`).
pub fn loopback_host(url: &str) -> bool {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or("");
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = host.rsplit('@').next().unwrap_or(host);
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn check_url(key: &str, url: &str) -> Result<()> {
    let ok_scheme = url.starts_with("https://") || url.starts_with("http://");
    let host_part = url.split_once("://").map(|(_, r)| r).unwrap_or("");
    if !ok_scheme || host_part.is_empty() || host_part.starts_with('/') || url.contains(' ') {
        return Err(Error::config(
            key,
            format!("expected an http:// or https:// URL, found \"{url}\""),
        ));
    }
    Ok(())
}

/// Rejects impossible settings, naming the key. `run_daemon` adds the checks
/// that only matter when the daemon is to talk to Telegram.
pub fn validate(c: &Config, run_daemon: bool) -> Result<()> {
    let t = &c.telegram;
    check_url("telegram.api_url", &t.api_url)?;
    if t.api_url.starts_with("http://") && !loopback_host(&t.api_url) {
        return Err(Error::config(
            "telegram.api_url",
            "http:// is only allowed for a loopback address; use https://",
        ));
    }
    if !t.bot_token.is_empty() && !token_shape_ok(&t.bot_token) {
        return Err(Error::config(
            "telegram.bot_token",
            "does not look like a bot token (digits, a colon, then letters, digits, - or _)",
        ));
    }
    // A zone that does not exist is a typo: say so now, not at 3 a.m.
    if !c.notifications.timezone.is_empty() {
        crate::tz::load(&c.notifications.timezone, None)?;
    }
    crate::fleet::settings::validate(&c.mqtt)?;
    // A fleet device forwards its events to the hub, which owns the bot.
    if run_daemon && t.bot_token.is_empty() && !c.mqtt.is_device() {
        return Err(Error::config(
            "telegram.bot_token",
            "is not set; set TELEGRAM_BOT_TOKEN or [telegram] bot_token",
        ));
    }
    if !t.bot_token.is_empty() && t.allowed_users.is_empty() {
        return Err(Error::config(
            "telegram.allowed_users",
            "is empty while a bot token is set; list the Telegram user ids allowed to answer",
        ));
    }
    // Every number has a range: a value outside it is a typo or a
    // misunderstanding, and one that slipped through would panic or arm a
    // timer for decades later (CONTRACT section 2: exit 78 naming the key).
    let l = &c.limits;
    let w = &c.webhook;
    let h = &c.health;
    let whole: [(&str, u64, u64, u64); 11] = [
        (
            "notifications.progress_min_edit_seconds",
            c.notifications.progress_min_edit_seconds,
            0,
            3600,
        ),
        (
            "telegram.poll_timeout_seconds",
            t.poll_timeout_seconds,
            1,
            50,
        ),
        ("limits.max_event_bytes", l.max_event_bytes, 1, 64 << 20),
        (
            "limits.max_attachment_bytes",
            l.max_attachment_bytes,
            1,
            2 << 30,
        ),
        ("webhook.timeout_seconds", w.timeout_seconds, 1, 600),
        ("webhook.max_in_flight", w.max_in_flight, 1, 256),
        ("webhook.retry.max_attempts", w.retry.max_attempts, 0, 100),
        (
            "webhook.retry.initial_delay_ms",
            w.retry.initial_delay_ms,
            0,
            DAY_MS,
        ),
        (
            "webhook.retry.max_delay_ms",
            w.retry.max_delay_ms,
            0,
            DAY_MS,
        ),
        ("health.interval_seconds", h.interval_seconds, 1, 86_400),
        (
            "health.memory_threshold_mb",
            h.memory_threshold_mb,
            1,
            1 << 20,
        ),
    ];
    for (key, v, min, max) in whole {
        if v < min || v > max {
            return Err(Error::config(
                key,
                format!("must be {min} to {max}, found {v}"),
            ));
        }
    }
    let rates = [
        // Far above Telegram's limits: tests and benchmarks lift them.
        ("limits.per_chat_per_second", l.per_chat_per_second, 1e6),
        ("limits.per_group_per_minute", l.per_group_per_minute, 6e7),
        ("limits.global_per_second", l.global_per_second, 1e6),
    ];
    for (key, v, max) in rates {
        // One message a day at the slowest.
        let min = if key.ends_with("minute") {
            1.0 / 1440.0
        } else {
            1.0 / 86_400.0
        };
        if !(v >= min && v <= max) {
            return Err(Error::config(
                key,
                format!("must be between {min:.6} and {max}, found {v}"),
            ));
        }
    }
    for url in &w.endpoints {
        check_url("webhook.endpoints", url)?;
    }
    endpoint::validate(w, check_url)?;
    if !(1.0..=100.0).contains(&w.retry.backoff_multiplier) {
        return Err(Error::config(
            "webhook.retry.backoff_multiplier",
            format!("must be 1.0 to 100, found {}", w.retry.backoff_multiplier),
        ));
    }
    if w.retry.max_delay_ms < w.retry.initial_delay_ms {
        return Err(Error::config(
            "webhook.retry.max_delay_ms",
            "must not be below webhook.retry.initial_delay_ms",
        ));
    }
    if !c.health.listen.is_empty() && c.health.listen.parse::<SocketAddr>().is_err() {
        return Err(Error::config(
            "health.listen",
            format!(
                "expected an address like 127.0.0.1:8080, or \"\" to disable, found \"{}\"",
                c.health.listen
            ),
        ));
    }
    if let Ok(addr) = c.health.listen.parse::<SocketAddr>() {
        if !addr.ip().is_loopback() && c.health.token.is_empty() {
            return Err(Error::config(
                "health.token",
                format!(
                    "must be set when health.listen ({addr}) is not a loopback address: \
                     the page, /health and /metrics then need `Authorization: Bearer <token>`"
                ),
            ));
        }
    }
    Ok(())
}

fn token_shape_ok(token: &str) -> bool {
    match token.split_once(':') {
        Some((id, secret)) => {
            !id.is_empty()
                && id.bytes().all(|b| b.is_ascii_digit())
                && !secret.is_empty()
                && secret
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        }
        None => false,
    }
}

/// Where the config file is: `--config`, else `$CCTELEGRAM_CONFIG`, else
/// `~/.cc_telegram/config.toml` if it exists, else none (defaults).
pub fn locate(arg: Option<&Path>, get: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    if let Some(p) = arg {
        return Some(p.to_path_buf());
    }
    if let Some(p) = get("CCTELEGRAM_CONFIG").filter(|p| !p.is_empty()) {
        return Some(p.into());
    }
    let home = get("HOME")?;
    let p = Path::new(&home).join(".cc_telegram/config.toml");
    p.exists().then_some(p)
}

/// Loads the effective configuration: file (if any), environment, `~`
/// expansion, validation. Returns it with the warnings to log.
pub fn load(
    path: Option<&Path>,
    get: &dyn Fn(&str) -> Option<String>,
    run_daemon: bool,
) -> Result<(Config, Vec<String>)> {
    let (mut c, warnings) = match path {
        Some(p) => {
            let bytes = std::fs::read(p)
                .map_err(|e| Error::config(p.display().to_string(), format!("cannot read: {e}")))?;
            let text = String::from_utf8(bytes).map_err(|e| {
                Error::config(
                    p.display().to_string(),
                    format!("is not UTF-8 text (byte {})", e.utf8_error().valid_up_to()),
                )
            })?;
            parse(&text).map_err(|e| match e {
                Error::Config { key, problem } if key == FILE => {
                    Error::config(p.display().to_string(), problem)
                }
                e => e,
            })?
        }
        None => (Config::default(), Vec::new()),
    };
    apply_env(&mut c, get)?;
    let home = get("HOME");
    for p in [
        &mut c.paths.events_dir,
        &mut c.paths.responses_dir,
        &mut c.paths.state_dir,
    ] {
        *p = expand(p, home.as_deref());
    }
    for d in &mut c.paths.attachment_dirs {
        *d = expand(d, home.as_deref());
        if !d.is_absolute() {
            return Err(Error::config(
                "paths.attachment_dirs",
                format!("{} is not an absolute path", d.display()),
            ));
        }
    }
    validate(&c, run_daemon)?;
    let mut warnings = warnings;
    if c.webhook.enabled {
        warnings.extend(endpoint::https_warnings(&c.webhook, loopback_host));
    }
    if !c.webhook.secrets.is_empty() && get("CCTELEGRAM_WEBHOOK_SECRET").is_some() {
        warnings.push(
            "CCTELEGRAM_WEBHOOK_SECRET is ignored: [webhook] secrets is set (list the secrets there)"
                .into(),
        );
    }
    // At the daemon's start-up (and reload), not on every command.
    if let Some(w) = path.filter(|_| run_daemon).and_then(open_to_others) {
        warnings.push(w);
    }
    Ok((c, warnings))
}

/// A warning when the config file (which holds the bot token) can be read
/// by its group or by everyone.
fn open_to_others(path: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o044 != 0).then(|| {
        format!(
            "{} can be read by {} (mode {:o}); it holds secrets: chmod 600 it",
            path.display(),
            if mode & 0o004 != 0 {
                "everyone"
            } else {
                "its group"
            },
            mode & 0o777
        )
    })
}

/// `s` as a TOML basic string. Rust's `{:?}` would write a control
/// character as `\u{1b}`, which TOML refuses.
fn toml_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl Config {
    /// Where notifications go: `chat_ids`, else each allowed user's private chat.
    pub fn target_chats(&self) -> Vec<String> {
        if self.mqtt.is_device() {
            // One queue entry per event: the hub fans out to the chats.
            return vec![crate::fleet::DEVICE_QUEUE.into()];
        }
        if self.telegram.chat_ids.is_empty() {
            self.telegram
                .allowed_users
                .iter()
                .map(|u| u.to_string())
                .collect()
        } else {
            self.telegram.chat_ids.clone()
        }
    }

    /// Where an event of this type from this source goes: the first
    /// matching route's chats, else [`Config::target_chats`].
    pub fn chats_for(&self, kind: &str, source: &str) -> Vec<String> {
        match self.routes.iter().find(|r| r.matches(kind, source)) {
            Some(r) => r.chats.clone(),
            None => self.target_chats(),
        }
    }

    /// The effective settings as TOML, secrets masked (for `check-config`).
    pub fn masked(&self) -> String {
        fn secret(s: &str) -> &'static str {
            if s.is_empty() {
                "\"\"   # not set"
            } else {
                "\"********\"   # set, hidden"
            }
        }
        fn list<T: std::fmt::Display>(v: &[T], quote: bool) -> String {
            let items: Vec<String> = v
                .iter()
                .map(|x| {
                    if quote {
                        toml_str(&x.to_string())
                    } else {
                        x.to_string()
                    }
                })
                .collect();
            format!("[{}]", items.join(", "))
        }
        let (t, p, l, w, h) = (
            &self.telegram,
            &self.paths,
            &self.limits,
            &self.webhook,
            &self.health,
        );
        let mut s = String::new();
        let _ = writeln!(s, "[telegram]");
        let _ = writeln!(s, "bot_token = {}", secret(&t.bot_token));
        let _ = writeln!(s, "allowed_users = {}", list(&t.allowed_users, false));
        let _ = writeln!(s, "chat_ids = {}", list(&t.chat_ids, true));
        let _ = writeln!(s, "api_url = {}", toml_str(&t.api_url));
        let _ = writeln!(s, "poll_timeout_seconds = {}", t.poll_timeout_seconds);
        let _ = writeln!(s, "parse_mode = {}", toml_str(t.parse_mode.name()));
        let _ = writeln!(s, "\n[paths]");
        let _ = writeln!(
            s,
            "events_dir = {}",
            toml_str(&p.events_dir.display().to_string())
        );
        let _ = writeln!(
            s,
            "responses_dir = {}",
            toml_str(&p.responses_dir.display().to_string())
        );
        let _ = writeln!(
            s,
            "state_dir = {}",
            toml_str(&p.state_dir.display().to_string())
        );
        let dirs: Vec<String> = p
            .attachment_dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        let dirs: Vec<&str> = dirs.iter().map(String::as_str).collect();
        let _ = writeln!(s, "attachment_dirs = {}", list(&dirs, true));
        let _ = writeln!(s, "\n[limits]");
        let _ = writeln!(s, "per_chat_per_second = {:?}", l.per_chat_per_second);
        let _ = writeln!(s, "per_group_per_minute = {:?}", l.per_group_per_minute);
        let _ = writeln!(s, "global_per_second = {:?}", l.global_per_second);
        let _ = writeln!(s, "max_event_bytes = {}", l.max_event_bytes);
        let _ = writeln!(s, "max_attachment_bytes = {}", l.max_attachment_bytes);
        let _ = writeln!(s, "\n[webhook]");
        let _ = writeln!(s, "enabled = {}", w.enabled);
        if w.secrets.is_empty() {
            let _ = writeln!(s, "secret = {}", secret(&w.secret));
        }
        let hidden: Vec<&str> = w.secrets.iter().map(|_| "********").collect();
        let _ = writeln!(s, "secrets = {}", list(&hidden, true));
        let _ = writeln!(s, "format = {}", toml_str(w.format.name()));
        let shown: Vec<String> = w
            .endpoints
            .iter()
            .map(|u| endpoint::redact_url(u))
            .collect();
        let _ = writeln!(s, "endpoints = {}", list(&shown, true));
        let _ = writeln!(s, "timeout_seconds = {}", w.timeout_seconds);
        let _ = writeln!(s, "max_in_flight = {}", w.max_in_flight);
        let _ = writeln!(s, "\n[webhook.retry]");
        let _ = writeln!(s, "max_attempts = {}", w.retry.max_attempts);
        let _ = writeln!(s, "initial_delay_ms = {}", w.retry.initial_delay_ms);
        let _ = writeln!(s, "max_delay_ms = {}", w.retry.max_delay_ms);
        let _ = writeln!(s, "backoff_multiplier = {:?}", w.retry.backoff_multiplier);
        for e in &w.endpoint {
            let _ = writeln!(s, "\n[[webhook.endpoint]]");
            let _ = writeln!(s, "url = {}", toml_str(&endpoint::redact_url(&e.url)));
            if let Some(t) = &e.types {
                let _ = writeln!(s, "types = {}", list(t, true));
            }
            if let Some(secrets) = &e.secrets {
                let hidden: Vec<&str> = secrets.iter().map(|_| "********").collect();
                let _ = writeln!(s, "secrets = {}", list(&hidden, true));
            }
            if let Some(f) = e.format {
                let _ = writeln!(s, "format = {}", toml_str(f.name()));
            }
            if !e.headers.is_empty() {
                let h: Vec<String> = e
                    .headers
                    .iter()
                    .map(|(k, _)| format!("{} = \"********\"", toml_str(k)))
                    .collect();
                let _ = writeln!(s, "headers = {{ {} }}", h.join(", "));
            }
        }
        let _ = writeln!(s, "\n[health]");
        let _ = writeln!(s, "interval_seconds = {}", h.interval_seconds);
        let _ = writeln!(s, "memory_threshold_mb = {}", h.memory_threshold_mb);
        let _ = writeln!(s, "listen = {}", toml_str(&h.listen));
        let _ = writeln!(s, "token = {}", secret(&h.token));
        let n = &self.notifications;
        let _ = writeln!(s, "\n[notifications]");
        let _ = writeln!(s, "quiet_hours = {}", toml_str(&n.quiet_hours_text));
        let _ = writeln!(s, "timezone = {}", toml_str(&n.timezone));
        let _ = writeln!(
            s,
            "progress_min_edit_seconds = {}",
            n.progress_min_edit_seconds
        );
        for r in &self.routes {
            let _ = writeln!(s, "\n[[route]]");
            if !r.types.is_empty() {
                let _ = writeln!(s, "types = {}", list(&r.types, true));
            }
            if !r.sources.is_empty() {
                let _ = writeln!(s, "sources = {}", list(&r.sources, true));
            }
            if !r.devices.is_empty() {
                let _ = writeln!(s, "devices = {}", list(&r.devices, true));
            }
            let _ = writeln!(s, "chats = {}", list(&r.chats, true));
        }
        crate::fleet::settings::masked(&self.mqtt, &mut s);
        s
    }

    /// Where each kind of event goes, for `check-config`.
    pub fn where_events_go(&self) -> String {
        let mut s = String::new();
        for (i, r) in self.routes.iter().enumerate() {
            let types = if r.types.is_empty() {
                "any type".to_string()
            } else {
                r.types.join(", ")
            };
            let mut sources = if r.sources.is_empty() {
                String::new()
            } else {
                format!(" from {}", r.sources.join(", "))
            };
            if !r.devices.is_empty() {
                sources.push_str(&format!(" on device {}", r.devices.join(", ")));
            }
            let _ = writeln!(
                s,
                "#   route {}: {types}{sources} -> {}",
                i + 1,
                r.chats.join(", ")
            );
        }
        let chats = self.target_chats();
        let to = if chats.is_empty() {
            "nowhere (no chat_ids and no allowed_users)".to_string()
        } else {
            chats.join(", ")
        };
        let rest = if self.routes.is_empty() {
            "every event"
        } else {
            "everything else"
        };
        let _ = writeln!(s, "#   {rest} -> {to}");
        if !self.routes.is_empty() {
            // Each known type, grouped by where it goes (from a source no
            // route names).
            let _ = writeln!(s, "# by event type:");
            let mut groups: Vec<(String, Vec<&str>)> = Vec::new();
            for t in crate::event::TYPES.iter().map(|t| t.name) {
                let dest = match self
                    .routes
                    .iter()
                    .find(|r| r.sources.is_empty() && r.devices.is_empty() && r.matches(t, ""))
                {
                    Some(r) => r.chats.join(", "),
                    None => to.clone(),
                };
                match groups.iter_mut().find(|(d, _)| *d == dest) {
                    Some((_, ts)) => ts.push(t),
                    None => groups.push((dest, vec![t])),
                }
            }
            for (dest, ts) in groups {
                let _ = writeln!(s, "#   {dest}: {}", ts.join(" "));
            }
        }
        s
    }

    /// Where `ev` goes: the first route matching its type, source and
    /// device (fleet mode), else [`Config::target_chats`]. A fleet device
    /// hands everything to the hub, which routes.
    pub fn chats_for_event(&self, ev: &crate::event::Event) -> Vec<String> {
        if self.mqtt.is_device() {
            return self.target_chats();
        }
        let device = crate::fleet::device_of(ev);
        match self.routes.iter().find(|r| {
            r.matches(&ev.kind, &ev.source)
                && (r.devices.is_empty()
                    || device.is_some_and(|d| r.devices.iter().any(|x| x == d)))
        }) {
            Some(r) => r.chats.clone(),
            None => self.target_chats(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    const FULL: &str = r#"
[telegram]
bot_token = "123:abc"
allowed_users = [123456789]
chat_ids = []
api_url = "https://api.telegram.org"
poll_timeout_seconds = 30
parse_mode = "HTML"

[paths]
events_dir = "~/.cc_telegram/events"
responses_dir = "~/.cc_telegram/responses"
state_dir = "~/.cc_telegram/state"

[limits]
per_chat_per_second = 1
per_group_per_minute = 20
global_per_second = 30
max_event_bytes = 1048576

[webhook]
enabled = true
secret = "your_webhook_secret_key"
endpoints = ["https://your-app.com/webhook/events", "https://your-app.com/webhook/responses", "https://your-app.com/webhook/health"]
timeout_seconds = 30
retry_attempts = 3
max_in_flight = 4

[webhook.retry]
max_attempts = 3
initial_delay_ms = 1000
max_delay_ms = 30000
backoff_multiplier = 2.0

[health]
interval_seconds = 30
memory_threshold_mb = 100
listen = "127.0.0.1:8080"
"#;

    #[test]
    fn the_contract_file_loads_without_warnings() {
        let (c, w) = parse(FULL).unwrap();
        assert!(w.is_empty(), "{w:?}");
        validate(&c, true).unwrap();
        assert_eq!(c.telegram.allowed_users, vec![123456789]);
        assert_eq!(c.webhook.endpoints.len(), 3);
        assert_eq!(c.webhook.retry.backoff_multiplier, 2.0);
        assert_eq!(c.target_chats(), vec!["123456789".to_string()]);
    }

    #[test]
    fn unknown_keys_warn_with_line() {
        let (_, w) = parse("[telegram]\nbot_tokn = \"x\"\n\n[extra]\na = 1\n").unwrap();
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w
            .iter()
            .any(|m| m.contains("telegram.bot_tokn") && m.contains("line 2")));
        assert!(w
            .iter()
            .any(|m| m.contains("extra") && m.contains("line 4")));
    }

    #[test]
    fn wrong_types_name_the_key() {
        for (text, key) in [
            (
                "[limits]\nglobal_per_second = \"fast\"",
                "limits.global_per_second",
            ),
            (
                "[webhook.retry]\ninitial_delay_ms = -5",
                "webhook.retry.initial_delay_ms",
            ),
            (
                "[telegram]\nallowed_users = [\"bob\"]",
                "telegram.allowed_users",
            ),
            (
                "[telegram]\nparse_mode = \"Markdown\"",
                "telegram.parse_mode",
            ),
            (
                "[limits]\nper_chat_per_second = 0",
                "limits.per_chat_per_second",
            ),
            ("telegram = 5", "telegram"),
        ] {
            match parse(text) {
                Err(Error::Config { key: k, .. }) => assert_eq!(k, key, "{text}"),
                other => panic!("{text}: expected a config error, got {other:?}"),
            }
        }
    }

    #[test]
    fn impossible_values_name_the_key() {
        let cases: &[(&str, &str)] = &[
            (
                "[telegram]\napi_url = \"http://example.com\"",
                "telegram.api_url",
            ),
            ("[telegram]\nbot_token = \"1:a\"", "telegram.allowed_users"),
            (
                "[telegram]\nbot_token = \"nope\"\nallowed_users=[1]",
                "telegram.bot_token",
            ),
            (
                "[webhook]\nendpoints = [\"x\"]\nsecret = \"s\"",
                "webhook.endpoints",
            ),
            (
                "[webhook]\nendpoints = [\"http://127.0.0.1:1/\"]",
                "webhook.secret",
            ),
            ("[health]\nlisten = \"nowhere\"", "health.listen"),
            ("[health]\nlisten = \"0.0.0.0:8080\"", "health.token"),
            ("[health]\nlisten = \"[::]:8080\"", "health.token"),
        ];
        for (text, key) in cases {
            let (c, _) = parse(text).unwrap();
            match validate(&c, false) {
                Err(Error::Config { key: k, .. }) => assert_eq!(&k, key, "{text}"),
                other => panic!("{text}: expected a config error, got {other:?}"),
            }
        }
    }

    #[test]
    fn environment_wins_and_is_checked() {
        let (mut c, _) = parse(FULL).unwrap();
        apply_env(
            &mut c,
            env(&[
                ("TELEGRAM_BOT_TOKEN", "9:zz"),
                ("TELEGRAM_ALLOWED_USERS", "1, 2"),
                ("CC_TELEGRAM_EVENTS_DIR", "/tmp/ev"),
            ]),
        )
        .unwrap();
        assert_eq!(c.telegram.bot_token, "9:zz");
        assert_eq!(c.telegram.allowed_users, vec![1, 2]);
        assert_eq!(c.paths.events_dir, PathBuf::from("/tmp/ev"));
        let err = apply_env(&mut c, env(&[("TELEGRAM_ALLOWED_USERS", "1,x")])).unwrap_err();
        assert!(err.to_string().contains("TELEGRAM_ALLOWED_USERS"));
    }

    #[test]
    fn retry_attempts_is_the_older_name() {
        let (c, _) = parse("[webhook]\nretry_attempts = 5").unwrap();
        assert_eq!(c.webhook.retry.max_attempts, 5);
        let (c, _) =
            parse("[webhook]\nretry_attempts = 5\n[webhook.retry]\nmax_attempts = 2").unwrap();
        assert_eq!(c.webhook.retry.max_attempts, 2);
    }

    #[test]
    fn masked_output_hides_secrets() {
        let (c, _) = parse(FULL).unwrap();
        let out = c.masked();
        assert!(out.contains("token = \"\"   # not set"), "{out}");
        let (c, _) = parse(&FULL.replace(
            "listen = \"127.0.0.1:8080\"",
            "listen = \"0.0.0.0:8080\"\ntoken = \"page-token-value\"",
        ))
        .unwrap();
        assert_eq!(c.health.token, "page-token-value");
        let out = c.masked();
        assert!(!out.contains("page-token-value"), "{out}");
        assert!(!out.contains("123:abc"));
        assert!(!out.contains("your_webhook_secret_key"));
        assert!(out.contains("allowed_users = [123456789]"));
        // What check-config prints is itself a loadable config.
        let (_, w) = parse(&out).unwrap();
        assert!(w.is_empty());
    }

    /// Found by the `config` fuzz target: check-config wrote a control
    /// character in a string as Rust's `\u{1b}`, which TOML refuses, and a
    /// large rate such as 1e300 as 301 digits, an integer TOML cannot hold;
    /// either way its output no longer loaded.
    #[test]
    fn fuzz_masked_output_reads_back_with_control_characters_and_huge_rates() {
        let text = "[telegram]\napi_url = \"http://127.0.0.1/a\\u001b\\u007f\\\"b\\\\\"\n\
                    [paths]\nstate_dir = \"/x\\ty\\nz\\u0085\"\n\
                    [limits]\nper_chat_per_second = 1e300\nglobal_per_second = 30.0\n";
        let (c, _) = parse(text).unwrap();
        let out = c.masked();
        assert!(out.contains("per_chat_per_second = 1e300"), "{out}");
        let (back, _) = parse(&out).unwrap_or_else(|e| panic!("{e}\n{out}"));
        assert_eq!(back.telegram.api_url, "http://127.0.0.1/a\u{1b}\u{7f}\"b\\");
        assert_eq!(back.paths.state_dir, c.paths.state_dir);
        assert_eq!(back.limits.per_chat_per_second, 1e300);
        assert_eq!(back.masked(), out);
    }

    #[test]
    fn rotation_formats_and_endpoint_tables_load_and_mask() {
        let text = r#"
[webhook]
secrets = ["new-secret", "old-secret"]
format = "standard"
endpoints = ["https://a.example/webhook/events"]

[[webhook.endpoint]]
url = "https://bob:pw@b.example/hooks?token=t0ken"
types = ["user_response"]
secrets = ["whsec_c2VjcmV0"]
format = "cctelegram"
headers = { Authorization = "Bearer very-secret" }
"#;
        let (c, w) = parse(text).unwrap();
        assert!(w.is_empty(), "{w:?}");
        validate(&c, false).unwrap();
        assert_eq!(c.webhook.secrets, ["new-secret", "old-secret"]);
        assert_eq!(c.webhook.format, Format::Standard);
        assert_eq!(c.webhook.endpoint.len(), 1);
        assert_eq!(
            c.webhook.endpoint[0].headers,
            [(
                "Authorization".to_string(),
                "Bearer very-secret".to_string()
            )]
        );
        let out = c.masked();
        for secret in [
            "new-secret",
            "old-secret",
            "c2VjcmV0",
            "very-secret",
            "pw@",
            "t0ken",
        ] {
            assert!(!out.contains(secret), "{secret} in\n{out}");
        }
        let (back, w) = parse(&out).unwrap_or_else(|e| panic!("{e}\n{out}"));
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(back.masked(), out);
        assert_eq!(back.webhook.endpoint[0].types, c.webhook.endpoint[0].types);
        match parse("[webhook]\nformat = \"svix\"") {
            Err(Error::Config { key, .. }) => assert_eq!(key, "webhook.format"),
            other => panic!("{other:?}"),
        }
        let (_, w) = parse("[webhook]\nsecret = \"a\"\nsecrets = [\"b\"]").unwrap();
        assert!(w[0].contains("webhook.secret is ignored"), "{w:?}");
    }

    #[test]
    fn routes_name_fleet_devices() {
        let (c, w) = parse(
            r#"
[telegram]
chat_ids = [111]
[[route]]
devices = ["pi2"]
types = ["build_*"]
chats = ["-100123/17"]
[[route]]
devices = ["pi2"]
chats = [222]
"#,
        )
        .unwrap();
        assert!(w.is_empty(), "{w:?}");
        let ev = |kind: &str, device: Option<&str>| {
            let mut e = crate::event::parse(
                format!(r#"{{"type":"{kind}","title":"t"}}"#).as_bytes(),
                "now",
                || "x".into(),
            )
            .unwrap();
            if let Some(d) = device {
                e.data.insert("device".into(), serde_json::json!(d));
            }
            e
        };
        assert_eq!(
            c.chats_for_event(&ev("build_failed", Some("pi2"))),
            ["-100123/17"]
        );
        assert_eq!(
            c.chats_for_event(&ev("info_notification", Some("pi2"))),
            ["222"]
        );
        assert_eq!(c.chats_for_event(&ev("build_failed", Some("pi1"))), ["111"]);
        assert_eq!(c.chats_for_event(&ev("build_failed", None)), ["111"]);
        let bad = parse("[[route]]\ndevices = [\"a/b\"]\nchats = [1]\n").unwrap_err();
        assert!(bad.to_string().contains("route[1].devices"), "{bad}");
    }

    #[test]
    fn routes_topics_and_notifications() {
        let (c, w) = parse(
            r#"
[telegram]
chat_ids = [111, "-100123/42"]
[notifications]
quiet_hours = "22:00-07:00"
progress_min_edit_seconds = 5
[[route]]
types = ["build_*"]
chats = ["-100123/17"]
[[route]]
sources = ["ci"]
chats = [222]
"#,
        )
        .unwrap();
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(c.telegram.chat_ids, ["111", "-100123/42"]);
        assert_eq!(c.notifications.progress_min_edit_seconds, 5);
        assert!(c.notifications.quiet_hours.is_some());
        assert_eq!(c.chats_for("build_failed", "x"), ["-100123/17"]);
        assert_eq!(c.chats_for("task_completion", "ci"), ["222"]);
        assert_eq!(c.chats_for("task_completion", "cli"), ["111", "-100123/42"]);
        let text = c.where_events_go();
        assert!(
            text.contains("-100123/17: build_started build_completed build_failed"),
            "{text}"
        );
        for (bad, key) in [
            (
                "[notifications]\nquiet_hours = \"22-07\"",
                "notifications.quiet_hours",
            ),
            ("[[route]]\ntypes = [\"x\"]", "route[1].chats"),
            ("[telegram]\nchat_ids = [\"1/0\"]", "telegram.chat_ids"),
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains(key), "{bad}: {e}");
        }
        let (c, _) = parse("[notifications]\ntimezone = \"Mars/Olympus\"").unwrap();
        let e = validate(&c, false).unwrap_err().to_string();
        assert!(e.contains("notifications.timezone"), "{e}");
        assert!(glob("build_*", "build_failed") && glob("?est_*", "test_passed"));
        assert!(!glob("build_*", "task_build") && glob("*", ""));
    }

    #[test]
    fn loopback_detection() {
        assert!(loopback_host("http://127.0.0.1:8081"));
        assert!(loopback_host("http://localhost/x"));
        assert!(loopback_host("http://[::1]:80"));
        assert!(!loopback_host("http://127.example.com"));
    }
}
