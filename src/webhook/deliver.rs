//! The webhook outbox: durable, retried, signed deliveries, and the dead
//! letter queue.
//!
//! Every delivery is a file in `state_dir/outbox/` before its first
//! attempt, holding the exact body; one delivery id serves all its
//! attempts. A worker sends them with at most `max_in_flight` at once, and
//! never lets one endpoint take every slot, so a dead or slow endpoint
//! cannot hold up a live one. Retry times are data in the files. A delivery
//! that fails for good moves to `state_dir/dead/` with its last error.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use smol::channel::{Receiver, Sender};
use smol::future::FutureExt as _;

use crate::clock;
use crate::config::Webhook as Config;
use crate::error::{Error, Result};
use crate::spool;
use crate::stats::Stats;
use crate::webhook::payload::{to_js_json, BridgeInfo};
use crate::webhook::sign;

/// One webhook delivery to one endpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Delivery {
    pub id: String,
    /// `event_processed`, `user_response` or `health_update`.
    pub kind: String,
    pub endpoint: String,
    /// The exact body, signed as is on every attempt.
    pub body: String,
    pub created_ms: u64,
    /// Attempts made so far.
    #[serde(default)]
    pub attempts: u32,
    /// Unix ms; not attempted before this.
    #[serde(default)]
    pub not_before: u64,
    /// Unix seconds of the first attempt (`X-CCTelegram-Original-Timestamp`).
    #[serde(default)]
    pub first_attempt: Option<u64>,
    #[serde(default)]
    pub last_error: Option<String>,
    /// Unix ms it went to the dead letter queue.
    #[serde(default)]
    pub died_ms: Option<u64>,
}

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Delivered(u16),
    /// Worth trying again; `retry_after` is the receiver's `Retry-After`.
    Retry {
        error: String,
        retry_after: Option<u64>,
    },
    /// A 4xx other than 408 and 429: the receiver refuses this delivery.
    Refused {
        status: u16,
        error: String,
    },
    /// 410 Gone: the endpoint is gone; stop sending to it.
    Gone(String),
}

/// Classifies an HTTP status (CONTRACT section 6): only 2xx succeeds; 408,
/// 429 and 5xx are retried; 410 disables the endpoint; other 4xx are final,
/// and so is a redirect (redirects are not followed: a moved endpoint is a
/// configuration to fix, not something retrying cures).
pub fn classify(status: u16, retry_after: Option<u64>, detail: &str) -> Outcome {
    let error = format!("HTTP {status}{detail}");
    match status {
        200..=299 => Outcome::Delivered(status),
        408 | 429 => Outcome::Retry { error, retry_after },
        410 => Outcome::Gone(error),
        300..=499 => Outcome::Refused { status, error },
        _ => Outcome::Retry {
            error,
            retry_after: None,
        },
    }
}

/// Which endpoints get which payloads: a path ending in `/events`,
/// `/responses` or `/health` gets that type only; any other, every type.
pub fn routes_to(endpoint: &str, kind: &str) -> bool {
    let path = endpoint.split_once("://").map_or(endpoint, |(_, rest)| {
        rest.find('/').map_or("", |i| &rest[i..])
    });
    let path = path
        .split(['?', '#'])
        .next()
        .unwrap_or("")
        .trim_end_matches('/');
    let only = if path.ends_with("/events") {
        "event_processed"
    } else if path.ends_with("/responses") {
        "user_response"
    } else if path.ends_with("/health") {
        "health_update"
    } else {
        return true;
    };
    only == kind
}

/// The wait before retry number `retry` (1-based): `initial * multiplier^(retry-1)`,
/// at most `max_delay_ms`, with up to 10% jitter either way.
pub fn retry_delay_ms(cfg: &Config, retry: u32, jitter: f64) -> u64 {
    let base = cfg.retry.initial_delay_ms as f64
        * cfg
            .retry
            .backoff_multiplier
            .powi(retry.saturating_sub(1) as i32);
    let capped = base.min(cfg.retry.max_delay_ms as f64);
    (capped * (1.0 + 0.1 * jitter.clamp(-1.0, 1.0))).max(0.0) as u64
}

fn jitter() -> f64 {
    let mut b = [0u8; 2];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    f64::from(u16::from_le_bytes(b)) / 32_768.0 - 1.0
}

fn new_delivery_id() -> String {
    let mut b = [0u8; 12];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("msg_{hex}")
}

/// Sends one attempt; blocking. `retry` is the number of earlier attempts.
pub fn attempt(
    agent: &ureq::Agent,
    secret: &str,
    d: &Delivery,
    max_retries: u64,
    now_s: u64,
) -> Outcome {
    let body = d.body.as_bytes();
    let mut req = agent
        .post(&d.endpoint)
        .header("Content-Type", "application/json")
        .header(
            "User-Agent",
            concat!("CCTelegram-Bridge/", env!("CARGO_PKG_VERSION")),
        )
        .header(
            "X-CCTelegram-Signature",
            sign::cctelegram_signature(secret, body),
        )
        .header("X-CCTelegram-Timestamp", now_s.to_string())
        .header("X-CCTelegram-Delivery", &d.id)
        .header("webhook-id", &d.id)
        .header("webhook-timestamp", now_s.to_string())
        .header(
            "webhook-signature",
            sign::standard_signature(secret, &d.id, now_s, body),
        );
    if d.attempts > 0 {
        req = req
            .header("X-CCTelegram-Retry-Count", d.attempts.to_string())
            .header("X-CCTelegram-Max-Retries", max_retries.to_string())
            .header(
                "X-CCTelegram-Original-Timestamp",
                d.first_attempt.unwrap_or(now_s).to_string(),
            );
    }
    match req.send(body) {
        Ok(mut resp) => {
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            let text = resp
                .body_mut()
                .with_config()
                .limit(64 * 1024)
                .read_to_string()
                .unwrap_or_default();
            let detail: String = text.trim().chars().take(200).collect();
            let detail = if detail.is_empty() {
                String::new()
            } else {
                format!(": {detail}")
            };
            classify(status, retry_after, &detail)
        }
        Err(e) => Outcome::Retry {
            error: e.to_string(),
            retry_after: None,
        },
    }
}

/// One endpoint's deliveries: waiting ones by (not_before, seq, id), and
/// how many are on their way.
#[derive(Default)]
struct Lane {
    waiting: BTreeSet<(u64, u64, String)>,
    busy: usize,
    /// Acceptance order of the deliveries on their way, to keep it on retry.
    seqs: HashMap<String, u64>,
}

/// What the worker keeps in memory per delivery.
struct Meta {
    endpoint: String,
    not_before: u64,
    seq: u64,
}

/// The outbox: accepts payloads, and (through [`Outbox::run`]) delivers them.
pub struct Outbox {
    dir: PathBuf,
    dead: PathBuf,
    cfg: Config,
    started: Instant,
    seq: AtomicU64,
    tx: Sender<(String, Meta)>,
    rx: Mutex<Option<Receiver<(String, Meta)>>>,
    stats: Arc<Stats>,
    /// Endpoints that answered 410 Gone, until the config is loaded again.
    pub disabled: Mutex<HashSet<String>>,
}

impl Outbox {
    pub fn open(
        state_dir: &Path,
        cfg: &Config,
        started: Instant,
        stats: Arc<Stats>,
    ) -> Result<Outbox> {
        let dir = state_dir.join("outbox");
        let dead = state_dir.join("dead");
        spool::ensure_dir(&dir)?;
        spool::ensure_dir(&dead)?;
        let (tx, rx) = smol::channel::unbounded();
        Ok(Outbox {
            dir,
            dead,
            cfg: cfg.clone(),
            started,
            seq: AtomicU64::new(0),
            tx,
            rx: Mutex::new(Some(rx)),
            stats,
            disabled: Mutex::new(HashSet::new()),
        })
    }

    /// Whether any payload can go anywhere.
    pub fn active(&self) -> bool {
        self.cfg.enabled && !self.cfg.endpoints.is_empty()
    }

    pub fn info(&self) -> BridgeInfo {
        BridgeInfo {
            uptime_seconds: self.started.elapsed().as_secs(),
        }
    }

    /// Puts `payload` on disk for every endpoint that takes its type, then
    /// hands it to the worker.
    pub fn enqueue(&self, kind: &str, payload: &Value) -> Result<()> {
        if !self.active() {
            return Ok(());
        }
        let body = to_js_json(payload);
        let now = clock::now_ms();
        for endpoint in self.cfg.endpoints.iter().filter(|e| routes_to(e, kind)) {
            let d = Delivery {
                id: new_delivery_id(),
                kind: kind.to_string(),
                endpoint: endpoint.clone(),
                body: body.clone(),
                created_ms: now,
                attempts: 0,
                not_before: 0,
                first_attempt: None,
                last_error: None,
                died_ms: None,
            };
            self.save(&d)?;
            Stats::bump(&self.stats.webhooks_queued);
            let meta = Meta {
                endpoint: endpoint.clone(),
                not_before: 0,
                seq: self.seq.fetch_add(1, Ordering::Relaxed),
            };
            let _ = self.tx.try_send((d.id.clone(), meta));
        }
        Ok(())
    }

    fn save(&self, d: &Delivery) -> Result<()> {
        let bytes = serde_json::to_vec(d).unwrap_or_default();
        spool::write_atomic(&self.dir, &format!("{}.json", d.id), &bytes, 0o600)
    }

    fn load(dir: &Path, id: &str) -> Result<Delivery> {
        let path = dir.join(format!("{id}.json"));
        let bytes = fs::read(&path).map_err(|e| Error::io(&path, e))?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Json { path, source: e })
    }

    /// Moves a delivery to the dead letter queue.
    fn bury(&self, mut d: Delivery, error: String) -> Result<()> {
        d.last_error = Some(error);
        d.died_ms = Some(clock::now_ms());
        let bytes = serde_json::to_vec_pretty(&d).unwrap_or_default();
        spool::write_atomic(&self.dead, &format!("{}.json", d.id), &bytes, 0o600)?;
        let _ = fs::remove_file(self.dir.join(format!("{}.json", d.id)));
        Stats::bump(&self.stats.webhooks_dead);
        Ok(())
    }

    /// Delivers until the daemon stops.
    pub async fn run(self: Arc<Self>) -> Result<()> {
        let Some(new) = self.rx.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return Ok(());
        };
        let agent = crate::net::agent(Duration::from_secs(self.cfg.timeout_seconds));
        let mut pending: HashMap<String, Meta> = HashMap::new();
        // Deliveries left from before a restart.
        for entry in fs::read_dir(&self.dir)
            .map_err(|e| Error::io(&self.dir, e))?
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(id) = name
                .strip_suffix(".json")
                .filter(|_| !name.starts_with('.'))
            else {
                continue;
            };
            match Self::load(&self.dir, id) {
                Ok(d) => {
                    let seq = self.seq.fetch_add(1, Ordering::Relaxed);
                    pending.insert(
                        d.id.clone(),
                        Meta {
                            endpoint: d.endpoint,
                            not_before: d.not_before,
                            seq,
                        },
                    );
                }
                Err(e) => log::error!("webhook delivery {id} cannot be read, left in place: {e}"),
            }
        }
        if !pending.is_empty() {
            log::info!("{} webhook deliveries pending from before", pending.len());
        }
        let (done_tx, done_rx) = smol::channel::unbounded::<(String, Outcome)>();
        let max = self.cfg.max_in_flight.max(1) as usize;
        // One endpoint may use all slots but one, so another always gets through.
        let per_endpoint = if max > 1 { max - 1 } else { 1 };
        let mut lanes: HashMap<String, Lane> = HashMap::new();
        let mut where_is: HashMap<String, String> = HashMap::new();
        for (id, m) in pending {
            where_is.insert(id.clone(), m.endpoint.clone());
            lanes
                .entry(m.endpoint)
                .or_default()
                .waiting
                .insert((m.not_before, m.seq, id));
        }
        let mut in_flight = 0;
        let agent = Arc::new(agent);
        loop {
            let now = clock::now_ms();
            let disabled = self
                .disabled
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let mut next_due: Option<u64> = None;
            for (_, lane) in lanes.iter_mut().filter(|(e, _)| !disabled.contains(*e)) {
                while in_flight < max && lane.busy < per_endpoint {
                    let Some(&(at, seq, ref id)) = lane.waiting.first() else {
                        break;
                    };
                    if at > now {
                        break;
                    }
                    let id = id.clone();
                    lane.waiting.remove(&(at, seq, id.clone()));
                    let mut d = match Self::load(&self.dir, &id) {
                        Ok(d) => d,
                        Err(e) => {
                            log::error!("webhook delivery {id} cannot be read, skipped: {e}");
                            where_is.remove(&id);
                            continue;
                        }
                    };
                    let now_s = now / 1000;
                    if d.first_attempt.is_none() {
                        d.first_attempt = Some(now_s);
                    }
                    lane.busy += 1;
                    lane.seqs.insert(id.clone(), seq);
                    in_flight += 1;
                    let (agent, secret, done, stats) = (
                        agent.clone(),
                        self.cfg.secret.clone(),
                        done_tx.clone(),
                        self.stats.clone(),
                    );
                    let max_retries = self.cfg.retry.max_attempts;
                    smol::unblock(move || {
                        let started = Instant::now();
                        let outcome = attempt(&agent, &secret, &d, max_retries, now_s);
                        stats.webhook_request.observe(started.elapsed());
                        let _ = done.send_blocking((d.id.clone(), outcome));
                    })
                    .detach();
                }
                // Only a lane with a free slot has anything coming due.
                if in_flight < max && lane.busy < per_endpoint {
                    if let Some((at, _, _)) = lane.waiting.first() {
                        next_due = Some(next_due.map_or(*at, |n| n.min(*at)));
                    }
                }
            }
            Stats::set(&self.stats.webhooks_pending, where_is.len() as u64);
            enum Wake {
                New((String, Meta)),
                Done((String, Outcome)),
                Timer,
            }
            let new_f = async { new.recv().await.map(Wake::New).unwrap_or(Wake::Timer) };
            let done_f = async { done_rx.recv().await.map(Wake::Done).unwrap_or(Wake::Timer) };
            let wake = match next_due {
                Some(at) => {
                    let wait = Duration::from_millis(at.saturating_sub(clock::now_ms()));
                    let timer = async {
                        smol::Timer::after(wait).await;
                        Wake::Timer
                    };
                    new_f.or(done_f).or(timer).await
                }
                None => new_f.or(done_f).await,
            };
            match wake {
                Wake::New((id, m)) => {
                    where_is.insert(id.clone(), m.endpoint.clone());
                    lanes
                        .entry(m.endpoint)
                        .or_default()
                        .waiting
                        .insert((m.not_before, m.seq, id));
                }
                Wake::Timer => {}
                Wake::Done((id, outcome)) => {
                    in_flight -= 1;
                    let next = self.settle(&id, outcome)?;
                    let Some(endpoint) = where_is.get(&id).cloned() else {
                        continue;
                    };
                    let lane = lanes.entry(endpoint).or_default();
                    lane.busy = lane.busy.saturating_sub(1);
                    let seq = lane.seqs.remove(&id).unwrap_or(0);
                    match next {
                        Some(at) => {
                            lane.waiting.insert((at, seq, id));
                        }
                        None => {
                            where_is.remove(&id);
                        }
                    }
                }
            }
        }
    }

    /// Records an attempt's outcome; returns the next attempt time if it is
    /// to be tried again.
    fn settle(&self, id: &str, outcome: Outcome) -> Result<Option<u64>> {
        let mut d = match Self::load(&self.dir, id) {
            Ok(d) => d,
            Err(e) => {
                log::error!("webhook delivery {id} vanished: {e}");
                return Ok(None);
            }
        };
        d.attempts += 1;
        if d.first_attempt.is_none() {
            d.first_attempt = Some(clock::now_ms() / 1000);
        }
        match outcome {
            Outcome::Delivered(status) => {
                // At least once: if this removal is lost in a crash, the
                // receiver sees the same delivery id again.
                let _ = fs::remove_file(self.dir.join(format!("{id}.json")));
                Stats::bump(&self.stats.webhooks_delivered);
                log::info!(
                    "webhook {} {id} delivered to {} ({status}) after {} attempt(s)",
                    d.kind,
                    d.endpoint,
                    d.attempts
                );
                Ok(None)
            }
            Outcome::Retry { error, retry_after } => {
                let retries_done = d.attempts - 1;
                if u64::from(retries_done) >= self.cfg.retry.max_attempts {
                    let what = format!(
                        "webhook {} {id} to {} failed after {} attempts",
                        d.kind, d.endpoint, d.attempts
                    );
                    self.bury(d, error.clone())?;
                    log::warn!("{what}, moved to the dead letter queue: {error}");
                    return Ok(None);
                }
                let wait = match retry_after {
                    Some(s) => s * 1000,
                    None => retry_delay_ms(&self.cfg, d.attempts, jitter()),
                };
                Stats::bump(&self.stats.webhook_retries);
                d.not_before = clock::now_ms() + wait;
                d.last_error = Some(error.clone());
                self.save(&d)?;
                log::warn!(
                    "webhook {} {id} to {} failed (attempt {}), retrying in {:.1} s: {error}",
                    d.kind,
                    d.endpoint,
                    d.attempts,
                    wait as f64 / 1000.0
                );
                Ok(Some(d.not_before))
            }
            Outcome::Refused { error, .. } => {
                let what = format!("webhook {} {id} refused by {}", d.kind, d.endpoint);
                self.bury(d, error.clone())?;
                log::warn!("{what}, moved to the dead letter queue: {error}");
                Ok(None)
            }
            Outcome::Gone(error) => {
                log::error!(
                    "{} answered 410 Gone: no more webhooks go there until the config is loaded again",
                    d.endpoint
                );
                self.disabled
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(d.endpoint.clone());
                self.bury(d, error)?;
                Ok(None)
            }
        }
    }
}

/// The dead letter queue, for `cctelegram dlq`.
pub struct DeadLetters {
    pub dir: PathBuf,
}

impl DeadLetters {
    pub fn new(state_dir: &Path) -> DeadLetters {
        DeadLetters {
            dir: state_dir.join("dead"),
        }
    }

    /// Every dead delivery, oldest first.
    pub fn list(&self) -> Result<Vec<Delivery>> {
        let mut out = Vec::new();
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(Error::io(&self.dir, e)),
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(id) = name
                .strip_suffix(".json")
                .filter(|_| !name.starts_with('.'))
            {
                out.push(Outbox::load(&self.dir, id)?);
            }
        }
        out.sort_by_key(|d| d.died_ms.unwrap_or(d.created_ms));
        Ok(out)
    }

    /// The entries `which` names: an id, a unique id prefix, or `--all`.
    pub fn select(&self, which: &str) -> Result<Vec<Delivery>> {
        let all = self.list()?;
        if which == "--all" {
            return Ok(all);
        }
        let exact: Vec<Delivery> = all.iter().filter(|d| d.id == which).cloned().collect();
        if !exact.is_empty() {
            return Ok(exact);
        }
        let found: Vec<Delivery> = all
            .into_iter()
            .filter(|d| d.id.starts_with(which))
            .collect();
        match found.len() {
            1 => Ok(found),
            0 => Err(Error::Usage(format!(
                "no dead letter with id {which}; see 'cctelegram dlq list'"
            ))),
            n => Err(Error::Usage(format!(
                "{n} dead letters start with {which}; give more of the id"
            ))),
        }
    }

    pub fn purge(&self, d: &Delivery) -> Result<()> {
        let path = self.dir.join(format!("{}.json", d.id));
        fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
        spool::sync_dir(&self.dir)
    }

    /// Sends a dead delivery once more, with a fresh timestamp and
    /// signature. Delivered: it leaves the queue. Otherwise it stays, with
    /// the new error.
    pub fn replay(&self, mut d: Delivery, cfg: &Config) -> Result<Outcome> {
        let agent = crate::net::agent(Duration::from_secs(cfg.timeout_seconds));
        let outcome = attempt(
            &agent,
            &cfg.secret,
            &d,
            cfg.retry.max_attempts,
            clock::now_ms() / 1000,
        );
        d.attempts += 1;
        match &outcome {
            Outcome::Delivered(_) => self.purge(&d)?,
            Outcome::Retry { error, .. }
            | Outcome::Refused { error, .. }
            | Outcome::Gone(error) => {
                d.last_error = Some(error.clone());
                let bytes = serde_json::to_vec_pretty(&d).unwrap_or_default();
                spool::write_atomic(&self.dir, &format!("{}.json", d.id), &bytes, 0o600)?;
            }
        }
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        crate::config::Config::default().webhook
    }

    #[test]
    fn routing_by_path_suffix() {
        let e = "https://x.com/webhook/events";
        assert!(routes_to(e, "event_processed"));
        assert!(!routes_to(e, "user_response"));
        assert!(routes_to("http://x/webhook/responses/", "user_response"));
        assert!(routes_to("http://x/hooks/health?k=1", "health_update"));
        assert!(!routes_to("http://x/hooks/health", "event_processed"));
        assert!(routes_to("http://x/all", "health_update"));
        assert!(routes_to("http://x", "user_response"));
    }

    #[test]
    fn the_spec_schedule() {
        let c = cfg();
        assert_eq!(retry_delay_ms(&c, 1, 0.0), 1000);
        assert_eq!(retry_delay_ms(&c, 2, 0.0), 2000);
        assert_eq!(retry_delay_ms(&c, 3, 0.0), 4000);
        assert_eq!(retry_delay_ms(&c, 9, 0.0), 30_000);
        assert_eq!(retry_delay_ms(&c, 1, 1.0), 1100);
        assert_eq!(retry_delay_ms(&c, 1, -1.0), 900);
    }

    #[test]
    fn statuses_are_classified() {
        assert_eq!(classify(204, None, ""), Outcome::Delivered(204));
        assert!(matches!(
            classify(429, Some(7), ""),
            Outcome::Retry {
                retry_after: Some(7),
                ..
            }
        ));
        assert!(matches!(classify(408, None, ""), Outcome::Retry { .. }));
        assert!(matches!(classify(503, None, ""), Outcome::Retry { .. }));
        assert!(matches!(
            classify(400, None, ""),
            Outcome::Refused { status: 400, .. }
        ));
        assert!(matches!(classify(410, None, ""), Outcome::Gone(_)));
        assert!(matches!(classify(301, None, ""), Outcome::Refused { .. }));
        assert!(matches!(classify(0, None, ""), Outcome::Retry { .. }));
    }
}
