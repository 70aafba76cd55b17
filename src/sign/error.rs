//! The signing layer's error type. Each message is one line naming what is wrong; where
//! the reference library (sylabs/sif `integrity`) has a text for the same condition,
//! the message mirrors it so scripts and users see the same words as with the peers.

#![forbid(unsafe_code)]

use std::fmt;
use std::io;
use std::path::PathBuf;

use super::passphrase::PASSPHRASE_ENV;
use crate::sif::SifError;

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("{0}")]
    Sif(#[from] SifError),
    /// Reading the image whose signatures are made or checked.
    #[error("reading the image: {0}")]
    ReadImage(io::Error),
    /// Writing what a key command reports (its caller's output).
    #[error("writing the output: {0}")]
    Output(io::Error),
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
    /// The OpenPGP or DSSE layer rejected the signature (unknown key, bad signature,
    /// not a clearsigned message, unparsable payload).
    #[error("signature object {id} not valid: {reason}")]
    SignatureNotValid {
        id: u32,
        #[source]
        reason: Rejection,
    },
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
    #[error("signature object {0}: legacy payload is not SIFHASH text")]
    LegacyNotSifhash(u32),
    /// The hex digest of a legacy payload is not one of `alg`'s length.
    #[error("signature object {id}: malformed {alg} digest in legacy payload")]
    LegacyDigest { id: u32, alg: &'static str },
    /// Making a signature failed in the OpenPGP layer.
    #[error("signing failed: {0}")]
    Signing(#[source] Cause),
    /// A policy file that cannot be parsed; `line` is 1-based.
    #[error("policy {path}: line {line}: {reason}")]
    PolicySyntax {
        path: String,
        line: usize,
        reason: String,
    },
    /// `ring` is "secret" or "public".
    #[error("no {ring} key matches {key}")]
    NoMatchingKey { ring: &'static str, key: String },
    #[error("{count} keys match {key}: give the full fingerprint")]
    AmbiguousKey { count: usize, key: String },
    #[error("no key matching {key} in {}", dir.display())]
    NotInKeyrings { key: String, dir: PathBuf },
    /// A keyserver's answer held no key with the fingerprint asked for.
    #[error("{source_name} answered with {}, not the key {want} asked for: refused", if got.is_empty() { "nothing usable".to_string() } else { got.join(", ") })]
    KeyserverMismatch {
        source_name: String,
        want: String,
        got: Vec<String>,
    },
    /// Not a whole OpenPGP v4 fingerprint.
    #[error(
        "{0:?} is not a fingerprint: give all 40 hexadecimal digits (`veil key search` shows them)"
    )]
    NotFingerprint(String),
    /// Writing a file of veil's: a key export, or a keyring (whose serialisation errors
    /// are the writer's I/O errors).
    #[error("writing {}: {err}", path.display())]
    Write { path: PathBuf, err: io::Error },

    // What the caller asked for.
    #[error("invalid group ID 0")]
    GroupIdZero,
    #[error("invalid object ID 0")]
    ObjectIdZero,
    #[error("no primary system partition to verify")]
    NoPrimaryPartition,
    /// A group's objects are numbered from its lowest ID; one below it cannot be placed.
    #[error("object {0} is below its group's minimum ID")]
    ObjectBelowGroup(u32),

    // Passphrases.
    #[error("reading passphrase file {}: {err}", path.display())]
    PassphraseFile { path: PathBuf, err: io::Error },
    #[error("{origin} is not valid UTF-8")]
    PassphraseNotUtf8 { origin: PassphraseOrigin },
    /// No terminal to prompt on (or reading from it failed); `err` is why.
    #[error(
        "a passphrase is needed but there is no terminal to ask on ({err}); \
         use --passphrase-file or {env}",
        env = PASSPHRASE_ENV
    )]
    NoTerminal { err: io::Error },
    /// Ctrl-C (or another signal) at the prompt.
    #[error("interrupted at the passphrase prompt")]
    Interrupted,
    #[error("the passphrases do not match")]
    PassphrasesDiffer,

    // Keyrings and key files.
    #[error("HOME is not set: cannot locate the keyrings")]
    NoHome,
    #[error("creating {}: {err}", path.display())]
    CreateDir { path: PathBuf, err: io::Error },
    #[error("reading {}: {err}", path.display())]
    ReadKeyring { path: PathBuf, err: io::Error },
    #[error("keyring {} is {size} bytes, more than the {limit} accepted", path.display())]
    KeyringTooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    #[error("keyring {}: {err}", path.display())]
    BadKeyring {
        path: PathBuf,
        #[source]
        err: CertsError,
    },
    #[error("reading key file {}: {err}", path.display())]
    ReadKeyFile { path: PathBuf, err: io::Error },
    #[error("key file {} is too large ({size} bytes)", path.display())]
    KeyFileTooLarge { path: PathBuf, size: u64 },
    #[error("key file {}: {err}", path.display())]
    BadKeyFile {
        path: PathBuf,
        #[source]
        err: CertsError,
    },
    #[error("key file {} holds no OpenPGP key", path.display())]
    NoKeyInFile { path: PathBuf },
    /// A KEY argument that is neither a fingerprint nor a key ID; `value` as given.
    #[error("{value:?} is not a key fingerprint (40 hex digits) or key ID (16 or 8)")]
    BadKeySelector { value: String },

    // OpenPGP key operations; the cause is sequoia's error (see `Cause`).
    #[error("exporting: {0}")]
    Export(#[source] Cause),
    #[error("protecting the secret key: {0}")]
    Protect(#[source] Cause),
    #[error("unsupported RSA key size {bits} (use 2048, 3072 or 4096)")]
    RsaKeySize { bits: u32 },
    #[error("a key needs a name or an e-mail address")]
    NoUserId,
    #[error("generating the key: {0}")]
    Generate(#[source] Cause),
    /// The key fails the standard policy (expired, revoked, weak algorithm…).
    #[error("key {fpr} is not usable: {err}")]
    KeyNotUsable {
        fpr: String,
        #[source]
        err: Cause,
    },
    #[error("key {fpr} has no usable secret signing key")]
    NoSigningKey { fpr: String },
    #[error("wrong passphrase for key {fpr}")]
    WrongPassphrase { fpr: String },
    /// The unlocked secret key could not be made into a signer.
    #[error("key {fpr}: {err}")]
    Keypair {
        fpr: String,
        #[source]
        err: Cause,
    },

    // PEM public keys (DSSE envelopes).
    #[error("not a PEM public key: no complete 'PUBLIC KEY' PEM block")]
    NoPemBlock,
    /// The block's DER is not a PKIX SubjectPublicKeyInfo.
    #[error("not a PEM public key: {0}")]
    NotPemKey(#[source] rsa::pkcs8::der::Error),
    #[error("not a PEM public key: the key's bit string is not whole bytes")]
    PemKeyBits,
    #[error("reading the key: an Ed25519 key is 32 bytes")]
    Ed25519KeyLength,
    /// A PKIX key of a supported type whose key material is invalid; the cause is the
    /// key type's library error (RSA, Ed25519, ECDSA).
    #[error("reading the key: {0}")]
    BadPemKey(#[source] Cause),
    #[error("unsupported elliptic curve")]
    UnsupportedCurve,
    #[error("unsupported public key type")]
    UnsupportedKeyType,

    // Policies.
    #[error("reading policy {}: {err}", path.display())]
    ReadPolicy { path: PathBuf, err: io::Error },
    /// A definition file's `Fingerprints:` entry; `value` as written.
    #[error("Fingerprints: {value:?} is not a 40-hex-digit fingerprint")]
    BadFingerprint { value: String },
    #[error("Fingerprints: lists no fingerprint")]
    NoFingerprints,
}

/// A library's error kept whole, with its causes: sequoia reports its failures as
/// `anyhow::Error`, a type this layer does not name (anyhow belongs to the CLI), and
/// which converts into this one without losing its chain.
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

/// Why a signature object is not valid. The OpenPGP texts are the reference's
/// (sylabs/sif `integrity`) for the same conditions.
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    #[error("signature object is {size} bytes, more than the {limit} accepted")]
    TooLarge { size: i64, limit: u64 },
    #[error("clearsigned message not found")]
    NotClearsigned,
    /// The cleartext framing or its signature block does not parse.
    #[error("openpgp: {0}")]
    OpenPgp(#[source] Cause),
    #[error("openpgp: no signature found")]
    NoSignature,
    #[error("openpgp: signing key is not an OpenPGP v4 key")]
    NotV4Key,
    /// The standard policy refuses the signature itself (a weak hash, say).
    #[error("openpgp: signature not acceptable: {0}")]
    NotAcceptable(#[source] Cause),
    #[error("openpgp: signature made by unknown entity")]
    UnknownEntity,
    #[error("openpgp: invalid signature: {0}")]
    BadSignature(#[source] Cause),
    #[error("openpgp: signing key not valid: {0}")]
    BadKey(#[source] Cause),
    #[error("openpgp: signing key not bound to its certificate: {0}")]
    UnboundKey(#[source] Cause),
    #[error("openpgp: malformed signature: {0}")]
    MalformedSignature(#[source] Cause),
    #[error("openpgp: unsupported signature packet")]
    UnsupportedPacket,
    /// A kind of verification failure sequoia added after this was written: its text,
    /// since the failure itself borrows from the verifier.
    #[error("openpgp: {0}")]
    OtherOpenPgp(String),
    #[error("dsse: malformed envelope: {0}")]
    DsseEnvelope(#[source] serde_json::Error),
    /// The envelope's payload type, as written.
    #[error("dsse: unexpected payload type {0:?}")]
    DssePayloadType(String),
    #[error("dsse: malformed payload: {0}")]
    DssePayload(#[source] base64::DecodeError),
    #[error("dsse: no signature verified with the given keys")]
    DsseNotVerified,
    /// The signature checks out but what it signs is not the metadata JSON.
    #[error("malformed signed metadata: {0}")]
    Metadata(#[source] serde_json::Error),
}

/// Why bytes that should hold OpenPGP certificates do not.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error("not an OpenPGP key: {0}")]
    NotOpenPgp(#[source] Cause),
    #[error("malformed OpenPGP key: {0}")]
    Malformed(#[source] Cause),
}

/// Where a passphrase came from, as its errors name it (never its value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PassphraseOrigin {
    File(PathBuf),
    /// The [`PASSPHRASE_ENV`] variable.
    Env,
    Terminal,
}

impl fmt::Display for PassphraseOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PassphraseOrigin::File(path) => write!(f, "passphrase file {}", path.display()),
            PassphraseOrigin::Env => f.write_str(PASSPHRASE_ENV),
            PassphraseOrigin::Terminal => f.write_str("the passphrase"),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/key.md, docs/sign.md and docs/security.md quote these messages, and scripts
    /// may match them: the typed variants must print what the strings printed before.
    #[test]
    fn messages_quoted_by_the_docs() {
        let cases: Vec<(SignError, &str)> = vec![
            (SignError::GroupIdZero, "invalid group ID 0"),
            (
                SignError::NoPrimaryPartition,
                "no primary system partition to verify",
            ),
            (
                SignError::NoHome,
                "HOME is not set: cannot locate the keyrings",
            ),
            (SignError::PassphrasesDiffer, "the passphrases do not match"),
            (
                SignError::Interrupted,
                "interrupted at the passphrase prompt",
            ),
            (
                SignError::NoTerminal {
                    err: io::Error::other("no tty"),
                },
                "a passphrase is needed but there is no terminal to ask on (no tty); \
                 use --passphrase-file or VEIL_PASSPHRASE",
            ),
            (
                SignError::PassphraseNotUtf8 {
                    origin: PassphraseOrigin::File("/p/pw".into()),
                },
                "passphrase file /p/pw is not valid UTF-8",
            ),
            (
                SignError::PassphraseNotUtf8 {
                    origin: PassphraseOrigin::Env,
                },
                "VEIL_PASSPHRASE is not valid UTF-8",
            ),
            (
                SignError::PassphraseNotUtf8 {
                    origin: PassphraseOrigin::Terminal,
                },
                "the passphrase is not valid UTF-8",
            ),
            (
                SignError::BadKeyring {
                    path: "/h/pgp-public".into(),
                    err: CertsError::Malformed("x".into()),
                },
                "keyring /h/pgp-public: malformed OpenPGP key: x",
            ),
            (
                SignError::KeyringTooLarge {
                    path: "/h/r".into(),
                    size: 9,
                    limit: 8,
                },
                "keyring /h/r is 9 bytes, more than the 8 accepted",
            ),
            (
                SignError::NoKeyInFile {
                    path: "k.asc".into(),
                },
                "key file k.asc holds no OpenPGP key",
            ),
            (
                SignError::BadKeySelector {
                    value: "xyz".into(),
                },
                "\"xyz\" is not a key fingerprint (40 hex digits) or key ID (16 or 8)",
            ),
            (
                SignError::RsaKeySize { bits: 1024 },
                "unsupported RSA key size 1024 (use 2048, 3072 or 4096)",
            ),
            (
                SignError::WrongPassphrase { fpr: "ABCD".into() },
                "wrong passphrase for key ABCD",
            ),
            (
                SignError::BadFingerprint {
                    value: "nothex".into(),
                },
                "Fingerprints: \"nothex\" is not a 40-hex-digit fingerprint",
            ),
        ];
        for (err, want) in cases {
            assert_eq!(err.to_string(), want);
        }
    }

    /// The typed reasons print the words the verifier printed as strings, which the
    /// reference also uses.
    #[test]
    fn rejections_keep_their_words() {
        let not_valid = |reason| SignError::SignatureNotValid { id: 3, reason };
        let cases: Vec<(SignError, &str)> = vec![
            (
                not_valid(Rejection::UnknownEntity),
                "signature object 3 not valid: openpgp: signature made by unknown entity",
            ),
            (
                not_valid(Rejection::BadSignature("bad".into())),
                "signature object 3 not valid: openpgp: invalid signature: bad",
            ),
            (
                not_valid(Rejection::TooLarge { size: 9, limit: 8 }),
                "signature object 3 not valid: signature object is 9 bytes, more than the 8 accepted",
            ),
            (
                not_valid(Rejection::DssePayloadType("x".into())),
                "signature object 3 not valid: dsse: unexpected payload type \"x\"",
            ),
            (
                SignError::LegacyNotSifhash(3),
                "signature object 3: legacy payload is not SIFHASH text",
            ),
            (
                SignError::LegacyDigest {
                    id: 3,
                    alg: "sha256",
                },
                "signature object 3: malformed sha256 digest in legacy payload",
            ),
            (
                SignError::BadKeyFile {
                    path: "k".into(),
                    err: CertsError::NotOpenPgp("eof".into()),
                },
                "key file k: not an OpenPGP key: eof",
            ),
            (
                SignError::NoPemBlock,
                "not a PEM public key: no complete 'PUBLIC KEY' PEM block",
            ),
            (
                SignError::BadPemKey("bad point".into()),
                "reading the key: bad point",
            ),
        ];
        for (err, want) in cases {
            assert_eq!(err.to_string(), want);
        }
        // The cause is kept for the CLI's chain, not only its text.
        let e = not_valid(Rejection::BadSignature("bad".into()));
        let cause = std::error::Error::source(&e).and_then(|r| r.source());
        assert_eq!(cause.map(|c| c.to_string()).as_deref(), Some("bad"));
    }
}
