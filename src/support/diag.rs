//! Diagnostics printed only when asked for (`-v`/`-d`, or `VEIL_DEBUG`; see
//! [`super::say`]): where the time of a start or a build goes, and the decisions taken
//! on the way, without a logging framework in every process.

#![forbid(unsafe_code)]

/// A line on stderr with `-v`, `-d` or `VEIL_DEBUG`.
pub fn debug_note(msg: &str) {
    if super::say::verbose() {
        eprintln!("veil: {msg}");
    }
}

/// With `-d` or `VEIL_DEBUG`, prints how long the process has been running (counted from
/// its first call) at each step.
pub fn debug_time(step: &str) {
    use std::sync::OnceLock;
    use std::time::Instant;
    static START: OnceLock<Option<Instant>> = OnceLock::new();
    if let Some(t0) = START.get_or_init(|| super::say::debug().then(Instant::now)) {
        eprintln!(
            "veil: {:8.3} ms  {step}",
            t0.elapsed().as_secs_f64() * 1000.0
        );
    }
}
