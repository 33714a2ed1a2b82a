//! A config file's text: parsing and validation never panic, and what
//! `check-config` prints (`Config::masked`) is TOML that reads back as the
//! same settings, with neither the bot token nor the webhook secret in it.
#![no_main]

use cctelegram::config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // A config file that is not UTF-8 is refused before parsing.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (mut c, _warnings) = match config::parse(text) {
        Ok(c) => c,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    let _ = config::validate(&c, false).map_err(|e| e.to_string());
    let _ = config::validate(&c, true).map_err(|e| e.to_string());
    let _ = c.target_chats();
    // Secrets no other setting holds (unless the input wrote them).
    c.telegram.bot_token = "999999:SENTINELtokenSENTINEL".into();
    c.webhook.secret = "SENTINELsecretSENTINEL".into();
    let shown = c.masked();
    assert!(
        text.contains("SENTINEL") || !shown.contains("SENTINEL"),
        "a secret in check-config output:\n{shown}"
    );
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
