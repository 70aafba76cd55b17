//! Images veil signs verify with veil, with `gpg --verify` on the dumped signature, and
//! show up in `siftool list`; the signed text is exactly the reference metadata JSON.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

const FPR: &str = "12045C8C0B1004D058DE4BEDA20C27EE7FF7BA84";
const PASS: &str = "correct horse battery staple";

/// A temporary HOME holding the test secret key (protected with `PASS`).
fn home_with_test_key(d: &Path) -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    run_ok(
        veil_in(home.path())
            .env("VEIL_PASSPHRASE", PASS)
            .args(["key", "import"])
            .arg(d.join("keys/private.asc")),
    );
    home
}

fn copy_image(d: &Path, name: &str, dir: &Path) -> PathBuf {
    let p = dir.join(name);
    std::fs::copy(d.join("images").join(name), &p).unwrap();
    p
}

fn sign(home: &Path, image: &Path, extra: &[&str]) -> std::process::Output {
    run_ok(
        veil_in(home)
            .env("VEIL_PASSPHRASE", PASS)
            .arg("sign")
            .args(extra)
            .arg(image),
    )
}

fn dump(image: &Path, id: u32) -> Vec<u8> {
    run_ok(veil().args(["sif", "dump", &id.to_string()]).arg(image)).stdout
}

/// gpg with the test public key imported.
fn gpg_home(d: &Path, parent: &Path) -> Option<PathBuf> {
    which("gpg")?;
    let g = new_gnupghome(parent);
    run_ok(gpg_in(&g).arg("--import").arg(d.join("keys/public.asc")));
    Some(g)
}

#[test]
fn signed_text_is_the_reference_metadata_and_gpg_accepts_it() {
    let d = require!(sif_testdata(), "shared/testdata/sif is missing");
    let home = home_with_test_key(&d);
    let img = copy_image(&d, "one-group.sif", home.path());
    let out = sign(home.path(), &img, &[]);
    assert!(stdout(&out).contains("Signature object 3 (group 1, objects [1, 2])"));

    let sig = dump(&img, 3);
    let mut golden =
        std::fs::read(d.join("integrity/golden/TestGetImageMetadata/SHA256.golden")).unwrap();
    // The golden file ends with a newline; the signed JSON does not (the line break
    // before the signature armor is framing, not text).
    if golden.last() == Some(&b'\n') {
        golden.pop();
    }
    assert!(!golden.contains(&b'\n'));
    let mut head = b"-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\n".to_vec();
    head.extend_from_slice(&golden);
    head.extend_from_slice(b"\n-----BEGIN PGP SIGNATURE-----\n");
    assert!(
        sig.starts_with(&head),
        "signed text differs from the golden metadata:\n{}",
        String::from_utf8_lossy(&sig)
    );

    // veil verifies it, from the keyring and from a key file.
    let out = run_ok(veil_in(home.path()).arg("verify").arg(&img));
    assert!(stdout(&out).contains(&format!("Fingerprint: {FPR}")));
    run_ok(
        veil_in(tempfile::tempdir().unwrap().path())
            .arg("verify")
            .arg("--key")
            .arg(d.join("keys/public.asc"))
            .arg(&img),
    );

    // gpg verifies the dumped object, and the good signature is by the test key.
    let g = require!(gpg_home(&d, home.path()), "gpg is not installed");
    let sigfile = home.path().join("sig.asc");
    std::fs::write(&sigfile, &sig).unwrap();
    let out = run_ok(
        gpg_in(&g)
            .args(["--status-fd", "1", "--verify"])
            .arg(&sigfile),
    );
    let status = stdout(&out);
    assert!(status.contains(&format!("VALIDSIG {FPR}")), "{status}");
    // Tampering with the signed text makes gpg fail too (the test can fail).
    let bad = String::from_utf8(sig.clone())
        .unwrap()
        .replacen("\"version\":1", "\"version\":2", 1);
    std::fs::write(&sigfile, bad).unwrap();
    run_err(gpg_in(&g).arg("--verify").arg(&sigfile));
}

#[test]
fn siftool_sees_the_signature_object() {
    let d = require!(sif_testdata(), "shared/testdata/sif is missing");
    let siftool = require!(which("siftool"), "siftool is not installed");
    let home = home_with_test_key(&d);
    let img = copy_image(&d, "one-group.sif", home.path());
    sign(home.path(), &img, &[]);
    let list = stdout(&run_ok(Command::new(&siftool).arg("list").arg(&img)));
    let row = list
        .lines()
        .find(|l| l.starts_with("3 "))
        .unwrap_or_else(|| panic!("no object 3 in:\n{list}"));
    assert!(row.contains("|NONE    |1   (G)"), "{row}");
    assert!(row.contains("Signature (SHA-256)"), "{row}");
    let info = stdout(&run_ok(
        Command::new(&siftool).args(["info", "3"]).arg(&img),
    ));
    assert!(info.contains(FPR), "{info}");
    // siftool's own dump of the object is what gpg checks.
    let g = require!(gpg_home(&d, home.path()), "gpg is not installed");
    let dumped = run_ok(Command::new(&siftool).args(["dump", "3"]).arg(&img)).stdout;
    let f = home.path().join("dumped.asc");
    std::fs::write(&f, dumped).unwrap();
    run_ok(gpg_in(&g).arg("--verify").arg(&f));
}

#[test]
fn two_groups_and_selections() {
    let d = require!(sif_testdata(), "shared/testdata/sif is missing");
    let home = home_with_test_key(&d);
    let dir = home.path();

    let img = copy_image(&d, "two-groups.sif", dir);
    sign(dir, &img, &[]);
    let out = run_ok(veil_in(dir).args(["verify", "--json"]).arg(&img));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["signatures"][0]["signature"], 4);
    assert_eq!(v["signatures"][0]["verified"], serde_json::json!([1, 2]));
    assert_eq!(v["signatures"][1]["signature"], 5);
    assert_eq!(v["signatures"][1]["verified"], serde_json::json!([3]));
    // The signed JSON of group 2 matches an independent recomputation (relative ID 0).
    let sig5 = String::from_utf8(dump(&img, 5)).unwrap();
    assert!(
        sig5.contains("{\"version\":1,\"header\":{\"digest\":\"sha256:"),
        "{sig5}"
    );
    assert!(sig5.contains("\"objects\":[{\"relativeId\":0,"), "{sig5}");

    // --group-id 2 only: group 1 stays unsigned.
    let img = dir.join("g2.sif");
    std::fs::copy(d.join("images/two-groups.sif"), &img).unwrap();
    sign(dir, &img, &["--group-id", "2"]);
    let err = run_err(veil_in(dir).arg("verify").arg(&img));
    assert!(
        err.contains("signature not found for object group 1"),
        "{err}"
    );
    run_ok(veil_in(dir).args(["verify", "--group-id", "2"]).arg(&img));

    // --sif-id 2: only object 2 is in the signature, so the full group check fails
    // but verifying object 2 alone succeeds.
    let img = dir.join("o2.sif");
    std::fs::copy(d.join("images/two-groups.sif"), &img).unwrap();
    sign(dir, &img, &["--sif-id", "2"]);
    let err = run_err(veil_in(dir).args(["verify", "-g", "1"]).arg(&img));
    assert!(err.contains("object 1: object not signed"), "{err}");
    run_ok(veil_in(dir).args(["verify", "--sif-id", "2"]).arg(&img));

    // Errors name what is wrong.
    let err = run_err(
        veil_in(dir)
            .env("VEIL_PASSPHRASE", PASS)
            .args(["sign", "--group-id", "9"])
            .arg(&img),
    );
    assert!(err.contains("group not found: 9"), "{err}");
    let empty = copy_image(&d, "empty.sif", dir);
    let err = run_err(
        veil_in(dir)
            .env("VEIL_PASSPHRASE", PASS)
            .arg("sign")
            .arg(&empty),
    );
    assert!(err.contains("no groups found"), "{err}");
}

#[test]
fn passphrase_handling_and_keyidx() {
    let d = require!(sif_testdata(), "shared/testdata/sif is missing");
    let home = home_with_test_key(&d);
    let dir = home.path();
    let img = copy_image(&d, "one-group.sif", dir);

    // No passphrase source and no terminal: a clear error, nothing signed.
    let out = veil_in(dir)
        .arg("sign")
        .arg(&img)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("passphrase"), "{err}");
    assert_eq!(
        std::fs::read(&img).unwrap().len(),
        40960,
        "image must be untouched"
    );

    // Wrong passphrase.
    let err = run_err(
        veil_in(dir)
            .env("VEIL_PASSPHRASE", "nope")
            .arg("sign")
            .arg(&img),
    );
    assert!(err.contains("wrong passphrase for key"), "{err}");
    // From a file.
    let pf = dir.join("pass.txt");
    std::fs::write(&pf, format!("{PASS}\n")).unwrap();
    run_ok(
        veil_in(dir)
            .args(["sign", "--passphrase-file"])
            .arg(&pf)
            .arg(&img),
    );
    run_ok(veil_in(dir).arg("verify").arg(&img));

    // The secret keyring is private and the key in it is protected.
    let ring = dir.join(".veil/keys/pgp-secret");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&ring).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let list = stdout(&run_ok(veil_in(dir).args(["key", "list", "--secret"])));
    assert!(list.contains("Protected:         yes"), "{list}");

    // A second key: now --keyidx is required, and selects by the listed order.
    run_ok(
        veil_in(dir)
            .env("VEIL_PASSPHRASE", "second")
            .args([
                "key",
                "newpair",
                "--name",
                "Second",
                "--email",
                "s@example.org",
            ])
            .args(["--type", "ed25519"]),
    );
    let img2 = copy_image(&d, "two-groups.sif", dir);
    let err = run_err(
        veil_in(dir)
            .env("VEIL_PASSPHRASE", "second")
            .arg("sign")
            .arg(&img2),
    );
    assert!(err.contains("choose one with --keyidx"), "{err}");
    let err = run_err(
        veil_in(dir)
            .env("VEIL_PASSPHRASE", "second")
            .args(["sign", "--keyidx", "5"])
            .arg(&img2),
    );
    assert!(err.contains("out of range"), "{err}");
    run_ok(
        veil_in(dir)
            .env("VEIL_PASSPHRASE", "second")
            .args(["sign", "--keyidx", "1"])
            .arg(&img2),
    );
    let out = run_ok(veil_in(dir).args(["verify", "--json"]).arg(&img2));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let listed: serde_json::Value = serde_json::from_slice(
        &run_ok(veil_in(dir).args(["key", "list", "--secret", "--json"])).stdout,
    )
    .unwrap();
    assert_eq!(v["signatures"][0]["fingerprint"], listed[1]["fingerprint"]);
    assert_eq!(v["signatures"][0]["signer"], "Second <s@example.org>");
}

#[test]
fn encrypted_image_is_signed_and_verified_without_its_key() {
    let d = require!(sif_testdata(), "shared/testdata/sif is missing");
    let shared = shared_dir().unwrap();
    require!(which("cryptsetup"), "cryptsetup is not installed");
    require!(which("siftool"), "siftool is not installed");
    let home = home_with_test_key(&d);
    let dir = home.path();
    let img = dir.join("enc.sif");
    let made = Command::new("python3")
        .arg(shared.join("interop/make-encrypted-sif"))
        .arg("--squashfs")
        .arg(d.join("input/root.squashfs"))
        .args(["--passphrase", "luks-secret", "--fast", "-o"])
        .arg(&img)
        .output()
        .unwrap();
    if !made.status.success() {
        eprintln!(
            "SKIP encrypted image: make-encrypted-sif failed: {}",
            String::from_utf8_lossy(&made.stderr)
        );
        return;
    }
    // No LUKS passphrase is given anywhere below: the signature covers the ciphertext.
    sign(dir, &img, &[]);
    let out = run_ok(veil_in(dir).args(["verify", "--json"]).arg(&img));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verified"], true);
    // Flip one ciphertext byte in the encrypted partition: verify names the object.
    let sif = veil::sif::Sif::open_path(&img).unwrap();
    let part = sif
        .objects()
        .find(|o| o.data_type == veil::sif::DataType::Partition)
        .unwrap()
        .clone();
    drop(sif);
    flip(&img, part.offset as u64 + part.size as u64 / 2);
    let err = run_err(veil_in(dir).arg("verify").arg(&img));
    assert!(
        err.contains(&format!("data object integrity compromised: {}", part.id)),
        "{err}"
    );
}

fn flip(path: &Path, off: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, off).unwrap();
    b[0] ^= 0x01;
    f.write_all_at(&b, off).unwrap();
}

#[test]
fn passphrase_prompt_on_a_terminal_does_not_echo() {
    let d = require!(sif_testdata(), "shared/testdata/sif is missing");
    let script = require!(which("script"), "script(1) (util-linux) is not installed");
    let home = tempfile::tempdir().unwrap();
    let dir = home.path();
    let secret = "tty-secret-8d41";
    run_ok(
        veil_in(dir)
            .env("VEIL_PASSPHRASE", secret)
            .args(["key", "import"])
            .arg(d.join("keys/private.asc")),
    );
    let img = copy_image(&d, "one-group.sif", dir);
    // script(1) gives veil a pseudo-terminal as /dev/tty; the passphrase is typed into it.
    let cmd = format!("{} sign {}", env!("CARGO_BIN_EXE_veil"), img.display());
    let mut child = Command::new(script)
        .args(["-qec", &cmd, "/dev/null"])
        .env("HOME", dir)
        .env_remove("VEIL_PASSPHRASE")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Type only once the prompt is shown, i.e. after echo is off: text typed earlier
    // would be echoed by the terminal itself.
    let mut seen = Vec::new();
    {
        use std::io::{Read, Write};
        let mut so = child.stdout.take().unwrap();
        let mut buf = [0u8; 256];
        while !String::from_utf8_lossy(&seen).contains("Enter the passphrase for key") {
            let n = so.read(&mut buf).unwrap();
            assert!(n > 0, "no prompt: {}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&buf[..n]);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "{secret}").unwrap();
        so.read_to_end(&mut seen).unwrap();
    }
    let status = child.wait().unwrap();
    let text = String::from_utf8_lossy(&seen).into_owned();
    let out_ok = status.success();
    assert!(out_ok, "{text}");
    assert!(!text.contains(secret), "the passphrase was echoed: {text}");
    run_ok(veil_in(dir).arg("verify").arg(&img));
}
