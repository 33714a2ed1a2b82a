//! `cctelegram run`: wires the watcher, the spool and the sender together.

use std::sync::Arc;

use smol::future::FutureExt as _;

use crate::clock;
use crate::config::Config;
use crate::error::Result;
use crate::ingest::Ingest;
use crate::spool::{self, Spool};
use crate::stats::Stats;
use crate::telegram::api::Api;
use crate::telegram::pace::Pacer;
use crate::telegram::send::Sender;
use crate::watch;

/// Runs the daemon until a fatal error. Everything it accepted is on disk,
/// so stopping it at any moment (even `kill -9`) loses nothing.
pub fn run(cfg: Config) -> Result<()> {
    let stats = Arc::new(Stats::default());
    spool::ensure_dir(&cfg.paths.responses_dir)?;
    let spool = Arc::new(Spool::open(&cfg.paths.state_dir, clock::now_ms())?);
    let chats = cfg.target_chats();
    let ingest = Arc::new(Ingest::new(
        &cfg.paths.events_dir,
        spool.clone(),
        chats.clone(),
        cfg.limits.max_event_bytes,
        stats.clone(),
    )?);
    let api = Arc::new(Api::new(&cfg.telegram.api_url, &cfg.telegram.bot_token));
    let sender = Sender::new(
        api,
        spool.clone(),
        Pacer::new(&cfg.limits),
        cfg.telegram.parse_mode,
        stats.clone(),
    )?;
    log::info!(
        "cctelegram {} watching {} for {} chat(s); {} send(s) queued from before",
        env!("CARGO_PKG_VERSION"),
        cfg.paths.events_dir.display(),
        chats.len(),
        Stats::get(&stats.backlog),
    );
    let (tx, rx) = smol::channel::unbounded();
    smol::block_on(watch::run(ingest, tx).or(sender.run(rx)))
}
