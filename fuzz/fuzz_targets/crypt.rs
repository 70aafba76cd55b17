//! Fuzz the key and crypto-message parsers (PEM, PKCS#1/#8, SPKI, OpenSSH, DER).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    veil::crypt::fuzz_one(data);
});
