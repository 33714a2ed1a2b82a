//! `cctelegram webhook test [URL]`: one signed `test` delivery to every
//! configured endpoint (or to URL), each printed with its answer.
//!
//! The way to check a receiver from the device itself: the same request
//! the daemon would send (secrets, format, extra headers, every signature
//! header), made once, without the outbox, so nothing is queued, retried or
//! dead-lettered. Exit 0 only if every endpoint answered 2xx.

use std::time::{Duration, Instant};

use crate::clock;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::webhook::deliver::{self, Delivery, Outcome};
use crate::webhook::endpoint::{self, redact_url, Format};
use crate::webhook::payload::{self, to_js_json, BridgeInfo};

/// Runs `webhook test` with the words after `webhook`.
pub fn command(cfg: &Config, words: &[String]) -> Result<()> {
    let url = match words {
        [t] if t == "test" => None,
        [t, url] if t == "test" => Some(url.as_str()),
        _ => {
            return Err(Error::Usage(
                "webhook takes 'test [URL]'; see 'cctelegram help'".into(),
            ))
        }
    };
    let w = &cfg.webhook;
    let targets = match url {
        Some(u) => {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                return Err(Error::Usage(format!(
                    "expected an http:// or https:// URL, found \"{}\"",
                    redact_url(u)
                )));
            }
            vec![endpoint::target_for(w, u)]
        }
        None => endpoint::targets(w),
    };
    if targets.is_empty() {
        return Err(Error::Usage(
            "no webhook endpoints are configured; give a URL: cctelegram webhook test URL".into(),
        ));
    }
    if let Some(t) = targets.iter().find(|t| t.secrets.is_empty()) {
        return Err(Error::config(
            "webhook.secret",
            format!(
                "no secret to sign for {}; set CCTELEGRAM_WEBHOOK_SECRET, [webhook] secret or secrets",
                redact_url(&t.url)
            ),
        ));
    }
    let agent = crate::net::agent(Duration::from_secs(w.timeout_seconds));
    let now = clock::now_ms();
    let p = payload::test(now, &BridgeInfo { uptime_seconds: 0 });
    let id = deliver::delivery_id("test", &format!("{now}:{}", std::process::id()));
    let mut failed = 0;
    for t in &targets {
        let body = match t.format {
            Format::Cctelegram => to_js_json(&p),
            Format::Standard => payload::standard_envelope("test", &p),
        };
        let d = Delivery::new(id.clone(), "test", t.url.clone(), body, now);
        let started = Instant::now();
        let outcome = deliver::attempt(&agent, t, &d, 0, clock::now_ms() / 1000);
        let ms = started.elapsed().as_millis();
        let shown = redact_url(&t.url);
        match outcome {
            Outcome::Delivered(status) => {
                println!(
                    "{shown}: OK, HTTP {status} in {ms} ms ({} format)",
                    t.format.name()
                )
            }
            Outcome::Retry { error, .. }
            | Outcome::Refused { error, .. }
            | Outcome::Gone(error) => {
                failed += 1;
                println!("{shown}: FAILED after {ms} ms: {error}");
            }
        }
    }
    println!("delivery id {id}");
    if failed > 0 {
        return Err(Error::Failed(format!(
            "{failed} of {} endpoint(s) did not answer 2xx",
            targets.len()
        )));
    }
    Ok(())
}
