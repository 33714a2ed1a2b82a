//! The device side of a fleet: queue entries go to the broker, answers
//! come back as response files.
//!
//! Hand-offs, each "next record first, then retire the previous one":
//! - queue -> broker: an accepted event's queue entry (written by ingest,
//!   exactly as without a fleet) is published QoS 1 and removed only on
//!   its PUBACK. After a reconnect everything still queued is published
//!   again; the hub drops the copies by event id.
//! - broker -> response file: an answer is written as its response file,
//!   then a record of its id, then acknowledged. A copy of an answer
//!   (the broker resends until PUBACK) finds the record, or rewrites the
//!   same file under the same name, so each is written once.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use serde_json::Value;
use smol::future::FutureExt as _;

use super::client::{self, Conn};
use super::packet::{Connect, Packet, Publish, Will};
use super::{connect, keep_alive, record_name, wake, Fleet, Wake, KEEP_ALIVE_S, WINDOW};
use crate::error::Result;
use crate::ingest::Queued;
use crate::reload::Live;
use crate::responses::Responses;
use crate::signals::Stop;
use crate::spool::Spool;
use crate::stats::Stats;
use crate::store::Records;

/// An answer as the hub publishes it to `<prefix>/<device>/responses`.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq)]
pub struct Answer {
    /// Stable for every copy of this answer.
    pub id: String,
    /// The response file name on the hub (CONTRACT section 5 names).
    pub name: String,
    pub body: Value,
}

/// Whether `name` is a response file name this side may write: one of
/// section 5's, nothing that could leave the directory.
pub fn answer_name_ok(name: &str) -> bool {
    let Some(stem) = name.strip_suffix(".json") else {
        return false;
    };
    (stem.starts_with("telegram_callback_")
        || stem.starts_with("telegram_response_")
        || stem.starts_with("telegram_expired_"))
        && stem.len() <= 160
        && stem
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

pub struct Device {
    pub fleet: Arc<Fleet>,
    pub live: Arc<Live>,
    pub spool: Arc<Spool>,
    pub responses: Arc<Responses>,
    pub answered: Records,
    pub stats: Arc<Stats>,
}

impl Device {
    fn topic(&self, leaf: &str) -> String {
        let prefix = self.live.get().mqtt.topic_prefix.clone();
        format!("{prefix}/{}/{leaf}", self.fleet.device)
    }

    /// Runs until `stop`; trouble with the broker is waited out.
    pub async fn run(
        self,
        rx: smol::channel::Receiver<Vec<Queued>>,
        stop: Arc<Stop>,
    ) -> Result<()> {
        // The ingest hands over batches; their entries are on disk (or
        // about to be: an early one is waited for) and are read from there.
        let (work_tx, work_rx) = smol::channel::bounded::<()>(1);
        let feeding = async {
            while let Ok(batch) = rx.recv().await {
                for q in batch {
                    if let Some((_, durable)) = q.early {
                        durable.wait().await;
                    }
                }
                let _ = work_tx.try_send(());
            }
            std::future::pending::<()>().await
        };
        let serving = async {
            loop {
                let cfg = self.live.get().mqtt.clone();
                let broker = match client::parse_url(&cfg.url) {
                    Ok(b) => b,
                    Err(e) => {
                        log::error!("mqtt.url: {e}");
                        stop.wait().await;
                        return;
                    }
                };
                let connect_packet = Connect {
                    client_id: format!("cctelegram-device-{}", self.fleet.device),
                    // The broker keeps answers for us while we are away.
                    clean_session: false,
                    keep_alive_s: KEEP_ALIVE_S,
                    will: Some(Will {
                        topic: self.topic("status"),
                        payload: b"offline".to_vec(),
                        qos: 1,
                        retain: true,
                    }),
                    username: (!cfg.username.is_empty()).then(|| cfg.username.clone()),
                    password: (!cfg.password.is_empty()).then(|| cfg.password.clone()),
                };
                let Some((mut conn, _)) =
                    connect(&self.fleet, &broker, &connect_packet, &stop).await
                else {
                    return;
                };
                match self.session(&mut conn, &work_rx, &stop).await {
                    Ok(()) => return,
                    Err(e) => {
                        log::warn!("MQTT connection lost ({e}); reconnecting, nothing is lost");
                        self.fleet.link.set_down(e.to_string());
                    }
                }
            }
        };
        feeding.or(serving).await;
        Ok(())
    }

    async fn session(
        &self,
        conn: &mut Conn,
        work: &smol::channel::Receiver<()>,
        stop: &Stop,
    ) -> std::io::Result<()> {
        conn.send(&Packet::Publish(Publish {
            topic: self.topic("status"),
            payload: b"online".to_vec(),
            qos: 0,
            retain: true,
            dup: false,
            packet_id: None,
        }))
        .await?;
        let sub = conn.packet_id();
        conn.send(&Packet::Subscribe(sub, vec![(self.topic("responses"), 1)]))
            .await?;
        let events = self.topic("events");
        let responses = self.topic("responses");
        // Packet id -> queue entry; names published on this connection.
        let mut in_flight: HashMap<u16, String> = HashMap::new();
        let mut published: HashSet<String> = HashSet::new();
        // The queue in order, read again when ingest says there is more
        // (not at every acknowledgement: a long backlog would be parsed
        // over and over).
        let mut todo: VecDeque<(String, crate::spool::Item)> = VecDeque::new();
        let mut reload = true;
        loop {
            if reload {
                reload = false;
                let pending = self.spool.pending().unwrap_or_else(|e| {
                    log::error!("cannot read the queue: {e}");
                    Vec::new()
                });
                Stats::set(&self.stats.backlog, pending.len() as u64);
                todo = pending
                    .into_iter()
                    .filter(|(n, _)| !published.contains(n))
                    .collect();
            }
            while in_flight.len() < WINDOW {
                let Some((name, item)) = todo.pop_front() else {
                    break;
                };
                if published.contains(&name) {
                    continue;
                }
                let payload = serde_json::to_vec(&item.event).unwrap_or_default();
                let id = conn.publish1(events.clone(), payload).await?;
                in_flight.insert(id, name.clone());
                published.insert(name);
            }
            match wake(conn, work, stop).await {
                Wake::Stop => {
                    // Said by us, since a clean DISCONNECT discards the will.
                    let _ = conn
                        .send(&Packet::Publish(Publish {
                            topic: self.topic("status"),
                            payload: b"offline".to_vec(),
                            qos: 0,
                            retain: true,
                            dup: false,
                            packet_id: None,
                        }))
                        .await;
                    let _ = conn.send(&Packet::Disconnect).await;
                    return Ok(());
                }
                Wake::Work => reload = true,
                Wake::Tick => {
                    keep_alive(conn).await?;
                    // A look now and then, in case a hand-over was missed.
                    reload = todo.is_empty() && in_flight.is_empty();
                }
                Wake::In(p) => match p? {
                    Packet::PubAck(id) => {
                        if let Some(name) = in_flight.remove(&id) {
                            match self.spool.remove(&name) {
                                Ok(()) => {
                                    published.remove(&name);
                                    Stats::bump(&self.stats.events_delivered);
                                }
                                // Left in `published`: not sent again on
                                // this connection; the next one repeats it
                                // and the hub drops the copy.
                                Err(e) => log::error!("published, but cannot retire {name}: {e}"),
                            }
                        }
                    }
                    Packet::Publish(p) if p.topic == responses => {
                        let taken = self.take_answer(&p.payload);
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
                    Packet::Publish(p) => {
                        log::warn!("ignored a message on {} (not subscribed)", p.topic);
                        if let Some(id) = p.packet_id {
                            conn.send(&Packet::PubAck(id)).await?;
                        }
                    }
                    Packet::SubAck(_, codes) if codes.contains(&0x80) => {
                        log::error!(
                            "the broker refused the subscription to {responses}; answers cannot arrive (check its ACL)"
                        );
                    }
                    _ => {}
                },
            }
        }
    }

    /// Writes one answer; false when it could not be written now (it is
    /// then not acknowledged, and the broker sends it again).
    fn take_answer(&self, payload: &[u8]) -> bool {
        let a: Answer = match serde_json::from_slice(payload) {
            Ok(a) => a,
            Err(e) => {
                log::warn!("dropped an answer from the hub that is not one ({e})");
                return true;
            }
        };
        if !answer_name_ok(&a.name) || !a.body.is_object() {
            log::warn!("dropped an answer from the hub with an unusable name or body");
            return true;
        }
        let record = record_name(&[a.id.as_bytes()]);
        if self.answered.exists(&record) {
            return true;
        }
        let mut bytes = serde_json::to_vec_pretty(&a.body).unwrap_or_default();
        bytes.push(b'\n');
        let written = crate::spool::write_atomic(
            &self.responses.dir,
            &a.name,
            &bytes,
            crate::responses::MODE,
        )
        .and_then(|()| self.answered.create(&record, &a.id).map(|_| ()));
        match written {
            Ok(()) => {
                log::info!("answer {} written as {}", a.id, a.name);
                Stats::bump(&self.stats.responses_written);
                true
            }
            Err(e) => {
                log::error!(
                    "cannot write the answer {}: {e}; the broker sends it again",
                    a.name
                );
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_section_5_names_are_written() {
        assert!(answer_name_ok(
            "telegram_callback_5_20261129_065002_42.json"
        ));
        assert!(answer_name_ok("telegram_expired_20261129_065002_k1.json"));
        for bad in [
            "../x.json",
            "telegram_callback_/../../etc.json",
            "telegram_callback_1",
            "other.json",
            "telegram_response_a b.json",
        ] {
            assert!(!answer_name_ok(bad), "{bad}");
        }
    }
}
