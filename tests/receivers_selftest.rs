//! Tests of the webhook receivers in tests/support/receivers.rs, without
//! the daemon: the spec's Express and Flask receivers and the Standard
//! Webhooks verifier accept what CONTRACT.md section 6 says a delivery is
//! and reject a tampered one; the Recorder answers as scripted; the
//! signature helpers agree with published test vectors.

#[path = "support/receivers.rs"]
mod receivers;

use receivers::{External, Kind, Recorder};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(10);
const SECRET: &str = "test-secret-\u{e9}t\u{e9}-\u{1f511}";

const EVENTS: &str =
    r#"{"webhook_type":"event_processed","event":{"id":"e1","status":"delivered","title":"t"}}"#;
const RESPONSES: &str = r#"{"webhook_type":"user_response","timestamp":"2025-01-15T10:31:00.000Z","response":{"id":"r1","event_id":"e1","user":{"id":111,"username":"john_doe","first_name":"John"},"message":{"id":12346,"text":"Approve","chat_id":"-1001234567890","timestamp":"2025-01-15T10:31:00.000Z"},"interaction_type":"callback_query","callback_data":"approve_e1"},"original_event":{"type":"approval_request","title":"Deploy?","options":["Approve","Deny"]}}"#;
const HEALTH: &str = r#"{"webhook_type":"health_update","health":{"status":"unhealthy"},"alert_type":"health_unhealthy"}"#;
/// Non-ASCII, emoji, quotes, a backslash, control characters, U+2028 and a
/// whole-number float written `2`: all already as `JSON.stringify` writes
/// them, so the Express receiver's re-serialisation gives these bytes back.
const UNICODE: &str = "{\"webhook_type\":\"event_processed\",\"event\":{\"id\":\"e2\",\"status\":\"delivered\",\
     \"title\":\"D\u{e9}ploiement \u{2705} \u{1f680} \\\"quoted\\\" back\\\\slash / \u{4e2d}\u{6587}\",\
     \"description\":\"tab\\tnewline\\n\\u0001 line\u{2028}sep\",\"duration\":2,\"ratio\":0.25,\"big\":1e+21}}";

static IDS: AtomicUsize = AtomicUsize::new(0);

fn agent(timeout: Duration) -> ureq::Agent {
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build();
    ureq::Agent::new_with_config(config)
}

/// Status, headers and body of an answer.
type Answer = (u16, Vec<(String, String)>, String);

/// POSTs `body` with `headers`; the answer, or the transport error.
fn try_post(
    agent: &ureq::Agent,
    url: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Result<Answer, ureq::Error> {
    let mut req = agent.post(url);
    for (name, value) in headers {
        req = req.header(name.as_str(), value.as_str());
    }
    let mut resp = req.send(body)?;
    let head = resp
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    Ok((resp.status().as_u16(), head, text))
}

fn post(url: &str, headers: &[(String, String)], body: &[u8]) -> u16 {
    let (status, _, text) = try_post(&agent(DEADLINE), url, headers, body)
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    println!("POST {url} -> {status} {text}");
    status
}

/// A delivery signed the way CONTRACT.md section 6 says, now.
fn signed(secret: &str, body: &str) -> Vec<(String, String)> {
    let id = format!("msg_selftest_{}", IDS.fetch_add(1, Ordering::Relaxed));
    receivers::signed_headers(secret, &id, body.as_bytes())
}

fn set(headers: &mut [(String, String)], name: &str, value: &str) {
    let h = headers
        .iter_mut()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .expect("header present");
    h.1 = value.to_string();
}

/// The three paths of the spec, each with a correctly signed body, then a
/// tampered body (still valid JSON, old signature) on each.
fn accepts_signed_rejects_tampered(rx: &External) {
    let ok = rx.kind.accepted();
    let cases = [
        ("/webhook/events", EVENTS),
        ("/webhook/responses", RESPONSES),
        ("/webhook/health", HEALTH),
    ];
    for (path, body) in cases {
        assert_eq!(
            post(&rx.url(path), &signed(SECRET, body), body.as_bytes()),
            ok,
            "{path}"
        );
    }
    for (path, body) in cases {
        let headers = signed(SECRET, body);
        let tampered = body.replacen("\"webhook_type\"", "\"webhook_type \"", 1);
        assert_ne!(tampered, body);
        assert_eq!(
            post(&rx.url(path), &headers, tampered.as_bytes()),
            401,
            "{path}"
        );
    }
    for (path, _) in cases {
        assert_eq!(
            rx.wait_for_statuses(path, 2, DEADLINE),
            vec![ok, 401],
            "{path}"
        );
    }
}

#[test]
fn express_accepts_signed_deliveries_and_rejects_tampered_ones() {
    let rx = receivers::start_express(SECRET);
    accepts_signed_rejects_tampered(&rx);
    // The snippet ran its handlers, helpers included.
    rx.wait_for_line(|l| l == "Event delivered to Telegram: t", DEADLINE);
    rx.wait_for_line(|l| l == "executeApprovedAction: Deploy?", DEADLINE);
    rx.wait_for_line(|l| l == "sendHealthAlert: unhealthy", DEADLINE);
}

#[test]
fn flask_accepts_signed_deliveries_and_rejects_tampered_ones() {
    let rx = receivers::start_flask(SECRET);
    accepts_signed_rejects_tampered(&rx);
    rx.wait_for_line(|l| l == "Event delivered: t", DEADLINE);
    rx.wait_for_line(|l| l == "Executing approved action for: Deploy?", DEADLINE);
    rx.wait_for_line(|l| l == "Bridge health alert - Status: unhealthy", DEADLINE);
}

#[test]
fn standard_verifier_accepts_signed_deliveries_and_rejects_tampered_ones() {
    let rx = receivers::start_standard(SECRET);
    accepts_signed_rejects_tampered(&rx);
}

#[test]
fn standard_verifier_decodes_a_whsec_secret() {
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let rx = receivers::start_standard(secret);
    assert_eq!(
        post(&rx.url("/hook"), &signed(secret, EVENTS), EVENTS.as_bytes()),
        204
    );
    // Signed with the secret's text as the key instead: not what the standard means.
    let mut headers = signed(secret, EVENTS);
    let (id, ts) = (
        receivers::header(&headers, "webhook-id")
            .unwrap()
            .to_string(),
        receivers::header(&headers, "webhook-timestamp")
            .unwrap()
            .to_string(),
    );
    let mut content = format!("{id}.{ts}.").into_bytes();
    content.extend_from_slice(EVENTS.as_bytes());
    let wrong = receivers::hmac_sha256(secret.as_bytes(), &content);
    set(
        &mut headers,
        "webhook-signature",
        &format!("v1,{}", receivers::base64_encode(&wrong)),
    );
    assert_eq!(post(&rx.url("/hook"), &headers, EVENTS.as_bytes()), 401);
    assert_eq!(rx.wait_for_statuses("/hook", 2, DEADLINE), vec![204, 401]);
}

#[test]
fn stale_or_missing_timestamps_are_rejected() {
    let (express, flask, standard) = (
        receivers::start_express(SECRET),
        receivers::start_flask(SECRET),
        receivers::start_standard(SECRET),
    );
    let old = (receivers::unix_now() - 600).to_string();
    for rx in [&express, &flask, &standard] {
        let mut headers = signed(SECRET, EVENTS);
        set(&mut headers, "x-cctelegram-timestamp", &old);
        set(&mut headers, "webhook-timestamp", &old);
        // Re-sign the Standard Webhooks content with the old timestamp, so
        // only its age is wrong.
        let id = receivers::header(&headers, "webhook-id")
            .unwrap()
            .to_string();
        let sig = receivers::sign_standard(SECRET, &id, &old, EVENTS.as_bytes());
        set(&mut headers, "webhook-signature", &sig);
        assert_eq!(
            post(&rx.url("/webhook/events"), &headers, EVENTS.as_bytes()),
            401
        );

        let headers: Vec<_> = signed(SECRET, EVENTS)
            .into_iter()
            .filter(|(n, _)| !n.to_ascii_lowercase().ends_with("timestamp"))
            .collect();
        assert_eq!(
            post(&rx.url("/webhook/events"), &headers, EVENTS.as_bytes()),
            401
        );
        assert_eq!(
            rx.wait_for_statuses("/webhook/events", 2, DEADLINE),
            vec![401, 401]
        );
    }
}

#[test]
fn express_verifies_a_unicode_body_through_its_reserialisation() {
    let value: serde_json::Value = serde_json::from_str(UNICODE).unwrap();
    assert_eq!(
        value["event"]["title"],
        "D\u{e9}ploiement \u{2705} \u{1f680} \"quoted\" back\\slash / \u{4e2d}\u{6587}"
    );
    let (express, flask, standard) = (
        receivers::start_express(SECRET),
        receivers::start_flask(SECRET),
        receivers::start_standard(SECRET),
    );
    for rx in [&express, &flask, &standard] {
        let status = post(
            &rx.url("/webhook/events"),
            &signed(SECRET, UNICODE),
            UNICODE.as_bytes(),
        );
        assert_eq!(status, rx.kind.accepted(), "{:?}", rx.kind);
    }
    express.wait_for_line(
        |l| l == "Event delivered to Telegram: D\u{e9}ploiement \u{2705} \u{1f680} \"quoted\" back\\slash / \u{4e2d}\u{6587}",
        DEADLINE,
    );
}

/// Bodies that are the same JSON value but not the bytes `JSON.stringify`
/// writes: the Express receiver signs its own re-serialisation, so it
/// rejects them, while the receivers that sign the raw bytes accept them.
/// This is why the contract asks for JSON.stringify-identical bodies.
#[test]
fn express_rejects_bodies_that_javascript_writes_differently() {
    let (express, flask) = (
        receivers::start_express(SECRET),
        receivers::start_flask(SECRET),
    );
    let bodies = [
        // A whole float as serde_json writes an f64 2.0.
        r#"{"webhook_type":"event_processed","event":{"id":"e3","status":"delivered","title":"t","duration":2.0}}"#,
        // Escaped non-ASCII.
        r#"{"webhook_type":"event_processed","event":{"id":"e4","status":"delivered","title":"caf\u00e9"}}"#,
        // Whitespace.
        r#"{"webhook_type": "event_processed", "event": {"id": "e5", "status": "delivered", "title": "t"}}"#,
        // An integer beyond 2^53: JavaScript reads it as a double.
        r#"{"webhook_type":"event_processed","event":{"id":"e6","status":"delivered","title":"t","n":12345678901234567891}}"#,
        // An object key that looks like an integer: JavaScript puts it first.
        r#"{"webhook_type":"event_processed","event":{"id":"e7","status":"delivered","title":"t","chats":{"b":1,"42":2}}}"#,
        // Floats as serde_json 1.0.154 writes 1e20, 1e-6 and -0.0; JavaScript
        // writes 100000000000000000000, 0.000001 and 0.
        r#"{"webhook_type":"event_processed","event":{"id":"e8","status":"delivered","title":"t","big":1e+20}}"#,
        r#"{"webhook_type":"event_processed","event":{"id":"e9","status":"delivered","title":"t","small":1e-6}}"#,
        r#"{"webhook_type":"event_processed","event":{"id":"e10","status":"delivered","title":"t","zero":-0.0}}"#,
    ];
    for body in bodies {
        let headers = signed(SECRET, body);
        assert_eq!(
            post(&express.url("/webhook/events"), &headers, body.as_bytes()),
            401,
            "{body}"
        );
        assert_eq!(
            post(&flask.url("/webhook/events"), &headers, body.as_bytes()),
            200,
            "{body}"
        );
    }
    let n = bodies.len();
    assert_eq!(
        express.wait_for_statuses("/webhook/events", n, DEADLINE),
        vec![401; n]
    );
    assert_eq!(
        flask.wait_for_statuses("/webhook/events", n, DEADLINE),
        vec![200; n]
    );
}

#[test]
fn spec_receivers_are_verbatim_copies() {
    let crate_root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let spec = crate_root.join("../shared/spec/webhooks.md");
    let Ok(spec) = std::fs::read_to_string(&spec) else {
        println!(
            "note: {} is absent here; the copies were not compared",
            spec.display()
        );
        return;
    };
    for (heading, lang, file) in [
        (
            "### Express.js Webhook Handler",
            "javascript",
            "express_receiver.js",
        ),
        (
            "### Python Flask Webhook Handler",
            "python",
            "flask_receiver.py",
        ),
    ] {
        let block = code_block(&spec, heading, lang)
            .unwrap_or_else(|| panic!("no ```{lang} block under {heading:?} in the spec"));
        let path = receivers::receivers_dir().join(file);
        let copy = std::fs::read_to_string(&path).unwrap();
        if copy != block {
            let line = copy
                .lines()
                .zip(block.lines())
                .position(|(a, b)| a != b)
                .unwrap_or(copy.lines().count().min(block.lines().count()));
            panic!(
                "{} differs from the spec's {heading:?} block from line {}:\n copy: {:?}\n spec: {:?}",
                path.display(),
                line + 1,
                copy.lines().nth(line),
                block.lines().nth(line),
            );
        }
    }
}

/// The text between the first ```lang fence after `heading` and its
/// closing fence, final newline included.
fn code_block(spec: &str, heading: &str, lang: &str) -> Option<String> {
    let at = spec.find(&format!("\n{heading}\n"))?;
    let fence = format!("```{lang}\n");
    let start = at + spec[at..].find(&fence)? + fence.len();
    let end = start + spec[start..].find("\n```")? + 1;
    Some(spec[start..end].to_string())
}

// --- Recorder ---------------------------------------------------------------

#[test]
fn recorder_records_requests_as_they_came() {
    let rec = Recorder::start();
    let mut headers = signed(SECRET, UNICODE);
    headers.push(("X-Mixed-Case".to_string(), "Value".to_string()));
    let (status, _, text) = try_post(
        &agent(DEADLINE),
        &rec.url("/webhook/events?x=1"),
        &headers,
        UNICODE.as_bytes(),
    )
    .unwrap();
    assert_eq!((status, text.as_str()), (200, r#"{"status":"received"}"#));
    let got = rec.wait_for(1, DEADLINE);
    let r = &got[0];
    assert_eq!(
        (r.method.as_str(), r.path.as_str(), r.query.as_str()),
        ("POST", "/webhook/events", "x=1")
    );
    assert_eq!(r.body, UNICODE.as_bytes());
    assert_eq!(r.text(), UNICODE);
    assert_eq!(r.json()["event"]["id"], "e2");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("X-MIXED-CASE"), Some("Value"));
    assert!(r.headers.iter().all(|(n, _)| *n == n.to_ascii_lowercase()));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(receivers::verify_cctelegram(SECRET, &r.headers, &r.body));
    assert!(receivers::verify_standard(SECRET, &r.headers, &r.body));
    assert!(!receivers::verify_cctelegram("other", &r.headers, &r.body));
    assert!(!receivers::verify_standard("other", &r.headers, &r.body));
    let mut tampered = r.body.clone();
    tampered.push(b' ');
    assert!(!receivers::verify_cctelegram(SECRET, &r.headers, &tampered));
    assert!(!receivers::verify_standard(SECRET, &r.headers, &tampered));
}

#[test]
fn recorder_answers_from_its_script() {
    let rec = Recorder::start();
    let agent = agent(DEADLINE);
    let url = rec.url("/hook");
    let send = || try_post(&agent, &url, &[], b"{}").expect("an answer");

    rec.fail_next(2, 503);
    rec.respond_next(1, 429, &[("Retry-After", "7")]);
    assert_eq!(send().0, 503);
    assert_eq!(send().0, 503);
    let (status, headers, _) = send();
    assert_eq!(status, 429);
    assert_eq!(receivers::header(&headers, "retry-after"), Some("7"));
    assert_eq!(send().0, 200);

    rec.respond_with(500, &[("X-Why", "scripted")]);
    assert_eq!(send().0, 500);
    assert_eq!(send().0, 500);
    rec.fail_next(1, 404);
    assert_eq!(send().0, 404);
    assert_eq!(send().0, 500);
    rec.respond_with(204, &[]);
    let (status, _, text) = send();
    assert_eq!((status, text.as_str()), (204, ""));
    rec.respond_with(200, &[]);
    assert_eq!(send().0, 200);

    let statuses: Vec<u16> = rec.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [503, 503, 429, 200, 500, 500, 404, 500, 204, 200]);
    let times: Vec<Instant> = rec.requests().iter().map(|r| r.at).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]));
}

#[test]
fn recorder_down_aborts_connections_and_records_them() {
    let rec = Recorder::start();
    let agent = agent(DEADLINE);
    rec.fail_next(1, 502); // waits while down
    rec.set_down(true);
    for _ in 0..2 {
        let err =
            try_post(&agent, &rec.url("/hook"), &[], b"{}").expect_err("no answer while down");
        println!("while down: {err}");
    }
    rec.set_down(false);
    assert_eq!(
        try_post(&agent, &rec.url("/hook"), &[], b"{}").unwrap().0,
        502
    );
    assert_eq!(
        try_post(&agent, &rec.url("/hook"), &[], b"{}").unwrap().0,
        200
    );
    let statuses: Vec<u16> = rec.wait_for(4, DEADLINE).iter().map(|r| r.status).collect();
    assert_eq!(statuses, [0, 0, 502, 200]);
}

#[test]
fn recorder_slow_holds_answers_back() {
    let rec = Recorder::start();
    rec.set_slow(Duration::from_millis(300));
    let start = Instant::now();
    assert_eq!(
        try_post(&agent(DEADLINE), &rec.url("/hook"), &[], b"{}")
            .unwrap()
            .0,
        200
    );
    assert!(
        start.elapsed() >= Duration::from_millis(300),
        "{:?}",
        start.elapsed()
    );

    rec.set_slow(Duration::from_secs(5));
    let start = Instant::now();
    let err = try_post(
        &agent(Duration::from_millis(200)),
        &rec.url("/hook"),
        &[],
        b"{}",
    )
    .expect_err("a client timeout");
    assert!(start.elapsed() < Duration::from_secs(5), "{err}");
    rec.set_slow(Duration::ZERO);
    assert_eq!(
        try_post(&agent(DEADLINE), &rec.url("/hook"), &[], b"{}")
            .unwrap()
            .0,
        200
    );
    assert_eq!(rec.wait_for(3, DEADLINE).len(), 3);
}

#[test]
fn recorder_stop_refuses_connections() {
    let mut rec = Recorder::start();
    let url = rec.url("/hook");
    assert_eq!(try_post(&agent(DEADLINE), &url, &[], b"{}").unwrap().0, 200);
    rec.stop();
    assert!(try_post(&agent(DEADLINE), &url, &[], b"{}").is_err());
    assert_eq!(rec.requests().len(), 1);
}

#[test]
fn recorder_keeps_every_concurrent_request() {
    let rec = Recorder::start();
    std::thread::scope(|s| {
        for i in 0..16 {
            let url = rec.url(&format!("/hook/{i}"));
            s.spawn(move || {
                assert_eq!(try_post(&agent(DEADLINE), &url, &[], b"{}").unwrap().0, 200);
            });
        }
    });
    let mut paths: Vec<String> = rec
        .wait_for(16, DEADLINE)
        .into_iter()
        .map(|r| r.path)
        .collect();
    paths.sort();
    paths.dedup();
    assert_eq!(paths.len(), 16);
}

#[test]
#[should_panic(expected = "waiting for 2 requests")]
fn recorder_wait_fails_with_what_it_waited_for() {
    let rec = Recorder::start();
    rec.wait_for(2, Duration::from_millis(50));
}

// --- Signatures --------------------------------------------------------------

#[test]
fn hmac_and_base64_match_published_vectors() {
    // RFC 4231, test case 2.
    assert_eq!(
        receivers::hex(&receivers::hmac_sha256(
            b"Jefe",
            b"what do ya want for nothing?"
        )),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
    // RFC 4648, section 10.
    for (plain, encoded) in [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ] {
        assert_eq!(receivers::base64_encode(plain.as_bytes()), encoded);
        assert_eq!(receivers::base64_decode(encoded).unwrap(), plain.as_bytes());
        let unpadded = encoded.trim_end_matches('=');
        assert_eq!(
            receivers::base64_decode(unpadded).unwrap(),
            plain.as_bytes()
        );
    }
    let all: Vec<u8> = (0..=255).collect();
    assert_eq!(
        receivers::base64_decode(&receivers::base64_encode(&all)).unwrap(),
        all
    );
    assert_eq!(receivers::base64_decode("Zm9v!"), None);
    assert_eq!(receivers::base64_decode("Z"), None);
}

#[test]
fn standard_signature_matches_the_standard_webhooks_vector() {
    // The example of the Standard Webhooks libraries' own tests.
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let (id, ts, body) = (
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "1614265330",
        br#"{"test": 2432232314}"#,
    );
    let expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
    assert_eq!(receivers::sign_standard(secret, id, ts, body), expected);
    let headers = |sig: &str| {
        vec![
            ("webhook-id".to_string(), id.to_string()),
            ("webhook-timestamp".to_string(), ts.to_string()),
            ("webhook-signature".to_string(), sig.to_string()),
        ]
    };
    assert!(receivers::verify_standard(secret, &headers(expected), body));
    // Several signatures, space-separated: one that matches is enough.
    let several = format!("v1,Zm9v v2,abc {expected}");
    assert!(receivers::verify_standard(secret, &headers(&several), body));
    assert!(!receivers::verify_standard(
        secret,
        &headers("v1,Zm9v"),
        body
    ));
    assert!(!receivers::verify_standard(
        secret,
        &headers(expected),
        b"{\"test\": 2432232315}"
    ));
    // A plain secret's key is its UTF-8 bytes.
    assert_eq!(receivers::standard_key("plain"), b"plain");
    assert_eq!(receivers::standard_key("whsec_Zm9v"), b"foo");
}

#[test]
fn cctelegram_signature_is_hex_hmac_of_the_body() {
    let headers = vec![(
        "X-CCTelegram-Signature".to_string(),
        "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843".to_string(),
    )];
    assert!(receivers::verify_cctelegram(
        "Jefe",
        &headers,
        b"what do ya want for nothing?"
    ));
    assert!(!receivers::verify_cctelegram(
        "Jefe",
        &headers,
        b"what do ya want for nothing!"
    ));
    assert!(!receivers::verify_cctelegram(
        "Jefe",
        &[],
        b"what do ya want for nothing?"
    ));
    assert_eq!(
        receivers::sign_cctelegram("Jefe", b"what do ya want for nothing?"),
        headers[0].1
    );
}

/// Every receiver kind logs in the same shape.
#[test]
fn logged_lines_parse() {
    assert_eq!(
        receivers::Logged::parse("REQ POST /webhook/events 401"),
        Some(receivers::Logged {
            method: "POST".into(),
            path: "/webhook/events".into(),
            status: 401
        })
    );
    assert_eq!(receivers::Logged::parse("Received event_processed"), None);
    assert_eq!(Kind::Standard.accepted(), 204);
}
