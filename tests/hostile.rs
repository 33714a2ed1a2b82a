//! Hostile numbers and hostile input (issue 9): out-of-range config values
//! are exit 78 naming the key; absurd `timeout_minutes` never panic; ids
//! and file names that try to climb out of the configured directories
//! stay inside; forged callback data decides nothing; strangers,
//! malformed updates and malformed receiver answers crash nothing and
//! write nothing they should not.

#[path = "support/daemon.rs"]
mod daemon;
#[path = "support/harness.rs"]
mod harness;
#[path = "support/receivers.rs"]
mod receivers;
#[path = "support/telegram.rs"]
mod telegram;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use daemon::{run_cli, Setup};
use harness::{
    approval, count_in, edit_config, notice, processed, responses, run_timed, start_polling, tree,
    wait_fs, wait_message, webhook_toml, ME, WAIT,
};
use receivers::Recorder;
use serde_json::{json, Value};
use telegram::http::{Response, Server};
use telegram::FakeTelegram;

const GROUP: i64 = -100222;

// ---- config numbers ----

/// Where a bad value goes: (text in the harness config to replace, its
/// replacement) or `None` to append the text as a table of its own.
struct BadNumber {
    key: &'static str,
    replace: Option<&'static str>,
    text: &'static str,
}

const BAD_NUMBERS: &[BadNumber] = &[
    BadNumber {
        key: "per_chat_per_second",
        replace: Some("per_chat_per_second = 100000"),
        text: "per_chat_per_second = 1e-20",
    },
    BadNumber {
        key: "per_chat_per_second",
        replace: Some("per_chat_per_second = 100000"),
        text: "per_chat_per_second = nan",
    },
    BadNumber {
        key: "per_group_per_minute",
        replace: Some("per_group_per_minute = 6000000"),
        text: "per_group_per_minute = -1",
    },
    BadNumber {
        key: "global_per_second",
        replace: Some("global_per_second = 100000"),
        text: "global_per_second = -inf",
    },
    BadNumber {
        key: "max_event_bytes",
        replace: Some("[limits]\n"),
        text: "[limits]\nmax_event_bytes = -1\n",
    },
    BadNumber {
        key: "initial_delay_ms",
        replace: None,
        text: "[webhook.retry]\ninitial_delay_ms = -5\n",
    },
    BadNumber {
        key: "max_delay_ms",
        replace: None,
        text: "[webhook.retry]\nmax_delay_ms = -1000\n",
    },
    BadNumber {
        key: "backoff_multiplier",
        replace: None,
        text: "[webhook.retry]\nbackoff_multiplier = nan\n",
    },
    BadNumber {
        key: "backoff_multiplier",
        replace: None,
        text: "[webhook.retry]\nbackoff_multiplier = inf\n",
    },
    BadNumber {
        key: "timeout_seconds",
        replace: None,
        text: "[webhook]\ntimeout_seconds = -30\n",
    },
    BadNumber {
        key: "max_in_flight",
        replace: None,
        text: "[webhook]\nmax_in_flight = -4\n",
    },
    BadNumber {
        key: "poll_timeout_seconds",
        replace: Some("[telegram]\n"),
        text: "[telegram]\npoll_timeout_seconds = -30\n",
    },
    BadNumber {
        key: "interval_seconds",
        replace: Some("[health]\n"),
        text: "[health]\ninterval_seconds = 9223372036854775807\n",
    },
    BadNumber {
        key: "memory_threshold_mb",
        replace: Some("[health]\n"),
        text: "[health]\nmemory_threshold_mb = -100\n",
    },
];

#[test]
fn config_numbers_out_of_range_are_exit_78_naming_the_key() {
    let tg = FakeTelegram::start();
    let mut wrong = Vec::new();
    for bad in BAD_NUMBERS {
        let setup = Setup::new("numbers", &tg.url(), &[ME], "");
        match bad.replace {
            Some(from) => edit_config(&setup, from, bad.text),
            None => {
                let mut text = fs::read_to_string(&setup.config).unwrap();
                text.push_str(&format!("\n{}", bad.text));
                fs::write(&setup.config, text).unwrap();
            }
        }
        let config = setup.config.to_str().unwrap();
        let (code, out) = run_cli(&["check-config", "--config", config], &[]);
        let case = bad.text.trim().replace('\n', " ");
        if code != 78 || !out.contains(bad.key) || out.contains("panicked") {
            let said = out.lines().find(|l| l.contains(bad.key)).unwrap_or("");
            wrong.push(format!("check-config with {case:?}: exit {code}: {said}"));
        }
        let (code, out) = run_timed(&["run", "--config", config], &[], Duration::from_secs(10));
        if code != Some(78) || !out.contains(bad.key) || out.contains("panicked") {
            let said: String = out.lines().take(3).collect::<Vec<_>>().join(" | ");
            wrong.push(format!(
                "run with {case:?}: exit {code:?} (None: still running): {said}"
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} answers were not exit 78 naming the key without a panic:\n{}",
        wrong.len(),
        2 * BAD_NUMBERS.len(),
        wrong.join("\n")
    );
}

// ---- timeout_minutes ----

#[test]
fn absurd_timeout_minutes_are_clamped_or_refused_without_a_panic() {
    let tg = FakeTelegram::start();
    let setup = Setup::new("timeouts", &tg.url(), &[ME], "");
    let d = start_polling(&tg, &setup);
    // Raw JSON, so numbers out of any range reach the parser as written.
    let values = [
        "1e300",
        "-1e300",
        "9223372036854775807",
        "18446744073709551615",
        "-5",
        "0",
        "1e999",
        "\"NaN\"",
        "\"Infinity\"",
        "\"-Infinity\"",
        "\"1e999\"",
        "[]",
        "{}",
    ];
    for (i, v) in values.iter().enumerate() {
        let body = format!(
            r#"{{"type":"approval_request","title":"timeout case {i:02}","task_id":"to{i}",
                "data":{{"options":["Approve","Deny"],"timeout_minutes":{v}}}}}"#
        );
        setup.drop_event(&format!("to{i:02}.json"), &body);
    }
    setup.drop_event("zz.json", &notice("after-timeouts", "after the timeouts"));
    wait_message(&tg, &d, "111", "after the timeouts", WAIT);
    // Each was delivered (clamped) or refused with a reason.
    for (i, v) in values.iter().enumerate() {
        let name = format!("to{i:02}.json");
        let delivered = count_in(&tg, "111", &format!("timeout case {i:02}")) > 0;
        let refused = setup.failed().join(format!("{name}.error")).exists();
        assert!(
            delivered || refused,
            "timeout_minutes = {v}: neither delivered nor refused with a reason"
        );
    }
    // Expiry timers for all of them are running; a press still decides one.
    let m = tg
        .messages()
        .into_iter()
        .find(|m| m.text.contains("timeout case 02"))
        .expect("i64::MAX minutes is a long time, not an error: it is delivered");
    tg.press(ME, "john", m.message_id, ME, "approve_to2");
    wait_fs(
        WAIT,
        "the press on timeout case 02 recorded",
        Some(&d),
        || {
            responses(&setup.responses)
                .iter()
                .any(|(_, v)| v["event_id"] == "to2" && v["option"] == "Approve")
        },
    );
    assert!(d.child_running(), "{}", d.out.text());
    assert!(!d.out.text().contains("panicked"), "{}", d.out.text());
}

// ---- traversal ----

/// A setup whose directories lie four levels below its root, so that
/// "../../x" from any of them still lands inside the root, where the
/// snapshot sees it.
fn deep_setup(tag: &str, tg: &FakeTelegram, extra: &str) -> Setup {
    let mut s = Setup::new(tag, &tg.url(), &[ME, GROUP], extra);
    let deep = s.root.0.join("deep/1/2/3");
    let (events, responses, state) = (
        deep.join("events"),
        deep.join("responses"),
        deep.join("state"),
    );
    for (old, new) in [
        (&s.events, &events),
        (&s.responses, &responses),
        (&s.state, &state),
    ] {
        let (o, n) = (
            format!("{:?}", old.display().to_string()),
            format!("{:?}", new.display().to_string()),
        );
        edit_config(&s, &o, &n);
    }
    fs::remove_dir_all(&s.events).unwrap();
    fs::create_dir_all(&events).unwrap();
    s.events = events;
    s.responses = responses;
    s.state = state;
    s
}

/// Paths that appeared, vanished or changed size between two snapshots
/// and do not lie inside one of `inside` (relative to the root).
fn outside_changes(
    before: &BTreeMap<PathBuf, i64>,
    after: &BTreeMap<PathBuf, i64>,
    inside: &[PathBuf],
) -> Vec<String> {
    let ok = |p: &Path| inside.iter().any(|d| p.starts_with(d));
    let mut v = Vec::new();
    for (p, size) in after {
        if before.get(p) != Some(size) && !ok(p) {
            v.push(format!("{} (new or changed)", p.display()));
        }
    }
    for p in before.keys() {
        if !after.contains_key(p) && !ok(p) {
            v.push(format!("{} (removed)", p.display()));
        }
    }
    v
}

#[test]
fn traversal_ids_and_file_names_stay_inside_the_configured_directories() {
    let tg = FakeTelegram::start();
    let setup = deep_setup("traversal", &tg, "");
    let pid = std::process::id();
    let abs = format!("/tmp/cct-abs-{pid}");
    let far = format!("../../../../../../../../../../tmp/cct-far-{pid}");
    let ids: Vec<String> = vec![
        "../../x".into(),
        "../../../../x".into(),
        far.clone(),
        abs.clone(),
        format!("{abs}/y"),
        "..".into(),
        ".".into(),
        "".into(),
        "a/../../../b".into(),
        "..\\..\\w".into(),
        "~/x".into(),
        "$HOME/x".into(),
        "%2e%2e%2f%2e%2e%2fx".into(),
        "\u{202e}txt.exe".into(),
        "x".repeat(300),
        "con:1?*|<>".into(),
    ];
    // The root of the temp tree, config included, before anything ran.
    let root = setup.root.0.clone();
    let d = start_polling(&tg, &setup);
    let before = tree(&root);
    for (i, id) in ids.iter().enumerate() {
        let a = json!({"type": "approval_request", "title": format!("climb approval {i:02}"),
                       "task_id": id, "event_id": id,
                       "data": {"options": ["Approve", "Deny", "Later"]}});
        setup.drop_event(&format!("ta{i:02}.json"), &a.to_string());
        let n = json!({"type": "task_completion", "title": format!("climb notice {i:02}"),
                       "event_id": format!("{id}/n"), "task_id": format!("{id}/n")});
        setup.drop_event(&format!("tn{i:02}.json"), &n.to_string());
    }
    // Weird event file names, some with bodies that are refused.
    // 250 bytes: its temporary name fits in 255, NAME.error does not.
    let long = format!("{}.json", "L".repeat(245));
    let names = [
        "x...json".to_string(), // a leading "." is a temporary name, left alone
        "-rf.json".to_string(),
        " .json".to_string(),
        "a b\tc.json".to_string(),
        "\\..\\x.json".to_string(),
        "\u{202e}nosj.json".to_string(),
        long.clone(),
    ];
    for (i, name) in names.iter().enumerate() {
        let body = if i % 2 == 0 {
            notice(&format!("weird-{i}"), &format!("weird name {i}"))
        } else {
            "{not json".to_string()
        };
        setup.drop_event(name, &body);
    }
    setup.drop_event("zz.json", &notice("after-climb", "after the climbing"));
    wait_message(&tg, &d, "111", "after the climbing", WAIT);
    // Answers to what was delivered: presses and a reply.
    for m in tg.messages() {
        if m.chat_id != "111" {
            continue;
        }
        if let Some(k) = m.reply_markup.as_ref() {
            if let Some(data) = k["inline_keyboard"][0][0]["callback_data"].as_str() {
                tg.press(ME, "john", m.message_id, ME, data);
            }
        }
        if m.text.contains("climb notice 00") {
            tg.user_message(ME, "john", ME, "a reply", Some(m.message_id));
        }
    }
    tg.user_message(ME, "john", ME, "the end", None);
    wait_fs(WAIT, "the last message recorded", Some(&d), || {
        responses(&setup.responses)
            .iter()
            .any(|(_, v)| v["message_text"] == "the end")
    });
    // Every weird file was taken or refused with a reason, none is left.
    for name in &names {
        let left = setup.events.join(name).exists();
        assert!(!left, "{name:?} was left in events_dir:\n{}", d.out.text());
    }
    let after = tree(&root);
    let rel = |p: &Path| p.strip_prefix(&root).unwrap().to_path_buf();
    let inside = [rel(&setup.events), rel(&setup.responses), rel(&setup.state)];
    let changes = outside_changes(&before, &after, &inside);
    assert!(
        changes.is_empty(),
        "files outside the configured directories changed:\n{changes:#?}"
    );
    for p in [abs.clone(), format!("/tmp/cct-far-{pid}")] {
        assert!(!Path::new(&p).exists(), "{p} was created");
        assert!(
            !Path::new(&format!("{p}.json")).exists(),
            "{p}.json was created"
        );
    }
    assert!(d.child_running(), "{}", d.out.text());
    assert!(!d.out.text().contains("panicked"), "{}", d.out.text());
}

// ---- forged callback data ----

#[test]
fn forged_callback_data_decides_nothing() {
    let tg = FakeTelegram::start();
    let setup = deep_setup("forged", &tg, "");
    let d = start_polling(&tg, &setup);
    let long_task = format!("long-{}", "t".repeat(70)); // buttons carry k-keys
    setup.drop_event("a.json", &approval("real_task", "the real one"));
    setup.drop_event("b.json", &approval("other_task", "the other one"));
    setup.drop_event("c.json", &approval(&long_task, "the long one"));
    setup.drop_event("e.json", &approval("decoy_task", "the decoy"));
    for t in ["the real one", "the other one", "the long one", "the decoy"] {
        wait_message(&tg, &d, "111", t, WAIT);
    }
    let msg = |t: &str| {
        tg.messages()
            .into_iter()
            .find(|m| m.chat_id == "111" && m.text.contains(t))
            .unwrap()
    };
    let (real, other, long, decoy) = (
        msg("the real one"),
        msg("the other one"),
        msg("the long one"),
        msg("the decoy"),
    );
    let long_data = long.reply_markup.as_ref().unwrap()["inline_keyboard"][0][0]["callback_data"]
        .as_str()
        .unwrap()
        .to_string();
    let key = long_data.split_once(':').expect("a k-key").1.to_string();
    // A copy of the decoy's button record outside the buttons directory:
    // a k-key that climbs to it must not find it.
    let buttons = setup.state.join("buttons");
    wait_fs(WAIT, "the decoy's button record", Some(&d), || {
        Setup::files(&buttons).len() >= 4
    });
    let decoy_record = Setup::files(&buttons)
        .into_iter()
        .map(|n| buttons.join(n))
        .find(|p| fs::read_to_string(p).is_ok_and(|t| t.contains("decoy_task")))
        .expect("a button record naming decoy_task");
    // buttons/../../.. is deep/1/2
    let outside = setup.root.0.join("deep/1/2/decoy.json");
    fs::copy(&decoy_record, &outside).unwrap();
    fs::remove_file(&decoy_record).unwrap();
    let outside_before = fs::read(&outside).unwrap();

    let forged: Vec<(i64, String)> = vec![
        (real.message_id, "approve_other_task".into()),
        (real.message_id, "deny_other_task".into()),
        (real.message_id, "opt1_other_task".into()),
        (real.message_id, "Z".repeat(64)),
        (real.message_id, format!("approve_{}", "z".repeat(56))),
        (real.message_id, "approve_".into()),
        (real.message_id, "".into()),
        (real.message_id, "opt99_real_task".into()),
        (real.message_id, "opt-1_real_task".into()),
        (real.message_id, "opt18446744073709551616_real_task".into()),
        (real.message_id, "approve_real_task\u{0}".into()),
        (long.message_id, format!("k9:{key}")),
        (long.message_id, "k0:0123456789abcdef0123".into()),
        (long.message_id, "k0:".into()),
        (long.message_id, "k:".into()),
        (long.message_id, "k0:../../../decoy".into()),
        (long.message_id, format!("k0:{key}/../../../../decoy")),
        (decoy.message_id, "k0:../../../decoy".into()),
    ];
    for (message_id, data) in &forged {
        tg.press(ME, "john", *message_id, ME, data);
    }
    // A marker after them: once it is recorded, every forged press was handled.
    tg.user_message(ME, "john", ME, "marker after the forgeries", None);
    wait_fs(WAIT, "the marker recorded", Some(&d), || {
        responses(&setup.responses)
            .iter()
            .any(|(_, v)| v["message_text"] == "marker after the forgeries")
    });
    let decided: Vec<(String, Value)> = responses(&setup.responses)
        .into_iter()
        .filter(|(_, v)| v["response_type"] == "callback_query")
        .collect();
    assert!(
        decided.is_empty(),
        "forged callback data decided something:\n{decided:#?}"
    );
    assert_eq!(
        fs::read(&outside).unwrap(),
        outside_before,
        "a forged k-key reached a file outside state_dir/buttons"
    );

    // The real presses still decide, each its own approval.
    tg.press(ME, "john", real.message_id, ME, "approve_real_task");
    tg.press(ME, "john", other.message_id, ME, "deny_other_task");
    tg.press(ME, "john", long.message_id, ME, &long_data);
    let want = [
        ("real_task", "Approve"),
        ("other_task", "Deny"),
        (long_task.as_str(), "Approve"),
    ];
    wait_fs(WAIT, "the three real presses recorded", Some(&d), || {
        let got = responses(&setup.responses);
        want.iter().all(|(task, option)| {
            got.iter()
                .any(|(_, v)| v["event_id"] == *task && v["option"] == *option)
        })
    });
    let decisions = responses(&setup.responses)
        .into_iter()
        .filter(|(_, v)| v["response_type"] == "callback_query")
        .count();
    assert_eq!(decisions, 3, "{:#?}", responses(&setup.responses));
    assert!(d.child_running());
}

// ---- strangers and malformed updates ----

#[test]
fn strangers_and_malformed_updates_crash_nothing_and_write_nothing() {
    let tg = FakeTelegram::start();
    let rec = Recorder::start();
    let setup = deep_setup(
        "strangers",
        &tg,
        &webhook_toml("stranger-secret", &[rec.url("/webhook/responses")]),
    );
    let d = start_polling(&tg, &setup);
    setup.drop_event("a.json", &approval("guarded", "guarded approval"));
    wait_message(&tg, &d, "111", "guarded approval", WAIT);
    wait_message(&tg, &d, "-100222", "guarded approval", WAIT);
    let mine = tg
        .messages()
        .into_iter()
        .find(|m| m.chat_id == "111")
        .unwrap();
    let group = tg
        .messages()
        .into_iter()
        .find(|m| m.chat_id == "-100222")
        .unwrap();

    // Strangers: in their own chat, in our group, pressing our buttons.
    tg.user_message(666, "mallory", 666, "let me in", None);
    tg.user_message(666, "mallory", GROUP, "hello group", Some(group.message_id));
    tg.press(666, "mallory", group.message_id, GROUP, "approve_guarded");
    tg.press(667, "eve", mine.message_id, ME, "approve_guarded");
    // Malformed updates: missing fields, wrong types, unknown kinds.
    let malformed = [
        json!({"message": "a string"}),
        json!({"message": {}}),
        json!({"message": {"message_id": "x", "from": {"id": "111"}, "chat": {"id": []}, "text": 5}}),
        json!({"message": {"message_id": 9, "from": {"id": ME, "is_bot": false, "first_name": "j"},
                           "chat": {"id": ME, "type": "private"}, "date": 0}}),
        json!({"message": {"message_id": 9, "chat": {"id": ME, "type": "private"}, "date": 0,
                           "text": "no sender"}}),
        json!({"callback_query": {"id": 5}}),
        json!({"callback_query": {"id": "6", "from": {"id": ME}, "data": 7}}),
        json!({"callback_query": {"id": "8", "from": {"id": 666, "is_bot": false, "first_name": "m"},
                                  "chat_instance": "1", "data": "approve_guarded",
                                  "message": {"message_id": mine.message_id, "date": 0,
                                              "chat": {"id": ME, "type": "private"}}}}),
        json!({"edited_message": {"message_id": 1, "text": "edited"}}),
        json!({"my_chat_member": {"chat": {"id": -5}}}),
        json!({"some_future_kind": {"x": [1, 2, {"y": null}]}}),
        json!({"message": {"message_id": 10, "from": {"id": 1e300}, "chat": {"id": -1e300},
                           "date": -1, "text": "big ids"}}),
    ];
    for u in malformed {
        tg.push_update(u);
    }
    // Unknown chat: our user writing in a group nobody configured.
    tg.user_message(ME, "john", -100999, "in an unknown group", None);
    // A huge message from our user: about 1 MB.
    tg.user_message(ME, "john", ME, &"H".repeat(1 << 20), None);

    tg.user_message(ME, "john", ME, "the real one after all that", None);
    wait_fs(WAIT, "the real message recorded", Some(&d), || {
        responses(&setup.responses)
            .iter()
            .any(|(_, v)| v["message_text"] == "the real one after all that")
    });
    let files = responses(&setup.responses);
    let by_strangers: Vec<&(String, Value)> = files
        .iter()
        .filter(|(_, v)| v["user_id"] != ME || v["response_type"] == "callback_query")
        .collect();
    assert!(
        by_strangers.is_empty(),
        "strangers or malformed updates wrote response files:\n{by_strangers:#?}"
    );
    let log = rec.requests();
    let webhooks: Vec<String> = log
        .iter()
        .filter(|r| {
            serde_json::from_slice::<Value>(&r.body).is_ok_and(|v| {
                let r = &v["response"];
                r["user"]["id"] != ME || r["interaction_type"] == "callback_query"
            })
        })
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    assert!(
        webhooks.is_empty(),
        "user_response webhooks for strangers: {webhooks:?}"
    );
    // The approval is still undecided: our press decides it.
    tg.press(ME, "john", mine.message_id, ME, "approve_guarded");
    wait_fs(WAIT, "our press recorded", Some(&d), || {
        responses(&setup.responses)
            .iter()
            .any(|(_, v)| v["event_id"] == "guarded" && v["option"] == "Approve")
    });
    assert!(d.child_running(), "{}", d.out.text());
    assert!(!d.out.text().contains("panicked"), "{}", d.out.text());
}

// ---- malformed answers from receivers ----

#[test]
fn malformed_answers_from_receivers_crash_nothing() {
    let tg = FakeTelegram::start();
    let good = Recorder::start();
    let answers: Vec<Arc<dyn Fn() -> Response + Send + Sync>> = vec![
        Arc::new(|| Response::new(200, "text/html", vec![0xffu8; 16 * 1024 * 1024])),
        Arc::new(|| {
            Response::new(
                200,
                "application/json",
                b"{\"status\": \x00\xff garbage".to_vec(),
            )
        }),
        Arc::new(|| Response::new(500, "application/octet-stream", vec![b'x'; 4 * 1024 * 1024])),
        Arc::new(|| {
            let mut r = Response::new(200, "application/json", "{}");
            r.headers.push(("Content-Type".into(), "image/png".into()));
            r.headers
                .push(("Retry-After".into(), "\u{ff}\u{fe}".into()));
            r
        }),
        Arc::new(Response::abort),
        Arc::new(|| Response::new(301, "text/plain", "moved")),
    ];
    let servers: Vec<Server> = answers
        .into_iter()
        .map(|a| Server::start(Arc::new(move |_req: &telegram::http::Request| a())))
        .collect();
    let mut endpoints: Vec<String> = servers
        .iter()
        .map(|s| format!("{}/hooks/x", s.url()))
        .collect();
    endpoints.push(good.url("/hooks/good"));
    let setup = deep_setup(
        "bad-answers",
        &tg,
        &webhook_toml("answer-secret", &endpoints),
    );
    let root = setup.root.0.clone();
    let before = tree(&root);
    let d = start_polling(&tg, &setup);
    for i in 0..4 {
        let id = format!("ba{i}");
        setup.drop_event(
            &format!("{id}.json"),
            &notice(&id, &format!("answered badly {i}")),
        );
    }
    for i in 0..4 {
        let id = format!("ba{i}");
        wait_message(&tg, &d, "111", &format!("answered badly {i}"), WAIT);
        good.wait_until(WAIT, &format!("{id} at the good endpoint"), |log| {
            processed(log, &id).iter().any(|r| r.status == 200)
        });
    }
    let after = tree(&root);
    let rel = |p: &Path| p.strip_prefix(&root).unwrap().to_path_buf();
    let inside = [rel(&setup.events), rel(&setup.responses), rel(&setup.state)];
    let changes = outside_changes(&before, &after, &inside);
    assert!(changes.is_empty(), "{changes:#?}");
    assert!(d.child_running(), "{}", d.out.text());
    assert!(!d.out.text().contains("panicked"), "{}", d.out.text());
}
