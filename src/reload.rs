//! The configuration in force, and SIGHUP replacing it.
//!
//! Every task reads the settings it needs from [`Live`] when it needs them,
//! so a reload takes effect for what is sent next without stopping
//! anything (CONTRACT section 1). What the daemon bound or opened at
//! start-up (paths, the bot token, `[health].listen`) stays as it was until
//! a restart, and the log says so. A file that does not load leaves the old
//! settings in force.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::config::{self, Config};
use crate::error::Result;

pub struct Live {
    current: RwLock<Arc<Config>>,
    generation: AtomicU64,
    /// Where the settings came from, to read again on SIGHUP.
    path: Option<PathBuf>,
}

impl Live {
    pub fn new(cfg: Config, path: Option<PathBuf>) -> Live {
        Live {
            current: RwLock::new(Arc::new(cfg)),
            generation: AtomicU64::new(0),
            path,
        }
    }

    /// The settings in force now.
    pub fn get(&self) -> Arc<Config> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Bumped by every reload, so a task can notice one cheaply.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Loads the file again (with the environment, as at start-up) and puts
    /// it in force. On error the old settings stay and the error is
    /// returned for the log.
    pub fn reload(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<Vec<String>> {
        let (new, mut notes) = config::load(self.path.as_deref(), env, true)?;
        let old = self.get();
        notes.extend(needs_restart(&old, &new));
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(new);
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(notes)
    }
}

/// What changed that only a restart applies (pure).
pub fn needs_restart(old: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let mut note = |changed: bool, what: &str| {
        if changed {
            out.push(format!(
                "{what} changed; it takes effect when cctelegram is restarted"
            ));
        }
    };
    note(
        old.paths.events_dir != new.paths.events_dir,
        "paths.events_dir",
    );
    note(
        old.paths.responses_dir != new.paths.responses_dir,
        "paths.responses_dir",
    );
    note(
        old.paths.state_dir != new.paths.state_dir,
        "paths.state_dir",
    );
    note(
        old.telegram.bot_token != new.telegram.bot_token,
        "telegram.bot_token",
    );
    note(
        old.telegram.api_url != new.telegram.api_url,
        "telegram.api_url",
    );
    note(old.health.listen != new.health.listen, "health.listen");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_only_settings_are_named() {
        let old = Config::default();
        let mut new = Config::default();
        new.telegram.chat_ids = vec!["5".into()];
        assert!(needs_restart(&old, &new).is_empty());
        new.health.listen = "127.0.0.1:9".into();
        new.telegram.bot_token = "1:x".into();
        let notes = needs_restart(&old, &new);
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes.iter().all(|n| !n.contains("1:x")), "never the token");
    }
}
