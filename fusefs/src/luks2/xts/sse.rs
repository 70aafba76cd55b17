//! The tweak passes with 128-bit registers, for x86_64 CPUs without AVX-512:
//! the same eight interleaved α⁸ chains as [`avx512`](super::avx512), one tweak per register.

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
