//! cctelegram: event files in, Telegram messages out, for machines left
//! running (a Raspberry Pi, a router, a build box).
//!
//! Programs drop JSON event files into a directory; the daemon sees them at
//! once (inotify), keeps them on disk until Telegram has taken them, and
//! sends each to every target chat. See `CONTRACT.md` for the outside view.
//!
//! Non-goals, held to on purpose:
//! - no database, no cache server: the state is small files (see [`spool`]);
//! - no web framework, no async HTTP client: blocking ureq on a thread pool
//!   is enough for one bot's traffic;
//! - no forking, no PID files, no log files: the init system does that;
//! - no Telegram features beyond notifications, buttons and replies.

pub mod alloc;
pub mod approvals;
pub mod attach;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod error;
pub mod event;
pub mod fleet;
pub mod health;
pub mod http;
pub mod ingest;
pub mod init;
pub mod mcp;
pub mod net;
pub mod notify;
pub mod page;
pub mod pool;
pub mod recent;
pub mod reload;
pub mod responses;
pub mod signals;
pub mod spool;
pub mod stats;
pub mod store;
pub mod telegram;
pub mod tz;
pub mod wake;
pub mod watch;
pub mod webhook;

pub use error::{Error, Result};
