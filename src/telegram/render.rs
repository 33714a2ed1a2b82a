//! What an event looks like on a phone: text, escaping, splitting, buttons.
//!
//! Pure. An event becomes lines of styled spans; each parse mode formats
//! spans with its own escaping, so no markup is ever cut in half when a long
//! message is split: every part is formatted on its own.

use serde_json::Value;

use crate::config::ParseMode;
use crate::event::Event;
use crate::spool::hex_digest;

/// Telegram refuses text longer than 4096 characters; we count UTF-16 code
/// units (which is never fewer than characters) and keep a margin.
pub const MAX_PART: usize = 4000;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Style {
    Plain,
    Bold,
    Italic,
    Code,
}

type Line = Vec<(Style, String)>;

#[derive(Debug, Clone, PartialEq)]
pub struct Button {
    pub text: String,
    pub data: String,
}

/// One `sendMessage` worth of text. Buttons go on the last part only.
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    pub text: String,
    pub parse_mode: Option<&'static str>,
    pub buttons: Vec<Button>,
}

impl Part {
    /// The `reply_markup` object, if any.
    pub fn reply_markup(&self) -> Option<Value> {
        if self.buttons.is_empty() {
            return None;
        }
        let rows: Vec<Value> = self
            .buttons
            .chunks(3)
            .map(|row| {
                Value::Array(
                    row.iter()
                        .map(|b| serde_json::json!({"text": b.text, "callback_data": b.data}))
                        .collect(),
                )
            })
            .collect();
        Some(serde_json::json!({ "inline_keyboard": rows }))
    }
}

fn emoji(kind: &str) -> &'static str {
    match kind {
        "task_completion" | "build_completed" | "test_passed" => "✅",
        "task_started" => "🚀",
        "task_failed" | "build_failed" | "test_failed" => "❌",
        "task_progress" | "progress_update" => "⏳",
        "task_cancelled" => "🚫",
        "code_generation" | "code_analysis" | "code_refactoring" | "code_testing" => "💻",
        "code_review" => "👀",
        "code_deployment" => "🚢",
        "file_created" | "file_modified" | "file_deleted" => "📄",
        "directory_created" | "directory_deleted" => "📁",
        "build_started" => "🔨",
        "test_suite_run" => "🧪",
        "lint_check" => "🧹",
        "type_check" => "🔎",
        "git_commit" => "📝",
        "git_push" => "⬆️",
        "git_merge" | "pull_request_merged" => "🔀",
        "git_branch" => "🌿",
        "git_tag" => "🏷️",
        "pull_request_created" => "🔃",
        "system_health" => "💚",
        "performance_alert" => "⚡",
        "security_alert" => "🛡️",
        "error_occurred" => "🔥",
        "resource_usage" => "📊",
        "approval_request" => "🔐",
        "user_response" => "💬",
        "command_executed" => "⌨️",
        "status_change" => "🔄",
        "alert_notification" => "⚠️",
        "info_notification" => "ℹ️",
        "api_call" => "🔌",
        "webhook_received" => "📨",
        "service_integration" => "🔗",
        "custom_event" => "📌",
        _ => "📣",
    }
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(if *b { "yes" } else { "no" }.into()),
        _ => None,
    }
}

fn duration(ms: f64) -> String {
    if ms < 1000.0 {
        format!("{ms:.0} ms")
    } else if ms < 60_000.0 {
        format!("{:.1} s", ms / 1000.0)
    } else {
        let s = (ms / 1000.0).round() as u64;
        if s < 3600 {
            format!("{}m {}s", s / 60, s % 60)
        } else {
            format!("{}h {}m", s / 3600, s % 3600 / 60)
        }
    }
}

fn field(lines: &mut Vec<Line>, label: &str, value: String) {
    let mut first = true;
    for text in value.split('\n') {
        let mut line = Vec::new();
        if first {
            line.push((Style::Bold, format!("{label}:")));
            line.push((Style::Plain, format!(" {text}")));
            first = false;
        } else {
            line.push((Style::Plain, text.to_string()));
        }
        lines.push(line);
    }
}

fn text_lines(lines: &mut Vec<Line>, text: &str, style: Style) {
    for l in text.split('\n') {
        lines.push(vec![(style, l.to_string())]);
    }
}

/// The lines of an event's message, before formatting.
fn lines_of(ev: &Event) -> Vec<Line> {
    let d = &ev.data;
    let mut lines: Vec<Line> = vec![vec![
        (Style::Plain, format!("{} ", emoji(&ev.kind))),
        (Style::Bold, ev.title.clone()),
    ]];
    if let Some(device) = crate::fleet::device_of(ev) {
        lines.push(vec![(Style::Plain, format!("🖥 {device}"))]);
    }
    let description = ev.description.trim_end();
    if !description.is_empty() {
        text_lines(&mut lines, description, Style::Plain);
    }
    let shown = |s: &str| s.trim() == description.trim() || s.trim() == ev.title.trim();
    if let Some(m) = ev.str_data("message").filter(|m| !shown(m)) {
        text_lines(&mut lines, m, Style::Plain);
    }
    let mut facts: Vec<Line> = Vec::new();
    if ev.is_approval() {
        if let Some(p) = ev.str_data("approval_prompt").filter(|p| !shown(p)) {
            facts.push(vec![(Style::Bold, format!("❓ {p}"))]);
        }
    }
    for (key, label) in [
        ("status", "Status"),
        ("results", "Results"),
        ("build_target", "Target"),
        ("branch_name", "Branch"),
        ("author", "Author"),
    ] {
        if let Some(v) = d.get(key).and_then(scalar) {
            field(&mut facts, label, v);
        }
    }
    if let Some(h) = ev.str_data("commit_hash").or(ev.str_data("hash")) {
        field(&mut facts, "Commit", h.chars().take(12).collect());
    }
    if let Some(ms) = d.get("duration_ms").and_then(Value::as_f64) {
        field(&mut facts, "Duration", duration(ms));
    }
    let count = |k: &str| d.get(k).and_then(Value::as_u64);
    match (
        count("tests_passed"),
        count("tests_failed"),
        count("test_count"),
    ) {
        (None, None, None) => {}
        (p, f, n) => {
            let mut parts = Vec::new();
            if let Some(p) = p {
                parts.push(format!("{p} passed"));
            }
            if let Some(f) = f {
                parts.push(format!("{f} failed"));
            }
            let mut s = parts.join(", ");
            if let Some(n) = n {
                s = if s.is_empty() {
                    format!("{n}")
                } else {
                    format!("{s} of {n}")
                };
            }
            field(&mut facts, "Tests", s);
        }
    }
    if let Some(c) = d.get("coverage_percentage").and_then(scalar) {
        field(&mut facts, "Coverage", format!("{c}%"));
    }
    for key in ["files_affected", "files", "files_changed"] {
        if let Some(Value::Array(files)) = d.get(key) {
            let names: Vec<String> = files.iter().filter_map(scalar).collect();
            if names.is_empty() {
                continue;
            }
            let mut line: Line = vec![(Style::Bold, "Files:".into())];
            for (i, f) in names.iter().take(10).enumerate() {
                line.push((Style::Plain, if i == 0 { " " } else { ", " }.into()));
                line.push((Style::Code, f.clone()));
            }
            if names.len() > 10 {
                line.push((Style::Plain, format!(" and {} more", names.len() - 10)));
            }
            facts.push(line);
            break;
        }
    }
    if let Some(v) = d.get("current_value").and_then(scalar) {
        let t = d
            .get("threshold")
            .and_then(scalar)
            .map(|t| format!(" (threshold {t})"))
            .unwrap_or_default();
        field(&mut facts, "Value", format!("{v}{t}"));
    }
    for (key, label, unit) in [
        ("memory_usage_mb", "Memory", " MB"),
        ("cpu_usage_percent", "CPU", "%"),
        ("response_code", "HTTP status", ""),
        ("response_time_ms", "Response time", " ms"),
        ("endpoint", "Endpoint", ""),
        ("exit_code", "Exit code", ""),
    ] {
        if let Some(v) = d.get(key).and_then(scalar) {
            field(&mut facts, label, format!("{v}{unit}"));
        }
    }
    if let Some(e) = ev.str_data("error_message").or(ev.str_data("error")) {
        field(&mut facts, "Error", e.to_string());
    }
    if let Some(s) = ev.str_data("severity") {
        let mark = match s {
            "critical" => "🚨 ",
            "high" => "🔴 ",
            "medium" => "🟠 ",
            "low" => "🟢 ",
            _ => "",
        };
        field(&mut facts, "Severity", format!("{mark}{s}"));
    }
    if let Some(u) = ev.str_data("url") {
        field(&mut facts, "Link", u.to_string());
    }
    if ev.is_approval() {
        if let Some(m) = d.get("timeout_minutes").and_then(Value::as_u64) {
            field(&mut facts, "Answer within", format!("{m} min"));
        }
    }
    if !facts.is_empty() {
        lines.push(Vec::new());
        lines.extend(facts);
    }
    if ev.source != "cctelegram" {
        lines.push(Vec::new());
        lines.push(vec![(Style::Italic, format!("— {}", ev.source))]);
    }
    lines
}

fn units(s: &str) -> usize {
    s.encode_utf16().count()
}

/// Characters a message must not be cut beside: joiners, variation
/// selectors and combining marks belong to the character before them.
fn glue(c: char) -> bool {
    matches!(c, '\u{200d}' | '\u{fe0e}' | '\u{fe0f}' | '\u{20e3}')
        || ('\u{0300}'..='\u{036f}').contains(&c)
        || ('\u{1f3fb}'..='\u{1f3ff}').contains(&c)
        || ('\u{e0020}'..='\u{e007f}').contains(&c)
}

/// Byte index at which to cut `s` so the head fits in `room` UTF-16 units.
/// Prefers a cut with no white space on either side (Telegram trims a
/// message's ends, which would lose characters) and never cuts beside glue.
fn cut(s: &str, room: usize) -> usize {
    let mut fit = 0;
    let mut used = 0;
    let mut bounds = Vec::new();
    for (i, c) in s.char_indices() {
        if used + c.len_utf16() > room {
            break;
        }
        used += c.len_utf16();
        fit = i + c.len_utf8();
        bounds.push(fit);
    }
    let ok = |at: usize, strict: bool| {
        let (Some(before), Some(after)) = (s[..at].chars().next_back(), s[at..].chars().next())
        else {
            return false;
        };
        !glue(after)
            && before != '\u{200d}'
            && !(strict && (before.is_whitespace() || after.is_whitespace()))
    };
    for strict in [true, false] {
        for &at in bounds.iter().rev().take(256) {
            if ok(at, strict) {
                return at;
            }
        }
    }
    fit
}

fn format_span(mode: ParseMode, style: Style, text: &str, out: &mut String) {
    match mode {
        ParseMode::Plain => out.push_str(text),
        ParseMode::Html => {
            let (open, close) = match style {
                Style::Plain => ("", ""),
                Style::Bold => ("<b>", "</b>"),
                Style::Italic => ("<i>", "</i>"),
                Style::Code => ("<code>", "</code>"),
            };
            out.push_str(open);
            escape_html(text, out);
            out.push_str(close);
        }
        ParseMode::MarkdownV2 => {
            let mark = match style {
                Style::Plain => "",
                Style::Bold => "*",
                Style::Italic => "_",
                Style::Code => "`",
            };
            out.push_str(mark);
            if style == Style::Code {
                for c in text.chars() {
                    if c == '`' || c == '\\' {
                        out.push('\\');
                    }
                    out.push(c);
                }
            } else {
                escape_markdown_v2(text, out);
            }
            out.push_str(mark);
        }
    }
}

pub fn escape_html(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
}

pub fn escape_markdown_v2(text: &str, out: &mut String) {
    for c in text.chars() {
        if "_*[]()~`>#+-=|{}.!\\".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
}

/// Packs lines into parts of at most [`MAX_PART`] visible units.
fn split(lines: Vec<Line>, max: usize) -> Vec<Vec<Line>> {
    let mut parts: Vec<Vec<Line>> = vec![Vec::new()];
    let mut used = 0;
    for line in lines {
        let part = parts.last_mut().map(|p| !p.is_empty()).unwrap_or(false);
        if part {
            used += 1; // the newline before this line
        }
        let mut current: Line = Vec::new();
        for (style, mut text) in line {
            loop {
                let room = max.saturating_sub(used);
                if units(&text) <= room {
                    used += units(&text);
                    current.push((style, text));
                    break;
                }
                let at = if room < 64 && used > 0 {
                    0
                } else {
                    cut(&text, room)
                };
                if at > 0 {
                    let rest = text.split_off(at);
                    current.push((style, text));
                    text = rest;
                }
                if let Some(p) = parts.last_mut() {
                    p.push(std::mem::take(&mut current));
                }
                parts.push(Vec::new());
                used = 0;
            }
        }
        if let Some(p) = parts.last_mut() {
            p.push(current);
        }
    }
    let blank = |l: &Line| l.iter().all(|(_, t)| t.trim().is_empty());
    for p in &mut parts {
        while p.last().is_some_and(blank) {
            p.pop();
        }
        let lead = p.iter().take_while(|l| blank(l)).count();
        p.drain(..lead);
    }
    parts.retain(|p| !p.is_empty());
    parts
}

/// The messages for `ev` in `mode`.
pub fn render(ev: &Event, mode: ParseMode) -> Vec<Part> {
    render_with_limit(ev, mode, MAX_PART)
}

fn render_with_limit(ev: &Event, mode: ParseMode, max: usize) -> Vec<Part> {
    let mut parts = render_lines(lines_of(ev), mode, max);
    if ev.is_approval() {
        if let Some(last) = parts.last_mut() {
            last.buttons = buttons(ev);
        }
    }
    parts
}

fn render_lines(lines: Vec<Line>, mode: ParseMode, max: usize) -> Vec<Part> {
    split(lines, max)
        .into_iter()
        .map(|lines| {
            let mut text = String::new();
            for (i, line) in lines.iter().enumerate() {
                if i > 0 {
                    text.push('\n');
                }
                for (style, t) in line {
                    format_span(mode, *style, t, &mut text);
                }
            }
            Part {
                text,
                parse_mode: match mode {
                    ParseMode::Html => Some("HTML"),
                    ParseMode::MarkdownV2 => Some("MarkdownV2"),
                    ParseMode::Plain => None,
                },
                buttons: Vec::new(),
            }
        })
        .collect()
}

/// The last part of `ev`'s message with `note` appended on a line of its
/// own and no buttons: what an approval shows once decided or expired.
pub fn with_note(ev: &Event, mode: ParseMode, note: &str) -> Part {
    let mut lines = lines_of(ev);
    lines.push(Vec::new());
    lines.push(vec![(Style::Italic, note.to_string())]);
    let mut parts = render_lines(lines, mode, MAX_PART);
    let mut last = parts.pop().unwrap_or(Part {
        text: String::new(),
        parse_mode: None,
        buttons: Vec::new(),
    });
    last.buttons.clear();
    last
}

/// The approval buttons with their callback data (CONTRACT section 4).
pub fn buttons(ev: &Event) -> Vec<Button> {
    let options = ev.options();
    options
        .iter()
        .enumerate()
        .map(|(i, label)| Button {
            text: label.clone(),
            data: callback_data(&options, i, &ev.task_id),
        })
        .collect()
}

/// `approve` or `deny` when `label` is that word, in any case.
fn word(label: &str) -> Option<&'static str> {
    ["approve", "deny"]
        .into_iter()
        .find(|w| label.trim().eq_ignore_ascii_case(w))
}

/// `approve_<task_id>`, `deny_<task_id>` or `opt<N>_<task_id>` for option
/// `index` of `options` (N its 0-based position); when that is over
/// Telegram's 64 bytes, `k<N>:<key>` where `key` names the persisted button
/// file. A press on `approve_` resolves to the first option of that word,
/// so a second "Approve" (say "APPROVE") gets `opt<N>_` instead.
pub fn callback_data(options: &[String], index: usize, task_id: &str) -> String {
    let own = options.get(index).and_then(|l| word(l));
    let first = own.and_then(|w| options.iter().position(|o| word(o) == Some(w)));
    let prefix = match own {
        Some(w) if first == Some(index) => w.to_string(),
        _ => format!("opt{index}"),
    };
    let full = format!("{prefix}_{task_id}");
    if full.len() <= 64 {
        full
    } else {
        format!("k{index}:{}", button_key(task_id))
    }
}

/// The name of an approval's persisted button file.
pub fn button_key(task_id: &str) -> String {
    hex_digest(&[task_id.as_bytes()])[..20].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(json: &str) -> Event {
        crate::event::parse(json.as_bytes(), "now", || "evt_1".into()).unwrap()
    }

    #[test]
    fn task_completion_reads_well() {
        let e = ev(
            r#"{"type":"task_completion","title":"Build <ok>","description":"All & done",
            "source":"ci","data":{"status":"completed","results":"42 passed","duration_ms":5321}}"#,
        );
        let parts = render(&e, ParseMode::Html);
        assert_eq!(parts.len(), 1);
        assert_eq!(
            parts[0].text,
            "✅ <b>Build &lt;ok&gt;</b>\nAll &amp; done\n\n<b>Status:</b> completed\n\
             <b>Results:</b> 42 passed\n<b>Duration:</b> 5.3 s\n\n<i>— ci</i>"
        );
    }

    #[test]
    fn markdown_v2_escapes_reserved_characters() {
        let e = ev(r#"{"type":"info_notification","title":"v1.2 (beta)!","description":"a_b*c"}"#);
        let p = &render(&e, ParseMode::MarkdownV2)[0];
        assert_eq!(p.text, "ℹ️ *v1\\.2 \\(beta\\)\\!*\na\\_b\\*c");
    }

    #[test]
    fn approval_buttons_fit_64_bytes() {
        let long = "t".repeat(80);
        let e = ev(&format!(
            r#"{{"type":"approval_request","title":"Deploy?","task_id":"{long}",
            "data":{{"options":["Approve","Deny","Review later"]}}}}"#
        ));
        let b = buttons(&e);
        assert_eq!(b.len(), 3);
        for x in &b {
            assert!(x.data.len() <= 64, "{}", x.data);
        }
        assert_eq!(b[0].data, format!("k0:{}", button_key(&long)));
        let e = ev(
            r#"{"type":"approval_request","title":"Deploy?","task_id":"T1",
            "data":{"options":["Approve","Deny","Review"]}}"#,
        );
        let d: Vec<_> = buttons(&e).into_iter().map(|b| b.data).collect();
        assert_eq!(d, ["approve_T1", "deny_T1", "opt2_T1"]);
        assert!(render(&e, ParseMode::Html)[0].reply_markup().is_some());
    }

    /// Found by the `callback_data` fuzz target: with the options
    /// " Approve " and "APPROVE" both buttons carried `approve_T`, and the
    /// second resolved to the first option's label.
    #[test]
    fn fuzz_a_second_approve_resolves_to_itself() {
        let e = ev(r#"{"type":"approval_request","title":"t","task_id":"T",
            "data":{"options":[" Approve ","APPROVE","deny","Deny"]}}"#);
        let labels = e.options();
        let d: Vec<_> = buttons(&e).into_iter().map(|b| b.data).collect();
        assert_eq!(d, ["approve_T", "opt1_T", "deny_T", "opt3_T"]);
        for (i, data) in d.iter().enumerate() {
            let (key, index, word) = crate::approvals::parse_callback(data).unwrap();
            assert_eq!(key, button_key("T"));
            let label = crate::approvals::option_label(&labels, index, word);
            assert_eq!(label, Some(&labels[i]), "{data}");
        }
    }

    #[test]
    fn long_text_splits_without_losing_a_character() {
        let desc: String = "a <b> & ק ש 😀 x\u{200d}y "
            .chars()
            .cycle()
            .take(10_000)
            .collect();
        let e = ev(
            &serde_json::json!({"type":"info_notification","title":"T","description":desc})
                .to_string(),
        );
        let parts = render(&e, ParseMode::Plain);
        assert!(parts.len() >= 3);
        let mut all = String::new();
        for p in &parts {
            assert!(units(&p.text) <= MAX_PART);
            assert_eq!(
                p.text.trim(),
                p.text,
                "a part must not start or end in white space"
            );
            all.push_str(&p.text);
        }
        assert!(
            all.contains(desc.trim_end()),
            "description lost in the split"
        );
        let html = render(&e, ParseMode::Html);
        assert_eq!(html.len(), parts.len());
    }

    #[test]
    fn cut_prefers_non_space_and_respects_glue() {
        // Mid-word rather than beside the space, which Telegram would trim.
        assert_eq!(cut("abc def", 5), 5);
        assert_eq!(cut("abc def", 4), 2);
        // Never between a joiner and its neighbours.
        assert_eq!(cut("ab\u{200d}cd", 3), 1);
    }
}
