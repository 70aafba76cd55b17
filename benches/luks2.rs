//! Benchmarks for luks2 (filled in by its issue).
fn main() {}
