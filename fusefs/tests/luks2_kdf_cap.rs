//! Bounded key-derivation work, on volumes made by the real cryptsetup: what
//! cryptsetup writes by default fits the caps with room to spare; a keyslot whose
//! header asks for more (edited by hand, as cryptsetup would take hours to write
//! it) is refused before any of its work is done, naming the keyslot and its cost,
//! while the other keyslots are still tried; keyslots are tried in LUKS2 priority
//! order (prefer, then normal; ignore only when named).

mod luks2_util;

use std::path::Path;
use std::time::{Duration, Instant};

use sha2::Digest;
use veil_fusefs::luks2::{self, Error, KdfLimits, KdfParams, Passphrase, UnlockOptions};
use veil_fusefs::source::FileSource;

const PASS: &str = "cap test passphrase";
const OTHER: &str = "the other keyslot";

fn unlock(img: &Path, pass: &str, opts: &UnlockOptions) -> Result<u32, Error> {
    luks2::unlock(
        FileSource::open(img).unwrap(),
        &Passphrase::from_slice(pass.as_bytes()),
        opts,
    )
    .map(|v| v.keyslot())
}

/// Rewrites the JSON metadata of both header copies with `edit` and recomputes
/// their checksums: a "valid" but hostile header.
fn edit_json(img: &Path, mut edit: impl FnMut(&mut serde_json::Value)) {
    let mut v = std::fs::read(img).unwrap();
    let hdr = u64::from_be_bytes(v[8..16].try_into().unwrap()) as usize;
    for base in [0, hdr] {
        let area = &v[base + 4096..base + hdr];
        let end = area.iter().position(|&b| b == 0).unwrap();
        let mut json: serde_json::Value = serde_json::from_slice(&area[..end]).unwrap();
        edit(&mut json);
        let text = serde_json::to_vec(&json).unwrap();
        let area = &mut v[base + 4096..base + hdr];
        area.fill(0);
        area[..text.len()].copy_from_slice(&text);
        v[base + 448..base + 512].fill(0);
        let d = sha2::Sha256::digest(&v[base..base + hdr]);
        v[base + 448..base + 480].copy_from_slice(&d);
    }
    std::fs::write(img, v).unwrap();
}

/// A cryptsetup volume with keyslot 0 (PASS) and keyslot 1 (`second`), both cheap
/// pbkdf2.
fn two_slots(interop: &Path, dir: &Path, second: &str) -> std::path::PathBuf {
    let img = luks2_util::make(
        interop,
        dir,
        "two",
        &luks2_util::payload(8192, 9),
        PASS,
        &["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"],
    );
    let (old, new) = (dir.join("old.key"), dir.join("new.key"));
    std::fs::write(&old, PASS).unwrap();
    std::fs::write(&new, second).unwrap();
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
    assert!(ok, "luksAddKey: {out}");
    img
}

#[test]
fn cryptsetup_default_keyslots_fit_the_caps() {
    let Some(interop) = luks2_util::interop() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let l = KdfLimits::default();
    // cryptsetup's own 2-second benchmark, as `apptainer build --encrypt` uses it.
    for kdf in ["argon2id", "pbkdf2"] {
        let img = luks2_util::make(
            &interop,
            dir.path(),
            kdf,
            &luks2_util::payload(4096, 1),
            PASS,
            &["--pbkdf", kdf],
        );
        let s = luks2::inspect(&FileSource::open(&img).unwrap()).unwrap();
        let (work, cap) = match s.keyslots[0].kdf.clone().unwrap() {
            KdfParams::Pbkdf2 { iterations, .. } => {
                (u64::from(iterations), l.max_pbkdf2_iterations)
            }
            KdfParams::Argon2 {
                time, memory_kib, ..
            } => (u64::from(time) * u64::from(memory_kib), l.max_argon2_work),
        };
        eprintln!(
            "cryptsetup {kdf}: work {work}, {:.1}% of the cap",
            100.0 * work as f64 / cap as f64
        );
        // Well inside: even a machine several times faster stays under the cap.
        assert!(work * 3 <= cap, "{kdf}: {work} against a cap of {cap}");
        assert_eq!(unlock(&img, PASS, &UnlockOptions::default()).unwrap(), 0);
    }
}

#[test]
fn a_keyslot_over_the_cap_costs_no_work_and_the_others_still_open() {
    let Some(interop) = luks2_util::interop() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let img = two_slots(&interop, dir.path(), OTHER);
    // Keyslot 0 asks for 90 million PBKDF2 iterations: under the old limit of 10^8,
    // about 45 s of work on this machine for every unlock that tries it.
    edit_json(&img, |j| {
        j["keyslots"]["0"]["kdf"]["iterations"] = 90_000_000.into();
    });
    let t = Instant::now();
    assert_eq!(unlock(&img, OTHER, &UnlockOptions::default()).unwrap(), 1);
    let e = unlock(&img, "wrong", &UnlockOptions::default()).unwrap_err();
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "the hostile keyslot was computed: {:?}",
        t.elapsed()
    );
    assert_eq!(
        e.to_string(),
        "keyslot 0: pbkdf2-sha256 with 90000000 iterations, more than the limit of 33554432 iterations"
    );
    // Named, it is refused the same way rather than computed.
    let named = UnlockOptions {
        keyslot: Some(0),
        ..Default::default()
    };
    assert!(matches!(
        unlock(&img, PASS, &named),
        Err(Error::KdfWorkTooHigh { slot: 0, .. })
    ));

    // argon2: 64 passes over 1 GiB, twice the cap (a minute of work before).
    let img = two_slots(&interop, dir.path(), OTHER);
    edit_json(&img, |j| {
        j["keyslots"]["0"]["kdf"] = serde_json::json!({
            "type": "argon2id", "time": 64, "memory": 1048576, "cpus": 1,
            "salt": j["keyslots"]["0"]["kdf"]["salt"].clone(),
        });
    });
    let t = Instant::now();
    let e = unlock(&img, "wrong", &UnlockOptions::default()).unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert_eq!(
        e.to_string(),
        "keyslot 0: argon2id, 64 passes over 1 GiB = 64 GiB·passes, more than the limit of 32 GiB·passes"
    );
    assert_eq!(unlock(&img, OTHER, &UnlockOptions::default()).unwrap(), 1);

    // The caps are the caller's: lowered below cryptsetup's 1000 iterations, the
    // plain volume is refused too; the digest's iterations count as well.
    let img = two_slots(&interop, dir.path(), OTHER);
    let low = UnlockOptions {
        limits: KdfLimits {
            max_pbkdf2_iterations: 999,
            ..Default::default()
        },
        ..Default::default()
    };
    assert!(matches!(
        unlock(&img, PASS, &low),
        Err(Error::KdfWorkTooHigh { .. })
    ));
    assert_eq!(unlock(&img, PASS, &UnlockOptions::default()).unwrap(), 0);
}

#[test]
fn keyslots_are_tried_in_priority_order() {
    let Some(interop) = luks2_util::interop() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // Both keyslots open with the same passphrase: which one did shows the order.
    let img = two_slots(&interop, dir.path(), PASS);
    let any = UnlockOptions::default();
    assert_eq!(unlock(&img, PASS, &any).unwrap(), 0);
    let priority = |slot: &str, p: &str| {
        let (ok, out) = luks2_util::cryptsetup(&[
            "config",
            "--priority",
            p,
            "--key-slot",
            slot,
            img.to_str().unwrap(),
        ]);
        assert!(ok, "cryptsetup config: {out}");
    };
    priority("1", "prefer");
    assert_eq!(unlock(&img, PASS, &any).unwrap(), 1);
    // A preferred keyslot over the cap does not stop the normal one.
    let hostile = dir.path().join("hostile.img");
    std::fs::copy(&img, &hostile).unwrap();
    edit_json(&hostile, |j| {
        j["keyslots"]["1"]["kdf"]["iterations"] = 90_000_000.into();
    });
    assert_eq!(unlock(&hostile, PASS, &any).unwrap(), 0);
    // "ignore" keyslots are used only when named, as cryptsetup does.
    priority("1", "ignore");
    assert_eq!(unlock(&img, PASS, &any).unwrap(), 0);
    priority("0", "ignore");
    assert!(matches!(
        unlock(&img, PASS, &any),
        Err(Error::NoUsableKeyslot)
    ));
    let named = UnlockOptions {
        keyslot: Some(1),
        ..Default::default()
    };
    assert_eq!(unlock(&img, PASS, &named).unwrap(), 1);
}

#[test]
fn all_keyslots_together_stay_within_the_unlock_budget() {
    let Some(interop) = luks2_util::interop() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // Six keyslots, each well under the cap on its own.
    let img = two_slots(&interop, dir.path(), OTHER);
    let key = dir.path().join("pass.key");
    std::fs::write(&key, PASS).unwrap();
    for i in 2..6 {
        let new = dir.path().join(format!("k{i}"));
        std::fs::write(&new, format!("keyslot {i}")).unwrap();
        let (ok, out) = luks2_util::cryptsetup(&[
            "luksAddKey",
            "--batch-mode",
            "--pbkdf",
            "pbkdf2",
            "--pbkdf-force-iterations",
            "1000",
            "--key-file",
            key.to_str().unwrap(),
            img.to_str().unwrap(),
            new.to_str().unwrap(),
        ]);
        assert!(ok, "luksAddKey: {out}");
    }
    // With caps of 2000 iterations, a keyslot of 1000 iterations and its digest
    // (set to 1000 as well) cost one cap: the default budget of four is spent after
    // four tries, and the fifth keyslot is not computed.
    let mut digest = 0u64;
    edit_json(&img, |j| {
        digest = j["digests"]["0"]["iterations"].as_u64().unwrap();
        j["digests"]["0"]["iterations"] = 1000.into();
    });
    assert!(digest >= 1000);
    let small = UnlockOptions {
        limits: KdfLimits {
            max_pbkdf2_iterations: 2000,
            ..Default::default()
        },
        ..Default::default()
    };
    let e = unlock(&img, "wrong", &small).unwrap_err();
    assert!(
        matches!(
            e,
            Error::KdfBudgetSpent {
                slot: 4,
                tried: 4,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(
        e.to_string(),
        "keyslot 4 was not tried: the 4 keyslot(s) tried before it used up this unlock's key-derivation budget (4 keyslots' worth at the cap; trying it too makes 5.0)"
    );
    // With the default caps the same volume is nowhere near the budget.
    assert!(matches!(
        unlock(&img, "wrong", &UnlockOptions::default()),
        Err(Error::WrongPassphrase)
    ));
}
