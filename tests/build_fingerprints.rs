//! `Fingerprints:` in a definition file: the localimage source must verify with the
//! keyrings and be signed by a listed key, or the build stops at that line.

mod common;

use common::*;

const FPR: &str = "12045C8C0B1004D058DE4BEDA20C27EE7FF7BA84";
const PASS: &str = "correct horse battery staple";

#[test]
fn fingerprints_header_checks_the_bootstrap_image() {
    let d = require!(sif_testdata(), "shared/testdata/sif is missing");
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path();
    let rootfs = require!(busybox_rootfs(w), "busybox missing");
    let home = w.join("home");
    std::fs::create_dir(&home).unwrap();
    run_ok(
        veil_in(&home)
            .env("VEIL_PASSPHRASE", PASS)
            .args(["key", "import"])
            .arg(d.join("keys/private.asc")),
    );
    let base = w.join("base.sif");
    run_ok(veil_in(&home).args(["build", "-q"]).arg(&base).arg(&rootfs));
    let unsigned = w.join("unsigned.sif");
    std::fs::copy(&base, &unsigned).unwrap();
    run_ok(
        veil_in(&home)
            .env("VEIL_PASSPHRASE", PASS)
            .arg("sign")
            .arg(&base),
    );

    let def = |from: &str, fpr: &str| {
        let p = w.join("fp.def");
        std::fs::write(&p, format!("Bootstrap: localimage\nFrom: {from}\nFingerprints: {fpr}\n%runscript\n    echo ok\n")).unwrap();
        p
    };
    let out = w.join("out.sif");
    run_ok(
        veil_in(&home)
            .args(["build", "-q"])
            .arg(&out)
            .arg(def("base.sif", &FPR.to_lowercase())),
    );
    let o = veil().arg("run").arg(&out).output().unwrap();
    if o.status.success() {
        assert_eq!(stdout(&o), "ok\n");
    }
    let e = run_err(
        veil_in(&home)
            .args(["build", "-q", "-F"])
            .arg(&out)
            .arg(def("base.sif", &"0".repeat(40))),
    );
    assert!(e.contains("fp.def:3: Fingerprints:"), "{e}");
    let e = run_err(
        veil_in(&home)
            .args(["build", "-q", "-F"])
            .arg(&out)
            .arg(def("unsigned.sif", FPR)),
    );
    assert!(e.contains("fp.def:3: Fingerprints:"), "{e}");
    let e = run_err(
        veil_in(&home)
            .args(["build", "-q", "-F"])
            .arg(&out)
            .arg(def("base.sif", "nothex")),
    );
    assert!(
        e.contains("fp.def:3: Fingerprints:") && e.contains("40-hex-digit"),
        "{e}"
    );
}
