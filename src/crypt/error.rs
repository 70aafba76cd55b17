//! The one error type of the key-material layer. Messages are single lines and
//! never contain secret bytes.

#![forbid(unsafe_code)]

/// What can go wrong getting or using key material.
#[derive(Debug, thiserror::Error)]
pub enum CryptError {
    /// A key file or descriptor could not be read.
    #[error("{what}: {err}")]
    Io { what: String, err: std::io::Error },
    /// The bytes are not a key veil can use; the text says which forms are accepted.
    #[error("{0}")]
    BadKey(String),
    /// The crypto message stored in the image is malformed.
    #[error("the image's encrypted key (crypto message) is malformed: {0}")]
    BadMessage(String),
    /// RSA-OAEP decryption failed: the private key does not match the image.
    #[error(
        "the private key does not decrypt this image's key; check that you are providing the key the image was encrypted for"
    )]
    WrongKey,
    /// A passphrase was needed and none could be obtained.
    #[error("{0}")]
    NoPassphrase(String),
    /// The user pressed the interrupt key at a passphrase prompt.
    #[error("interrupted at the passphrase prompt")]
    Interrupted,
    /// An RSA operation failed (key too small for the message, …).
    #[error("{what}: {detail}")]
    Crypto { what: &'static str, detail: String },
}

pub type Result<T, E = CryptError> = std::result::Result<T, E>;

impl CryptError {
    pub(crate) fn bad_key(msg: impl Into<String>) -> Self {
        CryptError::BadKey(msg.into())
    }

    pub(crate) fn crypto(what: &'static str, e: impl std::fmt::Display) -> Self {
        CryptError::Crypto {
            what,
            detail: e.to_string(),
        }
    }
}
