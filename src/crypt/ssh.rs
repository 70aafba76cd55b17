//! OpenSSH's own RSA key encodings: the `ssh-rsa AAAA… comment` public-key line
//! (RFC 4253 wire format) and the `openssh-key-v1` private-key container that
//! `ssh-keygen` writes by default. Only the parsing lives here; `key` turns the
//! numbers into RSA keys.

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

/// Parses the DER-less body of an `OPENSSH PRIVATE KEY` PEM block.
pub fn parse_private(body: &[u8]) -> Result<RsaNumbers> {
    let rest = body
        .strip_prefix(MAGIC)
        .ok_or_else(|| CryptError::bad_key("not an openssh-key-v1 private key"))?;
    let mut w = Wire(rest);
    let cipher = w.string()?;
    let _kdf = w.string()?;
    let _kdf_options = w.string()?;
    if cipher != b"none" {
        return Err(CryptError::bad_key(
            "passphrase-protected OpenSSH private keys are not supported; make an unprotected PEM copy with `cp KEY k.pem && ssh-keygen -p -N '' -m PEM -f k.pem`",
        ));
    }
    if w.u32()? != 1 {
        return Err(CryptError::bad_key(
            "OpenSSH private key file holds more than one key",
        ));
    }
    let _public = w.string()?;
    let mut p = Wire(w.string()?);
    if p.u32()? != p.u32()? {
        return Err(CryptError::bad_key(
            "OpenSSH private key: check words differ (corrupted file)",
        ));
    }
    let kind = p.string()?;
    if kind != b"ssh-rsa" {
        return Err(CryptError::bad_key(format!(
            "OpenSSH private key of type {:?}: only ssh-rsa keys can decrypt images",
            String::from_utf8_lossy(kind)
        )));
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

    #[test]
    fn hostile_inputs_fail_cleanly() {
        assert!(parse_private(b"").is_err());
        assert!(parse_private(b"openssh-key-v1\0\xff\xff\xff\xff").is_err());
        let mut v = MAGIC.to_vec();
        for s in [&b"none"[..], b"none", b""] {
            v.extend_from_slice(&(s.len() as u32).to_be_bytes());
            v.extend_from_slice(s);
        }
        v.extend_from_slice(&1u32.to_be_bytes());
        assert!(parse_private(&v).is_err());
        assert!(parse_public_line(b"ssh-rsa !!!").is_err());
        assert!(parse_public_line(b"ssh-ed25519 AAAA").is_err());
        assert!(parse_public_line(b"ssh-rsa AAAAB3NzaC1yc2E=").is_err());
    }
}
