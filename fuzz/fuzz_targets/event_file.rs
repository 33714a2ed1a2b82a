//! An event file's bytes, as a program in `events_dir` would write them:
//! parsing never panics, and an accepted event renders in every parse mode
//! into parts Telegram takes (non-empty, within 4096 UTF-16 units of visible
//! text), with buttons whose callback data fits 64 bytes, and survives the
//! trip through the spool's JSON. HTML parts are well-formed: tags balanced, every other
//! `<`, `>` and `&` escaped, and MarkdownV2 parts escape every reserved
//! character outside `*bold*`, `_italic_` and `` `code` `` (else Telegram
//! answers "can't parse entities").
#![no_main]

use cctelegram::config::ParseMode;
use cctelegram::event::{self, Event};
use cctelegram::telegram::render;
use libfuzzer_sys::fuzz_target;

/// The text a reader sees in `text` (what Telegram's 4096-character limit
/// counts, after entities parsing). Panics unless `text` is our HTML
/// (`<b>`, `<i>`, `<code>` nested and closed, only `&amp;`, `&lt;`, `&gt;`)
/// or our MarkdownV2 (every reserved character outside the markers escaped,
/// the markers closed, no `__`, which Telegram reads as underline).
fn visible(mode: ParseMode, text: &str) -> String {
    match mode {
        ParseMode::Plain => text.to_string(),
        ParseMode::Html => visible_html(text),
        ParseMode::MarkdownV2 => visible_markdown_v2(text),
    }
}

fn visible_html(text: &str) -> String {
    let mut seen = String::new();
    let mut open: Vec<&str> = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find(['<', '>', '&']) {
        seen.push_str(&rest[..i]);
        let at = &rest[i..];
        let tag = [
            "<b>", "<i>", "<code>", "</b>", "</i>", "</code>", "&amp;", "&lt;", "&gt;",
        ]
        .into_iter()
        .find(|t| at.starts_with(t))
        .unwrap_or_else(|| panic!("unescaped {:?} in {text:?}", &at[..1]));
        if let Some(name) = tag.strip_prefix("</") {
            assert_eq!(open.pop(), Some(name), "unbalanced {tag} in {text:?}");
        } else if let Some(name) = tag.strip_prefix('<') {
            open.push(name);
        } else {
            seen.push(match tag {
                "&amp;" => '&',
                "&lt;" => '<',
                _ => '>',
            });
        }
        rest = &at[tag.len()..];
    }
    seen.push_str(rest);
    assert!(open.is_empty(), "unclosed {open:?} in {text:?}");
    seen
}

fn visible_markdown_v2(text: &str) -> String {
    let mut seen = String::new();
    let (mut bold, mut italic, mut code) = (false, false, false);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let next = chars.next();
                assert!(
                    next.is_some_and(|n| ('\u{1}'..='\u{7e}').contains(&n)),
                    "bad escape {next:?} in {text:?}"
                );
                seen.extend(next);
            }
            '`' => code = !code,
            c if code => seen.push(c),
            '*' => bold = !bold,
            '_' => {
                assert!(chars.peek() != Some(&'_'), "__ in {text:?}");
                italic = !italic;
            }
            c if "[]()~>#+-=|{}.!".contains(c) => panic!("unescaped {c:?} in {text:?}"),
            c => seen.push(c),
        }
    }
    assert!(!bold && !italic && !code, "unclosed marker in {text:?}");
    seen
}

/// Panics unless Telegram takes `text` in `mode` as one message.
fn sendable(mode: ParseMode, text: &str) {
    let seen = visible(mode, text);
    assert!(
        !seen.trim().is_empty(),
        "an empty part in {mode:?}: {text:?}"
    );
    let units = seen.encode_utf16().count();
    assert!(units <= 4096, "a part of {units} UTF-16 units in {mode:?}");
}

fuzz_target!(|data: &[u8]| {
    let ev = match event::parse(data, "2026-01-01T00:00:00.000Z", || {
        "evt_000000000001".into()
    }) {
        Ok(ev) => ev,
        Err(why) => {
            assert!(!why.to_string().is_empty());
            return;
        }
    };
    for mode in [ParseMode::Plain, ParseMode::Html, ParseMode::MarkdownV2] {
        let parts = render::render(&ev, mode);
        assert!(!parts.is_empty(), "no part for {mode:?}");
        for p in &parts {
            sendable(mode, &p.text);
            let _ = p.reply_markup();
        }
        let noted = render::with_note(&ev, mode, "✅ Approve: by @ada at 12:00");
        sendable(mode, &noted.text);
    }
    for b in render::buttons(&ev) {
        assert!(b.data.len() <= 64, "callback data {:?}", b.data);
    }
    let stored = serde_json::to_vec(&ev).expect("an event serialises");
    let back: Event = serde_json::from_slice(&stored).expect("a stored event reads back");
    assert_eq!(
        (&back.event_id, &back.task_id, &back.kind, &back.title),
        (&ev.event_id, &ev.task_id, &ev.kind, &ev.title)
    );
    assert_eq!(back.description, ev.description);
    assert_eq!(back.options(), ev.options());
});
