//! Fuzz gocryptfs.conf parsing and the gocryptfs block decoder (forged files, and a
//! sealed round trip that must read back exactly and notice a flipped bit).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    veil_fusefs::gocryptfs::fuzz_one(data);
});
