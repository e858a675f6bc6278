//! The gossip decoder on arbitrary datagrams: it must never panic, and whatever it accepts must
//! survive a round trip (decode, encode, decode again: equal).
#![no_main]

use cairn::gossip::wire::{decode_packet, encode_packet};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(packet) = decode_packet(data) {
        let bytes = encode_packet(&packet).expect("a decoded packet re-encodes");
        let again = decode_packet(&bytes).expect("a re-encoded packet decodes");
        assert_eq!(again, packet);
    }
});
