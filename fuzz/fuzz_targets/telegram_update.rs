//! A `getUpdates` answer's `result`, as the network delivers it: reading it
//! never panics, every update id that comes out can be confirmed (`id + 1`
//! does not overflow), and a press's callback data is safe to resolve.
#![no_main]

use cctelegram::approvals::parse_callback;
use cctelegram::telegram::update::{self, Update};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fn confirmable(id: i64) {
    assert!(id >= 0 && id.checked_add(1).is_some(), "update id {id}");
}

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let all = match update::parse_all(&v) {
        Ok(all) => all,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            // A single update, as the fuzzer may well write one.
            vec![update::parse(&v)]
        }
    };
    for u in all {
        match u {
            Ok(u) => {
                confirmable(u.update_id());
                if let Update::Press(p) = &u {
                    assert!(!p.query_id.is_empty());
                    let _ = parse_callback(&p.data);
                }
            }
            Err(e) => {
                if let Some(id) = e.update_id {
                    confirmable(id);
                }
                assert!(!e.to_string().is_empty());
            }
        }
    }
});
