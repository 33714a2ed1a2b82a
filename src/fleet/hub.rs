//! The hub side of a fleet: every device's events in, answers out.
//!
//! Hand-offs, each "next record first, then retire the previous one":
//! - broker -> events directory: a device's event is written into the
//!   hub's own `events_dir` (with `data.device` naming the device) before
//!   its PUBACK, so from there on it is an event file like any other and
//!   takes the normal, durable path; a copy is dropped there by event id.
//!   The session is persistent (clean session off, a fixed client id), so
//!   the broker keeps what devices publish while the hub is down.
//! - response file -> broker: when the hub writes a response to a device's
//!   event it first puts an outbox record (named from what the response
//!   answers, so a replay finds it), then the outbox is published QoS 1 to
//!   that device's responses topic, each record removed on its PUBACK.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::client::{self, Conn};
use super::device::Answer;
use super::packet::{Connect, Packet, Publish};
use super::settings::name_ok;
use super::{connect, keep_alive, record_name, wake, Fleet, Wake, KEEP_ALIVE_S, WINDOW};
use crate::clock;
use crate::error::Result;
use crate::reload::Live;
use crate::responses::Responses;
use crate::signals::Stop;
use crate::store::Records;

/// Which device an event came from, by event id.
#[derive(Serialize, Deserialize)]
pub(super) struct Origin {
    pub(super) device: String,
}

/// An answer owed to a device.
#[derive(Serialize, Deserialize, Clone)]
struct Owed {
    device: String,
    answer: Answer,
}

pub struct Hub {
    pub fleet: Arc<Fleet>,
    pub live: Arc<Live>,
    pub events_dir: PathBuf,
    origins: Records,
    outbox: Records,
    poke: smol::channel::Sender<()>,
    poked: smol::channel::Receiver<()>,
}

impl Hub {
    pub fn new(
        fleet: Arc<Fleet>,
        live: Arc<Live>,
        events_dir: PathBuf,
        state_dir: &std::path::Path,
    ) -> Result<Arc<Hub>> {
        let (poke, poked) = smol::channel::bounded(1);
        Ok(Arc::new(Hub {
            fleet,
            live,
            events_dir,
            origins: Records::open(state_dir, "fleet_origins")?,
            outbox: Records::open(state_dir, "fleet_outbox")?,
            poke,
            poked,
        }))
    }

    /// Makes every response the hub writes to a device's event owed to
    /// that device too.
    pub fn forward_responses(self: &Arc<Self>, responses: &Responses) {
        let hub = self.clone();
        responses.set_forward(Box::new(move |source: &str, name: &str, body: &Value| {
            hub.owe(source, name, body)
        }));
    }

    /// Puts the outbox record for one response (before its file is written).
    fn owe(&self, source: &str, name: &str, body: &Value) {
        let Some(event_id) = body.get("event_id").and_then(Value::as_str) else {
            return;
        };
        let origin = match self
            .origins
            .get::<Origin>(&record_name(&[event_id.as_bytes()]))
        {
            Ok(Some(o)) => o,
            Ok(None) => return, // the hub's own event
            Err(e) => {
                log::error!("cannot tell which device event {event_id} came from: {e}");
                return;
            }
        };
        let id = crate::store::digest(&[origin.device.as_bytes(), b"\0", source.as_bytes()]);
        let owed = Owed {
            device: origin.device.clone(),
            answer: Answer {
                id: id.clone(),
                name: name.to_string(),
                body: body.clone(),
            },
        };
        match self.outbox.create(&record_name(&[id.as_bytes()]), &owed) {
            Ok(_) => {
                let _ = self.poke.try_send(());
            }
            Err(e) => log::error!(
                "cannot queue the answer to event {event_id} for device {}: {e}",
                origin.device
            ),
        }
    }

    pub async fn run(self: Arc<Self>, stop: Arc<Stop>) -> Result<()> {
        loop {
            let cfg = self.live.get().mqtt.clone();
            let broker = match client::parse_url(&cfg.url) {
                Ok(b) => b,
                Err(e) => {
                    log::error!("mqtt.url: {e}");
                    stop.wait().await;
                    return Ok(());
                }
            };
            let connect_packet = Connect {
                // Fixed, so the broker keeps the session and its messages.
                client_id: format!("{}-hub", cfg.topic_prefix.replace('/', "-")),
                clean_session: false,
                keep_alive_s: KEEP_ALIVE_S,
                will: None,
                username: (!cfg.username.is_empty()).then(|| cfg.username.clone()),
                password: (!cfg.password.is_empty()).then(|| cfg.password.clone()),
            };
            let Some((mut conn, _)) = connect(&self.fleet, &broker, &connect_packet, &stop).await
            else {
                return Ok(());
            };
            match self.session(&mut conn, &cfg.topic_prefix, &stop).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    log::warn!("MQTT connection lost ({e}); reconnecting, nothing is lost");
                    self.fleet.link.set_down(e.to_string());
                }
            }
        }
    }

    async fn session(&self, conn: &mut Conn, prefix: &str, stop: &Stop) -> std::io::Result<()> {
        let sub = conn.packet_id();
        conn.send(&Packet::Subscribe(
            sub,
            vec![
                (format!("{prefix}/+/events"), 1),
                (format!("{prefix}/+/status"), 1),
            ],
        ))
        .await?;
        let mut in_flight: HashMap<u16, String> = HashMap::new();
        let mut published: HashSet<String> = HashSet::new();
        loop {
            if in_flight.len() < WINDOW {
                let owed = self.outbox.load_all::<Owed>().unwrap_or_else(|e| {
                    log::error!("cannot read the answers owed to devices: {e}");
                    Vec::new()
                });
                for (name, o) in owed {
                    if in_flight.len() >= WINDOW {
                        break;
                    }
                    if published.contains(&name) || !name_ok(&o.device) {
                        continue;
                    }
                    let topic = format!("{prefix}/{}/responses", o.device);
                    let payload = serde_json::to_vec(&o.answer).unwrap_or_default();
                    let id = conn.publish1(topic, payload).await?;
                    in_flight.insert(id, name.clone());
                    published.insert(name);
                }
            }
            match wake(conn, &self.poked, stop).await {
                Wake::Stop => {
                    let _ = conn.send(&Packet::Disconnect).await;
                    return Ok(());
                }
                Wake::Work => {}
                Wake::Tick => keep_alive(conn).await?,
                Wake::In(p) => match p? {
                    Packet::PubAck(id) => {
                        if let Some(name) = in_flight.remove(&id) {
                            match self.outbox.remove(&name) {
                                Ok(()) => {
                                    published.remove(&name);
                                }
                                Err(e) => {
                                    log::error!("answer delivered, but cannot retire it: {e}")
                                }
                            }
                        }
                    }
                    Packet::Publish(p) => {
                        let taken = self.take(prefix, &p);
                        if !taken {
                            // A 3.1.1 broker resends only on a new connection.
                            return Err(std::io::Error::other(
                                "a message could not be stored; reconnecting so the broker sends it again",
                            ));
                        }
                        if let Some(id) = p.packet_id {
                            conn.send(&Packet::PubAck(id)).await?;
                        }
                    }
                    Packet::SubAck(_, codes) if codes.contains(&0x80) => log::error!(
                        "the broker refused the subscription to {prefix}/+/events; check its ACL"
                    ),
                    _ => {}
                },
            }
        }
    }

    /// Takes one message from a device; false when it could not be made
    /// durable now (then it is not acknowledged and comes again).
    fn take(&self, prefix: &str, p: &Publish) -> bool {
        let Some(rest) = p
            .topic
            .strip_prefix(prefix)
            .and_then(|r| r.strip_prefix('/'))
        else {
            return true;
        };
        let Some((device, leaf)) = rest.split_once('/') else {
            return true;
        };
        if !name_ok(device) {
            log::warn!("ignored a message on {}: not a device name", p.topic);
            return true;
        }
        let Some(devices) = self.fleet.devices.as_ref() else {
            return true;
        };
        match leaf {
            "status" => {
                let online = p.payload == b"online";
                devices.update(device, |d| d.online = online);
                log::info!(
                    "device {device} is {}",
                    if online { "online" } else { "offline" }
                );
                true
            }
            "events" => {
                let bytes = self.stamp(device, &p.payload);
                let key = crate::store::digest(&[device.as_bytes(), b"\0", &p.payload]);
                let file = format!("fleet-{}.json", &key[..24]);
                let event_id = serde_json::from_slice::<Value>(&bytes).ok().and_then(|v| {
                    v.get("event_id")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                });
                // Origin first: an answer can only come after the event is sent.
                if let Some(id) = &event_id {
                    let origin = Origin {
                        device: device.to_string(),
                    };
                    if let Err(e) = self.origins.put(&record_name(&[id.as_bytes()]), &origin) {
                        log::error!("cannot record the origin of an event from {device}: {e}");
                        return false;
                    }
                }
                if let Err(e) = crate::spool::write_atomic(&self.events_dir, &file, &bytes, 0o600) {
                    log::error!("cannot take an event from {device} ({e}); the broker keeps it");
                    return false;
                }
                devices.update(device, |d| {
                    d.last_event_ms = clock::now_ms();
                    d.online = true;
                });
                true
            }
            _ => true,
        }
    }

    /// The event with `data.device` set to the device it came from; bytes
    /// that are not an event object are passed on as they are, for the
    /// ingest to refuse into `failed/` with its reason.
    fn stamp(&self, device: &str, payload: &[u8]) -> Vec<u8> {
        let Ok(Value::Object(mut ev)) = serde_json::from_slice::<Value>(payload) else {
            return payload.to_vec();
        };
        let data = ev
            .entry("data")
            .or_insert_with(|| Value::Object(Default::default()));
        if let Value::Object(d) = data {
            d.insert("device".into(), Value::String(device.to_string()));
        }
        serde_json::to_vec(&Value::Object(ev)).unwrap_or_else(|_| payload.to_vec())
    }
}
