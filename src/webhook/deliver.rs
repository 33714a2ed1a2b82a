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
use std::path::Path;
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
use crate::reload::Live;
use crate::signals::Stop;
use crate::stats::Stats;
use crate::store::{self, Records};
use crate::webhook::endpoint::{self, redact_url, Format, Target};
use crate::webhook::figures::{Attempt, Endpoint, Figures};
use crate::webhook::payload::{self, to_js_json, BridgeInfo};
use crate::webhook::sign;

/// `X-CCTelegram-Payload-Version`: the shapes of `spec/webhooks.md` plus
/// CONTRACT section 6. A change that would break a receiver gets a new one.
pub const PAYLOAD_VERSION: &str = "1";

/// The longest `Retry-After` honoured; a receiver asking for more is
/// retried after an hour.
pub const MAX_RETRY_AFTER_S: u64 = 3600;

/// How long a delivery waits after the outbox could not record its outcome
/// (a full disk) before it is tried again.
const SETTLE_RETRY_MS: u64 = 5000;

/// One webhook delivery to one endpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Delivery {
    /// Derived from what the delivery reports ([`delivery_id`]), so the same
    /// report queued again after a crash carries the same id.
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

/// The delivery id (`X-CCTelegram-Delivery`, `webhook-id`) of a report:
/// `kind` and `source`, what it reports (event, chat and status; the
/// Telegram update; the approval that expired).
pub fn delivery_id(kind: &str, source: &str) -> String {
    format!(
        "msg_{}",
        &store::digest(&[kind.as_bytes(), b"\0", source.as_bytes()])[..24]
    )
}

impl Delivery {
    /// A delivery not attempted yet.
    pub fn new(id: String, kind: &str, endpoint: String, body: String, now_ms: u64) -> Delivery {
        Delivery {
            id,
            kind: kind.to_string(),
            endpoint,
            body,
            created_ms: now_ms,
            attempts: 0,
            not_before: 0,
            first_attempt: None,
            last_error: None,
            died_ms: None,
        }
    }

    /// The record's name: one delivery id goes to several endpoints.
    pub fn file_name(&self) -> String {
        record_name(&self.id, &self.endpoint)
    }
}

fn record_name(id: &str, endpoint: &str) -> String {
    format!(
        "{}.json",
        &store::digest(&[id.as_bytes(), b"\0", endpoint.as_bytes()])[..32]
    )
}

/// Sends one attempt; blocking. `target` gives the secrets (the first
/// signs `X-CCTelegram-Signature`, the second `-Previous`, each one
/// `webhook-signature` entry) and the extra headers.
pub fn attempt(
    agent: &ureq::Agent,
    target: &Target,
    d: &Delivery,
    max_retries: u64,
    now_s: u64,
) -> Outcome {
    let body = d.body.as_bytes();
    let first = target.secrets.first().map(String::as_str).unwrap_or("");
    let mut req = agent
        .post(&d.endpoint)
        .header("Content-Type", "application/json")
        .header(
            "User-Agent",
            concat!("CCTelegram-Bridge/", env!("CARGO_PKG_VERSION")),
        )
        .header(
            "X-CCTelegram-Signature",
            sign::cctelegram_signature(first, body),
        )
        .header("X-CCTelegram-Timestamp", now_s.to_string())
        .header("X-CCTelegram-Payload-Version", PAYLOAD_VERSION)
        .header("X-CCTelegram-Delivery", &d.id)
        .header("webhook-id", &d.id)
        .header("webhook-timestamp", now_s.to_string())
        .header(
            "webhook-signature",
            sign::standard_signatures(&target.secrets, &d.id, now_s, body),
        );
    if let Some(previous) = target.secrets.get(1) {
        req = req.header(
            "X-CCTelegram-Signature-Previous",
            sign::cctelegram_signature(previous, body),
        );
    }
    for (name, value) in &target.headers {
        req = req.header(name.as_str(), value.as_str());
    }
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
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(|s| s.min(MAX_RETRY_AFTER_S));
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

/// One endpoint's deliveries: waiting ones by (not_before, seq, name), and
/// how many are on their way.
#[derive(Default)]
struct Lane {
    waiting: BTreeSet<(u64, u64, String)>,
    busy: usize,
    /// Acceptance order of the deliveries on their way, to keep it on retry.
    seqs: HashMap<String, u64>,
}

/// What the worker keeps in memory per delivery (keyed by record name).
struct Meta {
    endpoint: String,
    not_before: u64,
    seq: u64,
}

/// The outbox: accepts payloads, and (through [`Outbox::run`]) delivers them.
pub struct Outbox {
    records: Records,
    dead: Records,
    live: Arc<Live>,
    started: Instant,
    seq: AtomicU64,
    tx: Sender<(String, Meta)>,
    rx: Mutex<Option<Receiver<(String, Meta)>>>,
    /// Deliveries left from before a restart, read at start-up.
    left: Mutex<Vec<(String, Delivery)>>,
    stats: Arc<Stats>,
    /// Endpoints that answered 410 Gone, until the config is loaded again.
    pub disabled: Mutex<HashSet<String>>,
    /// Per-endpoint delivery figures.
    pub figures: Figures,
}

/// What a finished attempt reports to the worker.
struct Done {
    name: String,
    outcome: Outcome,
    elapsed_us: u64,
    retry: bool,
}

impl Outbox {
    pub fn open(
        state_dir: &Path,
        live: Arc<Live>,
        started: Instant,
        stats: Arc<Stats>,
    ) -> Result<Outbox> {
        let records = Records::open(state_dir, "outbox")?;
        let dead = Records::open(state_dir, "dead")?;
        // Damaged records go to damaged/ at start-up, before anything is
        // sent; dead letters too, rather than trip up `dlq` later.
        let _ = dead.load_all::<Delivery>()?;
        let left = records.load_all::<Delivery>()?;
        let (tx, rx) = smol::channel::unbounded();
        Ok(Outbox {
            records,
            dead,
            live,
            started,
            seq: AtomicU64::new(0),
            tx,
            rx: Mutex::new(Some(rx)),
            left: Mutex::new(left),
            stats,
            disabled: Mutex::new(HashSet::new()),
            figures: Figures::default(),
        })
    }

    fn cfg(&self) -> Config {
        self.live.get().webhook.clone()
    }

    /// Whether any payload can go anywhere.
    pub fn active(&self) -> bool {
        let c = self.live.get();
        c.webhook.enabled && !endpoint::targets(&c.webhook).is_empty()
    }

    /// The figures of every configured endpoint (and of any other tried
    /// since the start), in the configuration's order.
    pub fn endpoint_figures(&self) -> Vec<(String, Endpoint)> {
        let c = self.live.get();
        let urls: Vec<String> = if c.webhook.enabled {
            endpoint::targets(&c.webhook)
                .into_iter()
                .map(|t| t.url)
                .collect()
        } else {
            Vec::new()
        };
        self.figures.snapshot(&urls)
    }

    /// Whether webhooks are on (reports are built only then).
    pub fn enabled(&self) -> bool {
        self.live.get().webhook.enabled
    }

    pub fn info(&self) -> BridgeInfo {
        BridgeInfo {
            uptime_seconds: self.started.elapsed().as_secs(),
        }
    }

    /// Sends to every endpoint again, including those disabled by 410
    /// (after a reload of the configuration).
    pub fn enable_all(&self) {
        let was: Vec<String> = self
            .disabled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .collect();
        for e in was {
            log::info!(
                "webhooks to {} are enabled again (configuration reloaded)",
                redact_url(&e)
            );
        }
    }

    /// Puts `payload` on disk for every endpoint that takes its type, then
    /// hands it to the worker. `source` names what it reports; a report
    /// already queued (or dead) for an endpoint is not queued again, so a
    /// hand-off replayed after a crash neither skips nor doubles it.
    pub fn enqueue(&self, kind: &str, source: &str, payload: &Value) -> Result<()> {
        self.enqueue_all(&[(kind, source, payload)])
    }

    /// [`Outbox::enqueue`] for several reports at once: their records are
    /// written at the cost of about one fdatasync and one directory fsync
    /// (group commit after a burst of sends); the worker hears of them
    /// only once all are on disk.
    pub fn enqueue_all(&self, reports: &[(&str, &str, &Value)]) -> Result<()> {
        let c = self.live.get();
        let w = &c.webhook;
        if !w.enabled || reports.is_empty() {
            return Ok(());
        }
        let now = clock::now_ms();
        let targets = endpoint::targets(w);
        let mut records: Vec<(String, Delivery)> = Vec::new();
        for &(kind, source, payload) in reports {
            let id = delivery_id(kind, source);
            let (mut plain, mut standard) = (None, None);
            for target in targets.iter().filter(|t| t.takes(kind)) {
                let endpoint = &target.url;
                let name = record_name(&id, endpoint);
                if self.records.exists(&name)
                    || self.dead.exists(&name)
                    || records.iter().any(|(n, _)| *n == name)
                {
                    continue;
                }
                let body = match target.format {
                    Format::Cctelegram => plain.get_or_insert_with(|| to_js_json(payload)),
                    Format::Standard => {
                        standard.get_or_insert_with(|| payload::standard_envelope(kind, payload))
                    }
                }
                .clone();
                let d = Delivery::new(id.clone(), kind, endpoint.clone(), body, now);
                records.push((name, d));
            }
        }
        if records.is_empty() {
            return Ok(());
        }
        let refs: Vec<(String, &Delivery)> = records.iter().map(|(n, d)| (n.clone(), d)).collect();
        self.records.put_all_unsynced(&refs)?;
        self.records.sync()?;
        for (name, d) in records {
            Stats::bump(&self.stats.webhooks_queued);
            let meta = Meta {
                endpoint: d.endpoint,
                not_before: 0,
                seq: self.seq.fetch_add(1, Ordering::Relaxed),
            };
            let _ = self.tx.try_send((name, meta));
        }
        Ok(())
    }

    /// Moves a delivery to the dead letter queue: the dead letter first,
    /// then the outbox record goes.
    fn bury(&self, name: &str, mut d: Delivery, error: String) -> Result<()> {
        d.last_error = Some(error);
        d.died_ms = Some(clock::now_ms());
        self.dead.put(name, &d)?;
        self.records.remove(name)?;
        Stats::bump(&self.stats.webhooks_dead);
        Ok(())
    }

    /// Delivers until `stop`, then lets the attempts in flight end.
    pub async fn run(self: Arc<Self>, stop: Arc<Stop>) -> Result<()> {
        let Some(new) = self.rx.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return Ok(());
        };
        let mut agent_for = self.cfg().timeout_seconds;
        let mut agent = Arc::new(crate::net::agent(Duration::from_secs(agent_for)));
        let mut lanes: HashMap<String, Lane> = HashMap::new();
        let mut where_is: HashMap<String, String> = HashMap::new();
        let left = std::mem::take(&mut *self.left.lock().unwrap_or_else(|p| p.into_inner()));
        if !left.is_empty() {
            log::info!("{} webhook deliveries pending from before", left.len());
        }
        for (name, d) in left {
            let seq = self.seq.fetch_add(1, Ordering::Relaxed);
            where_is.insert(name.clone(), d.endpoint.clone());
            lanes
                .entry(d.endpoint)
                .or_default()
                .waiting
                .insert((d.not_before, seq, name));
        }
        let (done_tx, done_rx) = smol::channel::unbounded::<Done>();
        let mut in_flight = 0;
        loop {
            let stopping = stop.is_set();
            if stopping && in_flight == 0 {
                return Ok(());
            }
            let cfg = self.cfg();
            if cfg.timeout_seconds != agent_for {
                agent_for = cfg.timeout_seconds;
                agent = Arc::new(crate::net::agent(Duration::from_secs(agent_for)));
            }
            let max = cfg.max_in_flight.max(1) as usize;
            // One endpoint may use all slots but one, so another always gets through.
            let per_endpoint = if max > 1 { max - 1 } else { 1 };
            let now = clock::now_ms();
            let disabled = self
                .disabled
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let mut next_due: Option<u64> = None;
            for (_, lane) in lanes
                .iter_mut()
                .filter(|(e, _)| !stopping && !disabled.contains(*e))
            {
                while in_flight < max && lane.busy < per_endpoint {
                    let Some(&(at, seq, ref name)) = lane.waiting.first() else {
                        break;
                    };
                    if at > now {
                        break;
                    }
                    let name = name.clone();
                    lane.waiting.remove(&(at, seq, name.clone()));
                    let mut d = match self.records.get::<Delivery>(&name) {
                        Ok(Some(d)) => d,
                        Ok(None) => {
                            where_is.remove(&name);
                            continue;
                        }
                        Err(e) => {
                            log::error!(
                                "webhook delivery {name} cannot be read, retrying later: {e}"
                            );
                            lane.waiting.insert((now + SETTLE_RETRY_MS, seq, name));
                            break;
                        }
                    };
                    let now_s = now / 1000;
                    if d.first_attempt.is_none() {
                        d.first_attempt = Some(now_s);
                    }
                    lane.busy += 1;
                    lane.seqs.insert(name.clone(), seq);
                    in_flight += 1;
                    let (agent, target, done, stats) = (
                        agent.clone(),
                        endpoint::target_for(&cfg, &d.endpoint),
                        done_tx.clone(),
                        self.stats.clone(),
                    );
                    let max_retries = cfg.retry.max_attempts;
                    crate::pool::unblock(move || {
                        let started = Instant::now();
                        let outcome = attempt(&agent, &target, &d, max_retries, now_s);
                        let elapsed = started.elapsed();
                        stats.webhook_request.observe(elapsed);
                        let _ = done.send_blocking(Done {
                            name,
                            outcome,
                            elapsed_us: elapsed.as_micros() as u64,
                            retry: d.attempts > 0,
                        });
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
                Done(Done),
                Timer,
            }
            let new_f = async { new.recv().await.map(Wake::New).unwrap_or(Wake::Timer) };
            let done_f = async { done_rx.recv().await.map(Wake::Done).unwrap_or(Wake::Timer) };
            // A reload may enable a disabled endpoint: look again now and then.
            let wait = match next_due {
                Some(at) => Duration::from_millis(at.saturating_sub(clock::now_ms())),
                None if disabled.is_empty() => Duration::MAX,
                None => Duration::from_secs(1),
            };
            let timer = async {
                if wait == Duration::MAX {
                    std::future::pending::<()>().await;
                }
                smol::Timer::after(wait).await;
                Wake::Timer
            };
            let stopped = async {
                if stopping {
                    std::future::pending::<()>().await;
                }
                stop.wait().await;
                Wake::Timer
            };
            match new_f.or(done_f).or(timer).or(stopped).await {
                Wake::New((name, m)) => {
                    // Queued between start-up and now: already in a lane.
                    if where_is.contains_key(&name) {
                        continue;
                    }
                    where_is.insert(name.clone(), m.endpoint.clone());
                    lanes.entry(m.endpoint).or_default().waiting.insert((
                        m.not_before,
                        m.seq,
                        name,
                    ));
                }
                Wake::Timer => {}
                Wake::Done(first) => {
                    // Attempts that ended together are settled together:
                    // their removals share one directory fsync.
                    let mut ended = vec![first];
                    while let Ok(d) = done_rx.try_recv() {
                        ended.push(d);
                    }
                    let mut removed = false;
                    for done in ended {
                        in_flight -= 1;
                        let name = done.name.clone();
                        let next = match self.settle(done, &cfg, &mut removed) {
                            Ok(n) => n,
                            Err(e) => {
                                // Nothing is dropped: the record stays and the
                                // attempt is made again.
                                log::error!(
                                    "cannot record the outcome of webhook delivery {name}, retrying in {} s: {e}",
                                    SETTLE_RETRY_MS / 1000
                                );
                                self.stats.state_error();
                                Some(clock::now_ms() + SETTLE_RETRY_MS)
                            }
                        };
                        let Some(endpoint) = where_is.get(&name).cloned() else {
                            continue;
                        };
                        let lane = lanes.entry(endpoint).or_default();
                        lane.busy = lane.busy.saturating_sub(1);
                        let seq = lane.seqs.remove(&name).unwrap_or(0);
                        match next {
                            Some(at) => {
                                lane.waiting.insert((at, seq, name));
                            }
                            None => {
                                where_is.remove(&name);
                            }
                        }
                    }
                    if removed {
                        // A removal lost in a crash is a delivery repeated
                        // with its id (at least once), never a loss.
                        if let Err(e) = self.records.sync() {
                            log::warn!("cannot sync the outbox after deliveries: {e}");
                        }
                    }
                }
            }
        }
    }

    /// Records an attempt's outcome; returns the next attempt time if it is
    /// to be tried again.
    /// A delivered record is removed without a directory fsync, and
    /// `removed` set: the caller syncs once for all it settled.
    fn settle(&self, done: Done, cfg: &Config, removed: &mut bool) -> Result<Option<u64>> {
        let name = done.name.as_str();
        let Some(mut d) = self.records.get::<Delivery>(name)? else {
            log::error!("webhook delivery {name} vanished before its outcome was recorded");
            return Ok(None);
        };
        let id = d.id.clone();
        d.attempts += 1;
        if d.first_attempt.is_none() {
            d.first_attempt = Some(clock::now_ms() / 1000);
        }
        let outcome = done.outcome;
        // Counted once per attempt, before the bookkeeping that may fail and
        // be done again.
        let counted = match &outcome {
            Outcome::Delivered(_) => Attempt::Delivered,
            Outcome::Retry { error, .. } => Attempt::Failed {
                error: error.clone(),
                dead: u64::from(d.attempts - 1) >= cfg.retry.max_attempts,
            },
            Outcome::Refused { error, .. } | Outcome::Gone(error) => Attempt::Failed {
                error: error.clone(),
                dead: true,
            },
        };
        self.figures.record(
            &d.endpoint,
            done.retry,
            done.elapsed_us,
            counted,
            clock::now_ms(),
        );
        let shown = redact_url(&d.endpoint);
        match outcome {
            Outcome::Delivered(status) => {
                // At least once: if this removal is lost in a crash, the
                // receiver sees the same delivery id again.
                self.records.remove_unsynced(name)?;
                *removed = true;
                Stats::bump(&self.stats.webhooks_delivered);
                log::info!(
                    "webhook {} {id} delivered to {shown} ({status}) after {} attempt(s)",
                    d.kind,
                    d.attempts
                );
                Ok(None)
            }
            Outcome::Retry { error, retry_after } => {
                let retries_done = d.attempts - 1;
                if u64::from(retries_done) >= cfg.retry.max_attempts {
                    let what = format!(
                        "webhook {} {id} to {shown} failed after {} attempts",
                        d.kind, d.attempts
                    );
                    self.bury(name, d, error.clone())?;
                    log::warn!("{what}, moved to the dead letter queue: {error}");
                    return Ok(None);
                }
                let wait = match retry_after {
                    Some(s) => s.min(MAX_RETRY_AFTER_S) * 1000,
                    None => retry_delay_ms(cfg, d.attempts, jitter()),
                };
                d.not_before = clock::now_ms() + wait;
                d.last_error = Some(error.clone());
                self.records.put(name, &d)?;
                Stats::bump(&self.stats.webhook_retries);
                log::warn!(
                    "webhook {} {id} to {shown} failed (attempt {}), retrying in {:.1} s: {error}",
                    d.kind,
                    d.attempts,
                    wait as f64 / 1000.0
                );
                Ok(Some(d.not_before))
            }
            Outcome::Refused { error, .. } => {
                let what = format!("webhook {} {id} refused by {shown}", d.kind);
                self.bury(name, d, error.clone())?;
                log::warn!("{what}, moved to the dead letter queue: {error}");
                Ok(None)
            }
            Outcome::Gone(error) => {
                log::error!(
                    "{shown} answered 410 Gone: no more webhooks go there until the configuration is reloaded (SIGHUP) or cctelegram restarts"
                );
                self.disabled
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(d.endpoint.clone());
                self.bury(name, d, error)?;
                Ok(None)
            }
        }
    }
}

/// A dead letter that cannot be read, as `dlq list` shows it.
#[derive(Debug, Clone)]
pub struct Damaged {
    pub name: String,
    pub problem: String,
}

/// Dead letters by record name, and the damaged entries.
pub type Listing = (Vec<(String, Delivery)>, Vec<Damaged>);

/// The dead letter queue, for `cctelegram dlq`.
pub struct DeadLetters {
    records: Records,
}

impl DeadLetters {
    pub fn new(state_dir: &Path) -> Result<DeadLetters> {
        Ok(DeadLetters {
            records: Records::open(state_dir, "dead")?,
        })
    }

    /// Every dead delivery, oldest first, and the entries that cannot be
    /// read (left for the daemon to move aside; this only looks).
    pub fn list(&self) -> Result<Listing> {
        let mut out = Vec::new();
        let mut damaged = Vec::new();
        for name in self.records.names()? {
            let path = self.records.path(&name);
            match std::fs::read(&path) {
                Ok(bytes) => match serde_json::from_slice::<Delivery>(&bytes) {
                    Ok(d) => out.push((name, d)),
                    Err(e) => damaged.push(Damaged {
                        name,
                        problem: format!("damaged ({e}): {}", store::preview(&bytes)),
                    }),
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(path, e)),
            }
        }
        out.sort_by_key(|(_, d)| d.died_ms.unwrap_or(d.created_ms));
        Ok((out, damaged))
    }

    /// The entries `which` names: an id, a unique id prefix, or `--all`.
    pub fn select(&self, which: &str) -> Result<Vec<(String, Delivery)>> {
        let (all, _) = self.list()?;
        if which == "--all" {
            return Ok(all);
        }
        let exact: Vec<_> = all.iter().filter(|(_, d)| d.id == which).cloned().collect();
        if !exact.is_empty() {
            return Ok(exact);
        }
        let found: Vec<_> = all
            .into_iter()
            .filter(|(_, d)| d.id.starts_with(which))
            .collect();
        let ids: HashSet<&str> = found.iter().map(|(_, d)| d.id.as_str()).collect();
        match ids.len() {
            1 => Ok(found),
            0 => Err(Error::Usage(format!(
                "no dead letter with id {which}; see 'cctelegram dlq list'"
            ))),
            n => Err(Error::Usage(format!(
                "{n} dead letters start with {which}; give more of the id"
            ))),
        }
    }

    pub fn purge(&self, name: &str) -> Result<()> {
        self.records.remove(name)
    }

    /// Sends a dead delivery once more, with a fresh timestamp and
    /// signature. Delivered: it leaves the queue. Otherwise it stays, with
    /// the new error.
    pub fn replay(&self, name: &str, mut d: Delivery, cfg: &Config) -> Result<Outcome> {
        let agent = crate::net::agent(Duration::from_secs(cfg.timeout_seconds));
        let outcome = attempt(
            &agent,
            &endpoint::target_for(cfg, &d.endpoint),
            &d,
            cfg.retry.max_attempts,
            clock::now_ms() / 1000,
        );
        d.attempts += 1;
        match &outcome {
            Outcome::Delivered(_) => self.purge(name)?,
            Outcome::Retry { error, .. }
            | Outcome::Refused { error, .. }
            | Outcome::Gone(error) => {
                d.last_error = Some(error.clone());
                self.records.put(name, &d)?;
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
