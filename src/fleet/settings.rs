//! `[mqtt]` (CONTRACT section 10).
//!
//! Kept beside the fleet rather than in `config.rs` so that the fleet's
//! keys, their checks and their masked display are read in one place;
//! `config.rs` calls in at the points where every table is handled.

use std::fmt::Write as _;

use serde_json::{Map, Value};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Role {
    Device,
    Hub,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Device => "device",
            Role::Hub => "hub",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Mqtt {
    /// Empty: fleet mode off.
    pub url: String,
    pub username: String,
    pub password: String,
    pub role: Role,
    /// Empty: the hostname.
    pub device: String,
    pub topic_prefix: String,
}

impl Default for Mqtt {
    fn default() -> Mqtt {
        Mqtt {
            url: String::new(),
            username: String::new(),
            password: String::new(),
            role: Role::Device,
            device: String::new(),
            topic_prefix: "cctelegram".into(),
        }
    }
}

/// The keys `[mqtt]` may hold.
pub const KEYS: &[&str] = &[
    "url",
    "username",
    "password",
    "role",
    "device",
    "topic_prefix",
];

impl Mqtt {
    pub fn enabled(&self) -> bool {
        !self.url.is_empty()
    }

    pub fn is_device(&self) -> bool {
        self.enabled() && self.role == Role::Device
    }

    pub fn is_hub(&self) -> bool {
        self.enabled() && self.role == Role::Hub
    }

    /// This machine's name in the fleet: `device`, else the hostname.
    pub fn device_name(&self) -> String {
        if !self.device.is_empty() {
            return self.device.clone();
        }
        let mut buf = [0u8; 256];
        // SAFETY: the buffer is valid for its length; gethostname writes
        // at most that many bytes.
        let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
        let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
        let name = String::from_utf8_lossy(&buf[..end]).into_owned();
        if rc == 0 && name_ok(&name) {
            name
        } else {
            "device".into()
        }
    }
}

/// A device name is one topic level we also show in messages: no MQTT
/// wildcards or separators, no control characters, not too long.
pub fn name_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn string(map: &Map<String, Value>, key: &str, out: &mut String) -> Result<()> {
    match map.get(key) {
        None => Ok(()),
        Some(Value::String(s)) => {
            *out = s.clone();
            Ok(())
        }
        Some(_) => Err(Error::config(format!("mqtt.{key}"), "expected a string")),
    }
}

/// Reads `[mqtt]` (absent: fleet mode off).
pub fn parse(root: &Map<String, Value>) -> Result<Mqtt> {
    let mut m = Mqtt::default();
    let map = match root.get("mqtt") {
        None => return Ok(m),
        Some(Value::Object(map)) => map,
        Some(_) => return Err(Error::config("mqtt", "expected a table [mqtt]")),
    };
    string(map, "url", &mut m.url)?;
    string(map, "username", &mut m.username)?;
    string(map, "password", &mut m.password)?;
    string(map, "device", &mut m.device)?;
    string(map, "topic_prefix", &mut m.topic_prefix)?;
    let mut role = "device".to_string();
    string(map, "role", &mut role)?;
    m.role = match role.as_str() {
        "device" => Role::Device,
        "hub" => Role::Hub,
        other => {
            return Err(Error::config(
                "mqtt.role",
                format!("expected \"device\" or \"hub\", found \"{other}\""),
            ))
        }
    };
    Ok(m)
}

/// `CCTELEGRAM_MQTT_PASSWORD` wins over the file.
pub fn apply_env(m: &mut Mqtt, get: &dyn Fn(&str) -> Option<String>) {
    if let Some(v) = get("CCTELEGRAM_MQTT_PASSWORD") {
        m.password = v;
    }
}

pub fn validate(m: &Mqtt) -> Result<()> {
    if !m.enabled() {
        return Ok(());
    }
    super::client::parse_url(&m.url).map_err(|e| Error::config("mqtt.url", e))?;
    if !m.device.is_empty() && !name_ok(&m.device) {
        return Err(Error::config(
            "mqtt.device",
            format!(
                "\"{}\" is not a device name: use letters, digits, - _ or . (at most 64)",
                m.device
            ),
        ));
    }
    if m.topic_prefix.is_empty()
        || m.topic_prefix.contains(['+', '#', '\0'])
        || m.topic_prefix.starts_with('/')
        || m.topic_prefix.ends_with('/')
    {
        return Err(Error::config(
            "mqtt.topic_prefix",
            format!(
                "\"{}\" cannot begin topics: not empty, no + or #, no leading or trailing /",
                m.topic_prefix
            ),
        ));
    }
    if !m.password.is_empty() && m.username.is_empty() {
        return Err(Error::config(
            "mqtt.username",
            "is empty while a password is set (MQTT 3.1.1 sends a password only with a user name)",
        ));
    }
    Ok(())
}

/// The `[mqtt]` part of `check-config`, the password masked.
pub fn masked(m: &Mqtt, s: &mut String) {
    let q = |v: &str| serde_json::to_string(v).unwrap_or_default();
    let _ = writeln!(s, "\n[mqtt]");
    let _ = writeln!(s, "url = {}", q(&m.url));
    let _ = writeln!(s, "username = {}", q(&m.username));
    if m.password.is_empty() {
        let _ = writeln!(s, "password = \"\"   # not set");
    } else {
        let _ = writeln!(s, "password = \"********\"   # set, hidden");
    }
    let _ = writeln!(s, "role = {}", q(m.role.name()));
    let _ = writeln!(s, "device = {}", q(&m.device));
    let _ = writeln!(s, "topic_prefix = {}", q(&m.topic_prefix));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(text: &str) -> Map<String, Value> {
        basic_toml::from_str(text).unwrap()
    }

    #[test]
    fn absent_is_off_and_roles_parse() {
        assert!(!parse(&root("")).unwrap().enabled());
        let m = parse(&root("[mqtt]\nurl = \"mqtt://h\"\nrole = \"hub\"\n")).unwrap();
        assert!(m.is_hub());
        let e = parse(&root("[mqtt]\nrole = \"server\"\n")).unwrap_err();
        assert!(e.to_string().contains("mqtt.role"), "{e}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let bad = [
            ("url = \"http://h\"", "mqtt.url"),
            ("url = \"mqtt://h\"\ndevice = \"a/b\"", "mqtt.device"),
            (
                "url = \"mqtt://h\"\ntopic_prefix = \"x/#\"",
                "mqtt.topic_prefix",
            ),
            ("url = \"mqtt://h\"\npassword = \"p\"", "mqtt.username"),
        ];
        for (text, key) in bad {
            let m = parse(&root(&format!("[mqtt]\n{text}\n"))).unwrap();
            let e = validate(&m).unwrap_err().to_string();
            assert!(e.contains(key), "{text}: {e}");
            assert!(!e.contains("\"p\""), "a password in an error: {e}");
        }
    }

    #[test]
    fn the_password_is_masked_and_env_wins() {
        let mut m = parse(&root(
            "[mqtt]\nurl = \"mqtt://h\"\nusername = \"u\"\npassword = \"hunter2\"\n",
        ))
        .unwrap();
        apply_env(&mut m, &|k| {
            (k == "CCTELEGRAM_MQTT_PASSWORD").then(|| "s3cret".into())
        });
        assert_eq!(m.password, "s3cret");
        let mut s = String::new();
        masked(&m, &mut s);
        assert!(!s.contains("s3cret") && !s.contains("hunter2"), "{s}");
        assert!(s.contains("********"));
    }
}
