//! Per-endpoint webhook settings: `[[webhook.endpoint]]` beside the spec's
//! plain `endpoints` list, secret rotation, payload format, extra headers.
//!
//! Pure. The config file gives two ways to name endpoints; everything that
//! sends (the outbox, `webhook test`, `dlq replay`) wants one answer per URL:
//! which types it takes, which secrets sign for it, which body format and
//! which extra headers go with it. [`targets`] gives that answer, so the rules
//! (a per-endpoint setting wins over `[webhook]`'s, `secret` alone is a list
//! of one, routing by path when `types` is omitted) live in one place. URLs
//! may carry credentials (`https://user:pass@host/?token=...`), so whatever
//! shows one to a person goes through [`redact_url`].

use std::fmt::Write as _;

use serde_json::{Map, Value};

use crate::config::{kind, Webhook};
use crate::error::{Error, Result};

/// What a delivery's body looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// The spec's payloads, as they are (version 1).
    #[default]
    Cctelegram,
    /// The Standard Webhooks envelope `{"type", "timestamp", "data"}`, with
    /// the version 1 payload as `data`.
    Standard,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Cctelegram => "cctelegram",
            Format::Standard => "standard",
        }
    }

    pub fn parse(key: &str, s: &str) -> Result<Format> {
        match s {
            "cctelegram" => Ok(Format::Cctelegram),
            "standard" => Ok(Format::Standard),
            other => Err(Error::config(
                key,
                format!("expected \"cctelegram\" or \"standard\", found \"{other}\""),
            )),
        }
    }
}

/// The payload types an endpoint may ask for in `types`.
pub const TYPES: &[&str] = &["event_processed", "user_response", "health_update"];

/// One `[[webhook.endpoint]]` table as written.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Settings {
    pub url: String,
    /// None: by path, as for `endpoints`.
    pub types: Option<Vec<String>>,
    /// None: `[webhook]` secrets / secret.
    pub secrets: Option<Vec<String>>,
    /// None: `[webhook] format`.
    pub format: Option<Format>,
    /// Extra request headers; the values are secrets.
    pub headers: Vec<(String, String)>,
}

/// Everything needed to send to one URL.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub url: String,
    pub types: Option<Vec<String>>,
    /// The first signs `X-CCTelegram-Signature`, the second
    /// `X-CCTelegram-Signature-Previous`; each signs one `webhook-signature` entry.
    pub secrets: Vec<String>,
    pub format: Format,
    pub headers: Vec<(String, String)>,
}

impl Target {
    /// Whether payloads of `kind` go here: `types` when given, else by path.
    pub fn takes(&self, kind: &str) -> bool {
        match &self.types {
            Some(types) => types.iter().any(|t| t == kind),
            None => crate::webhook::deliver::routes_to(&self.url, kind),
        }
    }
}

/// The `[webhook]` secrets in force: `secrets` when given, else `secret`
/// (which `CCTELEGRAM_WEBHOOK_SECRET` has already replaced), as a list.
pub fn global_secrets(w: &Webhook) -> Vec<String> {
    if !w.secrets.is_empty() {
        w.secrets.clone()
    } else if !w.secret.is_empty() {
        vec![w.secret.clone()]
    } else {
        Vec::new()
    }
}

/// Every endpoint, once: the `[[webhook.endpoint]]` tables first, then the
/// plain `endpoints` not already named by one.
pub fn targets(w: &Webhook) -> Vec<Target> {
    let global = global_secrets(w);
    let mut out: Vec<Target> = Vec::new();
    for s in &w.endpoint {
        if out.iter().any(|t| t.url == s.url) {
            continue;
        }
        out.push(Target {
            url: s.url.clone(),
            types: s.types.clone(),
            secrets: s.secrets.clone().unwrap_or_else(|| global.clone()),
            format: s.format.unwrap_or(w.format),
            headers: s.headers.clone(),
        });
    }
    for url in &w.endpoints {
        if out.iter().any(|t| &t.url == url) {
            continue;
        }
        out.push(Target {
            url: url.clone(),
            types: None,
            secrets: global.clone(),
            format: w.format,
            headers: Vec::new(),
        });
    }
    out
}

/// The settings for `url`, or `[webhook]`'s when it is no longer
/// configured (a delivery queued before a reload removed it).
pub fn target_for(w: &Webhook, url: &str) -> Target {
    targets(w)
        .into_iter()
        .find(|t| t.url == url)
        .unwrap_or_else(|| Target {
            url: url.to_string(),
            types: None,
            secrets: global_secrets(w),
            format: w.format,
            headers: Vec::new(),
        })
}

/// Every secret the configuration knows, without repeats (for `listen`).
pub fn all_secrets(w: &Webhook) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in global_secrets(w).into_iter().chain(
        w.endpoint
            .iter()
            .flat_map(|e| e.secrets.clone().unwrap_or_default()),
    ) {
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

/// A list of strings at `key`.
pub fn strings(key: &str, v: &Value) -> Result<Vec<String>> {
    let Value::Array(items) = v else {
        return Err(Error::config(
            key,
            format!("expected a list of strings, found {}", kind(v)),
        ));
    };
    items
        .iter()
        .map(|i| {
            i.as_str()
                .map(str::to_string)
                .ok_or_else(|| Error::config(key, format!("expected strings, found {}", kind(i))))
        })
        .collect()
}

/// The keys a `[[webhook.endpoint]]` table may hold.
pub const KEYS: &[&str] = &["url", "types", "secrets", "format", "headers"];

/// Parses `[[webhook.endpoint]]`; unknown keys become warnings.
pub fn parse(v: &Value, warnings: &mut Vec<String>) -> Result<Vec<Settings>> {
    const KEY: &str = "webhook.endpoint";
    let tables: Vec<&Map<String, Value>> = match v {
        Value::Array(items) => items
            .iter()
            .map(|i| match i {
                Value::Object(m) => Ok(m),
                other => Err(Error::config(
                    KEY,
                    format!(
                        "expected [[webhook.endpoint]] tables, found {}",
                        kind(other)
                    ),
                )),
            })
            .collect::<Result<_>>()?,
        Value::Object(m) => vec![m],
        other => {
            return Err(Error::config(
                KEY,
                format!(
                    "expected [[webhook.endpoint]] tables, found {}",
                    kind(other)
                ),
            ))
        }
    };
    let mut out = Vec::new();
    for (n, t) in tables.into_iter().enumerate() {
        let at = |k: &str| format!("{KEY}[{n}].{k}");
        for k in t.keys().filter(|k| !KEYS.contains(&k.as_str())) {
            warnings.push(format!("unknown config key {} is ignored", at(k)));
        }
        let url = match t.get("url") {
            Some(Value::String(s)) => s.clone(),
            Some(other) => {
                return Err(Error::config(
                    at("url"),
                    format!("expected a URL string, found {}", kind(other)),
                ))
            }
            None => {
                return Err(Error::config(
                    at("url"),
                    "is missing; every endpoint needs a url",
                ))
            }
        };
        let types = t
            .get("types")
            .map(|v| strings(&at("types"), v))
            .transpose()?;
        let secrets = t
            .get("secrets")
            .map(|v| strings(&at("secrets"), v))
            .transpose()?;
        let format = match t.get("format") {
            None => None,
            Some(Value::String(s)) => Some(Format::parse(&at("format"), s)?),
            Some(other) => {
                return Err(Error::config(
                    at("format"),
                    format!("expected a string, found {}", kind(other)),
                ))
            }
        };
        let headers = match t.get("headers") {
            None => Vec::new(),
            Some(Value::Object(h)) => h
                .iter()
                .map(|(name, v)| match v {
                    Value::String(s) => Ok((name.clone(), s.clone())),
                    other => Err(Error::config(
                        at("headers"),
                        format!(
                            "the value of {name} must be a string, found {}",
                            kind(other)
                        ),
                    )),
                })
                .collect::<Result<_>>()?,
            Some(other) => {
                return Err(Error::config(
                    at("headers"),
                    format!(
                        "expected a table like {{ Authorization = \"Bearer ...\" }}, found {}",
                        kind(other)
                    ),
                ))
            }
        };
        out.push(Settings {
            url,
            types,
            secrets,
            format,
            headers,
        });
    }
    Ok(out)
}

/// Headers the bridge sets itself; an endpoint may not replace them.
const RESERVED: &[&str] = &[
    "content-type",
    "content-length",
    "host",
    "user-agent",
    "transfer-encoding",
    "connection",
];

fn header_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A secret must be usable by both schemes: not empty, and a `whsec_`
/// secret must be base64 after its prefix (receivers' libraries decode it).
pub fn check_secret(key: &str, s: &str) -> Result<()> {
    if s.is_empty() {
        return Err(Error::config(key, "a secret must not be empty"));
    }
    if let Some(b64) = s.strip_prefix("whsec_") {
        let body = b64.trim_end_matches('=');
        let ok = !body.is_empty()
            && body.len() % 4 != 1
            && body
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/');
        if !ok {
            return Err(Error::config(
                key,
                "a secret written whsec_... must be base64 after the prefix",
            ));
        }
    }
    Ok(())
}

/// Rejects impossible endpoint settings, naming the key.
pub fn validate(w: &Webhook, check_url: impl Fn(&str, &str) -> Result<()>) -> Result<()> {
    for (i, s) in w.secrets.iter().enumerate() {
        check_secret(&format!("webhook.secrets[{i}]"), s)?;
    }
    for (n, e) in w.endpoint.iter().enumerate() {
        let at = |k: &str| format!("webhook.endpoint[{n}].{k}");
        check_url(&at("url"), &e.url)?;
        for t in e.types.iter().flatten() {
            if !TYPES.contains(&t.as_str()) {
                return Err(Error::config(
                    at("types"),
                    format!("expected types among {}, found \"{t}\"", TYPES.join(", ")),
                ));
            }
        }
        if let Some(secrets) = &e.secrets {
            if secrets.is_empty() {
                return Err(Error::config(
                    at("secrets"),
                    "is empty; list at least one secret, or leave it out to use [webhook]'s",
                ));
            }
            for (i, s) in secrets.iter().enumerate() {
                check_secret(&format!("{}[{i}]", at("secrets")), s)?;
            }
        }
        for (name, value) in &e.headers {
            let lower = name.to_ascii_lowercase();
            if !header_name_ok(name) {
                return Err(Error::config(
                    at("headers"),
                    format!("\"{name}\" is not a valid header name"),
                ));
            }
            if RESERVED.contains(&lower.as_str())
                || lower.starts_with("x-cctelegram-")
                || lower.starts_with("webhook-")
            {
                return Err(Error::config(
                    at("headers"),
                    format!("{name} is set by cctelegram itself and cannot be replaced"),
                ));
            }
            if value.bytes().any(|b| b < 0x20 && b != b'\t' || b == 0x7f) {
                return Err(Error::config(
                    at("headers"),
                    format!("the value of {name} holds a control character"),
                ));
            }
        }
    }
    if w.enabled {
        if let Some(t) = targets(w).into_iter().find(|t| t.secrets.is_empty()) {
            return Err(Error::config(
                "webhook.secret",
                format!(
                    "is empty while endpoint {} is set; set CCTELEGRAM_WEBHOOK_SECRET, [webhook] secret or secrets",
                    redact_url(&t.url)
                ),
            ));
        }
    }
    Ok(())
}

/// The "Use HTTPS" warnings: plain http:// to a host that is not loopback.
pub fn https_warnings(w: &Webhook, loopback: impl Fn(&str) -> bool) -> Vec<String> {
    targets(w)
        .iter()
        .filter(|t| t.url.starts_with("http://") && !loopback(&t.url))
        .map(|t| {
            format!(
                "webhook endpoint {} is plain http:// to a host that is not loopback: Use HTTPS, or anyone on the way can read and replay the deliveries",
                redact_url(&t.url)
            )
        })
        .collect()
}

/// `url` without the secrets it may carry: userinfo becomes `***@` and
/// every query value `***`, so a person sees which endpoint it is and
/// nothing that would let them call it.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (Some(s), r),
        None => (None, url),
    };
    let (before_frag, frag) = match rest.split_once('#') {
        Some((a, _)) => (a, true),
        None => (rest, false),
    };
    let (before_query, query) = match before_frag.split_once('?') {
        Some((a, q)) => (a, Some(q)),
        None => (before_frag, None),
    };
    let (authority, path) = match before_query.find('/') {
        Some(i) => before_query.split_at(i),
        None => (before_query, ""),
    };
    let host = match authority.rsplit_once('@') {
        Some((_, h)) => format!("***@{h}"),
        None => authority.to_string(),
    };
    let mut out = String::new();
    if let Some(s) = scheme {
        let _ = write!(out, "{s}://");
    }
    out.push_str(&host);
    out.push_str(path);
    if let Some(q) = query {
        out.push('?');
        let parts: Vec<String> = q
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) => format!("{k}=***"),
                None => kv.to_string(),
            })
            .collect();
        out.push_str(&parts.join("&"));
    }
    if frag {
        out.push_str("#***");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn webhook() -> Webhook {
        crate::config::Config::default().webhook
    }

    #[test]
    fn secret_alone_is_a_list_of_one_and_secrets_win() {
        let mut w = webhook();
        w.secret = "only".into();
        assert_eq!(global_secrets(&w), vec!["only".to_string()]);
        w.secrets = vec!["new".into(), "old".into()];
        assert_eq!(
            global_secrets(&w),
            vec!["new".to_string(), "old".to_string()]
        );
    }

    #[test]
    fn per_endpoint_settings_win_and_urls_appear_once() {
        let mut w = webhook();
        w.secret = "g".into();
        w.format = Format::Standard;
        w.endpoints = vec!["https://a/x/events".into(), "https://b/all".into()];
        w.endpoint = vec![Settings {
            url: "https://b/all".into(),
            types: Some(vec!["user_response".into()]),
            secrets: Some(vec!["b1".into(), "b0".into()]),
            format: Some(Format::Cctelegram),
            headers: vec![("Authorization".into(), "Bearer z".into())],
        }];
        let t = targets(&w);
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].url, "https://b/all");
        assert_eq!(t[0].secrets, ["b1", "b0"]);
        assert_eq!(t[0].format, Format::Cctelegram);
        assert!(t[0].takes("user_response") && !t[0].takes("event_processed"));
        assert_eq!(t[1].secrets, ["g"]);
        assert_eq!(t[1].format, Format::Standard);
        assert!(t[1].takes("event_processed") && !t[1].takes("user_response"));
        assert_eq!(target_for(&w, "https://gone/").secrets, ["g"]);
        assert_eq!(all_secrets(&w), ["g", "b1", "b0"]);
    }

    #[test]
    fn bad_settings_name_the_key() {
        let mut warnings = Vec::new();
        let v: Value = serde_json::json!([{"url": "https://x/", "typo": 1, "format": "svix"}]);
        match parse(&v, &mut warnings) {
            Err(Error::Config { key, .. }) => assert_eq!(key, "webhook.endpoint[0].format"),
            other => panic!("{other:?}"),
        }
        assert!(
            warnings[0].contains("webhook.endpoint[0].typo"),
            "{warnings:?}"
        );
        let v: Value = serde_json::json!([{"url": "https://x/", "headers": {"Authorization": 5}}]);
        assert!(parse(&v, &mut warnings).is_err());
        let ok = |_: &str, _: &str| Ok(());
        let mut w = webhook();
        w.secret = "s".into();
        for (s, key) in [
            (
                Settings {
                    url: "https://x".into(),
                    types: Some(vec!["everything".into()]),
                    ..Settings::default()
                },
                "webhook.endpoint[0].types",
            ),
            (
                Settings {
                    url: "https://x".into(),
                    headers: vec![("X-CCTelegram-Signature".into(), "v".into())],
                    ..Settings::default()
                },
                "webhook.endpoint[0].headers",
            ),
            (
                Settings {
                    url: "https://x".into(),
                    headers: vec![("Authorization".into(), "a\r\nb".into())],
                    ..Settings::default()
                },
                "webhook.endpoint[0].headers",
            ),
            (
                Settings {
                    url: "https://x".into(),
                    secrets: Some(vec!["whsec_not base64!".into()]),
                    ..Settings::default()
                },
                "webhook.endpoint[0].secrets[0]",
            ),
        ] {
            w.endpoint = vec![s];
            match validate(&w, ok) {
                Err(Error::Config { key: k, problem }) => {
                    assert_eq!(k, key);
                    assert!(!problem.contains("a\r\nb"));
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn urls_are_shown_without_their_credentials() {
        assert_eq!(
            redact_url("https://bob:hunter2@example.net/hooks?token=abc&x=1#frag"),
            "https://***@example.net/hooks?token=***&x=***#***"
        );
        assert_eq!(
            redact_url("http://127.0.0.1:9/a/b"),
            "http://127.0.0.1:9/a/b"
        );
        let once = redact_url("https://u@h/?k=v");
        assert_eq!(redact_url(&once), once);
    }

    #[test]
    fn plain_http_to_a_remote_host_is_warned_about() {
        let mut w = webhook();
        w.endpoints = vec![
            "http://10.0.0.2/hook".into(),
            "http://127.0.0.1/hook".into(),
        ];
        let warnings = https_warnings(&w, |u| u.contains("127.0.0.1"));
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("Use HTTPS") && warnings[0].contains("10.0.0.2"));
    }
}
