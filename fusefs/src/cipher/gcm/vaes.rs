//! AES-256-GCM in one pass with VAES and VPCLMULQDQ: sixteen blocks per step,
//! four per 512-bit register, are loaded once, CTR-encrypted (fourteen AES
//! rounds on four independent registers, which covers the AES units' latency)
//! and hashed with GHASH, and the result stored. The aes-gcm crate runs CTR and
//! GHASH as separate passes with one block per 128-bit register, which leaves
//! it at a fifth of the AES units' speed.
//!
//! GHASH is computed in POLYVAL's domain (RFC 8452, appendix A):
//! GHASH(H, X₁…Xₙ) = ByteReverse(POLYVAL(mulX(ByteReverse(H)), ByteReverse(X₁)…)).
//! POLYVAL's bit order is the registers' own, so the carry-less products need no
//! bit reflection, only a byte reversal of each block (one shuffle per
//! register). Its multiplication, dot(a, b) = a·b·x⁻¹²⁸, is a Montgomery
//! product: the 256-bit carry-less product is reduced in two steps by the
//! constant 0xc2…0 (the polynomial's terms x¹²⁷ + x¹²⁶ + x¹²¹ over x⁶⁴). With
//! the powers Hᵏ·x⁻¹²⁸⁽ᵏ⁻¹⁾ precomputed for k = 1..16, the unreduced products of
//! sixteen blocks with their powers add up and are reduced once per step.
//!
//! GCM's counter is the last 32 bits of the block, big-endian, incremented
//! modulo 2³² (inc32). It is kept byte-swapped in each 128-bit lane, so a
//! 32-bit lane-wise add is inc32, wrap included, and one shuffle per register
//! turns it back into the block AES encrypts.
//!
//! gocryptfs's nonces are 128 bits, so the first counter block is J₀ =
//! GHASH(nonce ‖ 0⁶⁴ ‖ [128]₆₄) rather than nonce ‖ 1 (NIST SP 800-38D §7.1).
//!
//! Tails (a message or associated data that is not a multiple of 256 bytes)
//! take the same step with byte-masked loads and stores: the missing bytes read
//! as zeros, which is GHASH's padding, and are never written.

use core::arch::x86_64::*;

use zeroize::{Zeroize, ZeroizeOnDrop};

use super::super::aes_ni::RoundKeys;

/// AES-256's rounds.
const R: usize = 14;
/// Blocks per step (four registers of four).
const STEP: usize = 16;
/// Bytes per step.
const STEP_BYTES: usize = 16 * STEP;

/// The expanded key: AES-256's round keys and the hash key's powers. Plain
/// bytes so zeroizing on drop is exact; deliberately no `Debug` or `Clone`.
#[derive(Zeroize, ZeroizeOnDrop)]
pub(super) struct Keys {
    aes: RoundKeys,
    /// H¹⁶, H¹⁵, …, H¹ in POLYVAL's domain (Hᵏ standing for dot(Hᵏ⁻¹, H)), as
    /// little-endian 128-bit values: the last `n` are the powers of a step of
    /// `n` blocks, the first of them taking Hⁿ.
    powers: [[u8; 16]; STEP],
}

impl Keys {
    /// Expands the AES key and computes the hash key's powers.
    ///
    /// # Safety
    /// The CPU must support AES-NI, PCLMULQDQ and SSSE3.
    pub(super) unsafe fn new(key: &[u8; 32]) -> Self {
        // SAFETY: the caller guarantees AES-NI (SSE2 is baseline); the key is 32
        // bytes, which `RoundKeys::new` accepts.
        let aes = unsafe { RoundKeys::new(key) };
        // SAFETY: the caller guarantees the features `powers` is compiled with.
        let powers = unsafe { powers(&aes) };
        Keys { aes, powers }
    }
}

/// x¹²⁸ modulo POLYVAL's polynomial x¹²⁸ + x¹²⁷ + x¹²⁶ + x¹²¹ + 1, the term
/// mulX adds when a bit leaves the top.
const POLY: u128 = 0xc200_0000_0000_0000_0000_0000_0000_0001;
/// The polynomial's middle terms over x⁶⁴: the Montgomery reduction's constant.
const RED: i64 = 0xc200_0000_0000_0000_u64 as i64;

/// Every 128-bit lane's bytes reversed: GHASH's byte order to POLYVAL's.
#[inline]
#[target_feature(enable = "sse2,ssse3")]
fn rev_mask() -> __m128i {
    _mm_set_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
}

/// The last four bytes of every 128-bit lane reversed: a counter block to the
/// form whose fourth 32-bit word is the counter, and back.
#[inline]
#[target_feature(enable = "sse2")]
fn ctr_mask() -> __m128i {
    _mm_set_epi8(12, 13, 14, 15, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0)
}

/// One block through AES-256.
#[inline]
#[target_feature(enable = "sse2,aes")]
fn encrypt1(k: &RoundKeys, x: __m128i) -> __m128i {
    // SAFETY: every round key is a 16-byte array; unaligned loads.
    let ld = |r: &[u8; 16]| unsafe { _mm_loadu_si128(r.as_ptr().cast()) };
    let enc = k.enc();
    let mut x = _mm_xor_si128(x, ld(&enc[0]));
    for r in &enc[1..R] {
        x = _mm_aesenc_si128(x, ld(r));
    }
    _mm_aesenclast_si128(x, ld(&enc[R]))
}

/// The 256-bit carry-less product a·b, as its low and high halves.
#[inline]
#[target_feature(enable = "sse2,pclmulqdq")]
fn mul(a: __m128i, b: __m128i) -> (__m128i, __m128i) {
    let lo = _mm_clmulepi64_si128::<0x00>(a, b);
    let hi = _mm_clmulepi64_si128::<0x11>(a, b);
    let mid = _mm_xor_si128(
        _mm_clmulepi64_si128::<0x01>(a, b),
        _mm_clmulepi64_si128::<0x10>(a, b),
    );
    (
        _mm_xor_si128(lo, _mm_slli_si128::<8>(mid)),
        _mm_xor_si128(hi, _mm_srli_si128::<8>(mid)),
    )
}

/// (hi·x¹²⁸ + lo)·x⁻¹²⁸ modulo POLYVAL's polynomial, in two Montgomery steps:
/// each adds the low 64 bits times the polynomial (whose low 64 bits are 1, so
/// the low word cancels; the rest is that word times the constant, shifted up
/// 64) and drops the zeroed low word. The second term of each step's XOR is that
/// word moved up (swapping the halves drops it and places it in one go).
#[inline]
#[target_feature(enable = "sse2,pclmulqdq")]
fn reduce(lo: __m128i, hi: __m128i) -> __m128i {
    let c = _mm_set_epi64x(0, RED);
    let t = _mm_clmulepi64_si128::<0x00>(lo, c);
    let lo = _mm_xor_si128(_mm_shuffle_epi32::<0x4e>(lo), t);
    let t = _mm_clmulepi64_si128::<0x00>(lo, c);
    let lo = _mm_xor_si128(_mm_shuffle_epi32::<0x4e>(lo), t);
    _mm_xor_si128(hi, lo)
}

/// POLYVAL's product dot(a, b) = a·b·x⁻¹²⁸.
#[inline]
#[target_feature(enable = "sse2,pclmulqdq")]
fn dot(a: __m128i, b: __m128i) -> __m128i {
    let (lo, hi) = mul(a, b);
    reduce(lo, hi)
}

/// The hash key H = E_K(0¹²⁸) taken to POLYVAL's domain, and its powers.
#[target_feature(enable = "sse2,ssse3,aes,pclmulqdq")]
fn powers(k: &RoundKeys) -> [[u8; 16]; STEP] {
    let h = encrypt1(k, _mm_setzero_si128());
    let mut bytes = [0u8; 16];
    // SAFETY: a 16-byte array; unaligned store.
    unsafe { _mm_storeu_si128(bytes.as_mut_ptr().cast(), h) };
    // ByteReverse(H) read little-endian is H read big-endian; then mulX.
    let mut v = u128::from_be_bytes(bytes);
    v = (v << 1) ^ if v >> 127 == 1 { POLY } else { 0 };
    bytes = v.to_le_bytes();
    // SAFETY: as above; unaligned load.
    let h1 = unsafe { _mm_loadu_si128(bytes.as_ptr().cast()) };
    let mut out = [[0u8; 16]; STEP];
    let mut hk = h1;
    for k in 1..=STEP {
        // SAFETY: a 16-byte array; unaligned store.
        unsafe { _mm_storeu_si128(out[STEP - k].as_mut_ptr().cast(), hk) };
        hk = dot(hk, h1);
    }
    // Key material: a best effort for the locals (the caller wipes the stack).
    v.zeroize();
    bytes.zeroize();
    out
}

/// What every step needs: the key (for the hash key's powers), the round keys
/// in all four lanes, the shuffle masks and the counters' step.
struct Ctx<'a> {
    keys: &'a Keys,
    k: [__m512i; R + 1],
    rev: __m512i,
    ctr: __m512i,
    /// 16 added to each lane's counter.
    sixteen: __m512i,
}

impl<'a> Ctx<'a> {
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,ssse3")]
    fn new(keys: &'a Keys) -> Self {
        let k = keys.aes.enc().map(|r| {
            // SAFETY: a round key is a 16-byte array; unaligned load.
            _mm512_broadcast_i32x4(unsafe { _mm_loadu_si128(r.as_ptr().cast()) })
        });
        Ctx {
            keys,
            k,
            rev: _mm512_broadcast_i32x4(rev_mask()),
            ctr: _mm512_broadcast_i32x4(ctr_mask()),
            sixteen: _mm512_set_epi32(16, 0, 0, 0, 16, 0, 0, 0, 16, 0, 0, 0, 16, 0, 0, 0),
        }
    }

    /// The powers of a step of `n` blocks (1..=16): register `j`, lane `i`
    /// holds H^(n − 4j − i), zero past the `n`th block.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn powers(&self, n: usize) -> [__m512i; 4] {
        debug_assert!((1..=STEP).contains(&n));
        let base = self
            .keys
            .powers
            .as_ptr()
            .cast::<u8>()
            .wrapping_add(16 * (STEP - n));
        core::array::from_fn(|j| {
            let lanes = n.saturating_sub(4 * j).min(4);
            let m = ((1u16 << (2 * lanes)) - 1) as __mmask8;
            // SAFETY: the lanes loaded are powers[STEP - n + 4j + i] for
            // 4j + i < n, inside the array; the masked-off lanes (past its end)
            // are not accessed.
            unsafe { _mm512_maskz_loadu_epi64(m, base.wrapping_add(64 * j).cast()) }
        })
    }
}

/// The byte masks of a step over `len` bytes (≤ 256), one per register.
#[inline]
fn masks(len: usize) -> [u64; 4] {
    core::array::from_fn(|j| match len.saturating_sub(64 * j) {
        r if r >= 64 => !0,
        r => (1u64 << r) - 1,
    })
}

/// The sum of the four lanes.
#[inline]
#[target_feature(enable = "avx512f")]
fn lanes_xor(z: __m512i) -> __m128i {
    let y = _mm256_xor_si256(_mm512_castsi512_si256(z), _mm512_extracti64x4_epi64::<1>(z));
    _mm_xor_si128(_mm256_castsi256_si128(y), _mm256_extracti128_si256::<1>(y))
}

/// One GHASH step: `acc` ⊕ the first block, then Σ blocksᵢ·powersᵢ, reduced.
/// `g` holds the blocks in GHASH's byte order, zero past the last.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,vpclmulqdq,pclmulqdq")]
fn ghash(c: &Ctx, acc: __m128i, g: [__m512i; 4], h: &[__m512i; 4]) -> __m128i {
    let mut x = g.map(|gj| _mm512_shuffle_epi8(gj, c.rev));
    x[0] = _mm512_xor_si512(x[0], _mm512_zextsi128_si512(acc));
    // The three-way XORs (ternary logic 0x96) leave the AES rounds more of the
    // two vector ports 512-bit instructions run on.
    let xor3 = |a, b, c| _mm512_ternarylogic_epi64::<0x96>(a, b, c);
    let p = |imm: i32, j: usize| match imm {
        0x00 => _mm512_clmulepi64_epi128::<0x00>(x[j], h[j]),
        0x11 => _mm512_clmulepi64_epi128::<0x11>(x[j], h[j]),
        0x01 => _mm512_clmulepi64_epi128::<0x01>(x[j], h[j]),
        _ => _mm512_clmulepi64_epi128::<0x10>(x[j], h[j]),
    };
    let lo = _mm512_xor_si512(xor3(p(0x00, 0), p(0x00, 1), p(0x00, 2)), p(0x00, 3));
    let hi = _mm512_xor_si512(xor3(p(0x11, 0), p(0x11, 1), p(0x11, 2)), p(0x11, 3));
    let mid = xor3(p(0x01, 0), p(0x10, 0), p(0x01, 1));
    let mid = xor3(mid, p(0x10, 1), p(0x01, 2));
    let mid = xor3(mid, p(0x10, 2), p(0x01, 3));
    let mid = _mm512_xor_si512(mid, p(0x10, 3));
    let lo = _mm512_xor_si512(lo, _mm512_bslli_epi128::<8>(mid));
    let hi = _mm512_xor_si512(hi, _mm512_bsrli_epi128::<8>(mid));
    reduce(lanes_xor(lo), lanes_xor(hi))
}

/// GHASH over `len` bytes (≤ 256) at `src`, zero-padded: associated data.
///
/// # Safety
/// `src..src + len` must be valid for reads.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,vpclmulqdq,pclmulqdq")]
unsafe fn ghash_step(c: &Ctx, acc: __m128i, src: *const u8, len: usize) -> __m128i {
    let m = masks(len);
    // SAFETY: the bytes loaded are src + 64j + b for b < the mask's length, so
    // below src + len (the caller's contract); masked-off bytes are not
    // accessed.
    let g = core::array::from_fn(|j| unsafe {
        _mm512_maskz_loadu_epi8(m[j], src.wrapping_add(64 * j).cast())
    });
    ghash(c, acc, g, &c.powers(len.div_ceil(16)))
}

/// One step of the message: `len` bytes (≤ 256; all 256 when `FULL`) read at
/// `src`, XORed with the key stream of the counters `ctr` (advanced by 16) and
/// written at `dst`, and hashed (the ciphertext: what is written when `ENC`,
/// what is read otherwise). `h` are the powers of a step of `len` bytes.
///
/// # Safety
/// `src..src + len` must be valid for reads, `dst..dst + len` for writes, and
/// the two the same place or not overlapping.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,vaes,vpclmulqdq,pclmulqdq")]
unsafe fn crypt_step<const ENC: bool, const FULL: bool>(
    c: &Ctx,
    ctr: &mut [__m512i; 4],
    acc: __m128i,
    h: &[__m512i; 4],
    src: *const u8,
    dst: *mut u8,
    len: usize,
) -> __m128i {
    let m = if FULL { [!0; 4] } else { masks(len) };
    let mut x = [_mm512_setzero_si512(); 4];
    let mut b = [_mm512_setzero_si512(); 4];
    for j in 0..4 {
        // SAFETY: at most the bytes src + 64j + b below src + len are read
        // (all 64 of each register when FULL, where len = 256), which the
        // caller guarantees; masked-off bytes are not accessed.
        x[j] = unsafe {
            let p = src.wrapping_add(64 * j);
            if FULL {
                _mm512_loadu_si512(p.cast())
            } else {
                _mm512_maskz_loadu_epi8(m[j], p.cast())
            }
        };
        b[j] = _mm512_xor_si512(_mm512_shuffle_epi8(ctr[j], c.ctr), c.k[0]);
        ctr[j] = _mm512_add_epi32(ctr[j], c.sixteen);
    }
    for k in &c.k[1..R] {
        for bj in &mut b {
            *bj = _mm512_aesenc_epi128(*bj, *k);
        }
    }
    let mut g = [_mm512_setzero_si512(); 4];
    for j in 0..4 {
        // The last round ends with an XOR of its key: the data's XOR folded in.
        let y = _mm512_aesenclast_epi128(b[j], _mm512_xor_si512(c.k[R], x[j]));
        // SAFETY: as for the loads, at dst, which the caller guarantees
        // writable; masked-off bytes are not written.
        unsafe {
            let p = dst.wrapping_add(64 * j);
            if FULL {
                _mm512_storeu_si512(p.cast(), y)
            } else {
                _mm512_mask_storeu_epi8(p.cast(), m[j], y)
            }
        }
        g[j] = match (ENC, FULL) {
            (false, _) => x[j],
            (true, true) => y,
            // Past the message, the key stream is not GHASH's zero padding.
            (true, false) => _mm512_maskz_mov_epi8(m[j], y),
        };
    }
    ghash(c, acc, g, h)
}

/// J₀ for a 128-bit nonce: GHASH(nonce ‖ 0⁶⁴ ‖ [128]₆₄), as the block AES takes.
#[inline]
#[target_feature(enable = "sse2,ssse3,pclmulqdq")]
fn j0(keys: &Keys, nonce: &[u8; 16]) -> __m128i {
    // SAFETY: 16-byte arrays; unaligned loads.
    let (n, h1, h2) = unsafe {
        (
            _mm_loadu_si128(nonce.as_ptr().cast()),
            _mm_loadu_si128(keys.powers[STEP - 1].as_ptr().cast()),
            _mm_loadu_si128(keys.powers[STEP - 2].as_ptr().cast()),
        )
    };
    // dot(dot(N, H) ⊕ L, H) = N·H²·x⁻²⁵⁶ ⊕ L·H·x⁻¹²⁸: one reduction.
    let (a_lo, a_hi) = mul(_mm_shuffle_epi8(n, rev_mask()), h2);
    let (b_lo, b_hi) = mul(_mm_set_epi64x(0, 128), h1);
    let s = reduce(_mm_xor_si128(a_lo, b_lo), _mm_xor_si128(a_hi, b_hi));
    _mm_shuffle_epi8(s, rev_mask())
}

/// GCM over `dst.len()` bytes read at `src` (`dst` itself, or as many bytes
/// that do not overlap it) into `dst`, with nonce `nonce` and associated data
/// `aad`: encryption when `ENC`, else decryption. Returns the tag (of the
/// ciphertext either way; the caller compares it when decrypting).
///
/// # Safety
/// The CPU must support AVX-512 F/BW/VL, VAES, VPCLMULQDQ, AES-NI, PCLMULQDQ and
/// SSSE3; `src` must be `dst`'s start or valid for reads of `dst.len()` bytes
/// and not overlap `dst`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,vaes,vpclmulqdq,aes,pclmulqdq,ssse3")]
pub(super) unsafe fn crypt<const ENC: bool>(
    keys: &Keys,
    nonce: &[u8; 16],
    aad: &[u8],
    src: *const u8,
    dst: &mut [u8],
) -> [u8; 16] {
    let c = Ctx::new(keys);
    let j0 = j0(keys, nonce);
    // E_K(J₀), which masks the tag: first, so that its rounds overlap the rest.
    let mask = encrypt1(&keys.aes, j0);
    let mut acc = _mm_setzero_si128();
    let mut a = aad.chunks_exact(STEP_BYTES);
    for chunk in &mut a {
        // SAFETY: a chunk of `aad`, 256 bytes.
        acc = unsafe { ghash_step(&c, acc, chunk.as_ptr(), STEP_BYTES) };
    }
    let rest = a.remainder();
    if !rest.is_empty() {
        // SAFETY: the rest of `aad`, `rest.len()` bytes.
        acc = unsafe { ghash_step(&c, acc, rest.as_ptr(), rest.len()) };
    }
    // Register j, lane i: the counter of block 4j + i of the step, the first
    // being inc32(J₀).
    let base = _mm512_shuffle_epi8(_mm512_broadcast_i32x4(j0), c.ctr);
    let mut ctr: [__m512i; 4] = core::array::from_fn(|j| {
        let b = 4 * j as i32;
        let inc = _mm512_set_epi32(
            b + 4,
            0,
            0,
            0,
            b + 3,
            0,
            0,
            0,
            b + 2,
            0,
            0,
            0,
            b + 1,
            0,
            0,
            0,
        );
        _mm512_add_epi32(base, inc)
    });
    let len = dst.len();
    let p = dst.as_mut_ptr();
    let full = c.powers(STEP);
    let mut off = 0;
    while len - off >= STEP_BYTES {
        // SAFETY: off + 256 <= len: the bytes lie in `dst` and at `src` (as
        // long, the caller's contract), the same place or apart.
        acc = unsafe {
            crypt_step::<ENC, true>(
                &c,
                &mut ctr,
                acc,
                &full,
                src.add(off),
                p.add(off),
                STEP_BYTES,
            )
        };
        off += STEP_BYTES;
    }
    if off < len {
        let n = len - off;
        // SAFETY: as above, for the last n < 256 bytes.
        acc = unsafe {
            crypt_step::<ENC, false>(
                &c,
                &mut ctr,
                acc,
                &c.powers(n.div_ceil(16)),
                src.add(off),
                p.add(off),
                n,
            )
        };
    }
    // The lengths block, [len(A)·8]₆₄ ‖ [len(C)·8]₆₄, byte-reversed.
    let bits = _mm_set_epi64x((aad.len() as u64 * 8) as i64, (len as u64 * 8) as i64);
    // SAFETY: a 16-byte array; unaligned load.
    let h1 = unsafe { _mm_loadu_si128(keys.powers[STEP - 1].as_ptr().cast()) };
    let s = dot(_mm_xor_si128(acc, bits), h1);
    let tag = _mm_xor_si128(_mm_shuffle_epi8(s, rev_mask()), mask);
    let mut out = [0u8; 16];
    // SAFETY: a 16-byte array; unaligned store.
    unsafe { _mm_storeu_si128(out.as_mut_ptr().cast(), tag) };
    out
}
