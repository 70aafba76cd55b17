//! Diagnostics printed only with `VEIL_DEBUG` set: where the time of a start or a
//! build goes, and the decisions taken on the way, without a logging framework in
//! every process.

#![forbid(unsafe_code)]

/// A line on stderr when `VEIL_DEBUG` is set.
pub fn debug_note(msg: &str) {
    if std::env::var_os("VEIL_DEBUG").is_some() {
        eprintln!("veil: {msg}");
    }
}

/// With `VEIL_DEBUG` set, prints how long the process has been running (counted from
/// its first call) at each step.
pub fn debug_time(step: &str) {
    use std::sync::OnceLock;
    use std::time::Instant;
    static START: OnceLock<Option<Instant>> = OnceLock::new();
    if let Some(t0) = START.get_or_init(|| std::env::var_os("VEIL_DEBUG").map(|_| Instant::now())) {
        eprintln!(
            "veil: {:8.3} ms  {step}",
            t0.elapsed().as_secs_f64() * 1000.0
        );
    }
}
