//! Fuzz the signature layer: cleartext/DSSE decoding, metadata JSON, policy files, and
//! verification of arbitrary SIF bytes; and what keyservers send: HKP indexes and key
//! answers checked by fingerprint, and keyserver addresses.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    veil::sign::fuzz_one(data);
    let text = String::from_utf8_lossy(data);
    let index = veil::registry::keyserver::index::parse(&text);
    assert!(index.keys.len() <= veil::registry::keyserver::index::MAX_KEYS);
    let _ = veil::sign::keys::from_keyserver(data, &[0; 20], "fuzz");
    let _ = veil::registry::keyserver::Keyserver::parse(&text, None);
});
