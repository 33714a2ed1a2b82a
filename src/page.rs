//! The status page, `GET /` on `[health].listen` (CONTRACT section 7).
//!
//! People who run a Pi-hole or an OpenWrt box expect to open a page and see
//! at a glance how the thing is doing; `/health` is JSON for machines. The
//! page is one server-side HTML document: no script, no outside asset (the
//! style and the histograms are inline), so it works on a box without
//! internet and cannot leak anything to a third party. It reloads itself
//! every few seconds and follows the browser's light or dark theme.
//!
//! [`render`] is a pure function from a [`Page`] snapshot to HTML; [`gather`]
//! is the thin I/O that takes the snapshot. Everything that came from an
//! event or a receiver (titles, types, errors, URLs) goes through [`esc`];
//! URLs are shown without credentials ([`redact_url`]), and no secret is
//! part of the snapshot at all.

use std::fmt::Write as _;

use serde_json::Value;

use crate::clock;
use crate::health::Monitor;
use crate::recent::Entry;
use crate::stats::{Histogram, Stats};
use crate::webhook::deliver::DeadLetters;
use crate::webhook::endpoint::redact_url;

/// Seconds between reloads of the page.
pub const REFRESH_S: u32 = 5;

/// The send queue.
#[derive(Debug, Clone, Default)]
pub struct Queue {
    pub waiting: u64,
    /// Unix ms until which Telegram asked us to hold sends (429).
    pub hold_until_ms: u64,
    /// Unix ms the oldest waiting send was accepted (0: none).
    pub oldest_ms: u64,
}

/// The newest dead letter.
#[derive(Debug, Clone)]
pub struct Dead {
    pub kind: String,
    /// Already without credentials.
    pub endpoint: String,
    pub error: Option<String>,
    pub at_ms: u64,
}

/// An approval whose buttons are waiting for a press.
#[derive(Debug, Clone)]
pub struct Undecided {
    pub title: String,
    pub task_id: String,
    pub delivered_ms: u64,
    pub expires_ms: Option<u64>,
}

/// A latency histogram: name, per-bucket (upper bound s, count), overflow.
#[derive(Debug, Clone)]
pub struct Bars {
    pub name: &'static str,
    pub buckets: Vec<(f64, u64)>,
    pub over: u64,
}

/// Everything the page shows, taken at one moment.
#[derive(Debug, Clone)]
pub struct Page {
    pub now_ms: u64,
    pub version: &'static str,
    /// The `/health` body; None before the first check.
    pub health: Option<Value>,
    pub queue: Queue,
    /// Dead letters on disk and the newest; Err: why they cannot be read.
    pub dead: Result<(usize, Option<Dead>), String>,
    pub approvals: Result<Vec<Undecided>, String>,
    pub recent: Vec<Entry>,
    pub histograms: Vec<Bars>,
}

fn bars(name: &'static str, h: &Histogram) -> Bars {
    let (buckets, over) = h.buckets();
    Bars {
        name,
        buckets,
        over,
    }
}

/// Takes the snapshot. Reads `state_dir` (approvals, dead letters): call it
/// off the executor thread.
pub fn gather(m: &Monitor) -> Page {
    let now_ms = clock::now_ms();
    let health = m
        .latest
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .map(|s| s.body.clone());
    let s: &Stats = &m.stats;
    let dead = DeadLetters::new(&m.state_dir)
        .and_then(|d| d.list())
        .map(|(list, damaged)| {
            let newest = list.last().map(|(_, d)| Dead {
                kind: d.kind.clone(),
                endpoint: redact_url(&d.endpoint),
                error: d.last_error.clone(),
                at_ms: d.died_ms.unwrap_or(d.created_ms),
            });
            (list.len() + damaged.len(), newest)
        })
        .map_err(|e| e.to_string());
    let approvals = m
        .approvals
        .undecided()
        .map(|list| {
            list.into_iter()
                .map(|a| Undecided {
                    title: a.event.title.clone(),
                    task_id: a.event.task_id.clone(),
                    delivered_ms: a.delivered_ms.unwrap_or(0),
                    expires_ms: a.expires_at,
                })
                .collect()
        })
        .map_err(|e| e.to_string());
    Page {
        now_ms,
        version: env!("CARGO_PKG_VERSION"),
        health,
        queue: Queue {
            waiting: Stats::get(&s.backlog),
            hold_until_ms: (m.spool_hold)(),
            oldest_ms: Stats::get(&s.oldest_queued_ms),
        },
        dead,
        approvals,
        recent: s.recent.list(),
        histograms: vec![
            bars("Telegram sendMessage", &s.telegram_request),
            bars("Event to chat", &s.event_delivery),
            bars("Webhook attempt", &s.webhook_request),
        ],
    }
}

/// Text for HTML content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A JSON value as escaped text: strings bare, null as a dash.
fn jtext(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => esc(s),
        v => esc(&v.to_string()),
    }
}

/// "3 s", "4 min", "2 h", "5 d".
fn span(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        7200..=172_799 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86_400),
    }
}

fn ago(at_ms: u64, now_ms: u64) -> String {
    format!("{} ago", span(clock::age_ms(at_ms, now_ms)))
}

/// A time as HH:MM:SS UTC, with the full date on hover.
fn time(ms: u64) -> String {
    let iso = clock::iso8601(ms);
    let short = iso.get(11..19).unwrap_or(&iso).to_string();
    format!("<time title=\"{iso}\">{short}</time>")
}

/// A CSS class for a level word from /health (pass, warn, fail, healthy...).
fn class(level: &str) -> &'static str {
    match level {
        "pass" | "healthy" | "delivered" | "online" => "ok",
        "warn" | "degraded" | "pending" => "warn",
        "fail" | "unhealthy" | "failed" | "offline" => "bad",
        _ => "na",
    }
}

const STYLE: &str = "\
:root{--bg:#fff;--fg:#1d2228;--mute:#66707a;--line:#dde1e5;--card:#f5f7f9;\
--ok:#1a7f37;--warn:#9a6700;--bad:#cf222e;--bar:#4a7bd0}\
@media (prefers-color-scheme:dark){:root{--bg:#111418;--fg:#e4e8ec;--mute:#9aa4ae;\
--line:#2c333a;--card:#1a1f25;--ok:#3fb950;--warn:#d29922;--bad:#f85149;--bar:#6b9bf0}}\
body{background:var(--bg);color:var(--fg);font:14px/1.45 system-ui,sans-serif;margin:0 auto;\
max-width:1100px;padding:1em}\
h1{font-size:1.4em;margin:.2em 0}h2{font-size:1.05em;margin:1.4em 0 .4em;\
border-bottom:1px solid var(--line);padding-bottom:.2em}\
table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:.25em .5em;\
border-bottom:1px solid var(--line);vertical-align:top;overflow-wrap:anywhere}\
th{color:var(--mute);font-weight:600;white-space:nowrap}#queue th{width:8em}.num{text-align:right;font-variant-numeric:tabular-nums}\
.ok{color:var(--ok)}.warn{color:var(--warn)}.bad{color:var(--bad)}.mute{color:var(--mute)}\
.badge{display:inline-block;padding:.1em .7em;border-radius:1em;color:#fff;font-weight:700}\
.badge.ok{background:var(--ok)}.badge.warn{background:var(--warn)}.badge.bad{background:var(--bad)}\
.badge.na{background:var(--mute)}\
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:.5em}\
.grid div{background:var(--card);padding:.4em .6em;border-radius:.4em}\
.grid b{display:block;font-size:1.3em}\
.hist{display:flex;flex-wrap:wrap;gap:1em}.hist figure{margin:0}\
svg text{fill:var(--mute);font-size:9px}svg rect{fill:var(--bar)}";

/// The page (pure).
pub fn render(p: &Page) -> String {
    let mut o = String::with_capacity(16 * 1024);
    let h = p.health.as_ref();
    let status = h
        .and_then(|h| h["status"].as_str())
        .unwrap_or("starting")
        .to_string();
    let _ = write!(
        o,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_S}\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <meta name=\"color-scheme\" content=\"light dark\">\
         <link rel=\"icon\" href=\"data:,\">\
         <title>cctelegram: {st}</title><style>{STYLE}</style></head><body>\
         <h1>cctelegram <span class=\"badge {c}\" id=\"status\">{st}</span></h1>\
         <p class=\"mute\">version {v}; up {up}; page of {now}, reloads every {REFRESH_S} s</p>",
        st = esc(&status),
        c = class(&status),
        v = esc(p.version),
        up = h
            .and_then(|h| h["uptime_seconds"].as_u64())
            .map_or("-".into(), |s| span(s * 1000)),
        now = time(p.now_ms),
    );
    checks(&mut o, h);
    counters(&mut o, h);
    queue(&mut o, p, h);
    endpoints(&mut o, h);
    dead(&mut o, p);
    approvals(&mut o, p);
    devices(&mut o, h, p.now_ms);
    recent(&mut o, p);
    o.push_str("<h2>Latency</h2><div class=\"hist\">");
    for b in &p.histograms {
        histogram(&mut o, b);
    }
    o.push_str("</div></body></html>\n");
    o
}

fn checks(o: &mut String, h: Option<&Value>) {
    o.push_str("<h2>Checks</h2>");
    let Some(list) = h.and_then(|h| h["checks"].as_array()) else {
        o.push_str("<p class=\"mute\">the first check has not run yet</p>");
        return;
    };
    o.push_str("<table id=\"checks\"><tr><th>check</th><th>status</th><th>message</th></tr>");
    for c in list {
        let level = c["status"].as_str().unwrap_or("");
        let _ = write!(
            o,
            "<tr><td>{}</td><td class=\"{}\">{}</td><td>{}</td></tr>",
            jtext(&c["name"]),
            class(level),
            esc(level),
            jtext(&c["message"])
        );
    }
    o.push_str("</table>");
}

fn counters(o: &mut String, h: Option<&Value>) {
    let Some(map) = h.and_then(|h| h["counters"].as_object()) else {
        return;
    };
    o.push_str("<h2>Counters</h2><div class=\"grid\">");
    for (k, v) in map {
        let _ = write!(
            o,
            "<div><b>{}</b>{}</div>",
            jtext(v),
            esc(&k.replace('_', " "))
        );
    }
    o.push_str("</div>");
}

/// A unix ms field of /health's `notifications`, when it lies ahead.
fn until(n: &Value, key: &str, now_ms: u64) -> Option<u64> {
    let v = &n[key];
    v.as_u64()
        .or_else(|| v.as_str().and_then(parse_iso_ms))
        .filter(|ms| *ms > now_ms)
}

/// `YYYY-MM-DDTHH:MM:SS[.mmm]Z` as unix ms.
fn parse_iso_ms(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() < 20 || !s.ends_with('Z') {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s.get(r)?.parse::<u64>().ok();
    let (y, mo, d) = (n(0..4)?, n(5..7)?, n(8..10)?);
    let (hh, mm, ss) = (n(11..13)?, n(14..16)?, n(17..19)?);
    let ms = if b[19] == b'.' {
        n(20..23).unwrap_or(0)
    } else {
        0
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y, mo) = if mo <= 2 {
        (y - 1, mo + 9)
    } else {
        (y, mo - 3)
    };
    let era = y / 400;
    let yoe = y - era * 400;
    let doy = (153 * mo + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = (era * 146_097 + doe).checked_sub(719_468)?;
    Some(((days * 86_400 + hh * 3600 + mm * 60 + ss) * 1000) + ms)
}

fn queue(o: &mut String, p: &Page, h: Option<&Value>) {
    let q = &p.queue;
    let notes = h.map(|h| &h["notifications"]).filter(|n| n.is_object());
    let paused = notes.and_then(|n| until(n, "paused_until", p.now_ms));
    let muted = notes.and_then(|n| until(n, "muted_until", p.now_ms));
    o.push_str("<h2>Send queue</h2><table id=\"queue\">");
    let _ = write!(o, "<tr><th>waiting</th><td>{}</td></tr>", q.waiting);
    let held = if q.hold_until_ms > p.now_ms {
        format!(
            "<span class=\"warn\">by Telegram (429) for {} more</span>",
            span(q.hold_until_ms - p.now_ms)
        )
    } else if let Some(ms) = paused {
        format!("<span class=\"warn\">paused until {}</span>", time(ms))
    } else {
        "no".into()
    };
    let _ = write!(o, "<tr><th>held</th><td>{held}</td></tr>");
    let oldest = if q.waiting > 0 && q.oldest_ms > 0 {
        ago(q.oldest_ms, p.now_ms)
    } else {
        "-".into()
    };
    let _ = write!(o, "<tr><th>oldest</th><td>{oldest}</td></tr>");
    let show = |at: Option<u64>| at.map_or("none".to_string(), |ms| format!("until {}", time(ms)));
    let _ = write!(
        o,
        "<tr><th>mute</th><td id=\"mute\">{}</td></tr><tr><th>pause</th><td id=\"pause\">{}</td></tr></table>",
        show(muted),
        show(paused)
    );
}

fn endpoints(o: &mut String, h: Option<&Value>) {
    let Some(list) = h
        .and_then(|h| h["webhooks"].as_array())
        .filter(|l| !l.is_empty())
    else {
        return;
    };
    o.push_str(
        "<h2>Webhook endpoints</h2><table id=\"endpoints\"><tr><th>endpoint</th>\
         <th class=\"num\">attempts</th><th class=\"num\">rate</th><th class=\"num\">mean</th>\
         <th class=\"num\">p95</th><th class=\"num\">dead</th><th>last error</th></tr>",
    );
    for e in list {
        let rate = e["delivery_rate"].as_f64();
        let c = match rate {
            Some(r) if r >= 90.0 => "ok",
            Some(_) => "warn",
            None => "",
        };
        let ms = |v: &Value| v.as_f64().map_or("-".into(), |f| format!("{f} ms"));
        let err = match e["last_error"].as_str() {
            Some(err) => format!(
                "<span class=\"bad\">{}</span> <span class=\"mute\">{}</span>",
                esc(err),
                jtext(&e["last_error_at"])
            ),
            None => "-".into(),
        };
        let _ = write!(
            o,
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num {c}\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{err}</td></tr>",
            jtext(&e["endpoint"]),
            jtext(&e["attempts"]),
            rate.map_or("-".into(), |r| format!("{r}%")),
            ms(&e["mean_response_time_ms"]),
            ms(&e["p95_response_time_ms"]),
            jtext(&e["dead_letters"]),
        );
    }
    o.push_str("</table>");
}

fn dead(o: &mut String, p: &Page) {
    o.push_str("<h2>Dead letters</h2><p id=\"dead\">");
    match &p.dead {
        Err(e) => {
            let _ = write!(o, "<span class=\"bad\">cannot read them: {}</span>", esc(e));
        }
        Ok((0, _)) => o.push_str("none"),
        Ok((n, newest)) => {
            let _ = write!(o, "<span class=\"warn\">{n}</span> (cctelegram dlq list)");
            if let Some(d) = newest {
                let _ = write!(
                    o,
                    "; newest {}: {} to {}{}",
                    ago(d.at_ms, p.now_ms),
                    esc(&d.kind),
                    esc(&d.endpoint),
                    d.error
                        .as_deref()
                        .map_or(String::new(), |e| format!(", {}", esc(e)))
                );
            }
        }
    }
    o.push_str("</p>");
}

fn approvals(o: &mut String, p: &Page) {
    o.push_str("<h2>Undecided approvals</h2>");
    match &p.approvals {
        Err(e) => {
            let _ = write!(o, "<p class=\"bad\">cannot read them: {}</p>", esc(e));
        }
        Ok(list) if list.is_empty() => o.push_str("<p id=\"approvals\">none</p>"),
        Ok(list) => {
            o.push_str(
                "<table id=\"approvals\"><tr><th>title</th><th>task</th><th>sent</th><th>expires</th></tr>",
            );
            for a in list {
                let _ = write!(
                    o,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(&a.title),
                    esc(&a.task_id),
                    ago(a.delivered_ms, p.now_ms),
                    a.expires_ms.map_or("never".into(), |ms| {
                        if ms > p.now_ms {
                            format!("in {}", span(ms - p.now_ms))
                        } else {
                            "now".into()
                        }
                    })
                );
            }
            o.push_str("</table>");
        }
    }
}

fn devices(o: &mut String, h: Option<&Value>, now_ms: u64) {
    let Some(list) = h
        .and_then(|h| h["devices"].as_array())
        .filter(|l| !l.is_empty())
    else {
        return;
    };
    o.push_str("<h2>Devices</h2><table id=\"devices\"><tr><th>device</th><th>state</th><th>last event</th></tr>");
    for d in list {
        let online = d["online"].as_bool().unwrap_or(false);
        let state = if online { "online" } else { "offline" };
        let last = match &d["last_event"] {
            Value::Number(n) => n.as_u64().map_or("-".into(), |ms| ago(ms, now_ms)),
            v => jtext(v),
        };
        let _ = write!(
            o,
            "<tr><td>{}</td><td class=\"{}\">{state}</td><td>{last}</td></tr>",
            jtext(&d["name"]),
            class(state)
        );
    }
    o.push_str("</table>");
}

fn recent(o: &mut String, p: &Page) {
    o.push_str("<h2>Last events</h2>");
    if p.recent.is_empty() {
        o.push_str("<p id=\"events\">none since the start</p>");
        return;
    }
    o.push_str("<table id=\"events\"><tr><th>time</th><th>type</th><th>title</th><th>chat</th><th>outcome</th></tr>");
    for e in &p.recent {
        let why = e.error.as_deref().map_or(String::new(), |w| {
            format!(" <span class=\"mute\">{}</span>", esc(w))
        });
        let _ = write!(
            o,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><span class=\"{}\">{}</span>{why}</td></tr>",
            time(e.at_ms),
            esc(&e.kind),
            esc(&e.title),
            esc(&e.chat),
            class(e.outcome),
            e.outcome
        );
    }
    o.push_str("</table>");
}

/// A bucket bound as a short label: 1ms, 2.5ms, 1s.
fn bound(s: f64) -> String {
    if s < 1.0 {
        format!("{}ms", (s * 10_000.0).round() / 10.0)
    } else {
        format!("{s}s")
    }
}

/// The histogram as inline SVG bars, one per bucket (not cumulative).
fn histogram(o: &mut String, b: &Bars) {
    const W: usize = 34;
    const H: u64 = 80;
    let mut all: Vec<(String, u64)> = b.buckets.iter().map(|(s, c)| (bound(*s), *c)).collect();
    all.push(("&gt;10s".into(), b.over));
    let max = all.iter().map(|(_, c)| *c).max().unwrap_or(0).max(1);
    let total: u64 = all.iter().map(|(_, c)| c).sum();
    let width = all.len() * W;
    let _ = write!(
        o,
        "<figure><figcaption>{} <span class=\"mute\">({total})</span></figcaption>\
         <svg width=\"{width}\" height=\"{}\" viewBox=\"0 0 {width} {}\" role=\"img\">",
        esc(b.name),
        H + 30,
        H + 30
    );
    for (i, (label, c)) in all.iter().enumerate() {
        let x = i * W;
        let bar = c * H / max;
        let y = 12 + H - bar;
        let _ = write!(
            o,
            "<rect x=\"{}\" y=\"{y}\" width=\"{}\" height=\"{bar}\"><title>{label}: {c}</title></rect>",
            x + 2,
            W - 4
        );
        if *c > 0 {
            let _ = write!(
                o,
                "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{c}</text>",
                x + W / 2,
                y - 2
            );
        }
        let _ = write!(
            o,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{label}</text>",
            x + W / 2,
            H + 26
        );
    }
    o.push_str("</svg></figure>");
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: u64 = 1_780_000_000_000;

    fn page() -> Page {
        Page {
            now_ms: NOW,
            version: "9.9.9",
            health: Some(json!({
                "status": "degraded",
                "uptime_seconds": 3700,
                "checks": [
                    {"name": "telegram_api_connectivity", "status": "pass", "message": "getMe answered in 12 ms"},
                    {"name": "webhook_delivery", "status": "warn", "message": "50% of <2> attempts"},
                ],
                "counters": {"events_accepted": 7, "dead_letters": 1},
                "webhooks": [{
                    "endpoint": "https://***@hooks.example/in?token=***",
                    "attempts": 4, "delivery_rate": 50.0,
                    "mean_response_time_ms": 12.5, "p95_response_time_ms": null,
                    "dead_letters": 1, "last_error": "HTTP 500: <b>oops</b>",
                    "last_error_at": "2026-05-28T20:26:40.000Z"
                }],
            })),
            queue: Queue {
                waiting: 3,
                hold_until_ms: NOW + 30_000,
                oldest_ms: NOW - 90_000,
            },
            dead: Ok((
                2,
                Some(Dead {
                    kind: "event_processed".into(),
                    endpoint: "https://hooks.example/in".into(),
                    error: Some("timed out".into()),
                    at_ms: NOW - 5_000,
                }),
            )),
            approvals: Ok(vec![Undecided {
                title: "Deploy <prod>?".into(),
                task_id: "t-1".into(),
                delivered_ms: NOW - 60_000,
                expires_ms: Some(NOW + 600_000),
            }]),
            recent: vec![Entry {
                at_ms: NOW - 1_000,
                event_id: "e1".into(),
                chat: "111".into(),
                kind: "info_notification".into(),
                title: "<script>alert(1)</script>".into(),
                outcome: "delivered",
                error: None,
            }],
            histograms: vec![Bars {
                name: "Telegram sendMessage",
                buckets: vec![(0.001, 0), (0.0025, 4), (1.0, 2)],
                over: 1,
            }],
        }
    }

    #[test]
    fn shows_every_section_from_the_snapshot() {
        let html = render(&page());
        for needle in [
            r#"<meta http-equiv="refresh" content="5">"#,
            "prefers-color-scheme:dark",
            r#"<span class="badge warn" id="status">degraded</span>"#,
            "telegram_api_connectivity",
            r#"webhook_delivery</td><td class="warn">warn"#,
            "50% of &lt;2&gt; attempts",
            "<b>7</b>events accepted",
            "<th>waiting</th><td>3</td>",
            "by Telegram (429) for 30 s more",
            "<th>oldest</th><td>90 s ago</td>",
            r#"<td id="mute">none</td>"#,
            "https://***@hooks.example/in?token=***",
            "HTTP 500: &lt;b&gt;oops&lt;/b&gt;",
            r#"<td class="num warn">50%</td>"#,
            r#"<span class="warn">2</span>"#,
            "timed out",
            "Deploy &lt;prod&gt;?",
            "in 10 min",
            "&lt;script&gt;alert(1)&lt;/script&gt;",
            "<svg",
            "<title>2.5ms: 4</title>",
            "<title>&gt;10s: 1</title>",
            "up 61 min",
        ] {
            assert!(html.contains(needle), "{needle} not in\n{html}");
        }
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("<b>oops"), "{html}");
        assert!(
            !html.contains(r#"id="devices""#),
            "no devices section without devices"
        );
        // No outside asset: nothing to fetch but the page itself.
        for outside in ["src=", "@import", "url(", r#"href="http"#] {
            assert!(!html.contains(outside), "{outside} in the page");
        }
        assert!(html.len() < 16 * 1024, "{} bytes", html.len());
    }

    #[test]
    fn mute_pause_and_devices_show_when_health_has_them() {
        let mut p = page();
        p.queue.hold_until_ms = 0;
        let h = p.health.as_mut().unwrap();
        h["notifications"] = json!({
            "muted_until": "2026-05-28T21:26:40.000Z",
            "paused_until": NOW + 120_000,
        });
        h["devices"] = json!([
            {"name": "pi-<kitchen>", "online": true, "last_event": NOW - 3_000},
            {"name": "nas", "online": false, "last_event": null},
        ]);
        let html = render(&p);
        assert_eq!(
            parse_iso_ms("2026-05-28T21:26:40.000Z"),
            Some(1_780_003_600_000)
        );
        assert!(
            html.contains(
                r#"<td id="mute">until <time title="2026-05-28T21:26:40.000Z">21:26:40</time>"#
            ),
            "{html}"
        );
        assert!(html.contains("paused until"), "{html}");
        assert!(
            html.contains(r#"pi-&lt;kitchen&gt;</td><td class="ok">online</td><td>3 s ago"#),
            "{html}"
        );
        assert!(
            html.contains(r#"nas</td><td class="bad">offline</td><td>-"#),
            "{html}"
        );
    }

    #[test]
    fn before_the_first_check_the_page_says_so() {
        let mut p = page();
        p.health = None;
        p.recent.clear();
        p.approvals = Err("state_dir/buttons: permission denied".into());
        p.dead = Ok((0, None));
        let html = render(&p);
        assert!(html.contains(r#"id="status">starting</span>"#), "{html}");
        assert!(html.contains("the first check has not run yet"));
        assert!(html.contains("cannot read them: state_dir/buttons"));
        assert!(html.contains(r#"<p id="dead">none</p>"#));
        assert!(html.contains("none since the start"));
    }

    #[test]
    fn escapes_every_markup_character() {
        assert_eq!(
            esc(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
