//! Answers come back: button presses, messages and expiry become response
//! files (issue "Answers come back").

#[path = "support/daemon.rs"]
mod daemon;
#[path = "support/telegram.rs"]
mod telegram;

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use daemon::{Daemon, Setup};
use serde_json::{json, Value};
use telegram::{FakeTelegram, Sent};

const WAIT: Duration = Duration::from_secs(30);
const ME: i64 = 111;

fn approval(task: &str, title: &str, extra: Value) -> String {
    let mut data = json!({"options": ["Approve", "Deny", "Later"], "requires_response": true});
    if let (Value::Object(d), Value::Object(e)) = (&mut data, extra) {
        d.extend(e);
    }
    json!({"type": "approval_request", "title": title, "task_id": task,
           "description": "Deploy v1.2.3?", "data": data})
    .to_string()
}

fn buttons(m: &Sent) -> Vec<String> {
    m.reply_markup.as_ref().map_or(Vec::new(), |r| {
        r["inline_keyboard"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|row| row.as_array().unwrap().clone())
            .map(|b| b["callback_data"].as_str().unwrap().to_string())
            .collect()
    })
}

/// Response files in `dir`, parsed, by name.
fn responses(dir: &Path) -> Vec<(String, Value)> {
    Setup::files(dir)
        .into_iter()
        .map(|n| {
            let v = serde_json::from_str(&fs::read_to_string(dir.join(&n)).unwrap()).unwrap();
            (n, v)
        })
        .collect()
}

/// Starts a daemon and waits until it is polling.
fn start(tg: &FakeTelegram, setup: &Setup) -> Daemon {
    let d = setup.start();
    tg.wait_until(WAIT, "a getUpdates long poll", |s| {
        s.in_flight("getUpdates") > 0
    });
    d
}

#[test]
fn a_press_writes_the_response_answers_and_removes_the_buttons() {
    let tg = FakeTelegram::start();
    let setup = Setup::new("press", &tg.url(), &[ME], "");
    let d = start(&tg, &setup);
    setup.drop_event("a.json", &approval("deploy_1", "Deploy?", json!({})));
    let msg = tg.wait_messages(1, WAIT).remove(0);
    assert_eq!(
        buttons(&msg),
        ["approve_deploy_1", "deny_deploy_1", "opt2_deploy_1"]
    );

    let query = tg.press(ME, "john_doe", msg.message_id, ME, "approve_deploy_1");
    d.out.wait_for("chose \"Approve\"", WAIT);
    let files = responses(&setup.responses);
    assert_eq!(files.len(), 1, "{files:?}");
    let (name, r) = &files[0];
    assert!(
        name.starts_with(&format!("telegram_callback_{ME}_")) && name.ends_with(".json"),
        "{name}"
    );
    let stamp = name.split('_').nth(3).unwrap();
    assert_eq!(stamp.len(), 8, "YYYYmmdd in {name}");
    let mode = fs::metadata(setup.responses.join(name))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(
        mode, 0o640,
        "{name} has mode {mode:o}: group-readable, never world-readable"
    );
    for key in [
        "timestamp",
        "user_id",
        "username",
        "first_name",
        "callback_data",
        "original_message_id",
        "response_type",
        "event_id",
        "option",
    ] {
        assert!(
            r.get(key).is_some_and(|v| !v.is_null()),
            "{key} missing in {r}"
        );
    }
    assert_eq!(r["user_id"], json!(ME));
    assert_eq!(r["username"], json!("john_doe"));
    assert_eq!(r["callback_data"], json!("approve_deploy_1"));
    assert_eq!(r["original_message_id"], json!(msg.message_id));
    assert_eq!(r["response_type"], json!("callback_query"));
    assert_eq!(r["event_id"], json!("deploy_1"));
    assert_eq!(r["option"], json!("Approve"));

    tg.wait_until(WAIT, "buttons removed and the decision shown", |s| {
        s.calls("answerCallbackQuery")
            .iter()
            .any(|c| c.params["callback_query_id"] == json!(query.to_string()))
            && s.current.get(&msg.message_id).is_some_and(|m| {
                m.reply_markup
                    .as_ref()
                    .is_none_or(|r| r["inline_keyboard"].as_array().is_none_or(|k| k.is_empty()))
                    && m.text.contains("Approve: by @john_doe")
            })
    });
    assert!(!tg.calls("editMessageReplyMarkup").is_empty());
}

#[test]
fn a_second_press_and_a_strangers_press_write_nothing() {
    let tg = FakeTelegram::start();
    let setup = Setup::new("second", &tg.url(), &[ME], "");
    let d = start(&tg, &setup);
    setup.drop_event("a.json", &approval("t2", "Deploy?", json!({})));
    let msg = tg.wait_messages(1, WAIT).remove(0);
    tg.press(666, "mallory", msg.message_id, ME, "approve_t2");
    d.out
        .wait_for("user 666 (@mallory), who is not in allowed_users", WAIT);
    tg.press(ME, "john", msg.message_id, ME, "deny_t2");
    d.out.wait_for("chose \"Deny\"", WAIT);
    tg.press(ME, "john", msg.message_id, ME, "approve_t2");
    tg.wait_until(WAIT, "three answered queries", |s| {
        s.calls("answerCallbackQuery").len() >= 3
    });
    let answers: Vec<String> = tg
        .calls("answerCallbackQuery")
        .iter()
        .map(|c| c.params["text"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(answers[0], "Not authorized.");
    assert_eq!(answers[1], "Recorded: Deny");
    assert_eq!(answers[2], "Already decided: Deny");
    let files = responses(&setup.responses);
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(files[0].1["option"], json!("Deny"));
}

#[test]
fn a_press_after_a_restart_resolves_event_and_option() {
    let tg = FakeTelegram::start();
    let setup = Setup::new("restart-press", &tg.url(), &[ME], "");
    let mut d = start(&tg, &setup);
    let long_task = "x".repeat(80);
    setup.drop_event("a.json", &approval(&long_task, "Long one", json!({})));
    let msg = tg.wait_messages(1, WAIT).remove(0);
    let data = buttons(&msg)[2].clone();
    assert!(data.starts_with("k2:"), "{data}");
    d.out.wait_for("delivered", WAIT);
    d.kill9();
    let d2 = start(&tg, &setup);
    tg.press(ME, "john", msg.message_id, ME, &data);
    d2.out.wait_for("chose \"Later\"", WAIT);
    let files = responses(&setup.responses);
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].1["event_id"], json!(long_task));
    assert_eq!(files[0].1["option"], json!("Later"));
    assert_eq!(files[0].1["callback_data"], json!(data));
    drop(d);
}

#[test]
fn messages_become_response_files_and_replies_name_their_event() {
    let tg = FakeTelegram::start();
    let setup = Setup::new("messages", &tg.url(), &[ME], "");
    let d = start(&tg, &setup);
    setup.drop_event(
        "a.json",
        &json!({"type": "task_completion", "title": "Build done",
        "event_id": "evt-build-9"})
        .to_string(),
    );
    let msg = tg.wait_messages(1, WAIT).remove(0);
    d.out.wait_for("delivered evt-build-9", WAIT);
    // Two in the same second, one of them a reply to the bot's message.
    tg.user_message(ME, "john", ME, "looks good", Some(msg.message_id));
    tg.user_message(ME, "john", ME, "ship it", None);
    tg.user_message(666, "mallory", 666, "let me in", None);
    d.out
        .wait_for("user 666 (@mallory), who is not in allowed_users", WAIT);
    tg.wait_until(WAIT, "both recorded", |_| {
        Setup::files(&setup.responses).len() >= 2
    });
    let files = responses(&setup.responses);
    assert_eq!(files.len(), 2, "{files:?}");
    let by_text = |t: &str| {
        files
            .iter()
            .find(|(_, v)| v["message_text"] == json!(t))
            .unwrap()
            .1
            .clone()
    };
    let reply = by_text("looks good");
    assert_eq!(reply["event_id"], json!("evt-build-9"));
    assert_eq!(reply["response_type"], json!("message"));
    assert_eq!(reply["message_type"], json!("text"));
    for key in [
        "timestamp",
        "user_id",
        "username",
        "first_name",
        "message_text",
    ] {
        assert!(
            reply.get(key).is_some_and(|v| !v.is_null()),
            "{key} missing"
        );
    }
    assert!(by_text("ship it")["event_id"].is_null());
    for (name, _) in &files {
        assert!(
            name.starts_with(&format!("telegram_response_{ME}_")),
            "{name}"
        );
    }
    tg.wait_until(WAIT, "a reply to the stranger", |s| {
        s.messages
            .iter()
            .any(|m| m.chat_id == "666" && m.text == "Not authorized.")
    });
}

#[test]
fn commands_are_registered_and_answered() {
    let tg = FakeTelegram::start();
    let setup = Setup::new("commands", &tg.url(), &[ME], "");
    let _d = start(&tg, &setup);
    assert!(!tg.calls("deleteWebhook").is_empty());
    let commands = tg.commands().expect("setMyCommands");
    let names: HashSet<String> = commands
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["command"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        names,
        HashSet::from(
            ["start", "help", "status", "mute", "unmute", "pause", "resume", "pending"]
                .map(String::from)
        )
    );
    tg.user_message(ME, "john", ME, "/status", None);
    tg.user_message(ME, "john", ME, "/help@cct_bot", None);
    let replies = tg.wait_messages(2, WAIT);
    assert!(
        replies[0].text.starts_with("cctelegram ") && replies[0].text.contains("Messages sent: 0"),
        "{}",
        replies[0].text
    );
    assert!(replies[1].text.contains("/status"), "{}", replies[1].text);
    assert!(
        Setup::files(&setup.responses).is_empty(),
        "commands are not responses"
    );
}

#[test]
fn an_unanswered_approval_expires_even_across_a_restart() {
    let tg = FakeTelegram::start();
    let setup = Setup::new("expire", &tg.url(), &[ME], "");
    let mut d = start(&tg, &setup);
    // 0.05 minutes: three seconds.
    setup.drop_event(
        "a.json",
        &approval("exp_1", "Expiring", json!({"timeout_minutes": 0.05})),
    );
    let msg = tg.wait_messages(1, WAIT).remove(0);
    d.out.wait_for("delivered exp_1", WAIT);
    d.kill9();
    d = start(&tg, &setup);
    d.out.wait_for("expired unanswered", WAIT);
    let waited = msg.at.elapsed();
    assert!(waited >= Duration::from_secs(3), "expired after {waited:?}");
    let files = responses(&setup.responses);
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(files[0].1["response_type"], json!("expired"));
    assert_eq!(files[0].1["event_id"], json!("exp_1"));
    tg.wait_until(WAIT, "buttons gone, expiry shown", |s| {
        s.current
            .get(&msg.message_id)
            .is_some_and(|m| m.text.contains("Expired") && m.reply_markup.is_none())
    });
    // A late press is told, and writes nothing.
    tg.press(ME, "john", msg.message_id, ME, "approve_exp_1");
    tg.wait_until(WAIT, "the late press answered", |s| {
        s.calls("answerCallbackQuery")
            .iter()
            .any(|c| c.params["text"] == json!("Already decided: it expired"))
    });
    assert_eq!(responses(&setup.responses).len(), 1);
}

#[test]
fn across_restarts_no_update_is_handled_twice_or_skipped() {
    let tg = FakeTelegram::start();
    let setup = Setup::new("offset", &tg.url(), &[ME], "");
    let mut d = start(&tg, &setup);
    let n = 300;
    for i in 0..n {
        tg.user_message(ME, "john", ME, &format!("note {i}"), None);
    }
    let mut kills_mid_batch = 0;
    for _ in 0..3 {
        if Setup::files(&setup.responses).len() >= n {
            break; // this daemon owes nothing, so it would never log again
        }
        d.out.wait_for("recorded as", WAIT);
        d.kill9();
        if Setup::files(&setup.responses).len() < n {
            kills_mid_batch += 1;
        }
        d = start(&tg, &setup);
    }
    assert!(
        kills_mid_batch > 0,
        "no kill fell inside the work; the test proves nothing"
    );
    tg.wait_until(WAIT, "every note recorded", |_| {
        Setup::files(&setup.responses).len() >= n
    });
    // One more, handled after everything before it.
    tg.user_message(ME, "john", ME, "last", None);
    tg.wait_until(WAIT, "the last note", |_| {
        Setup::files(&setup.responses).len() > n
    });
    let texts: Vec<String> = responses(&setup.responses)
        .into_iter()
        .map(|(_, v)| v["message_text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(texts.len(), n + 1, "duplicates: {texts:?}");
    let unique: HashSet<&String> = texts.iter().collect();
    assert_eq!(unique.len(), n + 1);
    drop(d);
}

#[test]
fn a_409_conflict_is_reported_and_survived() {
    let tg = FakeTelegram::start();
    let setup = Setup::new("conflict", &tg.url(), &[ME], "");
    tg.set_conflict(true);
    let d = setup.start();
    d.out.wait_for(
        "409 Conflict: another program is polling this bot token",
        WAIT,
    );
    tg.set_conflict(false);
    tg.user_message(ME, "john", ME, "after the conflict", None);
    d.out.wait_for("recorded as", WAIT);
    d.out.wait_for("getUpdates works again", WAIT);
    assert_eq!(Setup::files(&setup.responses).len(), 1);
}

#[test]
fn a_copy_sent_after_the_decision_arrives_without_buttons() {
    let tg = FakeTelegram::start();
    let group = -100_222;
    // A group gets a message every 3 s at most: the approval's copy there
    // waits behind the first event while the private chat's copy is pressed.
    let setup = Setup::new("late-copy", &tg.url(), &[ME, group], "");
    let text = fs::read_to_string(&setup.config).unwrap().replace(
        "per_group_per_minute = 6000000",
        "per_group_per_minute = 20",
    );
    fs::write(&setup.config, text).unwrap();
    let d = start(&tg, &setup);
    setup.drop_event(
        "a.json",
        &json!({"type": "info_notification", "title": "first"}).to_string(),
    );
    tg.wait_messages(2, WAIT);
    setup.drop_event("b.json", &approval("late_1", "Late copy", json!({})));
    tg.wait_until(WAIT, "the private copy", |s| {
        s.messages
            .iter()
            .any(|m| m.chat_id == ME.to_string() && m.text.contains("Late copy"))
    });
    let private = tg
        .messages()
        .into_iter()
        .find(|m| m.chat_id == ME.to_string() && m.text.contains("Late copy"))
        .unwrap();
    assert!(
        !tg.messages()
            .iter()
            .any(|m| m.chat_id == group.to_string() && m.text.contains("Late copy")),
        "the group copy should still be waiting for its pace"
    );
    tg.press(ME, "john", private.message_id, ME, "approve_late_1");
    d.out.wait_for("chose \"Approve\"", WAIT);
    tg.wait_until(
        WAIT,
        "the group copy, sent and then stripped of its buttons",
        |s| {
            s.messages.iter().any(|m| {
                m.chat_id == group.to_string()
                    && m.text.contains("Late copy")
                    && s.current.get(&m.message_id).is_some_and(|c| {
                        c.reply_markup.is_none() && c.text.contains("Approve: by @john")
                    })
            })
        },
    );
    assert_eq!(responses(&setup.responses).len(), 1);
}
