//! Fuzz the LUKS2 binary headers, JSON metadata and (with tiny KDF caps) unlock.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    veil_fusefs::luks2::fuzz_one(data);
});
