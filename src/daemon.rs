//! `cctelegram run`: wires the watcher, the spool, the sender and the
//! poller together, and answers signals.
//!
//! No task's error ends the daemon: each waits its trouble out and says so
//! in the log and in health. It exits for a bad configuration at start-up,
//! or for SIGTERM/SIGINT, after the send and the webhook attempts in flight
//! have finished (at most [`STOP_GRACE`]). SIGHUP loads the configuration
//! again.

use std::path::PathBuf;
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
use crate::notify::Controls;
use crate::reload::Live;
use crate::responses::Responses;
use crate::signals::{Signal, Signals, Stop};
use crate::spool::Spool;
use crate::stats::Stats;
use crate::store::Records;
use crate::telegram::api::Api;
use crate::telegram::poll::{self, Poller};
use crate::telegram::send::Sender;
use crate::watch;
use crate::webhook::deliver::Outbox;

/// How long SIGTERM waits for what is in flight; the contract's bound is
/// 10 seconds, and everything is on disk anyway.
const STOP_GRACE: Duration = Duration::from_secs(8);

/// Runs the daemon until SIGTERM or SIGINT. Everything it accepted is on
/// disk, so stopping it at any moment (even `kill -9`) loses nothing.
pub fn run(cfg: Config, path: Option<PathBuf>) -> Result<()> {
    // Before any thread exists, so that every thread inherits the mask.
    let signals = Signals::new()?;
    let started = Instant::now();
    let stats = Arc::new(Stats::default());
    let state_dir = cfg.paths.state_dir.clone();
    let spool = Arc::new(Spool::open(&state_dir, clock::now_ms())?);
    let responses = Arc::new(Responses::open(&cfg.paths.responses_dir, spool.offset())?);
    let approvals = Arc::new(Approvals::new(Records::open(&state_dir, "buttons")?));
    let controls = Arc::new(Controls::open(&state_dir));
    let chats = cfg.target_chats();
    let api = Arc::new(Api::new(&cfg.telegram.api_url, &cfg.telegram.bot_token));
    let health_interval = Duration::from_secs(cfg.health.interval_seconds);
    let memory_threshold_mb = cfg.health.memory_threshold_mb;
    let listen = cfg.health.listen.clone();
    let events_dir = cfg.paths.events_dir.clone();
    let fleet = crate::fleet::start(&cfg.mqtt, &state_dir)?;
    let live = Arc::new(Live::new(cfg, path));
    let stop = Arc::new(Stop::default());
    let (tx, rx) = smol::channel::unbounded();
    let ingest = Arc::new(Ingest::new(
        &events_dir,
        spool.clone(),
        approvals.clone(),
        live.clone(),
        stats.clone(),
        tx.clone(),
    )?);
    let outbox = Arc::new(Outbox::open(
        &state_dir,
        live.clone(),
        started,
        stats.clone(),
    )?);
    let (expiry_tx, expiry_rx) = smol::channel::bounded(1);
    let sender = Sender::new(
        api.clone(),
        spool.clone(),
        approvals.clone(),
        outbox.clone(),
        live.clone(),
        expiry_tx,
        stats.clone(),
        controls.clone(),
    )?;
    let hold_spool = spool.clone();
    let monitor = Arc::new(Monitor {
        api: api.clone(),
        stats: stats.clone(),
        outbox: outbox.clone(),
        spool_hold: Box::new(move || hold_spool.hold()),
        state_dir: state_dir.clone(),
        interval: health_interval,
        memory_threshold_mb,
        started,
        latest: Mutex::new(None),
        controls: controls.clone(),
        approvals: approvals.clone(),
        live: live.clone(),
    });
    let in_long_poll = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poller = Poller {
        api: api.clone(),
        spool: spool.clone(),
        approvals: approvals.clone(),
        responses: responses.clone(),
        outbox: outbox.clone(),
        live: live.clone(),
        stats: stats.clone(),
        started,
        stop: stop.clone(),
        controls: controls.clone(),
        wake: tx.clone(),
        health: (!crate::fleet::is_device()).then(|| {
            let rhythm = monitor.rhythm();
            (monitor.clone(), Mutex::new(rhythm))
        }),
        in_long_poll: in_long_poll.clone(),
    };
    log::info!(
        "cctelegram {} watching {} for {} chat(s); {} send(s) queued from before",
        env!("CARGO_PKG_VERSION"),
        events_dir.display(),
        chats.len(),
        Stats::get(&stats.backlog),
    );
    if !clock::plausible(clock::now_ms()) {
        log::warn!(
            "the system clock reads {}: no real-time clock, or NTP has not synced yet; \
             TLS to Telegram fails until it has, and every send waits on disk meanwhile",
            clock::iso8601(clock::now_ms())
        );
    }
    // Fleet mode: a device sends to the broker instead of Telegram; a hub
    // also serves every device's events and answers.
    let device = match &fleet {
        Some(f) if f.role == crate::fleet::settings::Role::Device => {
            Some(crate::fleet::device::Device {
                fleet: f.clone(),
                live: live.clone(),
                spool: spool.clone(),
                responses: responses.clone(),
                answered: Records::open(&state_dir, "fleet_answered")?,
                stats: stats.clone(),
            })
        }
        _ => None,
    };
    let hub = match &fleet {
        Some(f) if f.role == crate::fleet::settings::Role::Hub => {
            let hub = crate::fleet::hub::Hub::new(
                f.clone(),
                live.clone(),
                events_dir.clone(),
                &state_dir,
            )?;
            hub.forward_responses(&responses);
            Some(hub)
        }
        _ => None,
    };
    let expiry = poll::expire(
        api,
        approvals,
        responses,
        outbox.clone(),
        live.clone(),
        expiry_rx,
        stop.clone(),
    );
    // One thread runs every task; blocking work goes to crate::pool.
    let ex = Rc::new(LocalExecutor::new());
    let http = http::serve(ex.clone(), &listen, monitor.clone());
    // The watcher and the sender share the pipeline thread, which sleeps in
    // poll(2) on the inotify fd (`wake::block_on`): a lone event wakes the
    // one thread that reads, sends and syncs it, with no hand-off. (A fleet
    // device publishes to its broker from the executor instead.)
    let watch_stop = stop.clone();
    let watching = watch::run(ingest, watch_stop);
    let (sending, pipeline) = match device {
        Some(d) => (
            ex.spawn(d.run(rx, stop.clone())).boxed_local(),
            on_thread("watcher", watching.boxed()),
        ),
        None => {
            let sender_stop = stop.clone();
            let both = async move {
                let (w, s) = smol::future::zip(watching, sender.run(rx, sender_stop)).await;
                w.and(s)
            };
            (
                std::future::ready(Ok(())).boxed_local(),
                on_thread("pipeline", both.boxed()),
            )
        }
    };
    let is_device = fleet
        .as_ref()
        .is_some_and(|f| f.role == crate::fleet::settings::Role::Device);
    // The poller has a thread of its own too, and runs the health checks
    // between its long polls; a fleet device, which has no poller, checks
    // health on a timer.
    let (polling, health) = if is_device {
        (None, monitor.clone().run(stop.clone()).boxed_local())
    } else {
        (
            Some(on_thread("poll", poller.run().boxed())),
            std::future::pending().boxed_local(),
        )
    };
    let expiry = if is_device {
        std::future::pending().boxed_local()
    } else {
        expiry.boxed_local()
    };
    let hubbing = match hub {
        Some(h) => h.run(stop.clone()).boxed_local(),
        None => std::future::pending().boxed_local(),
    };
    let delivering = ex.spawn(outbox.clone().run(stop.clone()));
    let control = async {
        loop {
            match signals.next().await {
                Ok(Signal::Reload) => reload(&live, &outbox),
                Ok(Signal::Stop(signo)) => {
                    let name = if signo == libc::SIGINT {
                        "SIGINT"
                    } else {
                        "SIGTERM"
                    };
                    log::info!("{name}: finishing what is in flight, then stopping");
                    return Ok(());
                }
                Err(e) => {
                    log::error!("cannot read signals: {e}");
                    std::future::pending::<()>().await;
                }
            }
        }
    };
    let background = async {
        let _ = expiry.or(hubbing).or(health).or(http).await;
        // Those end only on stop; stay here until the signal branch wins.
        std::future::pending::<Result<()>>().await
    };
    smol::block_on(ex.run(async {
        control.or(background).await?;
        stop.set();
        let finished = async {
            let _ = sending.await;
            let _ = pipeline.await;
            let _ = delivering.await;
            // The updates of a long poll in flight are not confirmed: it
            // is not waited for. Anything else the poller does is.
            if let Some(p) = polling {
                if !in_long_poll.load(std::sync::atomic::Ordering::SeqCst) {
                    let _ = p.await;
                }
            }
            true
        };
        let late = async {
            smol::Timer::after(STOP_GRACE).await;
            false
        };
        if !finished.or(late).await {
            log::warn!(
                "stopping with work still in flight; it is on disk and resumes at the next start"
            );
        }
        log::info!("stopped");
        Ok(())
    }))
}

/// Runs `work` on a thread of its own, inside [`crate::wake::block_on`];
/// the returned future ends when it does.
fn on_thread(name: &str, work: smol::future::Boxed<Result<()>>) -> smol::future::Boxed<Result<()>> {
    let (tx, rx) = smol::channel::bounded(1);
    let spawned = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let out = crate::wake::block_on(work)
                .map_err(|e| crate::error::Error::Failed(format!("cannot make an eventfd: {e}")))
                .and_then(|r| r);
            let _ = tx.try_send(out);
        });
    if let Err(e) = spawned {
        log::error!("cannot start the {name} thread: {e}");
    }
    async move { rx.recv().await.unwrap_or(Ok(())) }.boxed()
}

/// SIGHUP: the new configuration for what is sent next, or the old one if
/// the new one does not load.
fn reload(live: &Live, outbox: &Outbox) {
    match live.reload(&|k| std::env::var(k).ok()) {
        Ok(notes) => {
            for n in notes {
                log::warn!("{n}");
            }
            outbox.enable_all();
            let c = live.get();
            log::info!(
                "configuration reloaded: {} chat(s), {} webhook endpoint(s)",
                c.target_chats().len(),
                crate::webhook::endpoint::targets(&c.webhook).len()
            );
        }
        Err(e) => log::error!("configuration not reloaded, the old one stays in force: {e}"),
    }
}
