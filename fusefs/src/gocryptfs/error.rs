//! The gocryptfs layer's one error type.

use std::io;

/// What can go wrong reading a gocryptfs volume.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `gocryptfs.conf` is not what gocryptfs writes.
    #[error("gocryptfs.conf: {0}")]
    Config(String),
    /// A well-formed feature this implementation does not read.
    #[error(
        "gocryptfs.conf: {0} (veil reads gocryptfs volumes made with -plaintextnames, as Apptainer makes them)"
    )]
    Unsupported(String),
    /// The passphrase does not unwrap the master key.
    #[error("wrong passphrase: it does not decrypt the gocryptfs master key")]
    WrongPassphrase,
    /// The KDF would need more memory than allowed.
    #[error(
        "the gocryptfs key derivation (scrypt) needs {need_mib} MiB of memory, more than the {limit_mib} MiB allowed{why}"
    )]
    KdfTooCostly {
        need_mib: u64,
        limit_mib: u64,
        why: &'static str,
    },
    /// The encrypted file is damaged: its header, or its length.
    #[error("the encrypted file is damaged: {0}")]
    Corrupt(String),
    /// Reading the encrypted file failed.
    #[error("reading the encrypted file: {0}")]
    Io(#[from] io::Error),
    /// A password gocryptfs would not read as given.
    #[error("the password cannot be used for gocryptfs: {0}")]
    Password(String),
    /// Writing a sealed file failed.
    #[error("writing the encrypted file: {0}")]
    Write(io::Error),
    /// Reading what is being sealed failed.
    #[error("reading the data to encrypt: {0}")]
    Input(io::Error),
    /// Randomness or a cipher could not be set up.
    #[error("setting up the cipher: {0}")]
    Crypto(String),
}

pub type Result<T> = std::result::Result<T, Error>;
