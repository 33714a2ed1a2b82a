//! `cctelegram init` (CONTRACT section 9) against the fake Bot API: the code
//! it prints pairs the user who sends it and nobody else, the config it
//! writes is private, loads and runs, and what it refuses it refuses with
//! advice.

#[path = "support/daemon.rs"]
mod daemon;
#[path = "support/telegram.rs"]
mod telegram;

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use daemon::{run_cli, Daemon, TempDir, TOKEN};
use telegram::FakeTelegram;

const WAIT: Duration = Duration::from_secs(20);
const ME: i64 = 777;
const STRANGER: i64 = 999;

/// The six-digit code in init's stdout ("/start 123456").
fn code_in(stdout: &str) -> Option<String> {
    let after = stdout.split("/start ").nth(1)?;
    let code: String = after.chars().take_while(char::is_ascii_digit).collect();
    (code.len() == 6).then_some(code)
}

/// A six-digit code that is not `code`.
fn other_code(code: &str) -> String {
    let n: u32 = code.parse().unwrap();
    format!("{:06}", (n + 1) % 1_000_000)
}

/// Starts init, waits for its code; returns the process and the code.
fn start_init(tg: &FakeTelegram, home: &Path, args: &[&str]) -> (Daemon, String) {
    let mut argv = vec!["init"];
    argv.extend_from_slice(args);
    let url = tg.url();
    let env = [("HOME", home.to_str().unwrap()), ("TELEGRAM_API_URL", &url)];
    let d = Daemon::spawn_env(&argv, &env);
    let code = d.stdout.wait_match("the pairing code", WAIT, code_in);
    (d, code)
}

/// Waits until init has polled past update `id` (its offset acknowledges it).
fn wait_polled_past(tg: &FakeTelegram, id: i64) {
    tg.wait_until(WAIT, &format!("a getUpdates with offset > {id}"), |st| {
        st.calls("getUpdates")
            .iter()
            .any(|c| c.params["offset"].as_i64().is_some_and(|o| o > id))
    });
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn the_code_pairs_its_sender_only_and_the_config_runs() {
    let tg = FakeTelegram::start();
    let home = TempDir::new("init-home");
    let (mut init, code) = start_init(&tg, &home.0, &["--token", TOKEN]);
    assert!(
        init.stdout.text().contains("@fake_test_bot"),
        "names the bot:\n{}",
        init.out.text()
    );

    // A stranger with a wrong code, and the right code from a group: ignored.
    let wrong = other_code(&code);
    tg.user_message(
        STRANGER,
        "mallory",
        STRANGER,
        &format!("/start {wrong}"),
        None,
    );
    tg.user_message(
        STRANGER,
        "mallory",
        -100_555,
        &format!("/start {code}"),
        None,
    );
    wait_polled_past(&tg, 2); // updates 1 and 2 seen and passed over
    assert!(
        init.is_running(),
        "init gave up on a wrong code:\n{}",
        init.out.text()
    );

    tg.user_message(ME, "ada", ME, &format!("/start {code}"), None);
    assert_eq!(init.wait_exit(WAIT), 0, "{}", init.out.text());

    let config = home.0.join(".cc_telegram/config.toml");
    assert_eq!(mode(&config), 0o600, "the config holds the token");
    let text = fs::read_to_string(&config).unwrap();
    assert!(text.contains(&format!("allowed_users = [{ME}]")), "{text}");
    assert!(!text.contains(&STRANGER.to_string()), "{text}");
    assert!(text.contains(&format!("bot_token = \"{TOKEN}\"")), "{text}");
    assert!(
        !init.out.text().contains("TESTtokenSECRET"),
        "token printed"
    );
    let out = init.stdout.text();
    assert!(
        out.contains("Wrote") && out.contains("cctelegram run"),
        "{out}"
    );

    // It answered the pairing message, in that chat, and nothing to the stranger.
    let sent = tg.messages();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].chat_id, ME.to_string());
    assert!(sent[0].text.starts_with("Paired"), "{}", sent[0].text);
    // Every update was acknowledged: the daemon will not see the /start.
    tg.wait_until(WAIT, "no unconfirmed updates", |st| st.updates.is_empty());

    // The config loads as written...
    let home_env = [("HOME", home.0.to_str().unwrap())];
    let (code_cc, out) = run_cli(
        &["check-config", "--config", config.to_str().unwrap()],
        &home_env,
    );
    assert_eq!(code_cc, 0, "{out}");
    assert!(
        out.contains(&ME.to_string()) && !out.contains("TESTtokenSECRET"),
        "{out}"
    );

    // ...and `run` delivers with it (the defaults put everything under HOME).
    let polls = tg.calls("getUpdates").len();
    let mut run = Daemon::spawn_env(&["run"], &home_env);
    tg.wait_until(WAIT, "the daemon's first getUpdates", |st| {
        st.calls("getUpdates").len() > polls
    });
    let events = home.0.join(".cc_telegram/events");
    assert!(events.is_dir(), "{}", run.out.text());
    let (code_send, out) = run_cli(
        &[
            "send",
            "--type",
            "task_completion",
            "--title",
            "Hello after init",
        ],
        &home_env,
    );
    assert_eq!(code_send, 0, "{out}");
    let sent = tg.wait_messages(2, WAIT);
    assert_eq!(sent[1].chat_id, ME.to_string());
    assert!(
        sent[1].text.contains("Hello after init"),
        "{}",
        sent[1].text
    );
    assert!(run.is_running(), "{}", run.out.text());
}

#[test]
fn an_existing_config_is_kept_without_force_and_replaced_with_it() {
    let tg = FakeTelegram::start();
    let home = TempDir::new("init-force");
    let config = home.0.join("mine.toml");
    fs::write(&config, "# my own config\n").unwrap();
    let path = config.to_str().unwrap();
    let url = tg.url();
    let env = [
        ("HOME", home.0.to_str().unwrap()),
        ("TELEGRAM_API_URL", url.as_str()),
        ("TELEGRAM_BOT_TOKEN", TOKEN),
    ];
    let (code, out) = run_cli(&["init", "--config", path], &env);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("already exists") && out.contains("--force"),
        "{out}"
    );
    assert_eq!(fs::read_to_string(&config).unwrap(), "# my own config\n");
    assert!(
        tg.calls("getMe").is_empty(),
        "refused before calling Telegram"
    );

    // With --force, and the token typed at the prompt this time.
    let (mut init, code) = {
        let argv = ["init", "--config", path, "--force"];
        let env = [
            ("HOME", home.0.to_str().unwrap()),
            ("TELEGRAM_API_URL", url.as_str()),
        ];
        let mut d = Daemon::spawn_env(&argv, &env);
        let mut stdin = d.child.stdin.take().unwrap();
        writeln!(stdin, "{TOKEN}").unwrap();
        let code = d.stdout.wait_match("the pairing code", WAIT, code_in);
        (d, code)
    };
    tg.user_message(ME, "ada", ME, &code, None);
    assert_eq!(init.wait_exit(WAIT), 0, "{}", init.out.text());
    let text = fs::read_to_string(&config).unwrap();
    assert!(text.contains(&format!("allowed_users = [{ME}]")), "{text}");
    assert_eq!(mode(&config), 0o600);
    let leftovers: Vec<_> = fs::read_dir(&home.0)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "no temporary file left: {leftovers:?}");
}

#[test]
fn a_token_telegram_refuses_exits_1_with_advice() {
    let tg = FakeTelegram::start();
    tg.refuse_token(TOKEN);
    let home = TempDir::new("init-refused");
    let config = home.0.join("config.toml");
    let url = tg.url();
    let env = [
        ("HOME", home.0.to_str().unwrap()),
        ("TELEGRAM_API_URL", url.as_str()),
    ];
    let (code, out) = run_cli(
        &[
            "init",
            "--token",
            TOKEN,
            "--config",
            config.to_str().unwrap(),
        ],
        &env,
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("refused") && out.contains("@BotFather"),
        "{out}"
    );
    assert!(!out.contains("TESTtokenSECRET"), "token printed: {out}");
    assert!(!config.exists(), "nothing written");
    assert_eq!(tg.calls("getMe").len(), 1);
    assert!(tg.calls("getUpdates").is_empty());
}
