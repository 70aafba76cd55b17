//! Fuzz the signature layer: cleartext/DSSE decoding, metadata JSON, policy files, and
//! verification of arbitrary SIF bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    veil::sign::fuzz_one(data);
});
