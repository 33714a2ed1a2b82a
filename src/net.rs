//! HTTP agents for Telegram and webhooks, with a name cache.
//!
//! ureq's default resolver starts a thread for every request that has a
//! timeout, and musl's libc caches nothing, so every message would cost a
//! thread and a DNS query. Answers are kept for a minute instead.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ureq::config::Config;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};

/// How long a resolved address is trusted.
const TTL: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
struct CachingResolver {
    inner: DefaultResolver,
    cache: Mutex<HashMap<String, (Instant, ResolvedSocketAddrs)>>,
}

impl Resolver for CachingResolver {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let key = format!(
            "{}://{}",
            uri.scheme_str().unwrap_or(""),
            uri.authority().map(|a| a.as_str()).unwrap_or("")
        );
        if let Some((at, addrs)) = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            if at.elapsed() < TTL {
                return Ok(addrs.clone());
            }
        }
        let addrs = self.inner.resolve(uri, config, timeout)?;
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, (Instant::now(), addrs.clone()));
        Ok(addrs)
    }
}

/// An agent that never follows redirects, treats HTTP errors as answers,
/// and gives up on a request after `timeout`.
pub fn agent(timeout: Duration) -> ureq::Agent {
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_connect(Some(Duration::from_secs(10).min(timeout)))
        .timeout_global(Some(timeout))
        // A kept-alive connection outlives idle hours: ureq probes a pooled
        // connection before reusing it and opens a new one when the server
        // has closed it, so a lone event after a quiet hour pays no TCP
        // and TLS handshake unless the server hung up meanwhile.
        .max_idle_age(Duration::from_secs(3600))
        .user_agent(concat!("cctelegram/", env!("CARGO_PKG_VERSION")))
        // ureq's 128 KiB per pooled connection and direction would be most
        // of our memory; bodies larger than this stream through anyway.
        .input_buffer_size(16 * 1024)
        .output_buffer_size(16 * 1024)
        .build();
    ureq::Agent::with_parts(
        config,
        DefaultConnector::default(),
        CachingResolver::default(),
    )
}
