//! Event files reach Telegram: issue "Events reach Telegram", points 1-7.
//!
//! The real binary runs against the fake Bot API on 127.0.0.1; every wait
//! is on a condition with a deadline.

#[path = "support/daemon.rs"]
mod daemon;
#[path = "support/telegram.rs"]
mod telegram;

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::symlink;
use std::time::Duration;

use daemon::{event, Daemon, Setup};
use serde_json::json;
use telegram::{FakeTelegram, Sent};

const WAIT: Duration = Duration::from_secs(30);

/// How many messages each (chat, first line) pair got.
fn tally(msgs: &[Sent]) -> HashMap<(String, String), usize> {
    let mut m = HashMap::new();
    for s in msgs {
        let first = s.text.lines().next().unwrap_or("").to_string();
        *m.entry((s.chat_id.clone(), first)).or_insert(0) += 1;
    }
    m
}

/// Sends a last event and waits until the daemon has recorded its delivery
/// in every chat: sends to a chat go out in acceptance order, so everything
/// accepted before it has been handled too.
fn settle(setup: &Setup, d: &Daemon, chats: &[&str], tag: &str) {
    let id = format!("sentinel-{tag}");
    let body =
        json!({"type": "info_notification", "title": format!("sentinel {tag}"), "event_id": id});
    setup.drop_event(&format!("zz-{tag}.json"), &body.to_string());
    for chat in chats {
        d.out
            .wait_for(&format!("delivered {id} to chat {chat} "), WAIT);
    }
}

#[test]
fn renamed_in_written_in_place_and_startup_files_arrive_once_per_chat() {
    let tg = FakeTelegram::start();
    let setup = Setup::new("once", &tg.url(), &[111, -100222], "");
    setup.drop_event("early-1.json", &event("task_completion", "early one"));
    setup.drop_event("early-2.json", &event("build_failed", "early two"));
    let d = setup.start();
    tg.wait_until(WAIT, "start-up files in both chats", |s| {
        s.messages.len() >= 4
    });

    setup.drop_event("renamed.json", &event("git_push", "renamed in"));
    setup.write_in_place(
        "inplace.json",
        &event("info_notification", "written in place"),
    );
    settle(&setup, &d, &["111", "-100222"], "a");

    let counts = tally(&tg.messages());
    for title in ["early one", "early two", "renamed in", "written in place"] {
        for chat in ["111", "-100222"] {
            let n = counts
                .iter()
                .filter(|((c, first), _)| c == chat && first.contains(title))
                .map(|(_, n)| *n)
                .sum::<usize>();
            assert_eq!(n, 1, "{title:?} reached chat {chat} {n} times");
        }
    }
    // Oldest first at start-up.
    let first: Vec<_> = tg
        .messages()
        .iter()
        .filter(|m| m.chat_id == "111")
        .take(2)
        .map(|m| m.text.clone())
        .collect();
    assert!(
        first[0].contains("early one") && first[1].contains("early two"),
        "{first:?}"
    );
    // Delivered files leave the directory; nothing is left queued.
    assert_eq!(Setup::files(&setup.events), ["failed"]);
    assert!(Setup::files(&setup.state.join("queue")).is_empty());
    drop(d);
}

#[test]
fn the_original_systems_sample_files_work_unchanged() {
    let tg = FakeTelegram::start();
    let setup = Setup::new("samples", &tg.url(), &[111], "");
    let _d = setup.start();
    for name in ["task_completion", "info_notification", "approval_request"] {
        let body = fs::read_to_string(format!("examples/events/{name}.json")).unwrap();
        // Named and written as the original MCP server does: in place.
        setup.write_in_place(&format!("{name}_1795935002000.json"), &body);
    }
    let msgs = tg.wait_messages(3, WAIT);
    let text: Vec<&str> = msgs.iter().map(|m| m.text.as_str()).collect();
    assert!(
        text.iter().any(|t| t.starts_with("✅ Build finished")
            && t.contains("Results: 42 tests passed")
            && t.contains("Duration: 5.3 s")),
        "{text:#?}"
    );
    assert!(
        text.iter()
            .any(|t| t.starts_with("ℹ️ Claude Code Message") && t.contains("Hello from Claude")),
        "{text:#?}"
    );
    let approval = msgs
        .iter()
        .find(|m| m.text.contains("Deploy to production"))
        .unwrap();
    assert!(
        approval.text.contains("Answer within: 30 min"),
        "{}",
        approval.text
    );
    assert!(Setup::files(&setup.failed()).is_empty());
}

#[test]
fn approval_buttons_carry_callback_data_within_64_bytes() {
    let tg = FakeTelegram::start();
    let setup = Setup::new("buttons", &tg.url(), &[111], "");
    let _d = setup.start();
    let long_id = "t".repeat(40) + &"9".repeat(40);
    assert_eq!(long_id.len(), 80);
    for (name, task) in [
        ("short.json", "deploy_prod_001"),
        ("long.json", long_id.as_str()),
    ] {
        let body = json!({"type": "approval_request", "title": format!("Deploy {name}"),
            "task_id": task, "data": {"options": ["Approve", "Deny", "Review later"]}});
        setup.drop_event(name, &body.to_string());
    }
    let msgs = tg.wait_messages(2, WAIT);
    for m in &msgs {
        let rows = m.reply_markup.as_ref().expect("buttons")["inline_keyboard"].clone();
        let buttons: Vec<(String, String)> = rows
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r.as_array().unwrap().clone())
            .map(|b| {
                (
                    b["text"].as_str().unwrap().into(),
                    b["callback_data"].as_str().unwrap().into(),
                )
            })
            .collect();
        let labels: Vec<&str> = buttons.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(labels, ["Approve", "Deny", "Review later"]);
        for (_, data) in &buttons {
            assert!(!data.is_empty() && data.len() <= 64, "{data}");
        }
        if m.text.contains("short.json") {
            let data: Vec<&str> = buttons.iter().map(|(_, d)| d.as_str()).collect();
            assert_eq!(
                data,
                [
                    "approve_deploy_prod_001",
                    "deny_deploy_prod_001",
                    "opt2_deploy_prod_001"
                ]
            );
        } else {
            // Too long for approve_<task_id>: a short key, persisted.
            let key = buttons[0].1.split(':').nth(1).unwrap().to_string();
            let saved = fs::read_to_string(setup.state.join("buttons").join(format!("{key}.json")))
                .unwrap();
            let saved: serde_json::Value = serde_json::from_str(&saved).unwrap();
            assert_eq!(saved["event"]["task_id"], json!(long_id));
            assert_eq!(
                saved["event"]["data"]["options"],
                json!(["Approve", "Deny", "Review later"])
            );
        }
    }
}

#[test]
fn a_long_description_full_of_markup_arrives_whole() {
    let tg = FakeTelegram::start();
    let setup = Setup::new("long", &tg.url(), &[111], "");
    let d = setup.start();
    let pieces = [
        "<b>bold?</b> ",
        "a & b ",
        "&amp; ",
        "<script>x</script> ",
        "*_[]()~`>#+-=|{}.!\\ ",
        "😀👍🏽 ",
        "👨‍👩‍👧 ",
        "שלום עולם ",
        "مرحبا ",
        "line\nbreak ",
        "\"quotes\" 'x' ",
    ];
    let desc: String = pieces
        .iter()
        .cycle()
        .flat_map(|p| p.chars())
        .take(10_000)
        .collect();
    let desc = desc.trim_end().to_string();
    let body = json!({"type": "info_notification", "title": "Long one", "description": desc});
    setup.drop_event("long.json", &body.to_string());
    settle(&setup, &d, &["111"], "long");
    let parts: Vec<Sent> = tg
        .messages()
        .into_iter()
        .filter(|m| !m.text.contains("sentinel"))
        .collect();
    assert!(
        parts.len() >= 3,
        "10,000 characters need at least three messages, got {}",
        parts.len()
    );
    for p in &parts {
        assert_eq!(
            p.parse_mode.as_deref(),
            Some("HTML"),
            "no part fell back to plain text"
        );
        assert!(p.text.encode_utf16().count() <= 4096);
    }
    let joined: String = parts.iter().map(|p| p.text.as_str()).collect();
    assert!(
        joined.starts_with("📣 Long one\n") || joined.starts_with("ℹ️ Long one\n"),
        "{}",
        &joined[..40]
    );
    // Telegram trims each message, so a line break that falls on a part
    // boundary cannot survive; every other character must.
    let squeeze = |s: &str| s.chars().filter(|c| !c.is_whitespace()).collect::<String>();
    assert!(
        squeeze(&joined).contains(&squeeze(&desc)),
        "the description did not arrive whole"
    );
    let breaks: usize = parts.iter().map(|p| p.text.matches('\n').count()).sum();
    assert!(
        breaks + parts.len() >= desc.matches('\n').count(),
        "line breaks were lost"
    );
}

#[test]
fn bad_files_go_to_failed_with_a_reason_and_the_daemon_carries_on() {
    let tg = FakeTelegram::start();
    let setup = Setup::new("bad", &tg.url(), &[111], "");
    let d = setup.start();
    setup.drop_event("malformed.json", "{\"type\": \"x\", \"title\": ");
    setup.drop_event("notitle.json", r#"{"type":"info_notification"}"#);
    fs::write(
        setup.events.join(".bytes.tmp"),
        b"{\"type\":\"x\",\"title\":\"\xff\xfe\"}",
    )
    .unwrap();
    fs::rename(
        setup.events.join(".bytes.tmp"),
        setup.events.join("notutf8.json"),
    )
    .unwrap();
    let big = format!(
        "{{\"type\":\"x\",\"title\":\"big\",\"description\":\"{}\"}}",
        "x".repeat(20 << 20)
    );
    setup.write_in_place("huge.json", &big);
    let target = setup.root.0.join("outside.json");
    fs::write(&target, event("info_notification", "outside the directory")).unwrap();
    symlink(&target, setup.events.join("link.json")).unwrap();
    fs::create_dir(setup.events.join("x.json")).unwrap();
    setup.drop_event("good.json", &event("info_notification", "good after bad"));

    let expect = [
        ("malformed.json", "not valid JSON"),
        ("notitle.json", "\"title\" is missing"),
        ("notutf8.json", "not valid UTF-8"),
        ("huge.json", "over the limit of 1048576 bytes"),
        ("link.json", "symbolic link"),
        ("x.json", "a directory"),
    ];
    let failed = setup.failed();
    for (name, _) in expect {
        d.out
            .wait_for(&format!("{name}: refused, moved to failed/"), WAIT);
    }
    for (name, why) in expect {
        assert!(
            failed.join(name).symlink_metadata().is_ok(),
            "{name} was not kept in failed/"
        );
        let reason = fs::read_to_string(failed.join(format!("{name}.error"))).unwrap();
        assert!(reason.contains(why), "{name}: {reason}");
    }
    // The link was moved, not followed: its target is untouched.
    assert!(target.exists());
    assert!(fs::symlink_metadata(failed.join("link.json"))
        .unwrap()
        .file_type()
        .is_symlink());
    let msgs = tg.wait_messages(1, WAIT);
    assert!(msgs[0].text.contains("good after bad"));
    assert!(!tg
        .messages()
        .iter()
        .any(|m| m.text.contains("outside the directory")));
}

#[test]
fn a_burst_of_1000_files_is_delivered_exactly_once() {
    let tg = FakeTelegram::start();
    let setup = Setup::new("burst", &tg.url(), &[111], "");
    let d = setup.start();
    for i in 0..1000 {
        setup.drop_event(
            &format!("b{i:04}.json"),
            &event("info_notification", &format!("burst {i:04}")),
        );
    }
    settle(&setup, &d, &["111"], "burst");
    let counts = tally(&tg.messages());
    for i in 0..1000 {
        let key = ("111".to_string(), format!("ℹ️ burst {i:04}"));
        assert_eq!(counts.get(&key), Some(&1), "burst {i:04}");
    }
    assert_eq!(tg.messages().len(), 1001);
}

#[test]
fn kill_9_in_a_burst_then_restart_loses_nothing() {
    let tg = FakeTelegram::start();
    let setup = Setup::new("kill", &tg.url(), &[111], "");
    // Slow answers keep the burst going long enough to be killed inside it.
    tg.set_slow(Duration::from_millis(2));
    let mut d = setup.start();
    let n = 300;
    for i in 0..n {
        setup.drop_event(
            &format!("k{i:04}.json"),
            &event("info_notification", &format!("kill {i:04}")),
        );
    }
    for round in 1..=3 {
        let seen = tg.messages().len();
        tg.wait_until(WAIT, "some progress before the kill", |s| {
            s.messages.len() >= seen + 20
        });
        d.kill9();
        d = setup.start();
        let _ = round;
    }
    tg.set_slow(Duration::ZERO);
    settle(&setup, &d, &["111"], "kill");
    let counts = tally(&tg.messages());
    let mut repeats = 0;
    for i in 0..n {
        let key = ("111".to_string(), format!("ℹ️ kill {i:04}"));
        let got = counts.get(&key).copied().unwrap_or(0);
        assert!(got >= 1, "kill {i:04} was lost");
        repeats += got - 1;
    }
    // Only the sends whose records were not yet synced (at most
    // SENT_GROUP in a burst) and the one in flight may repeat at a kill.
    let per_kill = cctelegram::telegram::send::SENT_GROUP + 1;
    assert!(repeats <= 3 * per_kill, "{repeats} repeats for 3 kills");
    assert!(Setup::files(&setup.state.join("queue")).is_empty());
    drop(d);
}

#[test]
fn a_429_holds_sending_for_retry_after_even_across_a_restart() {
    let tg = FakeTelegram::start();
    let setup = Setup::new("429", &tg.url(), &[111], "");
    tg.rate_limit("sendMessage", 1, 3);
    let mut d = setup.start();
    setup.drop_event("a.json", &event("info_notification", "held one"));
    d.out.wait_for("all sends held", WAIT);
    let limited_at = tg
        .calls("sendMessage")
        .iter()
        .find(|c| c.status == 429)
        .unwrap()
        .at;
    // The hold is on disk, not a sleep in memory: a restart keeps it.
    d.kill9();
    d = setup.start();
    setup.drop_event("b.json", &event("info_notification", "held two"));
    let msgs = tg.wait_messages(2, WAIT);
    for m in &msgs {
        let waited = m.at.duration_since(limited_at);
        assert!(
            waited >= Duration::from_secs(3),
            "{:?} sent {waited:?} after the 429",
            m.text
        );
    }
    assert!(msgs[0].text.contains("held one") && msgs[1].text.contains("held two"));
    assert_eq!(
        tg.calls("sendMessage")
            .iter()
            .filter(|c| c.status == 429)
            .count(),
        1
    );
    drop(d);
}

#[test]
fn refused_formatting_is_resent_as_plain_text() {
    let tg = FakeTelegram::start();
    let setup = Setup::new("plain", &tg.url(), &[111], "");
    tg.fail_next(
        "sendMessage",
        1,
        400,
        "Bad Request: can't parse entities: unsupported start tag",
        None,
    );
    let _d = setup.start();
    setup.drop_event("a.json", &event("info_notification", "fallback <ok>"));
    let msgs = tg.wait_messages(1, WAIT);
    assert_eq!(msgs[0].parse_mode, None);
    assert!(
        msgs[0].text.starts_with("ℹ️ fallback <ok>"),
        "{}",
        msgs[0].text
    );
}

#[test]
fn network_errors_and_5xx_are_retried_until_delivered() {
    let tg = FakeTelegram::start();
    let setup = Setup::new("retry", &tg.url(), &[111], "");
    tg.fail_next("sendMessage", 2, 502, "Bad Gateway", None);
    let d = setup.start();
    setup.drop_event("a.json", &event("info_notification", "survives 502s"));
    let msgs = tg.wait_messages(1, WAIT);
    assert!(msgs[0].text.contains("survives 502s"));
    assert_eq!(
        tg.calls("sendMessage")
            .iter()
            .filter(|c| c.status == 502)
            .count(),
        2
    );
    tg.set_down(true);
    setup.drop_event("b.json", &event("info_notification", "survives an outage"));
    d.out.wait_for("retrying in", WAIT);
    tg.set_down(false);
    tg.wait_until(WAIT, "delivery after the outage", |s| {
        s.messages
            .iter()
            .any(|m| m.text.contains("survives an outage"))
    });
}

#[test]
fn a_repeated_event_id_is_skipped_even_after_a_restart() {
    let tg = FakeTelegram::start();
    let setup = Setup::new("dedup", &tg.url(), &[111], "");
    let mut d = setup.start();
    let body = json!({"type": "info_notification", "title": "only once", "event_id": "dup-1"});
    setup.drop_event("a.json", &body.to_string());
    d.out.wait_for("delivered dup-1 to chat 111 ", WAIT);
    // The same event again, from another file, to the same daemon...
    setup.drop_event("b.json", &body.to_string());
    d.out
        .wait_for("b.json: event dup-1 was already accepted; skipped", WAIT);
    // ...and to a restarted one.
    d.kill9();
    d = setup.start();
    setup.drop_event("c.json", &body.to_string());
    d.out
        .wait_for("c.json: event dup-1 was already accepted; skipped", WAIT);
    settle(&setup, &d, &["111"], "dedup");
    let copies = tg
        .messages()
        .iter()
        .filter(|m| m.text.contains("only once"))
        .count();
    assert_eq!(copies, 1);
    assert_eq!(
        Setup::files(&setup.events),
        ["failed"],
        "duplicates leave the directory"
    );
}

#[test]
fn sends_are_paced_by_the_limits() {
    let tg = FakeTelegram::start();
    // Five a second to a chat; a burst of six cannot go out in under a second.
    let limits = "[limits]\nper_chat_per_second = 5\nper_group_per_minute = 6000\nglobal_per_second = 1000\n";
    let setup = Setup::new("pace", &tg.url(), &[111], "");
    let text = fs::read_to_string(&setup.config)
        .unwrap()
        .replace("[limits]\nper_chat_per_second = 100000\nper_group_per_minute = 6000000\nglobal_per_second = 100000\n", limits);
    fs::write(&setup.config, text).unwrap();
    let _d = setup.start();
    for i in 0..6 {
        setup.drop_event(
            &format!("p{i}.json"),
            &event("info_notification", &format!("paced {i}")),
        );
    }
    let msgs = tg.wait_messages(6, WAIT);
    for pair in msgs.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(
            gap >= Duration::from_millis(190),
            "{gap:?} between two sends to one chat"
        );
    }
}

/// A kept-alive connection the server closed while the daemon was idle is
/// opened again for the next send, which does not fail for it.
#[test]
fn a_connection_the_server_closed_while_idle_costs_no_failed_send() {
    let tg = FakeTelegram::start();
    tg.close_idle_after(Duration::from_millis(200));
    let setup = Setup::new("idle-close", &tg.url(), &[111], "");
    let d = setup.start();
    setup.drop_event("one.json", &event("info_notification", "before the close"));
    tg.wait_messages(1, WAIT);
    // Every connection but the long poll's has been idle and closed.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (accepted, closed) = tg.connections();
        if closed >= 1 && accepted - closed <= 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the fake never closed the idle connections ({accepted} accepted, {closed} closed)"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    setup.drop_event("two.json", &event("info_notification", "after the close"));
    tg.wait_messages(2, WAIT);
    settle(&setup, &d, &["111"], "idle-close");
    let out = d.out.text();
    assert!(
        !out.contains("failed (attempt"),
        "a send failed on the closed connection:\n{out}"
    );
    let counts = tally(&tg.messages());
    assert_eq!(counts.values().sum::<usize>(), 3, "{counts:?}");
    assert!(counts.values().all(|n| *n == 1), "{counts:?}");
}
