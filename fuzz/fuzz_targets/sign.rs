//! Fuzz the signature layer: cleartext/DSSE decoding, metadata JSON, policy files, and
//! verification of arbitrary SIF bytes. Register it in fuzz/Cargo.toml as `[[bin]] name =
//! "sign"` to run `cargo fuzz run sign`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    veil::sign::fuzz_one(data);
});
