#![no_main]
//! Open arbitrary bytes as a squashfs image, walk it and read everything.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    veil_fusefs::squashfs::fuzz_one(data);
});
