//! The kinds of veil's own failures, which set its exit status (the command line's
//! `cli::exit` gives each its number): shared below the command line so that a
//! process that reports an error to another (an instance's launcher to `instance
//! start`) can say its kind too.

#![forbid(unsafe_code)]

/// A kind of failure of veil's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The command line: an unknown flag, a missing or bad argument.
    Usage,
    /// The image: not found, unreadable, not an image veil can run, damaged.
    Image,
    /// The key of an encrypted image: none given, wrong, unreadable.
    Key,
    /// Signatures: verification failed, or the policy refused the image.
    Verification,
    /// This machine cannot run containers: user namespaces, FUSE, loop devices.
    Environment,
    /// Anything else.
    Other,
}

impl Failure {
    /// One word for a pipe between veil's processes.
    pub fn word(self) -> &'static str {
        match self {
            Failure::Usage => "usage",
            Failure::Image => "image",
            Failure::Key => "key",
            Failure::Verification => "verification",
            Failure::Environment => "environment",
            Failure::Other => "other",
        }
    }

    /// The kind [`Failure::word`] names (anything else is `Other`).
    pub fn from_word(w: &str) -> Failure {
        [
            Failure::Usage,
            Failure::Image,
            Failure::Key,
            Failure::Verification,
            Failure::Environment,
        ]
        .into_iter()
        .find(|f| f.word() == w)
        .unwrap_or(Failure::Other)
    }
}
