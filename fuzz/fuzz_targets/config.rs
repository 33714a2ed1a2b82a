//! A config file's text: parsing and validation never panic, and what
//! `check-config` prints (`Config::masked`) is TOML that reads back as the
//! same settings.
#![no_main]

use cctelegram::config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // A config file that is not UTF-8 is refused before parsing.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (c, _warnings) = match config::parse(text) {
        Ok(c) => c,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    let _ = config::validate(&c, false).map_err(|e| e.to_string());
    let _ = config::validate(&c, true).map_err(|e| e.to_string());
    let _ = c.target_chats();
    let shown = c.masked();
    let (back, _) = match config::parse(&shown) {
        Ok(b) => b,
        Err(e) => panic!("check-config output does not parse: {e}\n{shown}"),
    };
    assert_eq!(
        back.masked(),
        shown,
        "check-config output reads back differently"
    );
});
