//! Fuzz the definition-file parser: arbitrary bytes as a `.def`, with invariants on
//! what it returns (lines named exist, script bodies are the lines under their header).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    veil::builder::recipe::fuzz_one(data);
});
