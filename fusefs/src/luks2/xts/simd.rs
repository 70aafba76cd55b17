//! Which XTS implementation this CPU runs, and the dispatch of the tweak passes
//! to it.

use super::portable;
#[cfg(target_arch = "x86_64")]
use super::{avx512, sse};

/// Which implementation of XTS this CPU can run, detected once per
/// [`Xts`](super::Xts) so the per-batch dispatch is a predictable branch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Simd {
    /// Plain `u128` arithmetic; any CPU.
    Portable,
    /// SSE2 and PCLMULQDQ (every x86_64 CPU with AES-NI): one tweak per register.
    #[cfg(target_arch = "x86_64")]
    Sse,
    /// AVX-512 (F + BW) and VPCLMULQDQ: four tweaks per 512-bit register.
    #[cfg(target_arch = "x86_64")]
    Avx512,
    /// Additionally VAES, AVX-512 VL and AES-NI: the single-pass kernel of
    /// [`vaes`](super::vaes), which does not use the tweak passes at all.
    #[cfg(target_arch = "x86_64")]
    Vaes,
}

impl Simd {
    /// The fastest variant this CPU runs.
    pub(super) fn detect() -> Self {
        Self::available().pop().unwrap_or(Simd::Portable)
    }

    /// Every variant this CPU runs, slowest first.
    pub(super) fn available() -> Vec<Self> {
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
    pub(super) fn apply_tweaks(self, t: &[u8; 16], blocks: &mut [[u8; 16]], tw: &mut [u128]) {
        debug_assert!(blocks.len() == tw.len() && blocks.len().is_multiple_of(8));
        match self {
            Simd::Portable => portable::apply_tweaks(u128::from_le_bytes(*t), blocks, tw),
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
    pub(super) fn xor_tweaks(self, blocks: &mut [[u8; 16]], tw: &[u128]) {
        debug_assert!(blocks.len() == tw.len() && blocks.len().is_multiple_of(4));
        match self {
            Simd::Portable => portable::xor_tweaks(blocks, tw),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as in `apply_tweaks`, the features were detected at run time.
            Simd::Avx512 | Simd::Vaes => unsafe { avx512::xor_tweaks(blocks, tw) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: SSE2 is part of the x86_64 baseline.
            Simd::Sse => unsafe { sse::xor_tweaks(blocks, tw) },
        }
    }
}
