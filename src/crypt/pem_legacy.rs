//! OpenSSL's "traditional" password-protected PEM (`Proc-Type: 4,ENCRYPTED` with a
//! `DEK-Info: CIPHER,IV` header), as `openssl genrsa -traditional -aes256` and old
//! `ssh-keygen -m PEM -N pw` write it: the DER encrypted in CBC mode under a key
//! derived from the password by `EVP_BytesToKey` (MD5, one round, the IV's first 8
//! bytes as salt). A weak scheme, read only so that existing keys keep working.

#![forbid(unsafe_code)]

use aes::cipher::{BlockDecryptMut, KeyIvInit, block_padding::Pkcs7};
use md5::Digest as _;
use zeroize::Zeroizing;

use super::error::{CryptError, Result};
use super::pem::Block;

/// The ciphers OpenSSL offers for this format that people actually use.
#[derive(Clone, Copy)]
enum Cipher {
    Aes128,
    Aes192,
    Aes256,
    DesEde3,
    Des,
}

impl Cipher {
    fn from_name(name: &str) -> Option<Self> {
        Some(match name.to_ascii_uppercase().as_str() {
            "AES-128-CBC" => Cipher::Aes128,
            "AES-192-CBC" => Cipher::Aes192,
            "AES-256-CBC" => Cipher::Aes256,
            "DES-EDE3-CBC" => Cipher::DesEde3,
            "DES-CBC" => Cipher::Des,
            _ => return None,
        })
    }

    fn key_len(self) -> usize {
        match self {
            Cipher::Aes128 => 16,
            Cipher::Aes192 | Cipher::DesEde3 => 24,
            Cipher::Aes256 => 32,
            Cipher::Des => 8,
        }
    }

    fn iv_len(self) -> usize {
        match self {
            Cipher::Aes128 | Cipher::Aes192 | Cipher::Aes256 => 16,
            Cipher::DesEde3 | Cipher::Des => 8,
        }
    }
}

/// The decrypted DER of an encrypted traditional PEM block. Any failure after the
/// headers were understood is reported as a wrong password, as OpenSSL does: CBC
/// without a MAC cannot tell the two apart.
pub fn decrypt(block: &Block, password: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    let dek = block.header("DEK-Info").ok_or_else(|| {
        CryptError::bad_key("encrypted PEM private key without a DEK-Info header")
    })?;
    let (name, iv_hex) = dek.split_once(',').unwrap_or((dek, ""));
    let cipher = Cipher::from_name(name.trim()).ok_or_else(|| {
        CryptError::bad_key(format!(
            "the private key is encrypted with {name:?}, which veil cannot read; re-encrypt it: openssl pkey -in KEY -aes256 -out new.pem"
        ))
    })?;
    let iv = hex(iv_hex.trim())
        .filter(|iv| iv.len() == cipher.iv_len())
        .ok_or_else(|| CryptError::bad_key("encrypted PEM private key: bad IV in DEK-Info"))?;
    let key = bytes_to_key(password, &iv[..8], cipher.key_len());
    let mut buf = Zeroizing::new(block.der.to_vec());
    let len = match cipher {
        Cipher::Aes128 => cbc_decrypt::<aes::Aes128>(&key, &iv, &mut buf),
        Cipher::Aes192 => cbc_decrypt::<aes::Aes192>(&key, &iv, &mut buf),
        Cipher::Aes256 => cbc_decrypt::<aes::Aes256>(&key, &iv, &mut buf),
        Cipher::DesEde3 => cbc_decrypt::<des::TdesEde3>(&key, &iv, &mut buf),
        Cipher::Des => cbc_decrypt::<des::Des>(&key, &iv, &mut buf),
    }
    .ok_or_else(|| CryptError::bad_key("cannot decrypt the private key: wrong password?"))?;
    buf.truncate(len);
    Ok(buf)
}

/// CBC-decrypts `buf` in place; the plaintext's length, or `None` on bad padding.
fn cbc_decrypt<C>(key: &[u8], iv: &[u8], buf: &mut [u8]) -> Option<usize>
where
    C: aes::cipher::BlockDecryptMut + aes::cipher::BlockCipher + aes::cipher::KeyInit,
{
    let dec = cbc::Decryptor::<C>::new_from_slices(key, iv).ok()?;
    dec.decrypt_padded_mut::<Pkcs7>(buf).ok().map(<[u8]>::len)
}

/// OpenSSL's `EVP_BytesToKey` with MD5 and one iteration:
/// D₁ = MD5(pw ‖ salt), Dᵢ = MD5(Dᵢ₋₁ ‖ pw ‖ salt), key = D₁ ‖ D₂ ‖ … cut to `len`.
fn bytes_to_key(password: &[u8], salt: &[u8], len: usize) -> Zeroizing<Vec<u8>> {
    let mut key = Zeroizing::new(Vec::with_capacity(len + 16));
    let mut prev: Option<Zeroizing<[u8; 16]>> = None;
    while key.len() < len {
        let mut h = md5::Md5::new();
        if let Some(p) = &prev {
            h.update(&p[..]);
        }
        h.update(password);
        h.update(salt);
        let d = Zeroizing::new(<[u8; 16]>::from(h.finalize()));
        key.extend_from_slice(&d[..]);
        prev = Some(d);
    }
    key.truncate(len);
    key
}

fn hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_to_key_matches_openssl() {
        // `openssl enc -aes-256-cbc -pass pass:password -S 0102030405060708 -P -md md5`
        let key = bytes_to_key(b"password", &[1, 2, 3, 4, 5, 6, 7, 8], 32);
        let want = hex("E7B0971E52CA5CC8D0539FB3412F6316F7BA2E6EE293D9F3457B99436B51CE02");
        assert_eq!(Some(key.to_vec()), want);
        let key = bytes_to_key(b"password", &[1, 2, 3, 4, 5, 6, 7, 8], 24);
        assert_eq!(Some(key.to_vec()), want.map(|w| w[..24].to_vec()));
    }

    #[test]
    fn bad_headers_are_named() {
        let block = |dek: &str| Block {
            label: "RSA PRIVATE KEY".into(),
            headers: vec![
                ("Proc-Type".into(), "4,ENCRYPTED".into()),
                ("DEK-Info".into(), dek.into()),
            ],
            der: Zeroizing::new(vec![0u8; 32]),
        };
        let err = |dek| decrypt(&block(dek), b"pw").unwrap_err().to_string();
        assert!(err("CAMELLIA-128-CBC,00").contains("cannot read"));
        assert!(err("AES-128-CBC,0011").contains("bad IV"));
        assert!(err("AES-128-CBC,zz112233445566778899aabbccddeeff").contains("bad IV"));
        assert!(
            err("AES-128-CBC,00112233445566778899aabbccddeeff").contains("wrong password")
                || decrypt(
                    &block("AES-128-CBC,00112233445566778899aabbccddeeff"),
                    b"pw"
                )
                .is_ok()
        );
    }
}
