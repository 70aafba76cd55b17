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
