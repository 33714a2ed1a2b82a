//! Issue 14: per-endpoint settings (`[[webhook.endpoint]]`: types, secrets,
//! extra headers) arrive as configured, and the per-endpoint figures in
//! `/health`, `/metrics` (parsed by `prometheus_client`) and `status` match
//! what the receivers counted.

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

use daemon::{run_cli, Setup};
use harness::{approval, free_port, http_get, listen_on, notice, start_polling, wait_fs, ME, WAIT};
use hooks::{endpoint_sample, metric_samples, webhook_config};
use receivers::{verify_cctelegram, verify_standard, Recorded, Recorder};
use serde_json::{json, Value};
use telegram::FakeTelegram;

const SECRET: &str = "global-secret-for-endpoints";

fn kinds(log: &[Recorded]) -> Vec<String> {
    log.iter()
        .map(|r| r.json()["webhook_type"].as_str().unwrap_or("?").to_string())
        .collect()
}

#[test]
fn per_endpoint_types_secrets_and_headers_arrive_as_configured() {
    let responses_only = Recorder::start();
    let everything = Recorder::start();
    let events_only = Recorder::start();
    // The path says events, `types` says responses: types wins.
    let extra = format!(
        "[[webhook.endpoint]]\nurl = {:?}\ntypes = [\"user_response\"]\n\
         headers = {{ Authorization = \"Bearer tok-123-very-secret\", X-Tenant = \"acme\" }}\n\n\
         [[webhook.endpoint]]\nurl = {:?}\ntypes = [\"event_processed\"]\nsecrets = [\"own-endpoint-secret\"]\n",
        responses_only.url("/webhook/events"),
        events_only.url("/c")
    );
    let all_url = everything.url("/all");
    let tg = FakeTelegram::start();
    let setup = Setup::new(
        "per-endpoint",
        &tg.url(),
        &[ME],
        &webhook_config(&[SECRET], &[all_url.as_str()], 3, &extra),
    );
    let d = start_polling(&tg, &setup);
    setup.drop_event("a.json", &approval("pe_task", "Per endpoint?"));
    let msg = tg.wait_messages(1, WAIT).remove(0);
    tg.press(ME, "jane", msg.message_id, ME, "deny_pe_task");
    let all = everything.wait_for(2, WAIT);
    let mut got = kinds(&all);
    got.sort();
    assert_eq!(got, ["event_processed", "user_response"]);
    let resp = responses_only.wait_for(1, WAIT);
    let ev = events_only.wait_for(1, WAIT);
    // Nothing else arrives meanwhile: the event_processed that went to
    // `everything` went before the press, so a wrongly routed copy would
    // be here by now.
    assert_eq!(kinds(&responses_only.requests()), ["user_response"]);
    assert_eq!(kinds(&events_only.requests()), ["event_processed"]);
    let r = &resp[0];
    assert_eq!(
        r.header("authorization"),
        Some("Bearer tok-123-very-secret")
    );
    assert_eq!(r.header("x-tenant"), Some("acme"));
    assert!(verify_cctelegram(SECRET, &r.headers, &r.body));
    assert!(all.iter().all(|q| q.header("authorization").is_none()));
    assert!(all
        .iter()
        .all(|q| verify_standard(SECRET, &q.headers, &q.body)));
    let e = &ev[0];
    assert!(verify_cctelegram(
        "own-endpoint-secret",
        &e.headers,
        &e.body
    ));
    assert!(verify_standard("own-endpoint-secret", &e.headers, &e.body));
    assert!(!verify_standard(SECRET, &e.headers, &e.body));
    assert!(e.header("x-tenant").is_none());

    // Header values are secrets: masked by check-config, never logged.
    let (code, out) = run_cli(
        &["check-config", "--config", setup.config.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("\"Authorization\" = \"********\""), "{out}");
    assert!(out.contains("types = [\"user_response\"]"), "{out}");
    for secret in ["tok-123", "acme", "own-endpoint-secret", SECRET] {
        assert!(!out.contains(secret), "{secret} shown:\n{out}");
        assert!(!d.out.text().contains(secret), "{secret} logged");
    }
    assert!(!out.contains("Use HTTPS"), "loopback is fine: {out}");
}

#[test]
fn use_https_is_warned_at_start_up_and_in_check_config_and_bad_endpoint_settings_refused() {
    let setup = Setup::new(
        "https-warning",
        "http://127.0.0.1:9",
        &[ME],
        &webhook_config(
            &[SECRET],
            &["http://192.0.2.10/webhook/events", "https://192.0.2.11/ok"],
            3,
            "[[webhook.endpoint]]\nurl = \"http://hooks.example.net/x?key=abc\"\n",
        ),
    );
    let (code, out) = run_cli(
        &["check-config", "--config", setup.config.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 0, "{out}");
    let warned: Vec<&str> = out.lines().filter(|l| l.contains("Use HTTPS")).collect();
    assert_eq!(warned.len(), 2, "{out}");
    assert!(warned
        .iter()
        .any(|l| l.contains("http://192.0.2.10/webhook/events")));
    assert!(warned
        .iter()
        .any(|l| l.contains("http://hooks.example.net/x?key=***")));
    assert!(!out.contains("key=abc"), "{out}");

    // At start-up too. Only presses would go to that endpoint and none
    // happen, so nothing is sent off this machine.
    let tg = FakeTelegram::start();
    let remote = Setup::new(
        "https-startup",
        &tg.url(),
        &[ME],
        &webhook_config(
            &[SECRET],
            &[],
            3,
            "[[webhook.endpoint]]\nurl = \"http://192.0.2.10/hook\"\ntypes = [\"user_response\"]\n",
        ),
    );
    let d = start_polling(&tg, &remote);
    d.out
        .wait_for("http://192.0.2.10/hook is plain http://", WAIT);
    assert!(d.out.text().contains("Use HTTPS"));
    drop(d);

    let bad = Setup::new(
        "bad-endpoint",
        "http://127.0.0.1:9",
        &[ME],
        &webhook_config(
            &[SECRET],
            &[],
            3,
            "[[webhook.endpoint]]\nurl = \"https://x.example/\"\ntypes = [\"everything\"]\n",
        ),
    );
    let (code, out) = run_cli(
        &["check-config", "--config", bad.config.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 78, "{out}");
    assert!(out.contains("webhook.endpoint[0].types"), "{out}");
}

/// What a receiver saw: (attempts, delivered, failed, retries).
fn counted(log: &[Recorded]) -> (u64, u64, u64, u64) {
    let n = |f: &dyn Fn(&Recorded) -> bool| log.iter().filter(|r| f(r)).count() as u64;
    (
        log.len() as u64,
        n(&|r| (200..300).contains(&r.status)),
        n(&|r| !(200..300).contains(&r.status)),
        n(&|r| r.header("x-cctelegram-retry-count").is_some()),
    )
}

fn figures_of<'a>(h: &'a Value, endpoint: &str) -> &'a Value {
    h["webhooks"]
        .as_array()
        .and_then(|l| l.iter().find(|e| e["endpoint"] == endpoint))
        .unwrap_or(&Value::Null)
}

#[test]
fn per_endpoint_figures_in_health_metrics_and_status_match_what_receivers_counted() {
    let flaky = Recorder::start();
    flaky.fail_next(2, 503);
    let dead = Recorder::start();
    dead.respond_with(500, &[]);
    // Paths ending in /events: only event_processed goes there, so a
    // health_update (the dead endpoint degrades health) does not add to
    // what is counted.
    let flaky_url = flaky.url("/flaky/events");
    // Credentials in a URL never show.
    let dead_url = dead.url("/dead/events?token=do-not-show-me");
    let dead_shown = dead.url("/dead/events?token=***");
    let tg = FakeTelegram::start();
    let setup = Setup::new(
        "figures",
        &tg.url(),
        &[ME],
        &webhook_config(&[SECRET], &[flaky_url.as_str(), dead_url.as_str()], 2, ""),
    );
    let port = free_port();
    listen_on(&setup, port);
    let d = start_polling(&tg, &setup);
    for i in 0..2 {
        setup.drop_event(
            &format!("f{i}.json"),
            &notice(&format!("fig-{i}"), "Figures"),
        );
    }
    // Two deliveries each: the flaky one recovers, the dead one is
    // attempted three times per delivery, then dead-lettered.
    let dead_log = dead.wait_for(6, WAIT);
    let flaky_log = flaky.wait_until(WAIT, "both delivered", |l| {
        l.iter().filter(|r| r.status == 200).count() >= 2
    });
    d.out.wait_for("moved to the dead letter queue", WAIT);
    let (fa, fd, ff, fr) = counted(&flaky_log);
    let (da, dd, df, dr) = counted(&dead_log);
    assert_eq!((fd, ff), (2, 2), "the script: two 503s, then 200s");
    assert_eq!((da, dd, df, dr), (6, 0, 6, 4));

    let want = |h: &Value, url: &str, (a, ok, f, r): (u64, u64, u64, u64), dl: u64| {
        let e = figures_of(h, url);
        e["attempts"] == json!(a)
            && e["delivered"] == json!(ok)
            && e["failed"] == json!(f)
            && e["retries"] == json!(r)
            && e["dead_letters"] == json!(dl)
    };
    let health = std::cell::RefCell::new(Value::Null);
    wait_fs(
        WAIT,
        "/health figures matching the receivers",
        Some(&d),
        || {
            let Some((_, body)) = http_get(port, "/health") else {
                return false;
            };
            let h: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            let ok = want(&h, &flaky_url, (fa, fd, ff, fr), 0)
                && want(&h, &dead_shown, (da, dd, df, dr), 2);
            *health.borrow_mut() = h;
            ok
        },
    );
    let health = health.into_inner();
    let f = figures_of(&health, &flaky_url);
    let rate = (fd as f64 * 1000.0 / fa as f64).round() / 10.0;
    assert_eq!(f["delivery_rate"].as_f64(), Some(rate), "{f}");
    // Four samples: the nearest-rank 95th percentile is the slowest one.
    let (mean, p95) = (
        f["mean_response_time_ms"].as_f64().unwrap(),
        f["p95_response_time_ms"].as_f64().unwrap(),
    );
    assert!(mean > 0.0 && p95 >= mean, "{f}");
    assert!(
        f["last_error"].as_str().unwrap().contains("HTTP 503"),
        "{f}"
    );
    let g = figures_of(&health, &dead_shown);
    assert_eq!(g["delivery_rate"].as_f64(), Some(0.0));
    assert!(
        g["last_error"].as_str().unwrap().contains("HTTP 500"),
        "{g}"
    );
    assert!(g["last_error_at"].as_str().unwrap().ends_with('Z'));

    let (code, text) = http_get(port, "/metrics").unwrap();
    assert_eq!(code, 200);
    assert!(
        !text.contains("do-not-show-me"),
        "a URL's token in /metrics"
    );
    let samples = metric_samples(&text);
    for (url, (a, ok, fl, r), dl) in [
        (flaky_url.as_str(), (fa, fd, ff, fr), 0),
        (dead_shown.as_str(), (da, dd, df, dr), 2),
    ] {
        let get = |name: &str| endpoint_sample(&samples, name, url);
        assert_eq!(
            get("cctelegram_webhook_endpoint_attempts_total"),
            Some(a as f64),
            "{url}\n{text}"
        );
        assert_eq!(
            get("cctelegram_webhook_endpoint_delivered_total"),
            Some(ok as f64)
        );
        assert_eq!(
            get("cctelegram_webhook_endpoint_failed_total"),
            Some(fl as f64)
        );
        assert_eq!(
            get("cctelegram_webhook_endpoint_retries_total"),
            Some(r as f64)
        );
        assert_eq!(
            get("cctelegram_webhook_endpoint_dead_letters_total"),
            Some(dl as f64)
        );
        assert!(get("cctelegram_webhook_endpoint_response_p95_seconds").is_some());
    }

    let (code, out) = run_cli(&["status", "--config", setup.config.to_str().unwrap()], &[]);
    assert!(code == 0 || code == 1, "{out}");
    assert!(out.contains(&dead_shown), "{out}");
    assert!(
        out.contains(&format!(
            "{da} attempts, {dd} delivered, {df} failed, {dr} retries, 2 dead letters"
        )),
        "{out}"
    );
    assert!(!out.contains("do-not-show-me"));
    assert!(
        !d.out.text().contains("do-not-show-me"),
        "a URL's token was logged"
    );
}
