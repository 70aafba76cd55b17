//! Encrypting a squashfs into the LUKS2 partition Apptainer and SingularityCE use
//! (spec: apptainer-encryption.md): aes-xts-plain64 with a 512-bit volume key, data at
//! 16 MiB, one keyslot; made in-process, with no loop device, dm-crypt or root.
//!
//! Passphrase keyslots use argon2id with bounded memory; the 64-byte random secret of
//! PEM mode uses pbkdf2 with cryptsetup's minimum iteration count, since a uniformly
//! random 512-bit secret gains nothing from a slow or memory-hard KDF.

#![forbid(unsafe_code)]

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::Path;

use veil_fusefs::luks2::{
    self, CreateOptions, Hash, KdfChoice, KdfKind, KdfParams, KeyslotOptions, Passphrase,
};
use zeroize::Zeroizing;

use super::error::{BuildError, Result};

/// The PEM `MESSAGE` object maker: wraps the LUKS secret for a recipient's public key.
pub type WrapFn = Box<dyn Fn(&[u8]) -> Result<Vec<u8>>>;

/// How an image is encrypted.
pub enum Encryption {
    Passphrase(Passphrase),
    /// A fresh 64-byte random secret unlocks the volume; `wrap` turns it into the
    /// crypto message stored next to the partition.
    Recipient(WrapFn),
}

/// Which of the two encrypted layouts a build writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// LUKS2 around the squashfs (fstype 5): what the peers make as root, and what
    /// both peers run.
    #[default]
    Luks2,
    /// Apptainer's unprivileged layout (fstype 6), with this scrypt cost.
    Gocryptfs(veil_fusefs::gocryptfs::ScryptCost),
}

/// Keyslot KDF costs for passphrases.
#[derive(Debug, Clone, Copy)]
pub struct KdfCost {
    /// argon2id memory bound, KiB.
    pub max_memory_kib: u32,
    /// Target unlock time.
    pub target_ms: u32,
}

impl Default for KdfCost {
    fn default() -> Self {
        KdfCost {
            max_memory_kib: 256 * 1024,
            target_ms: 2000,
        }
    }
}

/// Keyslot options for a passphrase.
pub fn passphrase_keyslot(cost: KdfCost) -> KeyslotOptions {
    KeyslotOptions {
        kdf: KdfChoice::Calibrated {
            kind: KdfKind::Argon2id,
            target_ms: cost.target_ms,
            max_memory_kib: cost.max_memory_kib,
            max_cpus: 4,
        },
        hash: Hash::Sha256,
        priority: None,
    }
}

/// Keyslot options for a random 64-byte secret.
pub fn secret_keyslot() -> KeyslotOptions {
    KeyslotOptions {
        kdf: KdfChoice::Fixed(KdfParams::Pbkdf2 {
            hash: "sha256".into(),
            iterations: 1000,
        }),
        hash: Hash::Sha256,
        priority: None,
    }
}

/// 64 random bytes from the OS.
pub fn random_secret() -> Result<Zeroizing<Vec<u8>>> {
    let mut s = Zeroizing::new(vec![0u8; 64]);
    getrandom::fill(&mut s).map_err(BuildError::Random)?;
    Ok(s)
}

/// Result of encrypting: where the volume is and the crypto message, if any.
pub struct Encrypted {
    pub message: Option<Vec<u8>>,
    /// The random secret of recipient mode (for the verification pass).
    pub secret: Option<Passphrase>,
}

/// A reader that advances a progress bar.
struct Counting<'a, R> {
    inner: R,
    progress: &'a crate::support::progress::Progress,
}

impl<R: std::io::Read> std::io::Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.add(n as u64);
        Ok(n)
    }
}

/// Writes a LUKS2 volume holding `len` bytes of squashfs read from `input` to `out`.
/// The plaintext is only ever streamed through memory: a re-encryption of an
/// encrypted image never puts its decrypted squashfs in a file.
pub fn encrypt_stream(
    input: impl std::io::Read,
    len: u64,
    out: &Path,
    enc: &Encryption,
    cost: KdfCost,
    show_progress: bool,
) -> Result<Encrypted> {
    let (pass, keyslot, message) = match enc {
        Encryption::Passphrase(_) => (None, passphrase_keyslot(cost), None),
        Encryption::Recipient(wrap) => {
            let secret = random_secret()?;
            let msg = wrap(&secret)?;
            (
                Some(Passphrase::from_slice(&secret)),
                secret_keyslot(),
                Some(msg),
            )
        }
    };
    let pass_ref = match (&pass, enc) {
        (Some(p), _) => p,
        (None, Encryption::Passphrase(p)) => p,
        (None, Encryption::Recipient(_)) => unreachable!("recipient mode always has a secret"),
    };
    let opts = CreateOptions {
        sector_size: 4096,
        keyslot,
        ..Default::default()
    };
    let f = File::create(out).map_err(|e| BuildError::io(out, e))?;
    let mut w = BufWriter::with_capacity(8 << 20, f);
    let progress = crate::support::progress::Progress::new("encrypt", len, show_progress);
    luks2::create(
        &mut w,
        Counting {
            inner: BufReader::with_capacity(8 << 20, input),
            progress: &progress,
        },
        len,
        pass_ref,
        &opts,
    )
    .map_err(|err| BuildError::Encrypt {
        path: out.display().to_string(),
        err,
    })?;
    progress.finish();
    w.flush().map_err(|e| BuildError::io(out, e))?;
    Ok(Encrypted {
        message,
        secret: pass,
    })
}
