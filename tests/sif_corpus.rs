//! veil reads Sylabs' 21 reference images and prints what siftool (HEAD) prints for
//! them, and rejects malformed files with one line and a non-zero exit.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use veil::sif::{DataType, Extra, FsType, PartType, Sif};

fn corpus() -> Option<PathBuf> {
    shared_dir().map(|s| s.join("testdata/sif"))
}

/// `one-group-signed-pgp` → `OneGroupSignedPGP`, the golden files' naming.
fn camel(stem: &str) -> String {
    stem.split('-')
        .map(|p| match p {
            "pgp" | "dsse" | "id" | "oci" | "sbom" | "json" => p.to_uppercase(),
            _ => {
                let mut c = p.chars();
                c.next()
                    .map(|f| f.to_uppercase().chain(c).collect())
                    .unwrap_or_default()
            }
        })
        .collect()
}

fn images(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir.join("images"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sif"))
        .collect();
    v.sort();
    v
}

#[test]
fn header_and_list_match_siftool_golden_output() {
    let dir = require!(corpus(), "shared/testdata/sif is not beside the repository");
    let imgs = images(&dir);
    assert_eq!(imgs.len(), 21, "the corpus has 21 images");
    let mut compared = 0;
    for img in &imgs {
        let name = camel(img.file_stem().unwrap().to_str().unwrap());
        for (cmd, golden_dir) in [("header", "TestApp_Header"), ("list", "TestApp_List")] {
            let golden = dir
                .join("siftool-golden")
                .join(golden_dir)
                .join(format!("{name}.golden"));
            let out = run_ok(veil().args(["sif", cmd]).arg(img));
            if let Ok(expected) = std::fs::read_to_string(&golden) {
                assert_eq!(stdout(&out), expected, "veil sif {cmd} {}", img.display());
                compared += 1;
            } else {
                // The DSSE images have no siftool golden output: check the listing's shape.
                assert!(name.contains("DSSE"), "no golden file for {name}");
                assert!(stdout(&out).contains("Signature (SHA-256)") || cmd == "header");
            }
        }
    }
    assert_eq!(compared, 38);
}

#[test]
fn info_matches_siftool_golden_output() {
    let dir = require!(corpus(), "shared/testdata/sif is not beside the repository");
    let cases = [
        ("CryptMessage", "one-object-crypt-message", 1),
        ("DataPartitionRaw", "two-groups-signed-pgp", 1),
        ("DataPartitionSquashFS", "two-groups-signed-pgp", 2),
        ("DataPartitionEXT3", "two-groups-signed-pgp", 3),
        ("DataSignature", "two-groups-signed-pgp", 4),
        ("GenericJSON", "one-object-generic-json", 1),
        ("OCIBlob", "one-object-oci-blob", 1),
        ("OCIRootIndex", "one-object-oci-root-index", 1),
        ("SBOM", "one-object-sbom", 1),
        ("Time", "one-object-time", 1),
    ];
    for (case, image, id) in cases {
        let expected =
            std::fs::read_to_string(dir.join(format!("siftool-golden/TestApp_Info/{case}.golden")))
                .unwrap();
        let img = dir.join(format!("images/{image}.sif"));
        let out = run_ok(veil().args(["sif", "info", &id.to_string()]).arg(&img));
        assert_eq!(stdout(&out), expected, "info {case}");
    }
}

#[test]
fn objects_are_exposed_as_byte_ranges() {
    let dir = require!(corpus(), "shared/testdata/sif is not beside the repository");
    let sif = Sif::open_path(dir.join("images/two-groups.sif")).unwrap();
    let prim = sif.primary_partition().expect("primary partition");
    assert_eq!(prim.id, 2);
    assert!(matches!(
        prim.extra(),
        Extra::Partition {
            fs: FsType::Squash,
            part: PartType::PrimSys,
            ..
        }
    ));
    let src = sif.object_source(prim).unwrap();
    let mut got = vec![0u8; 4096];
    veil_fusefs::source::ReadAt::read_exact_at(&src, &mut got, 0).unwrap();
    assert_eq!(got, std::fs::read(dir.join("input/root.squashfs")).unwrap());
    let ext3 = sif.object(3).unwrap();
    assert_eq!(ext3.group(), 2);
    assert_eq!(
        sif.read_object(ext3, 1 << 20).unwrap(),
        std::fs::read(dir.join("input/root.ext3")).unwrap()
    );
    assert!(
        sif.read_object(ext3, 1000).is_err(),
        "size limit is enforced"
    );

    let sbom = Sif::open_path(dir.join("images/one-object-sbom.sif")).unwrap();
    let d = sbom.objects_of_type(DataType::Sbom).next().unwrap();
    assert_eq!(
        sbom.read_object(d, 1 << 20).unwrap(),
        std::fs::read(dir.join("input/sbom.cdx.json")).unwrap()
    );
}

#[test]
fn json_output_parses_and_agrees_with_the_table() {
    let dir = require!(corpus(), "shared/testdata/sif is not beside the repository");
    let img = dir.join("images/two-groups-signed-pgp.sif");
    let out = run_ok(veil().args(["sif", "list", "--json"]).arg(&img));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let objs = v.as_array().unwrap();
    assert_eq!(objs.len(), 5);
    assert_eq!(objs[2]["fs"], "Ext3");
    assert_eq!(objs[2]["group"], 2);
    assert_eq!(objs[3]["link"]["group"], 1);
    assert_eq!(
        objs[3]["entity"],
        "12045C8C0B1004D058DE4BEDA20C27EE7FF7BA84"
    );
    let out = run_ok(veil().args(["sif", "header", "--json"]).arg(&img));
    let h: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(h["descriptors_free"], 43);
    assert_eq!(h["arch"], "386");
    assert_eq!(h["created_at"], serde_json::Value::Null);
    let out = run_ok(
        veil()
            .args(["sif", "info", "--json", "1"])
            .arg(dir.join("images/one-object-oci-blob.sif")),
    );
    let i: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        i["digest"],
        "sha256:a88b15e95042f7d5a1327c03c57e10bdc1cf5f5efc2968fc73c12b6f5b00c731"
    );
}

#[test]
fn dump_writes_the_exact_object_bytes() {
    let dir = require!(corpus(), "shared/testdata/sif is not beside the repository");
    let out = run_ok(
        veil()
            .args(["sif", "dump", "3"])
            .arg(dir.join("images/two-groups.sif")),
    );
    assert_eq!(
        out.stdout,
        std::fs::read(dir.join("input/root.ext3")).unwrap()
    );
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("idx.json");
    run_ok(
        veil()
            .args(["sif", "dump", "1", "-o"])
            .arg(&dest)
            .arg(dir.join("images/one-object-oci-root-index.sif")),
    );
    assert_eq!(
        std::fs::read(&dest).unwrap(),
        std::fs::read(dir.join("input/index.json")).unwrap()
    );
}

/// Writes a modified copy of a corpus image and returns veil's stderr for `list`.
fn list_error(src: &Path, edit: impl FnOnce(&mut Vec<u8>)) -> String {
    let mut bytes = std::fs::read(src).unwrap();
    edit(&mut bytes);
    let tmp = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tmp.path(), &bytes).unwrap();
    let err = run_err(veil().args(["sif", "list"]).arg(tmp.path()));
    assert_eq!(err.lines().count(), 1, "one line, got: {err}");
    assert!(err.starts_with("veil: error: "), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

/// A change applied to a copy of an image.
type Edit = Box<dyn FnOnce(&mut Vec<u8>)>;

fn put_i64(b: &mut [u8], off: usize, v: i64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

#[test]
fn malformed_files_give_one_line_errors() {
    let dir = require!(corpus(), "shared/testdata/sif is not beside the repository");
    let img = dir.join("images/two-groups.sif");
    let d0 = 4096; // first descriptor slot
    let cases: Vec<(&str, Edit)> = vec![
        ("shorter than the 128-byte", Box::new(|b| b.truncate(100))),
        ("invalid SIF magic", Box::new(|b| b[0x20] = b'X')),
        ("incompatible SIF version", Box::new(|b| b[0x2B] = b'9')),
        ("truncated", Box::new(|b| b.truncate(20_000))),
        ("truncated", Box::new(|b| b.truncate(300_000))),
        ("descriptor count", Box::new(|b| put_i64(b, 0x58, 1 << 40))),
        ("descriptor count", Box::new(|b| put_i64(b, 0x58, -1))),
        ("free descriptors", Box::new(|b| put_i64(b, 0x50, 99))),
        ("descriptor table size", Box::new(|b| put_i64(b, 0x68, 585))),
        ("overlaps the header", Box::new(|b| put_i64(b, 0x60, 16))),
        ("negative data size", Box::new(|b| put_i64(b, 0x78, -5))),
        // object 1's offset points past the end of the file
        (
            "lies outside the file",
            Box::new(move |b| put_i64(b, d0 + 17, 1 << 50)),
        ),
        (
            "lies outside the file",
            Box::new(move |b| put_i64(b, d0 + 25, i64::MAX)),
        ),
        (
            "negative offset",
            Box::new(move |b| put_i64(b, d0 + 25, -1)),
        ),
        // object 3 (ext3) moved onto object 2 (squashfs)
        (
            "overlap",
            Box::new(move |b| put_i64(b, d0 + 2 * 585 + 17, 36864)),
        ),
        ("used twice", Box::new(move |b| b[d0 + 585 + 5] = 1)),
        (
            "before the data section",
            Box::new(move |b| put_i64(b, d0 + 17, 200)),
        ),
    ];
    for (want, edit) in cases {
        let err = list_error(&img, edit);
        assert!(err.contains(want), "expected {want:?} in {err:?}");
    }
}

#[test]
fn missing_file_and_missing_object() {
    let err = run_err(veil().args(["sif", "list", "/nonexistent/x.sif"]));
    assert!(
        err.contains("/nonexistent/x.sif") && err.contains("No such file"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1);
    let dir = require!(corpus(), "shared/testdata/sif is not beside the repository");
    let err = run_err(
        veil()
            .args(["sif", "info", "9"])
            .arg(dir.join("images/one-group.sif")),
    );
    assert!(err.contains("object not found: 9"), "{err}");
    let err = run_err(
        veil()
            .args(["sif", "dump", "0"])
            .arg(dir.join("images/one-group.sif")),
    );
    assert!(err.contains("IDs start at 1"), "{err}");
}
