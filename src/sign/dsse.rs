//! DSSE envelopes (spec/sif.md §9.2): the signature format SingularityCE writes for
//! `sign --key key.pem`. Verification only: each envelope signature is checked over the
//! DSSE pre-authentication encoding with PEM public keys (Ed25519, RSA PKCS#1 v1.5,
//! ECDSA), through OpenSSL, which sequoia already links.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use openssl::hash::MessageDigest;
use openssl::pkey::{Id, PKey, Public};
use openssl::sign::Verifier;
use sha2::Digest as _;

use super::error::{Result, SignError};
use super::metadata::DigestAlg;

/// The payload type that marks SIF image metadata.
pub const PAYLOAD_TYPE: &str = "application/vnd.sylabs.sif-metadata+json";

/// A public key that can check DSSE signatures.
#[derive(Clone)]
pub struct DsseKey {
    key: PKey<Public>,
    /// OpenSSH-style `SHA256:<base64>` fingerprint, as the envelope's `keyid`.
    pub keyid: String,
}

impl std::fmt::Debug for DsseKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DsseKey({})", self.keyid)
    }
}

/// True if `bytes` look like a PEM public key (rather than an OpenPGP key).
pub fn is_pem_public_key(bytes: &[u8]) -> bool {
    bytes
        .windows(26)
        .any(|w| w == b"-----BEGIN PUBLIC KEY-----")
}

impl DsseKey {
    /// Parses a PKIX (`BEGIN PUBLIC KEY`) PEM key.
    pub fn from_pem(pem: &[u8]) -> Result<Self> {
        let key = PKey::public_key_from_pem(pem)
            .map_err(|e| SignError::Key(format!("not a PEM public key: {e}")))?;
        let keyid = ssh_keyid(&key)?;
        Ok(DsseKey { key, keyid })
    }

    fn verify(&self, msg: &[u8], sig: &[u8], hash: DigestAlg) -> bool {
        let digest = match hash {
            DigestAlg::Sha384 => MessageDigest::sha384(),
            DigestAlg::Sha512 => MessageDigest::sha512(),
            _ => MessageDigest::sha256(),
        };
        let v = match self.key.id() {
            Id::ED25519 => Verifier::new_without_digest(&self.key),
            _ => Verifier::new(digest, &self.key),
        };
        v.and_then(|mut v| v.verify_oneshot(sig, msg))
            .unwrap_or(false)
    }
}

/// `"SHA256:" + base64-nopad(SHA-256(ssh wire-format public key))`.
fn ssh_keyid(key: &PKey<Public>) -> Result<String> {
    let err = |e: openssl::error::ErrorStack| SignError::Key(format!("reading the key: {e}"));
    let mut wire = Vec::new();
    let put = |w: &mut Vec<u8>, b: &[u8]| {
        w.extend_from_slice(&(b.len() as u32).to_be_bytes());
        w.extend_from_slice(b);
    };
    // An SSH mpint: big-endian, with a zero byte in front when the top bit is set.
    let mpint = |b: Vec<u8>| {
        if b.first().is_some_and(|&x| x & 0x80 != 0) {
            [vec![0], b].concat()
        } else {
            b
        }
    };
    match key.id() {
        Id::ED25519 => {
            put(&mut wire, b"ssh-ed25519");
            put(&mut wire, &key.raw_public_key().map_err(err)?);
        }
        Id::RSA => {
            let rsa = key.rsa().map_err(err)?;
            put(&mut wire, b"ssh-rsa");
            put(&mut wire, &mpint(rsa.e().to_vec()));
            put(&mut wire, &mpint(rsa.n().to_vec()));
        }
        Id::EC => {
            let ec = key.ec_key().map_err(err)?;
            let mut ctx = openssl::bn::BigNumContext::new().map_err(err)?;
            let point = ec
                .public_key()
                .to_bytes(
                    ec.group(),
                    openssl::ec::PointConversionForm::UNCOMPRESSED,
                    &mut ctx,
                )
                .map_err(err)?;
            let curve = match ec.group().curve_name() {
                Some(openssl::nid::Nid::X9_62_PRIME256V1) => "nistp256",
                Some(openssl::nid::Nid::SECP384R1) => "nistp384",
                Some(openssl::nid::Nid::SECP521R1) => "nistp521",
                _ => return Err(SignError::Key("unsupported elliptic curve".into())),
            };
            put(&mut wire, format!("ecdsa-sha2-{curve}").as_bytes());
            put(&mut wire, curve.as_bytes());
            put(&mut wire, &point);
        }
        _ => return Err(SignError::Key("unsupported public key type".into())),
    }
    Ok(format!(
        "SHA256:{}",
        STANDARD_NO_PAD.encode(sha2::Sha256::digest(&wire))
    ))
}

#[derive(serde::Deserialize)]
struct Envelope {
    #[serde(rename = "payloadType")]
    payload_type: String,
    payload: String,
    #[serde(default)]
    signatures: Vec<EnvelopeSig>,
}

#[derive(serde::Deserialize)]
struct EnvelopeSig {
    #[serde(default)]
    keyid: String,
    sig: String,
}

/// True if `data` is a DSSE envelope carrying SIF metadata.
pub fn is_envelope(data: &[u8]) -> bool {
    serde_json::from_slice::<Envelope>(data)
        .map(|e| e.payload_type == PAYLOAD_TYPE)
        .unwrap_or(false)
}

/// `"DSSEv1" SP len(type) SP type SP len(payload) SP payload`.
fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut m = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        payload.len()
    )
    .into_bytes();
    m.extend_from_slice(payload);
    m
}

/// Checks the envelope with `keys`: at least one signature must verify with one key (a
/// signature naming a different keyid is not tried with that key, as the reference
/// does). Returns the payload and the keyid that verified it.
pub fn verify_envelope(
    data: &[u8],
    keys: &[DsseKey],
    hash: DigestAlg,
) -> std::result::Result<(Vec<u8>, String), String> {
    let env: Envelope =
        serde_json::from_slice(data).map_err(|e| format!("dsse: malformed envelope: {e}"))?;
    if env.payload_type != PAYLOAD_TYPE {
        return Err(format!(
            "dsse: unexpected payload type {:?}",
            env.payload_type
        ));
    }
    let payload = STANDARD
        .decode(&env.payload)
        .map_err(|e| format!("dsse: malformed payload: {e}"))?;
    let msg = pae(&env.payload_type, &payload);
    for s in &env.signatures {
        let Ok(sig) = STANDARD.decode(&s.sig) else {
            continue;
        };
        for k in keys {
            if !s.keyid.is_empty() && s.keyid != k.keyid {
                continue;
            }
            if k.verify(&msg, &sig, hash) {
                return Ok((payload, k.keyid.clone()));
            }
        }
    }
    Err("dsse: no signature verified with the given keys".into())
}
