//! The floor: the least any bridge from event files to Telegram can do.
//!
//! inotify on a directory and one kept-alive HTTP connection (ureq, the
//! same client the daemon uses), a fixed `sendMessage` for every file
//! renamed in (its text is the file's name, so the benchmark can tell the
//! messages apart). No parsing, no state, no durability: what cctelegram
//! costs on top of this is what its promises cost. The benchmark starts
//! its own executable again with [`DIR_VAR`] and [`URL_VAR`] set, so the
//! floor is a process of its own, measured like the daemon.

use std::time::Duration;

use inotify::{Inotify, WatchMask};

/// The directory the floor watches.
pub const DIR_VAR: &str = "CCT_BENCH_FLOOR_DIR";
/// The full `sendMessage` URL.
pub const URL_VAR: &str = "CCT_BENCH_FLOOR_URL";

/// Runs the floor and never returns, if this process was started as it.
pub fn run_if_asked() {
    let (Some(dir), Ok(url)) = (std::env::var_os(DIR_VAR), std::env::var(URL_VAR)) else {
        return;
    };
    // Dies with the benchmark, however the benchmark ends.
    // SAFETY: prctl with an integer argument, no memory involved.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    }
    let mut ino = Inotify::init().expect("inotify_init1");
    ino.watches()
        .add(&dir, WatchMask::MOVED_TO)
        .expect("watch the floor's directory");
    let config = ureq::Agent::config_builder()
        .max_idle_age(Duration::from_secs(3600))
        .build();
    let agent = ureq::Agent::new_with_config(config);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let names: Vec<String> = ino
            .read_events_blocking(&mut buf)
            .expect("read inotify")
            .filter_map(|e| Some(e.name?.to_string_lossy().into_owned()))
            .filter(|n| n.ends_with(".json") && !n.starts_with('.'))
            .collect();
        for name in names {
            let body = format!(r#"{{"chat_id":111,"text":"{name}"}}"#);
            let mut answer = agent
                .post(&url)
                .header("content-type", "application/json")
                .send(body.as_bytes())
                .expect("sendMessage");
            let _ = answer.body_mut().read_to_vec();
        }
    }
}
