//! Fuzz the ELF program-header reader that picks the blocks to prewarm: arbitrary
//! bytes as a program file; every offset it returns must lie inside the file.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    veil::launch::fuzz_elf(data);
});
