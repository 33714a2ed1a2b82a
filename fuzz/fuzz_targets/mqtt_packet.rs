//! MQTT packets from the wire (`fleet::packet::decode`): what a broker, or
//! anyone who can reach the connection, sends. Never panics; a buffer
//! decodes to "not complete yet", an error, or a packet that takes at most
//! the buffer and encodes back to bytes that decode to the same packet.
#![no_main]

use cctelegram::fleet::packet::{decode, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    // Every packet in the buffer, as the connection reads them.
    while let Ok(Some((p, n))) = decode(rest) {
        assert!(n > 0 && n <= rest.len(), "took {n} of {}", rest.len());
        let again = encode(&p);
        assert_eq!(decode(&again), Ok(Some((p, again.len()))));
        rest = &rest[n..];
    }
});
