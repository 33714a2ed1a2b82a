//! A real Mosquitto broker for the fleet tests: its own temporary config on
//! a free 127.0.0.1 port, with persistence, so that a stop and a start keep
//! the persistent sessions and their queued messages as a broker on a home
//! server does. Stopped with SIGTERM (Mosquitto saves its state then).
#![allow(dead_code)]

use std::fs;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::daemon::TempDir;

pub struct Mosquitto {
    pub port: u16,
    dir: TempDir,
    program: PathBuf,
    child: Option<Child>,
}

impl Mosquitto {
    pub fn start(tag: &str) -> Mosquitto {
        let program = crate::tools::which("mosquitto")
            .or_else(|| {
                let p = PathBuf::from("/usr/sbin/mosquitto");
                p.exists().then_some(p)
            })
            .unwrap_or_else(|| {
                panic!(
                    "{}",
                    crate::tools::missing(
                        "mosquitto (the MQTT broker)",
                        "apt-get install mosquitto"
                    )
                )
            });
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let dir = TempDir::new(tag);
        let conf = dir.0.join("mosquitto.conf");
        fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n\
                 persistence_location {}/\nmax_queued_messages 100000\nlog_dest stderr\n\
                 log_type error\n{}",
                dir.0.display(),
                // Run as root, Mosquitto switches to its own user, which
                // cannot write its state into the test's directory.
                if unsafe { libc::geteuid() } == 0 {
                    "user root\n"
                } else {
                    ""
                }
            ),
        )
        .unwrap();
        let mut m = Mosquitto {
            port,
            dir,
            program,
            child: None,
        };
        m.resume();
        m
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Starts the broker again (after [`Mosquitto::stop`]) and waits until it accepts.
    pub fn resume(&mut self) {
        let child = Command::new(&self.program)
            .arg("-c")
            .arg(self.dir.0.join("mosquitto.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start mosquitto");
        self.child = Some(child);
        let end = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    panic!(
                        "mosquitto exited at start ({st}); port {} taken?",
                        self.port
                    );
                }
            }
            assert!(
                Instant::now() < end,
                "mosquitto does not accept on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then waits until it has exited (its state is saved).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let end = Instant::now() + Duration::from_secs(10);
            while c.try_wait().ok().flatten().is_none() {
                if Instant::now() > end {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
