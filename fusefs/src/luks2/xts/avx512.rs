//! The tweak passes with 512-bit registers, four blocks (and four tweaks) each.
//! Multiplying a register of four consecutive tweaks by α⁸ gives the four tweaks
//! eight blocks further on: per 128-bit lane a one-byte shift plus the reduction of
//! the byte shifted out (that byte carry-less times 0x87, one VPCLMULQDQ). Two
//! such chains (blocks 0–3 and 4–7 of every group of eight) run interleaved, so
//! the carry-less multiply's latency is hidden.

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
        // batch of a large buffer begins with cache misses. Two prefetches per
        // step spread the requests; a burst of them per batch stalls instead.
        let ahead = super::batched::BATCH_BLOCKS / 4;
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
