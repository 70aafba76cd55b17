//! Passphrases: arbitrary bytes in guarded memory, used by both encrypted formats
//! (a LUKS2 keyslot's passphrase, a gocryptfs password). They cannot be cloned by
//! accident and print as `[redacted]`; the bytes are reachable only inside the
//! crate.

#![forbid(unsafe_code)]

use std::fmt;

use zeroize::Zeroize;

use super::guarded::SecretBytes;

/// A passphrase: arbitrary bytes, used exactly as given (no newline stripping, no
/// encoding). Apptainer's PEM mode passes a 64-byte binary secret here.
pub struct Passphrase(SecretBytes);

impl Passphrase {
    /// Takes the bytes: they are copied into guarded memory and the vector is wiped.
    pub fn new(mut bytes: Vec<u8>) -> Self {
        let p = Passphrase(SecretBytes::from_slice(&bytes));
        bytes.zeroize();
        p
    }

    /// Copies the bytes (the caller remains responsible for its own copy).
    pub fn from_slice(bytes: &[u8]) -> Self {
        Passphrase(SecretBytes::from_slice(bytes))
    }

    /// Takes bytes already in guarded memory, without another copy.
    pub fn from_secret(bytes: SecretBytes) -> Self {
        Passphrase(bytes)
    }

    /// Another copy, in guarded memory of its own.
    pub fn duplicate(&self) -> Passphrase {
        Passphrase::from_slice(self.bytes())
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        self.0.as_slice()
    }
}

impl fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Passphrase([redacted])")
    }
}
