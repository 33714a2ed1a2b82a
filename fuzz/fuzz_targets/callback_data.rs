//! Callback data both ways. Input: UTF-8 lines, the first a task id and the
//! rest option labels.
//!
//! Built: for every task id and option list an event can carry, each
//! button's callback data is at most Telegram's 64 bytes and parses back to
//! the approval's key and to the very option it was built for.
//!
//! Forged: any text (each line, and the whole input) as callback data never
//! panics, and a key it yields is a button key (20 lowercase hex digits), so
//! it can only name a file inside `state_dir/buttons/`.
#![no_main]

use cctelegram::approvals::{option_label, parse_callback};
use cctelegram::event;
use cctelegram::telegram::render::{self, button_key};
use libfuzzer_sys::fuzz_target;
use serde_json::json;

fn forged(data: &str) {
    if let Some((key, _, _)) = parse_callback(data) {
        assert!(
            key.len() == 20 && key.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
            "callback data {data:?} names the key {key:?}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    forged(text);
    let mut lines = text.split('\n');
    let task_id = lines.next().unwrap_or_default();
    let options: Vec<&str> = lines.collect();
    forged(task_id);
    for o in &options {
        forged(o);
    }
    let file = json!({"type": "approval_request", "title": "t", "task_id": task_id,
        "data": {"options": options}});
    let Ok(ev) = event::parse(file.to_string().as_bytes(), "now", || "evt_1".into()) else {
        return;
    };
    let labels = ev.options();
    let key = button_key(&ev.task_id);
    for (i, b) in render::buttons(&ev).iter().enumerate() {
        assert!(b.data.len() <= 64, "{} bytes: {:?}", b.data.len(), b.data);
        let Some((k, index, word)) = parse_callback(&b.data) else {
            panic!("button {i}'s callback data {:?} does not parse", b.data);
        };
        assert_eq!(k, key, "button {i}'s callback data {:?}", b.data);
        let label = option_label(&labels, index, word);
        assert_eq!(
            label,
            Some(&labels[i]),
            "button {i}'s callback data {:?} resolves to another option",
            b.data
        );
    }
});
