//! `veil keyslot add | remove`: re-keying an encrypted SIF in place, checked with the
//! real cryptsetup through shared/interop/check-encrypted-sif and by running the image.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

fn check(sif: &Path, key: &[&str]) -> Option<bool> {
    let script = shared_dir()?.join("interop/check-encrypted-sif");
    script.is_file().then_some(())?;
    Some(
        Command::new(script)
            .arg(sif)
            .args(key)
            .output()
            .unwrap()
            .status
            .success(),
    )
}

#[test]
fn add_replace_and_remove_keys_without_rebuilding() {
    require!(
        which("openssl").and(which("siftool")),
        "openssl or siftool missing"
    );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let rootfs = require!(busybox_rootfs(d), "busybox missing");
    for k in ["a", "b"] {
        run_ok(
            Command::new("openssl")
                .args(["genrsa", "-traditional", "-out"])
                .arg(d.join(format!("{k}.pem")))
                .arg("2048"),
        );
        run_ok(
            Command::new("openssl")
                .args(["rsa", "-RSAPublicKey_out", "-in"])
                .arg(d.join(format!("{k}.pem")))
                .arg("-out")
                .arg(d.join(format!("{k}.pub"))),
        );
    }
    std::fs::write(d.join("p1"), "first").unwrap();
    std::fs::write(d.join("p2"), "second").unwrap();
    let img = d.join("img.sif");
    let fast = ["--kdf-time", "50", "--kdf-memory", "16"];
    run_ok(
        veil()
            .args(["build", "-q", "--passphrase-file"])
            .arg(d.join("p1"))
            .args(fast)
            .arg(&img)
            .arg(&rootfs),
    );
    let data_before = std::fs::read(&img).unwrap();

    // A second passphrase, then an RSA recipient: all three keys open the image.
    run_ok(
        veil()
            .args(["keyslot", "add"])
            .arg(&img)
            .arg("--passphrase-file")
            .arg(d.join("p1"))
            .arg("--new-passphrase-file")
            .arg(d.join("p2"))
            .args(fast),
    );
    run_ok(
        veil()
            .args(["keyslot", "add"])
            .arg(&img)
            .arg("--passphrase-file")
            .arg(d.join("p2"))
            .arg("--new-pem-path")
            .arg(d.join("a.pub")),
    );
    let list = stdout(&run_ok(Command::new("siftool").arg("list").arg(&img)));
    assert!(
        list.contains("Cryptographic Message (PEM/RSA-OAEP)"),
        "{list}"
    );
    let runs = |key: &[&str]| {
        let o = veil()
            .arg("exec")
            .args(key)
            .arg(&img)
            .args(["cat", "/data/hello.txt"])
            .output()
            .unwrap();
        o.status.success() && stdout(&o) == "hello from the image\n"
    };
    let a = d.join("a.pem");
    let b = d.join("b.pem");
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
    let (p1, p2) = (d.join("p1"), d.join("p2"));
    let (p1, p2) = (p1.to_str().unwrap(), p2.to_str().unwrap());
    assert!(runs(&["--passphrase-file", p1]));
    assert!(runs(&["--passphrase-file", p2]));
    assert!(runs(&["--pem-path", a]));
    if check(&img, &["--pem-path", a]).is_some() {
        assert_eq!(check(&img, &["--pem-path", a]), Some(true));
        assert_eq!(check(&img, &["--passphrase", "second"]), Some(true));
    }
    // A second recipient needs --replace (the peers read only the first message).
    let e = run_err(
        veil()
            .args(["keyslot", "add"])
            .arg(&img)
            .args(["--pem-path", a, "--new-pem-path"])
            .arg(d.join("b.pub")),
    );
    assert!(e.contains("--replace"), "{e}");
    run_ok(
        veil()
            .args(["keyslot", "add", "--replace"])
            .arg(&img)
            .args(["--pem-path", a, "--new-pem-path"])
            .arg(d.join("b.pub")),
    );
    assert!(runs(&["--pem-path", b]));
    assert!(!runs(&["--pem-path", a]));
    // Remove by key and by number; the last keyslot stays.
    run_ok(
        veil()
            .args(["keyslot", "remove"])
            .arg(&img)
            .args(["--passphrase-file", p1]),
    );
    assert!(!runs(&["--passphrase-file", p1]));
    assert!(runs(&["--passphrase-file", p2]));
    run_ok(
        veil()
            .args(["keyslot", "remove"])
            .arg(&img)
            .args(["--pem-path", b]),
    );
    assert!(!runs(&["--pem-path", b]));
    assert!(
        !stdout(&run_ok(Command::new("siftool").arg("list").arg(&img))).contains("Cryptographic")
    );
    let e = run_err(
        veil()
            .args(["keyslot", "remove"])
            .arg(&img)
            .args(["--passphrase-file", p2]),
    );
    assert!(
        e.starts_with("veil: error:") && e.lines().count() == 1,
        "{e}"
    );
    assert!(runs(&["--passphrase-file", p2]));
    if check(&img, &["--passphrase", "second"]).is_some() {
        assert_eq!(check(&img, &["--passphrase", "second"]), Some(true));
    }
    // The encrypted data itself was not rewritten.
    let after = std::fs::read(&img).unwrap();
    let seg = 36864 + (16 << 20);
    assert_eq!(&data_before[seg..seg + 65536], &after[seg..seg + 65536]);
    // Not encrypted: a clear error.
    let plain = d.join("plain.sif");
    run_ok(veil().args(["build", "-q"]).arg(&plain).arg(&rootfs));
    let e = run_err(
        veil()
            .args(["keyslot", "remove", "--slot", "0"])
            .arg(&plain),
    );
    assert!(e.contains("not encrypted"), "{e}");
}
