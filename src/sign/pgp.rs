//! OpenPGP cleartext signatures (RFC 4880 §7 / RFC 9580 §7), through sequoia-openpgp:
//! making one over the metadata JSON, and checking one against a set of certificates.
//!
//! This is the only module that talks to sequoia's streaming API. Everything the
//! verifier concludes is turned into owned values here, so the rest of the layer never
//! sees sequoia lifetimes.

use std::io::{Read, Write};

use sequoia_openpgp as openpgp;

use openpgp::cert::Cert;
use openpgp::crypto::KeyPair;
use openpgp::packet::signature::SignatureBuilder;
use openpgp::parse::Parse;
use openpgp::parse::stream::{
    MessageLayer, MessageStructure, VerificationError, VerificationHelper, VerifierBuilder,
};
use openpgp::policy::StandardPolicy;
use openpgp::serialize::stream::{Message, Signer};
use openpgp::types::{HashAlgorithm, SignatureType};
use openpgp::{Fingerprint, KeyHandle};

use super::error::{Result, SignError};

/// Every cleartext-signed message starts with this line (after optional whitespace).
const CSF_BEGIN: &[u8] = b"-----BEGIN PGP SIGNED MESSAGE-----";
/// More than any clearsigned metadata can need: the verifier buffers the whole text.
pub const MAX_SIGNATURE_OBJECT: u64 = 1 << 20;

/// The entity that made a good signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignerInfo {
    /// Primary-key fingerprint (what the descriptor's Entity must hold).
    pub fingerprint: [u8; 20],
    /// Fingerprint of the key that actually signed (the primary key or a subkey).
    pub signing_key: String,
    /// The certificate's primary user ID, if any.
    pub user_id: Option<String>,
}

/// A decoded cleartext-signed message.
#[derive(Debug)]
pub struct Checked {
    /// The signed text, without the line break before the signature armor.
    pub plaintext: Vec<u8>,
    /// The signer, or why the signature was not accepted (in the reference's words).
    pub outcome: std::result::Result<SignerInfo, String>,
}

/// True if `data` is framed as a cleartext signature. Like the reference, any other
/// framing (inline-signed messages, binary packets) is not a clearsigned payload.
pub fn is_clearsigned(data: &[u8]) -> bool {
    let start = data
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(data.len());
    data[start..].starts_with(CSF_BEGIN)
}

/// Decodes a cleartext-signed message and checks its signature against `certs`.
/// `Err` means it is not a well-formed cleartext signature at all (the text cannot even
/// be extracted); a signature that merely does not check out is an `Ok` whose `outcome`
/// is the reason.
pub fn check_cleartext(data: &[u8], certs: &[Cert]) -> std::result::Result<Checked, String> {
    if !is_clearsigned(data) {
        return Err("clearsigned message not found".into());
    }
    let policy = StandardPolicy::new();
    let helper = Helper {
        certs,
        outcome: None,
    };
    let mut v = VerifierBuilder::from_bytes(data)
        .and_then(|b| b.with_policy(&policy, None, helper))
        .map_err(|e| format!("openpgp: {e}"))?;
    let mut plaintext = Vec::new();
    v.read_to_end(&mut plaintext)
        .map_err(|e| format!("openpgp: {e}"))?;
    let outcome = v
        .into_helper()
        .outcome
        .unwrap_or_else(|| Err("openpgp: no signature found".into()));
    Ok(Checked { plaintext, outcome })
}

struct Helper<'c> {
    certs: &'c [Cert],
    /// Set by `check`: the first good signature, else the first failure.
    outcome: Option<std::result::Result<SignerInfo, String>>,
}

impl VerificationHelper for Helper<'_> {
    fn get_certs(&mut self, ids: &[KeyHandle]) -> openpgp::Result<Vec<Cert>> {
        // The reference looks keys up by the issuer key ID in the signature packet; a
        // certificate matches if any of its keys (primary or subkey) has that handle.
        Ok(self
            .certs
            .iter()
            .filter(|c| {
                c.keys()
                    .any(|k| ids.iter().any(|id| id.aliases(k.key().key_handle())))
            })
            .cloned()
            .collect())
    }

    fn check(&mut self, structure: MessageStructure) -> openpgp::Result<()> {
        // Accept at this level whatever happens: the caller wants the text even when the
        // signature is bad (legacy detection, error reports), and decides on `outcome`.
        let mut first_err = None;
        for layer in structure.into_iter() {
            let MessageLayer::SignatureGroup { results } = layer else {
                continue;
            };
            for r in results {
                match r {
                    Ok(good) => {
                        let cert = good.ka.cert();
                        let fingerprint = fpr20(&cert.fingerprint());
                        let user_id = primary_user_id(cert);
                        if let Some(fingerprint) = fingerprint {
                            self.outcome = Some(Ok(SignerInfo {
                                fingerprint,
                                signing_key: good.ka.key().fingerprint().to_hex(),
                                user_id,
                            }));
                            return Ok(());
                        }
                        first_err.get_or_insert_with(|| {
                            "openpgp: signing key is not an OpenPGP v4 key".to_string()
                        });
                    }
                    Err(e) => {
                        first_err.get_or_insert_with(|| describe(&e));
                    }
                }
            }
        }
        self.outcome = Some(Err(
            first_err.unwrap_or_else(|| "openpgp: no signature found".into())
        ));
        Ok(())
    }
}

/// The certificate's primary user ID under the standard policy, else its first one.
fn primary_user_id(cert: &Cert) -> Option<String> {
    let text = |v: &[u8]| String::from_utf8_lossy(v).into_owned();
    let policy = StandardPolicy::new();
    if let Ok(vc) = cert.with_policy(&policy, None)
        && let Ok(u) = vc.primary_userid()
    {
        return Some(text(u.userid().value()));
    }
    cert.userids().next().map(|u| text(u.userid().value()))
}

/// The reference's wording for each way a signature can fail.
fn describe(e: &VerificationError) -> String {
    match e {
        VerificationError::MissingKey { .. } => {
            "openpgp: signature made by unknown entity".into()
        }
        VerificationError::BadSignature { error, .. } => {
            format!("openpgp: invalid signature: {error}")
        }
        VerificationError::BadKey { error, .. } => {
            format!("openpgp: signing key not valid: {error}")
        }
        VerificationError::UnboundKey { error, .. } => {
            format!("openpgp: signing key not bound to its certificate: {error}")
        }
        VerificationError::MalformedSignature { error, .. } => {
            format!("openpgp: malformed signature: {error}")
        }
        VerificationError::UnknownSignature { .. } => {
            "openpgp: unsupported signature packet".into()
        }
        _ => format!("openpgp: {e}"),
    }
}

/// A v4 fingerprint as 20 bytes; `None` for other key versions.
pub fn fpr20(f: &Fingerprint) -> Option<[u8; 20]> {
    match f {
        Fingerprint::V4(b) => Some(*b),
        _ => None,
    }
}

/// Makes a cleartext signature over `text`: a v4 canonical-text signature with SHA-256,
/// framed with a `Hash: SHA256` armor header. `text` is signed exactly as given (the
/// metadata JSON is one line, so canonicalisation leaves it unchanged).
pub fn sign_cleartext(text: &[u8], signer: KeyPair) -> Result<Vec<u8>> {
    let err = |e: anyhow::Error| SignError::Signing(e.to_string());
    let mut sink = Vec::new();
    {
        let message = Message::new(&mut sink);
        let template = SignatureBuilder::new(SignatureType::Text);
        let mut w = Signer::with_template(message, signer, template)
            .map_err(err)?
            .cleartext()
            .hash_algo(HashAlgorithm::SHA256)
            .map_err(err)?
            .build()
            .map_err(err)?;
        w.write_all(text)?;
        w.finalize().map_err(err)?;
    }
    Ok(sink)
}
