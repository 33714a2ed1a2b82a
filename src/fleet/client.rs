//! One MQTT connection on async-io: TCP, TLS (rustls, as for Telegram)
//! for `mqtts://`, and the packets of [`super::packet`].
//!
//! The socket is non-blocking and every wait is on its readiness, so
//! [`Conn::next`] can be raced with other waits (new work, a timer, a
//! stop) without losing bytes: a read happens only when it cannot block,
//! and whatever it brought stays in the buffer for the next call.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use smol::future::FutureExt as _;
use smol::Async;

use super::packet::{self, Connect, Packet};

/// Connecting, TLS and CONNACK together must finish within this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Where the broker is, from `[mqtt] url`.
#[derive(Debug, Clone, PartialEq)]
pub struct Broker {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

/// Parses `mqtt://host[:port]` or `mqtts://host[:port]`; the error says
/// what is wrong in words for the config message.
pub fn parse_url(url: &str) -> Result<Broker, String> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("mqtts://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("mqtt://") {
        (false, r)
    } else {
        return Err(format!(
            "expected \"mqtt://host:1883\" or \"mqtts://host:8883\", found \"{url}\""
        ));
    };
    let rest = rest.trim_end_matches('/');
    if rest.contains(['/', '@', ' ', '?', '#']) {
        return Err(format!(
            "expected only a host and port after the scheme (user and password go in \
             [mqtt] username and password), found \"{url}\""
        ));
    }
    let default = if tls { 8883 } else { 1883 };
    let (host, port) = match rest.strip_prefix('[') {
        Some(v6) => {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("an unclosed [ in \"{url}\""))?;
            (h, after.strip_prefix(':'))
        }
        None => match rest.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        },
    };
    if host.is_empty() {
        return Err(format!("no host in \"{url}\""));
    }
    let port = match port {
        None => default,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("port \"{p}\" is not a number from 1 to 65535"))?,
    };
    Ok(Broker {
        host: host.to_string(),
        port,
        tls,
    })
}

pub struct Conn {
    sock: Async<TcpStream>,
    tls: Option<rustls::ClientConnection>,
    inbuf: Vec<u8>,
    next_id: u16,
    pub last_sent: Instant,
    pub last_heard: Instant,
}

fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

fn tls_config() -> io::Result<Arc<rustls::ClientConfig>> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(other)?;
    Ok(Arc::new(
        builder.with_root_certificates(roots).with_no_client_auth(),
    ))
}

impl Conn {
    /// Connects and sends CONNECT; returns the connection and whether the
    /// broker kept a session for this client id.
    pub async fn open(broker: &Broker, connect: &Connect) -> io::Result<(Conn, bool)> {
        let work = async {
            let b = broker.clone();
            let addrs: Vec<_> = crate::pool::unblock(move || {
                (b.host.as_str(), b.port)
                    .to_socket_addrs()
                    .map(|a| a.collect::<Vec<_>>())
            })
            .await?;
            let mut last = io::Error::other(format!("{} resolves to no address", broker.host));
            let mut sock = None;
            for a in addrs {
                match Async::<TcpStream>::connect(a).await {
                    Ok(s) => {
                        sock = Some(s);
                        break;
                    }
                    Err(e) => last = e,
                }
            }
            let sock = sock.ok_or(last)?;
            let _ = sock.get_ref().set_nodelay(true);
            let tls = if broker.tls {
                let name =
                    rustls::pki_types::ServerName::try_from(broker.host.clone()).map_err(other)?;
                Some(rustls::ClientConnection::new(tls_config()?, name).map_err(other)?)
            } else {
                None
            };
            let now = Instant::now();
            let mut conn = Conn {
                sock,
                tls,
                inbuf: Vec::new(),
                next_id: 0,
                last_sent: now,
                last_heard: now,
            };
            conn.send(&Packet::Connect(connect.clone())).await?;
            match conn.next().await? {
                Packet::ConnAck {
                    session_present,
                    code: 0,
                } => Ok((conn, session_present)),
                Packet::ConnAck { code, .. } => Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!(
                        "the broker refused the connection: {}",
                        packet::connack_reason(code)
                    ),
                )),
                p => Err(other(format!("the broker answered CONNECT with {p:?}"))),
            }
        };
        let late = async {
            smol::Timer::after(CONNECT_TIMEOUT).await;
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no CONNACK within 15 s",
            ))
        };
        work.or(late).await
    }

    /// A packet id for a QoS 1 publish or a subscribe (never 0).
    pub fn packet_id(&mut self) -> u16 {
        self.next_id = self.next_id.wrapping_add(1).max(1);
        self.next_id
    }

    /// Publishes `payload` to `topic` at QoS 1; the packet id its PUBACK
    /// will carry.
    pub async fn publish1(&mut self, topic: String, payload: Vec<u8>) -> io::Result<u16> {
        let id = self.packet_id();
        self.send(&Packet::Publish(packet::Publish {
            topic,
            payload,
            qos: 1,
            retain: false,
            dup: false,
            packet_id: Some(id),
        }))
        .await?;
        Ok(id)
    }

    pub async fn send(&mut self, p: &Packet) -> io::Result<()> {
        let bytes = packet::encode(p);
        match &mut self.tls {
            None => {
                let mut at = 0;
                while at < bytes.len() {
                    match self.sock.get_ref().write(&bytes[at..]) {
                        Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                        Ok(n) => at += n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            self.sock.writable().await?
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            Some(tls) => {
                tls.writer().write_all(&bytes)?;
            }
        }
        self.flush_tls().await?;
        self.last_sent = Instant::now();
        Ok(())
    }

    /// Writes what TLS has to say (handshake records, encrypted data).
    async fn flush_tls(&mut self) -> io::Result<()> {
        let Some(tls) = &mut self.tls else {
            return Ok(());
        };
        while tls.wants_write() {
            match tls.write_tls(&mut self.sock.get_ref()) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.sock.writable().await?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The next packet from the broker. Cancel-safe: see the module docs.
    pub async fn next(&mut self) -> io::Result<Packet> {
        loop {
            match packet::decode(&self.inbuf) {
                Ok(Some((p, n))) => {
                    self.inbuf.drain(..n);
                    self.last_heard = Instant::now();
                    return Ok(p);
                }
                Ok(None) => {}
                Err(m) => return Err(other(format!("the broker sent {m}"))),
            }
            if !self.fill()? {
                self.sock.readable().await?;
                if !self.fill()? {
                    continue;
                }
            }
            // TLS may have something to answer (a key update, a ticket).
            self.flush_tls().await?;
        }
    }

    /// Reads what is there without blocking; false when nothing was.
    fn fill(&mut self) -> io::Result<bool> {
        let mut buf = [0u8; 16 * 1024];
        let mut got = false;
        loop {
            match &mut self.tls {
                None => match self.sock.get_ref().read(&mut buf) {
                    Ok(0) => return Err(closed()),
                    Ok(n) => {
                        self.inbuf.extend_from_slice(&buf[..n]);
                        got = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(got),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                },
                Some(tls) => {
                    // Plaintext already decrypted comes first.
                    loop {
                        match tls.reader().read(&mut buf) {
                            Ok(0) => return Err(closed()),
                            Ok(n) => {
                                self.inbuf.extend_from_slice(&buf[..n]);
                                got = true;
                            }
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) => return Err(e),
                        }
                    }
                    match tls.read_tls(&mut self.sock.get_ref()) {
                        Ok(0) => return Err(closed()),
                        Ok(_) => {
                            tls.process_new_packets().map_err(other)?;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            // Handshake records may be waiting to go out.
                            return Ok(got || tls.wants_write());
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
    }
}

fn closed() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "the broker closed the connection",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_host_port_and_tls() {
        let b = |host: &str, port, tls| Broker {
            host: host.into(),
            port,
            tls,
        };
        assert_eq!(
            parse_url("mqtt://127.0.0.1:1884"),
            Ok(b("127.0.0.1", 1884, false))
        );
        assert_eq!(parse_url("mqtt://broker"), Ok(b("broker", 1883, false)));
        assert_eq!(
            parse_url("mqtts://broker.lan"),
            Ok(b("broker.lan", 8883, true))
        );
        assert_eq!(parse_url("mqtts://[::1]:8884"), Ok(b("::1", 8884, true)));
        for bad in [
            "http://x",
            "mqtt://",
            "mqtt://h:0",
            "mqtt://h:99999",
            "mqtt://u:p@h",
            "mqtt://h/x",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }
}
