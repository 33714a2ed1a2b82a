//! Secrets stay secret (issue 9): with a recognisable bot token and
//! webhook secrets, and everything failing that can fail (Telegram down,
//! a 401 from getMe, receivers down or broken, bad configs, a full disk),
//! neither the token nor any secret appears in what `run`, `status`,
//! `check-config` and `dlq list` print, nor in `/health` and `/metrics`.
//! State files are 0600 and state directories 0700; a config file that
//! group or others can read is a warning at start-up.

#[path = "support/daemon.rs"]
mod daemon;
#[path = "support/harness.rs"]
mod harness;
#[path = "support/receivers.rs"]
mod receivers;
#[path = "support/telegram.rs"]
mod telegram;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use daemon::{run_cli, Setup, TOKEN};
use harness::{
    approval, edit_config, free_port, http_get, notice, run_timed, start_polling, wait_fs,
    wait_message, ME, WAIT,
};
use receivers::Recorder;
use telegram::FakeTelegram;

/// The part of the token after the bot id: the secret part.
fn token_secret() -> &'static str {
    TOKEN.split_once(':').unwrap().1
}

const SECRET: &str = "whsec-SECRET-one-f00d";
const ROTATED_NEW: &str = "rot-SECRET-new-beef";
const ROTATED_OLD: &str = "rot-SECRET-old-cafe";
const ENDPOINT_SECRET: &str = "ep-SECRET-9a9a9a";
const HEADER_VALUE: &str = "hdr-SECRET-7777";

/// Every secret of the config, and the token's secret part.
fn needles() -> Vec<&'static str> {
    vec![
        token_secret(),
        SECRET,
        ROTATED_NEW,
        ROTATED_OLD,
        ENDPOINT_SECRET,
        HEADER_VALUE,
    ]
}

/// Fails naming `where_` and the secrets that `text` shows.
fn assert_no_secrets(where_: &str, text: &str) {
    let found: Vec<&str> = needles().into_iter().filter(|n| text.contains(n)).collect();
    if !found.is_empty() {
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| found.iter().any(|n| l.contains(n)))
            .take(5)
            .collect();
        panic!("{where_} shows secrets {found:?}:\n{}", lines.join("\n"));
    }
}

/// Webhook tables with every kind of secret: a secret, a rotation list, a
/// per-endpoint secret and a header.
fn secret_hooks(endpoints: &[String], per_endpoint: &str) -> String {
    let list: Vec<String> = endpoints.iter().map(|e| format!("{e:?}")).collect();
    format!(
        "[webhook]\nenabled = true\nsecret = {SECRET:?}\nsecrets = [{ROTATED_NEW:?}, {ROTATED_OLD:?}]\n\
         endpoints = [{}]\ntimeout_seconds = 2\n\n\
         [webhook.retry]\nmax_attempts = 1\ninitial_delay_ms = 100\nmax_delay_ms = 200\n\n\
         [[webhook.endpoint]]\nurl = {per_endpoint:?}\nsecrets = [{ENDPOINT_SECRET:?}]\n\
         headers = {{ Authorization = \"Bearer {HEADER_VALUE}\" }}\n",
        list.join(", ")
    )
}

/// What the tools and the health server show: (where, text) pairs.
fn tools_output(port: u16, config: &str, when: &str) -> Vec<(String, String)> {
    let mut shown = Vec::new();
    for path in ["/health", "/metrics", "/"] {
        if let Some((_, body)) = http_get(port, path) {
            shown.push((format!("GET {path} {when}"), body));
        }
    }
    for args in [
        vec!["status", "--config", config],
        vec!["status", "--config", config, "--json"],
        vec!["check-config", "--config", config],
        vec!["dlq", "--config", config, "list"],
    ] {
        let (_, out) = run_cli(&args, &[]);
        shown.push((format!("{} {when}", args.join(" ")), out));
    }
    // The token from the environment, too.
    let (_, out) = run_cli(
        &["check-config", "--config", config],
        &[("TELEGRAM_BOT_TOKEN", TOKEN)],
    );
    shown.push((format!("check-config with TELEGRAM_BOT_TOKEN {when}"), out));
    shown
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn no_secret_in_any_output_under_forced_failures() {
    let tg = FakeTelegram::start();
    let good = Recorder::start();
    let broken = Recorder::start();
    broken.respond_with(500, &[]);
    let mut gone = Recorder::start();
    let gone_url = gone.url("/hooks/gone");
    gone.stop(); // connection refused from now on
    let port = free_port();
    let endpoints = [
        good.url("/hooks/good"),
        broken.url("/hooks/broken"),
        gone_url,
    ];
    let setup = Setup::new(
        "secrets",
        &tg.url(),
        &[ME],
        &secret_hooks(&endpoints, &good.url("/hooks/per-endpoint")),
    );
    edit_config(
        &setup,
        "[health]\nlisten = \"\"\n",
        &format!("[health]\ninterval_seconds = 1\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    let config = setup.config.to_str().unwrap().to_string();
    let mut full_disk = false;
    if is_root() {
        fs::create_dir_all(&setup.state).unwrap();
        full_disk = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs"])
            .arg(&setup.state)
            .status()
            .is_ok_and(|s| s.success());
    } else {
        eprintln!("not root: the full-disk part is skipped (mounting a tmpfs needs root)");
    }
    struct Unmount(Option<std::path::PathBuf>);
    impl Drop for Unmount {
        fn drop(&mut self) {
            if let Some(p) = &self.0 {
                let _ = Command::new("umount").arg("-l").arg(p).status();
            }
        }
    }
    let _unmount = Unmount(full_disk.then(|| setup.state.clone()));

    let d = start_polling(&tg, &setup);
    setup.drop_event("a.json", &approval("sec_task", "secret approval"));
    wait_message(&tg, &d, "111", "secret approval", WAIT);
    // Receivers down and broken: retries, dead letters.
    wait_fs(WAIT, "a dead letter", Some(&d), || {
        !Setup::files(&setup.state.join("dead")).is_empty()
    });
    // Telegram down, then refusing the token.
    tg.set_down(true);
    setup.drop_event("b.json", &notice("sec-b", "while Telegram is down"));
    wait_fs(WAIT, "an error about Telegram being down", Some(&d), || {
        tg.calls("sendMessage")
            .iter()
            .any(|c| c.description.is_some())
    });
    tg.set_down(false);
    wait_message(&tg, &d, "111", "while Telegram is down", WAIT);
    tg.fail_next("sendMessage", 2, 401, "Unauthorized", None);
    tg.fail_next("getMe", 3, 401, "Unauthorized", None);
    setup.drop_event("c.json", &notice("sec-c", "after a 401"));
    tg.wait_until(WAIT, "the 401s answered", |s| {
        s.calls("sendMessage").iter().any(|c| c.status == 401)
    });
    let mut shown = tools_output(port, &config, "after the outages");
    if full_disk {
        let filler = setup.state.join("filler");
        let mut f = fs::File::create(&filler).unwrap();
        use std::io::Write;
        while f.write_all(&[0u8; 4096]).is_ok() {}
        while f.write_all(&[0u8]).is_ok() {}
        setup.drop_event("d.json", &notice("sec-d", "on a full disk"));
        // An answer whose webhook must be saved on the full disk.
        tg.user_message(ME, "john", ME, "written on a full disk", None);
        wait_fs(WAIT, "the full disk noticed", Some(&d), || {
            d.out.text().to_lowercase().contains("no space")
        });
        drop(f);
        fs::remove_file(&filler).unwrap();
    }

    shown.extend(tools_output(port, &config, "at the end"));
    let mut d = d;
    let running = d.child_running();
    d.kill9();
    let log = d.out.text();
    shown.push(("run (stderr and stdout)".into(), log.clone()));
    for (where_, text) in &shown {
        assert_no_secrets(where_, text);
    }
    assert!(running, "the daemon ended under the failures:\n{log}");
    assert!(
        shown
            .iter()
            .any(|(w, t)| w.starts_with("GET /health") && t.contains("\"status\"")),
        "/health did not answer"
    );
}

#[test]
fn no_secret_in_the_log_of_a_daemon_that_cannot_start_or_reach_telegram() {
    let good = Recorder::start();
    let hooks = secret_hooks(&[good.url("/hooks/a")], &good.url("/hooks/b"));
    // A refused token at start-up.
    let tg = FakeTelegram::start();
    tg.fail_next("getMe", 1000, 401, "Unauthorized", None);
    tg.fail_next("deleteWebhook", 1000, 401, "Unauthorized", None);
    tg.fail_next("getUpdates", 1000, 401, "Unauthorized", None);
    let setup = Setup::new("secrets-401", &tg.url(), &[ME], &hooks);
    let config = setup.config.to_str().unwrap().to_string();
    let (_, out) = run_timed(&["run", "--config", &config], &[], Duration::from_secs(4));
    assert!(
        !out.is_empty(),
        "the daemon said nothing about a refused token"
    );
    assert_no_secrets("run with a 401 from getMe", &out);
    // Telegram down for good.
    let down = FakeTelegram::start();
    down.set_down(true);
    let setup = Setup::new("secrets-down", &down.url(), &[ME], &hooks);
    setup.drop_event("a.json", &notice("x", "nowhere to go"));
    let config = setup.config.to_str().unwrap().to_string();
    let (_, out) = run_timed(&["run", "--config", &config], &[], Duration::from_secs(4));
    assert_no_secrets("run with Telegram down", &out);
    // Nothing listening at all.
    let setup = Setup::new("secrets-refused", "http://127.0.0.1:9", &[ME], &hooks);
    let config = setup.config.to_str().unwrap().to_string();
    let (_, out) = run_timed(&["run", "--config", &config], &[], Duration::from_secs(4));
    assert_no_secrets("run with Telegram refusing connections", &out);
}

#[test]
fn no_secret_in_what_a_bad_config_makes_them_say() {
    let tg = FakeTelegram::start();
    let good = Recorder::start();
    let hooks = secret_hooks(&[good.url("/hooks/a")], &good.url("/hooks/b"));
    let breakages: [(&str, String, String); 5] = [
        (
            "an impossible value beside the secrets",
            "per_chat_per_second = 100000".into(),
            "per_chat_per_second = -1".into(),
        ),
        (
            "the secret's string unterminated",
            format!("secret = {SECRET:?}"),
            format!("secret = \"{SECRET}"),
        ),
        (
            "the token's string unterminated",
            format!("bot_token = \"{TOKEN}\""),
            format!("bot_token = \"{TOKEN}"),
        ),
        (
            "the secret of the wrong type",
            format!("secret = {SECRET:?}"),
            format!("secret = [{SECRET:?}, 7]"),
        ),
        (
            "the token as a bare word",
            format!("bot_token = \"{TOKEN}\""),
            format!("bot_token = {}", token_secret()),
        ),
    ];
    for (what, from, to) in breakages {
        let setup = Setup::new("secrets-bad", &tg.url(), &[ME], &hooks);
        edit_config(&setup, &from, &to);
        let config = setup.config.to_str().unwrap().to_string();
        let (code, out) = run_cli(&["check-config", "--config", &config], &[]);
        assert_eq!(code, 78, "check-config with {what}: {out}");
        assert_no_secrets(&format!("check-config with {what}"), &out);
        let (code, out) = run_timed(&["run", "--config", &config], &[], Duration::from_secs(10));
        assert_eq!(code, Some(78), "run with {what}: {out}");
        assert_no_secrets(&format!("run with {what}"), &out);
    }
}

/// Files and directories under `dir` whose mode is not `file_mode` /
/// `dir_mode`.
fn wrong_modes(dir: &Path, file_mode: u32, dir_mode: u32, out: &mut Vec<String>) {
    let mode = fs::symlink_metadata(dir).unwrap().permissions().mode() & 0o777;
    if mode != dir_mode {
        out.push(format!("{} (directory) is {mode:o}", dir.display()));
    }
    for e in fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if e.file_type().unwrap().is_dir() {
            wrong_modes(&p, file_mode, dir_mode, out);
        } else {
            let mode = e.metadata().unwrap().permissions().mode() & 0o777;
            if mode != file_mode {
                out.push(format!("{} is {mode:o}", p.display()));
            }
        }
    }
}

#[test]
fn state_is_private_and_a_readable_config_is_a_warning() {
    let tg = FakeTelegram::start();
    let rec = Recorder::start();
    rec.respond_with(400, &[]); // a dead letter too
    let hooks = format!(
        "[webhook]\nsecret = {SECRET:?}\nendpoints = [{:?}]\n",
        rec.url("/hooks/a")
    );
    let setup = Setup::new("modes", &tg.url(), &[ME], &hooks);
    fs::set_permissions(&setup.config, fs::Permissions::from_mode(0o644)).unwrap();
    let d = start_polling(&tg, &setup);
    setup.drop_event("a.json", &approval("mode_task", "private state"));
    wait_message(&tg, &d, "111", "private state", WAIT);
    tg.user_message(ME, "john", ME, "a note", None);
    wait_fs(WAIT, "a dead letter and the offset", Some(&d), || {
        !Setup::files(&setup.state.join("dead")).is_empty() && setup.state.join("offset").exists()
    });
    let mut wrong = Vec::new();
    wrong_modes(&setup.state, 0o600, 0o700, &mut wrong);
    assert!(
        wrong.is_empty(),
        "state is not private:\n{}",
        wrong.join("\n")
    );

    let name = setup.config.display().to_string();
    let warned = |text: &str| {
        text.lines().any(|l| {
            let l = l.to_lowercase();
            l.contains("warn")
                && l.contains(&name.to_lowercase())
                && ["readable", "permission", "chmod", "644", "mode"]
                    .iter()
                    .any(|w| l.contains(w))
        })
    };
    assert!(
        warned(&d.out.text()),
        "no start-up warning that {name} (0644) is readable by group and others:\n{}",
        d.out.text()
    );
    drop(d);
    // A private config: no such warning.
    fs::set_permissions(&setup.config, fs::Permissions::from_mode(0o600)).unwrap();
    let d = start_polling(&tg, &setup);
    setup.drop_event("b.json", &notice("mode-b", "quiet start"));
    wait_message(&tg, &d, "111", "quiet start", WAIT);
    assert!(!warned(&d.out.text()), "{}", d.out.text());
}
