//! Bad input gives clear typed errors, never a panic and never a huge allocation:
//! wrong passphrase, truncation, corrupted or hostile JSON (re-checksummed so the
//! JSON validation itself is reached), absurd KDF costs, the memory check.

use sha2::Digest;
use veil_fusefs::luks2::{
    self, Argon2Variant, CreateOptions, Error, KdfChoice, KdfLimits, KdfParams, KeyslotOptions,
    Passphrase, UnlockOptions,
};
use veil_fusefs::source::ReadAt;

const HDR: usize = 16384;

/// A small veil-made volume in memory (pbkdf2, 1 MiB data offset).
fn volume(kdf: KdfParams) -> Vec<u8> {
    let o = CreateOptions {
        sector_size: 512,
        keyslot: KeyslotOptions {
            kdf: KdfChoice::Fixed(kdf),
            ..Default::default()
        },
        data_offset: 1 << 20,
        ..Default::default()
    };
    let mut out = Vec::new();
    luks2::create(
        &mut out,
        &b"payload"[..],
        7,
        &Passphrase::from_slice(b"pw"),
        &o,
    )
    .unwrap();
    out
}

fn pbkdf2_volume() -> Vec<u8> {
    volume(KdfParams::Pbkdf2 {
        hash: "sha256".into(),
        iterations: 1000,
    })
}

fn json_text(v: &[u8], copy: usize) -> String {
    let area = &v[copy * HDR + 4096..(copy + 1) * HDR];
    let end = area.iter().position(|&b| b == 0).unwrap();
    String::from_utf8(area[..end].to_vec()).unwrap()
}

/// Replaces the JSON text of both copies and recomputes their checksums, the way
/// an attacker (or a buggy writer) would produce a "valid" but hostile header.
fn with_json(v: &[u8], edit: impl Fn(&str) -> String) -> Vec<u8> {
    let mut v = v.to_vec();
    for copy in 0..2 {
        let new = edit(&json_text(&v, copy));
        let base = copy * HDR;
        let area = &mut v[base + 4096..base + HDR];
        area.fill(0);
        let n = new.len().min(area.len());
        area[..n].copy_from_slice(&new.as_bytes()[..n]);
        v[base + 448..base + 512].fill(0);
        let mut h = sha2::Sha256::new();
        h.update(&v[base..base + HDR]);
        let d = h.finalize();
        v[base + 448..base + 480].copy_from_slice(&d);
    }
    v
}

fn unlock<'a>(v: &'a [u8], pass: &[u8]) -> Result<luks2::UnlockedVolume<&'a [u8]>, Error> {
    luks2::unlock(v, &Passphrase::from_slice(pass), &UnlockOptions::default())
}

#[test]
fn baseline_and_wrong_passphrase() {
    let v = pbkdf2_volume();
    let u = unlock(&v, b"pw").unwrap();
    let mut b = [0u8; 7];
    u.read_exact_at(&mut b, 0).unwrap();
    assert_eq!(&b, b"payload");
    let e = unlock(&v, b"pW").unwrap_err();
    assert!(matches!(e, Error::WrongPassphrase));
    assert_eq!(e.to_string(), "no key available with this passphrase");
}

#[test]
fn truncated_volumes() {
    let v = pbkdf2_volume();
    for cut in [
        0usize,
        100,
        4095,
        4096,
        10_000,
        HDR,
        HDR + 5000,
        2 * HDR,
        40_000,
        (1 << 20) - 1,
    ] {
        let r = luks2::inspect(&v[..cut]);
        let u = unlock(&v[..cut], b"pw");
        let e = u.err().unwrap_or_else(|| panic!("cut {cut} unlocked"));
        eprintln!(
            "cut {cut}: inspect {:?} / unlock: {e}",
            r.as_ref().map(|_| ())
        );
        if cut < 4096 {
            assert!(matches!(e, Error::Truncated { .. }), "{cut}: {e}");
        } else if cut < HDR {
            assert!(matches!(e, Error::BadHeader(_)), "{cut}: {e}");
        } else {
            // A header copy (at least) is fine; the keyslot area or data is cut off.
            assert!(matches!(e, Error::Truncated { .. }), "{cut}: {e}");
        }
    }
    assert!(matches!(
        luks2::inspect(&vec![0u8; 100_000][..]),
        Err(Error::NotLuks)
    ));
}

#[test]
fn corrupted_json_in_both_copies() {
    let v = pbkdf2_volume();
    type Edit = fn(&str) -> String;
    let cases: &[(&str, Edit, &str)] = &[
        ("not JSON", |_| "{nope".into(), "JSON syntax"),
        (
            "duplicate key",
            |t| t.replacen("{\"config\"", "{\"tokens\":{},\"config\"", 1),
            "duplicate",
        ),
        (
            "number for string-uint64",
            |t| t.replace("\"offset\":\"1048576\"", "\"offset\":1048576"),
            "segments.0.offset",
        ),
        (
            "string for integer",
            |t| t.replace("\"sector_size\":512", "\"sector_size\":\"512\""),
            "sector_size",
        ),
        (
            "float",
            |t| t.replace("\"key_size\":64", "\"key_size\":64.0"),
            "key_size",
        ),
        (
            "stripes",
            |t| t.replace("\"stripes\":4000", "\"stripes\":2000"),
            "stripes",
        ),
        (
            "json_size",
            |t| t.replace("\"json_size\":\"12288\"", "\"json_size\":\"12289\""),
            "json_size",
        ),
        (
            "missing config",
            |t| t.replace("\"config\"", "\"konfig\""),
            "config",
        ),
        (
            "area in metadata",
            |t| t.replacen("\"offset\":\"32768\"", "\"offset\":\"4096\"", 1),
            "keyslots area",
        ),
        (
            "huge offset",
            |t| {
                t.replace(
                    "\"offset\":\"1048576\"",
                    "\"offset\":\"99999999999999999999\"",
                )
            },
            "decimal",
        ),
        (
            "bad base64",
            |t| t.replacen("\"salt\":\"", "\"salt\":\"!!", 1),
            "base64",
        ),
        (
            "unknown kdf",
            |t| {
                t.replace(
                    "\"type\":\"pbkdf2\"},\"key_size\"",
                    "\"type\":\"scrypt\"},\"key_size\"",
                )
            },
            "kdf.type",
        ),
        (
            "non-decimal id",
            |t| t.replace("\"keyslots\":{\"0\"", "\"keyslots\":{\"x\""),
            "decimal id",
        ),
        ("trailing garbage", |t| format!("{t}x"), "JSON"),
    ];
    for (name, edit, needle) in cases {
        let bad = with_json(&v, edit);
        assert_ne!(
            json_text(&bad, 0),
            json_text(&v, 0),
            "{name}: edit did nothing"
        );
        let e = luks2::inspect(&bad[..]).unwrap_err();
        assert!(matches!(e, Error::BadHeader(_)), "{name}: {e}");
        assert!(e.to_string().contains(needle), "{name}: {e}");
        assert!(unlock(&bad, b"pw").is_err());
    }
    // Bytes after the NUL terminator.
    let mut bad = v.clone();
    bad[4096 + 12000] = 1;
    bad[HDR + 4096 + 12000] = 1;
    assert!(
        luks2::inspect(&bad[..])
            .unwrap_err()
            .to_string()
            .contains("checksum")
    );
}

#[test]
fn absurd_kdf_costs_are_refused_without_allocating() {
    let argon = volume(KdfParams::Argon2 {
        variant: Argon2Variant::Argon2id,
        time: 4,
        memory_kib: 32,
        cpus: 1,
    });
    // 64 GiB of argon2 memory: over the default limit (cryptsetup's 4 GiB).
    let huge = with_json(&argon, |t| {
        t.replace("\"memory\":32", "\"memory\":67108864")
    });
    let s = luks2::inspect(&huge[..]).unwrap();
    assert!(matches!(
        s.keyslots[0].kdf,
        Some(KdfParams::Argon2 {
            memory_kib: 67108864,
            ..
        })
    ));
    let e = unlock(&huge, b"pw").unwrap_err();
    assert!(
        matches!(
            e,
            Error::KdfCostTooHigh {
                what: "memory (KiB)",
                ..
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string()
            .contains("argon2 needs 65536 MiB of memory, more than the 4096 MiB"),
        "{e}"
    );
    // With the limit raised, the memory check refuses instead of allocating 64 GiB.
    let opts = UnlockOptions {
        limits: KdfLimits {
            max_argon2_memory_kib: u32::MAX,
            max_argon2_work: u64::MAX,
            ..Default::default()
        },
        ..Default::default()
    };
    let e = luks2::unlock(&huge[..], &Passphrase::from_slice(b"pw"), &opts).unwrap_err();
    match &e {
        Error::InsufficientMemory { needed, available } => {
            assert_eq!(*needed, 64 << 30);
            assert!(available < needed);
        }
        _ => panic!("{e}"),
    }
    assert!(e.to_string().contains("65536 MiB"), "{e}");
    eprintln!("{e}");

    // 2^40 iterations does not even fit the JSON integer type.
    let pb = pbkdf2_volume();
    // (Members are written in sorted order: the keyslot's kdf has "iterations"
    // before "salt", the digest has it before "keyslots".)
    let e = luks2::inspect(
        &with_json(&pb, |t| {
            t.replace(
                "\"iterations\":1000,\"salt\"",
                "\"iterations\":1099511627776,\"salt\"",
            )
        })[..],
    )
    .unwrap_err();
    assert!(e.to_string().contains("keyslots.0.kdf.iterations"), "{e}");
    // u32::MAX iterations fits the type but not the limit, in the keyslot or the digest.
    let e = unlock(
        &with_json(&pb, |t| {
            t.replace(
                "\"iterations\":1000,\"salt\"",
                "\"iterations\":4294967295,\"salt\"",
            )
        }),
        b"pw",
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            Error::KdfWorkTooHigh {
                value: 4294967295,
                ..
            }
        ),
        "{e}"
    );
    let e = unlock(
        &with_json(&pb, |t| {
            t.replace(
                "\"iterations\":1000,\"keyslots\"",
                "\"iterations\":4294967295,\"keyslots\"",
            )
        }),
        b"pw",
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            Error::KdfWorkTooHigh {
                value: 4294967295,
                ..
            }
        ),
        "{e}"
    );
    // Absurd time and lanes.
    let e = unlock(
        &with_json(&argon, |t| t.replace("\"time\":4", "\"time\":4000000000")),
        b"pw",
    )
    .unwrap_err();
    assert!(
        matches!(e, Error::KdfCostTooHigh { what: "time", .. }),
        "{e}"
    );
    let e = unlock(
        &with_json(&argon, |t| t.replace("\"cpus\":1", "\"cpus\":16777215")),
        b"pw",
    )
    .unwrap_err();
    assert!(
        matches!(e, Error::KdfCostTooHigh { what: "cpus", .. }),
        "{e}"
    );
    // Zero costs are invalid rather than a division by zero somewhere.
    assert!(
        unlock(
            &with_json(&argon, |t| t.replace("\"time\":4", "\"time\":0")),
            b"pw"
        )
        .is_err()
    );
    assert!(
        unlock(
            &with_json(&pb, |t| t.replace(
                "\"iterations\":1000,\"salt\"",
                "\"iterations\":0,\"salt\""
            )),
            b"pw"
        )
        .is_err()
    );
    assert!(
        unlock(
            &with_json(&pb, |t| t.replace(
                "\"iterations\":1000,\"keyslots\"",
                "\"iterations\":0,\"keyslots\""
            )),
            b"pw"
        )
        .is_err()
    );
}

/// A real argon2id cost (256 MiB, 2 lanes on 2 threads): unlocks, and the memory
/// check passes on a machine that has the memory.
#[test]
fn real_argon2_cost_unlocks() {
    let v = volume(KdfParams::Argon2 {
        variant: Argon2Variant::Argon2id,
        time: 4,
        memory_kib: 256 * 1024,
        cpus: 2,
    });
    let t = std::time::Instant::now();
    let u = unlock(&v, b"pw").unwrap();
    eprintln!("argon2id 256 MiB x4, 2 lanes: {:?}", t.elapsed());
    let mut b = [0u8; 7];
    u.read_exact_at(&mut b, 0).unwrap();
    assert_eq!(&b, b"payload");
}

#[test]
fn unsupported_features_are_named() {
    let v = pbkdf2_volume();
    let e = unlock(
        &with_json(&v, |t| {
            t.replace(
                "aes-xts-plain64\",\"iv_tweak",
                "serpent-xts-plain64\",\"iv_tweak",
            )
        }),
        b"pw",
    )
    .unwrap_err();
    assert!(
        matches!(e, Error::Unsupported(_)) && e.to_string().contains("serpent"),
        "{e}"
    );
    let e = unlock(
        &with_json(&v, |t| {
            t.replace(
                "\"keyslots_size\"",
                "\"requirements\":{\"mandatory\":[\"online-reencrypt-v2\"]},\"keyslots_size\"",
            )
        }),
        b"pw",
    )
    .unwrap_err();
    assert!(e.to_string().contains("online-reencrypt-v2"), "{e}");
    let e = unlock(
        &with_json(&v, |t| {
            t.replace("\"iv_tweak\":\"0\"", "\"iv_tweak\":\"8\"")
        }),
        b"pw",
    )
    .unwrap_err();
    assert!(matches!(e, Error::Unsupported(_)), "{e}");
    // Priority 0: not tried unless named.
    let p0 = with_json(&v, |t| {
        t.replacen("\"type\":\"luks2\"", "\"type\":\"luks2\",\"priority\":0", 1)
    });
    assert!(matches!(unlock(&p0, b"pw"), Err(Error::NoUsableKeyslot)));
    let named = luks2::unlock(
        &p0[..],
        &Passphrase::from_slice(b"pw"),
        &UnlockOptions {
            keyslot: Some(0),
            ..Default::default()
        },
    );
    assert!(named.is_ok());
}
