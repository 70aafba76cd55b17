//! Tampering with a signed object, descriptor field or header field makes verify fail
//! and name what changed; fields outside the signature (spec/sif.md §7.1) do not.

mod common;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use common::*;

const DESC: u64 = 4096;
const SLOT: u64 = 585;

fn desc(slot: u64, field: u64) -> u64 {
    DESC + SLOT * slot + field
}

struct Fixture {
    dir: tempfile::TempDir,
    key: PathBuf,
    image: PathBuf,
}

fn fixture() -> Option<Fixture> {
    let d = sif_testdata()?;
    Some(Fixture {
        dir: tempfile::tempdir().unwrap(),
        key: d.join("keys/public.asc"),
        image: d.join("images/one-group-signed-pgp.sif"),
    })
}

impl Fixture {
    /// A copy of the signed image with `edit` applied, and the verify result.
    fn verify_after(&self, name: &str, edit: impl FnOnce(&Path)) -> Result<String, String> {
        let p = self.dir.path().join(format!("{name}.sif"));
        std::fs::copy(&self.image, &p).unwrap();
        edit(&p);
        let out = veil_in(self.dir.path())
            .arg("verify")
            .arg("--key")
            .arg(&self.key)
            .arg(&p)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!err.contains("panicked"), "{name}: {err}");
        if out.status.success() {
            Ok(stdout(&out))
        } else {
            Err(err)
        }
    }

    fn expect_fail(&self, name: &str, want: &str, edit: impl FnOnce(&Path)) {
        match self.verify_after(name, edit) {
            Ok(_) => panic!("{name}: still verifies"),
            Err(e) => {
                assert!(e.contains(want), "{name}: want {want:?}, got {e:?}");
                assert_eq!(e.lines().count(), 1, "{name}: {e:?}");
            }
        }
    }
}

fn xor(path: &Path, off: u64, mask: u8) {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, off).unwrap();
    b[0] ^= mask;
    f.write_all_at(&b, off).unwrap();
}

fn put(path: &Path, off: u64, bytes: &[u8]) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, off).unwrap();
}

#[test]
fn untouched_image_verifies() {
    let f = require!(fixture(), "shared/testdata/sif is missing");
    f.verify_after("clean", |_| {}).unwrap();
}

#[test]
fn object_data_changes_name_the_object() {
    let f = require!(fixture(), "shared/testdata/sif is missing");
    f.expect_fail("obj1", "data object integrity compromised: 1", |p| {
        xor(p, 32768, 1)
    });
    f.expect_fail("obj2", "data object integrity compromised: 2", |p| {
        xor(p, 36864 + 1000, 0x80)
    });
}

#[test]
fn descriptor_changes_name_the_descriptor() {
    let f = require!(fixture(), "shared/testdata/sif is missing");
    let want1 = "data object descriptor integrity compromised: 1";
    let want2 = "data object descriptor integrity compromised: 2";
    f.expect_fail("type", want1, |p| xor(p, desc(0, 0), 0x02));
    f.expect_fail("link", want1, |p| put(p, desc(0, 13), &2u32.to_le_bytes()));
    f.expect_fail("size", want1, |p| put(p, desc(0, 25), &5i64.to_le_bytes()));
    f.expect_fail("created", want2, |p| xor(p, desc(1, 41), 1));
    f.expect_fail("uid", want1, |p| {
        put(p, desc(0, 57), &1000i64.to_le_bytes())
    });
    f.expect_fail("gid", want2, |p| {
        put(p, desc(1, 65), &1000i64.to_le_bytes())
    });
    f.expect_fail("name", want1, |p| put(p, desc(0, 73), b"evil"));
    f.expect_fail("fstype", want2, |p| {
        put(p, desc(1, 201), &5i32.to_le_bytes())
    });
    f.expect_fail("partarch", want2, |p| put(p, desc(1, 201 + 8), b"02\0"));
}

#[test]
fn header_changes_are_reported() {
    let f = require!(fixture(), "shared/testdata/sif is missing");
    f.expect_fail("launch", "header integrity compromised", |p| {
        put(p, 0, b"#!/bin/sh\n")
    });
    f.expect_fail("id", "header integrity compromised", |p| xor(p, 0x30, 0xFF));
}

#[test]
fn group_membership_changes_are_reported() {
    let f = require!(fixture(), "shared/testdata/sif is missing");
    // Object 2 moved out of the signed group.
    f.expect_fail("regroup", "object 2: signed object not found", |p| {
        put(p, desc(1, 9), &(2u32 | 0xF000_0000).to_le_bytes())
    });
    // An extra object slipped into the signed group.
    let siftool = veil_bin_add(&f, 1);
    f.expect_fail("extra-in-group", "object 4: object not signed", siftool);
    // An extra object with no group at all.
    f.expect_fail(
        "extra-ungrouped",
        "non-signature object not associated with object group",
        veil_bin_add(&f, 0),
    );
    // The signature removed.
    f.expect_fail("unsigned", "signature not found for object group 1", |p| {
        run_ok(veil().args(["sif", "del", "3"]).arg(p));
    });
}

/// An edit that adds a small JSON object in `group` with `veil sif add`.
fn veil_bin_add(f: &Fixture, group: u32) -> impl FnOnce(&Path) + '_ {
    move |p: &Path| {
        let obj = f.dir.path().join("obj.json");
        std::fs::write(&obj, "{}").unwrap();
        run_ok(
            veil()
                .args([
                    "sif",
                    "add",
                    "--datatype",
                    "6",
                    "--groupid",
                    &group.to_string(),
                ])
                .arg(p)
                .arg(&obj),
        );
    }
}

#[test]
fn signature_changes_are_reported() {
    let f = require!(fixture(), "shared/testdata/sif is missing");
    // The entity fingerprint in the signature descriptor.
    f.expect_fail(
        "entity",
        "fingerprint in descriptor does not correspond to signing entity",
        |p| xor(p, desc(2, 201 + 4), 0x01),
    );
    // The signed text inside the signature object: the JSON starts after the armor
    // header lines (35 + 13 + 1 bytes).
    f.expect_fail(
        "signed-text",
        "signature object 3 not valid: openpgp:",
        |p| xor(p, 40960 + 49 + 12, 0x01),
    );
    // The signature packet itself (inside the base64 block).
    f.expect_fail("packet", "signature object 3 not valid", |p| {
        let f = std::fs::File::open(p).unwrap();
        let mut sig = vec![0u8; 1048];
        f.read_exact_at(&mut sig, 40960).unwrap();
        let s = String::from_utf8(sig).unwrap();
        let at = s.find("-----BEGIN PGP SIGNATURE-----").unwrap() + 200;
        let c = s.as_bytes()[at];
        put(p, 40960 + at as u64, &[if c == b'A' { b'B' } else { b'A' }]);
    });
    // Not a signature at all.
    f.expect_fail(
        "garbage",
        "signature object 3: signature format not recognized",
        |p| put(p, 40960, b"garbage garbage garbage garbage garbage"),
    );
}

#[test]
fn fields_outside_the_signature_do_not_matter() {
    // These are not covered by the reference format either (spec §7.1, §11): verify
    // must still succeed so that images stay interchangeable with the peers.
    let f = require!(fixture(), "shared/testdata/sif is missing");
    f.verify_after("arch", |p| put(p, 0x2D, b"02\0")).unwrap();
    f.verify_after("hcreated", |p| xor(p, 0x40, 1)).unwrap();
    f.verify_after("hmodified", |p| xor(p, 0x48, 1)).unwrap();
    f.verify_after("dmodified", |p| xor(p, desc(1, 49), 1))
        .unwrap();
}
