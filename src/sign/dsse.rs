//! DSSE envelopes (spec/sif.md §9.2): the signature format SingularityCE writes for
//! `sign --key key.pem`. Verification only: each envelope signature is checked over the
//! DSSE pre-authentication encoding with PEM public keys (Ed25519, RSA PKCS#1 v1.5,
//! ECDSA P-256/P-384/P-521), with the RustCrypto crates that sequoia's pure-Rust
//! backend already brings in.

#![forbid(unsafe_code)]

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use rsa::pkcs8::der::Decode as _;
use rsa::traits::PublicKeyParts as _;
use sha2::Digest as _;

use super::error::{Rejection, Result, SignError};
use super::metadata::DigestAlg;

/// The payload type that marks SIF image metadata.
pub const PAYLOAD_TYPE: &str = "application/vnd.sylabs.sif-metadata+json";

/// Algorithm identifiers of the SPKI keys accepted (RFC 8410, RFC 3279, RFC 5480).
mod oid {
    use rsa::pkcs8::ObjectIdentifier as Oid;
    pub const ED25519: Oid = Oid::new_unwrap("1.3.101.112");
    pub const RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.1");
    pub const EC: Oid = Oid::new_unwrap("1.2.840.10045.2.1");
    pub const P256: Oid = Oid::new_unwrap("1.2.840.10045.3.1.7");
    pub const P384: Oid = Oid::new_unwrap("1.3.132.0.34");
    pub const P521: Oid = Oid::new_unwrap("1.3.132.0.35");
}

/// The largest RSA modulus accepted (OpenSSL's limit).
const MAX_RSA_BITS: usize = 16384;

#[derive(Clone)]
enum Key {
    Ed25519(ed25519_dalek::VerifyingKey),
    Rsa(rsa::RsaPublicKey),
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
    P521(p521::ecdsa::VerifyingKey),
}

/// A public key that can check DSSE signatures.
#[derive(Clone)]
pub struct DsseKey {
    key: Key,
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
        // The first `PUBLIC KEY` block, whatever comes before it.
        const BEGIN: &[u8] = b"-----BEGIN PUBLIC KEY-----";
        let block = pem
            .windows(BEGIN.len())
            .position(|w| w == BEGIN)
            .and_then(|at| crate::crypt::pem::first_block(&pem[at..]))
            .ok_or(SignError::NoPemBlock)?;
        let spki = rsa::pkcs8::SubjectPublicKeyInfoRef::from_der(&block.der)
            .map_err(SignError::NotPemKey)?;
        let bits = spki
            .subject_public_key
            .as_bytes()
            .ok_or(SignError::PemKeyBits)?;
        let key = match spki.algorithm.oid {
            oid::ED25519 => {
                let raw: &[u8; 32] = bits.try_into().map_err(|_| SignError::Ed25519KeyLength)?;
                Key::Ed25519(
                    ed25519_dalek::VerifyingKey::from_bytes(raw)
                        .map_err(|e| SignError::BadPemKey(e.into()))?,
                )
            }
            oid::RSA => {
                let k = rsa::pkcs1::RsaPublicKey::from_der(bits)
                    .map_err(|e| SignError::BadPemKey(e.into()))?;
                Key::Rsa(
                    rsa::RsaPublicKey::new_with_max_size(
                        rsa::BigUint::from_bytes_be(k.modulus.as_bytes()),
                        rsa::BigUint::from_bytes_be(k.public_exponent.as_bytes()),
                        MAX_RSA_BITS,
                    )
                    .map_err(|e| SignError::BadPemKey(e.into()))?,
                )
            }
            oid::EC => {
                let curve = spki
                    .algorithm
                    .parameters_oid()
                    .map_err(|_| SignError::UnsupportedCurve)?;
                match curve {
                    oid::P256 => Key::P256(
                        p256::ecdsa::VerifyingKey::from_sec1_bytes(bits)
                            .map_err(|e| SignError::BadPemKey(e.into()))?,
                    ),
                    oid::P384 => Key::P384(
                        p384::ecdsa::VerifyingKey::from_sec1_bytes(bits)
                            .map_err(|e| SignError::BadPemKey(e.into()))?,
                    ),
                    oid::P521 => Key::P521(
                        p521::ecdsa::VerifyingKey::from_sec1_bytes(bits)
                            .map_err(|e| SignError::BadPemKey(e.into()))?,
                    ),
                    _ => return Err(SignError::UnsupportedCurve),
                }
            }
            _ => return Err(SignError::UnsupportedKeyType),
        };
        let keyid = ssh_keyid(&key);
        Ok(DsseKey { key, keyid })
    }

    fn verify(&self, msg: &[u8], sig: &[u8], hash: DigestAlg) -> bool {
        use ecdsa::signature::hazmat::PrehashVerifier as _;
        use ed25519_dalek::Verifier as _;
        // The digest the envelope's signer used: the metadata's hash for SHA-384 and
        // SHA-512, SHA-256 otherwise (as SingularityCE signs).
        let digest = || match hash {
            DigestAlg::Sha384 => sha2::Sha384::digest(msg).to_vec(),
            DigestAlg::Sha512 => sha2::Sha512::digest(msg).to_vec(),
            _ => sha2::Sha256::digest(msg).to_vec(),
        };
        match &self.key {
            Key::Ed25519(k) => {
                ed25519_dalek::Signature::from_slice(sig).is_ok_and(|s| k.verify(msg, &s).is_ok())
            }
            Key::Rsa(k) => {
                let scheme = match hash {
                    DigestAlg::Sha384 => rsa::Pkcs1v15Sign::new::<sha2::Sha384>(),
                    DigestAlg::Sha512 => rsa::Pkcs1v15Sign::new::<sha2::Sha512>(),
                    _ => rsa::Pkcs1v15Sign::new::<sha2::Sha256>(),
                };
                k.verify(scheme, &digest(), sig).is_ok()
            }
            Key::P256(k) => p256::ecdsa::Signature::from_der(sig)
                .is_ok_and(|s| k.verify_prehash(&widen(digest(), 32), &s).is_ok()),
            Key::P384(k) => p384::ecdsa::Signature::from_der(sig)
                .is_ok_and(|s| k.verify_prehash(&widen(digest(), 48), &s).is_ok()),
            Key::P521(k) => p521::ecdsa::Signature::from_der(sig)
                .is_ok_and(|s| k.verify_prehash(&widen(digest(), 66), &s).is_ok()),
        }
    }
}

/// A digest shorter than the curve's field, as the integer it stands for: zeros in
/// front. ECDSA takes a short hash whole, so SHA-256 with a P-521 key is valid (and
/// OpenSSL, Go and sigstore accept it), but the `ecdsa` crate refuses a prehash under
/// half the field's size.
fn widen(digest: Vec<u8>, field: usize) -> Vec<u8> {
    if digest.len() >= field {
        return digest;
    }
    let mut v = vec![0u8; field - digest.len()];
    v.extend_from_slice(&digest);
    v
}

/// `"SHA256:" + base64-nopad(SHA-256(ssh wire-format public key))`.
fn ssh_keyid(key: &Key) -> String {
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
    // ECDSA keys are named by their uncompressed point, whatever form the file held.
    let (curve, point) = match key {
        Key::Ed25519(k) => {
            put(&mut wire, b"ssh-ed25519");
            put(&mut wire, k.as_bytes());
            ("", Vec::new())
        }
        Key::Rsa(k) => {
            put(&mut wire, b"ssh-rsa");
            put(&mut wire, &mpint(k.e().to_bytes_be()));
            put(&mut wire, &mpint(k.n().to_bytes_be()));
            ("", Vec::new())
        }
        Key::P256(k) => ("nistp256", k.to_encoded_point(false).as_bytes().to_vec()),
        Key::P384(k) => ("nistp384", k.to_encoded_point(false).as_bytes().to_vec()),
        Key::P521(k) => ("nistp521", k.to_encoded_point(false).as_bytes().to_vec()),
    };
    if !curve.is_empty() {
        put(&mut wire, format!("ecdsa-sha2-{curve}").as_bytes());
        put(&mut wire, curve.as_bytes());
        put(&mut wire, &point);
    }
    format!(
        "SHA256:{}",
        STANDARD_NO_PAD.encode(sha2::Sha256::digest(&wire))
    )
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
) -> std::result::Result<(Vec<u8>, String), Rejection> {
    let env: Envelope = serde_json::from_slice(data).map_err(Rejection::DsseEnvelope)?;
    if env.payload_type != PAYLOAD_TYPE {
        return Err(Rejection::DssePayloadType(env.payload_type));
    }
    let payload = STANDARD
        .decode(&env.payload)
        .map_err(Rejection::DssePayload)?;
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
    Err(Rejection::DsseNotVerified)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ecdsa::signature::hazmat::PrehashSigner as _;

    fn pem_of(der: &[u8]) -> Vec<u8> {
        crate::crypt::pem::encode("PUBLIC KEY", der)
    }

    fn envelope(sig: &[u8], keyid: &str) -> Vec<u8> {
        let payload = b"{}";
        serde_json::json!({
            "payloadType": PAYLOAD_TYPE,
            "payload": STANDARD.encode(payload),
            "signatures": [{"keyid": keyid, "sig": STANDARD.encode(sig)}],
        })
        .to_string()
        .into_bytes()
    }

    /// Signs the PAE of `{}` with `sign` and checks that `key` verifies it, that
    /// another digest does not, and that a flipped bit does not.
    fn check(key: &DsseKey, hash: DigestAlg, sign: impl Fn(&[u8]) -> Vec<u8>) {
        let sig = sign(&pae(PAYLOAD_TYPE, b"{}"));
        let keys = std::slice::from_ref(key);
        let (payload, id) = verify_envelope(&envelope(&sig, &key.keyid), keys, hash).unwrap();
        assert_eq!(
            (payload.as_slice(), id.as_str()),
            (&b"{}"[..], key.keyid.as_str())
        );
        // Unnamed signatures are tried with every key; a wrong name is skipped.
        assert!(verify_envelope(&envelope(&sig, ""), keys, hash).is_ok());
        assert!(verify_envelope(&envelope(&sig, "SHA256:x"), keys, hash).is_err());
        let mut bad = sig.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(verify_envelope(&envelope(&bad, ""), keys, hash).is_err());
    }

    fn sha(hash: DigestAlg, msg: &[u8]) -> Vec<u8> {
        match hash {
            DigestAlg::Sha384 => sha2::Sha384::digest(msg).to_vec(),
            DigestAlg::Sha512 => sha2::Sha512::digest(msg).to_vec(),
            _ => sha2::Sha256::digest(msg).to_vec(),
        }
    }

    /// DER: a tag and its contents.
    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let n = content.len();
        let mut v = vec![tag];
        match n {
            0..0x80 => v.push(n as u8),
            0x80..0x100 => v.extend_from_slice(&[0x81, n as u8]),
            _ => v.extend_from_slice(&[0x82, (n >> 8) as u8, n as u8]),
        }
        v.extend_from_slice(content);
        v
    }

    /// An SPKI for an EC point on the curve named by `curve` (the OID's DER body).
    fn ec_key(curve: &[u8], point: &[u8]) -> DsseKey {
        let alg = [
            tlv(0x06, &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01]),
            tlv(0x06, curve),
        ]
        .concat();
        let bits = [&[0u8][..], point].concat();
        let spki = tlv(0x30, &[tlv(0x30, &alg), tlv(0x03, &bits)].concat());
        DsseKey::from_pem(&pem_of(&spki)).unwrap()
    }

    #[test]
    fn ecdsa_keys_verify_with_every_digest() {
        let p256 = p256::ecdsa::SigningKey::from_slice(&[7u8; 32]).unwrap();
        let p384 = p384::ecdsa::SigningKey::from_slice(&[7u8; 48]).unwrap();
        // P-521's order is just over 2^520: a 66-byte scalar must start below 0x02.
        let p521 = p521::ecdsa::SigningKey::from_slice(&[&[0u8][..], &[7u8; 65]].concat()).unwrap();
        let k256 = ec_key(
            &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07],
            p256.verifying_key().to_encoded_point(false).as_bytes(),
        );
        let k384 = ec_key(
            &[0x2b, 0x81, 0x04, 0x00, 0x22],
            p384.verifying_key().to_encoded_point(false).as_bytes(),
        );
        let k521 = ec_key(
            &[0x2b, 0x81, 0x04, 0x00, 0x23],
            p521::ecdsa::VerifyingKey::from(&p521)
                .to_encoded_point(false)
                .as_bytes(),
        );
        // A compressed point is the same key, with the same keyid.
        let compressed = ec_key(
            &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07],
            p256.verifying_key().to_encoded_point(true).as_bytes(),
        );
        assert_eq!(compressed.keyid, k256.keyid);
        for hash in [DigestAlg::Sha256, DigestAlg::Sha384, DigestAlg::Sha512] {
            check(&k256, hash, |m| {
                let s: p256::ecdsa::Signature =
                    p256.sign_prehash(&widen(sha(hash, m), 32)).unwrap();
                s.to_der().as_bytes().to_vec()
            });
            check(&k384, hash, |m| {
                let s: p384::ecdsa::Signature =
                    p384.sign_prehash(&widen(sha(hash, m), 48)).unwrap();
                s.to_der().as_bytes().to_vec()
            });
            check(&k521, hash, |m| {
                let s: p521::ecdsa::Signature =
                    p521.sign_prehash(&widen(sha(hash, m), 66)).unwrap();
                s.to_der().as_bytes().to_vec()
            });
        }
    }

    #[test]
    fn rsa_and_ed25519_keys_verify() {
        use rsa::pkcs8::EncodePublicKey as _;
        let rsa = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 1024).unwrap();
        let key = DsseKey::from_pem(&pem_of(
            rsa.to_public_key().to_public_key_der().unwrap().as_bytes(),
        ))
        .unwrap();
        for hash in [DigestAlg::Sha256, DigestAlg::Sha384, DigestAlg::Sha512] {
            check(&key, hash, |m| {
                let scheme = match hash {
                    DigestAlg::Sha384 => rsa::Pkcs1v15Sign::new::<sha2::Sha384>(),
                    DigestAlg::Sha512 => rsa::Pkcs1v15Sign::new::<sha2::Sha512>(),
                    _ => rsa::Pkcs1v15Sign::new::<sha2::Sha256>(),
                };
                rsa.sign(scheme, &sha(hash, m)).unwrap()
            });
        }
        let ed = ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]);
        let mut der = vec![
            0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
        ];
        der.extend_from_slice(ed.verifying_key().as_bytes());
        let key = DsseKey::from_pem(&pem_of(&der)).unwrap();
        check(&key, DigestAlg::Sha256, |m| {
            use ed25519_dalek::Signer as _;
            ed.sign(m).to_bytes().to_vec()
        });
    }

    #[test]
    fn other_keys_are_refused() {
        // X25519 (1.3.101.110): a key type, not a signing key.
        let mut der = vec![
            0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x03, 0x21, 0x00,
        ];
        der.extend_from_slice(&[1u8; 32]);
        let err = DsseKey::from_pem(&pem_of(&der)).unwrap_err().to_string();
        assert!(err.contains("unsupported public key type"), "{err}");
        // secp256k1 (1.3.132.0.10).
        let mut der = vec![0x30, 0x36, 0x30, 0x10, 0x06, 0x07];
        der.extend_from_slice(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01]);
        der.extend_from_slice(&[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x0a]);
        der.extend_from_slice(&[0x03, 0x22, 0x00, 0x02]);
        der.extend_from_slice(&[1u8; 32]);
        let err = DsseKey::from_pem(&pem_of(&der)).unwrap_err().to_string();
        assert!(err.contains("unsupported elliptic curve"), "{err}");
        assert!(DsseKey::from_pem(b"-----BEGIN PUBLIC KEY-----\nAAAA\n").is_err());
    }

    /// Keys and signatures made by the openssl command verify, and each keyid is the
    /// fingerprint ssh-keygen gives the same key.
    #[test]
    fn openssl_signatures_verify() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let run = |prog: &str, args: &str| {
            std::process::Command::new(prog)
                .args(args.split_whitespace())
                .current_dir(d)
                .stderr(std::process::Stdio::null())
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| o.stdout)
        };
        if run("openssl", "version").is_none() {
            eprintln!("SKIP: the openssl command is not installed");
            return;
        }
        let msg = pae(PAYLOAD_TYPE, b"{}");
        std::fs::write(d.join("msg"), &msg).unwrap();
        let kinds = [
            (
                "p256",
                "-algorithm EC -pkeyopt ec_paramgen_curve:P-256",
                true,
            ),
            (
                "p384",
                "-algorithm EC -pkeyopt ec_paramgen_curve:P-384",
                true,
            ),
            (
                "p521",
                "-algorithm EC -pkeyopt ec_paramgen_curve:P-521",
                true,
            ),
            ("rsa", "-algorithm RSA -pkeyopt rsa_keygen_bits:2048", true),
            ("ed25519", "-algorithm ED25519", false),
        ];
        for (name, gen_args, digest) in kinds {
            run("openssl", &format!("genpkey {gen_args} -out {name}.key")).unwrap();
            run(
                "openssl",
                &format!("pkey -in {name}.key -pubout -out {name}.pub"),
            )
            .unwrap();
            let key =
                DsseKey::from_pem(&std::fs::read(d.join(format!("{name}.pub"))).unwrap()).unwrap();
            for (hash, alg) in [
                (DigestAlg::Sha256, "-sha256"),
                (DigestAlg::Sha384, "-sha384"),
                (DigestAlg::Sha512, "-sha512"),
            ] {
                if !digest && hash != DigestAlg::Sha256 {
                    continue;
                }
                let sign = if digest {
                    format!("dgst {alg} -sign {name}.key -out sig msg")
                } else {
                    format!("pkeyutl -sign -rawin -inkey {name}.key -in msg -out sig")
                };
                run("openssl", &sign).unwrap();
                let sig = std::fs::read(d.join("sig")).unwrap();
                let env = envelope(&sig, &key.keyid);
                let r = verify_envelope(&env, std::slice::from_ref(&key), hash);
                assert!(r.is_ok(), "{name} {alg}: {r:?}");
            }
            if name.starts_with('p') {
                run(
                    "openssl",
                    &format!("pkey -in {name}.key -pubout -ec_conv_form compressed -out c.pub"),
                )
                .unwrap();
                let c = DsseKey::from_pem(&std::fs::read(d.join("c.pub")).unwrap()).unwrap();
                assert_eq!(c.keyid, key.keyid, "{name}: compressed point");
            }
            // ssh-keygen reads PKCS#8 RSA and ECDSA public keys (not Ed25519 ones).
            if digest && let Some(line) = run("ssh-keygen", &format!("-i -m PKCS8 -f {name}.pub")) {
                std::fs::write(d.join("ssh.pub"), line).unwrap();
                let fp = run("ssh-keygen", "-l -E sha256 -f ssh.pub").unwrap();
                let fp = String::from_utf8(fp).unwrap();
                assert_eq!(
                    fp.split_whitespace().nth(1),
                    Some(key.keyid.as_str()),
                    "{name}"
                );
            }
        }
    }
}
