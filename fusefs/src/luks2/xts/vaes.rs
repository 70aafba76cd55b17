//! Single-pass AES-XTS with VAES and AVX-512: the data goes through the
//! registers once per sector — load, XOR with the tweak, every AES round, XOR
//! with the tweak, store — instead of the three passes over an L1 batch of the
//! other variants. Four blocks per 512-bit register, sixteen blocks per loop
//! iteration in four independent registers, so the AES units' latency is
//! covered.
//!
//! The `aes` crate keeps its round keys private, so this module expands the
//! keys itself with AES-NI (FIPS-197 §5.2 for the encryption schedule, §5.3.5's
//! equivalent inverse cipher for the decryption one).

use core::arch::x86_64::*;

use zeroize::{Zeroize, ZeroizeOnDrop};

/// Expanded AES key: `enc[0..=rounds]` for the cipher, `dec[0..=rounds]` for the
/// equivalent inverse cipher (`dec[i]` = InvMixColumns(`enc[rounds - i]`) for
/// the middle rounds). Plain bytes so zeroizing on drop is exact; there is
/// deliberately no `Debug` or `Clone`.
#[derive(Zeroize, ZeroizeOnDrop)]
pub(super) struct RoundKeys {
    enc: [[u8; 16]; 15],
    dec: [[u8; 16]; 15],
    rounds: usize,
}

impl RoundKeys {
    /// `key` is 16 or 32 bytes (callers check; anything else panics).
    ///
    /// # Safety
    /// The CPU must support AES-NI and SSE2.
    pub(super) unsafe fn new(key: &[u8]) -> Self {
        let mut k = RoundKeys {
            enc: [[0; 16]; 15],
            dec: [[0; 16]; 15],
            rounds: 0,
        };
        // SAFETY: the caller guarantees AES-NI; `expand` checks the key length.
        unsafe { expand(key, &mut k) };
        k
    }

    pub(super) fn rounds(&self) -> usize {
        self.rounds
    }
}

/// One step of the AES-128 schedule (and the even steps of AES-256's): `prev`
/// is the round key four words back, `assist` the output of AESKEYGENASSIST
/// with the word to mix in broadcast by `SHUF` (0xff: RotWord/SubWord/Rcon of
/// the last word; 0xaa: SubWord only, for AES-256's odd steps). The three
/// shifted XORs turn word i into the XOR of words 0..=i of `prev`, which is
/// what the schedule's running `w[i] = w[i-Nk] ^ w[i-1]` unrolls to.
#[inline]
#[target_feature(enable = "sse2,aes")]
fn step<const SHUF: i32>(prev: __m128i, assist: __m128i) -> __m128i {
    let a = _mm_shuffle_epi32::<SHUF>(assist);
    let mut k = prev;
    k = _mm_xor_si128(k, _mm_slli_si128::<4>(k));
    k = _mm_xor_si128(k, _mm_slli_si128::<4>(k));
    k = _mm_xor_si128(k, _mm_slli_si128::<4>(k));
    _mm_xor_si128(k, a)
}

#[target_feature(enable = "sse2,aes")]
fn expand(key: &[u8], out: &mut RoundKeys) {
    let mut rk = [_mm_setzero_si128(); 15];
    let rounds = match key.len() {
        16 => {
            // SAFETY: the key is 16 bytes; unaligned load.
            let mut k = unsafe { _mm_loadu_si128(key.as_ptr().cast()) };
            rk[0] = k;
            // AESKEYGENASSIST takes Rcon as an immediate, hence one line per round.
            macro_rules! r128 {
                ($i:expr, $rcon:expr) => {
                    k = step::<0xff>(k, _mm_aeskeygenassist_si128::<$rcon>(k));
                    rk[$i] = k;
                };
            }
            r128!(1, 0x01);
            r128!(2, 0x02);
            r128!(3, 0x04);
            r128!(4, 0x08);
            r128!(5, 0x10);
            r128!(6, 0x20);
            r128!(7, 0x40);
            r128!(8, 0x80);
            r128!(9, 0x1b);
            r128!(10, 0x36);
            10
        }
        32 => {
            // SAFETY: the key is 32 bytes; two unaligned 16-byte loads.
            let (mut a, mut b) = unsafe {
                (
                    _mm_loadu_si128(key.as_ptr().cast()),
                    _mm_loadu_si128(key.as_ptr().add(16).cast()),
                )
            };
            rk[0] = a;
            rk[1] = b;
            // Round keys come in pairs: the first mixes in RotWord/SubWord/Rcon
            // of the previous key's last word, the second only SubWord (the
            // AES-256 schedule's extra step); round 14 is a lone first half.
            macro_rules! r256 {
                ($i:expr, $rcon:expr) => {
                    a = step::<0xff>(a, _mm_aeskeygenassist_si128::<$rcon>(b));
                    rk[$i] = a;
                };
                ($i:expr, $rcon:expr, pair) => {
                    r256!($i, $rcon);
                    b = step::<0xaa>(b, _mm_aeskeygenassist_si128::<0>(a));
                    rk[$i + 1] = b;
                };
            }
            r256!(2, 0x01, pair);
            r256!(4, 0x02, pair);
            r256!(6, 0x04, pair);
            r256!(8, 0x08, pair);
            r256!(10, 0x10, pair);
            r256!(12, 0x20, pair);
            r256!(14, 0x40);
            14
        }
        n => panic!("AES key of {n} bytes"),
    };
    out.rounds = rounds;
    for i in 0..=rounds {
        let d = if i == 0 || i == rounds {
            rk[rounds - i]
        } else {
            _mm_aesimc_si128(rk[rounds - i])
        };
        // SAFETY: each destination is a 16-byte array; unaligned stores.
        unsafe {
            _mm_storeu_si128(out.enc[i].as_mut_ptr().cast(), rk[i]);
            _mm_storeu_si128(out.dec[i].as_mut_ptr().cast(), d);
        }
    }
    // The schedule is key material: clear the local copies (a best effort, as
    // for any register values the compiler spilled).
    rk.iter_mut().for_each(|r| *r = _mm_setzero_si128());
    core::hint::black_box(&mut rk);
}

/// Round keys broadcast to all four lanes, loaded once per call.
#[inline]
#[target_feature(enable = "avx512f")]
fn broadcast(keys: &[[u8; 16]; 15]) -> [__m512i; 15] {
    // SAFETY: each element is 16 readable bytes; unaligned loads.
    keys.map(|k| _mm512_broadcast_i32x4(unsafe { _mm_loadu_si128(k.as_ptr().cast()) }))
}

/// Encrypts the four lanes of `x` independently with the tweak key.
#[inline]
#[target_feature(enable = "avx512f,vaes")]
fn encrypt4<const R: usize>(x: __m512i, k: &[__m512i; 15]) -> __m512i {
    let mut x = _mm512_xor_si512(x, k[0]);
    for kr in &k[1..R] {
        x = _mm512_aesenc_epi128(x, *kr);
    }
    _mm512_aesenclast_epi128(x, k[R])
}

/// Lane-wise multiplication by α¹⁶ (four consecutive tweaks → the four tweaks
/// sixteen blocks on): a two-byte shift of every 128-bit lane plus the
/// reduction of the 16 bits shifted out (their carry-less product with 0x87
/// has 23 bits, so it stays in the low quadword).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,vpclmulqdq")]
fn mul_alpha16(z: __m512i, poly: __m512i) -> __m512i {
    let top = _mm512_bsrli_epi128::<14>(z);
    let red = _mm512_clmulepi64_epi128::<0x00>(top, poly);
    _mm512_xor_si512(_mm512_bslli_epi128::<2>(z), red)
}

/// Lane `L` of `z` broadcast to all four lanes.
#[inline]
#[target_feature(enable = "avx512f")]
fn lane<const L: usize>(z: __m512i) -> __m512i {
    match L {
        0 => _mm512_shuffle_i64x2::<0x00>(z, z),
        1 => _mm512_shuffle_i64x2::<0x55>(z, z),
        2 => _mm512_shuffle_i64x2::<0xaa>(z, z),
        _ => _mm512_shuffle_i64x2::<0xff>(z, z),
    }
}

/// How far ahead of the current block the data is prefetched. The hardware
/// prefetcher stops at 4 KiB page boundaries, so a large buffer would otherwise
/// start every page with cache misses.
const PREFETCH_AHEAD: usize = 4096;

/// Registers (of four blocks each) in flight per loop iteration.
const WIDTH: usize = 4;

/// The first sixteen tweaks of a sector as multipliers: register `j`, lane
/// `i` holds the polynomial x^(4j+i) (its low quadword `1 << (4j+i)`), for
/// [`mul_x_k`].
#[inline]
#[target_feature(enable = "avx512f")]
fn tweak_shifts() -> [__m512i; WIDTH] {
    core::array::from_fn(|j| {
        let x = |i: usize| 1i64 << (4 * j + i);
        _mm512_set_epi64(0, x(3), 0, x(2), 0, x(1), 0, x(0))
    })
}

/// `t·x^k` in GF(2¹²⁸) per lane, `x^k` (k < 64) given as `xk`'s low quadwords:
/// three carry-less multiplies and a byte shift. Unlike the variable bit
/// shifts of `mul_alpha_k`, none of these runs on the port that executes the
/// 512-bit AES rounds (port 0 on Intel cores), so a sector's sixteen starting
/// tweaks cost the rounds nothing: 512-byte sectors ran 17 % slower with the
/// shifts.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,vpclmulqdq")]
fn mul_x_k(t: __m512i, xk: __m512i, poly: __m512i) -> __m512i {
    // t = hi·x⁶⁴ + lo: t·x^k = lo·x^k + (hi·x^k)·x⁶⁴, each product under 128 bits.
    let lo = _mm512_clmulepi64_epi128::<0x00>(t, xk);
    let hi = _mm512_clmulepi64_epi128::<0x01>(t, xk);
    // hi·x⁶⁴: its low quadword moves up; its high one (k bits) passes x¹²⁸,
    // which is x⁷ + x² + x + 1 modulo the XTS polynomial (a product of k + 7
    // bits, so one reduction step is enough).
    let red = _mm512_clmulepi64_epi128::<0x01>(hi, poly);
    _mm512_ternarylogic_epi64::<0x96>(lo, _mm512_bslli_epi128::<8>(hi), red)
}

/// XTS over one sector of `ss` bytes read at `src` and written at `p` (the same
/// place, or one that does not overlap it) whose initial tweak is `t`
/// (broadcast to all lanes).
///
/// # Safety
/// `src..src + ss` must be valid for reads, `p..p + ss` for writes, `ss` a
/// multiple of 64·[`WIDTH`].
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,vaes,vpclmulqdq,aes")]
unsafe fn sector<const R: usize, const ENC: bool>(
    k: &[__m512i; 15],
    shifts: &[__m512i; WIDTH],
    poly: __m512i,
    t: __m512i,
    src: *const u8,
    p: *mut u8,
    ss: usize,
) {
    let mut tw = shifts.map(|xk| mul_x_k(t, xk, poly));
    let mut off = 0;
    loop {
        // SAFETY: off + 64·WIDTH <= ss (`ss` is a multiple of 64·WIDTH and
        // the loop stops when off reaches it), so every access lies in
        // src..src + ss or p..p + ss, which the caller guarantees; unaligned
        // loads and stores. The prefetches are hints that cannot fault.
        unsafe {
            let (r, q) = (src.add(off), p.add(off));
            for j in 0..WIDTH {
                _mm_prefetch::<_MM_HINT_T0>(r.wrapping_add(PREFETCH_AHEAD + 64 * j).cast());
            }
            let mut x = [_mm512_setzero_si512(); WIDTH];
            for j in 0..WIDTH {
                let d = _mm512_loadu_si512(r.add(64 * j).cast());
                x[j] = _mm512_ternarylogic_epi64::<0x96>(d, tw[j], k[0]);
            }
            for kr in &k[1..R] {
                for xj in &mut x {
                    *xj = if ENC {
                        _mm512_aesenc_epi128(*xj, *kr)
                    } else {
                        _mm512_aesdec_epi128(*xj, *kr)
                    };
                }
            }
            // The last round ends with an XOR of its key; folding the tweak
            // into that key takes the final XOR off the dependency chain.
            for j in 0..WIDTH {
                let kl = _mm512_xor_si512(k[R], tw[j]);
                let y = if ENC {
                    _mm512_aesenclast_epi128(x[j], kl)
                } else {
                    _mm512_aesdeclast_epi128(x[j], kl)
                };
                _mm512_storeu_si512(q.add(64 * j).cast(), y);
            }
        }
        off += 64 * WIDTH;
        if off >= ss {
            break;
        }
        // Not after the last step: for 512-byte sectors that would be half
        // of the tweak arithmetic.
        tw = tw.map(|t| mul_alpha16(t, poly));
    }
}

/// XTS over whole sectors of `buf` (a multiple of `ss` long, `ss` a multiple of
/// 256), sector `j` with IV `first_iv + j·units`, read from `src`. `ENC` selects
/// the direction; `R` is the number of rounds of both keys (10 or 14).
///
/// # Safety
/// `src` is `buf`'s start, or valid for reads of `buf.len()` bytes and not
/// overlapping `buf`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,vaes,vpclmulqdq,aes")]
pub(super) unsafe fn crypt<const R: usize, const ENC: bool>(
    data: &RoundKeys,
    tweak: &RoundKeys,
    ss: usize,
    src: *const u8,
    buf: &mut [u8],
    first_iv: u64,
    units: u64,
) {
    assert!(data.rounds == R && tweak.rounds == R);
    assert!(ss.is_multiple_of(64 * WIDTH) && buf.len().is_multiple_of(ss));
    let k = broadcast(if ENC { &data.enc } else { &data.dec });
    let tk = broadcast(&tweak.enc);
    let poly = _mm512_set1_epi64(0x87);
    let shifts = tweak_shifts();
    let nsec = buf.len() / ss;
    let base = buf.as_mut_ptr();

    // Initial tweaks E_k2(LE128(iv)) of four sectors at a time, one per lane.
    // Those of the next group are computed before the current group is
    // processed: the chain of dependent AES rounds then overlaps with the data
    // instead of stalling every group's start (one wasted group per call).
    let tweaks = |g: usize| {
        let iv = |s: usize| first_iv.wrapping_add(((g + s) as u64).wrapping_mul(units)) as i64;
        encrypt4::<R>(
            _mm512_set_epi64(0, iv(3), 0, iv(2), 0, iv(1), 0, iv(0)),
            &tk,
        )
    };
    let mut t4 = tweaks(0);
    for g in (0..nsec).step_by(4) {
        let next = tweaks(g + 4);
        let n = (nsec - g).min(4);
        let p = |s: usize| base.wrapping_add((g + s) * ss);
        let r = |s: usize| src.wrapping_add((g + s) * ss);
        // SAFETY: sector g + s < nsec spans (g + s)·ss .. (g + s + 1)·ss <=
        // buf.len(), in `buf` and at `src` (as long: the caller's contract); `ss`
        // is a multiple of 64·WIDTH (asserted above).
        unsafe {
            sector::<R, ENC>(&k, &shifts, poly, lane::<0>(t4), r(0), p(0), ss);
            if n > 1 {
                sector::<R, ENC>(&k, &shifts, poly, lane::<1>(t4), r(1), p(1), ss);
            }
            if n > 2 {
                sector::<R, ENC>(&k, &shifts, poly, lane::<2>(t4), r(2), p(2), ss);
            }
            if n > 3 {
                sector::<R, ENC>(&k, &shifts, poly, lane::<3>(t4), r(3), p(3), ss);
            }
        }
        t4 = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn has_aesni() -> bool {
        std::arch::is_x86_feature_detected!("aes")
    }

    use super::super::tests::hex;

    /// FIPS-197 appendix A.1 and A.3: the last round key of the expansion of
    /// the example keys (words w[40..44] and w[56..60]), plus the first round
    /// key after the cipher key itself.
    #[test]
    fn key_expansion_fips197_appendix_a() {
        if !has_aesni() {
            eprintln!("SKIP: no AES-NI");
            return;
        }
        // SAFETY: AES-NI detected above (SSE2 is baseline).
        let k = unsafe { RoundKeys::new(&hex("2b7e151628aed2a6abf7158809cf4f3c")) };
        assert_eq!(k.rounds, 10);
        assert_eq!(k.enc[1].to_vec(), hex("a0fafe1788542cb123a339392a6c7605"));
        assert_eq!(k.enc[10].to_vec(), hex("d014f9a8c9ee2589e13f0cc8b6630ca6"));
        let key = hex("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4");
        // SAFETY: as above.
        let k = unsafe { RoundKeys::new(&key) };
        assert_eq!(k.rounds, 14);
        assert_eq!(k.enc[2].to_vec(), hex("9ba354118e6925afa51a8b5f2067fcde"));
        assert_eq!(k.enc[3].to_vec(), hex("a8b09c1a93d194cdbe49846eb75d5b9a"));
        assert_eq!(k.enc[14].to_vec(), hex("fe4890d1e6188d0b046df344706c631e"));
    }

    /// One block through both schedules with AES-NI, for FIPS-197 appendix C.
    #[target_feature(enable = "sse2,aes")]
    fn block(k: &RoundKeys, b: &[u8], enc: bool) -> Vec<u8> {
        let keys = if enc { &k.enc } else { &k.dec };
        // SAFETY: 16-byte slices and arrays; unaligned loads and stores.
        unsafe {
            let ld = |p: &[u8]| _mm_loadu_si128(p.as_ptr().cast());
            let mut x = _mm_xor_si128(ld(b), ld(&keys[0]));
            for kr in &keys[1..k.rounds] {
                x = if enc {
                    _mm_aesenc_si128(x, ld(kr))
                } else {
                    _mm_aesdec_si128(x, ld(kr))
                };
            }
            x = if enc {
                _mm_aesenclast_si128(x, ld(&keys[k.rounds]))
            } else {
                _mm_aesdeclast_si128(x, ld(&keys[k.rounds]))
            };
            let mut out = [0u8; 16];
            _mm_storeu_si128(out.as_mut_ptr().cast(), x);
            out.to_vec()
        }
    }

    /// FIPS-197 appendix C.1 and C.3: encryption with the expanded key and
    /// decryption with the equivalent-inverse-cipher schedule.
    #[test]
    fn cipher_fips197_appendix_c() {
        if !has_aesni() {
            eprintln!("SKIP: no AES-NI");
            return;
        }
        let pt = hex("00112233445566778899aabbccddeeff");
        for (key, ct) in [
            (
                "000102030405060708090a0b0c0d0e0f",
                "69c4e0d86a7b0430d8cdb78070b4c55a",
            ),
            (
                "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
                "8ea2b7ca516745bfeafc49904b496089",
            ),
        ] {
            // SAFETY: AES-NI detected above.
            let (k, c, p) = unsafe {
                let k = RoundKeys::new(&hex(key));
                let c = block(&k, &pt, true);
                let p = block(&k, &c, false);
                (k, c, p)
            };
            assert_eq!(c, hex(ct), "key {key}");
            assert_eq!(p, pt, "key {key}");
            drop(k);
        }
    }

    /// Many keys of both sizes: both schedules must agree with the `aes`
    /// crate block by block.
    #[test]
    fn cipher_matches_aes_crate() {
        use aes::cipher::{BlockCipherEncrypt, KeyInit};
        if !has_aesni() {
            eprintln!("SKIP: no AES-NI");
            return;
        }
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        };
        for i in 0..200 {
            let len = if i % 2 == 0 { 16 } else { 32 };
            let key: Vec<u8> = (0..len).map(|_| next()).collect();
            let pt: Vec<u8> = (0..16).map(|_| next()).collect();
            let mut want = aes::Block::try_from(&pt[..]).unwrap();
            if len == 16 {
                aes::Aes128::new_from_slice(&key)
                    .unwrap()
                    .encrypt_block(&mut want);
            } else {
                aes::Aes256::new_from_slice(&key)
                    .unwrap()
                    .encrypt_block(&mut want);
            }
            // SAFETY: AES-NI detected above.
            let (c, p) = unsafe {
                let k = RoundKeys::new(&key);
                let c = block(&k, &pt, true);
                (c.clone(), block(&k, &c, false))
            };
            assert_eq!(c, want.to_vec(), "key {key:02x?}");
            assert_eq!(p, pt);
        }
    }
}
