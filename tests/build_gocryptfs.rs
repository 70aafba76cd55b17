//! Making Apptainer's unprivileged encrypted layout (fstype 6) with `veil build
//! --encryption-format gocryptfs`, converting between it and LUKS2, and re-keying it
//! with `veil keyslot change`, all as an unprivileged user. Every image veil writes
//! is checked by the real gocryptfs (`../shared/interop/check-gocryptfs-sif`) or the
//! real cryptsetup (`check-encrypted-sif`), against the same build as a sandbox.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

struct Env {
    user: Unprivileged,
    work: PathBuf,
    interop: PathBuf,
}

fn setup() -> Option<Env> {
    for tool in ["gocryptfs", "siftool", "unsquashfs", "openssl", "python3"] {
        if which(tool).is_none() {
            eprintln!("SKIP: {tool} is not installed (packaging/install-deps.sh installs it)");
            return None;
        }
    }
    let interop = shared_dir()
        .map(|d| d.join("interop"))
        .filter(|p| p.join("check-gocryptfs-sif").is_file())
        .or_else(|| {
            eprintln!("SKIP: ../shared/interop/check-gocryptfs-sif not found");
            None
        })?;
    let user = Unprivileged::new()?;
    let work = user.dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let rootfs = busybox_rootfs(&work)?;
    std::fs::write(rootfs.join("data/marker.txt"), "gocryptfs built by veil\n").unwrap();
    // 3 MiB that do not compress, so the image spans many gocryptfs blocks.
    std::fs::write(rootfs.join("data/noise.bin"), noise(3 << 20, 7)).unwrap();
    openssl_rsa_pair(&work, "rsa");
    openssl_rsa_pair(&work, "other");
    std::fs::write(work.join("pass.txt"), "first pass phrase\n").unwrap();
    std::fs::write(work.join("pass2.txt"), "second pass phrase\n").unwrap();
    std::fs::write(work.join("two-lines.txt"), "two\nlines\n").unwrap();
    user.own(&work);
    Some(Env {
        user,
        work,
        interop,
    })
}

impl Env {
    fn veil(&self, args: &[&str]) -> Output {
        self.user
            .veil()
            .current_dir(&self.work)
            // Equal labels in separate builds (the sandbox compared against).
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .args(args)
            .output()
            .unwrap()
    }

    fn veil_ok(&self, args: &[&str]) -> String {
        let o = self.veil(args);
        assert!(
            o.status.success(),
            "veil {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Runs an interop check (as root: it mounts with FUSE) and returns whether it
    /// passed, with its output.
    fn check(&self, script: &str, sif: &str, key: &[&str], compare: bool) -> (bool, String) {
        let mut c = Command::new(self.interop.join(script));
        c.current_dir(&self.work).arg(sif).args(key);
        if compare {
            c.arg("--compare-dir").arg(self.work.join("expected"));
        }
        let o = c.output().unwrap();
        (
            o.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        )
    }

    fn check_ok(&self, script: &str, sif: &str, key: &[&str]) {
        let (ok, out) = self.check(script, sif, key, true);
        assert!(ok, "{script} {sif} {key:?}: {out}");
    }

    /// `veil keyslot change IMAGE CURRENT-KEY NEW-KEY` (each key a flag and its value).
    fn change(&self, image: &str, current: [&str; 2], new: [&str; 2]) -> Output {
        let mut args = vec!["keyslot", "change", image];
        args.extend(current);
        args.extend(new);
        self.veil(&args)
    }

    fn change_ok(&self, image: &str, current: [&str; 2], new: [&str; 2]) {
        let o = self.change(image, current, new);
        assert!(
            o.status.success(),
            "keyslot change {image} {current:?} {new:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    fn path(&self, name: &str) -> PathBuf {
        self.work.join(name)
    }
}

fn one_line_error(o: &Output, want: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "should fail: {err}");
    assert_eq!(err.trim().lines().count(), 1, "one line expected: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains(want), "expected {want:?}: {err}");
}

/// The bytes of the outer squashfs's `squashfs-*` file (the encrypted image) and of
/// its `gocryptfs.conf`, read with the real unsquashfs.
fn outer_files(sif: &Path) -> (Vec<u8>, Vec<u8>) {
    let list = siftool_list(sif);
    let start: u64 = list
        .lines()
        .find(|l| l.contains("*System"))
        .and_then(|l| l.split('|').nth(3))
        .and_then(|r| r.trim().split('-').next())
        .and_then(|s| s.parse().ok())
        .expect("a primary partition");
    let ls = stdout(&run_ok(
        Command::new("unsquashfs")
            .args(["-o", &start.to_string(), "-lc"])
            .arg(sif),
    ));
    let inner = ls
        .lines()
        .filter_map(|l| l.strip_prefix("squashfs-root/"))
        .find(|n| n.starts_with("squashfs-"))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no squashfs-* in {ls}"));
    let cat = |name: &str| {
        run_ok(
            Command::new("unsquashfs")
                .args(["-o", &start.to_string(), "-cat"])
                .arg(sif)
                .arg(name),
        )
        .stdout
    };
    (cat(&inner), cat("gocryptfs.conf"))
}

#[test]
fn built_gocryptfs_images_open_with_the_real_gocryptfs_and_run() {
    let env = require!(setup(), "gocryptfs, tools or user namespaces missing");
    env.veil_ok(&["build", "-q", "--sandbox", "expected", "rootfs"]);
    env.veil_ok(&[
        "build",
        "-q",
        "--encryption-format",
        "gocryptfs",
        "--passphrase-file",
        "pass.txt",
        "pass.sif",
        "rootfs",
    ]);
    env.veil_ok(&[
        "build",
        "-q",
        "--encryption-format",
        "gocryptfs",
        "--scryptn",
        "12",
        "--pem-path",
        "rsa_pub.pem",
        "pem.sif",
        "rootfs",
    ]);
    let list = siftool_list(&env.path("pem.sif"));
    assert!(list.contains("FS (Unknown/*System/"), "fstype 6: {list}");
    assert!(
        list.contains("Cryptographic Message (PEM/RSA-OAEP)"),
        "{list}"
    );
    env.check_ok(
        "check-gocryptfs-sif",
        "pass.sif",
        &["--passphrase", "first pass phrase"],
    );
    env.check_ok("check-gocryptfs-sif", "pem.sif", &["--pem-path", "rsa.pem"]);
    // The outer squashfs as Apptainer writes it: data stored, no fragments.
    let sb = stdout(&run_ok(
        Command::new("unsquashfs")
            .args(["-s", "-o", "32768"])
            .arg(env.path("pem.sif")),
    ));
    assert!(
        sb.contains("Data is uncompressed") && sb.contains("Fragments are not stored"),
        "{sb}"
    );
    let (_, conf) = outer_files(&env.path("pem.sif"));
    let conf = String::from_utf8(conf).unwrap();
    assert!(conf.contains("\"N\": 4096"), "--scryptn 12: {conf}");
    assert!(
        conf.contains("\"HKDF\"")
            && conf.contains("\"GCMIV128\"")
            && conf.contains("\"PlaintextNames\""),
        "{conf}"
    );
    let (ok, out) = env.check(
        "check-gocryptfs-sif",
        "pass.sif",
        &["--passphrase", "second pass phrase"],
        false,
    );
    assert!(!ok, "a wrong passphrase passed the check: {out}");

    // veil runs what it made.
    let out = env.veil_ok(&[
        "exec",
        "--pem-path",
        "rsa.pem",
        "pem.sif",
        "cat",
        "/data/marker.txt",
    ]);
    assert_eq!(out, "gocryptfs built by veil\n");
    let out = env.veil_ok(&[
        "exec",
        "--passphrase-file",
        "pass.txt",
        "pass.sif",
        "sh",
        "-c",
        "wc -c < /data/noise.bin",
    ]);
    assert_eq!(out.trim(), (3 << 20).to_string());
    let o = env.veil(&["exec", "--passphrase-file", "pass2.txt", "pass.sif", "true"]);
    one_line_error(&o, "does not decrypt the image's gocryptfs master key");
}

#[test]
fn gocryptfs_builds_refuse_what_they_cannot_write_in_one_line() {
    let env = require!(setup(), "gocryptfs, tools or user namespaces missing");
    for (args, want) in [
        (
            vec!["--passphrase-file", "two-lines.txt"],
            "holds a newline",
        ),
        (
            vec!["--passphrase-file", "pass.txt", "--scryptn", "9"],
            "--scryptn 9: from 10 to 20",
        ),
        (
            vec!["--passphrase-file", "pass.txt", "--scryptn", "21"],
            "--scryptn 21: from 10 to 20",
        ),
        (vec![], "the image is not encrypted"),
    ] {
        let mut a = vec!["build", "-q", "--encryption-format", "gocryptfs"];
        a.extend(args);
        a.extend(["bad.sif", "rootfs"]);
        one_line_error(&env.veil(&a), want);
        assert!(!env.path("bad.sif").exists());
    }
    one_line_error(
        &env.veil(&[
            "build",
            "-q",
            "--scryptn",
            "12",
            "--passphrase-file",
            "pass.txt",
            "bad.sif",
            "rootfs",
        ]),
        "--scryptn goes with --encryption-format gocryptfs",
    );
    let left = veil_temporaries(&env.work);
    assert!(left.is_empty(), "temporaries left: {left:?}");
}

#[test]
fn images_convert_between_gocryptfs_and_luks2() {
    let env = require!(setup(), "gocryptfs, tools or user namespaces missing");
    env.veil_ok(&["build", "-q", "--sandbox", "expected", "rootfs"]);
    env.veil_ok(&[
        "build",
        "-q",
        "--encryption-format",
        "gocryptfs",
        "--passphrase-file",
        "pass.txt",
        "goc.sif",
        "rootfs",
    ]);
    // gocryptfs → LUKS2 for an RSA key, checked by cryptsetup.
    env.veil_ok(&[
        "build",
        "-q",
        "--source-passphrase-file",
        "pass.txt",
        "--pem-path",
        "rsa_pub.pem",
        "luks.sif",
        "goc.sif",
    ]);
    env.check_ok(
        "check-encrypted-sif",
        "luks.sif",
        &["--pem-path", "rsa.pem"],
    );
    // LUKS2 → gocryptfs with a passphrase, checked by gocryptfs.
    env.veil_ok(&[
        "build",
        "-q",
        "--source-pem-path",
        "rsa.pem",
        "--encryption-format",
        "gocryptfs",
        "--passphrase-file",
        "pass2.txt",
        "back.sif",
        "luks.sif",
    ]);
    env.check_ok(
        "check-gocryptfs-sif",
        "back.sif",
        &["--passphrase", "second pass phrase"],
    );
    // gocryptfs → plain, which unsquashfs reads.
    env.veil_ok(&[
        "build",
        "-q",
        "--source-passphrase-file",
        "pass2.txt",
        "plain.sif",
        "back.sif",
    ]);
    let out = env.veil_ok(&["exec", "plain.sif", "cat", "/data/marker.txt"]);
    assert_eq!(out, "gocryptfs built by veil\n");
    // A wrong or missing source key: one line, no output.
    one_line_error(
        &env.veil(&[
            "build",
            "-q",
            "--source-passphrase-file",
            "pass.txt",
            "x.sif",
            "back.sif",
        ]),
        "does not decrypt the image's gocryptfs master key",
    );
    one_line_error(
        &env.veil(&["build", "-q", "x.sif", "back.sif"]),
        "the source image is encrypted",
    );
    assert!(!env.path("x.sif").exists());
}

#[test]
fn keyslot_change_rewraps_a_gocryptfs_key_and_copies_the_content() {
    let env = require!(setup(), "gocryptfs, tools or user namespaces missing");
    env.veil_ok(&["build", "-q", "--sandbox", "expected", "rootfs"]);
    env.veil_ok(&[
        "build",
        "-q",
        "--encryption-format",
        "gocryptfs",
        "--scryptn",
        "12",
        "--passphrase-file",
        "pass.txt",
        "k.sif",
        "rootfs",
    ]);
    let (content, conf) = outer_files(&env.path("k.sif"));
    // Passphrase → passphrase.
    env.change_ok(
        "k.sif",
        ["--passphrase-file", "pass.txt"],
        ["--new-passphrase-file", "pass2.txt"],
    );
    let (content2, conf2) = outer_files(&env.path("k.sif"));
    assert!(content2 == content, "the encrypted content changed");
    assert_ne!(conf2, conf);
    assert!(String::from_utf8_lossy(&conf2).contains("\"N\": 4096"));
    env.check_ok(
        "check-gocryptfs-sif",
        "k.sif",
        &["--passphrase", "second pass phrase"],
    );
    let (ok, out) = env.check(
        "check-gocryptfs-sif",
        "k.sif",
        &["--passphrase", "first pass phrase"],
        false,
    );
    assert!(
        !ok && out.contains("Password incorrect"),
        "the old passphrase still opens the image: {out}"
    );
    // A wrong current key changes nothing.
    let before = std::fs::read(env.path("k.sif")).unwrap();
    one_line_error(
        &env.change(
            "k.sif",
            ["--passphrase-file", "pass.txt"],
            ["--new-passphrase-file", "pass.txt"],
        ),
        "does not decrypt the gocryptfs master key",
    );
    assert!(std::fs::read(env.path("k.sif")).unwrap() == before);
    // Passphrase → RSA recipient → another recipient → passphrase.
    env.change_ok(
        "k.sif",
        ["--passphrase-file", "pass2.txt"],
        ["--new-pem-path", "rsa_pub.pem"],
    );
    env.check_ok("check-gocryptfs-sif", "k.sif", &["--pem-path", "rsa.pem"]);
    env.change_ok(
        "k.sif",
        ["--pem-path", "rsa.pem"],
        ["--new-pem-path", "other_pub.pem"],
    );
    env.check_ok("check-gocryptfs-sif", "k.sif", &["--pem-path", "other.pem"]);
    one_line_error(
        &env.change(
            "k.sif",
            ["--passphrase-file", "pass.txt"],
            ["--new-passphrase-file", "pass2.txt"],
        ),
        "the image was encrypted for an RSA key",
    );
    let list = siftool_list(&env.path("k.sif"));
    assert_eq!(
        list.matches("Cryptographic Message").count(),
        1,
        "one message: {list}"
    );
    env.change_ok(
        "k.sif",
        ["--pem-path", "other.pem"],
        ["--new-passphrase-file", "pass.txt"],
    );
    let list = siftool_list(&env.path("k.sif"));
    assert!(!list.contains("Cryptographic Message"), "{list}");
    env.check_ok(
        "check-gocryptfs-sif",
        "k.sif",
        &["--passphrase", "first pass phrase"],
    );
    let (content3, _) = outer_files(&env.path("k.sif"));
    assert!(content3 == content, "the encrypted content changed");
    let out = env.veil_ok(&[
        "exec",
        "--passphrase-file",
        "pass.txt",
        "k.sif",
        "cat",
        "/data/marker.txt",
    ]);
    assert_eq!(out, "gocryptfs built by veil\n");
    // add and remove have no meaning for a single password.
    one_line_error(
        &env.veil(&[
            "keyslot",
            "add",
            "k.sif",
            "--passphrase-file",
            "pass.txt",
            "--new-passphrase-file",
            "pass2.txt",
        ]),
        "replace it with `veil keyslot change`",
    );
    // Through a symbolic link: the image it names is re-keyed, the link stays.
    std::os::unix::fs::symlink("k.sif", env.path("link.sif")).unwrap();
    env.user.own(&env.path("link.sif"));
    env.change_ok(
        "link.sif",
        ["--passphrase-file", "pass.txt"],
        ["--new-passphrase-file", "pass2.txt"],
    );
    assert!(
        std::fs::symlink_metadata(env.path("link.sif"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    env.check_ok(
        "check-gocryptfs-sif",
        "k.sif",
        &["--passphrase", "second pass phrase"],
    );
    // Re-keyed by another user (root, where the tests run as root): the image keeps
    // its owner.
    use std::os::unix::fs::MetadataExt;
    if nix::unistd::geteuid().is_root() && env.user.uid != 0 {
        let o = veil()
            .current_dir(&env.work)
            .args([
                "keyslot",
                "change",
                "k.sif",
                "--passphrase-file",
                "pass2.txt",
                "--new-passphrase-file",
                "pass.txt",
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let m = std::fs::metadata(env.path("k.sif")).unwrap();
        assert_eq!((m.uid(), m.gid()), (env.user.uid, env.user.gid));
    }
    let left = veil_temporaries(&env.work);
    assert!(left.is_empty(), "temporaries left: {left:?}");
}

#[test]
fn keyslot_change_replaces_a_luks2_keyslot() {
    let env = require!(setup(), "gocryptfs, tools or user namespaces missing");
    env.veil_ok(&["build", "-q", "--sandbox", "expected", "rootfs"]);
    let fast = ["--kdf-time", "50", "--kdf-memory", "16"];
    let mut a = vec![
        "build",
        "-q",
        "--pem-path",
        "rsa_pub.pem",
        "l.sif",
        "rootfs",
    ];
    a.extend(fast);
    env.veil_ok(&a);
    let mut a = vec![
        "keyslot",
        "change",
        "l.sif",
        "--pem-path",
        "rsa.pem",
        "--new-passphrase-file",
        "pass.txt",
    ];
    a.extend(fast);
    env.veil_ok(&a);
    env.check_ok(
        "check-encrypted-sif",
        "l.sif",
        &["--passphrase", "first pass phrase"],
    );
    let list = siftool_list(&env.path("l.sif"));
    assert!(!list.contains("Cryptographic Message"), "{list}");
    // Passphrase → recipient → another recipient: one message, the new key opens.
    let mut a = vec![
        "keyslot",
        "change",
        "l.sif",
        "--passphrase-file",
        "pass.txt",
        "--new-pem-path",
        "rsa_pub.pem",
    ];
    a.extend(fast);
    env.veil_ok(&a);
    env.change_ok(
        "l.sif",
        ["--pem-path", "rsa.pem"],
        ["--new-pem-path", "other_pub.pem"],
    );
    let list = siftool_list(&env.path("l.sif"));
    assert_eq!(list.matches("Cryptographic Message").count(), 1, "{list}");
    env.check_ok("check-encrypted-sif", "l.sif", &["--pem-path", "other.pem"]);
    let out = env.veil_ok(&[
        "exec",
        "--pem-path",
        "other.pem",
        "l.sif",
        "cat",
        "/data/marker.txt",
    ]);
    assert_eq!(out, "gocryptfs built by veil\n");
    // One keyslot left: the passphrase's and the first recipient's are gone.
    let o = env.veil(&["inspect", "l.sif"]);
    let text = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert_eq!(text.matches("Keyslot ").count(), 1, "{text}");
    // A passphrase keyslot beside that recipient: changing the passphrase to a new
    // recipient would orphan the existing one, so it is refused.
    let mut a = vec![
        "keyslot",
        "add",
        "l.sif",
        "--pem-path",
        "other.pem",
        "--new-passphrase-file",
        "pass.txt",
    ];
    a.extend(fast);
    env.veil_ok(&a);
    one_line_error(
        &env.change(
            "l.sif",
            ["--passphrase-file", "pass.txt"],
            ["--new-pem-path", "rsa_pub.pem"],
        ),
        "whose keyslot the current key does not open",
    );
}
