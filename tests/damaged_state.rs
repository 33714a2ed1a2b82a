//! Damaged state (issue 9): every kind of file under `state_dir`, damaged
//! every way a power cut or a worn SD card damages it, and the daemon still
//! starts, delivers a new event and moves the damaged file to
//! `state_dir/damaged/` with a log line naming it, instead of leaving it in
//! place. `dlq list` shows a damaged dead letter instead of failing.
//!
//! Data-driven: one table of kinds of state file, one of damages. Each
//! test makes a real state directory with a daemon (a queue entry, an
//! outbox entry, a dead letter, a button record, both logs, the offset and
//! a 429 hold), then damages one copy of it per damage.
//!
//! Two cases are not damage and are not asked to move: an empty log (an
//! append-only log with no lines yet is valid) and a cut `offset` or `hold`
//! (a decimal number cut short is still a number; a lower offset only
//! replays updates that the records make idempotent, a shorter hold is
//! harmless). They must still start and deliver.

#[path = "support/daemon.rs"]
mod daemon;
#[path = "support/harness.rs"]
mod harness;
#[path = "support/receivers.rs"]
mod receivers;
#[path = "support/telegram.rs"]
mod telegram;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use daemon::{run_cli, Setup};
use harness::{
    approval, copy_tree, notice, start_polling, wait_fs, wait_message, webhook_toml, ME, WAIT,
};
use receivers::Recorder;
use telegram::FakeTelegram;

#[derive(Clone, Copy, Debug)]
enum Damage {
    Truncated,
    Empty,
    Garbage,
    NotUtf8,
}

const DAMAGES: [Damage; 4] = [
    Damage::Truncated,
    Damage::Empty,
    Damage::Garbage,
    Damage::NotUtf8,
];

#[derive(Clone, Copy, PartialEq)]
enum Shape {
    /// A JSON record in a directory of records.
    Record,
    /// An append-only log of lines.
    Log,
    /// A single number.
    Number,
}

/// A kind of state file: where the template has one, and its shape.
struct Kind {
    name: &'static str,
    /// A directory of records (the first `*.json` in it), or a file.
    path: &'static str,
    shape: Shape,
}

/// The damaged bytes, or `None` where that damage cannot be told from
/// valid content (see the module comment).
fn damage(how: Damage, shape: Shape, good: &[u8]) -> Option<Vec<u8>> {
    let mid = good.len() / 2;
    match (how, shape) {
        (Damage::Truncated, Shape::Number) => None,
        // A torn last line, as a power cut during an append leaves it.
        (Damage::Truncated, Shape::Log) => Some(good[..good.len().saturating_sub(3)].to_vec()),
        (Damage::Truncated, Shape::Record) => Some(good[..mid].to_vec()),
        (Damage::Empty, _) => Some(Vec::new()),
        (Damage::Garbage, _) => Some(b"}{ \x00\x00 not what was written here \x00\n".to_vec()),
        (Damage::NotUtf8, Shape::Log) => {
            let mut b = good.to_vec();
            b.extend_from_slice(b"\xff\xfe\xfd\x80\n");
            Some(b)
        }
        (Damage::NotUtf8, _) => {
            let mut b = good[..mid].to_vec();
            b.extend_from_slice(b"\xff\xfe\x80");
            b.extend_from_slice(&good[mid..]);
            Some(b)
        }
    }
}

/// A state directory with one of everything, made by a real daemon.
fn template(tag: &str) -> Setup {
    let tg = FakeTelegram::start();
    let dead = Recorder::start();
    dead.respond_with(400, &[]); // a 4xx fails at once: a dead letter
    let stuck = Recorder::start();
    stuck.set_down(true); // retried much later: stays in the outbox
    let endpoints = [dead.url("/hooks/dead"), stuck.url("/hooks/stuck")];
    let hooks = webhook_toml("damage-secret", &endpoints)
        .replace("initial_delay_ms = 100", "initial_delay_ms = 600000")
        .replace("max_delay_ms = 1000", "max_delay_ms = 600000");
    let setup = Setup::new(tag, &tg.url(), &[ME], &hooks);
    let d = start_polling(&tg, &setup);
    tg.rate_limit("sendMessage", 1, 1); // writes the hold
    setup.drop_event("tpl-a.json", &approval("tpl_task", "template approval"));
    wait_message(&tg, &d, "111", "template approval", WAIT);
    tg.user_message(ME, "john", ME, "a note", None); // writes the offset
    let state = setup.state.clone();
    let has = |p: &str| {
        let p = state.join(p);
        match fs::read_dir(&p) {
            Ok(rd) => rd.flatten().any(|e| {
                let n = e.file_name();
                let n = n.to_string_lossy();
                n.ends_with(".json") && !n.starts_with('.')
            }),
            Err(_) => p.is_file(),
        }
    };
    for p in [
        "buttons", "dead", "outbox", "seen.log", "sent.log", "offset", "hold",
    ] {
        wait_fs(
            WAIT,
            &format!("state_dir/{p} in the template"),
            Some(&d),
            || has(p),
        );
    }
    tg.set_down(true);
    setup.drop_event("tpl-q.json", &notice("tpl_queued", "template queued"));
    wait_fs(WAIT, "a queue entry in the template", Some(&d), || {
        has("queue")
    });
    drop(d); // kill -9
    setup
}

fn target(state: &Path, kind: &Kind) -> PathBuf {
    let p = state.join(kind.path);
    if !p.is_dir() {
        return p;
    }
    let mut names = Setup::files(&p);
    names.retain(|n| n.ends_with(".json"));
    p.join(names.first().expect("a record in the template"))
}

/// Damages `kind` every way, each in its own copy of a template.
/// Every damage is tried, and all that fail are reported together.
fn check(kind: Kind) {
    let tpl = template(&format!("tpl-{}", kind.name));
    let mut failed = Vec::new();
    for how in DAMAGES {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| case(&tpl, &kind, how)));
        if r.is_err() {
            failed.push(format!("{how:?}"));
        }
    }
    assert!(
        failed.is_empty(),
        "a damaged {} failed for: {} (each failure is printed above)",
        kind.name,
        failed.join(", ")
    );
}

fn case(tpl: &Setup, kind: &Kind, how: Damage) {
    {
        let good = fs::read(target(&tpl.state, kind)).unwrap();
        let Some(bad) = damage(how, kind.shape, &good) else {
            return;
        };
        let what = format!("{} {how:?}", kind.name);
        let tg = FakeTelegram::start();
        let rec = Recorder::start();
        let hooks = webhook_toml("damage-secret", &[rec.url("/hooks/all")]);
        let setup = Setup::new("damaged", &tg.url(), &[ME], &hooks);
        copy_tree(&tpl.state, &setup.state);
        let path = target(&setup.state, kind);
        let file_name = path.file_name().unwrap().to_string_lossy().into_owned();
        fs::write(&path, &bad).unwrap();

        if kind.path == "dead" {
            let (code, out) = run_cli(
                &["dlq", "--config", setup.config.to_str().unwrap(), "list"],
                &[],
            );
            let stem = file_name.trim_end_matches(".json");
            assert_eq!(code, 0, "{what}: dlq list failed:\n{out}");
            assert!(
                out.contains(stem) && out.to_lowercase().contains("damaged"),
                "{what}: dlq list does not show the damaged entry {stem}:\n{out}"
            );
        }

        let d = setup.start();
        let title = format!("after damage {} {how:?}", kind.name);
        setup.drop_event("new.json", &approval("after_damage", &title));
        wait_message(&tg, &d, "111", &title, WAIT);
        // Reading state lazily is fine, so make it read everything: a
        // press on the template's approval (its button record) and a reply
        // to a message it sent (sent.log), then wait until both are handled.
        tg.press(ME, "john", 1, ME, "approve_tpl_task");
        tg.user_message(ME, "john", ME, "reply to the template", Some(1));
        wait_fs(
            WAIT,
            &format!("{what}: the reply recorded"),
            Some(&d),
            || {
                harness::responses(&setup.responses)
                    .iter()
                    .any(|(_, v)| v["message_text"] == "reply to the template")
            },
        );

        let moves = !(kind.shape == Shape::Log && matches!(how, Damage::Empty));
        if moves {
            let damaged = setup.state.join("damaged");
            wait_fs(
                Duration::from_secs(5),
                &format!("{what}: {file_name} in state_dir/damaged/"),
                Some(&d),
                || {
                    Setup::files(&damaged)
                        .iter()
                        .any(|n| n.contains(&file_name))
                },
            );
            let left = fs::read(&path).ok();
            assert!(
                left.as_deref() != Some(&bad[..]),
                "{what}: the damaged {file_name} was left in place"
            );
            assert!(
                d.out.text().contains(&file_name),
                "{what}: no log line names {file_name}:\n{}",
                d.out.text()
            );
        }
        assert!(d.child_running(), "{what}: the daemon stopped");
        let out = d.out.text();
        assert!(!out.contains("panicked"), "{what}: a panic:\n{out}");
    }
}

#[test]
fn a_damaged_queue_entry() {
    check(Kind {
        name: "queue entry",
        path: "queue",
        shape: Shape::Record,
    });
}

#[test]
fn a_damaged_outbox_entry() {
    check(Kind {
        name: "outbox entry",
        path: "outbox",
        shape: Shape::Record,
    });
}

#[test]
fn a_damaged_dead_letter() {
    check(Kind {
        name: "dead letter",
        path: "dead",
        shape: Shape::Record,
    });
}

#[test]
fn a_damaged_button_record() {
    check(Kind {
        name: "button record",
        path: "buttons",
        shape: Shape::Record,
    });
}

#[test]
fn a_damaged_seen_log() {
    check(Kind {
        name: "seen.log",
        path: "seen.log",
        shape: Shape::Log,
    });
}

#[test]
fn a_damaged_sent_log() {
    check(Kind {
        name: "sent.log",
        path: "sent.log",
        shape: Shape::Log,
    });
}

#[test]
fn a_damaged_offset() {
    check(Kind {
        name: "offset",
        path: "offset",
        shape: Shape::Number,
    });
}

#[test]
fn a_damaged_hold() {
    check(Kind {
        name: "hold",
        path: "hold",
        shape: Shape::Number,
    });
}
