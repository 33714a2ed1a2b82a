//! The status page `GET /` in a real browser, and `[health].token`
//! (issue 17, CONTRACT section 7).
//!
//! The browser test runs headless Chromium against the real daemon and the
//! fake Bot API, all inside a network namespace that has only loopback: a
//! browser calls home on its own, and nothing may leave the machine. The
//! test re-runs itself under `unshare -n` (CI runs as root), so the fake Bot
//! API, the daemon and Chromium all live in that namespace.

#[path = "support/daemon.rs"]
mod daemon;
#[path = "support/telegram.rs"]
mod telegram;
#[path = "support/tools.rs"]
mod tools;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use daemon::{run_cli, Daemon, Setup};
use serde_json::{json, Value};
use telegram::FakeTelegram;

const WAIT: Duration = Duration::from_secs(30);
/// Set in the copy of this test that runs inside the namespace.
const IN_NETNS: &str = "CCT_STATUS_PAGE_NETNS";
const HOSTILE: &str = "<script>alert(1)</script>";
const APPROVAL: &str = "Deploy v1.2.3 to production?";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A daemon checking its health every second, serving on `listen`, with
/// `health_extra` added to `[health]` and `rest` after it.
fn setup(tag: &str, tg: &FakeTelegram, listen: &str, health_extra: &str, rest: &str) -> Setup {
    let s = Setup::new(tag, &tg.url(), &[111], "");
    let text = std::fs::read_to_string(&s.config).unwrap().replace(
        "[health]\nlisten = \"\"\n",
        &format!("[health]\ninterval_seconds = 1\nlisten = \"{listen}\"\n{health_extra}\n{rest}\n"),
    );
    std::fs::write(&s.config, text).unwrap();
    s
}

/// GET `path` on 127.0.0.1:`port` with these headers: status, the
/// WWW-Authenticate header, body; Err while nothing answers.
fn try_get(
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, Option<String>, String), ureq::Error> {
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build(),
    );
    let mut req = agent.get(&format!("http://127.0.0.1:{port}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut r = req.call()?;
    let auth = r
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    Ok((r.status().as_u16(), auth, r.body_mut().read_to_string()?))
}

fn get(port: u16, path: &str, headers: &[(&str, &str)]) -> (u16, Option<String>, String) {
    try_get(port, path, headers).unwrap()
}

/// Polls /health until `ok` holds for its body.
fn wait_health(port: u16, d: &Daemon, headers: &[(&str, &str)], ok: impl Fn(&Value) -> bool) {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok((_, _, body)) = try_get(port, "/health", headers) {
            if serde_json::from_str::<Value>(&body).is_ok_and(|v| ok(&v)) {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "/health never got there:\n{}",
            d.out.text()
        );
        // Polling a condition with a deadline: the monitor checks once a second.
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Where this test leaves the screenshot and the DOM.
fn out_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page");
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn the_page_in_headless_chromium_shows_everything_and_fetches_nothing_else() {
    if std::env::var_os(IN_NETNS).is_some() {
        return in_namespace();
    }
    let unshare = tools::require(
        "unshare",
        "a loopback-only network namespace for the browser",
    );
    tools::require(
        "ip",
        "bringing up loopback in that namespace (apt-get install iproute2)",
    );
    tools::require("chromium", "loading the status page in a real browser");
    let _ = std::fs::remove_file(out_dir().join("status.png"));
    let me = std::env::current_exe().unwrap();
    let mut child = Command::new(unshare)
        .arg("-n")
        .arg("--")
        .arg(&me)
        .args([
            "--exact",
            "the_page_in_headless_chromium_shows_everything_and_fetches_nothing_else",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(IN_NETNS, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run unshare -n (CI runs as root)");
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let o = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut s);
        s
    });
    let e = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the test in the namespace took over 90 s:\n{}{}",
                o.join().unwrap(),
                e.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (o, e) = (o.join().unwrap(), e.join().unwrap());
    assert!(
        status.success() && o.contains("1 passed"),
        "the test inside `unshare -n` failed ({status}):\n{o}\n{e}"
    );
    let png = std::fs::read(out_dir().join("status.png")).expect("the screenshot");
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
}

/// Chromium with a fresh profile and everything that calls home turned off;
/// `what` is `--dump-dom` or `--screenshot=PATH`. Its standard output.
fn chromium(url: &str, what: &str, profile: &Path) -> String {
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1200,1600",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(what)
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium {what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The requests the daemon's HTTP server logged, in order.
fn requests(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| {
            l.split_once("health listener: ")
                .map(|(_, r)| r.to_string())
        })
        .collect()
}

fn in_namespace() {
    let ip = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .unwrap();
    assert!(ip.success(), "ip link set lo up");
    let tg = FakeTelegram::start();
    let port = free_port();
    let dead_port = free_port();
    // A receiver that is not there: its failures and last error show.
    let hook = format!("http://user:hook-password@127.0.0.1:{dead_port}/hook?token=hook-token");
    let s = setup(
        "page-browser",
        &tg,
        &format!("127.0.0.1:{port}"),
        "",
        &format!(
            "[webhook]\nsecret = \"page-secret\"\nendpoints = [{hook:?}]\n\
             [webhook.retry]\ninitial_delay_ms = 100\nmax_attempts = 2\n"
        ),
    );
    let d = Daemon::spawn_env(
        &["run", "--config", s.config.to_str().unwrap()],
        &[("CCTELEGRAM_LOG", "debug")],
    );
    s.drop_event(
        "a.json",
        &json!({"type": "info_notification", "title": HOSTILE, "description": "d"}).to_string(),
    );
    s.drop_event(
        "b.json",
        &json!({"type": "approval_request", "title": APPROVAL, "task_id": "deploy-123",
                "description": "v1.2.3", "data": {"options": ["Approve", "Deny"]}})
        .to_string(),
    );
    wait_health(port, &d, &[], |h| {
        h["checks"].as_array().is_some_and(|c| c.len() == 6)
            && h["counters"]["events_delivered"].as_u64() >= Some(2)
            && h["webhooks"][0]["attempts"].as_u64() >= Some(1)
    });
    let before = requests(&d.out.text()).len();
    let dir = out_dir();
    let profile = daemon::TempDir::new("chromium-profile");
    let url = format!("http://127.0.0.1:{port}/");
    let dom = chromium(&url, "--dump-dom", &profile.0);
    std::fs::write(dir.join("status.html"), &dom).unwrap();
    let shot = dir.join("status.png");
    chromium(
        &url,
        &format!("--screenshot={}", shot.display()),
        &profile.0,
    );
    assert!(shot.is_file(), "no screenshot at {}", shot.display());
    // A last request of our own, to a path the page never asks for, marks
    // the end of the browser's: each request is logged before it is
    // answered, so the browser's lines all come before it.
    get(port, "/metrics", &[]);
    let marker = |r: &String| r.contains("\"/metrics\"");
    d.out.wait_match("the marker request", WAIT, |t| {
        requests(t).get(before..)?.iter().any(marker).then_some(())
    });
    let log = requests(&d.out.text());
    let end = before + log[before..].iter().position(marker).unwrap_or(0);
    // The last of wait_health's own requests may be logged after `before`
    // was taken: those are ours, not the browser's, which has no script
    // that could ask for /health.
    let browser: Vec<&String> = log[before..end]
        .iter()
        .filter(|r| !r.contains("\"/health\""))
        .collect();
    assert_eq!(
        browser,
        ["GET \"/\" answered 200", "GET \"/\" answered 200"],
        "the browser fetched something besides the page (two loads):\n{}",
        d.out.text()
    );

    let status = dom
        .split("id=\"status\">")
        .nth(1)
        .and_then(|r| r.split('<').next())
        .unwrap_or("");
    assert!(
        ["healthy", "degraded", "unhealthy"].contains(&status),
        "status {status:?} in\n{dom}"
    );
    for check in [
        "telegram_api_connectivity",
        "telegram_polling",
        "memory_usage",
        "event_backlog",
        "webhook_delivery",
        "disk_space",
    ] {
        assert!(
            dom.contains(&format!("<td>{check}</td>")),
            "{check} in\n{dom}"
        );
    }
    assert!(
        dom.contains(&format!("http://***@127.0.0.1:{dead_port}/hook?token=***")),
        "the endpoint, without credentials, in\n{dom}"
    );
    assert!(!dom.contains("hook-password") && !dom.contains("hook-token"));
    assert!(!dom.contains("page-secret") && !dom.contains(daemon::TOKEN));
    assert!(dom.contains(APPROVAL), "the undecided approval in\n{dom}");
    assert!(dom.contains("deploy-123"));
    // The hostile title is text: escaped in the DOM, and no script element.
    assert!(
        dom.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "the title as text in\n{dom}"
    );
    assert!(!dom.contains("<script"), "a script element in\n{dom}");
    assert!(dom.contains("<svg"), "the histograms in\n{dom}");
}

#[test]
fn off_loopback_without_a_token_is_refused_naming_health_token() {
    let tg = FakeTelegram::start();
    let port = free_port();
    let s = setup("page-notoken", &tg, &format!("0.0.0.0:{port}"), "", "");
    let config = s.config.to_str().unwrap();
    for args in [
        &["check-config", "--config", config][..],
        &["run", "--config", config],
    ] {
        let (code, out) = run_cli(args, &[]);
        assert_eq!(code, 78, "{args:?}: {out}");
        assert!(out.contains("health.token"), "{args:?}: {out}");
    }
}

#[test]
fn with_a_token_every_path_needs_it_and_status_sends_it() {
    const SECRET: &str = "page-token-0123456789";
    let tg = FakeTelegram::start();
    let port = free_port();
    let s = setup(
        "page-token",
        &tg,
        &format!("0.0.0.0:{port}"),
        &format!("token = \"{SECRET}\""),
        "",
    );
    let config = s.config.to_str().unwrap().to_string();
    let (code, out) = run_cli(&["check-config", "--config", &config], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains(SECRET), "the token is masked:\n{out}");
    assert!(out.contains("token = \"********\""), "{out}");

    let d = Daemon::spawn_env(
        &["run", "--config", &config],
        &[("CCTELEGRAM_LOG", "debug")],
    );
    let bearer = format!("Bearer {SECRET}");
    let good = [("Authorization", bearer.as_str())];
    wait_health(port, &d, &good, |h| h["status"] == json!("healthy"));
    let wrong = format!("Bearer {SECRET}x");
    for path in ["/", "/health", "/metrics"] {
        for headers in [
            &[][..],
            &[("Authorization", wrong.as_str())],
            &[("Authorization", SECRET)],
        ] {
            let (code, auth, body) = get(port, path, headers);
            assert_eq!(code, 401, "{path} {headers:?}: {body}");
            assert_eq!(auth.as_deref(), Some("Bearer realm=\"cctelegram\""));
            assert!(
                !body.contains("healthy") && !body.contains("cctelegram_"),
                "{body}"
            );
        }
        let (code, _, body) = get(port, path, &good);
        assert_eq!(code, 200, "{path}: {body}");
    }
    let (code, out) = run_cli(&["status", "--config", &config], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("cctelegram is healthy"), "{out}");
    // Without the token in its config, status says what is wrong.
    let other = s.root.0.join("no-token.toml");
    std::fs::write(
        &other,
        std::fs::read_to_string(&config).unwrap().replace(
            &format!("listen = \"0.0.0.0:{port}\"\ntoken = \"{SECRET}\""),
            &format!("listen = \"127.0.0.1:{port}\""),
        ),
    )
    .unwrap();
    let (code, out) = run_cli(&["status", "--config", other.to_str().unwrap()], &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("401") && out.contains("token"), "{out}");
    assert!(!d.out.text().contains(SECRET), "the token in the log");
}
