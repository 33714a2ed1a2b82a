//! Health checks, health webhooks, /health, /metrics and `cctelegram
//! status` (issue "Health checks").

#[path = "support/daemon.rs"]
mod daemon;
#[path = "support/receivers.rs"]
mod receivers;
#[path = "support/telegram.rs"]
mod telegram;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use daemon::{run_cli, Daemon, Setup};
use receivers::Recorder;
use serde_json::{json, Value};
use telegram::FakeTelegram;

const WAIT: Duration = Duration::from_secs(30);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A daemon checking its health every second, serving /health on `port`,
/// with `hook` (if any) as its only webhook endpoint.
fn setup(tag: &str, tg: &FakeTelegram, port: u16, hook: Option<String>) -> Setup {
    let mut extra = format!("[health]\ninterval_seconds = 1\nlisten = \"127.0.0.1:{port}\"\n");
    if let Some(h) = hook {
        extra.push_str(&format!(
            "[webhook]\nsecret = \"health-secret\"\nendpoints = [{h:?}]\n\
             [webhook.retry]\ninitial_delay_ms = 100\n"
        ));
    }
    let s = Setup::new(tag, &tg.url(), &[111], "");
    // The harness writes `[health] listen = ""`; this config replaces it.
    let text = std::fs::read_to_string(&s.config)
        .unwrap()
        .replace("[health]\nlisten = \"\"\n", &extra);
    std::fs::write(&s.config, text).unwrap();
    s
}

/// GET on the daemon's health server: status and body.
fn get(port: u16, path: &str) -> (u16, String) {
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build(),
    );
    let mut r = agent
        .get(&format!("http://127.0.0.1:{port}{path}"))
        .call()
        .unwrap();
    (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
}

fn wait_health(port: u16, d: &Daemon, want: &str) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
            let mut text = String::new();
            let _ = s.read_to_string(&mut text);
            if let Some(body) = text.split("\r\n\r\n").nth(1) {
                if let Ok(v) = serde_json::from_str::<Value>(body) {
                    if v["status"] == json!(want) {
                        return v;
                    }
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "health never became {want}:\n{}",
            d.out.text()
        );
        // Polling a condition with a deadline: the monitor checks once a
        // second and announces nothing while the status stays the same.
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn telegram_going_away_and_coming_back_sends_one_webhook_each_way() {
    let tg = FakeTelegram::start();
    let hook = Recorder::start();
    let port = free_port();
    let s = setup("health-flip", &tg, port, Some(hook.url("/webhook/health")));
    let d = s.start();
    let h = wait_health(port, &d, "healthy");
    let names: Vec<&str> = h["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "telegram_api_connectivity",
            "telegram_polling",
            "memory_usage",
            "event_backlog",
            "webhook_delivery",
            "disk_space"
        ]
    );
    assert_eq!(get(port, "/health").0, 200);

    tg.set_down(true);
    d.out.wait_for("health is now unhealthy", WAIT);
    let got = hook.wait_for(1, WAIT);
    let alert = got[0].json();
    assert_eq!(alert["webhook_type"], json!("health_update"));
    assert_eq!(alert["alert_type"], json!("health_unhealthy"));
    assert_eq!(alert["health"]["status"], json!("unhealthy"));
    assert_eq!(alert["health"]["previous_status"], json!("healthy"));
    assert!(
        alert["alert_message"]
            .as_str()
            .unwrap()
            .contains("telegram_api_connectivity"),
        "{alert}"
    );
    assert!(alert["health"]["uptime_seconds"].as_u64().is_some());
    assert!(alert["health"]["events_processed_total"].as_u64().is_some());
    let (code, body) = get(port, "/health");
    assert_eq!(code, 503, "{body}");

    tg.set_down(false);
    d.out.wait_for("health is now healthy", WAIT);
    let got = hook.wait_for(2, WAIT);
    let back = got[1].json();
    assert_eq!(back["alert_type"], json!("health_recovered"));
    assert_eq!(back["health"]["previous_status"], json!("unhealthy"));
    assert_eq!(
        back["alert_message"],
        json!("Bridge health recovered from unhealthy state")
    );
    // Steady health sends nothing more: the next check passes without a webhook.
    let checks = tg.calls("getMe").len();
    tg.wait_until(WAIT, "two more checks", |st| {
        st.calls("getMe").len() >= checks + 2
    });
    assert_eq!(hook.requests().len(), 2, "a webhook without a change");
}

fn metrics(port: u16) -> HashMap<String, f64> {
    let (code, text) = get(port, "/metrics");
    assert_eq!(code, 200);
    receivers::tools::require_python_module("prometheus_client", "it parses /metrics");
    let mut child = Command::new("python3")
        .arg("tests/tools/parse_metrics.py")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 with prometheus_client (pip install -r tests/receivers/requirements.txt)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client could not parse /metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["labels"].as_object().unwrap().is_empty())
        .map(|v| {
            (
                v["name"].as_str().unwrap().to_string(),
                v["value"].as_f64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn metrics_parse_with_prometheus_client_and_rise_with_traffic() {
    let tg = FakeTelegram::start();
    let port = free_port();
    let s = setup("metrics", &tg, port, None);
    let d = s.start();
    wait_health(port, &d, "healthy");
    let before = metrics(port);
    for name in [
        "cctelegram_events_accepted_total",
        "cctelegram_messages_sent_total",
        "cctelegram_webhook_deliveries_total",
        "cctelegram_webhook_retries_total",
        "cctelegram_telegram_failures_total",
        "cctelegram_webhook_dead_letters_total",
        "cctelegram_backlog",
        "cctelegram_resident_memory_bytes",
        "cctelegram_telegram_request_seconds_count",
        "cctelegram_event_delivery_seconds_sum",
    ] {
        assert!(before.contains_key(name), "{name} missing from /metrics");
    }
    for i in 0..3 {
        s.drop_event(
            &format!("m{i}.json"),
            &daemon::event("info_notification", &format!("m{i}")),
        );
    }
    s.drop_event("bad.json", "{nope");
    d.out.wait_for("bad.json: refused", WAIT);
    tg.wait_messages(3, WAIT);
    d.out.wait_for("delivered", WAIT);
    let deadline = Instant::now() + WAIT;
    let after = loop {
        let m = metrics(port);
        if m["cctelegram_events_delivered_total"] >= 3.0 || Instant::now() > deadline {
            break m;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        after["cctelegram_events_accepted_total"] - before["cctelegram_events_accepted_total"],
        3.0
    );
    assert_eq!(
        after["cctelegram_events_refused_total"] - before["cctelegram_events_refused_total"],
        1.0
    );
    assert_eq!(after["cctelegram_messages_sent_total"], 3.0);
    assert_eq!(after["cctelegram_telegram_request_seconds_count"], 3.0);
    assert_eq!(after["cctelegram_event_delivery_seconds_count"], 3.0);
    // Once all is delivered nothing waits (the figure used to keep the
    // last group's size, so an idle sender looked busy).
    assert_eq!(after["cctelegram_backlog"], 0.0);
    assert!(after["cctelegram_resident_memory_bytes"] > 100_000.0);
}

#[test]
fn a_silent_or_oversized_client_does_not_block_the_next_request() {
    let tg = FakeTelegram::start();
    let port = free_port();
    let s = setup("silent", &tg, port, None);
    let d = s.start();
    wait_health(port, &d, "healthy");
    // Connects and says nothing, and keeps the connection open.
    let silent: Vec<TcpStream> = (0..5)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    let started = Instant::now();
    let (code, _) = get(port, "/health");
    assert_eq!(code, 200);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "waited {:?} behind silent clients",
        started.elapsed()
    );
    // An endless header is cut off, not buffered.
    let mut big = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let _ = big.write_all(b"GET /health HTTP/1.1\r\n");
    let _ = big.write_all(&vec![b'x'; 64 * 1024]);
    let mut answer = String::new();
    let _ = big.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:.60}");
    assert_eq!(get(port, "/nope").0, 404);
    assert_eq!(get(port, "/metrics").0, 200);
    drop(silent);
}

#[test]
fn status_prints_a_table_and_json_and_says_when_the_daemon_is_not_running() {
    let tg = FakeTelegram::start();
    let port = free_port();
    let s = setup("status", &tg, port, None);
    let config = s.config.to_str().unwrap().to_string();
    let (code, out) = run_cli(&["status", "--config", &config], &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("cctelegram is not running"), "{out}");
    let d = s.start();
    wait_health(port, &d, "healthy");
    let (code, out) = run_cli(&["status", "--config", &config], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("cctelegram is healthy (up "), "{out}");
    assert!(out.contains("telegram_api_connectivity   pass"), "{out}");
    assert!(out.contains("messages sent"), "{out}");
    let (code, out) = run_cli(&["status", "--config", &config, "--json"], &[]);
    assert_eq!(code, 0, "{out}");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["status"], json!("healthy"));
    assert_eq!(v["checks"].as_array().unwrap().len(), 6);
    drop(d);
    let (code, out) = run_cli(&["status", "--config", &config], &[]);
    assert_eq!(code, 1, "{out}");
}
