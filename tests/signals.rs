//! Signals (CONTRACT section 1, issue 9): SIGTERM and SIGINT finish what
//! is in flight and exit 0 within 10 seconds, losing nothing; SIGHUP
//! reloads chats, endpoints and secrets without a restart, enables again
//! endpoints disabled by 410, and keeps the old config when the new one
//! does not load.

#[path = "support/daemon.rs"]
mod daemon;
#[path = "support/harness.rs"]
mod harness;
#[path = "support/receivers.rs"]
mod receivers;
#[path = "support/telegram.rs"]
mod telegram;

use std::time::{Duration, Instant};

use daemon::{Daemon, Setup};
use harness::{
    count_in, edit_config, notice, processed, start_polling, wait_message, webhook_toml, ME, WAIT,
};
use receivers::{verify_cctelegram, verify_standard, Recorder};
use telegram::FakeTelegram;

const GROUP: i64 = -100222;
const CHATS: [&str; 2] = ["111", "-100222"];

/// Sends `sig` during a burst of `n` events to two chats with a slow
/// webhook receiver; it must exit 0 within 10 s, and a restart must
/// deliver everything: every event once per chat, and its event_processed
/// webhooks.
///
/// The bound: no repeats at all. The contract says a Telegram call
/// already answered is recorded before exiting, so unlike `kill -9` a
/// signal leaves no send whose answer is lost.
fn stop_in_a_burst(sig: i32, name: &str, n: usize) {
    let tg = FakeTelegram::start();
    tg.set_slow(Duration::from_millis(5));
    let rec = Recorder::start();
    // Attempts are in flight when the signal comes; each ends in time.
    rec.set_slow(Duration::from_millis(1500));
    let hooks = webhook_toml("signal-secret", &[rec.url("/webhook/events")]);
    let setup = Setup::new(name, &tg.url(), &[ME, GROUP], &hooks);
    let mut d = start_polling(&tg, &setup);
    for i in 0..n {
        let id = format!("{name}-{i:03}");
        setup.drop_event(
            &format!("{id}.json"),
            &notice(&id, &format!("{name} n{i:03}")),
        );
    }
    tg.wait_until(WAIT, "a fifth of the burst sent", |s| {
        s.messages.len() >= n * 2 / 5
    });
    rec.wait_for(1, WAIT);
    let at = Instant::now();
    d.signal(sig);
    let code = d.exit_within(Duration::from_secs(10));
    let took = at.elapsed();
    assert_eq!(
        code,
        Some(0),
        "{name} did not end in exit 0 within 10 s (None: still running; negative: killed by \
         that signal) after {took:?}:\n{}",
        d.out.text()
    );
    eprintln!("{name}: exit 0 after {took:?}");

    tg.set_slow(Duration::ZERO);
    rec.set_slow(Duration::ZERO);
    let d: Daemon = start_polling(&tg, &setup);
    for i in 0..n {
        for chat in CHATS {
            wait_message(&tg, &d, chat, &format!("{name} n{i:03}"), WAIT);
        }
    }
    let want: Vec<String> = (0..n).map(|i| format!("{name}-{i:03}")).collect();
    rec.wait_until(WAIT, "event_processed for every event and chat", |log| {
        want.iter().all(|id| {
            let got = processed(log, id);
            CHATS.iter().all(|c| {
                got.iter()
                    .any(|r| r.status == 200 && r.json()["event"]["chat_id"] == *c)
            })
        })
    });
    let mut repeats = Vec::new();
    for i in 0..n {
        for chat in CHATS {
            let k = count_in(&tg, chat, &format!("{name} n{i:03}"));
            if k != 1 {
                repeats.push(format!("{name} n{i:03} in {chat}: {k} times"));
            }
        }
    }
    assert!(
        repeats.is_empty(),
        "after {name} and a restart, events were repeated:\n{repeats:#?}"
    );
    drop(d);
}

#[test]
fn sigterm_in_a_burst_exits_0_within_10_s_and_loses_nothing() {
    stop_in_a_burst(libc::SIGTERM, "sigterm", 120);
}

#[test]
fn sigint_in_a_burst_exits_0_within_10_s_and_loses_nothing() {
    stop_in_a_burst(libc::SIGINT, "sigint", 40);
}

/// Drops events titled "`tag` try k" until `cond` holds for one's title
/// (the reload is in force), giving each 2 s; returns that title.
fn until_reloaded(
    setup: &Setup,
    tg: &FakeTelegram,
    d: &Daemon,
    tag: &str,
    cond: impl Fn(&str) -> bool,
) -> String {
    let end = Instant::now() + WAIT;
    for k in 0.. {
        let id = format!("{tag}-{k}");
        setup.drop_event(
            &format!("{id}.json"),
            &notice(&id, &format!("{tag} try {k}")),
        );
        wait_message(tg, d, "111", &format!("{tag} try {k}"), WAIT);
        let title = format!("{tag} try {k}");
        let slice = Instant::now() + Duration::from_secs(2);
        while Instant::now() < slice {
            if cond(&title) {
                return title;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            Instant::now() < end,
            "the reload was not in force within {WAIT:?}:\n{}",
            d.out.text()
        );
    }
    unreachable!()
}

#[test]
fn sighup_reloads_chats_endpoints_and_secrets_without_a_restart() {
    let tg = FakeTelegram::start();
    let a = Recorder::start();
    let b = Recorder::start();
    let gone = Recorder::start();
    gone.respond_with(410, &[]);
    let (url_a, url_b, url_gone) = (
        a.url("/hooks/a"),
        b.url("/hooks/b"),
        gone.url("/hooks/gone"),
    );
    let hooks = webhook_toml("old-secret", &[url_a.clone(), url_gone.clone()]);
    let setup = Setup::new("sighup", &tg.url(), &[ME], &hooks);
    let d = start_polling(&tg, &setup);
    let pid = d.child.id();

    // Before: one chat, endpoint a with the old secret; `gone` answers 410
    // and is disabled.
    setup.drop_event("e1.json", &notice("e1", "before reload"));
    wait_message(&tg, &d, "111", "before reload", WAIT);
    let log = a.wait_until(WAIT, "e1 at a", |l| !processed(l, "e1").is_empty());
    let e1 = processed(&log, "e1")[0].clone();
    assert!(verify_cctelegram("old-secret", &e1.headers, &e1.body));
    gone.wait_until(WAIT, "e1 at gone (answered 410)", |l| {
        !processed(l, "e1").is_empty()
    });
    setup.drop_event("e2.json", &notice("e2", "still before"));
    a.wait_until(WAIT, "e2 at a", |l| !processed(l, "e2").is_empty());
    assert!(
        processed(&gone.requests(), "e2").is_empty(),
        "an endpoint that answered 410 is disabled until the config is loaded again"
    );

    // The reload: a second chat, a second endpoint, a new secret, and
    // `gone` is back.
    gone.respond_with(200, &[]);
    edit_config(
        &setup,
        "chat_ids = [111]",
        &format!("chat_ids = [111, {}]", -100333),
    );
    edit_config(&setup, "secret = \"old-secret\"", "secret = \"new-secret\"");
    edit_config(
        &setup,
        &format!("endpoints = [{url_a:?}, {url_gone:?}]"),
        &format!("endpoints = [{url_a:?}, {url_gone:?}, {url_b:?}]"),
    );
    d.signal(libc::SIGHUP);
    until_reloaded(&setup, &tg, &d, "reload", |title| {
        count_in(&tg, "-100333", title) > 0
    });
    assert!(
        d.child_running(),
        "SIGHUP ended the daemon:\n{}",
        d.out.text()
    );
    assert_eq!(d.child.id(), pid);

    // What is sent next follows the new config entirely.
    setup.drop_event("e3.json", &notice("e3", "after reload"));
    for chat in ["111", "-100333"] {
        wait_message(&tg, &d, chat, "after reload", WAIT);
    }
    for (rec, name) in [
        (&a, "a"),
        (&b, "b"),
        (&gone, "gone (410 before the reload)"),
    ] {
        let log = rec.wait_until(WAIT, &format!("e3 at {name}"), |l| {
            processed(l, "e3").iter().any(|r| r.status == 200)
        });
        for r in processed(&log, "e3") {
            assert!(
                verify_cctelegram("new-secret", &r.headers, &r.body)
                    && verify_standard("new-secret", &r.headers, &r.body),
                "e3 at {name} is not signed with the reloaded secret"
            );
        }
    }

    // A config that does not load: logged with why, the old one stays.
    let before = d.out.text().len();
    let good = std::fs::read_to_string(&setup.config).unwrap();
    std::fs::write(&setup.config, format!("{good}\n[limits\nbroken = \n")).unwrap();
    d.signal(libc::SIGHUP);
    let deadline = Instant::now() + WAIT;
    while !d.out.text()[before..].contains("config.toml") {
        assert!(
            d.child_running(),
            "a bad config on SIGHUP ended the daemon:\n{}",
            d.out.text()
        );
        assert!(
            Instant::now() < deadline,
            "no log line names the config that did not load:\n{}",
            &d.out.text()[before..]
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    setup.drop_event("e4.json", &notice("e4", "after a bad reload"));
    for chat in ["111", "-100333"] {
        wait_message(&tg, &d, chat, "after a bad reload", WAIT);
    }
    let log = b.wait_until(WAIT, "e4 at b", |l| !processed(l, "e4").is_empty());
    let e4 = processed(&log, "e4")[0].clone();
    assert!(verify_cctelegram("new-secret", &e4.headers, &e4.body));
    assert!(d.child_running());
}
