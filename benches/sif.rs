//! Benchmarks for sif (filled in by its issue).
fn main() {}
