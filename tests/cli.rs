//! The command line: configuration errors, exit codes, secrets kept out of
//! every output, and `cctelegram send` (issue "Events reach Telegram",
//! point 8 and the `send` command).

#[path = "support/daemon.rs"]
mod daemon;
#[path = "support/telegram.rs"]
mod telegram;

use std::fs;
use std::net::TcpListener;
use std::time::Duration;

use daemon::{run_cli, Setup, TempDir, TOKEN};
use telegram::FakeTelegram;

const WAIT: Duration = Duration::from_secs(30);
const SECRET_HALF: &str = "TESTtokenSECRETvalue_abc";

fn config(dir: &TempDir, text: &str) -> String {
    let p = dir.0.join("config.toml");
    fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
fn config_errors_exit_78_and_name_the_key() {
    let dir = TempDir::new("cfg");
    let cases: &[(&str, &str)] = &[
        (
            "[limits]\nglobal_per_second = \"fast\"\n",
            "limits.global_per_second",
        ),
        (
            "[webhook.retry]\ninitial_delay_ms = -1000\n",
            "webhook.retry.initial_delay_ms",
        ),
        ("[telegram]\napi_url = \"ftp://x\"\n", "telegram.api_url"),
        (
            "[telegram]\napi_url = \"http://api.example.com\"\n",
            "telegram.api_url",
        ),
        (
            "[telegram]\nparse_mode = \"Markdown\"\n",
            "telegram.parse_mode",
        ),
        ("[health]\nlisten = \"everywhere\"\n", "health.listen"),
        (
            "[telegram]\nallowed_users = [\"me\"]\n",
            "telegram.allowed_users",
        ),
        ("[telegram\nbot_token = 1\n", "not valid TOML"),
    ];
    for (text, key) in cases {
        let path = config(&dir, text);
        let (code, out) = run_cli(&["check-config", "--config", &path], &[]);
        assert_eq!(code, 78, "{text}: {out}");
        assert!(
            out.contains(key),
            "{text}: the message does not name {key}: {out}"
        );
    }
    // `run` needs a token and someone allowed to answer.
    let path = config(&dir, "");
    let (code, out) = run_cli(&["run", "--config", &path], &[]);
    assert_eq!(code, 78, "{out}");
    assert!(out.contains("telegram.bot_token"), "{out}");
    let (code, out) = run_cli(
        &["run", "--config", &path],
        &[("TELEGRAM_BOT_TOKEN", TOKEN)],
    );
    assert_eq!(code, 78, "{out}");
    assert!(out.contains("telegram.allowed_users"), "{out}");
    let (code, out) = run_cli(
        &["check-config", "--config", &path],
        &[("TELEGRAM_ALLOWED_USERS", "12,abc")],
    );
    assert_eq!(code, 78, "{out}");
    assert!(out.contains("TELEGRAM_ALLOWED_USERS"), "{out}");
    let (code, out) = run_cli(&["check-config", "--config", "/nonexistent/cct.toml"], &[]);
    assert_eq!(code, 78, "{out}");
    assert!(out.contains("/nonexistent/cct.toml"), "{out}");
}

#[test]
fn unknown_keys_warn_with_their_line_and_do_not_stop_anything() {
    let dir = TempDir::new("unknown");
    let path = config(
        &dir,
        "[telegram]\npoll_timeout_seconds = 20\nbot_tokne = \"x\"\n\n[mystery]\nx = 1\n",
    );
    let (code, out) = run_cli(&["check-config", "--config", &path], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("telegram.bot_tokne (line 3)"), "{out}");
    assert!(out.contains("mystery (line 5)"), "{out}");
    assert!(out.contains("poll_timeout_seconds = 20"), "{out}");
}

#[test]
fn check_config_masks_secrets_and_shows_the_environment_winning() {
    let dir = TempDir::new("mask");
    let path = config(
        &dir,
        "[telegram]\nbot_token = \"1:filetoken\"\nallowed_users = [5]\n[webhook]\nsecret = \"hush-hush-secret\"\n",
    );
    let (code, out) = run_cli(
        &["check-config", "--config", &path],
        &[
            ("TELEGRAM_BOT_TOKEN", TOKEN),
            ("CC_TELEGRAM_STATE_DIR", "/var/lib/cct"),
        ],
    );
    assert_eq!(code, 0, "{out}");
    for secret in [TOKEN, SECRET_HALF, "filetoken", "hush-hush-secret"] {
        assert!(!out.contains(secret), "{secret} printed:\n{out}");
    }
    assert!(out.contains("bot_token = \"********\""), "{out}");
    assert!(out.contains("state_dir = \"/var/lib/cct\""), "{out}");
    // Found through $CCTELEGRAM_CONFIG as well.
    let (code, out) = run_cli(&["check-config"], &[("CCTELEGRAM_CONFIG", &path)]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("allowed_users = [5]"), "{out}");
}

#[test]
fn usage_errors_exit_64() {
    for args in [
        &["frobnicate"][..],
        &[][..],
        &["send", "--title", "x"][..],
        &["run", "--bogus"][..],
    ] {
        let (code, out) = run_cli(args, &[]);
        assert_eq!(code, 64, "{args:?}: {out}");
        assert!(out.contains("cctelegram"), "{args:?}: {out}");
    }
    let (code, out) = run_cli(&["--version"], &[]);
    assert_eq!(
        (code, out.trim()),
        (0, concat!("cctelegram ", env!("CARGO_PKG_VERSION")))
    );
    let (code, out) = run_cli(&["help", "send"], &[]);
    assert_eq!(code, 0);
    assert!(out.contains("--option LABEL"), "{out}");
}

/// Every failure the daemon logs while talking to Telegram, with the token
/// in every URL: none of it may show the token.
#[test]
fn the_token_never_appears_in_output_even_when_requests_fail() {
    // Nothing listens: connection refused.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let setup = Setup::new("token-dead", &dead_url, &[111], "");
    setup.drop_event("a.json", &daemon::event("info_notification", "x"));
    let d = setup.start();
    d.out.wait_for("retrying in", WAIT);
    let dead_out = d.out.text();
    drop(d);

    // Telegram rejects the token, answers 500, and drops connections.
    let tg = FakeTelegram::start();
    tg.fail_next("sendMessage", 1, 401, "Unauthorized", None);
    tg.fail_next("sendMessage", 1, 500, "Internal Server Error", None);
    let setup = Setup::new("token-fail", &tg.url(), &[111], "");
    setup.drop_event("a.json", &daemon::event("info_notification", "x"));
    let d = setup.start();
    d.out.wait_for("Unauthorized", WAIT);
    d.out.wait_for("Internal Server Error", WAIT);
    tg.wait_messages(1, WAIT);
    tg.set_down(true);
    setup.drop_event("b.json", &daemon::event("info_notification", "y"));
    d.out.wait_for("attempt 1", WAIT);
    let fail_out = d.out.text();
    drop(d);
    assert!(
        tg.tokens_seen().iter().any(|t| t == TOKEN),
        "the fake saw the token"
    );

    for out in [&dead_out, &fail_out] {
        assert!(out.contains("WARN"), "no failure was logged:\n{out}");
        assert!(
            !out.contains(TOKEN) && !out.contains(SECRET_HALF),
            "token leaked:\n{out}"
        );
    }
}

#[test]
fn send_writes_an_event_the_daemon_delivers() {
    let tg = FakeTelegram::start();
    let setup = Setup::new("send", &tg.url(), &[111], "");
    let _d = setup.start();
    let events = setup.events.to_str().unwrap();
    let (code, out) = run_cli(
        &[
            "send",
            "--type",
            "approval_request",
            "--title",
            "Reboot the router?",
            "--description",
            "Firmware 1.2 is installed",
            "--task-id",
            "reboot_42",
            "--option",
            "Approve",
            "--option",
            "Later",
            "--data",
            r#"{"severity":"high"}"#,
            "--events-dir",
            events,
        ],
        &[],
    );
    assert_eq!(code, 0, "{out}");
    let id = out.trim();
    assert!(id.starts_with("evt_") && id.len() == 16, "{id}");
    let msg = tg.wait_messages(1, WAIT).remove(0);
    assert!(
        msg.text.contains("Reboot the router?") && msg.text.contains("Severity: 🔴 high"),
        "{}",
        msg.text
    );
    let markup = msg.reply_markup.unwrap().to_string();
    assert!(
        markup.contains("approve_reboot_42") && markup.contains("opt1_reboot_42"),
        "{markup}"
    );

    // Bad input is refused before anything is written.
    let (code, out) = run_cli(
        &[
            "send",
            "--type",
            "x",
            "--title",
            "t",
            "--data",
            "[1]",
            "--events-dir",
            events,
        ],
        &[],
    );
    assert_eq!(code, 64, "{out}");
    assert!(out.contains("--data must be a JSON object"), "{out}");
    let (code, out) = run_cli(
        &[
            "send",
            "--type",
            "x",
            "--title",
            "t",
            "--events-dir",
            "/nonexistent",
        ],
        &[],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("events directory does not exist"), "{out}");
    assert!(Setup::files(&setup.events).iter().all(|f| f == "failed"));
}
