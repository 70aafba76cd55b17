//! The kernel against the `aes-gcm` crate (itself checked against NIST's vectors):
//! every length of a gocryptfs block and those around the kernel's 256-byte steps,
//! associated data of every shape, both directions, damage of every input, and
//! counters that wrap.

use aes_gcm::aead::consts::U16;
use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::aes::Aes256;
use aes_gcm::{AesGcm, Nonce, Tag};

use super::{Aes256Gcm, GcmError};

type Reference = AesGcm<Aes256, U16>;

/// The kernel for `key`, or None (and a note) where the CPU cannot run it.
fn kernel(key: &[u8; 32]) -> Option<Aes256Gcm> {
    let g = Aes256Gcm::new(key);
    if g.implementation() == "vaes" {
        Some(g)
    } else {
        eprintln!("SKIP: this CPU does not run the VAES kernel");
        None
    }
}

/// splitmix64: reproducible bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn fill(&mut self, b: &mut [u8]) {
        b.iter_mut().for_each(|x| *x = self.next() as u8);
    }
    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut b = [0u8; N];
        self.fill(&mut b);
        b
    }
    fn vec(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        self.fill(&mut v);
        v
    }
}

fn reference_seal(
    key: &[u8; 32],
    nonce: &[u8; 16],
    aad: &[u8],
    plain: &[u8],
) -> (Vec<u8>, [u8; 16]) {
    let mut ct = plain.to_vec();
    let tag = Reference::new(key.into())
        .encrypt_inout_detached(&Nonce::<U16>::from(*nonce), aad, ct.as_mut_slice().into())
        .unwrap();
    (ct, tag.into())
}

/// Both directions for one message: the kernel's ciphertext and tag are the
/// crate's, the kernel opens the crate's (in place and into another buffer), and
/// the crate opens the kernel's.
fn check(g: &Aes256Gcm, key: &[u8; 32], nonce: &[u8; 16], aad: &[u8], plain: &[u8]) {
    let what = format!("{} bytes, {} of associated data", plain.len(), aad.len());
    let (want_ct, want_tag) = reference_seal(key, nonce, aad, plain);
    let mut ct = plain.to_vec();
    let tag = g.encrypt_in_place(nonce, aad, &mut ct).unwrap();
    assert!(ct == want_ct, "ciphertext of {what}");
    assert_eq!(tag, want_tag, "tag of {what}");
    let mut out = vec![0u8; plain.len()];
    g.decrypt(nonce, aad, &want_ct, &mut out, &want_tag)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(out == plain, "plaintext of {what}");
    let mut buf = want_ct.clone();
    g.decrypt_in_place(nonce, aad, &mut buf, &want_tag).unwrap();
    assert!(buf == plain, "plaintext in place of {what}");
    let mut buf = ct;
    Reference::new(key.into())
        .decrypt_inout_detached(
            &Nonce::<U16>::from(*nonce),
            aad,
            buf.as_mut_slice().into(),
            &Tag::from(tag),
        )
        .unwrap();
}

#[test]
fn kernel_matches_the_aes_gcm_crate_at_every_length() {
    let mut rng = Rng(1);
    let Some(mut g) = kernel(&[0; 32]) else {
        return;
    };
    let mut key = [0u8; 32];
    // Associated data: gocryptfs's 24 bytes (and 8, the master key's), none, and
    // the lengths around blocks and the kernel's 256-byte steps.
    let aads = [
        24, 0, 8, 1, 15, 16, 17, 31, 32, 255, 256, 257, 511, 512, 600,
    ];
    let extra = [4097, 4111, 4112, 4113, 4352, 8191, 8192, 8193, 65536 + 17];
    for (i, len) in (0..=4096).chain(extra).enumerate() {
        if i % 64 == 0 {
            key = rng.bytes();
            g = Aes256Gcm::new(&key);
        }
        let aad = rng.vec(aads[i % aads.len()]);
        let plain = rng.vec(len);
        check(&g, &key, &rng.bytes(), &aad, &plain);
    }
}

#[test]
fn the_portable_implementation_is_the_crate() {
    let mut rng = Rng(2);
    let key = rng.bytes();
    let g = Aes256Gcm::portable(&key);
    assert_eq!(g.implementation(), "aes-gcm crate");
    for len in [0, 1, 100, 4096] {
        check(&g, &key, &rng.bytes(), &rng.vec(24), &rng.vec(len));
    }
    assert_eq!(format!("{g:?}"), "Aes256Gcm(aes-gcm crate, key redacted)");
}

/// Every input damaged by one bit fails, and leaves no plaintext behind.
#[test]
fn a_flipped_bit_anywhere_fails_authentication() {
    let mut rng = Rng(3);
    let key = rng.bytes();
    let Some(g) = kernel(&key) else {
        return;
    };
    for len in [1, 16, 100, 256, 1000, 4096] {
        let nonce: [u8; 16] = rng.bytes();
        let aad = rng.vec(24);
        let plain = rng.vec(len);
        let (ct, tag) = reference_seal(&key, &nonce, &aad, &plain);
        let fails = |nonce: &[u8; 16], aad: &[u8], ct: &[u8], tag: &[u8; 16]| {
            let mut out = vec![0x55u8; ct.len()];
            let r = g.decrypt(nonce, aad, ct, &mut out, tag);
            assert_eq!(r, Err(GcmError::Auth), "{len} bytes");
            assert!(
                out.iter().all(|&b| b == 0),
                "plaintext left after a failure"
            );
            let mut buf = ct.to_vec();
            let r = g.decrypt_in_place(nonce, aad, &mut buf, tag);
            assert_eq!(r, Err(GcmError::Auth), "{len} bytes, in place");
            assert!(
                buf.iter().all(|&b| b == 0),
                "plaintext left after a failure"
            );
        };
        for bit in [0, 7, 8 * len / 2 + 3, 8 * len - 1] {
            let mut bad = ct.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            fails(&nonce, &aad, &bad, &tag);
        }
        for bit in [0, 64, 127] {
            let mut t = tag;
            t[bit / 8] ^= 1 << (bit % 8);
            fails(&nonce, &aad, &ct, &t);
            let mut n = nonce;
            n[bit / 8] ^= 1 << (bit % 8);
            fails(&n, &aad, &ct, &tag);
        }
        for bit in [0, 100, 191] {
            let mut a = aad.clone();
            a[bit / 8] ^= 1 << (bit % 8);
            fails(&nonce, &a, &ct, &tag);
        }
        // Associated data cut short, or one byte longer.
        fails(&nonce, &aad[..23], &ct, &tag);
        fails(&nonce, &[&aad[..], &[0]].concat(), &ct, &tag);
        // And the intact message still opens.
        let mut out = vec![0u8; len];
        g.decrypt(&nonce, &aad, &ct, &mut out, &tag).unwrap();
        assert!(out == plain);
    }
}

/// GHASH's multiplication, bit by bit (NIST SP 800-38D, algorithm 1), on blocks
/// read big-endian.
fn gf_mul(x: u128, y: u128) -> u128 {
    let mut z = 0;
    let mut v = y;
    for i in 0..128 {
        if (x >> (127 - i)) & 1 == 1 {
            z ^= v;
        }
        v = if v & 1 == 1 {
            (v >> 1) ^ (0xe1 << 120)
        } else {
            v >> 1
        };
    }
    z
}

/// x⁻¹ = x^(2¹²⁸ − 2).
fn gf_inv(x: u128) -> u128 {
    let (mut r, mut p) = (1u128 << 127, x); // 1 is the top bit
    for _ in 1..128 {
        p = gf_mul(p, p);
        r = gf_mul(r, p);
    }
    r
}

/// The 128-bit nonce whose J₀ = GHASH_H(nonce ‖ 0⁶⁴ ‖ [128]₆₄) is `j0`:
/// J₀ = (N·H ⊕ L)·H, so N = (J₀·H⁻¹ ⊕ L)·H⁻¹.
fn nonce_for_j0(key: &[u8; 32], j0: u128) -> [u8; 16] {
    use aes_gcm::aes::cipher::BlockCipherEncrypt;
    let mut h = aes_gcm::aes::Block::default();
    Aes256::new(key.into()).encrypt_block(&mut h);
    let h = u128::from_be_bytes(h.into());
    let inv = gf_inv(h);
    assert_eq!(gf_mul(inv, h), 1 << 127);
    let n = gf_mul(gf_mul(j0, inv) ^ 128, inv);
    assert_eq!(gf_mul(gf_mul(n, h) ^ 128, h), j0);
    n.to_be_bytes()
}

/// inc32 wraps the last 32 bits alone: counters from J₀'s low word 0xffffffff
/// (the first block's counter is already 0), and wraps in the middle of a
/// 256-byte step and of a tail.
#[test]
fn counters_wrap_modulo_2_to_the_32() {
    let mut rng = Rng(4);
    let key = rng.bytes();
    let Some(g) = kernel(&key) else {
        return;
    };
    let high = u128::from(rng.next()) << 64 | u128::from(rng.next() & !0xffff_ffff);
    for low in [0xffff_ffffu32, 0xffff_fff0, 0xffff_ff80, 0xffff_ff05, 0] {
        let nonce = nonce_for_j0(&key, high | u128::from(low));
        for len in [4096, 4096 + 100, 300] {
            check(&g, &key, &nonce, &rng.vec(24), &rng.vec(len));
        }
    }
}

#[test]
fn buffers_of_different_lengths_are_refused() {
    let g = Aes256Gcm::new(&[1; 32]);
    let mut out = [0u8; 10];
    assert_eq!(
        g.decrypt(&[1; 16], &[], &[0; 11], &mut out, &[0; 16]),
        Err(GcmError::Length(11))
    );
}

/// Decryption on one core, both implementations, of gocryptfs blocks (4096
/// bytes, 24 bytes of associated data) and of 64 KiB messages (the kernel's
/// steady state, without the per-message costs):
/// `cargo test -p veil-fusefs --release gcm_throughput -- --ignored --nocapture`.
#[test]
#[ignore]
fn gcm_throughput() {
    let mut rng = Rng(5);
    let key = rng.bytes();
    for len in [4096, 65536] {
        type Message = ([u8; 16], [u8; 24], Vec<u8>, [u8; 16]);
        let messages: Vec<Message> = (0..(1 << 20) / len)
            .map(|_| {
                let (nonce, aad) = (rng.bytes(), rng.bytes());
                let (ct, tag) = reference_seal(&key, &nonce, &aad, &rng.vec(len));
                (nonce, aad, ct, tag)
            })
            .collect();
        let mut out = vec![0u8; len];
        for g in [Aes256Gcm::portable(&key), Aes256Gcm::new(&key)] {
            let start = std::time::Instant::now();
            let mut bytes = 0usize;
            while start.elapsed().as_secs_f64() < 1.0 {
                for (nonce, aad, ct, tag) in &messages {
                    g.decrypt(nonce, aad, ct, &mut out, tag).unwrap();
                    bytes += len;
                }
            }
            let rate = bytes as f64 / start.elapsed().as_secs_f64() / 1e9;
            eprintln!(
                "AES-256-GCM decryption of {len}-byte messages, {}: {rate:.2} GB/s",
                g.implementation()
            );
        }
    }
}
