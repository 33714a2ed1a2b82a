//! An event file's bytes, as a program in `events_dir` would write them:
//! parsing never panics, and an accepted event renders in every parse mode
//! into parts Telegram takes (non-empty, within 4096 UTF-16 units), with
//! buttons whose callback data fits 64 bytes, and survives the trip through
//! the spool's JSON.
#![no_main]

use cctelegram::config::ParseMode;
use cctelegram::event::{self, Event};
use cctelegram::telegram::render;
use libfuzzer_sys::fuzz_target;

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
            assert!(!p.text.trim().is_empty(), "an empty part for {mode:?}");
            let units = p.text.encode_utf16().count();
            assert!(units <= 4096, "a part of {units} UTF-16 units for {mode:?}");
            let _ = p.reply_markup();
        }
        let noted = render::with_note(&ev, mode, "✅ Approve: by @ada at 12:00");
        assert!(noted.text.encode_utf16().count() <= 4096);
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
