//! AES key expansion with AES-NI, shared by the kernels that run the AES rounds
//! themselves (AES-XTS in `luks2::xts::vaes`, AES-GCM in `cipher::gcm`): the
//! `aes` crate keeps its round keys private, and a kernel that encrypts four
//! blocks per 512-bit register with VAES needs them in hand. FIPS-197 §5.2 for
//! the encryption schedule, §5.3.5's equivalent inverse cipher for the
//! decryption one.

use core::arch::x86_64::*;

use zeroize::{Zeroize, ZeroizeOnDrop};

/// Expanded AES key: `enc[0..=rounds]` for the cipher, `dec[0..=rounds]` for the
/// equivalent inverse cipher (`dec[i]` = InvMixColumns(`enc[rounds - i]`) for
/// the middle rounds). Plain bytes so zeroizing on drop is exact; there is
/// deliberately no `Debug` or `Clone`.
#[derive(Zeroize, ZeroizeOnDrop)]
pub(crate) struct RoundKeys {
    enc: [[u8; 16]; 15],
    dec: [[u8; 16]; 15],
    rounds: usize,
}

impl RoundKeys {
    /// `key` is 16 or 32 bytes (callers check; anything else panics).
    ///
    /// # Safety
    /// The CPU must support AES-NI and SSE2.
    pub(crate) unsafe fn new(key: &[u8]) -> Self {
        let mut k = RoundKeys {
            enc: [[0; 16]; 15],
            dec: [[0; 16]; 15],
            rounds: 0,
        };
        // SAFETY: the caller guarantees AES-NI; `expand` checks the key length.
        unsafe { expand(key, &mut k) };
        k
    }

    pub(crate) fn rounds(&self) -> usize {
        self.rounds
    }

    /// The encryption schedule (`rounds() + 1` keys used).
    pub(crate) fn enc(&self) -> &[[u8; 16]; 15] {
        &self.enc
    }

    /// The equivalent inverse cipher's schedule (`rounds() + 1` keys used).
    pub(crate) fn dec(&self) -> &[[u8; 16]; 15] {
        &self.dec
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

#[cfg(test)]
mod tests {
    use super::*;

    fn has_aesni() -> bool {
        std::arch::is_x86_feature_detected!("aes")
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

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
