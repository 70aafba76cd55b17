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
//!   [`vaes::RoundKeys`] expands the keys itself with AES-NI (zeroized on
//!   drop). About 2.3–2.8 times the three-pass path below on a Zen 4 core
//!   (AES-256-XTS: 12–14 GB/s in cache against 4.5–5 GB/s measured in the same
//!   run).
//! - Otherwise three passes per batch of up to 8 KiB, which stays in L1: the
//!   initial tweak of every sector in one multi-block AES call, XOR of the data
//!   with the α-multiples of those tweaks (keeping them for the second XOR), the
//!   `aes` crate's multi-block (pipelined AES-NI) decryption over the whole
//!   batch, and the second XOR. A block-at-a-time XTS loop is four to five
//!   times slower. The tweak passes have AVX-512 + VPCLMULQDQ and SSE2 +
//!   PCLMULQDQ variants because with `u128` arithmetic they cost more than the
//!   AES rounds themselves. Other architectures use the portable code.

use aes::cipher::array::Array;
use aes::cipher::{BlockCipherDecrypt, BlockCipherEncrypt, KeyInit};
use aes::{Aes128, Aes256, Block};
use rayon::prelude::*;

use super::error::{Error, Result};

#[cfg(target_arch = "x86_64")]
mod vaes;

/// Blocks per batch: 8 KiB, two 4096-byte sectors or sixteen 512-byte ones.
/// Data plus tweaks (16 KiB) stay in L1 across the three passes; fewer, larger
/// batches also halve the `aes` crate's per-call cost (it broadcasts the round
/// keys into 512-bit registers on every call).
const BATCH_BLOCKS: usize = 512;

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
    round_keys: Option<(vaes::RoundKeys, vaes::RoundKeys)>,
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
            Some(unsafe {
                (
                    vaes::RoundKeys::new(&key[..h]),
                    vaes::RoundKeys::new(&key[h..]),
                )
            })
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

/// Multiplies a tweak by α in GF(2^128) (little-endian convention of IEEE 1619).
#[inline(always)]
fn mul_alpha(t: u128) -> u128 {
    (t << 1) ^ ((t >> 127) * 0x87)
}

/// `MUL8[b]` = b · 0x87 carry-less: the reduction of the 8 bits shifted out when a
/// tweak is multiplied by α⁸.
const MUL8: [u128; 256] = {
    let mut t = [0u128; 256];
    let mut b = 0;
    while b < 256 {
        let mut r = 0u128;
        let mut i = 0;
        while i < 8 {
            if (b >> i) & 1 == 1 {
                r ^= 0x87 << i;
            }
            i += 1;
        }
        t[b] = r;
        b += 1;
    }
    t
};

/// Multiplies a tweak by α⁸: a byte shift plus a table lookup.
#[inline(always)]
fn mul_alpha8(t: u128) -> u128 {
    (t << 8) ^ MUL8[(t >> 120) as usize]
}

/// Which implementation of XTS this CPU can run, detected once per
/// [`Xts`] so the per-batch dispatch is a predictable branch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Simd {
    /// Plain `u128` arithmetic; any CPU.
    Portable,
    /// SSE2 and PCLMULQDQ (every x86_64 CPU with AES-NI): one tweak per register.
    #[cfg(target_arch = "x86_64")]
    Sse,
    /// AVX-512 (F + BW) and VPCLMULQDQ: four tweaks per 512-bit register.
    #[cfg(target_arch = "x86_64")]
    Avx512,
    /// Additionally VAES, AVX-512 VL and AES-NI: the single-pass kernel of
    /// [`vaes`], which does not use the tweak passes at all.
    #[cfg(target_arch = "x86_64")]
    Vaes,
}

impl Simd {
    /// The fastest variant this CPU runs.
    fn detect() -> Self {
        Self::available().pop().unwrap_or(Simd::Portable)
    }

    /// Every variant this CPU runs, slowest first.
    fn available() -> Vec<Self> {
        #[allow(unused_mut)] // not mutated on other architectures
        let mut v = vec![Simd::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("pclmulqdq") {
                v.push(Simd::Sse);
            }
            if has!("avx512f") && has!("avx512bw") && has!("vpclmulqdq") {
                v.push(Simd::Avx512);
                if has!("avx512vl") && has!("vaes") && has!("aes") {
                    v.push(Simd::Vaes);
                }
            }
        }
        v
    }

    /// XORs the blocks of one sector with t, t·α, t·α², … and keeps those tweaks
    /// in `tw` for the second XOR. `blocks` and `tw` have the same length, a
    /// multiple of 8 (a sector is at least 32 blocks).
    #[inline(always)]
    fn apply_tweaks(self, t: &[u8; 16], blocks: &mut [[u8; 16]], tw: &mut [u128]) {
        debug_assert!(blocks.len() == tw.len() && blocks.len().is_multiple_of(8));
        match self {
            Simd::Portable => apply_tweaks(u128::from_le_bytes(*t), blocks, tw),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Simd::Avx512` and `Simd::Vaes` are only chosen by
            // `detect` after the CPU reported every feature
            // `avx512::apply_tweaks` is compiled with.
            Simd::Avx512 | Simd::Vaes => unsafe { avx512::apply_tweaks(t, blocks, tw) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as for `Simd::Avx512`.
            Simd::Sse => unsafe { sse::apply_tweaks(t, blocks, tw) },
        }
    }

    /// XORs each 16-byte block with its tweak.
    #[inline(always)]
    fn xor_tweaks(self, blocks: &mut [[u8; 16]], tw: &[u128]) {
        debug_assert!(blocks.len() == tw.len() && blocks.len().is_multiple_of(4));
        match self {
            Simd::Portable => xor_tweaks(blocks, tw),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as in `apply_tweaks`, the features were detected at run time.
            Simd::Avx512 | Simd::Vaes => unsafe { avx512::xor_tweaks(blocks, tw) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: SSE2 is part of the x86_64 baseline.
            Simd::Sse => unsafe { sse::xor_tweaks(blocks, tw) },
        }
    }
}

/// Portable version of [`Simd::apply_tweaks`]. Eight independent chains (each
/// stepping by α⁸) instead of one serial chain, so the CPU overlaps them; the
/// XOR is fused in to save a pass over the data.
#[inline(always)]
fn apply_tweaks(t: u128, blocks: &mut [[u8; 16]], tw: &mut [u128]) {
    let n = blocks.len().min(tw.len());
    let (blocks, tw) = (&mut blocks[..n], &mut tw[..n]);
    let mut x = t;
    for (b, slot) in blocks.iter_mut().zip(tw.iter_mut()).take(8) {
        *slot = x;
        *b = (u128::from_le_bytes(*b) ^ x).to_le_bytes();
        x = mul_alpha(x);
    }
    for i in 8..n {
        let x = mul_alpha8(tw[i - 8]);
        tw[i] = x;
        blocks[i] = (u128::from_le_bytes(blocks[i]) ^ x).to_le_bytes();
    }
}

/// Portable version of [`Simd::xor_tweaks`].
#[inline(always)]
fn xor_tweaks(blocks: &mut [[u8; 16]], tweaks: &[u128]) {
    for (b, t) in blocks.iter_mut().zip(tweaks) {
        *b = (u128::from_le_bytes(*b) ^ t).to_le_bytes();
    }
}

/// The tweak passes with 512-bit registers, four blocks (and four tweaks) each.
/// Multiplying a register of four consecutive tweaks by α⁸ gives the four tweaks
/// eight blocks further on: per 128-bit lane a one-byte shift plus the reduction of
/// the byte shifted out (that byte carry-less times 0x87, one VPCLMULQDQ). Two
/// such chains (blocks 0–3 and 4–7 of every group of eight) run interleaved, so
/// the carry-less multiply's latency is hidden.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use core::arch::x86_64::*;

    /// Tweaks of the next eight blocks: lane-wise multiplication by α⁸.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,vpclmulqdq")]
    fn mul_alpha8(z: __m512i, poly: __m512i) -> __m512i {
        let top = _mm512_bsrli_epi128::<15>(z);
        let red = _mm512_clmulepi64_epi128::<0x00>(top, poly);
        _mm512_xor_si512(_mm512_bslli_epi128::<1>(z), red)
    }

    /// `[t·α^k0, t·α^k1, t·α^k2, t·α^k3]` for shifts k < 64 given per 64-bit
    /// half (`k` = `[k0, k0, k1, k1, …]`), `t` broadcast to all lanes: a
    /// 128-bit shift left by k in every lane plus the reduction of the k bits
    /// shifted out. Built in registers, so the first tweaks of a sector do not
    /// wait on a serial `u128` chain or on a store-to-load round trip.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,vpclmulqdq")]
    pub(super) fn mul_alpha_k(t: __m512i, k: __m512i, poly: __m512i) -> __m512i {
        let shifted = _mm512_sllv_epi64(t, k);
        // Bits leaving each half (a shift by 64 yields 0, right for k = 0).
        let out = _mm512_srlv_epi64(t, _mm512_sub_epi64(_mm512_set1_epi64(64), k));
        // Swap halves: the low half's carry goes into the high half, the high
        // half's (leaving the 128-bit value) is reduced into the low half.
        let out = _mm512_shuffle_epi32::<0x4E>(out);
        let red = _mm512_clmulepi64_epi128::<0x00>(out, poly);
        let carry = _mm512_maskz_mov_epi64(0xAA, out);
        _mm512_ternarylogic_epi64::<0x96>(shifted, red, carry)
    }

    /// `t`: the sector's initial tweak, 16 bytes little-endian.
    #[target_feature(enable = "avx512f,avx512bw,vpclmulqdq")]
    pub(super) fn apply_tweaks(t: &[u8; 16], blocks: &mut [[u8; 16]], tw: &mut [u128]) {
        let n = blocks.len().min(tw.len()) & !7;
        let poly = _mm512_set1_epi64(0x87);
        // SAFETY: `t` is 16 readable bytes; unaligned load.
        let t = _mm512_broadcast_i32x4(unsafe { _mm_loadu_si128(t.as_ptr().cast()) });
        let mut a = mul_alpha_k(t, _mm512_set_epi64(3, 3, 2, 2, 1, 1, 0, 0), poly);
        let mut b = mul_alpha_k(t, _mm512_set_epi64(7, 7, 6, 6, 5, 5, 4, 4), poly);
        let bp = blocks.as_mut_ptr().cast::<__m512i>();
        let tp = tw.as_mut_ptr().cast::<__m512i>();
        for i in (0..n / 4).step_by(2) {
            // Start loading the data one batch (8 KiB) ahead: the hardware
            // prefetcher stops at 4 KiB page boundaries, so without this every
            // batch of a large buffer begins with cache misses (+4 % on 16 MiB
            // buffers, measured; a burst of prefetches per batch was slower).
            let ahead = super::BATCH_BLOCKS / 4;
            // SAFETY: a prefetch is a hint, not a memory access: it cannot fault,
            // whatever the address (past the buffer's end it is wasted). The
            // intrinsic is a safe function in recent Rust, not in older ones.
            #[allow(unused_unsafe)]
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>(bp.wrapping_add(i + ahead).cast());
                _mm_prefetch::<_MM_HINT_T0>(bp.wrapping_add(i + ahead + 1).cast());
            }
            // SAFETY: i + 1 < n / 4, so both 64-byte accesses at register index
            // i and i + 1 lie within the first n blocks of `blocks` and `tw`
            // (each 16 bytes per element); unaligned loads/stores.
            unsafe {
                _mm512_storeu_si512(tp.add(i), a);
                _mm512_storeu_si512(tp.add(i + 1), b);
                let d0 = _mm512_loadu_si512(bp.add(i));
                let d1 = _mm512_loadu_si512(bp.add(i + 1));
                _mm512_storeu_si512(bp.add(i), _mm512_xor_si512(d0, a));
                _mm512_storeu_si512(bp.add(i + 1), _mm512_xor_si512(d1, b));
            }
            a = mul_alpha8(a, poly);
            b = mul_alpha8(b, poly);
        }
    }

    #[target_feature(enable = "avx512f")]
    pub(super) fn xor_tweaks(blocks: &mut [[u8; 16]], tw: &[u128]) {
        let n = blocks.len().min(tw.len()) & !3;
        let bp = blocks.as_mut_ptr().cast::<__m512i>();
        let tp = tw.as_ptr().cast::<__m512i>();
        for i in 0..n / 4 {
            // SAFETY: i < n / 4: the 64 bytes at register index i lie within the
            // first n blocks of both slices; unaligned loads/stores.
            unsafe {
                let d = _mm512_loadu_si512(bp.add(i));
                let t = _mm512_loadu_si512(tp.add(i));
                _mm512_storeu_si512(bp.add(i), _mm512_xor_si512(d, t));
            }
        }
    }
}

/// The tweak passes with 128-bit registers, for x86_64 CPUs without AVX-512:
/// the same eight interleaved α⁸ chains as [`avx512`], one tweak per register.
#[cfg(target_arch = "x86_64")]
mod sse {
    use core::arch::x86_64::*;

    /// t·α: each 64-bit half doubled, bit 63 carried into bit 64, bit 127
    /// reduced into the low byte as 0x87 (via the dwords' sign masks).
    #[inline]
    #[target_feature(enable = "sse2")]
    fn mul_alpha(t: __m128i) -> __m128i {
        let signs = _mm_shuffle_epi32::<0x93>(_mm_srai_epi32::<31>(t));
        let carry = _mm_and_si128(signs, _mm_set_epi32(0, 1, 0, 0x87));
        _mm_xor_si128(_mm_add_epi64(t, t), carry)
    }

    /// t·α⁸: a byte shift plus the reduction of the byte shifted out.
    #[inline]
    #[target_feature(enable = "sse2,pclmulqdq")]
    fn mul_alpha8(t: __m128i, poly: __m128i) -> __m128i {
        let red = _mm_clmulepi64_si128::<0x00>(_mm_bsrli_si128::<15>(t), poly);
        _mm_xor_si128(_mm_bslli_si128::<1>(t), red)
    }

    /// `t`: the sector's initial tweak, 16 bytes little-endian.
    #[target_feature(enable = "sse2,pclmulqdq")]
    pub(super) fn apply_tweaks(t: &[u8; 16], blocks: &mut [[u8; 16]], tw: &mut [u128]) {
        let n = blocks.len().min(tw.len()) & !7;
        let poly = _mm_set_epi64x(0, 0x87);
        // SAFETY: `t` is 16 readable bytes; unaligned load.
        let mut x = [unsafe { _mm_loadu_si128(t.as_ptr().cast()) }; 8];
        for i in 1..8 {
            x[i] = mul_alpha(x[i - 1]);
        }
        let bp = blocks.as_mut_ptr().cast::<__m128i>();
        let tp = tw.as_mut_ptr().cast::<__m128i>();
        for i in (0..n).step_by(8) {
            for (j, xj) in x.iter_mut().enumerate() {
                // SAFETY: i + j < n: block i + j of both slices is in bounds
                // (16 bytes each); unaligned loads/stores.
                unsafe {
                    _mm_storeu_si128(tp.add(i + j), *xj);
                    let d = _mm_loadu_si128(bp.add(i + j));
                    _mm_storeu_si128(bp.add(i + j), _mm_xor_si128(d, *xj));
                }
                *xj = mul_alpha8(*xj, poly);
            }
        }
    }

    #[target_feature(enable = "sse2")]
    pub(super) fn xor_tweaks(blocks: &mut [[u8; 16]], tw: &[u128]) {
        let n = blocks.len().min(tw.len());
        let bp = blocks.as_mut_ptr().cast::<__m128i>();
        let tp = tw.as_ptr().cast::<__m128i>();
        for i in 0..n {
            // SAFETY: i < n: block i of both slices is in bounds; unaligned
            // loads/stores.
            unsafe {
                let d = _mm_loadu_si128(bp.add(i));
                let t = _mm_loadu_si128(tp.add(i));
                _mm_storeu_si128(bp.add(i), _mm_xor_si128(d, t));
            }
        }
    }
}

// `as_chunks_mut` is Rust 1.88; the `aes` 0.9.4 dependency (runtime VAES
// detection) needs Rust 1.89 anyway.
#[allow(clippy::incompatible_msrv)]
fn crypt<C>(
    data_key: &C,
    tweak_key: &C,
    ss: usize,
    simd: Simd,
    buf: &mut [u8],
    first_iv: u64,
    dir: Dir,
) where
    C: BlockCipherEncrypt + BlockCipherDecrypt<BlockSize = aes::cipher::consts::U16>,
{
    let bps = ss / 16; // blocks per sector
    let sectors_per_batch = (BATCH_BLOCKS / bps).max(1);
    let units = (ss / 512) as u64;
    let mut tweaks = [0u128; BATCH_BLOCKS];
    let mut t0 = [Block::default(); BATCH_BLOCKS / 32];

    // Only whole sectors are processed; callers guarantee alignment.
    let whole = buf.len() - buf.len() % ss;
    for (batch_no, batch) in buf[..whole].chunks_mut(sectors_per_batch * ss).enumerate() {
        let nsec = batch.len() / ss;
        let first_sector = (batch_no * sectors_per_batch) as u64;
        // Initial tweak of every sector: E_k2(LE128(iv)), all in one call.
        for (s, b) in t0[..nsec].iter_mut().enumerate() {
            let iv = first_iv.wrapping_add((first_sector + s as u64).wrapping_mul(units));
            *b = Array::from((iv as u128).to_le_bytes());
        }
        tweak_key.encrypt_blocks(&mut t0[..nsec]);
        let (blocks, _) = batch.as_chunks_mut::<16>();
        for ((sector, tw), b0) in blocks
            .chunks_mut(bps)
            .zip(tweaks.chunks_mut(bps))
            .zip(&t0[..nsec])
        {
            simd.apply_tweaks(&(*b0).into(), sector, tw);
        }
        let (ablocks, _) = Array::slice_as_chunks_mut(batch);
        match dir {
            Dir::Decrypt => data_key.decrypt_blocks(ablocks),
            Dir::Encrypt => data_key.encrypt_blocks(ablocks),
        }
        let (blocks, _) = batch.as_chunks_mut::<16>();
        simd.xor_tweaks(blocks, &tweaks[..nsec * bps]);
    }
    // Tweaks are derived from the key: do not leave them on the stack.
    zeroize::Zeroize::zeroize(&mut tweaks);
    for b in &mut t0 {
        zeroize::Zeroize::zeroize(b.as_mut_slice());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Also used by the VAES kernel's tests.
    pub(super) fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// IEEE 1619-2007 vector 10 (AES-256-XTS, data unit sequence number 0xff, 512
    /// bytes). The published vector uses a 512-byte data unit, i.e. one
    /// plain64 sector with IV 0xff.
    #[test]
    fn ieee1619_vector_10() {
        let key = hex(concat!(
            "2718281828459045235360287471352662497757247093699959574966967627",
            "3141592653589793238462643383279502884197169399375105820974944592"
        ));
        let pt: Vec<u8> = (0..512).map(|i| (i % 256) as u8).collect();
        let ct_start = hex("1c3b3a102f770386e4836c99e370cf9bea00803f5e482357a4ae12d414a3e63b");
        let ct_end = hex("773dad38014bd2092fa755c824bb5e54c4f36ffda9fcea70b9c6e693e148c151");
        let mut x = Xts::new(&key, 512).unwrap();
        for simd in Simd::available() {
            x.simd = simd;
            let mut buf = pt.clone();
            x.encrypt(&mut buf, 0xff);
            assert_eq!(&buf[..32], &ct_start[..], "{simd:?}");
            assert_eq!(&buf[480..], &ct_end[..], "{simd:?}");
            x.decrypt(&mut buf, 0xff);
            assert_eq!(buf, pt, "{simd:?}");
        }
    }

    /// With 4096-byte sectors, sector j uses IV 8·j (512-byte units), and the tweak
    /// runs through all 256 blocks of the sector instead of restarting every 512
    /// bytes. The data path interop tests check the same rule against cryptsetup.
    #[test]
    fn sector_size_and_iv_units() {
        let key: Vec<u8> = (0..64).collect();
        let pt: Vec<u8> = (0..8192u32).map(|i| (i * 31 % 251) as u8).collect();
        let mut big = Xts::new(&key, 4096).unwrap();
        let mut small = Xts::new(&key, 512).unwrap();
        for simd in Simd::available() {
            (big.simd, small.simd) = (simd, simd);
            let mut a = pt.clone();
            big.encrypt(&mut a, 0);
            // The second 4096-byte sector uses IV 8, so encrypting it alone at IV 8 matches.
            let mut b = pt[4096..].to_vec();
            big.encrypt(&mut b, 8);
            assert_eq!(&a[4096..], &b[..]);
            // The first 512 bytes of a 4096-byte sector equal a 512-byte sector at the same IV
            // (same initial tweak, same first 32 α-multiples).
            let mut c = pt[..512].to_vec();
            small.encrypt(&mut c, 0);
            assert_eq!(&a[..512], &c[..]);
            // ...but the second 512 bytes do not equal a 512-byte sector with IV 1.
            let mut d = pt[512..1024].to_vec();
            small.encrypt(&mut d, 1);
            assert_ne!(&a[512..1024], &d[..]);
        }
    }

    /// Known answer from python3-cryptography (OpenSSL's XTS): two 4096-byte
    /// sectors of a LUKS2 segment use tweaks LE(0) and LE(8) — 512-byte units.
    #[test]
    fn iv_units_with_4096_byte_sectors_match_openssl() {
        let key: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(11) ^ 0x3c).collect();
        let pt: Vec<u8> = (0..8192u32).map(|i| (i * 13 % 256) as u8).collect();
        let script = "import sys\n\
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes\n\
k=bytes((i*11%256)^0x3c for i in range(64)); p=bytes(i*13%256 for i in range(8192)); out=b''\n\
for j in range(2):\n    e=Cipher(algorithms.AES(k),modes.XTS((j*8).to_bytes(16,'little'))).encryptor(); out+=e.update(p[j*4096:(j+1)*4096])+e.finalize()\n\
sys.stdout.write(out.hex())";
        let out = match std::process::Command::new("/usr/bin/python3")
            .args(["-c", script])
            .output()
        {
            Ok(o) if o.status.success() => String::from_utf8(o.stdout).unwrap(),
            _ => {
                eprintln!("SKIP: python3-cryptography not available for the cross-check");
                return;
            }
        };
        let mut x = Xts::new(&key, 4096).unwrap();
        for simd in Simd::available() {
            x.simd = simd;
            let mut buf = pt.clone();
            x.encrypt(&mut buf, 0);
            let got: String = buf.iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(got, out, "{simd:?}");
            x.decrypt(&mut buf, 0);
            assert_eq!(buf, pt, "{simd:?}");
        }
    }

    #[test]
    fn alpha8_equals_eight_alpha_steps() {
        let mut t = 0x8000_0000_0000_0000_0000_0000_0000_0001u128 ^ 0xdead_beef << 64;
        for _ in 0..1000 {
            let mut s = t;
            for _ in 0..8 {
                s = mul_alpha(s);
            }
            assert_eq!(mul_alpha8(t), s);
            t = s ^ (t >> 3);
        }
    }

    /// Textbook AES-XTS, written independently of the fast path: one block at a
    /// time, the tweak doubled byte by byte as IEEE 1619 §5.2 describes it.
    fn reference_xts(key: &[u8], ss: usize, buf: &mut [u8], first_iv: u64, encrypt: bool) {
        fn run<C: BlockCipherEncrypt + BlockCipherDecrypt<BlockSize = aes::cipher::consts::U16>>(
            k1: C,
            k2: C,
            ss: usize,
            buf: &mut [u8],
            first_iv: u64,
            encrypt: bool,
        ) {
            for (j, sector) in buf.chunks_mut(ss).enumerate() {
                let iv = first_iv.wrapping_add(j as u64 * (ss as u64 / 512));
                let mut t = [0u8; 16];
                t[..8].copy_from_slice(&iv.to_le_bytes());
                let mut tb = Block::from(t);
                k2.encrypt_block(&mut tb);
                let mut t: [u8; 16] = tb.into();
                for block in sector.chunks_mut(16) {
                    let mut b = Block::default();
                    for i in 0..16 {
                        b[i] = block[i] ^ t[i];
                    }
                    if encrypt {
                        k1.encrypt_block(&mut b);
                    } else {
                        k1.decrypt_block(&mut b);
                    }
                    for i in 0..16 {
                        block[i] = b[i] ^ t[i];
                    }
                    // t ← t·α: shift the 128-bit little-endian value left by one.
                    let mut carry = 0u8;
                    for byte in &mut t {
                        let next = *byte >> 7;
                        *byte = (*byte << 1) | carry;
                        carry = next;
                    }
                    if carry == 1 {
                        t[0] ^= 0x87;
                    }
                }
            }
        }
        let h = key.len() / 2;
        if h == 16 {
            let k = |b: &[u8]| Aes128::new_from_slice(b).unwrap();
            run(k(&key[..h]), k(&key[h..]), ss, buf, first_iv, encrypt)
        } else {
            let k = |b: &[u8]| Aes256::new_from_slice(b).unwrap();
            run(k(&key[..h]), k(&key[h..]), ss, buf, first_iv, encrypt)
        }
    }

    /// Random keys (AES-128 and AES-256), sector sizes, lengths and first IVs
    /// (some right below the 64-bit wrap-around): the fast path — with every
    /// variant of the tweak passes this CPU runs — must equal the reference in
    /// both directions.
    #[test]
    fn fast_path_equals_reference() {
        use proptest::prelude::*;
        let strategy = (
            prop_oneof![Just(32usize), Just(64usize)],
            0u32..4,
            1usize..=20,
            prop_oneof![any::<u64>(), (u64::MAX - 100)..=u64::MAX, 0u64..100],
            any::<u64>(),
        );
        let config = ProptestConfig {
            cases: 400,
            failure_persistence: None,
            ..ProptestConfig::default()
        };
        proptest::test_runner::TestRunner::new(config)
            .run(&strategy, |(key_len, shift, nsec, iv, seed)| {
                // A cheap generator (xorshift) keeps the cases fast; proptest
                // still drives the interesting parameters.
                let mut state = seed | 1;
                let mut next = || {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                };
                let key: Vec<u8> = (0..key_len).map(|_| next()).collect();
                let ss = 512usize << shift;
                let data: Vec<u8> = (0..nsec * ss).map(|_| next()).collect();
                let mut xts = Xts::new(&key, ss).unwrap();
                for simd in Simd::available() {
                    xts.simd = simd;
                    for encrypt in [true, false] {
                        let mut want = data.clone();
                        reference_xts(&key, ss, &mut want, iv, encrypt);
                        let mut got = data.clone();
                        if encrypt {
                            xts.encrypt(&mut got, iv);
                        } else {
                            xts.decrypt(&mut got, iv);
                        }
                        prop_assert!(
                            got == want,
                            "{simd:?} encrypt={encrypt} key {key_len} ss {ss} sectors {nsec} iv {iv:#x}"
                        );
                        // And back again.
                        if encrypt {
                            xts.decrypt(&mut got, iv);
                        } else {
                            xts.encrypt(&mut got, iv);
                        }
                        prop_assert!(got == data);
                    }
                }
                Ok(())
            })
            .unwrap();
    }

    /// Per-core throughput of every variant this CPU runs, printed (not asserted):
    /// `cargo test -p veil-fusefs --release --lib luks2::xts::tests::throughput
    /// -- --ignored --nocapture`. Rates are per CPU second of this thread, so a
    /// busy machine skews them less than wall time would.
    #[test]
    #[ignore]
    fn throughput() {
        fn cpu_secs() -> f64 {
            let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
            s.split_whitespace().next().unwrap().parse::<f64>().unwrap() / 1e9
        }
        let secs: f64 = std::env::var("XTS_BENCH_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0.5);
        for key_len in [64usize, 32] {
            let key: Vec<u8> = (0..key_len as u8).collect();
            for ss in [512usize, 4096] {
                for len in [8 << 10, 128 << 10, 16 << 20] {
                    let mut xts = Xts::new(&key, ss).unwrap();
                    let mut buf = vec![0x5au8; len];
                    for simd in Simd::available() {
                        if std::env::var("XTS_BENCH_ONLY").is_ok_and(|v| v != format!("{simd:?}")) {
                            continue;
                        }
                        xts.simd = simd;
                        let mut line = format!(
                            "aes-{}-xts ss {ss:4} buf {:6} KiB {:>8}:",
                            key_len * 4,
                            len >> 10,
                            format!("{simd:?}")
                        );
                        for dir in [Dir::Decrypt, Dir::Encrypt] {
                            xts.serial(&mut buf, 0, dir);
                            let (c0, t) = (cpu_secs(), std::time::Instant::now());
                            let mut n = 0u64;
                            // Several calls per clock read: reading the clock
                            // costs as much as a small call.
                            let per = (1 << 20) / len + 1;
                            while t.elapsed().as_secs_f64() < secs {
                                for _ in 0..per {
                                    xts.serial(std::hint::black_box(&mut buf), n, dir);
                                    n += 1;
                                }
                            }
                            let cpu = cpu_secs() - c0;
                            let name = match dir {
                                Dir::Decrypt => "dec",
                                Dir::Encrypt => "enc",
                            };
                            line +=
                                &format!(" {name} {:5.2} GB/s", n as f64 * len as f64 / cpu / 1e9);
                        }
                        println!("{line}");
                    }
                }
            }
        }
    }

    /// The VAES kernel is chosen whenever the CPU has its features, so the
    /// tests that iterate `Simd::available()` cover it on such machines.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vaes_variant_is_available_when_supported() {
        use std::arch::is_x86_feature_detected as has;
        let want = has!("avx512f")
            && has!("avx512bw")
            && has!("avx512vl")
            && has!("vaes")
            && has!("vpclmulqdq")
            && has!("aes");
        assert_eq!(Simd::available().contains(&Simd::Vaes), want);
        assert_eq!(Simd::detect() == Simd::Vaes, want);
        if !want {
            eprintln!("SKIP: this CPU lacks VAES/AVX-512; the VAES kernel is not exercised");
        }
    }

    /// Every variant against the reference on fixed, larger shapes than the
    /// property test draws: one sector up to many 8 KiB batches (and sector
    /// counts around the VAES kernel's groups of four), AES-128 and AES-256,
    /// every sector size, IVs that wrap past `u64::MAX`.
    #[test]
    fn all_variants_all_shapes() {
        for key_len in [32usize, 64] {
            let key: Vec<u8> = (0..key_len as u8)
                .map(|i| i.wrapping_mul(37) ^ 0xa5)
                .collect();
            for ss in [512usize, 1024, 2048, 4096] {
                for nsec in [1usize, 2, 3, 4, 5, 7, 8, 9, 17, 40, 130] {
                    if nsec * ss > 600 << 10 {
                        continue;
                    }
                    let data: Vec<u8> = (0..nsec * ss).map(|i| (i * 131 % 251) as u8).collect();
                    for iv in [0u64, 12345, u64::MAX - 3 * (ss as u64 / 512)] {
                        let mut want_ct = data.clone();
                        reference_xts(&key, ss, &mut want_ct, iv, true);
                        let mut want_pt = data.clone();
                        reference_xts(&key, ss, &mut want_pt, iv, false);
                        let mut xts = Xts::new(&key, ss).unwrap();
                        for simd in Simd::available() {
                            xts.simd = simd;
                            let what =
                                format!("{simd:?} key {key_len} ss {ss} n {nsec} iv {iv:#x}");
                            let mut got = data.clone();
                            xts.serial(&mut got, iv, Dir::Encrypt);
                            assert!(got == want_ct, "encrypt {what}");
                            let mut got = data.clone();
                            xts.decrypt_serial(&mut got, iv);
                            assert!(got == want_pt, "decrypt {what}");
                            // Out of place, from a buffer the caller cannot write.
                            let mut got = vec![0u8; data.len()];
                            xts.decrypt_from(&data, &mut got, iv);
                            assert!(got == want_pt, "decrypt_from {what}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn parallel_equals_serial() {
        let key: Vec<u8> = (0..32).collect();
        let pt: Vec<u8> = (0..(3 << 20) as u32).map(|i| (i * 7 % 253) as u8).collect();
        for ss in [512, 4096] {
            let mut x = Xts::new(&key, ss).unwrap();
            for simd in Simd::available() {
                x.simd = simd;
                let mut a = pt.clone();
                let mut b = pt.clone();
                x.encrypt(&mut a, 40);
                x.serial(&mut b, 40, Dir::Encrypt);
                assert!(a == b, "{simd:?} ss {ss}");
                let mut c = vec![0u8; a.len()];
                x.decrypt_from(&a, &mut c, 40);
                assert!(c == pt, "decrypt_from {simd:?} ss {ss}");
                x.decrypt(&mut a, 40);
                assert!(a == pt, "{simd:?} ss {ss}");
            }
        }
    }
}
