//! Rootless runs of encrypted SIF images made the way Apptainer and SingularityCE make
//! them (../shared/interop/make-encrypted-sif drives the real cryptsetup and siftool):
//! passphrase and RSA modes, 512- and 4096-byte sectors, argon2id, argon2i and pbkdf2
//! keyslots; every key source and their precedence; the errors; and that nothing
//! decrypted reaches the disk or the container's environment.
//!
//! Everything runs as an unprivileged uid (65534 when the tests run as root).

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use common::*;

const PASSPHRASE: &str = "correct horse battery staple";

struct Fixture {
    user: Unprivileged,
    /// A string found only in the images (and nowhere on disk in the clear).
    marker: String,
    /// Test keys (world-readable test material, in the user's directory).
    keys: PathBuf,
    /// (mode, sector size, pbkdf) -> image.
    images: Vec<((&'static str, u32, &'static str), PathBuf)>,
    /// A plain (unencrypted) SIF of the same tree.
    plain: PathBuf,
    /// Encrypted for a 1024-bit key: Apptainer's two-block RSA-OAEP message.
    small_key_image: PathBuf,
    /// An argon2id keyslot with 4 lanes: the KDF runs on 4 threads, which must all be
    /// gone before the launcher can enter a user namespace.
    four_lanes_image: PathBuf,
}

static FIXTURE: OnceLock<Option<Fixture>> = OnceLock::new();

fn fixture() -> Option<&'static Fixture> {
    FIXTURE
        .get_or_init(|| {
            // A static is never dropped, and neither would its temporary directory
            // (600 MB of images) be: it goes when the test process exits.
            extern "C" fn remove_fixture() {
                if let Some(Some(f)) = FIXTURE.get() {
                    let _ = std::fs::remove_dir_all(f.user.dir.path());
                }
            }
            // SAFETY: atexit with a function that only removes files.
            unsafe { libc::atexit(remove_fixture) };
            build_fixture()
        })
        .as_ref()
}

fn interop(script: &str) -> Option<PathBuf> {
    let p = shared_dir()?.join("interop").join(script);
    p.is_file().then_some(p)
}

fn build_fixture() -> Option<Fixture> {
    for tool in ["cryptsetup", "siftool", "mksquashfs", "openssl", "python3"] {
        if which(tool).is_none() {
            eprintln!("SKIP: {tool} is not installed (packaging/install-deps.sh installs it)");
            return None;
        }
    }
    let make = interop("make-encrypted-sif").or_else(|| {
        eprintln!("SKIP: ../shared/interop/make-encrypted-sif not found");
        None
    })?;
    let user = Unprivileged::new()?;
    // The source tree lives in a directory that is removed before any container runs,
    // so a later search for the marker finds only what a run left behind.
    let src = tempfile::tempdir().unwrap();
    let rootfs = busybox_rootfs(src.path())?;
    let marker = format!(
        "VEIL-SECRET-MARKER-{:016x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            ^ std::process::id() as u64
    );
    // Stored twice so a split read would still be caught: as a file and inside a
    // bigger file that spans several encryption sectors.
    std::fs::write(rootfs.join("data/marker.txt"), format!("{marker}\n")).unwrap();
    let mut big = vec![b'x'; 300_000];
    big.extend_from_slice(marker.as_bytes());
    std::fs::write(rootfs.join("data/big.bin"), &big).unwrap();

    let keys = user.dir.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    let sh = |cmd: &str| {
        let st = Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .current_dir(&keys)
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "{cmd}");
    };
    sh("openssl genrsa -traditional -out rsa.pem 2048");
    sh("openssl rsa -in rsa.pem -RSAPublicKey_out -out rsa_pub.pem");
    sh("openssl pkey -in rsa.pem -out pkcs8.pem");
    sh("openssl pkcs8 -topk8 -in rsa.pem -v2 aes-256-cbc -passout pass:keypw -out pkcs8_enc.pem");
    // PKCS#12 files of the same key, as `openssl pkcs12 -export` writes them: OpenSSL
    // 3's default (PBES2 with AES-256, SHA-256 MAC) with a certificate, the legacy
    // scheme (3DES key, RC2-40 certificates, SHA-1 MAC), an RC2-40 key, no
    // certificate; and one of an EC key.
    sh("openssl req -x509 -key rsa.pem -subj /CN=veil-test -days 2 -out cert.pem");
    sh("openssl pkcs12 -export -inkey rsa.pem -in cert.pem -passout pass:p12pw -out modern.p12");
    sh(
        "openssl pkcs12 -export -legacy -inkey rsa.pem -in cert.pem -passout pass:p12pw -out legacy.p12",
    );
    sh(
        "openssl pkcs12 -export -legacy -keypbe PBE-SHA1-RC2-40 -nocerts -inkey rsa.pem -passout pass:p12pw -out rc2.p12",
    );
    sh("openssl pkcs12 -export -nocerts -inkey rsa.pem -passout pass:p12pw -out nocert.p12");
    sh(
        "openssl pkcs12 -export -nocerts -inkey rsa.pem -keypbe NONE -certpbe NONE -nomac -passout pass: -out plain.p12",
    );
    sh("openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ec.pem");
    sh("openssl pkcs12 -export -nocerts -inkey ec.pem -passout pass:p12pw -out ec.p12");
    std::fs::write(keys.join("p12pw.txt"), "p12pw\n").unwrap();
    sh("openssl genrsa -traditional -out other.pem 2048");
    sh("openssl genrsa -traditional -out small.pem 1024");
    sh("openssl rsa -in small.pem -RSAPublicKey_out -out small_pub.pem");
    sh("chmod 0644 *");
    std::fs::write(keys.join("pass.txt"), format!("{PASSPHRASE}\n")).unwrap();

    let out = user.dir.path().join("images");
    std::fs::create_dir(&out).unwrap();
    let mk = |name: &str, extra: &[&str]| -> PathBuf {
        let dst = out.join(name);
        let o = Command::new(&make)
            .arg("--rootfs")
            .arg(&rootfs)
            .arg("-o")
            .arg(&dst)
            .args(["--fast", "-q"])
            .args(extra)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "make-encrypted-sif {extra:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        dst
    };
    let mut images = Vec::new();
    let pub_pem = keys.join("rsa_pub.pem");
    for mode in ["pass", "pem"] {
        for ss in [512u32, 4096] {
            for kdf in ["argon2id", "argon2i", "pbkdf2"] {
                let name = format!("{mode}-{ss}-{kdf}.sif");
                let ss_s = ss.to_string();
                let mut args = vec!["--sector-size", &ss_s, "--pbkdf", kdf];
                let pk = pub_pem.to_str().unwrap();
                if mode == "pass" {
                    args.extend(["--passphrase", PASSPHRASE]);
                } else {
                    args.extend(["--pem-path", pk]);
                }
                images.push(((mode, ss, kdf), mk(&name, &args)));
            }
        }
    }
    let small_key_image = mk(
        "pem-small-key.sif",
        &["--pem-path", keys.join("small_pub.pem").to_str().unwrap()],
    );
    let four_lanes_image = mk(
        "pass-4-lanes.sif",
        &["--passphrase", PASSPHRASE, "--pbkdf-parallel", "4"],
    );
    let (_, plain) = squash_and_sif(&rootfs, &out)?;
    std::fs::remove_file(out.join("rootfs.sqfs")).ok();
    for entry in std::fs::read_dir(&out).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "sqfs") {
            std::fs::remove_file(p).unwrap();
        }
    }
    drop(src);
    Some(Fixture {
        user,
        marker,
        keys,
        images,
        plain,
        small_key_image,
        four_lanes_image,
    })
}

impl Fixture {
    fn image(&self, mode: &str, ss: u32, kdf: &str) -> &Path {
        &self
            .images
            .iter()
            .find(|((m, s, k), _)| *m == mode && *s == ss && *k == kdf)
            .unwrap()
            .1
    }

    fn key(&self, name: &str) -> PathBuf {
        self.keys.join(name)
    }

    fn veil(&self) -> Command {
        self.user.veil()
    }

    /// `veil exec FLAG KEY IMAGE` as the test user; the command follows.
    fn exec_key(
        &self,
        flag: &str,
        key: impl AsRef<std::ffi::OsStr>,
        image: impl AsRef<std::ffi::OsStr>,
    ) -> Command {
        let mut c = self.user.veil();
        c.arg("exec").arg(flag).arg(key).arg(image);
        c
    }
}

fn text(o: &Output) -> (i32, String, String) {
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn ok_marker(f: &Fixture, c: &mut Command, what: &str) {
    let (code, out, err) = text(&c.output().unwrap());
    assert_eq!(code, 0, "{what}: {err}");
    assert_eq!(out.trim(), f.marker, "{what}: {err}");
}

fn fails(c: &mut Command, what: &str) -> String {
    let (code, out, err) = text(&c.output().unwrap());
    assert_ne!(code, 0, "{what} should fail: {out}{err}");
    let err = err.trim().to_string();
    assert_eq!(
        err.lines().count(),
        1,
        "{what}: one-line error expected: {err}"
    );
    assert!(!err.contains("panicked"), "{what}: {err}");
    err
}

#[test]
fn every_layout_runs_and_execs() {
    let f = require!(fixture(), "tools or user namespaces missing");
    for ((mode, ss, kdf), image) in &f.images {
        let what = format!("{mode} {ss} {kdf}");
        let key_args: Vec<String> = if *mode == "pass" {
            vec![
                "--passphrase-file".into(),
                f.key("pass.txt").display().to_string(),
            ]
        } else {
            vec!["--pem-path".into(), f.key("rsa.pem").display().to_string()]
        };
        ok_marker(
            f,
            f.veil()
                .arg("exec")
                .args(&key_args)
                .arg(image)
                .args(["cat", "/data/marker.txt"]),
            &what,
        );
        // The big file crosses many sectors: check every byte through a hash.
        let o = f
            .veil()
            .arg("exec")
            .args(&key_args)
            .arg(image)
            .args(["sh", "-c", "sha256sum /data/big.bin; exit 7"])
            .output()
            .unwrap();
        let (code, out, err) = text(&o);
        assert_eq!(code, 7, "{what}: exit code passes through: {err}");
        let mut big = vec![b'x'; 300_000];
        big.extend_from_slice(f.marker.as_bytes());
        let want = {
            use sha2::Digest;
            sha2::Sha256::digest(&big)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        };
        assert!(out.starts_with(&want), "{what}: {out}");
        let (code, out, err) = text(
            &f.veil()
                .arg("run")
                .args(&key_args)
                .arg(image)
                .args(["a", "b"])
                .output()
                .unwrap(),
        );
        assert_eq!((code, out.trim()), (0, "runscript: a b"), "{what}: {err}");
    }
}

#[test]
fn passphrase_sources() {
    let f = require!(fixture(), "tools or user namespaces missing");
    let img = f.image("pass", 512, "argon2id");
    let cat = ["cat", "/data/marker.txt"];
    for var in [
        "VEIL_ENCRYPTION_PASSPHRASE",
        "APPTAINER_ENCRYPTION_PASSPHRASE",
        "SINGULARITY_ENCRYPTION_PASSPHRASE",
    ] {
        ok_marker(
            f,
            f.veil().arg("exec").arg(img).args(cat).env(var, PASSPHRASE),
            var,
        );
    }
    ok_marker(
        f,
        f.exec_key("--passphrase-file", f.key("pass.txt"), img)
            .args(cat),
        "--passphrase-file",
    );
    ok_marker(
        f,
        f.exec_key("--passphrase-file", f.key("pass.txt"), &f.four_lanes_image)
            .args(cat),
        "argon2id keyslot with 4 lanes",
    );
    // --passphrase-fd: here the descriptor is stdin, a pipe.
    let mut child = f
        .veil()
        .args(["exec", "--passphrase-fd", "0"])
        .arg(img)
        .args(cat)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{PASSPHRASE}\n").as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(text(&o).1.trim(), f.marker, "{}", text(&o).2);

    // --passphrase prompts on the terminal, without echo: the answer is typed only
    // once the prompt is there, so a terminal still echoing would show it.
    require!(which("script"), "script (util-linux) is not installed");
    let o = on_a_tty_answering(
        f,
        &format!(
            "{} exec --passphrase {} cat /data/marker.txt",
            f.user.bin.display(),
            img.display()
        ),
        "Enter encryption passphrase:",
        &format!("{PASSPHRASE}\n"),
    );
    let (code, out, err) = text(&o);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&f.marker), "{out}");
    assert!(
        !out.contains(PASSPHRASE),
        "the passphrase was echoed: {out}"
    );
}

/// Like [`on_a_tty`], but types `answer` only after `prompt` has appeared on the
/// terminal (and a moment more, for the program to turn echo off as it reads).
fn on_a_tty_answering(f: &Fixture, cmd: &str, prompt: &str, answer: &str) -> Output {
    use std::io::Read;
    let mut child = tty_child(f, cmd);
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let reader = std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut chunk) {
            if n == 0 || tx.send(chunk[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !String::from_utf8_lossy(&seen).contains(prompt) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(c) => seen.extend_from_slice(&c),
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "no {prompt:?} on the terminal; it showed: {}",
                    String::from_utf8_lossy(&seen)
                );
            }
        }
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(answer.as_bytes()).unwrap();
    drop(stdin);
    let status = child.wait().unwrap();
    reader.join().unwrap();
    seen.extend(rx.try_iter().flatten());
    let mut stderr = Vec::new();
    if let Some(mut e) = child.stderr.take() {
        e.read_to_end(&mut stderr).unwrap();
    }
    Output {
        status,
        stdout: seen,
        stderr,
    }
}

/// `cmd` started as the test user under `script`, which gives it a pseudo-terminal;
/// the terminal's input, output and script's errors are pipes.
fn tty_child(f: &Fixture, cmd: &str) -> std::process::Child {
    Command::new("script")
        .args(["-qec", cmd, "/dev/null"])
        .uid(f.user.uid)
        .gid(f.user.gid)
        .current_dir(&f.user.home)
        .env_clear()
        .env("HOME", &f.user.home)
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Runs `cmd` as the test user under `script`, which gives it a pseudo-terminal fed
/// from `input`.
fn on_a_tty(f: &Fixture, cmd: &str, input: &str) -> Output {
    let mut child = tty_child(f, cmd);
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

use std::os::unix::process::CommandExt;

#[test]
fn private_key_sources_and_formats() {
    let f = require!(fixture(), "tools or user namespaces missing");
    let img = f.image("pem", 512, "argon2id");
    let cat = ["cat", "/data/marker.txt"];
    for key in ["rsa.pem", "pkcs8.pem"] {
        ok_marker(f, f.exec_key("--pem-path", f.key(key), img).args(cat), key);
    }
    for prefix in ["VEIL_", "APPTAINER_", "SINGULARITY_"] {
        ok_marker(
            f,
            f.veil()
                .arg("exec")
                .arg(img)
                .args(cat)
                .env(format!("{prefix}ENCRYPTION_PEM_PATH"), f.key("rsa.pem")),
            prefix,
        );
        let data = std::fs::read_to_string(f.key("rsa.pem")).unwrap();
        ok_marker(
            f,
            f.veil()
                .arg("exec")
                .arg(img)
                .args(cat)
                .env(format!("{prefix}ENCRYPTION_PEM_DATA"), data),
            prefix,
        );
    }
    ok_marker(
        f,
        f.veil()
            .args(["exec", "--pem-fd", "0"])
            .arg(img)
            .args(cat)
            .stdin(std::fs::File::open(f.key("rsa.pem")).unwrap()),
        "--pem-fd",
    );
    // Apptainer's two-block message, made for a 1024-bit key.
    ok_marker(
        f,
        f.exec_key("--pem-path", f.key("small.pem"), &f.small_key_image)
            .args(cat),
        "RSA-1024",
    );
    // An OpenSSH private key (ssh-keygen's default format).
    if which("ssh-keygen").is_some() {
        let dir = f.user.dir.path().join("ssh");
        std::fs::create_dir_all(&dir).unwrap();
        let k = dir.join("id_rsa");
        let st = Command::new("ssh-keygen")
            .args(["-q", "-t", "rsa", "-b", "2048", "-N", ""])
            .arg("-f")
            .arg(&k)
            .status()
            .unwrap();
        assert!(st.success());
        assert!(
            std::fs::read_to_string(&k)
                .unwrap()
                .starts_with("-----BEGIN OPENSSH PRIVATE KEY-----")
        );
        let pubpem = Command::new("ssh-keygen")
            .args(["-e", "-m", "pem", "-f"])
            .arg(k.with_extension("pub"))
            .output()
            .unwrap();
        std::fs::write(dir.join("pub.pem"), &pubpem.stdout).unwrap();
        let sif = dir.join("ssh.sif");
        let make = interop("make-encrypted-sif").unwrap();
        let src = tempfile::tempdir().unwrap();
        let rootfs = busybox_rootfs(src.path()).unwrap();
        std::fs::write(rootfs.join("data/marker.txt"), format!("{}\n", f.marker)).unwrap();
        let st = Command::new(make)
            .arg("--rootfs")
            .arg(&rootfs)
            .arg("--pem-path")
            .arg(dir.join("pub.pem"))
            .arg("-o")
            .arg(&sif)
            .args(["--fast", "-q"])
            .status()
            .unwrap();
        assert!(st.success());
        drop(src);
        std::os::unix::fs::chown(&k, Some(f.user.uid), Some(f.user.gid)).ok();
        ok_marker(
            f,
            f.exec_key("--pem-path", &k, &sif).args(cat),
            "OpenSSH key",
        );
        // The same key protected by a passphrase (bcrypt KDF, aes256-ctr: what
        // ssh-keygen writes), asked for on the terminal.
        if which("script").is_some() {
            let kp = dir.join("id_rsa_protected");
            std::fs::copy(&k, &kp).unwrap();
            let st = Command::new("ssh-keygen")
                .args(["-q", "-p", "-P", "", "-N", "sshpw", "-a", "4", "-f"])
                .arg(&kp)
                .status()
                .unwrap();
            assert!(st.success());
            std::os::unix::fs::chown(&kp, Some(f.user.uid), Some(f.user.gid)).ok();
            let o = on_a_tty_answering(
                f,
                &format!(
                    "{} exec --pem-path {} {} cat /data/marker.txt",
                    f.user.bin.display(),
                    kp.display(),
                    sif.display()
                ),
                "Enter the password of the private key",
                "sshpw\n",
            );
            let (code, out, err) = text(&o);
            assert_eq!(code, 0, "{out}{err}");
            assert!(out.contains(&f.marker), "{out}");
            assert!(
                !out.contains("sshpw"),
                "the key's password was echoed: {out}"
            );
        }
    } else {
        eprintln!("SKIP the OpenSSH key case: ssh-keygen is not installed");
    }
    // A password-protected PKCS#8 key asks for its password on the terminal.
    if which("script").is_some() {
        let o = on_a_tty(
            f,
            &format!(
                "{} exec --pem-path {} {} cat /data/marker.txt",
                f.user.bin.display(),
                f.key("pkcs8_enc.pem").display(),
                img.display()
            ),
            "keypw\n",
        );
        let (code, out, err) = text(&o);
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains(&f.marker), "{out}");
    }
    // ...and without a terminal says what to do.
    let err = fails(
        f.exec_key("--pem-path", f.key("pkcs8_enc.pem"), img)
            .arg("true")
            .stdin(Stdio::null()),
        "encrypted key, no tty",
    );
    assert!(err.contains("password"), "{err}");
}

#[test]
fn pkcs12_keys_made_by_openssl_decrypt_the_image() {
    let f = require!(fixture(), "tools or user namespaces missing");
    let img = f.image("pem", 512, "argon2id");
    let cat = ["cat", "/data/marker.txt"];
    for key in ["modern.p12", "legacy.p12", "rc2.p12", "nocert.p12"] {
        ok_marker(
            f,
            f.exec_key("--pem-path", f.key(key), img)
                .env("VEIL_PEM_PASSWORD", "p12pw")
                .args(cat),
            key,
        );
    }
    // A file with neither a MAC nor an encrypted key asks for no password.
    ok_marker(
        f,
        f.exec_key("--pem-path", f.key("plain.p12"), img)
            .stdin(Stdio::null())
            .args(cat),
        "plain.p12",
    );
    // The password variable with a key in a variable too (reading that one scrubs the
    // secret variables, the password's included: it must be kept first).
    let data = std::fs::read_to_string(f.key("pkcs8_enc.pem")).unwrap();
    ok_marker(
        f,
        f.veil()
            .arg("exec")
            .arg(img)
            .args(cat)
            .env("VEIL_ENCRYPTION_PEM_DATA", data)
            .env("VEIL_PEM_PASSWORD", "keypw")
            .stdin(Stdio::null()),
        "PEM_DATA with VEIL_PEM_PASSWORD",
    );
    // The password from a file, and the key from a descriptor.
    ok_marker(
        f,
        f.veil()
            .args(["exec", "--pem-fd", "0", "--pem-password-file"])
            .arg(f.key("p12pw.txt"))
            .arg(img)
            .args(cat)
            .stdin(std::fs::File::open(f.key("legacy.p12")).unwrap()),
        "--pem-fd with --pem-password-file",
    );
    // The password is not left in the container's environment.
    let o = f
        .exec_key("--pem-path", f.key("modern.p12"), img)
        .env("VEIL_PEM_PASSWORD", "p12pw")
        .args(["cat", "/proc/self/environ"])
        .output()
        .unwrap();
    assert!(o.status.success());
    assert!(!String::from_utf8_lossy(&o.stdout).contains("p12pw"));
    // Wrong password, an EC key, no password at all: one line each.
    let err = fails(
        f.exec_key("--pem-path", f.key("modern.p12"), img)
            .env("VEIL_PEM_PASSWORD", "wrong")
            .arg("true"),
        "wrong PKCS#12 password",
    );
    assert!(err.contains("wrong password"), "{err}");
    let err = fails(
        f.exec_key("--pem-path", f.key("ec.p12"), img)
            .env("VEIL_PEM_PASSWORD", "p12pw")
            .arg("true"),
        "EC key in PKCS#12",
    );
    assert!(err.contains("not an RSA key"), "{err}");
    let err = fails(
        f.exec_key("--pem-path", f.key("legacy.p12"), img)
            .arg("true")
            .stdin(Stdio::null()),
        "PKCS#12 without a password",
    );
    assert!(err.contains("--pem-password-file"), "{err}");
}

#[test]
fn precedence_follows_the_peers() {
    let f = require!(fixture(), "tools or user namespaces missing");
    let pem = f.image("pem", 512, "pbkdf2");
    let pass = f.image("pass", 512, "pbkdf2");
    let cat = ["cat", "/data/marker.txt"];
    let wrong = f.user.dir.path().join("wrong.txt");
    std::fs::write(&wrong, "not it\n").unwrap();
    // --pem-path beats every passphrase source.
    ok_marker(
        f,
        f.exec_key("--pem-path", f.key("rsa.pem"), "--passphrase-file")
            .arg(&wrong)
            .arg(pem)
            .args(cat)
            .env("VEIL_ENCRYPTION_PASSPHRASE", "not it"),
        "--pem-path first",
    );
    // A flag beats the environment.
    ok_marker(
        f,
        f.exec_key("--passphrase-file", f.key("pass.txt"), pass)
            .args(cat)
            .env("APPTAINER_ENCRYPTION_PEM_PATH", f.key("other.pem")),
        "flag over env",
    );
    // The descriptor flags too: --pem-fd beats a passphrase flag and the variables,
    // --passphrase-fd beats the variables.
    ok_marker(
        f,
        f.exec_key("--pem-fd", "0", "--passphrase-file")
            .arg(&wrong)
            .arg(pem)
            .args(cat)
            .stdin(std::fs::File::open(f.key("rsa.pem")).unwrap())
            .env("VEIL_ENCRYPTION_PEM_PATH", f.key("other.pem"))
            .env("VEIL_ENCRYPTION_PASSPHRASE", "not it"),
        "--pem-fd over --passphrase-file and env",
    );
    ok_marker(
        f,
        f.exec_key("--passphrase-fd", "0", pass)
            .args(cat)
            .stdin(std::fs::File::open(f.key("pass.txt")).unwrap())
            .env("VEIL_ENCRYPTION_PEM_PATH", f.key("other.pem"))
            .env("APPTAINER_ENCRYPTION_PASSPHRASE", "not it"),
        "--passphrase-fd over env",
    );
    // *_PEM_PATH beats *_PEM_DATA, which beats *_PASSPHRASE.
    ok_marker(
        f,
        f.veil()
            .arg("exec")
            .arg(pem)
            .args(cat)
            .env("SINGULARITY_ENCRYPTION_PEM_PATH", f.key("rsa.pem"))
            .env(
                "VEIL_ENCRYPTION_PEM_DATA",
                std::fs::read_to_string(f.key("other.pem")).unwrap(),
            ),
        "PEM_PATH over PEM_DATA",
    );
    let err = fails(
        f.veil()
            .arg("exec")
            .arg(pass)
            .arg("true")
            .env(
                "APPTAINER_ENCRYPTION_PEM_DATA",
                std::fs::read_to_string(f.key("rsa.pem")).unwrap(),
            )
            .env("APPTAINER_ENCRYPTION_PASSPHRASE", PASSPHRASE),
        "PEM_DATA over PASSPHRASE",
    );
    assert!(err.contains("passphrase"), "{err}");
    // Within one kind, VEIL_ comes before APPTAINER_ before SINGULARITY_.
    let err = fails(
        f.veil()
            .arg("exec")
            .arg(pass)
            .arg("true")
            .env("VEIL_ENCRYPTION_PASSPHRASE", "not it")
            .env("APPTAINER_ENCRYPTION_PASSPHRASE", PASSPHRASE),
        "VEIL_ first",
    );
    assert!(err.contains("wrong passphrase"), "{err}");
}

#[test]
fn key_errors_are_one_line_and_early() {
    let f = require!(fixture(), "tools or user namespaces missing");
    let pem = f.image("pem", 4096, "argon2i");
    let pass = f.image("pass", 4096, "argon2i");

    let err = fails(f.veil().arg("exec").arg(pem).arg("true"), "no key");
    assert!(
        err.contains("encrypted for an RSA key") && err.contains("--pem-path"),
        "{err}"
    );
    let err = fails(f.veil().arg("exec").arg(pass).arg("true"), "no key");
    assert!(
        err.contains("encrypted with a passphrase") && err.contains("VEIL_ENCRYPTION_PASSPHRASE"),
        "{err}"
    );
    let wrong = f.user.dir.path().join("wrong-pass.txt");
    std::fs::write(&wrong, "wrong\n").unwrap();
    let err = fails(
        f.exec_key("--passphrase-file", &wrong, pass).arg("true"),
        "wrong passphrase",
    );
    assert!(
        err.contains("wrong passphrase (--passphrase-file ") && err.contains("wrong-pass.txt"),
        "{err}"
    );
    // A passphrase for an image made for an RSA key: say what it needs.
    let err = fails(
        f.exec_key("--passphrase-file", &wrong, pem).arg("true"),
        "passphrase for an RSA image",
    );
    assert!(
        err.contains("encrypted for an RSA key") && err.contains("--pem-path"),
        "{err}"
    );
    let err = fails(
        f.exec_key("--pem-path", f.key("other.pem"), pem)
            .arg("true"),
        "wrong key",
    );
    assert!(err.contains("private key does not decrypt"), "{err}");
    let err = fails(
        f.exec_key("--pem-path", f.key("rsa_pub.pem"), pem)
            .arg("true"),
        "public key given",
    );
    assert!(err.contains("public key"), "{err}");
    let err = fails(
        f.exec_key("--pem-path", f.key("rsa.pem"), pass).arg("true"),
        "PEM for a passphrase image",
    );
    assert!(err.contains("use --passphrase"), "{err}");
    let err = fails(
        f.exec_key("--pem-path", f.key("missing.pem"), pem)
            .arg("true"),
        "missing key file",
    );
    assert!(err.contains("missing.pem"), "{err}");
    let garbage = f.user.dir.path().join("garbage.pem");
    std::fs::write(&garbage, "hello\n").unwrap();
    let err = fails(
        f.exec_key("--pem-path", &garbage, pem).arg("true"),
        "garbage key",
    );
    assert!(err.contains("no PEM data"), "{err}");
    let err = fails(
        f.veil()
            .args(["exec", "--passphrase"])
            .arg(pass)
            .arg("true")
            .stdin(Stdio::null()),
        "--passphrase without a terminal",
    );
    assert!(err.contains("--passphrase-file"), "{err}");

    // A key for an unencrypted image: a warning, or an error with --require-encrypted.
    let (code, out, err) = text(
        &f.exec_key("--passphrase-file", f.key("pass.txt"), &f.plain)
            .args(["cat", "/data/marker.txt"])
            .output()
            .unwrap(),
    );
    assert_eq!((code, out.trim()), (0, f.marker.as_str()), "{err}");
    assert!(
        err.contains("WARNING") && err.contains("not encrypted"),
        "{err}"
    );
    let err = fails(
        f.veil()
            .arg("exec")
            .arg("--require-encrypted")
            .arg(&f.plain)
            .arg("true"),
        "--require-encrypted",
    );
    assert!(err.contains("not encrypted"), "{err}");
    ok_marker(
        f,
        f.veil()
            .args(["exec", "--require-encrypted", "--passphrase-file"])
            .arg(f.key("pass.txt"))
            .arg(pass)
            .args(["cat", "/data/marker.txt"]),
        "--require-encrypted on an encrypted image",
    );
}

#[test]
fn damaged_and_unsupported_images() {
    let f = require!(fixture(), "tools or user namespaces missing");
    let dir = f.user.dir.path().join("damaged");
    std::fs::create_dir_all(&dir).unwrap();
    let src = f.image("pass", 512, "pbkdf2");
    let data = std::fs::read(src).unwrap();
    let sif = veil::sif::Sif::open_path(src).unwrap();
    let part = sif.primary_partition().unwrap().clone();
    let (off, size) = (part.offset as usize, part.size as usize);

    // Both LUKS2 header copies destroyed.
    let mut d = data.clone();
    d[off..off + 8].fill(0);
    d[off + 16384..off + 16384 + 8].fill(0);
    let p = dir.join("no-header.sif");
    std::fs::write(&p, &d).unwrap();
    let err = fails(
        f.exec_key("--passphrase-file", f.key("pass.txt"), &p)
            .arg("true"),
        "no header",
    );
    assert!(err.contains("LUKS"), "{err}");
    // The payload's squashfs superblock corrupted (the key is right).
    let mut d = data.clone();
    for b in &mut d[off + (16 << 20)..off + (16 << 20) + 512] {
        *b ^= 0x5a;
    }
    let p = dir.join("bad-payload.sif");
    std::fs::write(&p, &d).unwrap();
    let err = fails(
        f.exec_key("--passphrase-file", f.key("pass.txt"), &p)
            .arg("true"),
        "bad payload",
    );
    assert!(err.contains("not a usable squashfs"), "{err}");
    // Truncated inside the partition.
    let p = dir.join("truncated.sif");
    std::fs::write(&p, &data[..off + size / 2]).unwrap();
    fails(
        f.exec_key("--passphrase-file", f.key("pass.txt"), &p)
            .arg("true"),
        "truncated",
    );
    // Apptainer's gocryptfs format (fstype 6).
    let mut d = data.clone();
    let desc = sif.header().descriptors_offset as usize
        + sif.slots().iter().position(|s| s.id == part.id).unwrap() * veil::sif::DESCRIPTOR_LEN;
    d[desc + 201..desc + 205].copy_from_slice(&6i32.to_le_bytes());
    let p = dir.join("gocryptfs.sif");
    std::fs::write(&p, &d).unwrap();
    let err = fails(
        f.exec_key("--passphrase-file", f.key("pass.txt"), &p)
            .arg("true"),
        "gocryptfs",
    );
    assert!(err.contains("gocryptfs"), "{err}");
}

/// The image file truncated under a running container (veil reads the ciphertext
/// through a mapping of the file): the container's reads of what is gone fail with
/// an I/O error, and the launcher neither dies of SIGBUS nor hangs.
#[test]
fn an_image_truncated_while_running_fails_reads_not_the_launcher() {
    use std::io::{BufRead, BufReader};
    let f = require!(fixture(), "tools or user namespaces missing");
    let make = interop("make-encrypted-sif").unwrap();
    let dir = f.user.dir.path().join("truncated-live");
    std::fs::create_dir_all(&dir).unwrap();
    let src = tempfile::tempdir().unwrap();
    let rootfs = busybox_rootfs(src.path()).unwrap();
    // Incompressible and larger than what the FUSE server warms ahead of a reader,
    // so the container's read reaches the file after the truncation.
    let data = noise(12 << 20, 7);
    std::fs::write(rootfs.join("data/random.bin"), &data).unwrap();
    let image = dir.join("cut.sif");
    let o = Command::new(&make)
        .arg("--rootfs")
        .arg(&rootfs)
        .arg("-o")
        .arg(&image)
        .args([
            "--fast",
            "-q",
            "--pbkdf",
            "pbkdf2",
            "--passphrase",
            PASSPHRASE,
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let part = veil::sif::Sif::open_path(&image)
        .unwrap()
        .primary_partition()
        .unwrap()
        .offset as u64;

    let mut child = f
        .exec_key("--passphrase-file", f.key("pass.txt"), &image)
        .args([
            "sh",
            "-c",
            "echo ready; read x; cat /data/random.bin > /dev/null; echo cat=$?",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    // Keep the LUKS2 header and the first 64 KiB of the data segment.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&image)
        .unwrap()
        .set_len(part + (16 << 20) + (64 << 10))
        .unwrap();
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let status = wait_at_most(&mut child, std::time::Duration::from_secs(30))
        .expect("the container hung after the truncation");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), None, "the launcher was killed: {err}");
    assert_eq!(status.code(), Some(0), "{rest}{err}");
    assert!(
        rest.trim().starts_with("cat=") && rest.trim() != "cat=0",
        "{rest}{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

/// Waits for `child` up to `limit`; kills it and returns `None` past that.
fn wait_at_most(
    child: &mut std::process::Child,
    limit: std::time::Duration,
) -> Option<std::process::ExitStatus> {
    let t = std::time::Instant::now();
    while t.elapsed() < limit {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().ok();
    child.wait().ok();
    None
}

/// Every regular file under `dir` changed since `since` that contains `needle`
/// (older files cannot hold what a run during this test wrote).
fn files_containing(
    dir: &Path,
    needle: &[u8],
    since: std::time::SystemTime,
    hits: &mut Vec<PathBuf>,
) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        let Ok(meta) = e.metadata() else { continue };
        if meta.is_dir() {
            files_containing(&p, needle, since, hits);
        } else if meta.is_file()
            && meta.modified().is_ok_and(|m| m >= since)
            && contains(&p, needle)
        {
            hits.push(p);
        }
    }
}

/// Streams the file, so a big one is not read into memory at once.
fn contains(p: &Path, needle: &[u8]) -> bool {
    use std::io::Read;
    let Ok(mut f) = std::fs::File::open(p) else {
        return false;
    };
    let mut buf = vec![0u8; 1 << 20];
    let mut keep = 0;
    loop {
        let Ok(n) = f.read(&mut buf[keep..]) else {
            return false;
        };
        if n == 0 {
            return false;
        }
        let end = keep + n;
        if buf[..end].windows(needle.len()).any(|w| w == needle) {
            return true;
        }
        keep = (needle.len() - 1).min(end);
        buf.copy_within(end - keep..end, 0);
    }
}

#[test]
fn nothing_decrypted_reaches_the_disk_or_the_environment() {
    let f = require!(fixture(), "tools or user namespaces missing");
    let since = std::time::SystemTime::now() - std::time::Duration::from_secs(2);
    let img = f.image("pass", 4096, "argon2id");
    // Read everything in the image, write copies into the container's /tmp (a
    // tmpfs inside the session)...
    let o = f
        .veil()
        .arg("exec")
        .arg(img)
        .args([
            "sh",
            "-c",
            "cat /data/marker.txt /data/big.bin > /dev/null && cat /proc/self/environ | tr '\\0' '\\n'",
        ])
        .env("VEIL_ENCRYPTION_PASSPHRASE", PASSPHRASE)
        .output()
        .unwrap();
    let (code, out, err) = text(&o);
    assert_eq!(code, 0, "{err}");
    assert!(
        !out.contains(PASSPHRASE),
        "passphrase in the container environment"
    );
    assert!(
        !out.contains("ENCRYPTION"),
        "key variable in the container environment: {out}"
    );

    // ...and check the container process from outside while it runs, and that the
    // launcher cannot be read by other processes of the same user (non-dumpable).
    let mut child = f
        .veil()
        .arg("exec")
        .arg(img)
        .args(["sleep", "30"])
        .env("APPTAINER_ENCRYPTION_PASSPHRASE", PASSPHRASE)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let launcher = child.id();
    let mut sleeper = None;
    for _ in 0..200 {
        sleeper = std::fs::read_dir("/proc").unwrap().flatten().find_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            (cmd == b"sleep\x0030\x00").then_some(pid)
        });
        if sleeper.is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    let sleeper = sleeper.expect("the container process did not start");
    let environ = std::fs::read(format!("/proc/{sleeper}/environ")).unwrap();
    assert!(
        !environ
            .windows(PASSPHRASE.len())
            .any(|w| w == PASSPHRASE.as_bytes()),
        "passphrase in /proc/{sleeper}/environ"
    );
    let peek = Command::new("cat")
        .arg(format!("/proc/{launcher}/environ"))
        .uid(f.user.uid)
        .gid(f.user.gid)
        .output()
        .unwrap();
    assert!(
        !peek.status.success(),
        "the launcher's environment is readable by its own user: it should be non-dumpable"
    );
    child.kill().unwrap();
    child.wait().unwrap();

    let mut hits = Vec::new();
    for dir in [
        PathBuf::from("/tmp"),
        PathBuf::from("/var/tmp"),
        f.user.home.clone(),
        std::env::current_dir().unwrap(),
    ] {
        files_containing(&dir, f.marker.as_bytes(), since, &mut hits);
    }
    assert!(hits.is_empty(), "decrypted bytes on disk: {hits:?}");
}

#[test]
fn argon2_memory_above_the_limit_is_refused_up_front() {
    let f = require!(fixture(), "tools or user namespaces missing");
    require!(
        (nix::unistd::geteuid().as_raw() == 0).then_some(()),
        "needs root to create a memory cgroup"
    );
    // A cgroup with a 96 MiB limit, and an image whose keyslot needs 256 MiB.
    let v1 = Path::new("/sys/fs/cgroup/memory");
    let (cg, limit_file) = if v1.join("memory.limit_in_bytes").exists() {
        (
            v1.join(format!("veil-test-{}", std::process::id())),
            "memory.limit_in_bytes",
        )
    } else if std::fs::read_to_string("/sys/fs/cgroup/cgroup.subtree_control")
        .is_ok_and(|s| s.contains("memory"))
    {
        (
            PathBuf::from(format!("/sys/fs/cgroup/veil-test-{}", std::process::id())),
            "memory.max",
        )
    } else {
        eprintln!("SKIP: no writable memory cgroup controller");
        return;
    };
    if let Err(e) = std::fs::create_dir(&cg) {
        eprintln!("SKIP: cannot create a memory cgroup: {e}");
        return;
    }
    struct Rm(PathBuf);
    impl Drop for Rm {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir(&self.0);
        }
    }
    let _rm = Rm(cg.clone());
    std::fs::write(cg.join(limit_file), format!("{}", 96u64 << 20)).unwrap();

    let dir = f.user.dir.path().join("bigkdf");
    std::fs::create_dir_all(&dir).unwrap();
    let src = tempfile::tempdir().unwrap();
    let rootfs = busybox_rootfs(src.path()).unwrap();
    let img = dir.join("big-kdf.sif");
    let st = Command::new(interop("make-encrypted-sif").unwrap())
        .arg("--rootfs")
        .arg(&rootfs)
        .arg("-o")
        .arg(&img)
        .args(["-q", "--passphrase", PASSPHRASE, "--pbkdf", "argon2id"])
        .args(["--pbkdf-memory", "262144", "--pbkdf-force-iterations", "4"])
        .args(["--pbkdf-parallel", "1"])
        .status()
        .unwrap();
    assert!(st.success());
    let cmd = format!(
        "echo $$ > {}/cgroup.procs && exec setpriv --reuid {} --regid {} --clear-groups env -i HOME={} VEIL_ENCRYPTION_PASSPHRASE='{PASSPHRASE}' {} exec {} true",
        cg.display(),
        f.user.uid,
        f.user.gid,
        f.user.home.display(),
        f.user.bin.display(),
        img.display()
    );
    let err = fails(
        Command::new("sh").arg("-c").arg(&cmd),
        "argon2 over the limit",
    );
    assert!(err.contains("argon2 needs 256 MiB"), "{err}");
    // veil inspect tells the cost without any key.
    let o = run_ok(veil().arg("inspect").arg(&img));
    assert!(
        stdout(&o).contains("argon2id, 256 MiB of memory"),
        "{}",
        stdout(&o)
    );
}

/// Keyslot 0's argon2 (time cost, memory KiB, threads) as `cryptsetup luksDump`
/// reads them from the image's LUKS2 partition, extracted with `siftool dump`.
fn cryptsetup_argon2_costs(sif: &Path) -> (u64, u64, u64) {
    let list = Command::new("siftool")
        .arg("list")
        .arg(sif)
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&list.stdout).into_owned();
    let id = list
        .lines()
        .find(|l| l.contains("Encrypted squashfs"))
        .and_then(|l| l.split('|').next())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| panic!("no encrypted partition in siftool list:\n{list}"));
    let dir = tempfile::tempdir().unwrap();
    let part = dir.path().join("part.luks");
    let st = Command::new("siftool")
        .args(["dump", &id])
        .arg(sif)
        .stdout(std::fs::File::create(&part).unwrap())
        .status()
        .unwrap();
    assert!(st.success());
    let dump = Command::new("cryptsetup")
        .arg("luksDump")
        .arg(&part)
        .output()
        .unwrap();
    let dump = String::from_utf8_lossy(&dump.stdout).into_owned();
    let field = |name: &str| -> u64 {
        dump.lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in luksDump:\n{dump}"))
    };
    (field("Time cost:"), field("Memory:"), field("Threads:"))
}

#[test]
fn inspect_shows_the_encryption_without_a_key() {
    let f = require!(fixture(), "tools or user namespaces missing");
    let o = run_ok(veil().arg("inspect").arg(f.image("pem", 4096, "pbkdf2")));
    let s = stdout(&o);
    assert!(s.contains("RSA private key"), "{s}");
    assert!(s.contains("aes-xts-plain64, 512-bit key"), "{s}");
    assert!(s.contains("Sector size: 4096"), "{s}");
    assert!(s.contains("pbkdf2-sha256, 1000 iterations"), "{s}");
    let o = run_ok(
        veil()
            .args(["inspect", "--json"])
            .arg(f.image("pass", 512, "argon2i")),
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["encryption"]["key"], "passphrase");
    assert_eq!(v["encryption"]["sector_size"], 512);
    assert_eq!(v["encryption"]["keyslots"][0]["kdf"], "argon2i");
    assert_eq!(v["encryption"]["keyslots"][0]["memory_kib"], 32768);
    assert_eq!(v["encryption"]["keyslots"][0]["time_cost"], 4);
    assert_eq!(v["encryption"]["keyslots"][0]["threads"], 1);
    // make-encrypted-sif --fast --pbkdf-parallel 4: cryptsetup's argon2id keyslot
    // (4 passes, 32 MiB; the threads capped by cryptsetup at the CPUs it saw). veil
    // must report what cryptsetup's own luksDump reads from the partition siftool
    // extracts.
    let (time, memory, threads) = cryptsetup_argon2_costs(&f.four_lanes_image);
    assert_eq!((time, memory), (4, 32768));
    let o = run_ok(veil().args(["inspect", "--json"]).arg(&f.four_lanes_image));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let ks = &v["encryption"]["keyslots"][0];
    assert_eq!(
        (&ks["time_cost"], &ks["memory_kib"], &ks["threads"]),
        (&time.into(), &memory.into(), &threads.into()),
        "{v}"
    );
    let o = run_ok(veil().arg("inspect").arg(&f.four_lanes_image));
    let s = stdout(&o);
    let threads_text = if threads == 1 {
        "1 thread".to_string()
    } else {
        format!("{threads} threads")
    };
    assert!(
        s.contains(&format!(
            "argon2id, 32 MiB of memory, 4 passes, {threads_text}"
        )),
        "{s}"
    );
    let o = run_ok(veil().args(["inspect", "--json"]).arg(&f.plain));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["encryption"].is_null());
}

/// The pid of the process whose command line is exactly `argv` (NUL-separated),
/// waited for up to 10 s.
fn wait_for_process(argv: &[u8]) -> Option<u32> {
    for _ in 0..400 {
        let found = std::fs::read_dir("/proc").unwrap().flatten().find_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            (cmd == argv).then_some(pid)
        });
        if found.is_some() {
            return found;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    None
}

/// Whether other processes of the user could read `pid`'s memory and environment:
/// the kernel gives a non-dumpable process's /proc files to root.
fn dumpable(pid: u32, user: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    let owner = std::fs::metadata(format!("/proc/{pid}/environ"))
        .unwrap()
        .uid();
    owner == user && user != 0
}

#[test]
fn key_descriptors_are_closed_once_read() {
    let f = require!(fixture(), "tools or user namespaces missing");
    // The container cannot read the private key through the descriptor it came on.
    let key = std::fs::File::open(f.key("rsa.pem")).unwrap();
    let mut c = f.veil();
    c.args(["exec", "--containall", "--pem-fd", "3"])
        .arg(f.image("pem", 512, "pbkdf2"))
        .args(["cat", "/proc/self/fd/3"]);
    inherit_fds(&mut c, &[(&key, 3)]);
    let (_, out, err) = text(&c.output().unwrap());
    assert!(
        !out.contains("PRIVATE KEY"),
        "the container read the key from descriptor 3"
    );
    assert!(err.contains("No such file"), "{err}");

    // Nor does the launcher keep it open while the container runs.
    let pass = f.key("pass.txt");
    let file = std::fs::File::open(&pass).unwrap();
    let mut c = f.veil();
    c.args(["exec", "--passphrase-fd", "3"])
        .arg(f.image("pass", 512, "pbkdf2"))
        .args(["sleep", "31"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    inherit_fds(&mut c, &[(&file, 3)]);
    let mut child = c.spawn().unwrap();
    drop(file);
    let launcher = child.id();
    let sleeper = wait_for_process(b"sleep\x0031\x00");
    // (Only root may look into a non-dumpable process's descriptor table.)
    let open_files: Option<Vec<PathBuf>> = std::fs::read_dir(format!("/proc/{launcher}/fd"))
        .ok()
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .collect()
        });
    child.kill().unwrap();
    child.wait().unwrap();
    sleeper.expect("the container did not start");
    match open_files {
        Some(files) => assert!(
            !files.contains(&pass),
            "the launcher still holds the key file open: {files:?}"
        ),
        None => eprintln!("SKIP part: only root can list the launcher's descriptors"),
    }
}

#[test]
fn the_launcher_is_never_dumpable_with_a_secret_and_keeps_none_in_its_environment() {
    let f = require!(fixture(), "tools or user namespaces missing");
    // The passphrase comes through a pipe the test holds: until the test writes it,
    // the launcher waits to read it. By then it must have written its id maps (the
    // only reason it was ever dumpable again) and be non-dumpable.
    let (r, mut w) = {
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills two descriptors, owned from here on.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        use std::os::fd::FromRawFd;
        // SAFETY: both descriptors were just created and are owned by nothing else.
        unsafe {
            (
                std::fs::File::from_raw_fd(fds[0]),
                std::fs::File::from_raw_fd(fds[1]),
            )
        }
    };
    let decoy = "decoy-key-data-0123456789";
    let mut c = f.veil();
    c.args(["exec", "--passphrase-fd", "3"])
        .arg(f.image("pass", 4096, "argon2id"))
        .args(["sleep", "32"])
        .env("SINGULARITY_ENCRYPTION_PEM_DATA", decoy)
        .env("APPTAINER_ENCRYPTION_PASSPHRASE", PASSPHRASE)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    inherit_fds(&mut c, &[(&r, 3)]);
    let mut child = c.spawn().unwrap();
    drop(r);
    let launcher = child.id();
    let initial = std::fs::read_to_string("/proc/self/uid_map").unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut entered = false;
    while std::time::Instant::now() < deadline {
        let map = std::fs::read_to_string(format!("/proc/{launcher}/uid_map")).unwrap_or_default();
        if !map.is_empty() && map != initial && !dumpable(launcher, f.user.uid) {
            entered = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    if !entered {
        child.kill().ok();
        child.wait().ok();
        panic!(
            "the launcher did not enter its user namespace and become non-dumpable before reading the key"
        );
    }
    w.write_all(format!("{PASSPHRASE}\n").as_bytes()).unwrap();
    drop(w);
    let sleeper = wait_for_process(b"sleep\x0032\x00");
    let still = dumpable(launcher, f.user.uid);
    // What the launcher's environment shows from outside (root can read it).
    let environ = std::fs::read(format!("/proc/{launcher}/environ"));
    child.kill().unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(
        sleeper.is_some(),
        "the container did not start: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!still, "the launcher became dumpable again");
    if let Ok(environ) = environ {
        for secret in [PASSPHRASE, decoy] {
            assert!(
                !environ
                    .windows(secret.len())
                    .any(|w| w == secret.as_bytes()),
                "{secret:?} is still in /proc/{launcher}/environ"
            );
        }
        // The names stay (emptied), the rest of the environment is intact.
        let text = String::from_utf8_lossy(&environ);
        assert!(text.contains("SINGULARITY_ENCRYPTION_PEM_DATA="), "{text}");
        assert!(text.contains("LANG=C.UTF-8"), "{text}");
    } else {
        eprintln!("SKIP part: /proc/{launcher}/environ is readable only by root");
    }
}

#[test]
fn kdf_cost_over_the_cap_names_the_flag_that_allows_it() {
    let f = require!(fixture(), "tools or user namespaces missing");
    let img = f.image("pass", 512, "pbkdf2");
    // A cap lowered far enough that cryptsetup's --fast keyslot is over it.
    let err = fails(
        f.veil()
            .arg("exec")
            .arg(img)
            .arg("true")
            .env("VEIL_ENCRYPTION_PASSPHRASE", PASSPHRASE)
            .env("VEIL_MAX_KDF_COST", "0.00001"),
        "over the cap",
    );
    assert!(
        err.contains("keyslot 0: pbkdf2-") && err.contains("iterations, more than the limit of"),
        "{err}"
    );
    let factor = err
        .split("--max-kdf-cost ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .unwrap_or_else(|| panic!("no factor suggested: {err}"));
    assert!(
        err.contains(&format!("VEIL_MAX_KDF_COST={factor}")),
        "{err}"
    );
    // The flag beats the variable, and the suggested factor is enough.
    ok_marker(
        f,
        f.veil()
            .args(["exec", "--max-kdf-cost", factor])
            .arg(img)
            .args(["cat", "/data/marker.txt"])
            .env("VEIL_ENCRYPTION_PASSPHRASE", PASSPHRASE)
            .env("VEIL_MAX_KDF_COST", "0.00001"),
        "with the suggested factor",
    );
    let (code, _, err) = text(
        &f.veil()
            .args(["exec", "--max-kdf-cost", "0"])
            .arg(img)
            .arg("true")
            .output()
            .unwrap(),
    );
    assert_ne!(code, 0);
    assert!(err.contains("not a positive number"), "{err}");
}

#[test]
fn images_unlock_when_no_memory_may_be_locked() {
    let f = require!(fixture(), "tools or user namespaces missing");
    // Key pages are locked where RLIMIT_MEMLOCK allows; where it allows nothing, the
    // run goes on (the pages are still kept out of core dumps and wiped).
    let mut c = f.veil();
    c.arg("exec")
        .arg(f.image("pass", 512, "argon2id"))
        .args(["cat", "/data/marker.txt"])
        .env("VEIL_ENCRYPTION_PASSPHRASE", PASSPHRASE);
    // SAFETY: setrlimit is async-signal-safe.
    unsafe {
        c.pre_exec(|| {
            let none = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::setrlimit(libc::RLIMIT_MEMLOCK, &none) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    ok_marker(f, &mut c, "RLIMIT_MEMLOCK 0");
}
