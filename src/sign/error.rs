//! The signing layer's error type. Each message is one line naming what is wrong; where
//! the reference library (sylabs/sif `integrity`) has a text for the same condition,
//! the message mirrors it so scripts and users see the same words as with the peers.

#![forbid(unsafe_code)]

use std::io;

use crate::sif::SifError;

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("{0}")]
    Sif(#[from] SifError),
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("no groups found")]
    NoGroups,
    #[error("group not found: {0}")]
    GroupNotFound(u32),
    #[error("object not found: {0}")]
    ObjectNotFound(u32),
    #[error("invalid group ID 0 (object {0} has no group and cannot be signed)")]
    UngroupedObject(u32),
    #[error("non-signature object not associated with object group")]
    NonGroupedObject,
    #[error("signature not found for object group {0}")]
    GroupSignatureNotFound(u32),
    #[error("signature not found for object {0}")]
    ObjectSignatureNotFound(u32),
    /// The OpenPGP layer rejected the signature (unknown key, bad signature, not a
    /// clearsigned message, unparsable payload).
    #[error("signature object {id} not valid: {reason}")]
    SignatureNotValid { id: u32, reason: String },
    #[error("fingerprint in descriptor does not correspond to signing entity")]
    FingerprintMismatch,
    #[error("header integrity compromised")]
    HeaderIntegrity,
    #[error("data object descriptor integrity compromised: {0}")]
    DescriptorIntegrity(u32),
    /// `None` for a legacy group signature, whose one digest covers every object.
    #[error("data object integrity compromised{}", .0.map(|id| format!(": {id}")).unwrap_or_default())]
    ObjectIntegrity(Option<u32>),
    #[error("object {0}: object not signed")]
    ObjectNotSigned(u32),
    #[error("object {0}: signed object not found")]
    SignedObjectNotFound(u32),
    #[error(
        "signature object {0}: key material not provided for DSSE envelope signature \
         (give its PEM public key with --key)"
    )]
    DsseNoKey(u32),
    #[error("signature object {0}: signature format not recognized")]
    FormatNotRecognized(u32),
    #[error("signature object {id}: hash algorithm unsupported ({hash})")]
    HashUnsupported { id: u32, hash: String },
    #[error("signature object {id}: {reason}")]
    LegacyPayload { id: u32, reason: String },
    /// A key or keyring problem: unreadable key file, no such key, wrong passphrase…
    #[error("{0}")]
    Key(String),
    /// Making a signature failed in the OpenPGP layer.
    #[error("signing failed: {0}")]
    Signing(String),
    /// A policy file that cannot be parsed; `line` is 1-based.
    #[error("policy {path}: line {line}: {reason}")]
    PolicySyntax {
        path: String,
        line: usize,
        reason: String,
    },
    #[error("{0}")]
    Invalid(String),
    /// `ring` is "secret" or "public".
    #[error("no {ring} key matches {key}")]
    NoMatchingKey { ring: &'static str, key: String },
    #[error("{count} keys match {key}: give the full fingerprint")]
    AmbiguousKey { count: usize, key: String },
    #[error("no key matching {key} in {}", dir.display())]
    NotInKeyrings {
        key: String,
        dir: std::path::PathBuf,
    },
    #[error("writing {}: {err}", path.display())]
    Write {
        path: std::path::PathBuf,
        err: io::Error,
    },
}

pub type Result<T> = std::result::Result<T, SignError>;

impl SignError {
    /// True for the errors that mean "this signer is not trusted or the signature does not
    /// check out", as opposed to "the signed data was changed". Apptainer's ECL treats the
    /// first kind separately; so does our policy check for its report.
    pub fn is_signature_not_valid(&self) -> bool {
        matches!(self, SignError::SignatureNotValid { .. })
    }
}
