//! `record::decode` on any bytes; what decodes must survive a round trip
//! through `record::encode`.
//!
//! The header's CRC-32 stops almost every mutation of a whole recording
//! before the protobuf decoder, so an input that does not start with the
//! magic is also tried as a body behind a valid header (the corpus holds
//! whole recordings and bare bodies).

#![no_main]

use libfuzzer_sys::fuzz_target;
use memleak_unwind_arch::record::{self, decode, encode};

fuzz_target!(|data: &[u8]| {
    round_trip(data);
    if !data.starts_with(record::MAGIC) {
        round_trip(&record::wrap(data));
    }
});

fn round_trip(bytes: &[u8]) {
    let Ok(r) = decode(bytes) else { return };
    let again = encode(&r);
    let r2 = decode(&again).expect("a re-encoded recording does not decode");
    assert_eq!(r, r2, "the round trip changed the recording");
    assert_eq!(encode(&r2), again, "encode is not deterministic");
}
