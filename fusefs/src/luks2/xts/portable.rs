//! The tweak passes in plain `u128` arithmetic, for any CPU.

#![forbid(unsafe_code)]

/// Multiplies a tweak by α in GF(2^128) (little-endian convention of IEEE 1619).
#[inline(always)]
pub(super) fn mul_alpha(t: u128) -> u128 {
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
pub(super) fn mul_alpha8(t: u128) -> u128 {
    (t << 8) ^ MUL8[(t >> 120) as usize]
}

/// Portable version of [`Simd::apply_tweaks`](super::simd::Simd::apply_tweaks). Eight independent chains (each
/// stepping by α⁸) instead of one serial chain, so the CPU overlaps them; the
/// XOR is fused in to save a pass over the data.
#[inline(always)]
pub(super) fn apply_tweaks(t: u128, blocks: &mut [[u8; 16]], tw: &mut [u128]) {
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

/// Portable version of [`Simd::xor_tweaks`](super::simd::Simd::xor_tweaks).
#[inline(always)]
pub(super) fn xor_tweaks(blocks: &mut [[u8; 16]], tweaks: &[u128]) {
    for (b, t) in blocks.iter_mut().zip(tweaks) {
        *b = (u128::from_le_bytes(*b) ^ t).to_le_bytes();
    }
}
