//! LUKS2's volume key, in guarded memory ([`SecretBytes`]: not in core dumps, locked
//! where the limit allows, wiped on fork and on drop); it cannot be cloned by
//! accident and prints as `[redacted]`. Passphrases are the shared
//! [`crate::secret::Passphrase`].

#![forbid(unsafe_code)]

use std::fmt;

use super::error::{Error, Result};
pub use crate::secret::Passphrase;
use crate::secret::SecretBytes;

/// A volume key (the AES-XTS key of the data segment): 32 or 64 bytes.
pub struct VolumeKey(SecretBytes);

impl VolumeKey {
    /// A fresh random key of `len` bytes (64 for AES-256-XTS).
    pub fn random(len: usize) -> Result<Self> {
        check_key_len(len)?;
        let mut k = SecretBytes::with_capacity(len);
        k.set_len(len);
        fill_random(k.as_mut_slice())?;
        Ok(VolumeKey(k))
    }

    /// A caller-chosen key (for reproducible builds and tests): 32 or 64 bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self> {
        check_key_len(bytes.len())?;
        Ok(VolumeKey(SecretBytes::from_slice(bytes)))
    }

    pub(crate) fn from_secret(bytes: SecretBytes) -> Self {
        VolumeKey(bytes)
    }

    /// Key length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Never true for a usable key; present for API symmetry with `len`.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        self.0.as_slice()
    }
}

impl fmt::Debug for VolumeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("VolumeKey([redacted])")
    }
}

fn check_key_len(len: usize) -> Result<()> {
    if len == 32 || len == 64 {
        Ok(())
    } else {
        Err(Error::InvalidOptions(format!(
            "volume key must be 32 or 64 bytes for aes-xts-plain64, got {len}"
        )))
    }
}

/// Fills `buf` from the OS CSPRNG.
pub(crate) fn fill_random(buf: &mut [u8]) -> Result<()> {
    crate::secret::fill_random(buf).map_err(Error::Random)
}

/// `n` random bytes (not secret: salts).
pub(crate) fn random_vec(n: usize) -> Result<Vec<u8>> {
    let mut v = vec![0u8; n];
    fill_random(&mut v)?;
    Ok(v)
}
