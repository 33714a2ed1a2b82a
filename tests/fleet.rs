//! Fleet mode (CONTRACT section 10, issue 16): a real Mosquitto on
//! 127.0.0.1, a hub against the fake Bot API and devices without a bot
//! token. Each test has its own broker, so they run side by side.

#[path = "support/daemon.rs"]
mod daemon;
#[path = "support/harness.rs"]
mod harness;
#[path = "support/mosquitto.rs"]
mod mosquitto;
#[path = "support/receivers.rs"]
mod receivers;
#[path = "support/telegram.rs"]
mod telegram;
#[path = "support/tools.rs"]
mod tools;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use daemon::{run_cli, Daemon, Setup, TOKEN};
use harness::{
    approval, count_in, edit_config, free_port, listen_on, notice, responses, start_polling,
    wait_fs, wait_message, ME, WAIT,
};
use mosquitto::Mosquitto;
use receivers::Recorder;
use serde_json::Value;
use telegram::FakeTelegram;

/// Where the route of the tests sends device "pi2": a forum topic.
const PI2_CHAT: &str = "-100555";
const PI2_TOPIC: i64 = 7;

fn hub(tg: &FakeTelegram, broker: &Mosquitto, extra: &str) -> Setup {
    Setup::new(
        "fleet-hub",
        &tg.url(),
        &[ME],
        &format!(
            "[mqtt]\nurl = \"{}\"\nrole = \"hub\"\ndevice = \"hub\"\n{extra}",
            broker.url()
        ),
    )
}

/// A device: no bot token at all.
fn device(tg: &FakeTelegram, broker: &Mosquitto, name: &str) -> Setup {
    let s = Setup::new(
        &format!("fleet-{name}"),
        &tg.url(),
        &[ME],
        &format!(
            "[mqtt]\nurl = \"{}\"\nrole = \"device\"\ndevice = \"{name}\"\n",
            broker.url()
        ),
    );
    edit_config(&s, &format!("bot_token = \"{TOKEN}\"\n"), "");
    s
}

fn connected(d: &Daemon) {
    d.out.wait_for("connected to the MQTT broker", WAIT);
}

fn queued(s: &Setup) -> usize {
    Setup::files(&s.state.join("queue")).len()
}

fn status_json(hub: &Setup) -> Value {
    let (code, out) = run_cli(
        &["status", "--json", "--config", hub.config.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 0, "status: {out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("status --json: {e}: {out}"))
}

fn device_online(h: &Value, name: &str) -> Option<bool> {
    h["devices"]
        .as_array()?
        .iter()
        .find(|d| d["name"] == name)
        .and_then(|d| d["online"].as_bool())
}

#[test]
fn two_devices_one_bot_routes_answers_and_status() {
    let broker = Mosquitto::start("fleet-mq1");
    let tg = FakeTelegram::start();
    let rec = Recorder::start();
    let hub = hub(
        &tg,
        &broker,
        &format!(
            "\n[[route]]\ndevices = [\"pi2\"]\nchats = [\"{PI2_CHAT}/{PI2_TOPIC}\"]\n\n{}",
            harness::webhook_toml("fleet-secret", &[rec.url("/hooks")])
        ),
    );
    let port = free_port();
    listen_on(&hub, port);
    let h = start_polling(&tg, &hub);
    connected(&h);
    let (pi1, pi2) = (device(&tg, &broker, "pi1"), device(&tg, &broker, "pi2"));
    let (d1, mut d2) = (pi1.start(), pi2.start());
    connected(&d1);
    connected(&d2);

    // Events from both devices reach the phone, each naming its device;
    // the route sends pi2's to its own chat.
    pi1.drop_event("a.json", &notice("from-pi1", "Backup done on one"));
    pi2.drop_event("a.json", &notice("from-pi2", "Backup done on two"));
    wait_message(&tg, &h, &ME.to_string(), "Backup done on one", WAIT);
    wait_message(&tg, &h, PI2_CHAT, "Backup done on two", WAIT);
    let msgs = tg.messages();
    let one = msgs
        .iter()
        .find(|m| m.text.contains("Backup done on one"))
        .unwrap();
    let two = msgs
        .iter()
        .find(|m| m.text.contains("Backup done on two"))
        .unwrap();
    assert!(
        one.text.contains("pi1") && !one.text.contains("pi2"),
        "{}",
        one.text
    );
    assert!(two.text.contains("pi2"), "{}", two.text);
    assert_eq!(
        two.thread_id,
        Some(PI2_TOPIC),
        "pi2's events go to its own topic"
    );
    assert_eq!(one.thread_id, None);
    assert_eq!(count_in(&tg, &ME.to_string(), "Backup done on two"), 0);
    assert_eq!(count_in(&tg, PI2_CHAT, "Backup done on one"), 0);
    // The device never talked to Telegram: only the hub polls.
    assert!(!d1.out.text().contains("getUpdates"));

    // The hub's own events directory works as on any machine.
    hub.drop_event("own.json", &notice("from-hub", "The hub itself speaks"));
    wait_message(&tg, &h, &ME.to_string(), "The hub itself speaks", WAIT);
    let own = tg
        .messages()
        .into_iter()
        .find(|m| m.text.contains("The hub itself"))
        .unwrap();
    assert!(!own.text.contains('🖥'), "{}", own.text);

    // Webhooks come from the hub and name the device.
    rec.wait_until(WAIT, "event_processed of from-pi1", |log| {
        !harness::processed(log, "from-pi1").is_empty()
    });
    let hooks = rec.requests();
    let p = harness::processed(&hooks, "from-pi1")[0].json();
    assert_eq!(p["bridge_info"]["device"], "pi1", "{p}");
    assert_eq!(p["event"]["data"]["device"], "pi1", "{p}");

    // A press on pi1's approval: its response file on pi1 (and the hub), none on pi2.
    pi1.drop_event("b.json", &approval("deploy-pi1", "Deploy from one"));
    wait_message(&tg, &h, &ME.to_string(), "Deploy from one", WAIT);
    let m = tg
        .messages()
        .into_iter()
        .find(|m| m.text.contains("Deploy from one"))
        .unwrap();
    tg.press(ME, "me", m.message_id, ME, "approve_deploy-pi1");
    wait_fs(WAIT, "the response file on pi1", Some(&d1), || {
        responses(&pi1.responses)
            .iter()
            .any(|(_, v)| v["event_id"] == "deploy-pi1" && v["option"] == "Approve")
    });
    let on_pi1 = responses(&pi1.responses);
    assert_eq!(on_pi1.len(), 1, "{on_pi1:?}");
    let mode = fs::metadata(pi1.responses.join(&on_pi1[0].0))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o640);
    assert_eq!(on_pi1[0].1["response_type"], "callback_query");
    let on_hub = responses(&hub.responses);
    assert_eq!(on_hub.len(), 1, "{on_hub:?}");
    assert_eq!(
        on_hub[0].0, on_pi1[0].0,
        "the same file name on hub and device"
    );
    assert!(responses(&pi2.responses).is_empty());
    rec.wait_until(WAIT, "the user_response of deploy-pi1", |log| {
        log.iter().any(|r| {
            let v = r.json();
            v["webhook_type"] == "user_response" && v["response"]["event_id"] == "deploy-pi1"
        })
    });
    let answered = rec
        .requests()
        .into_iter()
        .map(|r| r.json())
        .find(|v| v["webhook_type"] == "user_response")
        .unwrap();
    assert_eq!(answered["bridge_info"]["device"], "pi1", "{answered}");

    // A reply to pi1's notice goes back to pi1 only.
    tg.user_message(ME, "me", ME, "seen it", Some(one.message_id));
    wait_fs(WAIT, "the reply on pi1", Some(&d1), || {
        responses(&pi1.responses)
            .iter()
            .any(|(_, v)| v["event_id"] == "from-pi1" && v["message_text"] == "seen it")
    });
    assert!(responses(&pi2.responses).is_empty());

    // status on the hub: both online, with the time of their last event;
    // then pi2 stops and is offline.
    // /health is refreshed every `interval_seconds` (1 s here).
    wait_fs(WAIT, "both devices online in status", Some(&h), || {
        let v = status_json(&hub);
        device_online(&v, "pi1") == Some(true)
            && device_online(&v, "pi2") == Some(true)
            && v["devices"][0]["last_event"].is_string()
    });
    let h1 = status_json(&hub);
    assert!(h1["devices"][0]["last_event"].is_string(), "{h1}");
    let check = h1["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "mqtt_connection")
        .cloned();
    assert_eq!(check.map(|c| c["status"].clone()), Some("pass".into()));
    let (_, table) = run_cli(&["status", "--config", hub.config.to_str().unwrap()], &[]);
    assert!(table.contains("pi1") && table.contains("online"), "{table}");
    // /status in Telegram lists them too.
    let before = tg.messages().len();
    tg.user_message(ME, "me", ME, "/status", None);
    tg.wait_until(WAIT, "the /status answer", |st| {
        st.messages[before..]
            .iter()
            .any(|m| m.text.contains("Devices:"))
    });
    let answer = tg.messages()[before..]
        .iter()
        .find(|m| m.text.contains("Devices:"))
        .map(|m| m.text.clone())
        .unwrap();
    assert!(
        answer.contains("pi1: online") && answer.contains("pi2: online"),
        "{answer}"
    );
    d2.signal(libc::SIGTERM);
    assert_eq!(d2.wait_exit(Duration::from_secs(10)), 0);
    wait_fs(WAIT, "pi2 offline in status", Some(&h), || {
        let v = status_json(&hub);
        device_online(&v, "pi2") == Some(false) && device_online(&v, "pi1") == Some(true)
    });
    let (_, table) = run_cli(&["status", "--config", hub.config.to_str().unwrap()], &[]);
    let line = table
        .lines()
        .find(|l| l.starts_with("pi2"))
        .unwrap_or_default();
    assert!(line.contains("offline"), "{table}");
    drop(d1);
}

#[test]
fn nothing_lost_when_hub_broker_or_device_go_down() {
    let mut broker = Mosquitto::start("fleet-mq2");
    let tg = FakeTelegram::start();
    let hub = hub(&tg, &broker, "");
    let mut h = start_polling(&tg, &hub);
    connected(&h);
    let pi1 = device(&tg, &broker, "pi1");
    let mut d1 = pi1.start();
    connected(&d1);
    let me = ME.to_string();

    // The hub away: the broker keeps the events of its persistent session.
    h.signal(libc::SIGTERM);
    assert_eq!(h.wait_exit(Duration::from_secs(10)), 0);
    for i in 0..3 {
        pi1.drop_event(
            &format!("h{i}.json"),
            &notice(
                &format!("hub-away-{i}"),
                &format!("While the hub is away {i}"),
            ),
        );
    }
    wait_fs(WAIT, "the broker to take pi1's events", Some(&d1), || {
        queued(&pi1) == 0
            && Setup::files(&pi1.events)
                .iter()
                .all(|n| !n.ends_with(".json"))
    });
    assert_eq!(count_in(&tg, &me, "While the hub is away"), 0);
    let h = start_polling(&tg, &hub);
    for i in 0..3 {
        wait_message(&tg, &h, &me, &format!("While the hub is away {i}"), WAIT);
    }

    // The broker away: the device keeps its events on disk.
    broker.stop();
    for i in 0..3 {
        pi1.drop_event(
            &format!("b{i}.json"),
            &notice(
                &format!("broker-away-{i}"),
                &format!("While the broker is away {i}"),
            ),
        );
    }
    wait_fs(WAIT, "pi1 to queue its events on disk", Some(&d1), || {
        queued(&pi1) == 3
    });
    assert_eq!(count_in(&tg, &me, "While the broker is away"), 0);
    broker.resume();
    for i in 0..3 {
        wait_message(
            &tg,
            &h,
            &me,
            &format!("While the broker is away {i}"),
            Duration::from_secs(60),
        );
    }
    wait_fs(WAIT, "pi1's queue to empty", Some(&d1), || {
        queued(&pi1) == 0
    });

    // kill -9 mid-publish: nothing lost, copies dropped by id.
    const N: usize = 30;
    for i in 0..N {
        pi1.drop_event(
            &format!("k{i:02}.json"),
            &notice(&format!("burst-{i}"), &format!("Burst number {i:02} end")),
        );
    }
    wait_fs(
        WAIT,
        "the first of the burst on the phone",
        Some(&h),
        || count_in(&tg, &me, "Burst number") > 0 || queued(&pi1) < N,
    );
    d1.kill9();
    let d1 = pi1.start();
    wait_fs(
        Duration::from_secs(60),
        "all of the burst",
        Some(&d1),
        || (0..N).all(|i| count_in(&tg, &me, &format!("Burst number {i:02} end")) >= 1),
    );
    wait_fs(WAIT, "pi1's queue to empty", Some(&d1), || {
        queued(&pi1) == 0
    });
    // Whatever pi1 published twice has reached the hub by now (its queue
    // is empty); the hub's own queue drains before we count.
    wait_fs(WAIT, "the hub's queue to drain", Some(&h), || {
        queued(&hub) == 0
    });
    for i in 0..N {
        assert_eq!(
            count_in(&tg, &me, &format!("Burst number {i:02} end")),
            1,
            "burst {i} sent more than once"
        );
    }
    for i in 0..3 {
        assert_eq!(count_in(&tg, &me, &format!("While the hub is away {i}")), 1);
        assert_eq!(
            count_in(&tg, &me, &format!("While the broker is away {i}")),
            1
        );
    }
}

#[test]
fn a_device_needs_no_token_and_bad_mqtt_settings_exit_78() {
    let (code, out) = run_cli(&["check-config", "--config", "/dev/null"], &[]);
    assert_eq!(code, 0, "{out}");
    let dir = daemon::TempDir::new("fleet-cfg");
    let cfg = dir.0.join("c.toml");
    for (text, key) in [
        ("[mqtt]\nurl = \"tcp://h\"\n", "mqtt.url"),
        ("[mqtt]\nurl = \"mqtt://h\"\nrole = \"boss\"\n", "mqtt.role"),
        (
            "[mqtt]\nurl = \"mqtt://h\"\ndevice = \"a+b\"\n",
            "mqtt.device",
        ),
        (
            "[mqtt]\nurl = \"mqtt://h\"\npassword = \"pw-secret\"\n",
            "mqtt.username",
        ),
    ] {
        fs::write(&cfg, text).unwrap();
        let (code, out) = run_cli(&["check-config", "--config", cfg.to_str().unwrap()], &[]);
        assert_eq!(code, 78, "{text}: {out}");
        assert!(out.contains(key), "{text}: {out}");
        assert!(!out.contains("pw-secret"), "{out}");
    }
    fs::write(
        &cfg,
        "[mqtt]\nurl = \"mqtts://broker.lan\"\nusername = \"u\"\npassword = \"pw-secret\"\n",
    )
    .unwrap();
    let (code, out) = run_cli(
        &["check-config", "--config", cfg.to_str().unwrap()],
        &[("CCTELEGRAM_MQTT_PASSWORD", "env-secret")],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("[mqtt]") && out.contains("********"), "{out}");
    assert!(
        !out.contains("pw-secret") && !out.contains("env-secret"),
        "{out}"
    );
}
