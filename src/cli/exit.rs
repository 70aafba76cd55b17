//! veil's own exit statuses, kept apart from a container's: a container's status
//! passes through unchanged (0–255, 128+N for a signal), and veil's failures use the
//! top of the range, which programs rarely use, by kind (docs/compat.md lists them).

#![forbid(unsafe_code)]

use std::process::ExitCode;

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
    /// This machine cannot run containers: user namespaces, FUSE.
    Environment,
    /// Anything else.
    Other,
}

impl Failure {
    pub fn code(self) -> u8 {
        match self {
            Failure::Usage => 249,
            Failure::Image => 250,
            Failure::Key => 251,
            Failure::Verification => 252,
            Failure::Environment => 253,
            Failure::Other => 255,
        }
    }

    pub fn exit_code(self) -> ExitCode {
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

// Transparent wrappers (`#[error(transparent)]`) hide the wrapped error from the
// chain of causes, so each wrapper is opened here by hand.
fn kind_of(e: &(dyn std::error::Error + 'static)) -> Option<Failure> {
    use crate::runner::RunnerError as R;
    if let Some(r) = e.downcast_ref::<R>() {
        return match r {
            R::Open { .. } | R::NeedsSif(_) | R::EncryptedDirectory(_) => Some(Failure::Image),
            R::NoKey { .. }
            | R::Key { .. }
            | R::PassphraseForRsa { .. }
            | R::WrongPassphrase { .. }
            | R::NotEncrypted(_) => Some(Failure::Key),
            // An image that cannot be read for the check is the image's failure.
            R::Verify {
                err: crate::sign::SignError::Sif(_) | crate::sign::SignError::ReadImage(_),
                ..
            } => Some(Failure::Image),
            R::Verify { .. } | R::Prohibited { .. } => Some(Failure::Verification),
            R::Image(i) => Some(image_kind(i)),
            R::Userns(_) => Some(Failure::Environment),
            R::Launch(l) => launch_kind(l),
            R::Instance(i) => instance_kind(i),
            R::Registry(_) | R::Pull { .. } | R::Sign(_) => None,
        };
    }
    if let Some(i) = e.downcast_ref::<crate::image::ImageError>() {
        return Some(image_kind(i));
    }
    if e.downcast_ref::<crate::sif::SifError>().is_some() {
        return Some(Failure::Image);
    }
    if e.downcast_ref::<crate::crypt::CryptError>().is_some() {
        return Some(Failure::Key);
    }
    if e.downcast_ref::<crate::support::userns::UsernsError>()
        .is_some()
    {
        return Some(Failure::Environment);
    }
    if let Some(l) = e.downcast_ref::<crate::launch::LaunchError>() {
        return launch_kind(l);
    }
    if let Some(i) = e.downcast_ref::<crate::runner::instance::InstanceError>() {
        return instance_kind(i);
    }
    None
}

fn image_kind(i: &crate::image::ImageError) -> Failure {
    use crate::image::ImageError as I;
    match i {
        I::WrongKey { .. } | I::Crypto(..) => Failure::Key,
        _ => Failure::Image,
    }
}

fn launch_kind(l: &crate::launch::LaunchError) -> Option<Failure> {
    use crate::launch::LaunchError as L;
    match l {
        L::Userns(_) | L::NoFuse | L::FuseAccess(_) | L::NoFreeLoopDevice => {
            Some(Failure::Environment)
        }
        // What the command line asked for cannot be: binds, environment, command.
        L::BindSource(_)
        | L::BindSpec(..)
        | L::EnvName(_)
        | L::EnvFlag(_)
        | L::EnvFileLine { .. }
        | L::EnvFileName { .. }
        | L::NulByte
        | L::NoCommand => Some(Failure::Usage),
        _ => None,
    }
}

fn instance_kind(i: &crate::runner::instance::InstanceError) -> Option<Failure> {
    match i {
        crate::runner::instance::InstanceError::NoPidfd => Some(Failure::Environment),
        _ => None,
    }
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
