//! Files and questions (issue 13): attachments arrive byte-identical as
//! photos, albums and documents, survive the writer deleting them and a
//! `kill -9` mid-upload; bad attachments send the event to failed/ with a
//! reason; a long text goes before the file; `expects_reply` sends
//! force_reply and the answer carries the question's event id; files users
//! send are saved, strangers' are not fetched.

#[path = "support/daemon.rs"]
mod daemon;
#[path = "support/harness.rs"]
mod harness;
#[path = "support/receivers.rs"]
mod receivers;
#[path = "support/telegram.rs"]
mod telegram;

use std::fs;
use std::path::Path;
use std::time::Duration;

use daemon::{run_cli, Setup};
use harness::{edit_config, responses, start_polling, wait_fs, webhook_toml, ME, WAIT};
use receivers::Recorder;
use serde_json::{json, Value};
use telegram::FakeTelegram;

fn sha256(bytes: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .to_vec()
}

/// Bytes that do not compress or repeat, so a shifted or truncated copy
/// cannot hash the same.
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn files_dir(setup: &Setup) -> std::path::PathBuf {
    let d = setup.events.join("files");
    fs::create_dir_all(&d).unwrap();
    d
}

/// Lets events attach from `dir` (an absolute directory).
fn allow(setup: &Setup, dir: &Path) {
    let state = format!("state_dir = \"{}\"", setup.state.display());
    edit_config(
        setup,
        &state,
        &format!("{state}\nattachment_dirs = [\"{}\"]", dir.display()),
    );
}

#[test]
fn a_photo_and_a_30_mb_log_arrive_byte_identical_after_the_writer_deletes_them() {
    let tg = FakeTelegram::start();
    let setup = Setup::new("attach-bytes", &tg.url(), &[ME], "");
    let outside = setup.root.0.join("logs");
    fs::create_dir_all(&outside).unwrap();
    allow(&setup, &outside);
    let photo = noise(200_000, 1);
    let log = noise(30 << 20, 2);
    fs::write(files_dir(&setup).join("snap.png"), &photo).unwrap();
    let log_path = outside.join("backup.log");
    fs::write(&log_path, &log).unwrap();
    // The fake reads slowly, so the writer's delete comes before the upload.
    tg.set_upload_pace(20 << 20);
    let d = start_polling(&tg, &setup);
    let ev = json!({"type": "build_failed", "title": "Backup failed", "event_id": "bk1",
        "data": {"attachments": ["snap.png", {"path": log_path, "caption": "the log"}]}});
    setup.drop_event("bk.json", &ev.to_string());
    wait_fs(WAIT, "the event accepted", Some(&d), || {
        !setup.events.join("bk.json").exists()
    });
    fs::remove_file(&log_path).unwrap(); // the writer cleans up at once
    assert!(
        !setup.events.join("files/snap.png").exists(),
        "the daemon removes what it took from events_dir/files/"
    );
    tg.wait_until(Duration::from_secs(60), "two uploads", |s| {
        s.uploads.len() >= 2
    });
    tg.set_upload_pace(0);
    let up = tg.uploads();
    let p = up
        .iter()
        .find(|u| u.method == "sendPhoto")
        .expect("a sendPhoto");
    let doc = up
        .iter()
        .find(|u| u.method == "sendDocument")
        .expect("a sendDocument");
    assert_eq!(
        sha256(&p.bytes),
        sha256(&photo),
        "the photo changed on the way"
    );
    assert_eq!(
        sha256(&doc.bytes),
        sha256(&log),
        "the log changed on the way"
    );
    assert_eq!(doc.file_name, "backup.log");
    assert!(p.caption.as_deref().unwrap_or("").contains("Backup failed"));
    assert_eq!(doc.caption.as_deref(), Some("the log"));
    assert!(
        tg.messages().is_empty(),
        "the short text is a caption, not a message"
    );
    wait_fs(WAIT, "the copies removed after delivery", Some(&d), || {
        Setup::files(&setup.state.join("files")).is_empty()
    });
}

#[test]
fn kill_9_in_the_middle_of_an_upload_then_a_restart_delivers_it_whole() {
    let tg = FakeTelegram::start();
    let setup = Setup::new("attach-kill", &tg.url(), &[ME], "");
    let log = noise(8 << 20, 3);
    fs::write(files_dir(&setup).join("big.log"), &log).unwrap();
    tg.set_upload_pace(1 << 20);
    let mut d = start_polling(&tg, &setup);
    let before = tg.body_bytes_read();
    let ev = json!({"type": "info_notification", "title": "nightly log", "event_id": "k1",
        "data": {"attachments": ["big.log"]}});
    setup.drop_event("k.json", &ev.to_string());
    wait_fs(WAIT, "the upload under way", Some(&d), || {
        tg.body_bytes_read() > before + (2 << 20)
    });
    d.kill9();
    assert!(
        tg.uploads().is_empty(),
        "the upload was not finished before the kill"
    );
    tg.set_upload_pace(0);
    let _d = start_polling(&tg, &setup);
    tg.wait_until(WAIT, "the upload after the restart", |s| {
        !s.uploads.is_empty()
    });
    let up = tg.uploads();
    assert_eq!(up.len(), 1, "sent once: {up:?}");
    assert_eq!(sha256(&up[0].bytes), sha256(&log));
}

#[test]
fn bad_attachments_send_the_event_to_failed_with_the_reason() {
    let tg = FakeTelegram::start();
    let setup = Setup::new("attach-bad", &tg.url(), &[ME], "");
    edit_config(
        &setup,
        "global_per_second = 100000",
        "global_per_second = 100000\nmax_attachment_bytes = 1000",
    );
    let files = files_dir(&setup);
    let secret = setup.root.0.join("secret.txt");
    fs::write(&secret, "outside").unwrap();
    std::os::unix::fs::symlink(&secret, files.join("link.txt")).unwrap();
    fs::write(files.join("big.bin"), vec![0u8; 2000]).unwrap();
    fs::create_dir_all(files.join("adir")).unwrap();
    let d = start_polling(&tg, &setup);
    let cases: [(&str, Value, &str); 5] = [
        (
            "traversal",
            json!("../../secret.txt"),
            "\"..\" is not allowed",
        ),
        ("symlink", json!("link.txt"), "points outside"),
        ("absolute", json!(secret), "is outside"),
        (
            "oversized",
            json!("big.bin"),
            "over [limits] max_attachment_bytes",
        ),
        ("directory", json!("adir"), "is a directory"),
    ];
    for (name, path, _) in &cases {
        let ev = json!({"type": "info_notification", "title": name,
            "data": {"attachments": [path]}});
        setup.drop_event(&format!("{name}.json"), &ev.to_string());
    }
    for (name, _, why) in &cases {
        let note = setup.failed().join(format!("{name}.json.error"));
        wait_fs(WAIT, &format!("{name} refused"), Some(&d), || note.exists());
        let text = fs::read_to_string(&note).unwrap();
        assert!(text.contains(why), "{name}: {text}");
        assert!(text.contains("attachment 1"), "{name}: {text}");
    }
    // A good event after them goes through: nothing was sent for the bad ones.
    setup.drop_event(
        "ok.json",
        &json!({"type": "info_notification", "title": "fine"}).to_string(),
    );
    tg.wait_until(WAIT, "the good event", |s| !s.messages.is_empty());
    assert!(tg.uploads().is_empty(), "a refused event sent a file");
    assert_eq!(tg.messages().len(), 1);
    assert!(Setup::files(&setup.state.join("files")).is_empty());
}

#[test]
fn a_long_text_goes_first_and_three_photos_are_one_album() {
    let tg = FakeTelegram::start();
    let setup = Setup::new("attach-album", &tg.url(), &[ME], "");
    let d = start_polling(&tg, &setup);
    // Long text, one document: the text, then the file.
    fs::write(files_dir(&setup).join("report.txt"), b"report").unwrap();
    let ev = json!({"type": "info_notification", "title": "Long", "description": "w ".repeat(800),
        "data": {"attachments": ["report.txt"]}});
    setup.drop_event("long.json", &ev.to_string());
    tg.wait_until(WAIT, "the text and the file", |s| !s.uploads.is_empty());
    let text = &tg.messages()[0];
    let doc = &tg.uploads()[0];
    assert!(text.text.contains("Long"));
    assert!(text.message_id < doc.message_id, "the text comes first");
    assert_eq!(doc.caption, None, "the text is not repeated as a caption");
    // Three photos through `send --attach`: one album.
    let shots = setup.root.0.join("shots");
    fs::create_dir_all(&shots).unwrap();
    let mut args = vec!["send", "--type", "info_notification", "--title", "Cameras"];
    let paths: Vec<String> = (0..3)
        .map(|i| {
            let p = shots.join(format!("cam{i}.jpg"));
            fs::write(&p, noise(5000, 10 + i)).unwrap();
            p.display().to_string()
        })
        .collect();
    for p in &paths {
        args.extend(["--attach", p.as_str()]);
    }
    let events = setup.events.display().to_string();
    args.extend(["--events-dir", events.as_str()]);
    let (code, out) = run_cli(&args, &[]);
    assert_eq!(code, 0, "{out}");
    for p in &paths {
        fs::remove_file(p).unwrap(); // the staged copies are what is sent
    }
    tg.wait_until(WAIT, "the album", |s| s.uploads.len() >= 4);
    let album: Vec<_> = tg.uploads().into_iter().skip(1).collect();
    assert!(
        album.iter().all(|u| u.method == "sendMediaGroup"),
        "{album:?}"
    );
    let group = album[0].media_group_id.clone();
    assert!(group.is_some() && album.iter().all(|u| u.media_group_id == group));
    for (i, u) in album.iter().enumerate() {
        assert_eq!(sha256(&u.bytes), sha256(&noise(5000, 10 + i as u64)));
    }
    assert!(album[0]
        .caption
        .as_deref()
        .unwrap_or("")
        .contains("Cameras"));
    drop(d);
}

#[test]
fn a_question_opens_the_reply_field_and_its_answer_carries_the_event_id() {
    let tg = FakeTelegram::start();
    let rec = Recorder::start();
    let setup = Setup::new(
        "attach-question",
        &tg.url(),
        &[ME],
        &webhook_toml("q-secret", &[rec.url("/webhook/responses")]),
    );
    let d = start_polling(&tg, &setup);
    let ev = json!({"type": "info_notification", "title": "Which branch?", "event_id": "q1",
        "data": {"expects_reply": true}});
    setup.drop_event("q.json", &ev.to_string());
    let m = tg.wait_messages(1, WAIT).remove(0);
    assert_eq!(m.reply_markup, Some(json!({"force_reply": true})));
    // A person answers after the message is on the phone, and so after the
    // daemon recorded which event it shows (a reply within the same
    // milliseconds would find no record yet).
    d.out.wait_for("delivered q1", WAIT);
    tg.user_message(ME, "john", ME, "main", Some(m.message_id));
    wait_fs(WAIT, "the answer recorded", Some(&d), || {
        responses(&setup.responses)
            .iter()
            .any(|(_, v)| v["message_text"] == "main" && v["event_id"] == "q1")
    });
    wait_fs(WAIT, "the user_response webhook", Some(&d), || {
        rec.requests().iter().any(|r| {
            let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
            v["webhook_type"] == "user_response" && v["response"]["event_id"] == "q1"
        })
    });
}

#[test]
fn a_document_from_an_allowed_user_is_saved_and_a_strangers_is_not_fetched() {
    let tg = FakeTelegram::start();
    let rec = Recorder::start();
    let setup = Setup::new(
        "attach-incoming",
        &tg.url(),
        &[ME],
        &webhook_toml("in-secret", &[rec.url("/webhook/responses")]),
    );
    let d = start_polling(&tg, &setup);
    let bytes = noise(300_000, 7);
    tg.user_file(
        666,
        "mallory",
        666,
        false,
        "evil.sh",
        "text/x-sh",
        b"rm -rf".to_vec(),
        None,
    );
    tg.user_file(
        ME,
        "john",
        ME,
        false,
        "../notes v2.txt",
        "text/plain",
        bytes.clone(),
        Some("my notes"),
    );
    wait_fs(WAIT, "the document recorded", Some(&d), || {
        responses(&setup.responses)
            .iter()
            .any(|(_, v)| v["message_type"] == "document")
    });
    let all = responses(&setup.responses);
    assert_eq!(all.len(), 1, "only ours is recorded: {all:?}");
    let v = &all[0].1;
    assert_eq!(v["message_text"], "my notes");
    assert_eq!(v["file_name"], "../notes v2.txt");
    assert_eq!(v["mime_type"], "text/plain");
    assert_eq!(v["file_size"], bytes.len());
    let saved = Path::new(v["file"].as_str().expect("the saved file"));
    assert!(
        saved.starts_with(setup.responses.join("files")),
        "{saved:?}"
    );
    assert_eq!(sha256(&fs::read(saved).unwrap()), sha256(&bytes));
    let downloads = tg.downloads();
    assert_eq!(
        downloads.len(),
        1,
        "the stranger's file was fetched: {downloads:?}"
    );
    assert!(
        !d.out.text().contains("/file/bot"),
        "the file URL (with the token) was logged"
    );
    wait_fs(
        WAIT,
        "the user_response webhook naming the file",
        Some(&d),
        || {
            rec.requests().iter().any(|r| {
                let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
                let m = &v["response"]["message"];
                m["message_type"] == "document"
                    && m["file"]["file_name"] == "../notes v2.txt"
                    && m["file"]["file_size"] == bytes.len()
                    && m["text"] == "my notes"
            })
        },
    );
}

#[test]
fn a_429_on_an_upload_is_waited_out_and_the_webhook_names_the_file() {
    let tg = FakeTelegram::start();
    let rec = Recorder::start();
    let setup = Setup::new(
        "attach-429",
        &tg.url(),
        &[ME],
        &webhook_toml("f-secret", &[rec.url("/webhook/events")]),
    );
    let d = start_polling(&tg, &setup);
    tg.rate_limit("sendPhoto", 1, 1);
    tg.fail_next("sendPhoto", 1, 502, "Bad Gateway", None);
    let shot = noise(40_000, 9);
    fs::write(files_dir(&setup).join("door.webp"), &shot).unwrap();
    let ev = json!({"type": "info_notification", "title": "Door", "event_id": "door1",
        "data": {"attachments": ["door.webp"]}});
    setup.drop_event("door.json", &ev.to_string());
    tg.wait_until(
        Duration::from_secs(20),
        "the photo after a 429 and a 502",
        |s| !s.uploads.is_empty(),
    );
    assert_eq!(
        tg.calls("sendPhoto").len(),
        3,
        "one 429, one 502, then sent"
    );
    assert_eq!(sha256(&tg.uploads()[0].bytes), sha256(&shot));
    wait_fs(WAIT, "event_processed naming the file", Some(&d), || {
        rec.requests().iter().any(|r| {
            let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
            v["event"]["status"] == "delivered"
                && v["event"]["attachments"]
                    == json!([{"name": "door.webp", "size": 40_000, "photo": true}])
        })
    });
}

#[test]
fn a_received_file_over_the_limit_is_recorded_without_being_downloaded() {
    let tg = FakeTelegram::start();
    let setup = Setup::new("attach-incoming-big", &tg.url(), &[ME], "");
    edit_config(
        &setup,
        "global_per_second = 100000",
        "global_per_second = 100000\nmax_attachment_bytes = 1000",
    );
    let d = start_polling(&tg, &setup);
    tg.user_file(
        ME,
        "john",
        ME,
        true,
        "cam.jpg",
        "image/jpeg",
        noise(2000, 4),
        None,
    );
    wait_fs(WAIT, "the photo recorded", Some(&d), || {
        responses(&setup.responses)
            .iter()
            .any(|(_, v)| v["message_type"] == "photo")
    });
    let all = responses(&setup.responses);
    let v = &all[0].1;
    assert!(v["file"].is_null(), "{v}");
    assert!(
        v["file_error"]
            .as_str()
            .unwrap_or("")
            .contains("over the limit"),
        "{v}"
    );
    assert!(
        tg.downloads().is_empty(),
        "a file over the limit was fetched"
    );
    tg.wait_until(WAIT, "the sender told", |s| {
        s.messages.iter().any(|m| m.text.contains("not saved"))
    });
}
