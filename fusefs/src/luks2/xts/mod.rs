//! AES-XTS (IEEE 1619) over whole sectors, with dm-crypt's `plain64` IV.
//!
//! This is the hot path of every read from an encrypted image, so it is written
//! for throughput, with the implementation chosen once per [`Xts`] from what the
//! CPU supports ([`Simd`]):
//!
//! - With VAES and AVX-512 (F/BW/VL, VPCLMULQDQ, AES-NI), the single-pass
//!   kernel in [`vaes`]: each sector goes through the registers once — load,
//!   XOR with the tweak, every AES round, XOR, store — sixteen blocks (four
//!   512-bit registers) per step, the tweaks advanced by α¹⁶ in registers and
//!   the initial tweaks of four sectors encrypted together, one group ahead.
//!   It needs the expanded round keys, which the `aes` crate keeps private, so
//!   [`RoundKeys`] (`cipher::aes_ni`) expands the keys with AES-NI (zeroized
//!   on drop). It reads and writes the data once where the path below does it
//!   three times, which makes it more than twice as fast where it runs (figures
//!   in benches/README.md).
//! - Otherwise three passes per batch of up to 8 KiB ([`batched`]), which stays in L1: the
//!   initial tweak of every sector in one multi-block AES call, XOR of the data
//!   with the α-multiples of those tweaks (keeping them for the second XOR), the
//!   `aes` crate's multi-block (pipelined AES-NI) decryption over the whole
//!   batch, and the second XOR. A block-at-a-time XTS loop would leave the AES
//!   units waiting on each block's result. The tweak passes have AVX-512 + VPCLMULQDQ and SSE2 +
//!   PCLMULQDQ variants because with `u128` arithmetic they cost more than the
//!   AES rounds themselves. Other architectures use the portable code.
//!
//! Files: `vaes` (the single-pass kernel), `batched` (the three-pass path),
//! `simd` (which variant this CPU runs, and the dispatch of the tweak passes),
//! `portable`, `sse` and `avx512` (the tweak passes), `tests` (every variant
//! against the reference, and against the `xts-mode` crate).

use aes::cipher::KeyInit;
use aes::{Aes128, Aes256};
use rayon::prelude::*;

use super::error::{Error, Result};
#[cfg(target_arch = "x86_64")]
use crate::cipher::aes_ni::RoundKeys;
use batched::crypt;
use simd::Simd;

#[cfg(target_arch = "x86_64")]
mod avx512;
mod batched;
mod portable;
mod simd;
#[cfg(target_arch = "x86_64")]
mod sse;
#[cfg(test)]
mod tests;
#[cfg(target_arch = "x86_64")]
mod vaes;

/// Buffers at least this large are split across threads.
const PARALLEL_MIN: usize = 512 * 1024;
/// Size of each piece handed to a thread.
const PARALLEL_PIECE: usize = 128 * 1024;

/// The two AES keys of an XTS key (data key, tweak key). One per open volume,
/// so the size difference between the variants does not matter.
#[allow(clippy::large_enum_variant)]
enum Keys {
    A128(Aes128, Aes128),
    A256(Aes256, Aes256),
}

/// An AES-XTS cipher for `aes-xts-plain64` with a given encryption sector size.
pub struct Xts {
    keys: Keys,
    /// The same two keys expanded for [`vaes`] (data key, tweak key), present
    /// when the CPU runs [`Simd::Vaes`].
    #[cfg(target_arch = "x86_64")]
    round_keys: Option<(RoundKeys, RoundKeys)>,
    sector_size: usize,
    simd: Simd,
}

impl Xts {
    /// `key` is 32 bytes (AES-128-XTS) or 64 bytes (AES-256-XTS): first half data
    /// key, second half tweak key. `sector_size` is 512..=4096, a power of two.
    pub fn new(key: &[u8], sector_size: usize) -> Result<Self> {
        if !(512..=4096).contains(&sector_size) || !sector_size.is_power_of_two() {
            return Err(Error::Unsupported(format!("sector size {sector_size}")));
        }
        let bad = |_| Error::Unsupported(format!("aes-xts key of {} bytes", key.len()));
        let keys = match key.len() {
            32 => Keys::A128(
                Aes128::new_from_slice(&key[..16]).map_err(bad)?,
                Aes128::new_from_slice(&key[16..]).map_err(bad)?,
            ),
            64 => Keys::A256(
                Aes256::new_from_slice(&key[..32]).map_err(bad)?,
                Aes256::new_from_slice(&key[32..]).map_err(bad)?,
            ),
            n => {
                return Err(Error::Unsupported(format!(
                    "aes-xts key of {n} bytes (need 32 or 64)"
                )));
            }
        };
        let simd = Simd::detect();
        // Only expanded where the kernel can run: no second copy of the key
        // material otherwise.
        #[cfg(target_arch = "x86_64")]
        let round_keys = if simd == Simd::Vaes {
            let h = key.len() / 2;
            // SAFETY: `Simd::Vaes` is only detected with AES-NI (SSE2 is
            // baseline), and the halves are 16 or 32 bytes, checked by the
            // match above.
            Some(unsafe { (RoundKeys::new(&key[..h]), RoundKeys::new(&key[h..])) })
        } else {
            None
        };
        Ok(Xts {
            keys,
            #[cfg(target_arch = "x86_64")]
            round_keys,
            sector_size,
            simd,
        })
    }

    pub fn sector_size(&self) -> usize {
        self.sector_size
    }

    /// Decrypts whole sectors in place. `buf.len()` must be a multiple of the sector
    /// size; the first sector's IV is `first_iv` and each following one adds
    /// `sector_size / 512` (IVs count 512-byte units, as LUKS2 requires).
    pub fn decrypt(&self, buf: &mut [u8], first_iv: u64) {
        self.run(buf, first_iv, Dir::Decrypt)
    }

    /// Encrypts whole sectors in place (see [`Xts::decrypt`] for the IV rule).
    pub fn encrypt(&self, buf: &mut [u8], first_iv: u64) {
        self.run(buf, first_iv, Dir::Encrypt)
    }

    /// Decrypts the whole sectors of `from` into `buf` (as long as `from`): one pass
    /// over the bytes instead of a copy and then a decryption (see
    /// [`Xts::decrypt`] for the IV rule).
    pub fn decrypt_from(&self, from: &[u8], buf: &mut [u8], first_iv: u64) {
        assert_eq!(
            from.len(),
            buf.len(),
            "XTS source and destination differ in length"
        );
        // SAFETY: `from` is a live slice as long as `buf`, and a shared slice
        // cannot overlap the exclusive `buf`.
        unsafe { self.decrypt_from_ptr(from.as_ptr(), buf, first_iv) }
    }

    /// As [`Xts::decrypt_from`], from memory that is not a Rust slice: a file
    /// mapping, whose bytes are read once each.
    ///
    /// # Safety
    /// `from` must be valid for reads of `buf.len()` bytes for the whole call and
    /// must not overlap `buf`.
    pub unsafe fn decrypt_from_ptr(&self, from: *const u8, buf: &mut [u8], first_iv: u64) {
        if buf.len() < PARALLEL_MIN {
            return self.serial_from(from, buf, first_iv, Dir::Decrypt);
        }
        let ss = self.sector_size;
        let units = (ss / 512) as u64;
        let piece = PARALLEL_PIECE.max(ss);
        // An address, which may cross threads (the pointer's validity is the
        // caller's promise for the whole call, which outlasts the workers).
        let from = from as usize;
        buf.par_chunks_mut(piece)
            .enumerate()
            .for_each(|(i, chunk)| {
                let first_sector = (i * piece / ss) as u64;
                self.serial_from(
                    (from + i * piece) as *const u8,
                    chunk,
                    first_iv.wrapping_add(first_sector.wrapping_mul(units)),
                    Dir::Decrypt,
                )
            });
    }

    /// Single-threaded variant, for callers that parallelise themselves or measure
    /// per-core speed.
    pub fn decrypt_serial(&self, buf: &mut [u8], first_iv: u64) {
        self.serial(buf, first_iv, Dir::Decrypt)
    }

    fn run(&self, buf: &mut [u8], first_iv: u64, dir: Dir) {
        if buf.len() < PARALLEL_MIN {
            return self.serial(buf, first_iv, dir);
        }
        let ss = self.sector_size;
        let units = (ss / 512) as u64;
        let piece = PARALLEL_PIECE.max(ss);
        buf.par_chunks_mut(piece)
            .enumerate()
            .for_each(|(i, chunk)| {
                let first_sector = (i * piece / ss) as u64;
                self.serial(
                    chunk,
                    first_iv.wrapping_add(first_sector.wrapping_mul(units)),
                    dir,
                )
            });
    }

    fn serial(&self, buf: &mut [u8], first_iv: u64, dir: Dir) {
        self.serial_from(buf.as_ptr(), buf, first_iv, dir)
    }

    /// The sectors read at `from` (`buf` itself, or `buf.len()` readable bytes
    /// that do not overlap it), written to `buf`.
    fn serial_from(&self, from: *const u8, buf: &mut [u8], first_iv: u64, dir: Dir) {
        #[cfg(target_arch = "x86_64")]
        if let (Simd::Vaes, Some((k1, k2))) = (self.simd, &self.round_keys) {
            let ss = self.sector_size;
            let whole = buf.len() - buf.len() % ss;
            let (buf, units) = (&mut buf[..whole], (ss / 512) as u64);
            // SAFETY: `Simd::Vaes` is only chosen after the CPU reported every
            // feature `vaes::crypt` is compiled with; `buf` holds whole
            // sectors of a size that is a multiple of 256 (checked in `new`);
            // `from` is `buf` or readable for as many bytes (callers' contract).
            unsafe {
                match (k1.rounds(), dir) {
                    (10, Dir::Decrypt) => {
                        vaes::crypt::<10, false>(k1, k2, ss, from, buf, first_iv, units)
                    }
                    (10, Dir::Encrypt) => {
                        vaes::crypt::<10, true>(k1, k2, ss, from, buf, first_iv, units)
                    }
                    (_, Dir::Decrypt) => {
                        vaes::crypt::<14, false>(k1, k2, ss, from, buf, first_iv, units)
                    }
                    (_, Dir::Encrypt) => {
                        vaes::crypt::<14, true>(k1, k2, ss, from, buf, first_iv, units)
                    }
                }
            }
            return;
        }
        // The portable path works in place.
        if from != buf.as_ptr() {
            // SAFETY: `from` is readable for buf.len() bytes and does not overlap
            // `buf` (callers' contract).
            unsafe { std::ptr::copy_nonoverlapping(from, buf.as_mut_ptr(), buf.len()) };
        }
        match &self.keys {
            Keys::A128(k1, k2) => crypt(k1, k2, self.sector_size, self.simd, buf, first_iv, dir),
            Keys::A256(k1, k2) => crypt(k1, k2, self.sector_size, self.simd, buf, first_iv, dir),
        }
    }
}

#[derive(Clone, Copy)]
enum Dir {
    Encrypt,
    Decrypt,
}
