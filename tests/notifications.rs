//! Notifications people can live with (issue 12): priorities and sound,
//! quiet hours, /mute and /pause, /pending, forum topics and routes.

#[path = "support/daemon.rs"]
mod daemon;
#[path = "support/harness.rs"]
mod harness;
#[path = "support/receivers.rs"]
mod receivers;
#[path = "support/telegram.rs"]
mod telegram;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use daemon::{run_cli, Setup};
use harness::{approval, free_port, http_get, listen_on, start_polling, wait_fs, ME, WAIT};
use serde_json::{json, Value};
use telegram::{FakeTelegram, Sent};

const STRANGER: i64 = 666;
const GROUP: i64 = -100_555;

fn ev(id: &str, kind: &str, data: Value) -> String {
    json!({"type": kind, "title": id, "event_id": id, "description": "d", "data": data}).to_string()
}

/// The message whose title is `id` (the first, if several).
fn msg(tg: &FakeTelegram, id: &str) -> Sent {
    tg.messages()
        .into_iter()
        .find(|m| m.text.lines().next().is_some_and(|l| l.ends_with(id)))
        .unwrap_or_else(|| panic!("no message {id}"))
}

fn wait_titles(tg: &FakeTelegram, ids: &[&str]) {
    tg.wait_until(WAIT, &format!("messages {ids:?}"), |s| {
        ids.iter().all(|id| {
            s.messages
                .iter()
                .any(|m| m.text.lines().next().is_some_and(|l| l.ends_with(id)))
        })
    });
}

/// Waits for the bot's reply to a command, one that contains `needle`.
fn wait_reply(tg: &FakeTelegram, chat: i64, needle: &str) -> Sent {
    tg.wait_until(WAIT, &format!("a reply with {needle:?}"), |s| {
        s.messages
            .iter()
            .any(|m| m.chat_id == chat.to_string() && m.text.contains(needle))
    });
    tg.messages()
        .into_iter()
        .rev()
        .find(|m| m.text.contains(needle))
        .unwrap()
}

#[test]
fn low_silent_and_quiet_hours_messages_make_no_sound_urgent_and_critical_ring() {
    let tg = FakeTelegram::start();
    let setup = Setup::new("sound", &tg.url(), &[ME], "");
    let d = start_polling(&tg, &setup);
    for (id, data) in [
        ("normal", json!({})),
        ("low", json!({"priority": "low"})),
        ("quiet", json!({"silent": true})),
        ("urgent", json!({"priority": "urgent", "silent": true})),
        ("critical", json!({"severity": "critical"})),
    ] {
        setup.drop_event(&format!("{id}.json"), &ev(id, "info_notification", data));
    }
    wait_titles(&tg, &["normal", "low", "quiet", "urgent", "critical"]);
    let silent = |id: &str| msg(&tg, id).silent;
    assert!(!silent("normal") && !silent("urgent") && !silent("critical"));
    assert!(silent("low") && silent("quiet"));
    drop(d);

    // Quiet hours that cover now in Berlin, whichever of CET and CEST it
    // is: local time is UTC + 1 or + 2, so [UTC, UTC + 3 h) covers it.
    let tg = FakeTelegram::start();
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let h = secs / 3600 % 24;
    let window = format!("{:02}:00-{:02}:00", h, (h + 3) % 24);
    let extra =
        format!("[notifications]\nquiet_hours = \"{window}\"\ntimezone = \"Europe/Berlin\"\n");
    let setup = Setup::new("quiet", &tg.url(), &[ME], &extra);
    let _d = start_polling(&tg, &setup);
    setup.drop_event(
        "a.json",
        &ev("night", "info_notification", json!({"priority": "high"})),
    );
    setup.drop_event(
        "b.json",
        &ev("fire", "info_notification", json!({"priority": "urgent"})),
    );
    wait_titles(&tg, &["night", "fire"]);
    assert!(msg(&tg, "night").silent, "quiet hours {window} in Berlin");
    assert!(!msg(&tg, "fire").silent, "urgent rings in quiet hours");
}

#[test]
fn send_writes_priority_and_silent_and_refuses_a_wrong_priority() {
    let dir = daemon::TempDir::new("send-priority");
    let d = dir.0.to_str().unwrap();
    let (code, out) = run_cli(
        &[
            "send",
            "--type",
            "info_notification",
            "--title",
            "t",
            "--priority",
            "URGENT",
            "--silent",
            "--events-dir",
            d,
        ],
        &[],
    );
    assert_eq!(code, 0, "{out}");
    let id = out.trim();
    // The file's name is not the id (ids never name paths): find it by content.
    let v: Value = std::fs::read_dir(&dir.0)
        .unwrap()
        .filter_map(|e| serde_json::from_slice::<Value>(&std::fs::read(e.ok()?.path()).ok()?).ok())
        .find(|v| v["event_id"] == id)
        .expect("the event file send wrote");
    assert_eq!(
        (
            v["data"]["priority"].as_str(),
            v["data"]["silent"].as_bool()
        ),
        (Some("urgent"), Some(true))
    );
    let (code, out) = run_cli(
        &[
            "send",
            "--type",
            "x",
            "--title",
            "t",
            "--priority",
            "loud",
            "--events-dir",
            d,
        ],
        &[],
    );
    assert_eq!(code, 64, "{out}");
    assert!(
        out.contains("--priority must be low, normal, high or urgent"),
        "{out}"
    );
    let (_, help) = run_cli(&["help", "send"], &[]);
    assert!(
        help.contains("--priority P") && help.contains("--silent"),
        "{help}"
    );
}

#[test]
fn mute_and_pause_work_for_allowed_users_only_and_a_pause_lets_approvals_through() {
    let tg = FakeTelegram::start();
    let port = free_port();
    let setup = Setup::new("mute", &tg.url(), &[ME], "");
    listen_on(&setup, port);
    let d = start_polling(&tg, &setup);
    let commands = tg.commands().unwrap().to_string();
    for c in ["mute", "unmute", "pause", "resume", "pending"] {
        assert!(commands.contains(&format!("\"{c}\"")), "{c} in {commands}");
    }

    tg.user_message(STRANGER, "mallory", STRANGER, "/mute 1d", None);
    tg.user_message(STRANGER, "mallory", STRANGER, "/pause 1d", None);
    d.out.wait_for("message by user 666", WAIT);
    tg.user_message(ME, "me", ME, "/mute 30m", None);
    wait_reply(&tg, ME, "Muted until");
    setup.drop_event("a.json", &ev("hushed", "info_notification", json!({})));
    setup.drop_event(
        "b.json",
        &ev("alarm", "info_notification", json!({"priority": "urgent"})),
    );
    wait_titles(&tg, &["hushed", "alarm"]);
    assert!(msg(&tg, "hushed").silent && !msg(&tg, "alarm").silent);
    let strangers: Vec<Sent> = tg
        .messages()
        .into_iter()
        .filter(|m| m.chat_id == STRANGER.to_string())
        .collect();
    assert!(
        strangers.len() == 2 && strangers.iter().all(|m| m.text == "Not authorized."),
        "{strangers:?}"
    );
    // /status and GET /health show the mute; the stranger's pause is not there.
    tg.user_message(ME, "me", ME, "/status", None);
    let status = wait_reply(&tg, ME, "Muted: until");
    assert!(status.text.contains("Paused: no"), "{}", status.text);
    wait_fs(WAIT, "mute in /health", Some(&d), || {
        http_get(port, "/health").is_some_and(|(_, b)| {
            let v: Value = serde_json::from_str(&b).unwrap_or(Value::Null);
            v["notifications"]["muted_until"].is_string()
                && v["notifications"]["paused_until"].is_null()
        })
    });
    tg.user_message(ME, "me", ME, "/unmute", None);
    wait_reply(&tg, ME, "ring again");
    setup.drop_event("c.json", &ev("loud", "info_notification", json!({})));
    wait_titles(&tg, &["loud"]);
    assert!(!msg(&tg, "loud").silent);

    // A pause holds notifications; an approval passes.
    tg.user_message(ME, "me", ME, "/pause 2h", None);
    wait_reply(&tg, ME, "Paused until");
    setup.drop_event("d.json", &ev("held1", "info_notification", json!({})));
    wait_fs(WAIT, "held1 accepted", Some(&d), || {
        d.out.text().contains("accepted held1")
    });
    setup.drop_event("e.json", &ev("held2", "info_notification", json!({})));
    wait_fs(WAIT, "held2 accepted", Some(&d), || {
        d.out.text().contains("accepted held2")
    });
    setup.drop_event("f.json", &approval("go", "Ship it?"));
    wait_titles(&tg, &["Ship it?"]);
    let titles: Vec<String> = tg.messages().iter().map(|m| m.text.clone()).collect();
    assert!(
        !titles
            .iter()
            .any(|t| t.contains("held1") || t.contains("held2")),
        "held events were sent during the pause: {titles:?}"
    );
    let (code, out) = run_cli(&["status", "--config", setup.config.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("paused") && l.contains("until 20")),
        "{out}"
    );

    tg.user_message(ME, "me", ME, "/resume", None);
    wait_reply(&tg, ME, "Resumed");
    wait_titles(&tg, &["held1", "held2"]);
    let (a, b) = (msg(&tg, "held1"), msg(&tg, "held2"));
    assert!(a.message_id < b.message_id, "in the order accepted");
}

#[test]
fn a_pause_that_runs_out_across_a_restart_delivers_what_it_held_in_order() {
    let tg = FakeTelegram::start();
    let setup = Setup::new("pause-restart", &tg.url(), &[ME], "");
    let mut d = start_polling(&tg, &setup);
    tg.user_message(ME, "me", ME, "/pause 4s", None);
    wait_reply(&tg, ME, "Paused until");
    let paused_at = Instant::now();
    for id in ["first", "second", "third"] {
        setup.drop_event(
            &format!("{id}.json"),
            &ev(id, "info_notification", json!({})),
        );
        let needle = format!("accepted {id}");
        wait_fs(WAIT, &needle, Some(&d), || d.out.text().contains(&needle));
    }
    d.kill9();
    let _d = start_polling(&tg, &setup);
    wait_titles(&tg, &["first", "second", "third"]);
    let sent: Vec<Sent> = ["first", "second", "third"]
        .iter()
        .map(|i| msg(&tg, i))
        .collect();
    assert!(
        sent.windows(2).all(|w| w[0].message_id < w[1].message_id),
        "in order: {sent:?}"
    );
    assert!(
        sent[0].at.duration_since(paused_at) >= Duration::from_millis(3500),
        "sent {:?} after the pause began, before it ended",
        sent[0].at.duration_since(paused_at)
    );
}

fn buttons(m: &Sent) -> Vec<String> {
    m.reply_markup.as_ref().map_or(Vec::new(), |r| {
        r["inline_keyboard"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|row| row.as_array().cloned().unwrap_or_default())
            .filter_map(|b| b["callback_data"].as_str().map(str::to_string))
            .collect()
    })
}

#[test]
fn pending_shows_an_undecided_approval_again_and_a_press_on_the_copy_decides_both() {
    let tg = FakeTelegram::start();
    let setup = Setup::new("pending", &tg.url(), &[ME], "");
    let d = start_polling(&tg, &setup);
    tg.user_message(ME, "me", ME, "/pending", None);
    wait_reply(&tg, ME, "No approvals are waiting");
    setup.drop_event("a.json", &approval("deploy_7", "Deploy seven?"));
    wait_titles(&tg, &["Deploy seven?"]);
    let first = msg(&tg, "Deploy seven?");
    wait_fs(WAIT, "the approval recorded as delivered", Some(&d), || {
        d.out.text().contains("delivered deploy_7")
    });
    tg.user_message(ME, "me", ME, "/pending", None);
    tg.wait_until(WAIT, "a second copy", |s| {
        s.messages
            .iter()
            .filter(|m| m.text.contains("Deploy seven?"))
            .count()
            == 2
    });
    let copy = tg
        .messages()
        .into_iter()
        .rev()
        .find(|m| m.text.contains("Deploy seven?"))
        .unwrap();
    assert_ne!(copy.message_id, first.message_id);
    assert_eq!(buttons(&copy), buttons(&first));
    assert!(!buttons(&copy).is_empty());
    d.out.wait_for("shown again as message", WAIT);

    tg.press(ME, "me", copy.message_id, ME, "approve_deploy_7");
    d.out.wait_for("chose \"Approve\"", WAIT);
    tg.wait_until(
        WAIT,
        "both copies show the decision, without buttons",
        |s| {
            [first.message_id, copy.message_id].iter().all(|id| {
                s.current.get(id).is_some_and(|m| {
                    m.text.contains("Approve: by @me")
                        && m.reply_markup.as_ref().is_none_or(|r| {
                            r["inline_keyboard"].as_array().is_none_or(|k| k.is_empty())
                        })
                })
            })
        },
    );
    let files = harness::responses(&setup.responses);
    assert_eq!(files.len(), 1, "{files:?}");
}

#[test]
fn a_route_sends_build_events_into_a_topic_and_everything_else_to_chat_ids() {
    let tg = FakeTelegram::start();
    let route = format!(
        "[[route]]\ntypes = [\"build_*\", \"approval_request\"]\nchats = [\"{GROUP}/17\"]\n"
    );
    let setup = Setup::new("route", &tg.url(), &[ME], &route);
    let (code, out) = run_cli(
        &["check-config", "--config", setup.config.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("route 1: build_*, approval_request -> {GROUP}/17"))
            && out.contains(&format!("everything else -> {ME}")),
        "{out}"
    );
    let d = start_polling(&tg, &setup);
    setup.drop_event("a.json", &ev("broken", "build_failed", json!({})));
    setup.drop_event("b.json", &ev("fyi", "info_notification", json!({})));
    setup.drop_event("c.json", &approval("rel", "Release?"));
    wait_titles(&tg, &["broken", "fyi", "Release?"]);
    let (build, info, ask) = (msg(&tg, "broken"), msg(&tg, "fyi"), msg(&tg, "Release?"));
    assert_eq!(
        (build.chat_id.as_str(), build.thread_id),
        (GROUP.to_string().as_str(), Some(17))
    );
    assert_eq!(
        (info.chat_id.as_str(), info.thread_id),
        (ME.to_string().as_str(), None)
    );
    assert_eq!(ask.thread_id, Some(17));
    assert_eq!(
        tg.messages().len(),
        3,
        "each event to its route's chats only"
    );

    // A press in the topic decides; the message there is edited.
    d.out.wait_for("delivered rel", WAIT);
    tg.press(ME, "me", ask.message_id, GROUP, "approve_rel");
    tg.wait_until(WAIT, "the decision shown in the topic", |s| {
        s.current
            .get(&ask.message_id)
            .is_some_and(|m| m.text.contains("Approve: by @me"))
    });
    // A reply in the topic carries the event it answers.
    tg.user_message(ME, "me", GROUP, "on it", Some(build.message_id));
    wait_fs(WAIT, "the reply's response file", Some(&d), || {
        harness::responses(&setup.responses)
            .iter()
            .any(|(_, v)| v["message_text"] == "on it" && v["event_id"] == "broken")
    });
}
