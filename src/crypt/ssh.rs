//! OpenSSH's own RSA key encodings: the `ssh-rsa AAAA… comment` public-key line
//! (RFC 4253 wire format) and the `openssh-key-v1` private-key container that
//! `ssh-keygen` writes by default, unprotected or protected by a passphrase (the
//! bcrypt KDF and AES in CTR or CBC mode, as OpenSSH's PROTOCOL.key describes).
//! `key` turns the numbers into RSA keys.

#![forbid(unsafe_code)]

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

use super::error::{CryptError, Result};

/// Big-endian magnitudes of an RSA key's numbers. Private parts are wiped on drop.
pub struct RsaNumbers {
    pub n: Vec<u8>,
    pub e: Vec<u8>,
    pub private: Option<PrivateNumbers>,
}

pub struct PrivateNumbers {
    pub d: Zeroizing<Vec<u8>>,
    pub p: Zeroizing<Vec<u8>>,
    pub q: Zeroizing<Vec<u8>>,
}

const MAGIC: &[u8] = b"openssh-key-v1\0";

/// A cursor over SSH wire-format data.
struct Wire<'a>(&'a [u8]);

impl<'a> Wire<'a> {
    fn u32(&mut self) -> Result<u32> {
        if self.0.len() < 4 {
            return Err(truncated());
        }
        let (h, t) = self.0.split_at(4);
        self.0 = t;
        Ok(u32::from_be_bytes([h[0], h[1], h[2], h[3]]))
    }

    fn string(&mut self) -> Result<&'a [u8]> {
        let n = self.u32()? as usize;
        if self.0.len() < n {
            return Err(truncated());
        }
        let (h, t) = self.0.split_at(n);
        self.0 = t;
        Ok(h)
    }

    /// An mpint as a positive magnitude (leading zero bytes dropped).
    fn mpint(&mut self) -> Result<&'a [u8]> {
        let s = self.string()?;
        if s.first().is_some_and(|b| b & 0x80 != 0) {
            return Err(CryptError::bad_key("OpenSSH key holds a negative number"));
        }
        let lead = s.iter().take_while(|&&b| b == 0).count();
        Ok(&s[lead..])
    }
}

fn truncated() -> CryptError {
    CryptError::bad_key("OpenSSH key data is truncated")
}

/// True when `text` looks like an `ssh-rsa` public-key line.
pub fn is_public_line(text: &[u8]) -> bool {
    text.trim_ascii_start().starts_with(b"ssh-")
}

/// Parses `ssh-rsa <base64> [comment]`.
pub fn parse_public_line(text: &[u8]) -> Result<RsaNumbers> {
    let line = std::str::from_utf8(text)
        .map_err(|_| CryptError::bad_key("OpenSSH public key is not text"))?;
    let mut parts = line.split_whitespace();
    let kind = parts.next().unwrap_or_default();
    if kind != "ssh-rsa" {
        return Err(CryptError::bad_key(format!(
            "OpenSSH public key of type {kind:?}: only ssh-rsa keys can encrypt images"
        )));
    }
    let blob = STANDARD
        .decode(parts.next().unwrap_or_default())
        .map_err(|_| CryptError::bad_key("OpenSSH public key: invalid base64"))?;
    let mut w = Wire(&blob);
    if w.string()? != b"ssh-rsa" {
        return Err(CryptError::bad_key(
            "OpenSSH public key: the blob's type is not ssh-rsa",
        ));
    }
    let e = w.mpint()?.to_vec();
    let n = w.mpint()?.to_vec();
    Ok(RsaNumbers {
        n,
        e,
        private: None,
    })
}

/// The most bcrypt rounds a protected key may ask for. `ssh-keygen` uses 16 (24 since
/// OpenSSH 9.8) unless told otherwise with `-a`; each round costs about 5 ms here,
/// and a hostile file must not hold the process for hours.
const MAX_BCRYPT_ROUNDS: u32 = 1 << 12;

/// How the private section of an `openssh-key-v1` file is encrypted.
#[derive(Clone, Copy)]
enum SectionCipher {
    Ctr(usize),
    Cbc(usize),
}

impl SectionCipher {
    fn from_name(name: &[u8]) -> Option<Self> {
        Some(match name {
            b"aes128-ctr" => Self::Ctr(16),
            b"aes192-ctr" => Self::Ctr(24),
            b"aes256-ctr" => Self::Ctr(32),
            b"aes128-cbc" => Self::Cbc(16),
            b"aes192-cbc" => Self::Cbc(24),
            b"aes256-cbc" => Self::Cbc(32),
            _ => return None,
        })
    }

    fn key_len(self) -> usize {
        match self {
            Self::Ctr(n) | Self::Cbc(n) => n,
        }
    }

    /// Decrypts `data` (a whole number of 16-byte blocks) in place.
    fn decrypt(self, key: &[u8], iv: &[u8; 16], data: &mut [u8]) -> Result<()> {
        use aes::cipher::{BlockDecryptMut, KeyIvInit, StreamCipher, block_padding::NoPadding};
        let bad_key = |_| CryptError::bad_key("OpenSSH key: bad cipher key length");
        let cbc_len = |_| CryptError::bad_key("OpenSSH key: bad encrypted length");
        match self {
            Self::Ctr(16) => ctr::Ctr128BE::<aes::Aes128>::new_from_slices(key, iv)
                .map_err(bad_key)?
                .apply_keystream(data),
            Self::Ctr(24) => ctr::Ctr128BE::<aes::Aes192>::new_from_slices(key, iv)
                .map_err(bad_key)?
                .apply_keystream(data),
            Self::Ctr(_) => ctr::Ctr128BE::<aes::Aes256>::new_from_slices(key, iv)
                .map_err(bad_key)?
                .apply_keystream(data),
            Self::Cbc(16) => {
                cbc::Decryptor::<aes::Aes128>::new_from_slices(key, iv)
                    .map_err(bad_key)?
                    .decrypt_padded_mut::<NoPadding>(data)
                    .map_err(cbc_len)?;
            }
            Self::Cbc(24) => {
                cbc::Decryptor::<aes::Aes192>::new_from_slices(key, iv)
                    .map_err(bad_key)?
                    .decrypt_padded_mut::<NoPadding>(data)
                    .map_err(cbc_len)?;
            }
            Self::Cbc(_) => {
                cbc::Decryptor::<aes::Aes256>::new_from_slices(key, iv)
                    .map_err(bad_key)?
                    .decrypt_padded_mut::<NoPadding>(data)
                    .map_err(cbc_len)?;
            }
        }
        Ok(())
    }
}

/// What went wrong with a protected key's passphrase, for the caller to word.
pub enum Unlock {
    /// The passphrase does not open the key.
    WrongPassphrase,
    /// Anything else (damaged file, unsupported cipher, no terminal...).
    Other(CryptError),
}

impl From<CryptError> for Unlock {
    fn from(e: CryptError) -> Self {
        Self::Other(e)
    }
}

/// Parses the DER-less body of an `OPENSSH PRIVATE KEY` PEM block. `password` is
/// asked only for a protected key, after the file's cipher and KDF were found
/// usable.
pub fn parse_private(
    body: &[u8],
    password: &dyn Fn() -> Result<Zeroizing<String>>,
) -> std::result::Result<RsaNumbers, Unlock> {
    let rest = body
        .strip_prefix(MAGIC)
        .ok_or_else(|| CryptError::bad_key("not an openssh-key-v1 private key"))?;
    let mut w = Wire(rest);
    let cipher = w.string()?;
    let kdf = w.string()?;
    let kdf_options = w.string()?;
    if w.u32()? != 1 {
        return Err(CryptError::bad_key("OpenSSH private key file holds more than one key").into());
    }
    let _public = w.string()?;
    let section = w.string()?;
    let plain: Zeroizing<Vec<u8>> = if cipher == b"none" {
        Zeroizing::new(section.to_vec())
    } else {
        let convert =
            "or make an unprotected PEM copy: cp KEY k.pem && ssh-keygen -p -N '' -m PEM -f k.pem";
        let Some(c) = SectionCipher::from_name(cipher) else {
            return Err(CryptError::bad_key(format!(
                "OpenSSH private key encrypted with {:?}, which veil cannot read (it reads aes128/192/256-ctr and -cbc); \
                 re-encrypt it with ssh-keygen -p -Z aes256-ctr -f KEY, {convert}",
                String::from_utf8_lossy(cipher)
            ))
            .into());
        };
        if kdf != b"bcrypt" {
            return Err(CryptError::bad_key(format!(
                "OpenSSH private key with KDF {:?}, which veil cannot read; {convert}",
                String::from_utf8_lossy(kdf)
            ))
            .into());
        }
        let mut o = Wire(kdf_options);
        let salt = o.string()?;
        let rounds = o.u32()?;
        if rounds == 0 || rounds > MAX_BCRYPT_ROUNDS || salt.is_empty() {
            return Err(CryptError::bad_key(format!(
                "OpenSSH private key asks for {rounds} bcrypt rounds with a {}-byte salt \
                 (veil accepts 1 to {MAX_BCRYPT_ROUNDS} rounds and a salt)",
                salt.len()
            ))
            .into());
        }
        if section.is_empty() || !section.len().is_multiple_of(16) {
            return Err(CryptError::bad_key(
                "OpenSSH private key: the encrypted part is not a whole number of blocks",
            )
            .into());
        }
        let pw = password()?;
        if pw.is_empty() {
            return Err(Unlock::WrongPassphrase);
        }
        let mut key_iv = Zeroizing::new([0u8; 32 + 16]);
        let key_iv = &mut key_iv[..c.key_len() + 16];
        bcrypt_pbkdf::bcrypt_pbkdf(pw.as_bytes(), salt, rounds, key_iv)
            .map_err(|e| CryptError::bad_key(format!("OpenSSH private key: bcrypt KDF: {e}")))?;
        let (key, iv) = key_iv.split_at(c.key_len());
        let iv: &[u8; 16] = iv.try_into().expect("16 bytes after the key");
        let mut data = Zeroizing::new(section.to_vec());
        c.decrypt(key, iv, &mut data)?;
        data
    };
    let mut p = Wire(&plain);
    // Two equal random words open the section: with a wrong passphrase they differ
    // (but for a 2^-32 chance, which the key's own consistency check then catches).
    if p.u32()? != p.u32()? {
        return Err(if cipher == b"none" {
            CryptError::bad_key("OpenSSH private key: check words differ (corrupted file)").into()
        } else {
            Unlock::WrongPassphrase
        });
    }
    let kind = p.string()?;
    if kind != b"ssh-rsa" {
        return Err(CryptError::bad_key(format!(
            "OpenSSH private key of type {:?}: only ssh-rsa keys can decrypt images",
            String::from_utf8_lossy(kind)
        ))
        .into());
    }
    let n = p.mpint()?.to_vec();
    let e = p.mpint()?.to_vec();
    let d = Zeroizing::new(p.mpint()?.to_vec());
    let _iqmp = p.mpint()?;
    let pp = Zeroizing::new(p.mpint()?.to_vec());
    let q = Zeroizing::new(p.mpint()?.to_vec());
    Ok(RsaNumbers {
        n,
        e,
        private: Some(PrivateNumbers { d, p: pp, q }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_pw() -> Result<Zeroizing<String>> {
        panic!("no password should be asked")
    }

    #[test]
    fn hostile_inputs_fail_cleanly() {
        assert!(parse_private(b"", &no_pw).is_err());
        assert!(parse_private(b"openssh-key-v1\0\xff\xff\xff\xff", &no_pw).is_err());
        let mut v = MAGIC.to_vec();
        for s in [&b"none"[..], b"none", b""] {
            v.extend_from_slice(&(s.len() as u32).to_be_bytes());
            v.extend_from_slice(s);
        }
        v.extend_from_slice(&1u32.to_be_bytes());
        assert!(parse_private(&v, &no_pw).is_err());
        assert!(parse_public_line(b"ssh-rsa !!!").is_err());
        assert!(parse_public_line(b"ssh-ed25519 AAAA").is_err());
        assert!(parse_public_line(b"ssh-rsa AAAAB3NzaC1yc2E=").is_err());
    }
}
