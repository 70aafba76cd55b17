//! How much veil says on stderr besides its errors: the peers' global `-s/--silent`,
//! `-q/--quiet`, `-v/--verbose` and `-d/--debug`. The command line puts the level in
//! `VEIL_MESSAGES` before anything else runs, so the processes veil starts from its own
//! binary (launcher, instance server, registry helper) keep it; the container never
//! sees it (`VEIL_*` variables stay out of its environment).

use std::sync::OnceLock;

/// The levels, quietest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Errors only.
    Silent,
    /// Errors and warnings.
    Quiet,
    /// Also what was done ("wrote …", "pushed …") and progress bars.
    Normal,
    /// Also the decisions taken on the way.
    Verbose,
    /// Also the timings of each step (as `VEIL_DEBUG`).
    Debug,
}

/// The variable that carries the level to veil's own child processes.
pub const VARIABLE: &str = "VEIL_MESSAGES";

impl Level {
    pub fn name(self) -> &'static str {
        match self {
            Level::Silent => "silent",
            Level::Quiet => "quiet",
            Level::Normal => "normal",
            Level::Verbose => "verbose",
            Level::Debug => "debug",
        }
    }

    fn parse(s: &str) -> Option<Level> {
        [
            Level::Silent,
            Level::Quiet,
            Level::Normal,
            Level::Verbose,
            Level::Debug,
        ]
        .into_iter()
        .find(|l| l.name() == s)
    }
}

/// The level in force: `VEIL_MESSAGES`, else debug with `VEIL_DEBUG` set, else normal.
pub fn level() -> Level {
    static LEVEL: OnceLock<Level> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        std::env::var(VARIABLE)
            .ok()
            .and_then(|v| Level::parse(&v))
            .unwrap_or(if std::env::var_os("VEIL_DEBUG").is_some() {
                Level::Debug
            } else {
                Level::Normal
            })
    })
}

/// Puts `level` in force for this process and the processes it starts.
///
/// # Safety
/// No other thread may be running: it sets an environment variable, which another
/// thread could be reading.
pub unsafe fn set_level(level: Level) {
    // SAFETY: the caller guarantees that this process has a single thread.
    unsafe { std::env::set_var(VARIABLE, level.name()) };
    if level == Level::Debug {
        // The launcher's and init's own timings (support::diag) read it too.
        // SAFETY: as above.
        unsafe { std::env::set_var("VEIL_DEBUG", "1") };
    }
}

/// Whether warnings are shown (all but `--silent`).
pub fn warnings() -> bool {
    level() >= Level::Quiet
}

/// Whether reports of what was done, notes and progress bars are shown.
pub fn info() -> bool {
    level() >= Level::Normal
}

/// Whether the decisions taken on the way are shown (`-v`, `-d`, `VEIL_DEBUG`).
pub fn verbose() -> bool {
    level() >= Level::Verbose
}

/// Whether step timings are shown (`-d`, `VEIL_DEBUG`).
pub fn debug() -> bool {
    level() >= Level::Debug
}

/// `eprintln!` for a warning: shown unless `--silent`.
#[macro_export]
macro_rules! say_warn {
    ($($t:tt)*) => {
        if $crate::support::say::warnings() {
            eprintln!($($t)*);
        }
    };
}

/// `eprintln!` for a report of what was done or a note: shown unless `-q`/`-s`.
#[macro_export]
macro_rules! say_info {
    ($($t:tt)*) => {
        if $crate::support::say::info() {
            eprintln!($($t)*);
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_order_and_names_round_trip() {
        assert!(Level::Silent < Level::Quiet && Level::Verbose < Level::Debug);
        for l in [
            Level::Silent,
            Level::Quiet,
            Level::Normal,
            Level::Verbose,
            Level::Debug,
        ] {
            assert_eq!(Level::parse(l.name()), Some(l));
        }
        assert_eq!(Level::parse("loud"), None);
    }
}
