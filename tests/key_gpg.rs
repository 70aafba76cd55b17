//! Keys round-trip between veil and gpg through import and export, armored and binary,
//! and the key commands manage ~/.veil/keys (under a temporary HOME).

mod common;

use std::path::Path;

use common::*;

fn gpg_fpr(g: &Path, secret: bool) -> Vec<String> {
    let out = run_ok(gpg_in(g).args([
        "--with-colons",
        if secret {
            "--list-secret-keys"
        } else {
            "--list-keys"
        },
    ]));
    // The first fpr line after each pub/sec line is the primary key's.
    let mut res = Vec::new();
    let mut want = false;
    for l in stdout(&out).lines() {
        if l.starts_with("pub:") || l.starts_with("sec:") {
            want = true;
        } else if want && l.starts_with("fpr:") {
            res.push(l.split(':').nth(9).unwrap().to_string());
            want = false;
        }
    }
    res
}

fn veil_list(home: &Path, secret: bool) -> serde_json::Value {
    let mut c = veil_in(home);
    c.args(["key", "list", "--json"]);
    if secret {
        c.arg("--secret");
    }
    serde_json::from_slice(&run_ok(&mut c).stdout).unwrap()
}

#[test]
fn gpg_key_imports_into_veil_and_signs() {
    require!(which("gpg"), "gpg is not installed");
    let d = require!(sif_testdata(), "shared/testdata/sif is missing");
    let home = tempfile::tempdir().unwrap();
    let dir = home.path();
    let g = new_gnupghome(dir);
    run_ok(gpg_in(&g).args([
        "--passphrase",
        "gpgpass",
        "--quick-gen-key",
        "GPG User <gpg@example.org>",
        "rsa2048",
        "sign,cert",
        "never",
    ]));
    let fpr = gpg_fpr(&g, true).remove(0);

    // Public key, binary; secret key, armored (protected by gpg's passphrase).
    let pubf = dir.join("pub.gpg");
    let secf = dir.join("sec.asc");
    run_ok(
        gpg_in(&g)
            .arg("--output")
            .arg(&pubf)
            .args(["--export", &fpr]),
    );
    run_ok(
        gpg_in(&g)
            .args(["--passphrase", "gpgpass", "--armor", "--output"])
            .arg(&secf)
            .args(["--export-secret-keys", &fpr]),
    );
    let out = run_ok(veil_in(dir).args(["key", "import"]).arg(&pubf));
    assert!(stdout(&out).contains(&format!("Imported public key {fpr}")));
    assert_eq!(veil_list(dir, false)[0]["fingerprint"], fpr.as_str());
    // Already protected: no passphrase is asked for on import.
    run_ok(veil_in(dir).args(["key", "import"]).arg(&secf));
    let secret = veil_list(dir, true);
    assert_eq!(secret[0]["fingerprint"], fpr.as_str());
    assert_eq!(secret[0]["protected"], true);
    assert_eq!(secret[0]["user_ids"][0], "GPG User <gpg@example.org>");
    assert_eq!(secret[0]["bits"], 2048);

    // Sign with it (gpg's passphrase), verify with veil and with gpg.
    let img = dir.join("img.sif");
    std::fs::copy(d.join("images/one-group.sif"), &img).unwrap();
    run_ok(
        veil_in(dir)
            .env("VEIL_PASSPHRASE", "gpgpass")
            .arg("sign")
            .arg(&img),
    );
    let out = run_ok(veil_in(dir).args(["verify", "--json"]).arg(&img));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["signatures"][0]["fingerprint"], fpr.as_str());
    let sig = run_ok(veil().args(["sif", "dump", "3"]).arg(&img)).stdout;
    let sigf = dir.join("sig.asc");
    std::fs::write(&sigf, sig).unwrap();
    let status = stdout(&run_ok(
        gpg_in(&g).args(["--status-fd", "1", "--verify"]).arg(&sigf),
    ));
    assert!(status.contains(&format!("VALIDSIG {fpr}")), "{status}");
}

#[test]
fn veil_key_exports_into_gpg() {
    require!(which("gpg"), "gpg is not installed");
    let home = tempfile::tempdir().unwrap();
    let dir = home.path();
    let out = run_ok(
        veil_in(dir)
            .env("VEIL_PASSPHRASE", "veilpass")
            .args([
                "key",
                "newpair",
                "-N",
                "Veil User",
                "-E",
                "veil@example.org",
            ])
            .args(["-C", "test", "--bit-length", "2048"]),
    );
    let fpr = stdout(&out).trim().rsplit(' ').next().unwrap().to_string();
    assert_eq!(fpr.len(), 40);
    let listed = veil_list(dir, false);
    assert_eq!(listed[0]["fingerprint"], fpr.as_str());
    assert_eq!(listed[0]["algorithm"], "RSA");
    assert_eq!(
        listed[0]["user_ids"][0],
        "Veil User (test) <veil@example.org>"
    );
    let text = stdout(&run_ok(veil_in(dir).args(["key", "list"])));
    assert!(
        text.contains("0) User:              Veil User (test) <veil@example.org>"),
        "{text}"
    );
    assert!(
        text.contains(&format!("   Fingerprint:       {fpr}")),
        "{text}"
    );
    assert!(text.contains("   Length (in bits):  2048"), "{text}");

    let g = new_gnupghome(dir);
    // Public, binary and armored.
    let pb = dir.join("pub.gpg");
    let pa = dir.join("pub.asc");
    run_ok(veil_in(dir).args(["key", "export", &fpr]).arg(&pb));
    run_ok(
        veil_in(dir)
            .args(["key", "export", "--armor", &fpr])
            .arg(&pa),
    );
    assert!(
        std::fs::read_to_string(&pa)
            .unwrap()
            .starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----")
    );
    run_ok(gpg_in(&g).arg("--import").arg(&pb));
    assert_eq!(gpg_fpr(&g, false), vec![fpr.clone()]);
    run_ok(gpg_in(&g).arg("--import").arg(&pa));

    // Secret, armored: gpg imports it and can sign with veil's passphrase.
    let sa = dir.join("sec.asc");
    run_ok(
        veil_in(dir)
            .args(["key", "export", "--secret", "--armor", &fpr])
            .arg(&sa),
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&sa).unwrap().permissions().mode() & 0o777,
        0o600
    );
    run_ok(
        gpg_in(&g)
            .args(["--passphrase", "veilpass", "--import"])
            .arg(&sa),
    );
    assert_eq!(gpg_fpr(&g, true), vec![fpr.clone()]);
    let msg = dir.join("msg.txt");
    std::fs::write(&msg, "hello").unwrap();
    run_ok(
        gpg_in(&g)
            .args([
                "--passphrase",
                "veilpass",
                "--local-user",
                &fpr,
                "--detach-sign",
            ])
            .arg(&msg),
    );
    // The wrong passphrase does not unlock it in gpg: it really is protected.
    let g2 = dir.join("g2");
    std::fs::create_dir(&g2).unwrap();
    std::fs::set_permissions(&g2, std::fs::Permissions::from_mode(0o700)).unwrap();
    run_ok(
        gpg_in(&g2)
            .args(["--passphrase", "veilpass", "--import"])
            .arg(&sa),
    );
    run_err(
        gpg_in(&g2)
            .args([
                "--passphrase",
                "wrong",
                "--local-user",
                &fpr,
                "--yes",
                "--detach-sign",
            ])
            .arg(&msg),
    );

    // Binary secret export round-trips through veil import too.
    let sb = dir.join("sec.gpg");
    run_ok(
        veil_in(dir)
            .args(["key", "export", "--secret", &fpr])
            .arg(&sb),
    );
    let home2 = tempfile::tempdir().unwrap();
    run_ok(veil_in(home2.path()).args(["key", "import"]).arg(&sb));
    assert_eq!(
        veil_list(home2.path(), true)[0]["fingerprint"],
        fpr.as_str()
    );
}

#[test]
fn remove_and_errors() {
    let d = require!(sif_testdata(), "shared/testdata/sif is missing");
    let home = tempfile::tempdir().unwrap();
    let dir = home.path();
    run_ok(
        veil_in(dir)
            .env("VEIL_PASSPHRASE", "")
            .args(["key", "import"])
            .arg(d.join("keys/private.asc")),
    );
    assert_eq!(veil_list(dir, true)[0]["protected"], false);
    let fpr = "12045C8C0B1004D058DE4BEDA20C27EE7FF7BA84";
    // By key ID, lower case.
    let out = run_ok(veil_in(dir).args(["key", "remove", "a20c27ee7ff7ba84"]));
    assert!(stdout(&out).contains(&format!("Removed public key {fpr}")));
    assert_eq!(veil_list(dir, false).as_array().unwrap().len(), 0);
    assert_eq!(veil_list(dir, true).as_array().unwrap().len(), 1);
    run_ok(veil_in(dir).args(["key", "remove", "--secret", fpr]));
    assert_eq!(veil_list(dir, true).as_array().unwrap().len(), 0);
    let err = run_err(veil_in(dir).args(["key", "remove", fpr]));
    assert!(err.contains("no key matching"), "{err}");
    let err = run_err(veil_in(dir).args(["key", "remove", "xyz"]));
    assert!(err.contains("is not a key fingerprint"), "{err}");
    let junk = dir.join("junk");
    std::fs::write(&junk, "not a key").unwrap();
    let err = run_err(veil_in(dir).args(["key", "import"]).arg(&junk));
    assert!(err.contains("junk"), "{err}");
    let err = run_err(veil_in(dir).args(["key", "export", fpr]).arg(dir.join("x")));
    assert!(err.contains("no public key matches"), "{err}");
}
