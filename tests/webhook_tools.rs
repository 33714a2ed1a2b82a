//! Issue 14: the developer tools. `cctelegram webhook test` checks a
//! receiver from the device; `cctelegram listen` is a receiver that
//! verifies what a running daemon sends; `verify` takes a rotation's
//! secrets.

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

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use daemon::{run_cli, Daemon, Setup, BIN};
use harness::{free_port, notice, start_polling, ME, WAIT};
use hooks::{validate_v1, webhook_config};
use receivers::{
    sign_cctelegram, sign_standard, signed_headers, start_standard, unix_now, verify_cctelegram,
    verify_standard, Recorder,
};
use serde_json::json;
use telegram::FakeTelegram;

const SECRET: &str = "tools-secret-2026";

fn config_only(tag: &str, hooks: &str) -> Setup {
    // Nothing here talks to Telegram: the API URL only has to be valid.
    Setup::new(tag, "http://127.0.0.1:9", &[ME], hooks)
}

#[test]
fn webhook_test_exits_0_against_a_live_receiver_and_1_against_a_dead_one() {
    let live = Recorder::start();
    let std_rx = start_standard(SECRET);
    let dead = format!("http://127.0.0.1:{}/webhook/events", free_port());
    let live_url = live.url("/webhook/events");
    let extra = format!(
        "[[webhook.endpoint]]\nurl = {:?}\nformat = \"standard\"\n",
        std_rx.url("/std")
    );
    let good = config_only(
        "probe-good",
        &webhook_config(&[SECRET, "older-secret"], &[live_url.as_str()], 3, &extra),
    );
    let cfg = good.config.to_str().unwrap();
    let (code, out) = run_cli(&["webhook", "test", "--config", cfg], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("{live_url}: OK, HTTP 200")), "{out}");
    assert!(
        out.contains(&format!("{}: OK, HTTP 204", std_rx.url("/std"))),
        "{out}"
    );
    assert_eq!(std_rx.wait_for_statuses("/std", 1, WAIT), [204]);
    // Whatever the path says, the test delivery goes to every endpoint.
    let r = live.wait_for(1, WAIT).remove(0);
    let v = r.json();
    assert_eq!(v["webhook_type"], json!("test"));
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert!(v["timestamp"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        v["bridge_info"]["version"],
        json!(env!("CARGO_PKG_VERSION"))
    );
    assert!(verify_cctelegram(SECRET, &r.headers, &r.body));
    assert!(verify_standard("older-secret", &r.headers, &r.body));
    assert_eq!(r.header("x-cctelegram-payload-version"), Some("1"));
    validate_v1(&[r.text().to_string()]);

    // `verify` with a rotation's secrets: any secret, any signature.
    let verify = |secrets: &[&str]| {
        let mut args = vec!["verify".to_string()];
        for s in secrets {
            args.extend(["--secret".to_string(), s.to_string()]);
        }
        for (flag, h) in [
            ("--signature", "webhook-signature"),
            ("--id", "webhook-id"),
            ("--timestamp", "webhook-timestamp"),
        ] {
            args.extend([flag.to_string(), r.header(h).unwrap().to_string()]);
        }
        let mut child = Command::new(BIN)
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&r.body).unwrap();
        child.wait_with_output().unwrap().status.code()
    };
    assert_eq!(verify(&["older-secret"]), Some(0));
    assert_eq!(verify(&["unknown", SECRET]), Some(0));
    assert_eq!(verify(&["unknown"]), Some(1));

    // A dead receiver, given on the command line.
    let (code, out) = run_cli(&["webhook", "test", "--config", cfg, &dead], &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("{dead}: FAILED")), "{out}");

    // Both configured: each is printed with its answer, and the exit is 1.
    let both = config_only(
        "probe-both",
        &webhook_config(&[SECRET], &[live_url.as_str(), dead.as_str()], 3, ""),
    );
    let (code, out) = run_cli(
        &["webhook", "test", "--config", both.config.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("{live_url}: OK, HTTP 200")), "{out}");
    assert!(out.contains(&format!("{dead}: FAILED")), "{out}");
    assert!(
        out.contains("1 of 2 endpoint(s) did not answer 2xx"),
        "{out}"
    );
    assert!(!out.contains(SECRET));
    live.wait_for(2, WAIT);
}

/// POSTs `body` with `headers` to 127.0.0.1:`port`; the status answered.
fn post(port: u16, path: &str, headers: &[(String, String)], body: &[u8]) -> u16 {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!("POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (n, v) in headers.iter().filter(|(n, _)| n != "Content-Length") {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    raw.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Starts `cctelegram listen` with `args`; its port, once it listens.
fn listen(args: &[&str]) -> (Daemon, u16) {
    let mut all = vec!["listen", "--port", "0"];
    all.extend_from_slice(args);
    let l = Daemon::spawn(&all);
    let port = l.stdout.wait_match("the listening line", WAIT, |text| {
        let rest = text.split("listening on http://127.0.0.1:").nth(1)?;
        rest.split('/').next()?.parse::<u16>().ok()
    });
    (l, port)
}

#[test]
fn listen_verifies_a_running_daemons_deliveries_and_refuses_tampered_or_stale_ones() {
    let (l, port) = listen(&["--secret", SECRET]);
    let tg = FakeTelegram::start();
    let url = format!("http://127.0.0.1:{port}/webhook/events");
    let setup = Setup::new(
        "listen",
        &tg.url(),
        &[ME],
        &webhook_config(&[SECRET], &[url.as_str()], 3, ""),
    );
    let d = start_polling(&tg, &setup);
    setup.drop_event("l.json", &notice("listen-1", "Listen to me"));
    l.stdout
        .wait_for("POST /webhook/events event_processed msg_", WAIT);
    l.stdout.wait_for("\"title\": \"Listen to me\"", WAIT);
    let text = l.stdout.text();
    let line = text
        .lines()
        .find(|l| l.contains("event_processed msg_"))
        .unwrap();
    assert!(
        line.contains("attempt 1 (payload version 1): 200 verified (X-CCTelegram-Signature, webhook-signature)"),
        "{line}"
    );
    d.out.wait_for("delivered to", WAIT);

    // By hand: a good request, then a tampered body and a stale timestamp.
    let body = br#"{"webhook_type":"test","timestamp":"2026-01-01T00:00:00.000Z","message":"hi"}"#;
    let good = signed_headers(SECRET, "msg_by_hand", body);
    assert_eq!(post(port, "/any/path", &good, body), 200);
    let tampered =
        br#"{"webhook_type":"test","timestamp":"2026-01-01T00:00:00.000Z","message":"HI"}"#;
    assert_eq!(post(port, "/any/path", &good, tampered), 401);
    let stale_ts = (unix_now() - 600).to_string();
    let stale: Vec<(String, String)> = good
        .iter()
        .map(|(n, v)| {
            let v = match n.as_str() {
                "X-CCTelegram-Timestamp" | "webhook-timestamp" => stale_ts.clone(),
                "X-CCTelegram-Signature" => sign_cctelegram(SECRET, body),
                "webhook-signature" => sign_standard(SECRET, "msg_by_hand", &stale_ts, body),
                _ => v.clone(),
            };
            (n.clone(), v)
        })
        .collect();
    assert_eq!(post(port, "/any/path", &stale, body), 401);
    assert_eq!(
        post(port, "/any/path", &[], body),
        401,
        "no signature at all"
    );
    // Bounded: a body over 1 MiB is refused from its Content-Length alone.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n")
        .unwrap();
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    assert!(raw.starts_with("HTTP/1.1 413"), "{raw}");
    l.stdout.wait_for("s from now", WAIT);
    let text = l.stdout.text();
    assert_eq!(text.matches(": 401 NOT VERIFIED").count(), 3, "{text}");
    assert!(text.contains("does not match"), "{text}");

    // Without --secret, the configured secrets are used.
    let (l2, port2) = listen(&["--config", setup.config.to_str().unwrap()]);
    assert_eq!(post(port2, "/", &good, body), 200);
    assert_eq!(
        post(port2, "/", &signed_headers("not-it", "m", body), body),
        401
    );
    l2.stdout.wait_for("200 verified", WAIT);
}
