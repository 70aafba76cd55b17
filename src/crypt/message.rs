//! The crypto message of a PEM-mode encrypted SIF: the image's 64-byte LUKS secret,
//! RSA-OAEP encrypted (SHA-256 for both OAEP and MGF1, empty label), wrapped as a DER
//! OCTET STRING inside a PEM block of type `MESSAGE`.
//!
//! Apptainer splits the secret into chunks of k − 66 bytes (k = modulus bytes) and
//! concatenates the k-byte ciphertexts; for keys of 1040 bits or more that is one
//! block, which is also all SingularityCE writes. Both forms are read and written.

#![forbid(unsafe_code)]

use rsa::Oaep;
use rsa::traits::PublicKeyParts as _;
use zeroize::Zeroizing;

use super::error::{CryptError, Result};
use super::key::{PrivateKey, PublicKey};
use super::pem;

/// OAEP overhead with SHA-256: 2 × 32 + 2 bytes per block.
const OAEP_OVERHEAD: usize = 66;

/// Upper bound on a message a reader accepts (a 16384-bit key, a few blocks).
pub const MAX_MESSAGE: u64 = 64 << 10;

/// Encrypts `secret` for `key` and returns the object's bytes.
pub fn wrap_secret(key: &PublicKey, secret: &[u8]) -> Result<Vec<u8>> {
    let k = key.key.size();
    let step = k - OAEP_OVERHEAD;
    let mut ct = Vec::with_capacity(secret.len().div_ceil(step) * k);
    for chunk in secret.chunks(step) {
        let out = key
            .key
            .encrypt(&mut rsa::rand_core::OsRng, oaep(), chunk)
            .map_err(|e| CryptError::crypto("RSA-OAEP encryption", e))?;
        ct.extend_from_slice(&out);
    }
    Ok(pem::encode("MESSAGE", &der_octet_string(&ct)))
}

/// Decrypts the secret from a message made by [`wrap_secret`], Apptainer or
/// SingularityCE. The PEM block's type is ignored, as the peers ignore it.
pub fn unwrap_secret(key: &PrivateKey, message: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    let block =
        pem::first_block(message).ok_or_else(|| CryptError::BadMessage("no PEM block".into()))?;
    let ct = parse_octet_string(&block.der)?;
    let k = key.key.size();
    if ct.is_empty() || ct.len() % k != 0 {
        // The message was made for a key of another size: certainly not this key.
        return Err(CryptError::WrongKey);
    }
    let mut secret = Zeroizing::new(Vec::with_capacity(ct.len()));
    for block in ct.chunks(k) {
        // Blinded, so that the time taken does not follow the private numbers.
        let plain = Zeroizing::new(
            key.key
                .decrypt_blinded(&mut rsa::rand_core::OsRng, oaep(), block)
                .map_err(|_| CryptError::WrongKey)?,
        );
        secret.extend_from_slice(&plain);
    }
    Ok(secret)
}

/// OAEP as the peers use it: SHA-256 for the label hash and MGF1, no label.
fn oaep() -> Oaep {
    Oaep::new::<sha2::Sha256>()
}

fn der_octet_string(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x04];
    let n = data.len();
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let len = n.to_be_bytes();
        let skip = len.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (len.len() - skip) as u8);
        out.extend_from_slice(&len[skip..]);
    }
    out.extend_from_slice(data);
    out
}

/// The contents of a DER OCTET STRING at the start of `der` (trailing bytes are
/// ignored, as Go's `asn1.Unmarshal` returns them as "rest").
fn parse_octet_string(der: &[u8]) -> Result<&[u8]> {
    let bad = |m: &str| CryptError::BadMessage(m.to_string());
    let (&tag, rest) = der.split_first().ok_or_else(|| bad("empty"))?;
    if tag != 0x04 {
        return Err(bad("not a DER OCTET STRING"));
    }
    let (&first, rest) = rest.split_first().ok_or_else(|| bad("truncated length"))?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return Err(bad("bad length"));
        }
        let len = rest[..n].iter().fold(0usize, |a, &b| (a << 8) | b as usize);
        (len, &rest[n..])
    };
    rest.get(..len).ok_or_else(|| bad("truncated contents"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypt::key::{load_private_key, load_public_key};
    use rsa::pkcs1::{EncodeRsaPrivateKey as _, EncodeRsaPublicKey as _};

    fn pair(bits: u32) -> (PublicKey, PrivateKey) {
        let rsa = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, bits as usize).unwrap();
        let private = pem::encode("RSA PRIVATE KEY", rsa.to_pkcs1_der().unwrap().as_bytes());
        let public = rsa.to_public_key().to_pkcs1_der().unwrap();
        let public = pem::encode("RSA PUBLIC KEY", public.as_bytes());
        let no_pw = || -> Result<Zeroizing<String>> { unreachable!() };
        (
            load_public_key(&public).unwrap(),
            load_private_key(&private, &no_pw).unwrap(),
        )
    }

    #[test]
    fn round_trip_single_and_multi_block() {
        let secret: Vec<u8> = (0..64).collect();
        for bits in [1024, 2048] {
            let (public, private) = pair(bits);
            let msg = wrap_secret(&public, &secret).unwrap();
            let block = pem::first_block(&msg).unwrap();
            let ct = parse_octet_string(&block.der).unwrap();
            let k = (bits / 8) as usize;
            assert_eq!(ct.len(), if bits == 1024 { 2 * k } else { k });
            assert_eq!(&unwrap_secret(&private, &msg).unwrap()[..], &secret[..]);
        }
    }

    #[test]
    fn wrong_key_and_garbage() {
        let secret = [7u8; 64];
        let (public, _) = pair(2048);
        let (_, other) = pair(2048);
        let msg = wrap_secret(&public, &secret).unwrap();
        assert!(matches!(
            unwrap_secret(&other, &msg),
            Err(CryptError::WrongKey)
        ));
        let (_, small) = pair(1024);
        assert!(matches!(
            unwrap_secret(&small, &msg),
            Err(CryptError::WrongKey)
        ));
        assert!(matches!(
            unwrap_secret(&other, b"nothing"),
            Err(CryptError::BadMessage(_))
        ));
        let bad = pem::encode("MESSAGE", &[0x04, 0x84, 0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(
            unwrap_secret(&other, &bad),
            Err(CryptError::BadMessage(_))
        ));
    }

    #[test]
    fn der_lengths() {
        for n in [0usize, 1, 127, 128, 255, 256, 512, 70000] {
            let data = vec![0xabu8; n];
            let der = der_octet_string(&data);
            assert_eq!(parse_octet_string(&der).unwrap(), &data[..]);
        }
        // RSA-2048: 04 82 01 00 and 256 bytes, as the peers write it.
        assert_eq!(
            &der_octet_string(&[0u8; 256])[..4],
            &[0x04, 0x82, 0x01, 0x00]
        );
    }
}
