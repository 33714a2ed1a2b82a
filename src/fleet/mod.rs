//! Fleet mode (CONTRACT section 10): many devices, one bot, through an
//! MQTT broker.
//!
//! A device ([`device`]) publishes its accepted events and writes the
//! answers the hub sends back; the hub ([`hub`]) owns the bot, takes every
//! device's events into its own events directory (so they follow the
//! normal, durable path) and publishes answers to the device they belong
//! to. [`client`] is one MQTT 3.1.1 connection, [`packet`] its bytes.
//!
//! The running fleet is reachable through [`current`]: health, `/status`
//! and the webhook payloads only read it, and a global keeps those modules
//! free of fleet plumbing when fleet mode is off (which is the usual case).

pub mod client;
pub mod device;
pub mod hub;
pub mod packet;
pub mod settings;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use smol::future::FutureExt as _;

use crate::clock;
use crate::error::Result;
use crate::event::Event;
use crate::health::{Check, Level};
use crate::signals::Stop;
use crate::store::{digest, Records};
use client::{Broker, Conn};
use packet::Connect;
use settings::{Mqtt, Role};

/// The one queue "chat" of a device: its entries go to the broker.
pub const DEVICE_QUEUE: &str = "fleet";

/// Keep-alive we ask the broker for; a dead link is noticed within 1.5 of it.
pub const KEEP_ALIVE_S: u16 = 30;

/// Publishes in flight at once, waiting for their PUBACK.
pub const WINDOW: usize = 32;

/// Reconnect delays top out here (with jitter, from `backoff_up_to`).
const MAX_BACKOFF_MS: u64 = 30_000;

/// The device an event came from, as the hub wrote it (`data.device`).
pub fn device_of(ev: &Event) -> Option<&str> {
    ev.data.get("device").and_then(Value::as_str)
}

/// The state of the link to the broker, for health.
#[derive(Default)]
pub struct Link {
    pub up: AtomicBool,
    /// Unix ms of the last change.
    pub since_ms: AtomicU64,
    pub last_error: Mutex<Option<String>>,
}

impl Link {
    fn set_up(&self) {
        self.up.store(true, Ordering::SeqCst);
        self.since_ms.store(clock::now_ms(), Ordering::Relaxed);
    }

    fn set_down(&self, why: String) {
        if self.up.swap(false, Ordering::SeqCst) || self.since_ms.load(Ordering::Relaxed) == 0 {
            self.since_ms.store(clock::now_ms(), Ordering::Relaxed);
        }
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
    }
}

/// What the hub knows of one device.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeviceState {
    pub name: String,
    pub online: bool,
    /// Unix ms of its last event; 0 none yet.
    pub last_event_ms: u64,
}

/// The hub's list of devices, kept on disk so a restart still knows when
/// each last spoke (the online state comes back with the retained status).
pub struct Devices {
    records: Records,
    map: Mutex<BTreeMap<String, DeviceState>>,
}

impl Devices {
    pub fn open(state_dir: &Path) -> Result<Devices> {
        let records = Records::open(state_dir, "fleet_devices")?;
        let map = records
            .load_all::<DeviceState>()?
            .into_iter()
            .filter(|(_, d)| settings::name_ok(&d.name))
            .map(|(_, d)| (d.name.clone(), d))
            .collect();
        Ok(Devices {
            records,
            map: Mutex::new(map),
        })
    }

    fn update(&self, name: &str, f: impl FnOnce(&mut DeviceState)) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let d = map.entry(name.to_string()).or_insert_with(|| DeviceState {
            name: name.to_string(),
            online: false,
            last_event_ms: 0,
        });
        let before = d.clone();
        f(d);
        if *d != before {
            let file = format!("{}.json", &digest(&[name.as_bytes()])[..32]);
            // A lost update only makes "last event" older than it is.
            if let Err(e) = self.records.put(&file, d) {
                log::warn!("cannot record the state of device {name}: {e}");
            }
        }
    }

    pub fn list(&self) -> Vec<DeviceState> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.values().cloned().collect()
    }
}

/// The running fleet side of this daemon.
pub struct Fleet {
    pub role: Role,
    pub device: String,
    pub link: Link,
    /// The hub's devices; empty on a device.
    pub devices: Option<Devices>,
    /// The hub's record of which device each event came from.
    origins: Option<Records>,
}

/// Which device an event came from, on the hub (`None`: its own event,
/// or not a hub).
pub fn device_of_event(event_id: &str) -> Option<String> {
    let origins = current()?.origins.as_ref()?;
    origins
        .get::<hub::Origin>(&record_name(&[event_id.as_bytes()]))
        .ok()
        .flatten()
        .map(|o| o.device)
}

static CURRENT: OnceLock<Arc<Fleet>> = OnceLock::new();

/// The fleet of this process, if fleet mode is on.
pub fn current() -> Option<&'static Arc<Fleet>> {
    CURRENT.get()
}

/// Whether this daemon is a fleet device (no bot of its own).
pub fn is_device() -> bool {
    current().is_some_and(|f| f.role == Role::Device)
}

/// Sets up the fleet for `cfg`; `None` when fleet mode is off.
pub fn start(cfg: &Mqtt, state_dir: &Path) -> Result<Option<Arc<Fleet>>> {
    if !cfg.enabled() {
        return Ok(None);
    }
    let fleet = Arc::new(Fleet {
        role: cfg.role,
        device: cfg.device_name(),
        link: Link::default(),
        devices: match cfg.role {
            Role::Hub => Some(Devices::open(state_dir)?),
            Role::Device => None,
        },
        origins: match cfg.role {
            Role::Hub => {
                let r = Records::open(state_dir, "fleet_origins")?;
                prune(&r);
                Some(r)
            }
            Role::Device => {
                prune(&Records::open(state_dir, "fleet_answered")?);
                None
            }
        },
    });
    let _ = CURRENT.set(fleet.clone());
    Ok(Some(fleet))
}

/// `devices` for `/health`: name, online, time of the last event.
pub fn devices_json() -> Option<Value> {
    let devices = current()?.devices.as_ref()?;
    Some(Value::Array(
        devices
            .list()
            .into_iter()
            .map(|d| {
                json!({
                    "name": d.name,
                    "online": d.online,
                    "last_event": (d.last_event_ms > 0).then(|| clock::iso8601(d.last_event_ms)),
                })
            })
            .collect(),
    ))
}

/// Adds `mqtt_connection` to health; a device has no bot, so it drops the
/// Telegram checks, which would only report the token it does not need.
pub fn health_checks(checks: &mut Vec<Check>) {
    let Some(f) = current() else { return };
    if f.role == Role::Device {
        checks.retain(|c| !c.name.starts_with("telegram_"));
    }
    let up = f.link.up.load(Ordering::SeqCst);
    let since = f.link.since_ms.load(Ordering::Relaxed);
    let err = f
        .link
        .last_error
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let (level, message) = if !up && since == 0 {
        // The first attempt, at start-up: not a problem to report yet.
        (Level::Pass, "connecting to the broker".to_string())
    } else if up {
        (
            Level::Pass,
            format!("connected to the broker as {} {}", f.role.name(), f.device),
        )
    } else {
        // Everything owed waits on disk, so a short outage only warns;
        // a link down for five minutes is a failure someone must look at.
        let down_ms = clock::age_ms(since, clock::now_ms());
        let level = if since > 0 && down_ms >= 300_000 {
            Level::Fail
        } else {
            Level::Warn
        };
        (
            level,
            format!(
                "not connected to the broker: {}",
                err.unwrap_or_else(|| "connecting".into())
            ),
        )
    };
    checks.push(Check {
        name: "mqtt_connection",
        level,
        message,
        fields: json!({"connected": up, "role": f.role.name(), "device": f.device}),
    });
}

/// Adds the devices to a `/health` body (on the hub).
pub fn health_body(body: &mut Value) {
    if let Some(d) = devices_json() {
        body["devices"] = d;
    }
}

/// The `/status` lines about devices (on the hub).
pub fn status_lines() -> String {
    let Some(devices) = current().and_then(|f| f.devices.as_ref()) else {
        return String::new();
    };
    let mut s = String::from("\nDevices:");
    let list = devices.list();
    if list.is_empty() {
        s.push_str(" none yet");
    }
    for d in list {
        let last = if d.last_event_ms > 0 {
            clock::iso8601(d.last_event_ms)
        } else {
            "no event yet".into()
        };
        s.push_str(&format!(
            "\n{} {}: {}, last event {last}",
            if d.online { "🟢" } else { "⚪" },
            d.name,
            if d.online { "online" } else { "offline" },
        ));
    }
    s
}

/// The devices of a `/health` body as `cctelegram status` prints them.
pub fn status_table(h: &Value) -> String {
    let Some(list) = h["devices"].as_array() else {
        return String::new();
    };
    let mut s = format!("\n{:<27} {:<8} LAST EVENT\n", "DEVICE", "STATE");
    for d in list {
        s.push_str(&format!(
            "{:<27} {:<8} {}\n",
            d["name"].as_str().unwrap_or(""),
            if d["online"] == true {
                "online"
            } else {
                "offline"
            },
            d["last_event"].as_str().unwrap_or("none yet"),
        ));
    }
    s
}

/// Connects, retrying with backoff and jitter until it works or `stop`;
/// `None` on stop.
async fn connect(
    fleet: &Fleet,
    broker: &Broker,
    connect: &Connect,
    stop: &Stop,
) -> Option<(Conn, bool)> {
    let mut attempts = 0u32;
    loop {
        if stop.is_set() {
            return None;
        }
        let tried = async { Some(Conn::open(broker, connect).await) }
            .or(async {
                stop.wait().await;
                None
            })
            .await?;
        match tried {
            Ok(c) => {
                fleet.link.set_up();
                log::info!(
                    "connected to the MQTT broker {}:{} as {} {}",
                    broker.host,
                    broker.port,
                    fleet.role.name(),
                    fleet.device
                );
                return Some(c);
            }
            Err(e) => {
                attempts += 1;
                let wait = crate::telegram::send::backoff_up_to(attempts, MAX_BACKOFF_MS);
                let why = e.to_string();
                if attempts == 1 || attempts.is_multiple_of(10) {
                    log::warn!(
                        "cannot reach the MQTT broker {}:{} ({why}); what is owed waits on disk, retrying in {:.1} s",
                        broker.host,
                        broker.port,
                        wait as f64 / 1000.0
                    );
                }
                fleet.link.set_down(why);
                async {
                    smol::Timer::after(Duration::from_millis(wait)).await;
                }
                .or(stop.wait())
                .await;
            }
        }
    }
}

/// What woke a session up.
enum Wake {
    In(std::io::Result<packet::Packet>),
    Work,
    Tick,
    Stop,
}

/// Waits for the next thing a session must handle: a packet, new work, the
/// keep-alive tick or the stop.
async fn wake(conn: &mut Conn, work: &smol::channel::Receiver<()>, stop: &Stop) -> Wake {
    let tick = Duration::from_secs(u64::from(KEEP_ALIVE_S) / 3);
    let incoming = async { Wake::In(conn.next().await) };
    let work = async {
        match work.recv().await {
            Ok(()) => Wake::Work,
            Err(_) => std::future::pending().await,
        }
    };
    incoming
        .or(work)
        .or(async {
            smol::Timer::after(tick).await;
            Wake::Tick
        })
        .or(async {
            stop.wait().await;
            Wake::Stop
        })
        .await
}

/// Keep-alive: a PINGREQ when we have been quiet, an error when the broker has.
async fn keep_alive(conn: &mut Conn) -> std::io::Result<()> {
    let ka = Duration::from_secs(u64::from(KEEP_ALIVE_S));
    if conn.last_heard.elapsed() > ka + ka / 2 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the broker has not answered for 45 s",
        ));
    }
    if conn.last_sent.elapsed() >= ka / 2 {
        conn.send(&packet::Packet::PingReq).await?;
    }
    Ok(())
}

/// How long the hub remembers where an event came from, and a device which
/// answers it wrote: far beyond any approval's timeout or a broker's resend.
const REMEMBER_MS: u64 = 30 * 24 * 3600 * 1000;

/// Forgets records older than [`REMEMBER_MS`] (at start-up), so these
/// directories do not grow for ever.
fn prune(records: &Records) {
    let now = std::time::SystemTime::now();
    for name in records.names().unwrap_or_default() {
        let old = std::fs::metadata(records.path(&name))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| now.duration_since(t).ok())
            .is_some_and(|age| age.as_millis() as u64 > REMEMBER_MS);
        if old {
            let _ = records.remove_unsynced(&name);
        }
    }
}

/// A record name for something named by text from outside (an event id,
/// a response id): a digest, never the text itself.
fn record_name(parts: &[&[u8]]) -> String {
    format!("{}.json", &digest(parts)[..40])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_persist_and_list_in_order() {
        let dir = std::env::temp_dir().join(format!("cct-fleet-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let d = Devices::open(&dir).unwrap();
        d.update("pi2", |s| s.online = true);
        d.update("pi1", |s| s.last_event_ms = 5);
        let again = Devices::open(&dir).unwrap();
        let names: Vec<String> = again.list().into_iter().map(|d| d.name).collect();
        assert_eq!(names, ["pi1", "pi2"]);
        assert!(again.list()[1].online);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
