//! veil's own exit statuses, kept apart from a container's: a container's status
//! passes through unchanged (0–255, 128+N for a signal), and veil's failures use the
//! top of the range, which programs rarely use, by kind (docs/compat.md lists them).

#![forbid(unsafe_code)]

use std::process::ExitCode;

pub use crate::support::failure::Failure;

/// veil's exit status for each kind.
pub trait Status {
    fn code(self) -> u8;
    fn exit_code(self) -> ExitCode;
}

impl Status for Failure {
    fn code(self) -> u8 {
        match self {
            Failure::Usage => 249,
            Failure::Image => 250,
            Failure::Key => 251,
            Failure::Verification => 252,
            Failure::Environment => 253,
            Failure::Other => 255,
        }
    }

    fn exit_code(self) -> ExitCode {
        ExitCode::from(self.code())
    }
}

/// A tag on an error that says its kind where the type alone cannot (a signature
/// error is a verification failure in `verify`, a key-management one in `key`). It
/// adds nothing to the message.
#[derive(Debug)]
pub struct Tagged(pub Failure);

impl std::fmt::Display for Tagged {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        Ok(())
    }
}

impl std::error::Error for Tagged {}

/// The kind of `err`: its tag if it has one, else what its causes are.
pub fn classify(err: &anyhow::Error) -> Failure {
    // (A context is found by anyhow's own downcast, not in the chain of causes.)
    if let Some(Tagged(f)) = err.downcast_ref::<Tagged>() {
        return *f;
    }
    for cause in err.chain() {
        if let Some(f) = kind_of(cause) {
            return f;
        }
    }
    Failure::Other
}

fn kind_of(e: &(dyn std::error::Error + 'static)) -> Option<Failure> {
    crate::runner::error::failure_of(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_sorted_by_what_the_user_must_change() {
        let env = anyhow::Error::new(crate::runner::RunnerError::Launch(
            crate::launch::LaunchError::Userns(crate::support::userns::UsernsError::Disabled),
        ));
        assert_eq!(classify(&env), Failure::Environment);
        let fuse = anyhow::Error::new(crate::launch::LaunchError::NoFuse).context("running x");
        assert_eq!(classify(&fuse), Failure::Environment);
        let img = anyhow::Error::new(crate::runner::RunnerError::Image(
            crate::image::ImageError::Unknown("x".into()),
        ));
        assert_eq!(classify(&img), Failure::Image);
        let key = anyhow::Error::new(crate::runner::RunnerError::NoKey {
            name: "x".into(),
            kind: "with a passphrase",
        });
        assert_eq!(classify(&key), Failure::Key);
        let tagged = anyhow::anyhow!("bad").context(Tagged(Failure::Verification));
        assert_eq!(classify(&tagged), Failure::Verification);
        assert_eq!(classify(&anyhow::anyhow!("other")), Failure::Other);
        // The tag adds nothing to the line.
        assert_eq!(format!("{}", Tagged(Failure::Usage)), "");
    }
}
