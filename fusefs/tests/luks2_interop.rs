//! cryptsetup → veil: volumes formatted by the real cryptsetup (through
//! shared/interop/make-luks2) unlock and decrypt to the original payload.

mod luks2_util;

use std::path::Path;

use veil_fusefs::luks2::{self, Error, KdfParams, Passphrase, UnlockOptions};
use veil_fusefs::source::{FileSource, ReadAt};

const PASS: &str = "correct horse ✓ battery";

/// Reads the whole plaintext in uneven pieces and compares it with the payload;
/// the rest of the segment must be zero padding.
fn assert_decrypts(v: &impl ReadAt, payload: &[u8], what: &str) {
    assert!(
        v.len() >= payload.len() as u64,
        "{what}: segment shorter than payload"
    );
    let mut all = vec![0u8; v.len() as usize];
    v.read_exact_at(&mut all, 0).unwrap();
    assert!(
        all[..payload.len()] == *payload,
        "{what}: plaintext differs"
    );
    assert!(
        all[payload.len()..].iter().all(|&b| b == 0),
        "{what}: padding not zero"
    );
    // Unaligned reads crossing sector boundaries.
    let mut off = 0usize;
    let mut step = 1usize;
    while off < payload.len() {
        let n = step.min(payload.len() - off);
        let mut b = vec![0u8; n];
        v.read_exact_at(&mut b, off as u64).unwrap();
        assert!(b == payload[off..off + n], "{what}: read of {n} at {off}");
        off += n + 7;
        step = step * 3 % 9001 + 1;
    }
    let mut b = [0u8; 1];
    assert!(
        v.read_exact_at(&mut b, v.len()).is_err(),
        "{what}: read past end"
    );
}

#[test]
fn cryptsetup_volumes_unlock_for_every_kdf_and_sector_size() {
    let Some(interop) = luks2_util::interop() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let payload = luks2_util::payload(100_003, 1);
    for kdf in ["argon2i", "argon2id", "pbkdf2"] {
        for ss in ["512", "4096"] {
            let name = format!("{kdf}-{ss}");
            let img = luks2_util::make(
                &interop,
                dir.path(),
                &name,
                &payload,
                PASS,
                &[
                    "--fast",
                    "--pbkdf",
                    kdf,
                    "--sector-size",
                    ss,
                    "--label",
                    "lbl",
                ],
            );
            let src = FileSource::open(&img).unwrap();
            let s = luks2::inspect(&src).unwrap();
            assert_eq!(s.sector_size.to_string(), ss);
            assert_eq!(s.label, "lbl");
            assert_eq!(s.cipher, "aes-xts-plain64");
            assert_eq!(s.key_size, 64);
            assert_eq!(s.segment_offset, 16 << 20);
            assert_eq!(s.keyslots.len(), 1);
            assert_eq!(s.keyslots[0].kdf.as_ref().unwrap().type_name(), kdf);
            assert!(s.warnings.is_empty(), "{:?}", s.warnings);

            let v = luks2::unlock(
                src,
                &Passphrase::from_slice(PASS.as_bytes()),
                &UnlockOptions::default(),
            )
            .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(v.keyslot(), 0);
            assert_eq!(
                v.len(),
                (std::fs::metadata(&img).unwrap().len() - (16 << 20))
            );
            assert_decrypts(&v, &payload, &name);
            // The same volume read in place from a mapping of the file (how veil
            // opens encrypted images): the same plaintext for every read shape.
            let mapped = mapped_source(&img);
            let m = luks2::unlock(
                mapped,
                &Passphrase::from_slice(PASS.as_bytes()),
                &UnlockOptions::default(),
            )
            .unwrap();
            assert_decrypts(&m, &payload, &format!("{name} (mapped)"));

            let err = luks2::unlock(
                FileSource::open(&img).unwrap(),
                &Passphrase::from_slice(b"wrong"),
                &UnlockOptions::default(),
            )
            .unwrap_err();
            assert!(matches!(err, Error::WrongPassphrase), "{name}: {err}");
        }
    }
}

/// cryptsetup's own offline encryption (not the Python data path): proves the
/// 512-byte IV units with 4096-byte sectors against dm-crypt's behaviour.
#[test]
fn cryptsetup_reencrypt_engine_data_decrypts() {
    let Some(interop) = luks2_util::interop() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let payload = luks2_util::payload(3 * 4096 + 100, 2);
    let img = luks2_util::make(
        &interop,
        dir.path(),
        "re",
        &payload,
        PASS,
        &[
            "--fast",
            "--pbkdf",
            "pbkdf2",
            "--sector-size",
            "4096",
            "--engine",
            "reencrypt",
            "--offset",
            "8192",
        ],
    );
    let v = luks2::unlock(
        FileSource::open(&img).unwrap(),
        &Passphrase::from_slice(PASS.as_bytes()),
        &UnlockOptions::default(),
    )
    .unwrap();
    let mut b = vec![0u8; payload.len()];
    v.read_exact_at(&mut b, 0).unwrap();
    assert!(b == payload);
}

/// An image file truncated while its volume is open through a mapping: reads of
/// what is gone fail with an error instead of the SIGBUS a plain file mapping would
/// raise, and what is left still decrypts (through pread from then on).
#[test]
fn a_mapped_volume_survives_truncation() {
    let Some(interop) = luks2_util::interop() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let payload = luks2_util::payload(2 << 20, 3);
    let img = luks2_util::make(
        &interop,
        dir.path(),
        "cut",
        &payload,
        PASS,
        &["--fast", "--pbkdf", "pbkdf2", "--sector-size", "512"],
    );
    let v = luks2::unlock(
        mapped_source(&img),
        &Passphrase::from_slice(PASS.as_bytes()),
        &UnlockOptions::default(),
    )
    .unwrap();
    let mut b = vec![0u8; 300_000];
    v.read_exact_at(&mut b, 1_000_001).unwrap();
    assert!(b == payload[1_000_001..1_300_001]);
    // Keep the header and the first MiB of the data segment.
    let segment = std::fs::metadata(&img).unwrap().len() - v.len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&img)
        .unwrap()
        .set_len(segment + (1 << 20))
        .unwrap();
    let err = v.read_exact_at(&mut b, 1_000_001).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof, "{err}");
    let mut head = vec![0u8; 100_000];
    v.read_exact_at(&mut head, 777).unwrap();
    assert!(head == payload[777..100_777]);
}

/// sha1 (AF merge with a short last block) and a 256-bit key (AES-128-XTS).
#[test]
fn sha1_hash_and_aes128_key() {
    let Some(interop) = luks2_util::interop() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let payload = luks2_util::payload(5000, 3);
    let img = luks2_util::make(
        &interop,
        dir.path(),
        "sha1",
        &payload,
        PASS,
        &[
            "--fast",
            "--pbkdf",
            "pbkdf2",
            "--hash",
            "sha1",
            "--key-size",
            "256",
            "--offset",
            "4096",
        ],
    );
    let src = FileSource::open(&img).unwrap();
    let s = luks2::inspect(&src).unwrap();
    assert_eq!(s.key_size, 32);
    assert_eq!(s.keyslots[0].af_hash, "sha1");
    let v = luks2::unlock(
        src,
        &Passphrase::from_slice(PASS.as_bytes()),
        &UnlockOptions::default(),
    )
    .unwrap();
    assert_decrypts(&v, &payload, "sha1/aes128");
}

#[test]
fn extra_keyslots_added_by_cryptsetup() {
    let Some(interop) = luks2_util::interop() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let payload = luks2_util::payload(20_000, 4);
    let img = luks2_util::make(
        &interop,
        dir.path(),
        "add",
        &payload,
        PASS,
        &["--fast", "--pbkdf", "argon2id", "--sector-size", "4096"],
    );
    let old = dir.path().join("old.key");
    let new = dir.path().join("new.key");
    // A binary secret, like Apptainer's PEM mode.
    let secret: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(37) ^ 0xa5).collect();
    std::fs::write(&old, PASS).unwrap();
    std::fs::write(&new, &secret).unwrap();
    for (kdf, extra) in [("pbkdf2", "1000"), ("argon2i", "4")] {
        let mut args = vec![
            "luksAddKey",
            "--batch-mode",
            "--pbkdf",
            kdf,
            "--pbkdf-force-iterations",
            extra,
        ];
        if kdf != "pbkdf2" {
            args.extend(["--pbkdf-memory", "32", "--pbkdf-parallel", "1"]);
        }
        let (ok, out) = luks2_util::cryptsetup(
            &[
                &args[..],
                &[
                    "--key-file",
                    old.to_str().unwrap(),
                    img.to_str().unwrap(),
                    new.to_str().unwrap(),
                ],
            ]
            .concat(),
        );
        assert!(ok, "luksAddKey: {out}");
        std::fs::write(&old, &secret).unwrap();
        std::fs::write(&new, format!("third {kdf}")).unwrap();
    }
    let s = luks2::inspect(&FileSource::open(&img).unwrap()).unwrap();
    assert_eq!(s.keyslots.len(), 3);
    assert!(matches!(
        s.keyslots[1].kdf,
        Some(KdfParams::Pbkdf2 {
            iterations: 1000,
            ..
        })
    ));
    let open = |p: &[u8], slot| {
        luks2::unlock(
            FileSource::open(&img).unwrap(),
            &Passphrase::from_slice(p),
            &UnlockOptions {
                keyslot: slot,
                ..Default::default()
            },
        )
    };
    let v = open(&secret, None).unwrap();
    assert_eq!(v.keyslot(), 1);
    assert_decrypts(&v, &payload, "slot 1");
    assert_eq!(open(b"third pbkdf2", None).unwrap().keyslot(), 2);
    assert_eq!(open(PASS.as_bytes(), Some(0)).unwrap().keyslot(), 0);
    assert!(matches!(
        open(&secret, Some(0)),
        Err(Error::WrongPassphrase)
    ));
    assert!(matches!(
        open(&secret, Some(7)),
        Err(Error::NoSuchKeyslot(7))
    ));
}

fn flip(path: &Path, offset: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset).unwrap();
    b[0] ^= 0x01;
    f.write_all_at(&b, offset).unwrap();
}

#[test]
fn one_corrupted_header_copy_is_reported_and_the_other_used() {
    let Some(interop) = luks2_util::interop() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let payload = luks2_util::payload(10_000, 5);
    let base = luks2_util::make(
        &interop,
        dir.path(),
        "dmg",
        &payload,
        PASS,
        &["--fast", "--pbkdf", "pbkdf2", "--offset", "4096"],
    );
    // 4096 + 10 = a byte of the primary JSON; 16384 + 4096 + 10 = of the secondary.
    for (name, off, which) in [
        ("primary", 4106u64, "primary"),
        ("secondary", 16384 + 4106, "secondary"),
        ("pbin", 30, "primary"),
    ] {
        let img = dir.path().join(format!("{name}.img"));
        std::fs::copy(&base, &img).unwrap();
        flip(&img, off);
        let before = std::fs::read(&img).unwrap();
        let s = luks2::inspect(&FileSource::open(&img).unwrap()).unwrap();
        assert_eq!(s.warnings.len(), 1, "{name}");
        assert!(
            s.warnings[0].starts_with(which),
            "{name}: {}",
            s.warnings[0]
        );
        let v = luks2::unlock(
            FileSource::open(&img).unwrap(),
            &Passphrase::from_slice(PASS.as_bytes()),
            &UnlockOptions::default(),
        )
        .unwrap();
        assert_eq!(v.warnings().len(), 1);
        assert_decrypts(&v, &payload, name);
        assert!(
            std::fs::read(&img).unwrap() == before,
            "{name}: the image was modified"
        );
        // The independent checker agrees that this copy is damaged.
        let (ok, out) =
            luks2_util::check(&interop, &img, PASS.as_bytes(), None, &["--no-independent"]);
        assert!(!ok, "check-luks2 accepted a damaged image: {out}");
    }
    let img = dir.path().join("both.img");
    std::fs::copy(&base, &img).unwrap();
    flip(&img, 4106);
    flip(&img, 16384 + 4106);
    let e = luks2::inspect(&FileSource::open(&img).unwrap()).unwrap_err();
    assert!(matches!(e, Error::BadHeader(_)), "{e}");
    assert!(e.to_string().contains("checksum"), "{e}");
}

#[test]
fn luks1_is_refused_plainly() {
    let Some(_) = luks2_util::interop() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("l1.img");
    std::fs::write(&img, vec![0u8; 4 << 20]).unwrap();
    let (ok, out) = luks2_util::cryptsetup(&[
        "luksFormat",
        "--batch-mode",
        "--type",
        "luks1",
        "--pbkdf-force-iterations",
        "1000",
        "--key-file",
        "/dev/null",
        "--keyfile-size",
        "0",
        img.to_str().unwrap(),
    ]);
    if !ok {
        // Fall back to a hand-made LUKS1 magic if cryptsetup refuses the empty key.
        eprintln!(
            "cryptsetup luksFormat --type luks1 failed ({out}); using a synthetic LUKS1 header"
        );
        let mut b = vec![0u8; 4 << 20];
        b[..8].copy_from_slice(b"LUKS\xba\xbe\x00\x01");
        std::fs::write(&img, b).unwrap();
    }
    let e = luks2::inspect(&FileSource::open(&img).unwrap()).unwrap_err();
    assert!(matches!(e, Error::Luks1Unsupported), "{e}");
    assert!(e.to_string().contains("LUKS1"));
}

/// The volume file through a mapping, as veil opens encrypted images.
fn mapped_source(img: &std::path::Path) -> FileSource {
    let len = std::fs::metadata(img).unwrap().len();
    // SAFETY: nothing writes the file in place while it is mapped (one test
    // truncates it, which the mapping handles).
    unsafe { FileSource::mapped(std::fs::File::open(img).unwrap(), 0, len) }.unwrap()
}
