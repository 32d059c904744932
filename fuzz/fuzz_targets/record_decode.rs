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
        round_trip(&frame(data));
    }
});

fn round_trip(bytes: &[u8]) {
    let Ok(r) = decode(bytes) else { return };
    let again = encode(&r);
    let r2 = decode(&again).expect("a re-encoded recording does not decode");
    assert_eq!(r, r2, "the round trip changed the recording");
    assert_eq!(encode(&r2), again, "encode is not deterministic");
}

/// `body` behind a header that matches it (layout in record.rs).
fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(24 + body.len());
    out.extend_from_slice(record::MAGIC);
    out.extend_from_slice(&record::VERSION.to_le_bytes());
    out.extend_from_slice(&crc32(body).to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// CRC-32 (IEEE, as zlib).
fn crc32(data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, e) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xedb8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *e = c;
        }
        t
    });
    !data.iter().fold(!0u32, |c, &b| {
        table[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8)
    })
}
