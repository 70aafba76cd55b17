//! Benchmarks for squashfs (filled in by its issue).
fn main() {}
