//! The gossip decoders on arbitrary bytes, read both as a datagram and as a push-pull state-sync
//! frame: they must never panic, and whatever they accept must survive a round trip (decode,
//! encode, decode again: equal).
#![no_main]

use cairn::gossip::wire::{decode_packet, decode_sync, encode_packet, encode_sync};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(packet) = decode_packet(data) {
        let bytes = encode_packet(&packet).expect("a decoded packet re-encodes");
        let again = decode_packet(&bytes).expect("a re-encoded packet decodes");
        assert_eq!(again, packet);
    }
    if let Ok(sync) = decode_sync(data) {
        let bytes = encode_sync(&sync).expect("a decoded state sync re-encodes");
        let again = decode_sync(&bytes).expect("a re-encoded state sync decodes");
        assert_eq!(again, sync);
    }
});
