//! The running daemon's health, asked over its own `/health`
//! (`[health].listen`), the way `cctelegram status` asks: the MCP server
//! shares directories with a daemon, not memory, and may run beside one
//! that lives under another user.

use std::time::Duration;

use serde_json::{json, Value};

use crate::config::Config;

/// `{running, url, status, health | message}`; never an error, since "not
/// running" is an answer a person wants to read.
pub fn status(cfg: &Config) -> Value {
    if cfg.health.listen.is_empty() {
        return json!({
            "running": false,
            "url": null,
            "status": "unknown",
            "message": "cannot ask the daemon: [health] listen is \"\" in the config, so it \
                        serves no /health; set it (e.g. \"127.0.0.1:8080\") and restart the daemon",
        });
    }
    let Ok(mut addr) = cfg.health.listen.parse::<std::net::SocketAddr>() else {
        return json!({"running": false, "url": null, "status": "unknown",
            "message": format!("[health] listen = {:?} is not an address", cfg.health.listen)});
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
    let text = request
        .call()
        .map_err(|e| e.to_string())
        .and_then(|mut r| r.body_mut().read_to_string().map_err(|e| e.to_string()));
    match text {
        Err(e) => json!({
            "running": false,
            "url": url,
            "status": "not_running",
            "message": format!(
                "cctelegram is not running: nothing answers at {url} ({e}). Start it with \
                 'cctelegram run' (or 'systemctl start cctelegram'); events sent meanwhile \
                 wait in the events directory and go out when it starts"
            ),
        }),
        Ok(text) => match serde_json::from_str::<Value>(&text) {
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
