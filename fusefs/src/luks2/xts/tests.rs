//! Every XTS variant this CPU runs against known answers, a textbook reference and
//! the `xts-mode` crate.

#![forbid(unsafe_code)]

use aes::cipher::{BlockCipherDecrypt, BlockCipherEncrypt, KeyInit};
use aes::{Aes128, Aes256, Block};

use super::portable::{mul_alpha, mul_alpha8};
use super::simd::Simd;
use super::{Dir, Xts};

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

/// Runs `check(key, sector_size, sectors, data, first_iv)` on `cases`
/// random volumes: AES-128 and AES-256 keys, sector sizes 512 to 4096, `sectors`
/// sectors of data, first IVs anywhere and right below or at the 64-bit wrap-around.
fn for_random_volumes(
    cases: u32,
    sectors: impl proptest::strategy::Strategy<Value = usize>,
    check: impl Fn(&[u8], usize, usize, &[u8], u64) -> Result<(), proptest::test_runner::TestCaseError>,
) {
    use proptest::prelude::*;
    let strategy = (
        prop_oneof![Just(32usize), Just(64usize)],
        0u32..4,
        sectors,
        prop_oneof![any::<u64>(), (u64::MAX - 100)..=u64::MAX, 0u64..100],
        any::<u64>(),
    );
    let config = ProptestConfig {
        cases,
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
            check(&key, ss, nsec, &data, iv)
        })
        .unwrap();
}

/// Random keys (AES-128 and AES-256), sector sizes, lengths and first IVs
/// (some right below the 64-bit wrap-around): the fast path — with every
/// variant of the tweak passes this CPU runs — must equal the reference in
/// both directions.
#[test]
fn fast_path_equals_reference() {
    use proptest::prelude::*;
    for_random_volumes(400, 1usize..=20, |key, ss, nsec, data, iv| {
        let mut xts = Xts::new(key, ss).unwrap();
        for simd in Simd::available() {
            xts.simd = simd;
            for encrypt in [true, false] {
                let mut want = data.to_vec();
                reference_xts(key, ss, &mut want, iv, encrypt);
                let mut got = data.to_vec();
                if encrypt {
                    xts.encrypt(&mut got, iv);
                } else {
                    xts.decrypt(&mut got, iv);
                }
                prop_assert!(
                    got == want,
                    "{simd:?} encrypt={encrypt} key {} ss {ss} sectors {nsec} iv {iv:#x}",
                    key.len()
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
    });
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
                        line += &format!(" {name} {:5.2} GB/s", n as f64 * len as f64 / cpu / 1e9);
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
                        let what = format!("{simd:?} key {key_len} ss {ss} n {nsec} iv {iv:#x}");
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

/// Every variant this CPU runs against the `xts-mode` crate, written independently
/// of this code: random AES-128 and AES-256 keys, every sector size, one to many
/// sectors (across batches and the parallel split), random first IVs and IVs that
/// wrap past `u64::MAX`, in both directions and out of place.
#[test]
fn every_variant_equals_xts_mode_crate() {
    use proptest::prelude::*;
    use xts_mode::{Xts128, get_tweak_default};

    /// `buf` through `xts-mode`, sector by sector, each tweak the plain64 IV of
    /// its sector (512-byte units, wrapping at 64 bits as dm-crypt's does).
    fn xts_mode_crypt(key: &[u8], ss: usize, buf: &mut [u8], first_iv: u64, encrypt: bool) {
        fn run<C>(x: &Xts128<C>, ss: usize, buf: &mut [u8], first_iv: u64, encrypt: bool)
        where
            C: BlockCipherEncrypt + BlockCipherDecrypt<BlockSize = aes::cipher::consts::U16>,
        {
            let units = ss as u64 / 512;
            for (j, sector) in buf.chunks_mut(ss).enumerate() {
                let iv = first_iv.wrapping_add((j as u64).wrapping_mul(units));
                let tweak = get_tweak_default(u128::from(iv));
                if encrypt {
                    x.encrypt_sector(sector, tweak);
                } else {
                    x.decrypt_sector(sector, tweak);
                }
            }
        }
        let (k1, k2) = key.split_at(key.len() / 2);
        if k1.len() == 16 {
            let k = |b: &[u8]| Aes128::new_from_slice(b).unwrap();
            run(&Xts128::new(k(k1), k(k2)), ss, buf, first_iv, encrypt)
        } else {
            let k = |b: &[u8]| Aes256::new_from_slice(b).unwrap();
            run(&Xts128::new(k(k1), k(k2)), ss, buf, first_iv, encrypt)
        }
    }

    for_random_volumes(
        120,
        prop_oneof![1usize..=9, 10usize..=40, Just(160usize)],
        |key, ss, nsec, data, iv| {
            let mut want_ct = data.to_vec();
            xts_mode_crypt(key, ss, &mut want_ct, iv, true);
            let mut want_pt = data.to_vec();
            xts_mode_crypt(key, ss, &mut want_pt, iv, false);
            let mut xts = Xts::new(key, ss).unwrap();
            for simd in Simd::available() {
                xts.simd = simd;
                let what = format!(
                    "{simd:?} key {} ss {ss} sectors {nsec} iv {iv:#x}",
                    key.len()
                );
                let mut got = data.to_vec();
                xts.encrypt(&mut got, iv);
                prop_assert!(got == want_ct, "encrypt {}", what);
                let mut got = data.to_vec();
                xts.decrypt(&mut got, iv);
                prop_assert!(got == want_pt, "decrypt {}", what);
                let mut got = data.to_vec();
                xts.decrypt_serial(&mut got, iv);
                prop_assert!(got == want_pt, "decrypt_serial {}", what);
                let mut got = vec![0u8; data.len()];
                xts.decrypt_from(data, &mut got, iv);
                prop_assert!(got == want_pt, "decrypt_from {}", what);
            }
            Ok(())
        },
    );
}
