//! Issue 14: secret rotation, payload versions and the Standard Webhooks
//! format, checked by the receivers people really run: the
//! `standardwebhooks` library, the spec's Express and Flask handlers
//! (unmodified), and `jsonschema` against `schemas/v1/`.

#[path = "support/daemon.rs"]
mod daemon;
#[path = "support/harness.rs"]
mod harness;
#[path = "support/hooks.rs"]
mod hooks;
#[path = "support/receivers.rs"]
mod receivers;
#[path = "support/telegram.rs"]
mod telegram;

use std::time::Duration;

use daemon::{run_cli, Setup};
use harness::{approval, edit_config, free_port, listen_on, start_polling, ME, WAIT};
use hooks::{validate_v1, webhook_config};
use receivers::{
    sign_cctelegram, start_express, start_flask, start_standard, verify_cctelegram,
    verify_standard, Recorder,
};
use serde_json::{json, Value};
use telegram::FakeTelegram;

const NEW: &str = "rotated-in-2026-new";
const OLD: &str = "whsec_b2xkLXNlY3JldC0yMDI1";

#[test]
fn during_a_rotation_both_secrets_verify_and_after_it_only_the_new_one() {
    let std_old = start_standard(OLD);
    let std_new = start_standard(NEW);
    let express = start_express(NEW);
    let flask = start_flask(NEW);
    let rec = Recorder::start();
    let (old_url, new_url) = (std_old.url("/hooks/all"), std_new.url("/hooks/all"));
    let (express_url, flask_url) = (express.url("/webhook/events"), flask.url("/webhook/events"));
    let rec_url = rec.url("/all");
    let endpoints = [
        old_url.as_str(),
        new_url.as_str(),
        express_url.as_str(),
        flask_url.as_str(),
        rec_url.as_str(),
    ];
    let tg = FakeTelegram::start();
    // Retries off: a refused delivery shows at once as a 401.
    let setup = Setup::new(
        "rotation",
        &tg.url(),
        &[ME],
        &webhook_config(&[NEW, OLD], &endpoints, 0, ""),
    );
    let d = start_polling(&tg, &setup);
    for i in 0..2 {
        setup.drop_event(
            &format!("r{i}.json"),
            &harness::notice(&format!("rot-{i}"), &format!("During rotation {i}")),
        );
    }
    // The library verifies every delivery with the old secret alone and
    // with the new one alone; the spec's receivers with the new one.
    assert_eq!(std_old.wait_for_statuses("/hooks/all", 2, WAIT), [204, 204]);
    assert_eq!(std_new.wait_for_statuses("/hooks/all", 2, WAIT), [204, 204]);
    assert_eq!(
        express.wait_for_statuses("/webhook/events", 2, WAIT),
        [200, 200]
    );
    assert_eq!(
        flask.wait_for_statuses("/webhook/events", 2, WAIT),
        [200, 200]
    );
    flask.wait_for_line(|l| l.contains("Event rot-1 status: delivered"), WAIT);
    for r in rec.wait_for(2, WAIT) {
        let sigs: Vec<&str> = r.header("webhook-signature").unwrap().split(' ').collect();
        assert_eq!(sigs.len(), 2, "one v1 signature per secret: {sigs:?}");
        assert!(sigs.iter().all(|s| s.starts_with("v1,")));
        assert!(verify_standard(NEW, &r.headers, &r.body));
        assert!(verify_standard(OLD, &r.headers, &r.body));
        assert!(
            verify_cctelegram(NEW, &r.headers, &r.body),
            "signed with the first secret"
        );
        assert!(!verify_cctelegram(OLD, &r.headers, &r.body));
        assert_eq!(
            r.header("x-cctelegram-signature-previous"),
            Some(sign_cctelegram(OLD, &r.body).as_str()),
            "the second secret signs X-CCTelegram-Signature-Previous"
        );
        assert_eq!(r.header("x-cctelegram-payload-version"), Some("1"));
    }

    // The rotation ends: the old secret is dropped and the file reloaded.
    edit_config(
        &setup,
        &format!("secrets = [{NEW:?}, {OLD:?}]"),
        &format!("secrets = [{NEW:?}]"),
    );
    d.signal(libc::SIGHUP);
    d.out.wait_for("configuration reloaded", WAIT);
    setup.drop_event("r2.json", &harness::notice("rot-2", "After rotation"));
    assert_eq!(
        std_new.wait_for_statuses("/hooks/all", 3, WAIT),
        [204, 204, 204]
    );
    assert_eq!(
        std_old.wait_for_statuses("/hooks/all", 3, WAIT),
        [204, 204, 401],
        "the old secret no longer verifies"
    );
    assert_eq!(
        express.wait_for_statuses("/webhook/events", 3, WAIT),
        [200, 200, 200]
    );
    assert_eq!(
        flask.wait_for_statuses("/webhook/events", 3, WAIT),
        [200, 200, 200]
    );
    let last = rec.wait_for(3, WAIT).remove(2);
    assert_eq!(last.json()["event"]["id"], json!("rot-2"));
    assert_eq!(
        last.header("webhook-signature").unwrap().split(' ').count(),
        1
    );
    assert!(last.header("x-cctelegram-signature-previous").is_none());
    assert!(verify_standard(NEW, &last.headers, &last.body));
    assert!(!verify_standard(OLD, &last.headers, &last.body));
    assert!(!d.out.text().contains(OLD), "a secret was logged");
}

#[test]
fn a_standard_format_endpoint_gets_the_envelope_and_every_v1_body_fits_its_schema() {
    const SECRET: &str = "whsec_c3RhbmRhcmQtZm9ybWF0LXNlY3JldA==";
    let std_rx = start_standard(SECRET);
    let plain = Recorder::start();
    let enveloped = Recorder::start();
    let extra = format!(
        "[[webhook.endpoint]]\nurl = {:?}\nformat = \"standard\"\n\n\
         [[webhook.endpoint]]\nurl = {:?}\nformat = \"standard\"\n",
        std_rx.url("/std/hook"),
        enveloped.url("/env")
    );
    let plain_url = plain.url("/all");
    let tg = FakeTelegram::start();
    let setup = Setup::new(
        "standard",
        &tg.url(),
        &[ME],
        &webhook_config(&[SECRET], &[plain_url.as_str()], 3, &extra),
    );
    let port = free_port();
    listen_on(&setup, port);
    let d = start_polling(&tg, &setup);
    setup.drop_event("a.json", &approval("std_task", "Ship it?"));
    setup.drop_event("n.json", &harness::notice("std-note", "Notice «ü» 🚀"));
    let msgs = tg.wait_messages(2, WAIT);
    let ask = msgs.iter().find(|m| m.text.contains("Ship it?")).unwrap();
    tg.press(ME, "jane", ask.message_id, ME, "approve_std_task");
    d.out.wait_for("chose \"Approve\"", WAIT);
    tg.user_message(ME, "jane", ME, "a plain message", None);
    // A polling conflict makes health change: a health_update each way.
    tg.set_conflict(true);
    plain.wait_until(WAIT, "a health_update", |log| {
        log.iter()
            .any(|r| r.text().contains("\"health_unhealthy\""))
    });
    tg.set_conflict(false);
    let got = plain.wait_until(WAIT, "the recovery", |log| {
        log.iter()
            .any(|r| r.text().contains("\"health_recovered\""))
            && log
                .iter()
                .filter(|r| r.text().contains("\"user_response\""))
                .count()
                >= 2
    });
    // And the test payload, from `webhook test`.
    let (code, out) = run_cli(
        &[
            "webhook",
            "test",
            "--config",
            setup.config.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 0, "{out}");
    let got_plain = plain.wait_until(WAIT, "the test delivery", |log| {
        log.iter()
            .any(|r| r.text().contains("\"webhook_type\":\"test\""))
    });
    assert!(got_plain.len() >= got.len());

    // Every delivery to the plain endpoint has its enveloped twin, with
    // the same id, and `data` is exactly the version 1 payload.
    let env_log = enveloped.wait_for(got_plain.len(), WAIT);
    for p in &got_plain {
        let id = p.header("webhook-id").unwrap();
        let twin = env_log
            .iter()
            .find(|e| e.header("webhook-id") == Some(id))
            .unwrap_or_else(|| panic!("no enveloped twin of {id}"));
        let v = twin.json();
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 3, "{v}");
        assert!(twin.text().starts_with("{\"type\":"), "{}", twin.text());
        assert_eq!(v["data"], p.json(), "data is the version 1 payload");
        assert_eq!(v["type"], p.json()["webhook_type"]);
        assert_eq!(v["timestamp"], p.json()["timestamp"]);
        assert!(
            twin.text().ends_with(&format!(",\"data\":{}}}", p.text())),
            "data unchanged byte for byte"
        );
        assert_eq!(twin.header("x-cctelegram-payload-version"), Some("1"));
        assert!(verify_standard(SECRET, &twin.headers, &twin.body));
    }
    // The library verifies every enveloped delivery (the test delivery too).
    let n = env_log.len();
    let statuses = std_rx.wait_for_statuses("/std/hook", n, WAIT);
    assert!(statuses.iter().all(|s| *s == 204), "{statuses:?}");
    let kinds: std::collections::BTreeSet<String> = got_plain
        .iter()
        .map(|r| r.json()["webhook_type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        ["event_processed", "health_update", "test", "user_response"]
    );
    let mut bodies: Vec<String> = got_plain.iter().map(|r| r.text().to_string()).collect();
    bodies.extend(env_log.iter().map(|r| r.text().to_string()));
    validate_v1(&bodies);
    // A body that breaks its schema is caught: the check can fail.
    let broken = got_plain[0]
        .text()
        .replacen("\"timestamp\":\"", "\"timestamp\":\"x", 1);
    let result = std::panic::catch_unwind(|| validate_v1(&[broken]));
    assert!(result.is_err(), "a broken timestamp passed the schema");
}

#[test]
fn an_expired_approval_sends_its_user_response_with_no_user() {
    const SECRET: &str = "expiry-secret";
    let std_rx = start_standard(SECRET);
    let rec = Recorder::start();
    let rec_url = rec.url("/webhook/responses");
    let std_url = std_rx.url("/webhook/responses");
    let tg = FakeTelegram::start();
    let setup = Setup::new(
        "expiry",
        &tg.url(),
        &[ME],
        &webhook_config(&[SECRET], &[rec_url.as_str(), std_url.as_str()], 3, ""),
    );
    let _d = start_polling(&tg, &setup);
    let ev = json!({"type": "approval_request", "title": "Quick decision", "event_id": "exp-1",
                    "task_id": "exp-1", "description": "Expires in about a second",
                    "data": {"options": ["Approve", "Deny"], "timeout_minutes": 0.02}});
    setup.drop_event("e.json", &ev.to_string());
    let got = rec.wait_for(1, Duration::from_secs(20));
    let r = &got[0];
    let v = r.json();
    assert_eq!(v["webhook_type"], json!("user_response"));
    assert_eq!(v["response"]["interaction_type"], json!("expired"));
    assert_eq!(v["response"]["user"], Value::Null);
    assert_eq!(v["response"]["event_id"], json!("exp-1"));
    assert_eq!(v["original_event"]["title"], json!("Quick decision"));
    assert!(verify_cctelegram(SECRET, &r.headers, &r.body));
    assert!(verify_standard(SECRET, &r.headers, &r.body));
    assert_eq!(
        std_rx.wait_for_statuses("/webhook/responses", 1, WAIT),
        [204]
    );
    validate_v1(&[r.text().to_string()]);
}
