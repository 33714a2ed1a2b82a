//! The running daemon's health, asked over its own `/health`
//! (`[health].listen`), the way `cctelegram status` asks: the MCP server
//! shares directories with a daemon, not memory, and may run beside one
//! that lives under another user.

use std::time::Duration;

use serde_json::{json, Value};

use crate::config::Config;

/// Why the daemon's `/health` could not be read.
pub enum Unasked {
    /// `[health] listen` is "" or not an address: there is nothing to ask.
    NoListener(String),
    /// Nothing answered at the URL.
    NotRunning { url: String, error: String },
}

/// `GET /health` of the daemon `cfg` describes, with its token:
/// `(url, HTTP status, body)`. An unspecified listen address (`0.0.0.0`)
/// means this machine. The one client of `/health`, for `cctelegram status`
/// and the MCP server alike.
pub fn ask(cfg: &Config) -> Result<(String, u16, String), Unasked> {
    let listen = &cfg.health.listen;
    if listen.is_empty() {
        return Err(Unasked::NoListener(
            "[health] listen is \"\", so the daemon serves no /health".into(),
        ));
    }
    let Ok(mut addr) = listen.parse::<std::net::SocketAddr>() else {
        return Err(Unasked::NoListener(format!(
            "[health] listen = {listen:?} is not an address"
        )));
    };
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    let url = format!("http://{addr}/health");
    let agent = crate::net::agent(Duration::from_secs(5));
    let mut request = agent.get(&url);
    if !cfg.health.token.is_empty() {
        request = request.header("Authorization", format!("Bearer {}", cfg.health.token));
    }
    let not_running = |e: String| Unasked::NotRunning {
        url: url.clone(),
        error: e,
    };
    let mut resp = request.call().map_err(|e| not_running(e.to_string()))?;
    let status = resp.status().as_u16();
    let text = resp
        .body_mut()
        .read_to_string()
        .map_err(|e| not_running(e.to_string()))?;
    Ok((url, status, text))
}

/// `{running, url, status, health | message}`; never an error, since "not
/// running" is an answer a person wants to read.
pub fn status(cfg: &Config) -> Value {
    let text = match ask(cfg) {
        Err(Unasked::NoListener(why)) => {
            return json!({
                "running": false,
                "url": null,
                "status": "unknown",
                "message": format!("cannot ask the daemon: {why}; set it (e.g. \"127.0.0.1:8080\") and restart the daemon"),
            })
        }
        Err(Unasked::NotRunning { url, error }) => Err((url, error)),
        Ok((url, _, text)) => Ok((url, text)),
    };
    match text {
        Err((url, e)) => json!({
            "running": false,
            "url": url,
            "status": "not_running",
            "message": format!(
                "cctelegram is not running: nothing answers at {url} ({e}). Start it with \
                 'cctelegram run' (or 'systemctl start cctelegram'); events sent meanwhile \
                 wait in the events directory and go out when it starts"
            ),
        }),
        Ok((url, text)) => match serde_json::from_str::<Value>(&text) {
            Ok(h @ Value::Object(_)) => json!({
                "running": true,
                "url": url,
                "status": h["status"].as_str().unwrap_or("unknown"),
                "message": format!("cctelegram is running and {}", h["status"].as_str().unwrap_or("unknown")),
                "health": h,
            }),
            _ => json!({
                "running": false,
                "url": url,
                "status": "unknown",
                "message": format!("{url} answered something that is not cctelegram's health; \
                                    is [health] listen another program's port?"),
            }),
        },
    }
}
