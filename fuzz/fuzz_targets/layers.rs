#![no_main]
//! Apply hostile layer sequences to a scratch staging root and fail if anything
//! outside it was created, changed or removed.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    veil::builder::layer_fuzz::fuzz_one(data);
});
