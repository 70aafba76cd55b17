//! veil → cryptsetup: volumes made by `luks2::create`, and re-keyed by
//! `add_keyslot` / `remove_keyslot`, pass shared/interop/check-luks2 (cryptsetup
//! luksDump, open --test-passphrase, the dumped volume key decrypts the payload,
//! and an independent Python unlock).

mod luks2_util;

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use veil_fusefs::luks2::{
    self, Argon2Variant, CreateOptions, Error, Hash, KdfChoice, KdfParams, KeyslotOptions,
    Passphrase, UnlockOptions, VolumeKey,
};
use veil_fusefs::source::{FileSource, ReadAt};

fn cheap(kind: &str) -> KdfChoice {
    KdfChoice::Fixed(match kind {
        "pbkdf2" => KdfParams::Pbkdf2 {
            hash: "sha256".into(),
            iterations: 1000,
        },
        "argon2i" => KdfParams::Argon2 {
            variant: Argon2Variant::Argon2i,
            time: 4,
            memory_kib: 32,
            cpus: 1,
        },
        _ => KdfParams::Argon2 {
            variant: Argon2Variant::Argon2id,
            time: 4,
            memory_kib: 64,
            cpus: 2,
        },
    })
}

fn opts(kind: &str, sector_size: u32) -> CreateOptions {
    CreateOptions {
        sector_size,
        keyslot: KeyslotOptions {
            kdf: cheap(kind),
            ..Default::default()
        },
        label: "veil-test".into(),
        ..Default::default()
    }
}

/// Creates a volume file; checks that its length is `volume_size`.
fn make(
    dir: &Path,
    name: &str,
    payload: &[u8],
    pass: &[u8],
    o: &CreateOptions,
) -> (PathBuf, PathBuf) {
    let img = dir.join(format!("{name}.img"));
    let pl = dir.join(format!("{name}.payload"));
    std::fs::write(&pl, payload).unwrap();
    let f = File::create(&img).unwrap();
    let s = luks2::create(
        std::io::BufWriter::new(f),
        payload,
        payload.len() as u64,
        &Passphrase::from_slice(pass),
        o,
    )
    .unwrap();
    assert_eq!(s.sector_size, o.sector_size);
    assert_eq!(
        std::fs::metadata(&img).unwrap().len(),
        luks2::volume_size(payload.len() as u64, o).unwrap()
    );
    (img, pl)
}

fn read_all(img: &Path, pass: &[u8], slot: Option<u32>) -> Result<Vec<u8>, Error> {
    let io = |op| move |source| Error::Io { op, source };
    let v = luks2::unlock(
        FileSource::open(img).map_err(io("opening the image"))?,
        &Passphrase::from_slice(pass),
        &UnlockOptions {
            keyslot: slot,
            ..Default::default()
        },
    )?;
    let mut b = vec![0u8; v.len() as usize];
    v.read_exact_at(&mut b, 0)
        .map_err(io("reading the data segment"))?;
    Ok(b)
}

#[test]
fn cryptsetup_accepts_veil_volumes_for_every_kdf_and_sector_size() {
    let Some(interop) = luks2_util::interop() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let payload = luks2_util::payload(300_001, 10);
    let pass = "pässword 1".as_bytes();
    for kdf in ["argon2i", "argon2id", "pbkdf2"] {
        for ss in [512u32, 4096] {
            let name = format!("{kdf}-{ss}");
            let (img, pl) = make(dir.path(), &name, &payload, pass, &opts(kdf, ss));
            let (ok, out) = luks2_util::check(&interop, &img, pass, Some(&pl), &[]);
            assert!(ok, "{name}: check-luks2 failed:\n{out}");
            let (ok, out) =
                luks2_util::check(&interop, &img, b"wrong", None, &["--no-independent"]);
            assert!(
                !ok,
                "{name}: check-luks2 accepted a wrong passphrase:\n{out}"
            );
            let (ok, dump) = luks2_util::cryptsetup(&["luksDump", img.to_str().unwrap()]);
            assert!(
                ok && dump.contains(kdf) && dump.contains(&format!("sector: {ss}")),
                "{name}: {dump}"
            );
            // And back through veil.
            let got = read_all(&img, pass, None).unwrap();
            assert!(got[..payload.len()] == payload[..]);
        }
    }
}

#[test]
fn given_volume_key_uuid_and_data_offset() {
    let Some(interop) = luks2_util::interop() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let payload = luks2_util::payload(4096 * 3, 11);
    let key: Vec<u8> = (0..64u8).collect();
    let o = CreateOptions {
        volume_key: Some(VolumeKey::from_slice(&key).unwrap()),
        uuid: Some("11111111-2222-4333-8444-555555555555".into()),
        data_offset: 2 << 20,
        ..opts("pbkdf2", 4096)
    };
    let (img, pl) = make(dir.path(), "given", &payload, b"k", &o);
    let (ok, out) = luks2_util::check(&interop, &img, b"k", Some(&pl), &[]);
    assert!(ok, "{out}");
    let (ok, dump) = luks2_util::cryptsetup(&["luksDump", img.to_str().unwrap()]);
    assert!(
        ok && dump.contains("11111111-2222-4333-8444-555555555555")
            && dump.contains("offset: 2097152"),
        "{dump}"
    );
    // The volume key cryptsetup dumps is the one given.
    let kf = dir.path().join("k.key");
    std::fs::write(&kf, b"k").unwrap();
    let (ok, dump) = luks2_util::cryptsetup(&[
        "luksDump",
        "--dump-volume-key",
        "--batch-mode",
        "--key-file",
        kf.to_str().unwrap(),
        img.to_str().unwrap(),
    ]);
    let hexkey: String = key.iter().map(|b| format!("{b:02x} ")).collect();
    let flat = dump.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(ok && flat.contains(hexkey.trim()), "{dump}");
}

#[test]
fn add_and_remove_keyslots_cryptsetup_agrees() {
    let Some(interop) = luks2_util::interop() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let payload = luks2_util::payload(70_000, 12);
    let (img, pl) = make(
        dir.path(),
        "rekey",
        &payload,
        b"first",
        &opts("argon2id", 4096),
    );
    let rw = || {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(&img)
            .unwrap()
    };
    let secret: Vec<u8> = (0..64u8).map(|i| i ^ 0x5a).collect();

    let ks = |kdf| KeyslotOptions {
        kdf: cheap(kdf),
        ..Default::default()
    };
    assert_eq!(
        luks2::add_keyslot(
            &rw(),
            &Passphrase::from_slice(b"first"),
            &Passphrase::from_slice(&secret),
            &ks("pbkdf2"),
            None
        )
        .unwrap(),
        1
    );
    assert_eq!(
        luks2::add_keyslot(
            &rw(),
            &Passphrase::from_slice(&secret),
            &Passphrase::from_slice(b"third"),
            &ks("argon2i"),
            Some(5)
        )
        .unwrap(),
        5
    );
    // A wrong existing passphrase adds nothing.
    let before = std::fs::read(&img).unwrap();
    let e = luks2::add_keyslot(
        &rw(),
        &Passphrase::from_slice(b"nope"),
        &Passphrase::from_slice(b"x"),
        &ks("pbkdf2"),
        None,
    )
    .unwrap_err();
    assert!(matches!(e, Error::WrongPassphrase), "{e}");
    assert!(std::fs::read(&img).unwrap() == before);

    let s = luks2::inspect(&FileSource::open(&img).unwrap()).unwrap();
    assert_eq!(s.seqid, 3);
    assert_eq!(
        s.keyslots.iter().map(|k| k.id).collect::<Vec<_>>(),
        [0, 1, 5]
    );
    assert!(s.warnings.is_empty());
    for (p, slot) in [
        (&b"first"[..], "0"),
        (&secret[..], "1"),
        (&b"third"[..], "5"),
    ] {
        let (ok, out) = luks2_util::check(&interop, &img, p, Some(&pl), &["-S", slot]);
        assert!(ok, "slot {slot}: {out}");
    }
    // cryptsetup itself can add a keyslot to a veil-made, veil-rekeyed volume.
    let (old, new) = (dir.path().join("o.key"), dir.path().join("n.key"));
    std::fs::write(&old, b"third").unwrap();
    std::fs::write(&new, b"from cryptsetup").unwrap();
    let (ok, out) = luks2_util::cryptsetup(&[
        "luksAddKey",
        "--batch-mode",
        "--pbkdf",
        "pbkdf2",
        "--pbkdf-force-iterations",
        "1000",
        "--key-file",
        old.to_str().unwrap(),
        img.to_str().unwrap(),
        new.to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
    assert!(read_all(&img, b"from cryptsetup", None).unwrap()[..payload.len()] == payload[..]);

    // Remove slot 0: "first" stops working everywhere, the others keep working.
    let area0 = s.keyslots[0].area_offset;
    let old_area = before[area0 as usize..area0 as usize + 4096].to_vec();
    luks2::remove_keyslot(&rw(), 0).unwrap();
    let after = std::fs::read(&img).unwrap();
    assert!(
        after[area0 as usize..area0 as usize + 4096] != old_area[..],
        "area not wiped"
    );
    let (ok, _) = luks2_util::check(&interop, &img, b"first", None, &["--no-independent"]);
    assert!(!ok, "removed passphrase still opens");
    assert!(matches!(
        read_all(&img, b"first", None),
        Err(Error::WrongPassphrase)
    ));
    let (ok, out) = luks2_util::check(&interop, &img, &secret, Some(&pl), &[]);
    assert!(ok, "{out}");
    let (ok, dump) = luks2_util::cryptsetup(&["luksDump", img.to_str().unwrap()]);
    assert!(ok && !dump.contains("\n  0: luks2"), "{dump}");

    // Removing down to one keyslot works; the last one is refused.
    luks2::remove_keyslot(&rw(), 1).unwrap();
    luks2::remove_keyslot(&rw(), 2).unwrap();
    assert!(matches!(
        luks2::remove_keyslot(&rw(), 5),
        Err(Error::LastKeyslot(5))
    ));
    assert!(matches!(
        luks2::remove_keyslot(&rw(), 9),
        Err(Error::NoSuchKeyslot(9))
    ));
    let (ok, out) = luks2_util::check(&interop, &img, b"third", Some(&pl), &[]);
    assert!(ok, "{out}");
}

#[test]
fn roundtrip_without_cryptsetup_and_size_prediction() {
    let dir = tempfile::tempdir().unwrap();
    for (len, ss) in [
        (0usize, 512u32),
        (1, 4096),
        (12_345_678, 4096),
        (8 << 20, 512),
    ] {
        let payload = luks2_util::payload(len, len as u64);
        let o = CreateOptions {
            data_offset: 1 << 20,
            ..opts("pbkdf2", ss)
        };
        let (img, _) = make(dir.path(), &format!("rt{len}"), &payload, b"pw", &o);
        let got = read_all(&img, b"pw", None).unwrap();
        assert_eq!(
            got.len() as u64,
            luks2::volume_size(len as u64, &o).unwrap() - (1 << 20)
        );
        assert!(got[..len] == payload[..]);
        assert!(got[len..].iter().all(|&b| b == 0));
    }
    // A payload shorter than declared is an error, not a short volume.
    let e = luks2::create(
        Vec::new(),
        &b"abc"[..],
        10,
        &Passphrase::from_slice(b"p"),
        &opts("pbkdf2", 512),
    )
    .unwrap_err();
    assert!(matches!(e, Error::InvalidOptions(_)), "{e}");
    // Bad options are refused before anything is written.
    let mut out = Vec::new();
    let e = luks2::create(
        &mut out,
        &b""[..],
        0,
        &Passphrase::from_slice(b"p"),
        &CreateOptions {
            sector_size: 8192,
            ..opts("pbkdf2", 512)
        },
    )
    .unwrap_err();
    assert!(
        matches!(e, Error::InvalidOptions(_)) && out.is_empty(),
        "{e}"
    );
    assert!(VolumeKey::from_slice(&[0u8; 48]).is_err());
    assert_eq!(
        format!("{:?}", VolumeKey::random(64).unwrap()),
        "VolumeKey([redacted])"
    );
    assert_eq!(
        format!("{:?}", Passphrase::from_slice(b"secret")),
        "Passphrase([redacted])"
    );
}

/// The default (calibrated) KDF, as build would use it, with a memory cap.
#[test]
fn calibrated_argon2id_respects_the_memory_cap() {
    let o = CreateOptions {
        keyslot: KeyslotOptions {
            kdf: KdfChoice::Calibrated {
                kind: luks2::KdfKind::Argon2id,
                target_ms: 300,
                max_memory_kib: 65536,
                max_cpus: 2,
            },
            hash: Hash::Sha256,
            priority: None,
        },
        data_offset: 1 << 20,
        ..Default::default()
    };
    let mut out = Vec::new();
    let t = std::time::Instant::now();
    let s = luks2::create(&mut out, &b"data"[..], 4, &Passphrase::from_slice(b"p"), &o).unwrap();
    eprintln!(
        "calibrated create took {:?}: {:?}",
        t.elapsed(),
        s.keyslots[0].kdf
    );
    match s.keyslots[0].kdf {
        Some(KdfParams::Argon2 {
            variant: Argon2Variant::Argon2id,
            time,
            memory_kib,
            cpus,
        }) => {
            assert!((32..=65536).contains(&memory_kib));
            assert!(time >= 4);
            assert!((1..=2).contains(&cpus));
        }
        ref k => panic!("{k:?}"),
    }
    let t = std::time::Instant::now();
    let v = luks2::unlock(
        out,
        &Passphrase::from_slice(b"p"),
        &UnlockOptions::default(),
    )
    .unwrap();
    let el = t.elapsed();
    eprintln!("unlock took {el:?}");
    assert!(el.as_millis() < 3000, "calibration far off: {el:?}");
    let mut b = [0u8; 4];
    v.read_exact_at(&mut b, 0).unwrap();
    assert_eq!(&b, b"data");
}

/// The squashfs reader calls from many threads at random offsets: reads through
/// one shared UnlockedVolume must all see the right plaintext.
#[test]
fn concurrent_random_reads() {
    let dir = tempfile::tempdir().unwrap();
    let payload = luks2_util::payload(3 << 20, 99);
    let o = CreateOptions {
        data_offset: 1 << 20,
        ..opts("pbkdf2", 4096)
    };
    let (img, _) = make(dir.path(), "mt", &payload, b"pw", &o);
    let v = std::sync::Arc::new(
        luks2::unlock(
            FileSource::open(&img).unwrap(),
            &Passphrase::from_slice(b"pw"),
            &UnlockOptions::default(),
        )
        .unwrap(),
    );
    let payload = std::sync::Arc::new(payload);
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let (v, payload) = (v.clone(), payload.clone());
            std::thread::spawn(move || {
                // Vec<u8> is itself a ReadAt (len() -> u64): use the slice length.
                let plen = <[u8]>::len(&payload);
                let mut x = t + 1;
                for _ in 0..300 {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let off = (x >> 33) as usize % plen;
                    // Sizes from 1 byte to 1 MiB (large ones take the parallel path).
                    let len = (((x >> 7) as usize % (1 << 20)) + 1).min(plen - off);
                    let mut b = vec![0u8; len];
                    v.read_exact_at(&mut b, off as u64).unwrap();
                    assert!(b == payload[off..off + len], "thread {t}: {len} at {off}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}
