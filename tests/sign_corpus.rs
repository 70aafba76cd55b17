//! The reference images in shared/testdata/sif verify, or fail, exactly as its README
//! says, through the real `veil verify` binary.

mod common;

use std::path::{Path, PathBuf};

use common::*;

const FPR: &str = "12045C8C0B1004D058DE4BEDA20C27EE7FF7BA84";

fn data() -> Option<PathBuf> {
    sif_testdata()
}

/// `veil verify --key public.asc <image> <extra…>` with an empty HOME.
fn verify(d: &Path, image: &str, extra: &[&str]) -> std::process::Output {
    let home = tempfile::tempdir().unwrap();
    veil_in(home.path())
        .arg("verify")
        .arg("--key")
        .arg(d.join("keys/public.asc"))
        .args(extra)
        .arg(d.join("images").join(image))
        .output()
        .unwrap()
}

fn expect_ok(d: &Path, image: &str, extra: &[&str]) -> String {
    let out = verify(d, image, extra);
    assert!(
        out.status.success(),
        "{image} {extra:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout(&out)
}

fn expect_err(d: &Path, image: &str, extra: &[&str], msg: &str) -> String {
    let out = verify(d, image, extra);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "{image} {extra:?} verified but should not"
    );
    assert!(
        err.contains(msg),
        "{image} {extra:?}: want {msg:?}, got {err:?}"
    );
    assert_eq!(err.lines().count(), 1, "one-line error: {err:?}");
    assert!(!err.contains("panicked"));
    stdout(&out)
}

/// The object IDs listed under "Objects verified:" for each signature, in order.
fn verified_ids(stdout: &str) -> Vec<(u32, Vec<u32>)> {
    let mut res: Vec<(u32, Vec<u32>)> = Vec::new();
    for line in stdout.lines() {
        if let Some(rest) = line.strip_prefix("Signature object ") {
            let id = rest.split_whitespace().next().unwrap().parse().unwrap();
            res.push((id, vec![]));
        } else if let Some(first) = line.split('|').next()
            && line.contains('|')
            && !line.starts_with("ID")
            && let Ok(id) = first.trim().parse()
        {
            res.last_mut().unwrap().1.push(id);
        }
    }
    res
}

#[test]
fn unsigned_and_empty_images() {
    let d = require!(data(), "shared/testdata/sif is missing");
    for img in ["empty.sif", "empty-id.sif", "empty-launch-script.sif"] {
        expect_err(&d, img, &[], "no groups found");
    }
    for img in [
        "one-object-time.sif",
        "one-object-generic-json.sif",
        "one-object-crypt-message.sif",
        "one-object-sbom.sif",
        "one-object-oci-root-index.sif",
        "one-object-oci-blob.sif",
        "one-group.sif",
        "two-groups.sif",
    ] {
        expect_err(&d, img, &[], "signature not found for object group 1");
    }
}

#[test]
fn pgp_signed_images_verify() {
    let d = require!(data(), "shared/testdata/sif is missing");
    let out = expect_ok(&d, "one-group-signed-pgp.sif", &[]);
    assert_eq!(verified_ids(&out), vec![(3, vec![1, 2])]);
    assert!(
        out.contains("Signing entity: Unit Test <unit@test.com>"),
        "{out}"
    );
    assert!(out.contains(&format!("Fingerprint: {FPR}")), "{out}");

    let out = expect_ok(&d, "two-groups-signed-pgp.sif", &[]);
    assert_eq!(verified_ids(&out), vec![(4, vec![1, 2]), (5, vec![3])]);

    // Selections: one group, one object (a subset of what the signature covers).
    let out = expect_ok(&d, "two-groups-signed-pgp.sif", &["--group-id", "2"]);
    assert_eq!(verified_ids(&out), vec![(5, vec![3])]);
    let out = expect_ok(&d, "two-groups-signed-pgp.sif", &["--sif-id", "2"]);
    assert_eq!(verified_ids(&out), vec![(4, vec![2])]);
    expect_err(
        &d,
        "two-groups-signed-pgp.sif",
        &["--group-id", "7"],
        "group not found: 7",
    );
    expect_err(
        &d,
        "two-groups-signed-pgp.sif",
        &["--sif-id", "9"],
        "object not found: 9",
    );
}

#[test]
fn pgp_signed_json_output() {
    let d = require!(data(), "shared/testdata/sif is missing");
    let out = expect_ok(&d, "one-group-signed-pgp.sif", &["--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["verified"], true);
    let s = &v["signatures"][0];
    assert_eq!(s["signature"], 3);
    assert_eq!(s["format"], "pgp");
    assert_eq!(s["fingerprint"], FPR);
    assert_eq!(s["descriptor_fingerprint"], FPR);
    assert_eq!(s["signer"], "Unit Test <unit@test.com>");
    assert_eq!(s["verified"], serde_json::json!([1, 2]));
}

#[test]
fn unknown_signer_is_rejected() {
    let d = require!(data(), "shared/testdata/sif is missing");
    // An empty keyring, and no keyserver asked (--local): the signer is unknown.
    let home = tempfile::tempdir().unwrap();
    let err = run_err(
        veil_in(home.path())
            .args(["verify", "--local"])
            .arg(d.join("images/one-group-signed-pgp.sif")),
    );
    assert!(
        err.contains("signature object 3 not valid: openpgp: signature made by unknown entity"),
        "{err}"
    );
    // Another key entirely (a key veil generates).
    let other = home.path().join("other.asc");
    run_ok(
        veil_in(home.path())
            .env("VEIL_PASSPHRASE", "")
            .args(["key", "newpair", "--name", "Other", "--type", "ed25519"]),
    );
    let fpr = {
        let out = run_ok(veil_in(home.path()).args(["key", "list", "--json"]));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v[0]["fingerprint"].as_str().unwrap().to_string()
    };
    run_ok(
        veil_in(home.path())
            .args(["key", "export", "--armor", &fpr])
            .arg(&other),
    );
    let err = run_err(
        veil_in(home.path())
            .arg("verify")
            .arg("--key")
            .arg(&other)
            .arg(d.join("images/one-group-signed-pgp.sif")),
    );
    assert!(err.contains("signature made by unknown entity"), "{err}");
}

#[test]
fn keyring_in_home_is_used() {
    let d = require!(data(), "shared/testdata/sif is missing");
    let home = tempfile::tempdir().unwrap();
    run_ok(
        veil_in(home.path())
            .args(["key", "import"])
            .arg(d.join("keys/public.asc")),
    );
    run_ok(
        veil_in(home.path())
            .arg("verify")
            .arg(d.join("images/two-groups-signed-pgp.sif")),
    );
    // The peers' keyrings are read too: the same key in Apptainer's ring only.
    let home2 = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home2.path().join(".apptainer/keys")).unwrap();
    std::fs::copy(
        home.path().join(".veil/keys/pgp-public"),
        home2.path().join(".apptainer/keys/pgp-public"),
    )
    .unwrap();
    run_ok(
        veil_in(home2.path())
            .arg("verify")
            .arg(d.join("images/one-group-signed-pgp.sif")),
    );
}

#[test]
fn dsse_images_verify_with_pem_keys() {
    let d = require!(data(), "shared/testdata/sif is missing");
    // With only OpenPGP keys, the reference's message.
    for img in ["one-group-signed-dsse.sif", "two-groups-signed-dsse.sif"] {
        expect_err(
            &d,
            img,
            &[],
            "key material not provided for DSSE envelope signature",
        );
    }
    // Each of the two envelope signers verifies on its own (threshold 1); the keyid
    // veil computes must match the envelope's, or the signature would be skipped.
    for (key, keyid) in [
        (
            "ed25519",
            "SHA256:x6l8ZblpSSXGaPMCzySedWg88BwIFcz8jlPb6el0mFs",
        ),
        ("rsa", "SHA256:BhCwr7qZulYcOMSl2Jt2DuYHxHNnN6th4NdMqR/PGa4"),
    ] {
        let home = tempfile::tempdir().unwrap();
        let pem = d.join(format!("keys/{key}-public.pem"));
        let out = run_ok(
            veil_in(home.path())
                .arg("verify")
                .arg("--key")
                .arg(&pem)
                .arg(d.join("images/two-groups-signed-dsse.sif")),
        );
        let text = stdout(&out);
        assert_eq!(verified_ids(&text), vec![(4, vec![1, 2]), (5, vec![3])]);
        assert!(text.contains(&format!("DSSE key {keyid}")), "{text}");
        run_ok(
            veil_in(home.path())
                .args(["verify", "--json", "--key"])
                .arg(&pem)
                .arg(d.join("images/one-group-signed-dsse.sif")),
        );
    }
    // A key that signed nothing in the envelope.
    let home = tempfile::tempdir().unwrap();
    let err = run_err(
        veil_in(home.path())
            .arg("verify")
            .arg("--key")
            .arg(d.join("keys/ecdsa-public.pem"))
            .arg(d.join("images/one-group-signed-dsse.sif")),
    );
    assert!(
        err.contains("signature object 3 not valid: dsse: no signature verified"),
        "{err}"
    );
    // A changed object is caught through the DSSE payload as well.
    let img = home.path().join("dsse.sif");
    std::fs::copy(d.join("images/one-group-signed-dsse.sif"), &img).unwrap();
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
        f.write_all_at(b"X", 36864 + 10).unwrap();
    }
    let err = run_err(
        veil_in(home.path())
            .arg("verify")
            .arg("--key")
            .arg(d.join("keys/ed25519-public.pem"))
            .arg(&img),
    );
    assert!(
        err.contains("data object integrity compromised: 2"),
        "{err}"
    );
}

#[test]
fn legacy_images_need_legacy_insecure() {
    let d = require!(data(), "shared/testdata/sif is missing");
    let legacy = ["--legacy-insecure"];
    // Current-format verification never accepts legacy signatures.
    for img in [
        "one-group-signed-legacy.sif",
        "one-group-signed-legacy-group.sif",
        "one-group-signed-legacy-all.sif",
    ] {
        expect_err(&d, img, &[], "signature not found for object group 1");
    }

    // Object form: the default (primary partition) and --sif-id 2.
    let out = expect_ok(&d, "one-group-signed-legacy.sif", &legacy);
    assert_eq!(verified_ids(&out), vec![(3, vec![2])]);
    assert!(out.contains("legacy PGP"), "{out}");
    expect_ok(
        &d,
        "one-group-signed-legacy.sif",
        &["--legacy-insecure", "--sif-id", "2"],
    );

    // Group form.
    let out = expect_ok(
        &d,
        "one-group-signed-legacy-group.sif",
        &["--legacy-insecure", "-g", "1"],
    );
    assert_eq!(verified_ids(&out), vec![(3, vec![1, 2])]);
    expect_err(
        &d,
        "one-group-signed-legacy-group.sif",
        &["--legacy-insecure", "--sif-id", "2"],
        "signature not found for object 2",
    );

    // All form.
    let out = expect_ok(
        &d,
        "one-group-signed-legacy-all.sif",
        &["--legacy-insecure", "--all"],
    );
    assert_eq!(verified_ids(&out), vec![(3, vec![1]), (4, vec![2])]);
    expect_err(
        &d,
        "one-group-signed-legacy-all.sif",
        &["--legacy-insecure", "-g", "1"],
        "signature not found for object group 1",
    );

    // Two groups.
    let out = expect_ok(&d, "two-groups-signed-legacy.sif", &legacy);
    assert_eq!(verified_ids(&out), vec![(4, vec![2])]);
    let out = expect_err(
        &d,
        "two-groups-signed-legacy-group.sif",
        &["--legacy-insecure", "-g", "1", "-g", "2"],
        "signature not found for object group 2",
    );
    assert_eq!(verified_ids(&out), vec![(4, vec![1, 2])]);
    let out = expect_err(
        &d,
        "two-groups-signed-legacy-all.sif",
        &["--legacy-insecure", "--all"],
        "signature not found for object 3",
    );
    assert_eq!(verified_ids(&out), vec![(4, vec![1]), (5, vec![2])]);
}
