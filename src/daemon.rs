//! `cctelegram run`: wires the watcher, the spool, the sender and the
//! poller together.

use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use smol::future::FutureExt as _;
use smol::LocalExecutor;

use crate::approvals::Approvals;
use crate::clock;
use crate::config::Config;
use crate::error::Result;
use crate::health::Monitor;
use crate::http;
use crate::ingest::Ingest;
use crate::responses::Responses;
use crate::spool::Spool;
use crate::stats::Stats;
use crate::telegram::api::Api;
use crate::telegram::pace::Pacer;
use crate::telegram::poll::{self, Poller};
use crate::telegram::send::Sender;
use crate::watch;
use crate::webhook::deliver::Outbox;

/// Runs the daemon until a fatal error. Everything it accepted is on disk,
/// so stopping it at any moment (even `kill -9`) loses nothing.
pub fn run(cfg: Config) -> Result<()> {
    let started = Instant::now();
    let stats = Arc::new(Stats::default());
    let spool = Arc::new(Spool::open(&cfg.paths.state_dir, clock::now_ms())?);
    let responses = Arc::new(Responses::open(&cfg.paths.responses_dir, spool.offset())?);
    let approvals = Arc::new(Approvals::new(spool.buttons.clone()));
    let chats = cfg.target_chats();
    let (tx, rx) = smol::channel::unbounded();
    let ingest = Arc::new(Ingest::new(
        &cfg.paths.events_dir,
        spool.clone(),
        approvals.clone(),
        chats.clone(),
        cfg.limits.max_event_bytes,
        stats.clone(),
        tx,
    )?);
    let api = Arc::new(Api::new(&cfg.telegram.api_url, &cfg.telegram.bot_token));
    let outbox = Arc::new(Outbox::open(
        &cfg.paths.state_dir,
        &cfg.webhook,
        started,
        stats.clone(),
    )?);
    let (expiry_tx, expiry_rx) = smol::channel::bounded(1);
    let sender = Sender::new(
        api.clone(),
        spool.clone(),
        approvals.clone(),
        outbox.clone(),
        expiry_tx,
        Pacer::new(&cfg.limits),
        cfg.telegram.parse_mode,
        stats.clone(),
    )?;
    let poller = Poller {
        api: api.clone(),
        spool: spool.clone(),
        approvals: approvals.clone(),
        responses: responses.clone(),
        outbox: outbox.clone(),
        allowed_users: cfg.telegram.allowed_users.clone(),
        mode: cfg.telegram.parse_mode,
        poll_timeout: cfg.telegram.poll_timeout_seconds,
        stats: stats.clone(),
        started,
    };
    log::info!(
        "cctelegram {} watching {} for {} chat(s); {} send(s) queued from before",
        env!("CARGO_PKG_VERSION"),
        cfg.paths.events_dir.display(),
        chats.len(),
        Stats::get(&stats.backlog),
    );
    let hold_spool = spool.clone();
    let monitor = Arc::new(Monitor {
        api: api.clone(),
        stats: stats.clone(),
        outbox: outbox.clone(),
        spool_hold: Box::new(move || hold_spool.hold()),
        state_dir: cfg.paths.state_dir.clone(),
        interval: Duration::from_secs(cfg.health.interval_seconds),
        memory_threshold_mb: cfg.health.memory_threshold_mb,
        started,
        latest: Mutex::new(None),
    });
    let expiry = poll::expire(
        api,
        approvals,
        responses,
        cfg.telegram.parse_mode,
        expiry_rx,
    );
    // One thread runs every task; blocking work goes to smol's pool.
    let ex = Rc::new(LocalExecutor::new());
    let http = http::serve(ex.clone(), &cfg.health.listen, monitor.clone());
    smol::block_on(
        ex.run(
            watch::run(ingest)
                .or(sender.run(rx))
                .or(poller.run())
                .or(expiry)
                .or(outbox.run())
                .or(monitor.run())
                .or(http),
        ),
    )
}
