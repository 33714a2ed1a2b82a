//! MQTT 3.1.1 packets, encoded and decoded without I/O.
//!
//! Only what a fleet needs: CONNECT (client id, clean session, keep-alive,
//! last will, username and password), CONNACK, PUBLISH at QoS 0 and 1,
//! PUBACK, SUBSCRIBE, SUBACK, PINGREQ, PINGRESP and DISCONNECT. Decoding
//! takes a byte buffer that may hold part of a packet, one packet or
//! several, and never panics on what a broker (or anyone on the wire)
//! sends: a malformed packet is an error that ends the connection.

/// The largest packet we take; an event is at most `max_event_bytes` and
/// a broker will not send more than a client published.
pub const MAX_PACKET: usize = 64 << 20;

#[derive(Debug, Clone, PartialEq)]
pub struct Will {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Connect {
    pub client_id: String,
    pub clean_session: bool,
    pub keep_alive_s: u16,
    pub will: Option<Will>,
    pub username: Option<String>,
    pub password: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Publish {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
    pub dup: bool,
    /// Present for QoS 1.
    pub packet_id: Option<u16>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Packet {
    Connect(Connect),
    /// Session present, return code (0 accepted).
    ConnAck {
        session_present: bool,
        code: u8,
    },
    Publish(Publish),
    PubAck(u16),
    /// Packet id, then (topic filter, QoS) pairs.
    Subscribe(u16, Vec<(String, u8)>),
    /// Packet id, then one granted QoS (0x80 refused) per filter.
    SubAck(u16, Vec<u8>),
    PingReq,
    PingResp,
    Disconnect,
}

/// Why bytes from the wire are not a packet we take.
#[derive(Debug, Clone, PartialEq)]
pub enum Malformed {
    Length,
    TooLarge(usize),
    Type(u8),
    Flags(u8),
    Truncated,
    Utf8,
    Qos(u8),
}

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            Malformed::Length => write!(f, "a remaining length longer than four bytes"),
            Malformed::TooLarge(n) => write!(f, "a packet of {n} bytes, above {MAX_PACKET}"),
            Malformed::Type(t) => write!(f, "packet type {t}, which a client never receives"),
            Malformed::Flags(b) => write!(f, "reserved flags set in first byte {b:#04x}"),
            Malformed::Truncated => write!(f, "a packet shorter than its fields"),
            Malformed::Utf8 => write!(f, "a string that is not UTF-8"),
            Malformed::Qos(q) => write!(f, "QoS {q}, which is not 0, 1 or 2"),
        }
    }
}

/// The connect return codes of MQTT 3.1.1, in words.
pub fn connack_reason(code: u8) -> &'static str {
    match code {
        0 => "accepted",
        1 => "unacceptable protocol version (the broker does not speak MQTT 3.1.1)",
        2 => "client identifier rejected",
        3 => "server unavailable",
        4 => "bad user name or password",
        5 => "not authorized",
        _ => "refused with an unknown code",
    }
}

fn put_len(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            break;
        }
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    // Strings and binary fields are at most 65535 bytes; longer ones are
    // cut rather than wrapped into a wrong length (topics and ids are
    // ours and short; payloads do not use this).
    let b = &b[..b.len().min(usize::from(u16::MAX))];
    out.extend_from_slice(&(b.len() as u16).to_be_bytes());
    out.extend_from_slice(b);
}

fn frame(first: u8, body: Vec<u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(first);
    put_len(&mut out, body.len());
    out.extend_from_slice(&body);
    out
}

pub fn encode(p: &Packet) -> Vec<u8> {
    match p {
        Packet::Connect(c) => {
            let mut b = Vec::new();
            put_bytes(&mut b, b"MQTT");
            b.push(4); // protocol level 3.1.1
            let mut flags = 0u8;
            if c.clean_session {
                flags |= 0x02;
            }
            if let Some(w) = &c.will {
                flags |= 0x04 | ((w.qos & 3) << 3);
                if w.retain {
                    flags |= 0x20;
                }
            }
            if c.password.is_some() {
                flags |= 0x40;
            }
            if c.username.is_some() {
                flags |= 0x80;
            }
            b.push(flags);
            b.extend_from_slice(&c.keep_alive_s.to_be_bytes());
            put_bytes(&mut b, c.client_id.as_bytes());
            if let Some(w) = &c.will {
                put_bytes(&mut b, w.topic.as_bytes());
                put_bytes(&mut b, &w.payload);
            }
            if let Some(u) = &c.username {
                put_bytes(&mut b, u.as_bytes());
            }
            if let Some(pw) = &c.password {
                put_bytes(&mut b, pw.as_bytes());
            }
            frame(0x10, b)
        }
        Packet::ConnAck {
            session_present,
            code,
        } => frame(0x20, vec![u8::from(*session_present), *code]),
        Packet::Publish(p) => {
            let mut first = 0x30 | ((p.qos & 3) << 1);
            if p.dup {
                first |= 0x08;
            }
            if p.retain {
                first |= 0x01;
            }
            let mut b = Vec::with_capacity(p.topic.len() + p.payload.len() + 4);
            put_bytes(&mut b, p.topic.as_bytes());
            if p.qos > 0 {
                b.extend_from_slice(&p.packet_id.unwrap_or(1).to_be_bytes());
            }
            b.extend_from_slice(&p.payload);
            frame(first, b)
        }
        Packet::PubAck(id) => frame(0x40, id.to_be_bytes().to_vec()),
        Packet::Subscribe(id, filters) => {
            let mut b = id.to_be_bytes().to_vec();
            for (f, q) in filters {
                put_bytes(&mut b, f.as_bytes());
                b.push(*q);
            }
            frame(0x82, b)
        }
        Packet::SubAck(id, codes) => {
            let mut b = id.to_be_bytes().to_vec();
            b.extend_from_slice(codes);
            frame(0x90, b)
        }
        Packet::PingReq => vec![0xc0, 0],
        Packet::PingResp => vec![0xd0, 0],
        Packet::Disconnect => vec![0xe0, 0],
    }
}

/// A cursor over one packet's body.
struct Body<'a>(&'a [u8]);

impl<'a> Body<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if self.0.len() < n {
            return Err(Malformed::Truncated);
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, Malformed> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn bytes(&mut self) -> Result<&'a [u8], Malformed> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }
    fn string(&mut self) -> Result<String, Malformed> {
        let b = self.bytes()?;
        std::str::from_utf8(b)
            .map(str::to_string)
            .map_err(|_| Malformed::Utf8)
    }
}

/// Decodes the first packet in `buf`: `Ok(None)` when it is not complete
/// yet, else the packet and how many bytes it took.
pub fn decode(buf: &[u8]) -> Result<Option<(Packet, usize)>, Malformed> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let mut len = 0usize;
    let mut at = 1;
    loop {
        let Some(&b) = buf.get(at) else {
            return Ok(None);
        };
        len |= usize::from(b & 0x7f) << (7 * (at - 1));
        at += 1;
        if b & 0x80 == 0 {
            break;
        }
        if at > 4 {
            return Err(Malformed::Length);
        }
    }
    if len > MAX_PACKET {
        return Err(Malformed::TooLarge(len));
    }
    let Some(body) = buf.get(at..at + len) else {
        return Ok(None);
    };
    let total = at + len;
    let flags = first & 0x0f;
    let mut b = Body(body);
    let fixed = |want: u8| {
        if flags == want {
            Ok(())
        } else {
            Err(Malformed::Flags(first))
        }
    };
    let p = match first >> 4 {
        1 => {
            fixed(0)?;
            let _name = b.bytes()?;
            let _level = b.u8()?;
            let f = b.u8()?;
            let keep_alive_s = b.u16()?;
            let client_id = b.string()?;
            let will = if f & 0x04 != 0 {
                Some(Will {
                    topic: b.string()?,
                    payload: b.bytes()?.to_vec(),
                    qos: (f >> 3) & 3,
                    retain: f & 0x20 != 0,
                })
            } else {
                None
            };
            let username = if f & 0x80 != 0 {
                Some(b.string()?)
            } else {
                None
            };
            let password = if f & 0x40 != 0 {
                Some(b.string()?)
            } else {
                None
            };
            Packet::Connect(Connect {
                client_id,
                clean_session: f & 0x02 != 0,
                keep_alive_s,
                will,
                username,
                password,
            })
        }
        2 => {
            fixed(0)?;
            let sp = b.u8()?;
            let code = b.u8()?;
            Packet::ConnAck {
                session_present: sp & 1 != 0,
                code,
            }
        }
        3 => {
            let qos = (flags >> 1) & 3;
            if qos > 2 {
                return Err(Malformed::Qos(qos));
            }
            let topic = b.string()?;
            let packet_id = if qos > 0 { Some(b.u16()?) } else { None };
            Packet::Publish(Publish {
                topic,
                payload: b.0.to_vec(),
                qos,
                retain: flags & 1 != 0,
                dup: flags & 0x08 != 0,
                packet_id,
            })
        }
        4 => {
            fixed(0)?;
            Packet::PubAck(b.u16()?)
        }
        8 => {
            fixed(2)?;
            let id = b.u16()?;
            let mut filters = Vec::new();
            while !b.0.is_empty() {
                let f = b.string()?;
                filters.push((f, b.u8()?));
            }
            Packet::Subscribe(id, filters)
        }
        9 => {
            fixed(0)?;
            let id = b.u16()?;
            Packet::SubAck(id, b.0.to_vec())
        }
        12 => {
            fixed(0)?;
            Packet::PingReq
        }
        13 => {
            fixed(0)?;
            Packet::PingResp
        }
        14 => {
            fixed(0)?;
            Packet::Disconnect
        }
        t => return Err(Malformed::Type(t)),
    };
    Ok(Some((p, total)))
}

/// Whether `topic` matches the subscription `filter` (`+` one level, `#`
/// the rest).
pub fn matches(filter: &str, topic: &str) -> bool {
    let mut t = topic.split('/');
    for f in filter.split('/') {
        match (f, t.next()) {
            ("#", _) => return true,
            ("+", Some(_)) => {}
            (f, Some(level)) if f == level => {}
            _ => return false,
        }
    }
    t.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(p: Packet) {
        let bytes = encode(&p);
        assert_eq!(decode(&bytes), Ok(Some((p, bytes.len()))));
        // Every strict prefix is "not complete yet", never an error.
        for n in 0..bytes.len() {
            assert_eq!(decode(&bytes[..n]), Ok(None), "prefix {n}");
        }
    }

    #[test]
    fn every_packet_round_trips() {
        round(Packet::Connect(Connect {
            client_id: "cctelegram-hub".into(),
            clean_session: false,
            keep_alive_s: 30,
            will: Some(Will {
                topic: "cctelegram/pi/status".into(),
                payload: b"offline".to_vec(),
                qos: 1,
                retain: true,
            }),
            username: Some("u".into()),
            password: Some("p".into()),
        }));
        round(Packet::ConnAck {
            session_present: true,
            code: 0,
        });
        round(Packet::Publish(Publish {
            topic: "a/b".into(),
            payload: vec![7; 300],
            qos: 1,
            retain: false,
            dup: true,
            packet_id: Some(513),
        }));
        round(Packet::Publish(Publish {
            topic: "a/b".into(),
            payload: b"online".to_vec(),
            qos: 0,
            retain: true,
            dup: false,
            packet_id: None,
        }));
        round(Packet::PubAck(65535));
        round(Packet::Subscribe(2, vec![("x/+/events".into(), 1)]));
        round(Packet::SubAck(2, vec![1, 0x80]));
        round(Packet::PingReq);
        round(Packet::PingResp);
        round(Packet::Disconnect);
    }

    #[test]
    fn connect_matches_the_specification_bytes() {
        // MQTT 3.1.1 section 3.1: "MQTT", level 4, clean session, keep-alive 60, id "a".
        let c = encode(&Packet::Connect(Connect {
            client_id: "a".into(),
            clean_session: true,
            keep_alive_s: 60,
            will: None,
            username: None,
            password: None,
        }));
        assert_eq!(
            c,
            [0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 1, b'a']
        );
    }

    #[test]
    fn lengths_use_up_to_four_bytes() {
        let p = Packet::Publish(Publish {
            topic: "t".into(),
            payload: vec![0; 20_000],
            qos: 0,
            retain: false,
            dup: false,
            packet_id: None,
        });
        let b = encode(&p);
        assert_eq!(&b[1..4], &[0xa3, 0x9c, 0x01]); // 20003 bytes
        assert_eq!(decode(&b).map(|d| d.map(|(_, n)| n)), Ok(Some(b.len())));
        assert_eq!(
            decode(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01]),
            Err(Malformed::Length)
        );
        assert_eq!(
            decode(&[0x30, 0xff, 0xff, 0xff, 0x7f]),
            Err(Malformed::TooLarge(268_435_455))
        );
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        assert_eq!(decode(&[0x40, 1, 0]), Err(Malformed::Truncated));
        assert_eq!(decode(&[0x41, 2, 0, 1]), Err(Malformed::Flags(0x41)));
        assert_eq!(decode(&[0x50, 2, 0, 1]), Err(Malformed::Type(5)));
        assert_eq!(decode(&[0x36, 3, 0, 1, b'a']), Err(Malformed::Qos(3)));
        assert_eq!(decode(&[0x30, 4, 0, 2, 0xff, 0xfe]), Err(Malformed::Utf8));
        // Two packets in one buffer: the first, and how much it took.
        let mut two = encode(&Packet::PubAck(1));
        two.extend(encode(&Packet::PingResp));
        assert_eq!(decode(&two), Ok(Some((Packet::PubAck(1), 4))));
    }

    #[test]
    fn filters_match_topics() {
        assert!(matches("c/+/events", "c/pi/events"));
        assert!(!matches("c/+/events", "c/pi/status"));
        assert!(!matches("c/+/events", "c/a/b/events"));
        assert!(matches("c/#", "c/a/b"));
        assert!(matches("c/pi/responses", "c/pi/responses"));
        assert!(!matches("c/pi", "c/pi/responses"));
    }
}
