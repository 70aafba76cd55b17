//! OpenPGP cleartext signatures (RFC 4880 §7 / RFC 9580 §7), through sequoia-openpgp:
//! making one over the metadata JSON, and checking one against a set of certificates.
//!
//! This is the only module that talks to sequoia's streaming API. Everything the
//! verifier concludes is turned into owned values here, so the rest of the layer never
//! sees sequoia lifetimes.

#![forbid(unsafe_code)]

use std::io::{Read, Write};

use sequoia_openpgp as openpgp;

use openpgp::cert::Cert;
use openpgp::crypto::KeyPair;
use openpgp::packet::Signature;
use openpgp::packet::signature::SignatureBuilder;
use openpgp::parse::Parse;
use openpgp::parse::stream::{
    MessageLayer, MessageStructure, VerificationError, VerificationHelper, VerifierBuilder,
};
use openpgp::policy::{HashAlgoSecurity, Policy, StandardPolicy};
use openpgp::serialize::stream::{Message, Signer};
use openpgp::types::{HashAlgorithm, SignatureType};
use openpgp::{Fingerprint, KeyHandle};

use super::error::{Rejection, Result, SignError};

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
    pub outcome: std::result::Result<SignerInfo, Rejection>,
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
pub fn check_cleartext(data: &[u8], certs: &[Cert]) -> std::result::Result<Checked, Rejection> {
    if !is_clearsigned(data) {
        return Err(Rejection::NotClearsigned);
    }
    let policy = StandardPolicy::new();
    let helper = Helper {
        certs,
        outcome: None,
        unbound: Vec::new(),
        unparsed: false,
    };
    let mut v = VerifierBuilder::from_bytes(data)
        .and_then(|b| b.with_policy(&policy, None, helper))
        .map_err(|e| Rejection::OpenPgp(e.into()))?;
    let mut plaintext = Vec::new();
    v.read_to_end(&mut plaintext)
        .map_err(|e| Rejection::OpenPgp(e.into()))?;
    let mut helper = v.into_helper();
    if helper.unparsed {
        helper.unbound.extend(repaired_signatures(data));
    }
    let mut outcome = helper.outcome.unwrap_or(Err(Rejection::NoSignature));
    if outcome.is_err() {
        // sequoia judges the certificate as it was when the signature was made; keys
        // whose self-signatures were refreshed later (the reference test key is one)
        // have no binding then. go-crypto and gpg accept them, so check such signatures
        // against the certificate as it is now.
        for sig in &helper.unbound {
            if let Some(r) = check_with_current_cert(sig, &plaintext, certs) {
                outcome = r;
                break;
            }
        }
    }
    Ok(Checked { plaintext, outcome })
}

struct Helper<'c> {
    certs: &'c [Cert],
    /// Set by `check`: the first good signature, else the first failure.
    outcome: Option<std::result::Result<SignerInfo, Rejection>>,
    /// Signatures whose key had no binding signature at signing time.
    unbound: Vec<Signature>,
    /// Whether a signature packet could not be parsed (see [`repair_signature`]).
    unparsed: bool,
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
                        first_err.get_or_insert(Rejection::NotV4Key);
                    }
                    Err(e) => {
                        match &e {
                            VerificationError::UnboundKey { sig, .. } => {
                                self.unbound.push((*sig).clone());
                            }
                            VerificationError::UnknownSignature { .. } => {
                                self.unparsed = true;
                            }
                            _ => {}
                        }
                        if first_err.is_none() {
                            first_err = Some(describe(e));
                        }
                    }
                }
            }
        }
        self.outcome = Some(Err(first_err.unwrap_or(Rejection::NoSignature)));
        Ok(())
    }
}

/// Checks `sig` over the cleartext `plaintext` with a key of `certs` that is a valid,
/// live, unrevoked signing key *now* under the standard policy. `None` if no such key
/// matches the signature's issuer.
fn check_with_current_cert(
    sig: &Signature,
    plaintext: &[u8],
    certs: &[Cert],
) -> Option<std::result::Result<SignerInfo, Rejection>> {
    let policy = StandardPolicy::new();
    if let Err(e) = policy.signature(sig, HashAlgoSecurity::CollisionResistance) {
        return Some(Err(Rejection::NotAcceptable(e.into())));
    }
    let issuers = sig.get_issuers();
    let text = canonical_text(plaintext);
    for cert in certs {
        let Ok(vc) = cert.with_policy(&policy, None) else {
            continue;
        };
        for ka in vc.keys().alive().revoked(false).for_signing() {
            if !issuers.iter().any(|i| i.aliases(ka.key().key_handle())) {
                continue;
            }
            return Some(match sig.verify_message(ka.key(), &text) {
                Ok(()) => match fpr20(&cert.fingerprint()) {
                    Some(fingerprint) => Ok(SignerInfo {
                        fingerprint,
                        signing_key: ka.key().fingerprint().to_hex(),
                        user_id: primary_user_id(cert),
                    }),
                    None => Err(Rejection::NotV4Key),
                },
                Err(e) => Err(Rejection::BadSignature(e.into())),
            });
        }
    }
    None
}

/// The signature packets of a cleartext message's armored block, repaired where
/// [`repair_signature`] can.
fn repaired_signatures(data: &[u8]) -> Vec<Signature> {
    use openpgp::armor::{Kind, Reader, ReaderMode};
    const BEGIN: &[u8] = b"-----BEGIN PGP SIGNATURE-----";
    let Some(start) = data.windows(BEGIN.len()).position(|w| w == BEGIN) else {
        return Vec::new();
    };
    let mut bin = Vec::new();
    let mut r = Reader::from_bytes(&data[start..], ReaderMode::Tolerant(Some(Kind::Signature)));
    if r.read_to_end(&mut bin).is_err() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut rest = &bin[..];
    while let Some((tag, body, next)) = split_packet(rest) {
        if tag == 2
            && let Some(sig) = repair_signature(body)
        {
            out.push(sig);
        }
        rest = next;
    }
    out
}

/// Splits the first OpenPGP packet off `b`: (tag, body, rest). Partial lengths are not
/// used by signature packets and end the walk.
fn split_packet(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&h, rest) = b.split_first()?;
    if h & 0x80 == 0 {
        return None;
    }
    let (tag, len, rest) = if h & 0x40 != 0 {
        let (&l0, r) = rest.split_first()?;
        match l0 {
            0..=191 => (h & 0x3F, l0 as usize, r),
            192..=223 => {
                let (&l1, r) = r.split_first()?;
                (h & 0x3F, ((l0 as usize - 192) << 8) + l1 as usize + 192, r)
            }
            255 => {
                let n = u32::from_be_bytes(r.get(..4)?.try_into().ok()?) as usize;
                (h & 0x3F, n, &r[4..])
            }
            _ => return None,
        }
    } else {
        let tag = (h >> 2) & 0x0F;
        match h & 3 {
            0 => (tag, *rest.first()? as usize, &rest[1..]),
            1 => (
                tag,
                u16::from_be_bytes(rest.get(..2)?.try_into().ok()?) as usize,
                &rest[2..],
            ),
            2 => (
                tag,
                u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize,
                &rest[4..],
            ),
            _ => (tag, rest.len(), rest),
        }
    };
    let body = rest.get(..len)?;
    Some((tag, body, &rest[len..]))
}

/// Re-encodes a v4 signature packet body whose MPIs carry a wrong bit count (older
/// go-crypto wrote RSA signatures with a leading zero bit counted, e.g. "2048 bits" for
/// a 2047-bit value, as in the legacy reference images). gpg and go-crypto accept
/// those; sequoia's parser refuses them. Only the MPI headers change: the signed data
/// and the signature value are the same, so the cryptographic check is unaffected.
fn repair_signature(body: &[u8]) -> Option<Signature> {
    use openpgp::Packet;
    let (&version, rest) = body.split_first()?;
    if version != 4 || rest.len() < 5 {
        return None;
    }
    let hashed = u16::from_be_bytes([body[4], body[5]]) as usize;
    let at = 6usize.checked_add(hashed)?;
    let unhashed = u16::from_be_bytes([*body.get(at)?, *body.get(at + 1)?]) as usize;
    let mpis_at = at.checked_add(2)?.checked_add(unhashed)?.checked_add(2)?;
    let mut fixed = body.get(..mpis_at)?.to_vec();
    let mut rest = body.get(mpis_at..)?;
    while !rest.is_empty() {
        let bits = u16::from_be_bytes([*rest.first()?, *rest.get(1)?]) as usize;
        let len = bits.div_ceil(8);
        let value = rest.get(2..2 + len)?;
        rest = &rest[2 + len..];
        let value = &value[value.iter().position(|&b| b != 0).unwrap_or(value.len())..];
        let real_bits = match value.first() {
            Some(&b) => (value.len() - 1) * 8 + (8 - b.leading_zeros() as usize),
            None => 0,
        };
        fixed.extend_from_slice(&(real_bits as u16).to_be_bytes());
        fixed.extend_from_slice(value);
    }
    // A new-format packet header (tag 2) around the repaired body.
    let mut packet = vec![0xC2];
    let n = fixed.len();
    if n < 192 {
        packet.push(n as u8);
    } else if n < 8384 {
        packet.push((((n - 192) >> 8) + 192) as u8);
        packet.push(((n - 192) & 0xFF) as u8);
    } else {
        packet.push(0xFF);
        packet.extend_from_slice(&(n as u32).to_be_bytes());
    }
    packet.extend_from_slice(&fixed);
    match Packet::from_bytes(&packet).ok()? {
        Packet::Signature(sig) => Some(sig),
        _ => None,
    }
}

/// The text a cleartext signature's hash covers: lines joined with CRLF, trailing
/// spaces and tabs removed, no line break after the last line (RFC 4880 §7.1).
pub fn canonical_text(plaintext: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(plaintext.len() + 16);
    for (i, line) in plaintext.split(|&c| c == b'\n').enumerate() {
        if i > 0 {
            out.extend_from_slice(b"\r\n");
        }
        let mut end = line.len();
        while end > 0 && matches!(line[end - 1], b' ' | b'\t' | b'\r') {
            end -= 1;
        }
        out.extend_from_slice(&line[..end]);
    }
    out
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

/// The reference's reason for each way a signature can fail.
fn describe(e: VerificationError<'_>) -> Rejection {
    match e {
        VerificationError::MissingKey { .. } => Rejection::UnknownEntity,
        VerificationError::BadSignature { error, .. } => Rejection::BadSignature(error.into()),
        VerificationError::BadKey { error, .. } => Rejection::BadKey(error.into()),
        VerificationError::UnboundKey { error, .. } => Rejection::UnboundKey(error.into()),
        VerificationError::MalformedSignature { error, .. } => {
            Rejection::MalformedSignature(error.into())
        }
        VerificationError::UnknownSignature { .. } => Rejection::UnsupportedPacket,
        e => Rejection::OtherOpenPgp(e.to_string()),
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
    let err = |e: anyhow::Error| SignError::Signing(e.into());
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
        w.write_all(text).map_err(|e| err(e.into()))?;
        w.finalize().map_err(err)?;
    }
    Ok(sink)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_text_follows_rfc4880() {
        assert_eq!(canonical_text(b"{\"a\":1}"), b"{\"a\":1}");
        assert_eq!(canonical_text(b"SIFHASH:\nabc\n"), b"SIFHASH:\r\nabc\r\n");
        assert_eq!(canonical_text(b"a \t\r\nb  "), b"a\r\nb");
    }

    #[test]
    fn packet_headers() {
        // New format, one-octet length.
        assert_eq!(
            split_packet(&[0xC2, 2, 9, 9, 7]),
            Some((2, &[9u8, 9][..], &[7u8][..]))
        );
        // New format, two-octet length (192 + 1).
        let mut p = vec![0xC2, 192, 1];
        p.extend(std::iter::repeat_n(5u8, 193));
        let (tag, body, rest) = split_packet(&p).unwrap();
        assert_eq!((tag, body.len(), rest.len()), (2, 193, 0));
        // Old format, one-octet length: tag 2.
        assert_eq!(split_packet(&[0x88, 1, 4]), Some((2, &[4u8][..], &[][..])));
        // Truncated, partial lengths, not a packet.
        assert_eq!(split_packet(&[0xC2, 5, 1]), None);
        assert_eq!(split_packet(&[0xC2, 224]), None);
        assert_eq!(split_packet(&[0x02]), None);
        assert_eq!(split_packet(&[]), None);
    }

    #[test]
    fn not_clearsigned() {
        assert!(!is_clearsigned(b"{\"payloadType\":\"x\"}"));
        assert!(is_clearsigned(b"\n-----BEGIN PGP SIGNED MESSAGE-----\n"));
        assert!(check_cleartext(b"garbage", &[]).is_err());
        // Framed but broken: an error, never a panic.
        assert!(
            check_cleartext(
                b"-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\nx\n",
                &[]
            )
            .is_err()
                || check_cleartext(
                    b"-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\nx\n",
                    &[]
                )
                .unwrap()
                .outcome
                .is_err()
        );
        assert!(repair_signature(&[]).is_none());
        assert!(repair_signature(&[4, 1, 1, 8, 0xFF, 0xFF]).is_none());
    }
}
