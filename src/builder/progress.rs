//! A one-line progress bar with ETA on stderr, shown only when stderr is a terminal.

#![forbid(unsafe_code)]

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct Progress {
    what: &'static str,
    total: u64,
    state: Option<Mutex<State>>,
}

struct State {
    done: u64,
    start: Instant,
    last: Instant,
}

fn human(b: u64) -> String {
    if b >= 1 << 30 {
        format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64)
    } else {
        format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
    }
}

impl Progress {
    /// A bar for `total` bytes; inert unless `enabled` and stderr is a terminal.
    pub fn new(what: &'static str, total: u64, enabled: bool) -> Progress {
        let on = enabled && std::io::stderr().is_terminal() && total > (8 << 20);
        let now = Instant::now();
        Progress {
            what,
            total,
            state: on.then(|| {
                Mutex::new(State {
                    done: 0,
                    start: now,
                    last: now,
                })
            }),
        }
    }

    pub fn add(&self, n: u64) {
        let Some(m) = &self.state else { return };
        let Ok(mut s) = m.lock() else { return };
        s.done += n;
        if s.last.elapsed() < Duration::from_millis(200) {
            return;
        }
        s.last = Instant::now();
        let frac = (s.done as f64 / self.total.max(1) as f64).min(1.0);
        let elapsed = s.start.elapsed().as_secs_f64();
        let eta = if frac > 0.01 {
            format!("{:.0}s", elapsed / frac - elapsed)
        } else {
            "?".into()
        };
        let width = 30;
        let filled = (frac * width as f64) as usize;
        eprint!(
            "\r{:<9} [{}{}] {:>3.0}% {} / {}  ETA {eta}   ",
            self.what,
            "#".repeat(filled),
            "-".repeat(width - filled),
            frac * 100.0,
            human(s.done),
            human(self.total)
        );
        let _ = std::io::stderr().flush();
    }

    pub fn finish(&self) {
        if self.state.is_some() {
            eprintln!("\r{:<9} done{:70}", self.what, "");
        }
    }
}
