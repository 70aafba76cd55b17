//! The fuzzers' entry point into the LUKS2 reader.

#![forbid(unsafe_code)]

use super::kdf::KdfLimits;
use super::secret::Passphrase;
use super::summary::inspect;
use super::unlock::{UnlockOptions, unlock};
use crate::source::ReadAt;

/// Fuzzing entry point: parses headers and JSON from memory and, with tiny KDF
/// limits so it cannot be slow, tries an unlock and a few reads: once on the
/// input as is, once with the input zero-extended to 4 MiB so that inputs
/// holding only the header area still reach the keyslot and data paths.
#[doc(hidden)]
pub fn fuzz_one(data: &[u8]) {
    /// `data` followed by zeros up to `len`.
    struct ZeroExtended<'a> {
        data: &'a [u8],
        len: u64,
    }
    impl ReadAt for ZeroExtended<'_> {
        fn len(&self) -> u64 {
            self.len
        }
        fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
            crate::source::check_range(self.len, offset, buf.len())?;
            buf.fill(0);
            let dl = self.data.len() as u64;
            if offset < dl {
                let n = ((dl - offset) as usize).min(buf.len());
                buf[..n].copy_from_slice(&self.data[offset as usize..offset as usize + n]);
            }
            Ok(())
        }
    }

    let _ = inspect(data);
    let opts = UnlockOptions {
        keyslot: None,
        limits: KdfLimits {
            max_pbkdf2_iterations: 2000,
            max_argon2_work: 1024,
            max_total_work: 4.0,
            max_argon2_time: 4,
            max_argon2_memory_kib: 256,
            max_argon2_cpus: 2,
            check_available_memory: false,
        },
    };
    let pass = Passphrase::from_slice(b"fuzz");
    let try_read = |v: &dyn ReadAt| {
        let mut buf = vec![0u8; 8192.min(v.len() as usize)];
        let _ = v.read_exact_at(&mut buf, 0);
        let n = 100.min(buf.len());
        let _ = v.read_exact_at(
            &mut buf[..n],
            v.len().saturating_sub(n as u64).saturating_sub(1),
        );
    };
    if let Ok(v) = unlock(data, &pass, &opts) {
        try_read(&v);
    }
    let ext = ZeroExtended {
        data,
        len: (data.len() as u64).max(4 << 20),
    };
    if let Ok(v) = unlock(ext, &pass, &opts) {
        try_read(&v);
    }
}
