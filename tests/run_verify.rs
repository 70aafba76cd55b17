//! `run/exec --verify` and `--policy`: an unsigned or tampered SIF is refused before
//! anything is mounted; one signed by a key in the user's keyring runs.

mod common;

use common::*;

#[test]
fn verify_refuses_unsigned_and_tampered_images_and_runs_signed_ones() {
    let e = require!(Unprivileged::new(), "no unprivileged user namespace");
    let root = require!(busybox_rootfs(e.dir.path()), "busybox is not installed");
    let (_, sif) = require!(
        squash_and_sif(&root, e.dir.path()),
        "mksquashfs or /dev/fuse missing"
    );
    e.own(&sif); // the user's own image, which the user may sign
    let as_user = |args: &[&str]| {
        let mut c = e.veil();
        c.env("VEIL_PASSPHRASE", "").args(args);
        c
    };
    let refused = |extra: &[&str], want: &str| {
        let o = as_user(&["exec"])
            .args(extra)
            .arg(&sif)
            .arg("true")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(veil_failed(o.status), "{err}");
        assert!(
            err.contains("image prohibited by policy") && err.contains(want),
            "expected {want:?}: {err}"
        );
    };
    refused(&["--verify"], "signature not found for object group 1");

    // A key of the user's own; the image signed with it.
    run_ok(&mut as_user(&[
        "key", "newpair", "--name", "Builder", "--type", "ed25519",
    ]));
    run_ok(as_user(&["sign"]).arg(&sif));
    let o = run_ok(
        as_user(&["exec", "--verify"])
            .arg(&sif)
            .args(["cat", "/data/hello.txt"]),
    );
    assert_eq!(stdout(&o), "hello from the image\n");

    // A policy naming another fingerprint refuses it; one naming the signer allows it.
    let list = run_ok(&mut as_user(&["key", "list", "--json"]));
    let keys: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let fpr = keys[0]["fingerprint"].as_str().unwrap().to_string();
    let pol = e.home.join("policy");
    std::fs::write(
        &pol,
        "mode = whitelist\nfingerprint = 12045C8C0B1004D058DE4BEDA20C27EE7FF7BA84\n",
    )
    .unwrap();
    refused(
        &["--policy", pol.to_str().unwrap()],
        "not signed by required entities",
    );
    std::fs::write(&pol, format!("mode = whitelist\nfingerprint = {fpr}\n")).unwrap();
    run_ok(
        as_user(&["exec", "--policy", pol.to_str().unwrap()])
            .arg(&sif)
            .arg("true"),
    );

    // Tampering with the signed partition is caught before running.
    let mut bytes = std::fs::read(&sif).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 1;
    std::fs::write(&sif, &bytes).unwrap();
    refused(&["--verify"], "integrity compromised");

    // Only SIFs carry signatures.
    let o = as_user(&["exec", "--verify"])
        .arg(&root)
        .arg("true")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("need a SIF image"));

    // A SIF cut short is a damaged SIF, not "not a SIF".
    std::fs::write(&sif, &bytes[..n / 3]).unwrap();
    let o = as_user(&["exec", "--verify"])
        .arg(&sif)
        .arg("true")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(veil_failed(o.status), "{err}");
    assert!(
        err.contains("cannot check its signatures") && !err.contains("need a SIF image"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}
