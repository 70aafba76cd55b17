//! Progress bars on stderr (indicatif): shown only when stderr is a terminal, the
//! caller did not ask for quiet, and the work is big enough to wait for. Squashing,
//! encrypting and registry transfers share them.

#![forbid(unsafe_code)]

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Below this many bytes no bar is worth drawing.
const SMALL: u64 = 8 << 20;

/// A bar for a number of bytes; inert when it is not to be shown.
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    /// A bar named `what` for `total` bytes, shown if `enabled` and stderr is a
    /// terminal.
    pub fn new(what: &str, total: u64, enabled: bool) -> Progress {
        let shown =
            enabled && super::say::info() && total > SMALL && std::io::stderr().is_terminal();
        Progress {
            bar: shown.then(|| bar(what, total)),
        }
    }

    /// No bar at all.
    pub fn hidden() -> Progress {
        Progress { bar: None }
    }

    pub fn add(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }

    /// A handle that only counts, for work done where the bar cannot be borrowed (an
    /// upload stream the HTTP client owns).
    pub fn counter(&self) -> Counter {
        Counter(self.bar.clone())
    }

    /// Back to zero (a transfer that starts over).
    pub fn restart(&self) {
        if let Some(b) = &self.bar {
            b.set_position(0);
        }
    }

    /// The work is done: the bar stays, full, as a line of the output.
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        // Abandoned (an error): the bar is cleared, so the error line stands alone.
        if let Some(b) = &self.bar
            && !b.is_finished()
        {
            b.finish_and_clear();
        }
    }
}

/// Counts onto a [`Progress`]; the bar itself stays with the `Progress`.
#[derive(Clone)]
pub struct Counter(Option<ProgressBar>);

impl Counter {
    pub fn add(&self, n: u64) {
        if let Some(b) = &self.0 {
            b.inc(n);
        }
    }
}

fn bar(what: &str, total: u64) -> ProgressBar {
    let style = ProgressStyle::with_template(
        "{prefix:<10} [{bar:30}] {percent:>3}% {bytes} / {total_bytes}  {bytes_per_sec}  ETA {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("#>-");
    let b = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    b.set_style(style);
    b.set_prefix(what.to_string());
    b
}
