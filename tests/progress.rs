//! Progress edited in place (issue 12): one message per task, edits paced
//! and coalesced, the end shown on it and sent as a message of its own,
//! the same message edited after a restart.

#[path = "support/daemon.rs"]
mod daemon;
#[path = "support/harness.rs"]
mod harness;
#[path = "support/receivers.rs"]
mod receivers;
#[path = "support/telegram.rs"]
mod telegram;

use std::collections::HashSet;
use std::time::Duration;

use daemon::Setup;
use harness::{processed, start_polling, wait_fs, webhook_toml, ME, WAIT};
use receivers::Recorder;
use serde_json::{json, Value};
use telegram::FakeTelegram;

fn step(task: &str, n: u32, of: u32) -> String {
    json!({"type": "task_progress", "title": "Copying photos", "task_id": task,
           "event_id": format!("{task}-{n}"), "description": format!("step {n} of {of}"),
           "data": {"current": n, "total": of}})
    .to_string()
}

fn done(task: &str) -> String {
    json!({"type": "task_completion", "title": "Photos copied", "task_id": task,
           "event_id": format!("{task}-done"), "description": "all there"})
    .to_string()
}

fn edits(tg: &FakeTelegram) -> Vec<(i64, String)> {
    tg.calls("editMessageText")
        .into_iter()
        .filter(|c| c.status == 200)
        .map(|c| {
            let id = c.params["message_id"].as_i64().unwrap_or(0);
            (id, c.params["text"].as_str().unwrap_or("").to_string())
        })
        .collect()
}

#[test]
fn twenty_progress_events_in_two_seconds_are_one_message_with_a_few_edits_then_the_completion() {
    let tg = FakeTelegram::start();
    let hooks = Recorder::start();
    let extra = format!(
        "[notifications]\nprogress_min_edit_seconds = 1\n\n{}",
        webhook_toml("s", &[hooks.url("/hooks")])
    );
    let setup = Setup::new("progress", &tg.url(), &[ME], &extra);
    let d = start_polling(&tg, &setup);
    for n in 1..=20 {
        setup.drop_event(&format!("p{n:02}.json"), &step("copy", n, 20));
        std::thread::sleep(Duration::from_millis(100)); // the writer's pace, not a wait
    }
    // Every progress event is reported delivered, with the one message's id.
    let log = hooks.wait_until(WAIT, "20 event_processed", |r| {
        (1..=20).all(|n| !processed(r, &format!("copy-{n}")).is_empty())
    });
    let progress_msgs: Vec<_> = tg
        .messages()
        .into_iter()
        .filter(|m| m.text.contains("Copying photos"))
        .collect();
    assert_eq!(progress_msgs.len(), 1, "one message: {progress_msgs:?}");
    let mid = progress_msgs[0].message_id;
    let ids: HashSet<i64> = (1..=20)
        .flat_map(|n| processed(&log, &format!("copy-{n}")))
        .map(|r| {
            let v: Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(v["event"]["status"], "delivered", "{v}");
            v["event"]["telegram_message_id"].as_i64().unwrap_or(-1)
        })
        .collect();
    assert_eq!(ids, HashSet::from([mid]));
    // The latest state is shown in the end, after a few paced edits.
    tg.wait_until(WAIT, "the last step shown", |s| {
        s.current
            .get(&mid)
            .is_some_and(|m| m.text.contains("step 20 of 20"))
    });
    let n = edits(&tg).len();
    assert!((1..=6).contains(&n), "{n} edits: {:?}", edits(&tg));
    assert!(tg.current(mid).unwrap().text.contains("▓▓▓▓▓▓▓▓▓▓ 100%"));

    setup.drop_event("z.json", &done("copy"));
    tg.wait_until(WAIT, "the completion as a new message", |s| {
        s.messages.iter().any(|m| m.text.contains("Photos copied"))
    });
    let completion = tg
        .messages()
        .into_iter()
        .find(|m| m.text.contains("Photos copied"))
        .unwrap();
    assert!(
        completion.message_id > mid && !completion.silent,
        "it notifies"
    );
    let last = tg.current(mid).unwrap();
    assert!(
        last.text.contains("Completed"),
        "the last edit: {}",
        last.text
    );
    assert_eq!(tg.messages().len(), 2, "{:?}", tg.messages());
    d.out.wait_for("delivered copy-done", WAIT);
}

#[test]
fn a_restart_between_progress_events_keeps_editing_the_same_message() {
    let tg = FakeTelegram::start();
    let extra = "[notifications]\nprogress_min_edit_seconds = 0\n";
    let setup = Setup::new("progress-restart", &tg.url(), &[ME], extra);
    let mut d = start_polling(&tg, &setup);
    setup.drop_event("a.json", &step("sync", 1, 4));
    let first = tg.wait_messages(1, WAIT).remove(0);
    d.out.wait_for("delivered sync-1", WAIT);
    d.kill9();

    let mut d = start_polling(&tg, &setup);
    setup.drop_event("b.json", &step("sync", 2, 4));
    tg.wait_until(WAIT, "the same message edited", |s| {
        s.current
            .get(&first.message_id)
            .is_some_and(|m| m.text.contains("step 2 of 4"))
    });
    assert_eq!(tg.messages().len(), 1, "no new message after the restart");
    // The same state again is Telegram's "message is not modified": fine.
    let mut same = serde_json::from_str::<Value>(&step("sync", 2, 4)).unwrap();
    same["event_id"] = json!("sync-2-again");
    setup.drop_event("c.json", &same.to_string());
    d.out.wait_for("delivered sync-2-again", WAIT);
    assert!(tg.calls("editMessageText").iter().any(|c| c
        .description
        .as_deref()
        .is_some_and(|t| t.contains("not modified"))));
    assert_eq!(tg.messages().len(), 1);

    // A person deleted it: the next state is a new message, edited from then on.
    tg.delete_message(first.message_id);
    setup.drop_event("d.json", &step("sync", 3, 4));
    let second = tg.wait_messages(2, WAIT).remove(1);
    assert!(second.text.contains("step 3 of 4"), "{}", second.text);
    // (A kill between Telegram's answer and its record would repeat it.)
    d.out.wait_for("delivered sync-3", WAIT);
    d.kill9();
    let _d = start_polling(&tg, &setup);
    setup.drop_event("e.json", &step("sync", 4, 4));
    tg.wait_until(WAIT, "the new message edited", |s| {
        s.current
            .get(&second.message_id)
            .is_some_and(|m| m.text.contains("step 4 of 4"))
    });
    assert_eq!(tg.messages().len(), 2);
    wait_fs(WAIT, "the queue empty", None, || {
        Setup::files(&setup.state.join("queue")).is_empty()
    });
}
