//! Signed webhooks with retries and a dead letter queue (issue "Signed
//! webhooks"): the spec's own receivers verify every delivery.

#[path = "support/daemon.rs"]
mod daemon;
#[path = "support/receivers.rs"]
mod receivers;
#[path = "support/telegram.rs"]
mod telegram;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use daemon::{run_cli, Daemon, Setup};
use receivers::{
    start_express, start_flask, start_standard, verify_cctelegram, verify_standard, Recorder,
};
use serde_json::json;
use telegram::FakeTelegram;

const WAIT: Duration = Duration::from_secs(30);
const SECRET: &str = "s3cr3t-for-tests";
const ME: i64 = 111;

fn webhook_config(endpoints: &[String], retry: &str) -> String {
    let list: Vec<String> = endpoints.iter().map(|e| format!("{e:?}")).collect();
    format!(
        "[webhook]\nenabled = true\nsecret = \"{SECRET}\"\nendpoints = [{}]\ntimeout_seconds = 5\n\n[webhook.retry]\n{retry}\n",
        list.join(", ")
    )
}

const FAST_RETRY: &str =
    "max_attempts = 3\ninitial_delay_ms = 200\nmax_delay_ms = 5000\nbackoff_multiplier = 2.0";

fn start(tg: &FakeTelegram, setup: &Setup) -> Daemon {
    let d = setup.start();
    tg.wait_until(WAIT, "a getUpdates long poll", |s| {
        s.in_flight("getUpdates") > 0
    });
    d
}

fn tricky_event(i: usize) -> String {
    json!({
        "type": "approval_request",
        "event_id": format!("tricky-{i}"),
        "task_id": format!("task_{i}"),
        "title": format!("Déploiement «{i}» 🚀 \"quoted\" back\\slash"),
        "description": "שלום — עולם\nline two\t\u{1}",
        "data": {"options": ["Approve", "Deny"], "duration_ms": 2.0, "ratio": 1e-7,
                 "big": 1e21, "neg": -0.0, "10": "ten", "9": "nine", "nested": {"x": [1.0, 2.5]}},
    })
    .to_string()
}

#[test]
fn the_specs_express_and_flask_receivers_verify_every_delivery() {
    let express = start_express(SECRET);
    let flask = start_flask(SECRET);
    let standard = start_standard(SECRET);
    let mut endpoints = Vec::new();
    for r in [&express, &flask] {
        for path in ["/webhook/events", "/webhook/responses", "/webhook/health"] {
            endpoints.push(r.url(path));
        }
    }
    // A path with no type suffix gets every type.
    endpoints.push(standard.url("/hooks/all"));
    let tg = FakeTelegram::start();
    let setup = Setup::new(
        "receivers",
        &tg.url(),
        &[ME],
        &webhook_config(&endpoints, FAST_RETRY),
    );
    let d = start(&tg, &setup);
    for i in 0..3 {
        setup.drop_event(&format!("t{i}.json"), &tricky_event(i));
    }
    let msgs = tg.wait_messages(3, WAIT);
    // A press and a message make user_response webhooks.
    let first = msgs.iter().find(|m| m.text.contains("«0»")).unwrap();
    tg.press(ME, "jöhn_😀", first.message_id, ME, "approve_task_0");
    tg.user_message(
        ME,
        "jöhn_😀",
        ME,
        "ok \"boss\" \\ 👍",
        Some(first.message_id),
    );
    d.out.wait_for("recorded as", WAIT);

    // 3 event_processed and 2 user_response: each receiver path gets its own type.
    for r in [&express, &flask] {
        assert_eq!(
            r.wait_for_statuses("/webhook/events", 3, WAIT),
            [200, 200, 200]
        );
        assert_eq!(
            r.wait_for_statuses("/webhook/responses", 2, WAIT),
            [200, 200]
        );
    }
    let all = standard.wait_for_statuses("/hooks/all", 5, WAIT);
    assert_eq!(
        all, [204; 5],
        "the standardwebhooks library refused a signature"
    );
    // The receivers' own code ran to the end.
    express.wait_for_line(
        |l| l.contains("Approval granted for: Déploiement «0»"),
        WAIT,
    );
    flask.wait_for_line(
        |l| l.contains("Approval granted for: Déploiement «0»"),
        WAIT,
    );
    flask.wait_for_line(|l| l.contains("Event tricky-2 status: delivered"), WAIT);
    for r in [&express, &flask] {
        assert!(
            r.statuses("/webhook/health").is_empty(),
            "no health changes yet"
        );
        assert!(
            r.requests().iter().all(|q| q.status == 200),
            "{:?}",
            r.lines()
        );
    }
    d.out.wait_for("delivered to", WAIT);
    assert!(!d.out.text().contains("dead letter"), "{}", d.out.text());
}

#[test]
fn payloads_are_shaped_as_the_spec_says() {
    let rec = Recorder::start();
    let tg = FakeTelegram::start();
    let endpoints = [rec.url("/webhook/events"), rec.url("/webhook/responses")];
    let setup = Setup::new(
        "payloads",
        &tg.url(),
        &[ME],
        &webhook_config(&endpoints, FAST_RETRY),
    );
    let d = start(&tg, &setup);
    setup.drop_event("a.json", &tricky_event(7));
    let msg = tg.wait_messages(1, WAIT).remove(0);
    tg.press(ME, "john_doe", msg.message_id, ME, "deny_task_7");
    d.out.wait_for("chose \"Deny\"", WAIT);
    let got = rec.wait_for(2, WAIT);
    let ev = got.iter().find(|r| r.path == "/webhook/events").unwrap();
    let body = ev.json();
    assert_eq!(body["webhook_type"], json!("event_processed"));
    let e = &body["event"];
    assert_eq!(e["id"], json!("tricky-7"));
    assert_eq!(e["type"], json!("approval_request"));
    assert_eq!(e["status"], json!("delivered"));
    assert_eq!(e["telegram_message_id"], json!(msg.message_id));
    assert_eq!(e["chat_id"], json!("111"), "chat_id is a string");
    let t = body["timestamp"].as_str().unwrap();
    assert!(
        t.len() == 24 && t.ends_with('Z') && t.as_bytes()[19] == b'.',
        "{t}"
    );
    assert!(e["delivery_timestamp"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        body["bridge_info"]["version"],
        json!(env!("CARGO_PKG_VERSION"))
    );
    assert!(body["bridge_info"]["process_id"].as_u64().is_some());
    assert!(body["bridge_info"]["uptime_seconds"].as_u64().is_some());
    // Byte-identical to what JavaScript re-serialises (whole floats, keys).
    assert!(
        ev.text()
            .contains(r#""data":{"9":"nine","10":"ten","big":1e+21"#),
        "{}",
        ev.text()
    );
    assert!(ev.text().contains(r#""duration_ms":2,"#), "{}", ev.text());

    let resp = got
        .iter()
        .find(|r| r.path == "/webhook/responses")
        .unwrap()
        .json();
    assert_eq!(resp["webhook_type"], json!("user_response"));
    let r = &resp["response"];
    assert_eq!(r["event_id"], json!("tricky-7"));
    assert_eq!(r["user"]["id"], json!(ME));
    assert_eq!(r["user"]["username"], json!("john_doe"));
    assert_eq!(r["message"]["text"], json!("Deny"));
    assert_eq!(r["message"]["chat_id"], json!("111"));
    assert_eq!(r["interaction_type"], json!("callback_query"));
    assert_eq!(r["callback_data"], json!("deny_task_7"));
    assert_eq!(resp["original_event"]["type"], json!("approval_request"));
    assert_eq!(
        resp["original_event"]["options"],
        json!(["Approve", "Deny"])
    );
    assert!(resp["bridge_info"].is_object());
    // Every delivery carries both signatures and its headers.
    for q in &got {
        assert!(verify_cctelegram(SECRET, &q.headers, &q.body));
        assert!(verify_standard(SECRET, &q.headers, &q.body));
        assert_eq!(q.header("content-type"), Some("application/json"));
        assert_eq!(
            q.header("user-agent"),
            Some(concat!("CCTelegram-Bridge/", env!("CARGO_PKG_VERSION")))
        );
        assert_eq!(q.header("x-cctelegram-delivery"), q.header("webhook-id"));
        assert!(
            q.header("x-cctelegram-retry-count").is_none(),
            "a first attempt is no retry"
        );
    }
}

#[test]
fn a_receiver_that_fails_twice_sees_the_retry_schedule_and_headers() {
    let rec = Recorder::start();
    rec.fail_next(2, 503);
    let tg = FakeTelegram::start();
    let retry =
        "max_attempts = 3\ninitial_delay_ms = 400\nmax_delay_ms = 5000\nbackoff_multiplier = 2.0";
    let setup = Setup::new(
        "retry",
        &tg.url(),
        &[ME],
        &webhook_config(&[rec.url("/hook")], retry),
    );
    let _d = start(&tg, &setup);
    setup.drop_event("a.json", &daemon::event("info_notification", "retry me"));
    let got = rec.wait_for(3, WAIT);
    assert_eq!(
        got.iter().map(|r| r.status).collect::<Vec<_>>(),
        [503, 503, 200]
    );
    let id = got[0].header("x-cctelegram-delivery").unwrap();
    for r in &got {
        assert_eq!(
            r.header("x-cctelegram-delivery"),
            Some(id),
            "one delivery id for all attempts"
        );
        assert_eq!(r.body, got[0].body, "the body never changes");
        assert!(verify_cctelegram(SECRET, &r.headers, &r.body));
        assert!(verify_standard(SECRET, &r.headers, &r.body));
    }
    let first_ts = got[0].header("x-cctelegram-timestamp").unwrap();
    for (n, r) in got.iter().enumerate().skip(1) {
        assert_eq!(
            r.header("x-cctelegram-retry-count"),
            Some(n.to_string().as_str())
        );
        assert_eq!(r.header("x-cctelegram-max-retries"), Some("3"));
        assert_eq!(r.header("x-cctelegram-original-timestamp"), Some(first_ts));
    }
    // initial_delay_ms = 400, doubling, with at most 10% jitter.
    let gap1 = got[1].at - got[0].at;
    let gap2 = got[2].at - got[1].at;
    assert!(
        gap1 >= Duration::from_millis(360) && gap1 < Duration::from_millis(1500),
        "{gap1:?}"
    );
    assert!(
        gap2 >= Duration::from_millis(720) && gap2 < Duration::from_millis(2500),
        "{gap2:?}"
    );
}

#[test]
fn a_400_goes_to_the_dead_letter_queue_and_replay_delivers_it() {
    let rec = Recorder::start();
    rec.fail_next(1, 400);
    let tg = FakeTelegram::start();
    let setup = Setup::new(
        "dlq",
        &tg.url(),
        &[ME],
        &webhook_config(&[rec.url("/hook")], FAST_RETRY),
    );
    let d = start(&tg, &setup);
    setup.drop_event(
        "a.json",
        &daemon::event("info_notification", "refused once"),
    );
    d.out.wait_for("moved to the dead letter queue", WAIT);
    assert_eq!(rec.requests().len(), 1, "a 400 is not retried");
    let config = setup.config.to_str().unwrap();
    let (code, out) = run_cli(&["dlq", "--config", config, "list"], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("event_processed") && out.contains("HTTP 400") && out.contains("/hook"),
        "{out}"
    );
    let id = out
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    assert!(id.starts_with("msg_"), "{out}");
    let (code, out) = run_cli(&["dlq", "--config", config, "replay", &id], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("delivered (200)"), "{out}");
    let got = rec.wait_for(2, WAIT);
    assert_eq!(got[1].body, got[0].body, "the exact body is replayed");
    assert_eq!(
        got[1].header("x-cctelegram-delivery"),
        got[0].header("x-cctelegram-delivery")
    );
    assert!(verify_standard(SECRET, &got[1].headers, &got[1].body));
    let (_, out) = run_cli(&["dlq", "--config", config, "list"], &[]);
    assert!(out.contains("empty"), "{out}");
    // Purge and a failed replay.
    rec.respond_with(500, &[]);
    setup.drop_event("b.json", &daemon::event("info_notification", "dies"));
    d.out.wait_for("failed after 4 attempts", WAIT);
    let (code, out) = run_cli(&["dlq", "--config", config, "replay", "--all"], &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("not delivered, kept: HTTP 500"), "{out}");
    let (code, out) = run_cli(&["dlq", "--config", config, "purge", "--all"], &[]);
    assert_eq!((code, out.trim()), (0, "Purged 1 dead letter(s)."));
}

#[test]
fn a_receiver_down_across_a_restart_still_receives_later() {
    let rec = Recorder::start();
    rec.set_down(true);
    let tg = FakeTelegram::start();
    let retry =
        "max_attempts = 20\ninitial_delay_ms = 100\nmax_delay_ms = 300\nbackoff_multiplier = 2.0";
    let setup = Setup::new(
        "down",
        &tg.url(),
        &[ME],
        &webhook_config(&[rec.url("/hook")], retry),
    );
    let mut d = start(&tg, &setup);
    setup.drop_event(
        "a.json",
        &daemon::event("info_notification", "waits for the receiver"),
    );
    d.out.wait_for("retrying in", WAIT);
    d.kill9();
    d = start(&tg, &setup);
    d.out
        .wait_for("1 webhook deliveries pending from before", WAIT);
    rec.set_down(false);
    let got = rec.wait_until(WAIT, "a delivery after the restart", |r| {
        r.iter().any(|q| q.status == 200)
    });
    let ok = got.iter().find(|q| q.status == 200).unwrap();
    assert_eq!(ok.json()["event"]["title"], json!("waits for the receiver"));
    assert!(ok.header("x-cctelegram-retry-count").is_some());
    drop(d);
}

#[test]
fn a_dead_endpoint_never_delays_a_live_one() {
    let slow = Recorder::start();
    slow.set_slow(Duration::from_secs(4));
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}/hook", closed.local_addr().unwrap());
    drop(closed);
    let live = Recorder::start();
    let tg = FakeTelegram::start();
    let endpoints = [slow.url("/hook"), dead_url, live.url("/hook")];
    let setup = Setup::new(
        "isolation",
        &tg.url(),
        &[ME],
        &webhook_config(&endpoints, FAST_RETRY),
    );
    let _d = start(&tg, &setup);
    for i in 0..10 {
        setup.drop_event(
            &format!("e{i}.json"),
            &daemon::event("info_notification", &format!("n{i}")),
        );
    }
    let got = live.wait_for(10, WAIT);
    // All ten reached the live receiver before the slow one answered once.
    let last_live = got.iter().map(|r| r.at).max().unwrap();
    let slow_first_answer = slow
        .requests()
        .first()
        .map(|r| r.at + Duration::from_secs(4));
    assert!(
        slow_first_answer.is_none_or(|t| last_live < t),
        "the live endpoint waited for the slow one"
    );
}

#[test]
fn a_410_disables_the_endpoint_and_a_429_retry_after_is_honoured() {
    let gone = Recorder::start();
    gone.fail_next(1, 410);
    let limited = Recorder::start();
    limited.respond_next(1, 429, &[("Retry-After", "2")]);
    let tg = FakeTelegram::start();
    let endpoints = [gone.url("/hook"), limited.url("/hook")];
    let setup = Setup::new(
        "gone",
        &tg.url(),
        &[ME],
        &webhook_config(&endpoints, FAST_RETRY),
    );
    let d = start(&tg, &setup);
    setup.drop_event("a.json", &daemon::event("info_notification", "one"));
    d.out.wait_for("answered 410 Gone", WAIT);
    // The same delivery's retry (a health_update may come in between when
    // the machine is busy).
    let first = limited.wait_for(1, WAIT)[0].clone();
    assert_eq!(first.status, 429);
    let id = first.header("x-cctelegram-delivery").unwrap().to_string();
    let end = Instant::now() + WAIT;
    let retry = loop {
        let again = limited
            .requests()
            .into_iter()
            .skip(1)
            .find(|r| r.header("x-cctelegram-delivery") == Some(id.as_str()));
        if let Some(r) = again {
            break r;
        }
        assert!(Instant::now() < end, "delivery {id} was not retried");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        retry.at - first.at >= Duration::from_secs(2),
        "Retry-After: 2 was not honoured"
    );
    setup.drop_event("b.json", &daemon::event("info_notification", "two"));
    limited.wait_for(3, WAIT);
    assert_eq!(
        gone.requests().len(),
        1,
        "nothing more goes to a 410 endpoint"
    );
}

#[test]
fn verify_checks_signatures_like_a_receiver() {
    let body = br#"{"webhook_type":"event_processed"}"#;
    let now = receivers::unix_now().to_string();
    let sig = receivers::sign_cctelegram(SECRET, body);
    let run = |args: &[&str]| {
        let out = std::process::Command::new(daemon::BIN)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(body)?;
                c.wait_with_output()
            })
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.code().unwrap(), text)
    };
    assert_eq!(
        run(&[
            "verify",
            "--secret",
            SECRET,
            "--timestamp",
            &now,
            "--signature",
            &sig
        ])
        .0,
        0
    );
    let (code, out) = run(&["verify", "--secret", "wrong", "--signature", &sig]);
    assert_eq!(code, 1);
    assert!(out.contains("does not match"), "{out}");
    let old = (receivers::unix_now() - 301).to_string();
    let (code, out) = run(&[
        "verify",
        "--secret",
        SECRET,
        "--timestamp",
        &old,
        "--signature",
        &sig,
    ]);
    assert_eq!(code, 1);
    assert!(out.contains("more than the 300 s allowed"), "{out}");
    let std_sig = receivers::sign_standard(SECRET, "msg_1", &now, body);
    assert_eq!(
        run(&[
            "verify",
            "--secret",
            SECRET,
            "--id",
            "msg_1",
            "--timestamp",
            &now,
            "--signature",
            &std_sig
        ])
        .0,
        0
    );
}
