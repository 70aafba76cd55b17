//! Fuzz the SIF parser: open arbitrary bytes and render everything a reader would.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    veil::sif::fuzz_one(data);
});
