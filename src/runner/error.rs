//! The run service's error type: what the user must change, with the image's name.

#![forbid(unsafe_code)]

use crate::crypt::source::HOW_TO_GIVE_A_KEY;

#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("{0}")]
    Registry(#[from] crate::registry::RegistryError),
    /// Building the SIF of a docker:// image for a run (the builder's own line).
    #[error("{name}: {why}")]
    Pull { name: String, why: String },
    #[error("{name}: {err}")]
    Open { name: String, err: std::io::Error },
    #[error("{0}: --verify and --policy need a SIF image (only SIF files carry signatures)")]
    NeedsSif(String),
    /// The image could not be read for the signature check (damaged, unreadable).
    #[error("{name}: cannot check its signatures: {err}")]
    Verify {
        name: String,
        err: crate::sign::SignError,
    },
    #[error("{name}: image prohibited by policy: {reason}")]
    Prohibited { name: String, reason: String },
    #[error("{0}: the image is not encrypted, and --require-encrypted was given")]
    NotEncrypted(String),
    /// `kind` says how the image was encrypted ("with a passphrase", "for an RSA key").
    #[error("{name}: the image is encrypted {kind}; {HOW_TO_GIVE_A_KEY}")]
    NoKey { name: String, kind: &'static str },
    #[error("{name}: {err}")]
    Key {
        name: String,
        err: crate::crypt::CryptError,
    },
    /// `key` names where the passphrase came from, never its value.
    #[error(
        "{name}: the image was encrypted for an RSA key, and the passphrase ({key}) {}: give the private key with --pem-path or --pem-fd (or VEIL_ENCRYPTION_PEM_PATH / _PEM_DATA)",
        crate::image::wrong_key_opens(*.gocryptfs)
    )]
    PassphraseForRsa {
        name: String,
        key: String,
        gocryptfs: bool,
    },
    #[error("{name}: wrong passphrase ({key}): it {}", crate::image::wrong_key_opens(*.gocryptfs))]
    WrongPassphrase {
        name: String,
        key: String,
        gocryptfs: bool,
    },
    #[error("{0}: an encrypted partition holds a directory")]
    EncryptedDirectory(String),
    #[error(transparent)]
    Image(#[from] crate::image::ImageError),
    #[error(transparent)]
    Sign(#[from] crate::sign::SignError),
    #[error(transparent)]
    Userns(#[from] crate::support::userns::UsernsError),
    #[error(transparent)]
    Launch(#[from] crate::launch::LaunchError),
    #[error(transparent)]
    Instance(#[from] super::instance::InstanceError),
}

pub type Result<T> = std::result::Result<T, RunnerError>;

use crate::support::failure::Failure;

impl RunnerError {
    /// The kind of this failure (it sets veil's exit status). `None`: the error it
    /// wraps does not say (a registry's, a policy file's).
    pub fn failure(&self) -> Option<Failure> {
        use RunnerError as R;
        match self {
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
            R::Image(i) => Some(image_failure(i)),
            R::Userns(_) => Some(Failure::Environment),
            R::Launch(l) => launch_failure(l),
            R::Instance(i) => instance_failure(i),
            R::Registry(_) | R::Pull { .. } | R::Sign(_) => None,
        }
    }
}

/// The kind of `e` itself, if its type says one (not its causes'). Transparent
/// wrappers (`#[error(transparent)]`) hide the wrapped error from the chain of causes,
/// so the run service's error names its wrapped errors' kinds itself.
pub fn failure_of(e: &(dyn std::error::Error + 'static)) -> Option<Failure> {
    if let Some(err) = e.downcast_ref::<RunnerError>() {
        return err.failure();
    }
    if let Some(i) = e.downcast_ref::<crate::image::ImageError>() {
        return Some(image_failure(i));
    }
    if let Some(s) = e.downcast_ref::<crate::sif::SifError>() {
        use crate::sif::SifError as S;
        return match s {
            // A bad argument of `veil sif`: the command line's.
            S::Invalid(_) => Some(Failure::Usage),
            // A file that is not there or not ours to read is the image's; a write
            // that failed (a full disk) is nobody's kind.
            S::Io(io)
                if matches!(
                    io.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
                ) =>
            {
                Some(Failure::Image)
            }
            S::Io(_) => None,
            _ => Some(Failure::Image),
        };
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
        return launch_failure(l);
    }
    if let Some(i) = e.downcast_ref::<super::instance::InstanceError>() {
        return instance_failure(i);
    }
    None
}

/// The kind of `e` or, failing that, of the first of its causes that has one.
pub fn failure_in_chain(e: &(dyn std::error::Error + 'static)) -> Option<Failure> {
    std::iter::successors(Some(e), |e| e.source()).find_map(failure_of)
}

/// An image error's kind: the key's for a wrong key, else the image's.
pub fn image_failure(i: &crate::image::ImageError) -> Failure {
    use crate::image::ImageError as I;
    match i {
        I::WrongKey { .. } | I::Crypto(..) => Failure::Key,
        _ => Failure::Image,
    }
}

/// A launch error's kind, where it has one.
pub fn launch_failure(l: &crate::launch::LaunchError) -> Option<Failure> {
    use crate::launch::LaunchError as L;
    match l {
        L::Userns(_)
        | L::NoFuse
        | L::FuseAccess(_)
        | L::NoFreeLoopDevice
        | L::LoopDevice { .. }
        | L::DmCrypt { .. }
        | L::UnpackMemory { .. }
        | L::UnpackMemoryUnknown => Some(Failure::Environment),
        // A squashfs that could not be read or unpacked.
        L::Unpack(_) => Some(Failure::Image),
        // What the command line asked for cannot be: binds, environment, command.
        L::BindSource(_)
        | L::BindSpec(..)
        | L::MountSpec(..)
        | L::NoMount(..)
        | L::Workdir { .. }
        | L::EnvName(_)
        | L::EnvFlag(_)
        | L::EnvFileLine { .. }
        | L::EnvFileName { .. }
        | L::NulByte
        | L::NoCommand => Some(Failure::Usage),
        _ => None,
    }
}

/// An instance error's kind: a launch that failed says its own.
pub fn instance_failure(i: &super::instance::InstanceError) -> Option<Failure> {
    use super::instance::InstanceError as E;
    match i {
        E::NoPidfd => Some(Failure::Environment),
        E::NotStarted { kind, .. } | E::SessionNotStarted { kind, .. } => *kind,
        _ => None,
    }
}
