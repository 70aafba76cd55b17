//! Apptainer's unprivileged encrypted images (partition fstype 6: gocryptfs inside an
//! outer squashfs), made by the real gocryptfs through
//! `../shared/interop/make-gocryptfs-sif`, run rootless by an unprivileged user, with
//! passphrases and RSA keys; wrong keys and damaged images fail in one line, and a
//! damaged block is an I/O error in the container, never data.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use common::*;

const PASSPHRASE: &str = "gocryptfs pass phrase";

struct Fixture {
    user: Unprivileged,
    marker: String,
    /// sha256 of /data/big.bin.
    big_sha: String,
    keys: PathBuf,
    /// (key mode, compressor) -> image.
    images: Vec<((&'static str, &'static str), PathBuf)>,
}

static FIXTURE: OnceLock<Option<Fixture>> = OnceLock::new();

fn fixture() -> Option<&'static Fixture> {
    FIXTURE
        .get_or_init(|| {
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

fn build_fixture() -> Option<Fixture> {
    for tool in ["gocryptfs", "siftool", "mksquashfs", "openssl", "python3"] {
        if which(tool).is_none() {
            eprintln!("SKIP: {tool} is not installed (packaging/install-deps.sh installs it)");
            return None;
        }
    }
    let make = shared_dir()
        .map(|d| d.join("interop/make-gocryptfs-sif"))
        .filter(|p| p.is_file())
        .or_else(|| {
            eprintln!("SKIP: ../shared/interop/make-gocryptfs-sif not found");
            None
        })?;
    let user = Unprivileged::new()?;
    let src = tempfile::tempdir().unwrap();
    let rootfs = busybox_rootfs(src.path())?;
    let marker = format!("VEIL-GOCRYPTFS-MARKER-{}", std::process::id());
    std::fs::write(rootfs.join("data/marker.txt"), format!("{marker}\n")).unwrap();
    // 8 MiB that do not compress: most of the image, spanning many gocryptfs blocks.
    let mut big = Vec::with_capacity(8 << 20);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while big.len() < 8 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        big.extend_from_slice(&x.to_le_bytes());
    }
    std::fs::write(rootfs.join("data/big.bin"), &big).unwrap();
    let big_sha = {
        use sha2::Digest;
        format!("{:x}", sha2::Sha256::digest(&big))
    };
    std::fs::create_dir_all(rootfs.join("data/deep/a/b/c/d/e/f/g")).unwrap();
    std::fs::write(rootfs.join("data/deep/a/b/c/d/e/f/g/leaf"), "leaf\n").unwrap();
    std::fs::hard_link(
        rootfs.join("data/marker.txt"),
        rootfs.join("data/marker-link.txt"),
    )
    .unwrap();
    std::os::unix::fs::symlink("marker.txt", rootfs.join("data/marker-sym.txt")).unwrap();
    // An extended attribute, and the host's getfattr with the two files it loads, to
    // read it back through veil's FUSE server.
    let xattr_set = Command::new("setfattr")
        .args(["-n", "user.veil", "-v", "gocryptfs-xattr"])
        .arg(rootfs.join("data/marker.txt"))
        .status()
        .is_ok_and(|s| s.success());
    assert!(xattr_set, "setfattr (package attr) is needed");
    for f in [
        "/usr/bin/getfattr",
        "/lib64/ld-linux-x86-64.so.2",
        "/lib/x86_64-linux-gnu/libc.so.6",
    ] {
        if let Ok(real) = std::fs::canonicalize(f) {
            let to = rootfs.join(f.trim_start_matches('/'));
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(real, &to).unwrap();
        }
    }

    let keys = user.dir.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    openssl_rsa_pair(&keys, "rsa");
    openssl_rsa_pair(&keys, "other");
    std::fs::write(keys.join("pass.txt"), format!("{PASSPHRASE}\n")).unwrap();
    std::fs::write(keys.join("wrong.txt"), "not it\n").unwrap();

    let out = user.dir.path().join("images");
    std::fs::create_dir(&out).unwrap();
    let mut images = Vec::new();
    for (mode, comp) in [("pass", "gzip"), ("pem", "zstd"), ("pass", "xz")] {
        let dst = out.join(format!("goc-{mode}-{comp}.sif"));
        let mut c = Command::new(&make);
        c.arg("--rootfs")
            .arg(&rootfs)
            .arg("-o")
            .arg(&dst)
            .args(["--comp", comp, "-q"]);
        if mode == "pass" {
            c.args(["--passphrase", PASSPHRASE]);
        } else {
            c.arg("--pem-path").arg(keys.join("rsa_pub.pem"));
        }
        let o = c.output().unwrap();
        if !o.status.success() {
            eprintln!(
                "SKIP: make-gocryptfs-sif could not make an image here (it mounts gocryptfs with FUSE): {}",
                String::from_utf8_lossy(&o.stderr).trim()
            );
            return None;
        }
        images.push(((mode, comp), dst));
    }
    user.own(&out);
    drop(src);
    Some(Fixture {
        user,
        marker,
        big_sha,
        keys,
        images,
    })
}

impl Fixture {
    fn image(&self, mode: &str, comp: &str) -> &Path {
        &self
            .images
            .iter()
            .find(|((m, c), _)| *m == mode && *c == comp)
            .unwrap()
            .1
    }

    /// `veil exec` of `image` with the key flags its mode needs.
    fn exec(&self, mode: &str, image: &Path) -> Command {
        let mut c = self.user.veil();
        c.arg("exec");
        if mode == "pass" {
            c.arg("--passphrase-file").arg(self.keys.join("pass.txt"));
        } else {
            c.arg("--pem-path").arg(self.keys.join("rsa.pem"));
        }
        c.arg(image);
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

fn one_line_error(o: &Output, want: &str) {
    let (code, out, err) = text(o);
    assert_ne!(code, 0, "should fail: {out}{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line expected: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains(want), "expected {want:?}: {err}");
}

#[test]
fn apptainers_gocryptfs_images_run_rootless() {
    let f = require!(fixture(), "gocryptfs, tools or user namespaces missing");
    for ((mode, comp), image) in &f.images {
        let o = f
            .exec(mode, image)
            .args([
                "sh",
                "-c",
                "cat /data/marker.txt /data/marker-link.txt /data/marker-sym.txt /data/deep/a/b/c/d/e/f/g/leaf; sha256sum /data/big.bin",
            ])
            .output()
            .unwrap();
        let (code, out, err) = text(&o);
        assert_eq!(code, 0, "{mode}/{comp}: {err}");
        let m = &f.marker;
        assert_eq!(
            out,
            format!("{m}\n{m}\n{m}\nleaf\n{}  /data/big.bin\n", f.big_sha),
            "{mode}/{comp}"
        );
    }
    // The peers' variables and a descriptor give the key as well.
    let image = f.image("pass", "gzip");
    let o = f
        .user
        .veil()
        .env("APPTAINER_ENCRYPTION_PASSPHRASE", PASSPHRASE)
        .arg("exec")
        .arg(image)
        .args(["cat", "/data/marker.txt"])
        .output()
        .unwrap();
    assert_eq!(text(&o).1.trim(), f.marker, "{}", text(&o).2);
    let pem = std::fs::read(f.keys.join("rsa.pem")).unwrap();
    let o = f
        .user
        .veil()
        .env(
            "APPTAINER_ENCRYPTION_PEM_DATA",
            String::from_utf8(pem).unwrap(),
        )
        .arg("exec")
        .arg(f.image("pem", "zstd"))
        .args(["cat", "/data/marker.txt"])
        .output()
        .unwrap();
    assert_eq!(text(&o).1.trim(), f.marker, "{}", text(&o).2);
}

#[test]
fn inspect_shows_the_gocryptfs_parameters_without_a_key() {
    let f = require!(fixture(), "gocryptfs, tools or user namespaces missing");
    for (mode, comp, key) in [("pass", "gzip", "passphrase"), ("pem", "zstd", "rsa")] {
        let o = f
            .user
            .veil()
            .args(["inspect", "--json", "--encryption"])
            .arg(f.image(mode, comp))
            .output()
            .unwrap();
        let (code, out, err) = text(&o);
        assert_eq!(code, 0, "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let e = &v["encryption"];
        assert_eq!(e["format"], "gocryptfs", "{out}");
        assert_eq!(e["key"], key, "{out}");
        assert_eq!(e["kdf"], "scrypt");
        assert_eq!(e["scrypt_n"], 65536);
        assert_eq!(
            e["feature_flags"],
            serde_json::json!(["HKDF", "GCMIV128", "PlaintextNames"])
        );
    }
}

#[test]
fn wrong_keys_and_damaged_images_fail_in_one_line() {
    let f = require!(fixture(), "gocryptfs, tools or user namespaces missing");
    let pass = f.image("pass", "gzip");
    let o = f
        .user
        .veil()
        .arg("exec")
        .arg("--passphrase-file")
        .arg(f.keys.join("wrong.txt"))
        .arg(pass)
        .arg("true")
        .output()
        .unwrap();
    one_line_error(&o, "wrong passphrase (--passphrase-file");
    one_line_error(&o, "it does not decrypt the image's gocryptfs master key");
    let o = f
        .user
        .veil()
        .arg("exec")
        .arg("--pem-path")
        .arg(f.keys.join("other.pem"))
        .arg(f.image("pem", "zstd"))
        .arg("true")
        .output()
        .unwrap();
    one_line_error(&o, "the private key does not decrypt this image's key");
    // The scrypt cost above the cap (a factor of 0.01: 10 MiB, against 64 MiB).
    let o = f
        .exec("pass", pass)
        .env("VEIL_MAX_KDF_COST", "0.01")
        .arg("true")
        .output()
        .unwrap();
    one_line_error(&o, "--max-kdf-cost 0.1");

    let work = f.user.dir.path().join("damaged");
    std::fs::create_dir_all(&work).unwrap();
    let bytes = std::fs::read(pass).unwrap();
    // Cut in half.
    let cut = work.join("cut.sif");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    // gocryptfs.conf with its version changed (the file is stored uncompressed in the
    // outer squashfs).
    let conf_at = find(&bytes, b"\"Version\": 2").expect("gocryptfs.conf in the image");
    let mut conf = bytes.clone();
    conf[conf_at + 11] = b'7';
    let bad_conf = work.join("conf.sif");
    std::fs::write(&bad_conf, &conf).unwrap();
    f.user.own(&work);
    for (image, want) in [
        (&cut, "cut.sif"),
        (&bad_conf, "gocryptfs.conf: on-disk format version 7"),
    ] {
        let o = f.exec("pass", image).arg("true").output().unwrap();
        one_line_error(&o, want);
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[test]
fn a_damaged_block_is_an_io_error_in_the_container_not_data() {
    let f = require!(fixture(), "gocryptfs, tools or user namespaces missing");
    let image = f.image("pass", "gzip");
    let mut bytes = std::fs::read(image).unwrap();
    // Past the middle of the file lies /data/big.bin's share of the encrypted inner
    // image (8 MiB of the image's 10; busybox comes first, in /bin).
    let at = bytes.len() * 3 / 5;
    bytes[at] ^= 0x01;
    let work = f.user.dir.path().join("flipped");
    std::fs::create_dir_all(&work).unwrap();
    let flipped = work.join("flipped.sif");
    std::fs::write(&flipped, &bytes).unwrap();
    f.user.own(&work);
    let o = f
        .exec("pass", &flipped)
        .args([
            "sh",
            "-c",
            "cat /data/marker.txt; sha256sum /data/big.bin; echo status $?",
        ])
        .output()
        .unwrap();
    let (code, out, err) = text(&o);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with(&format!("{}\n", f.marker)), "{out}{err}");
    assert!(!out.contains(&f.big_sha), "damaged data was read: {out}");
    assert!(out.contains("status 1"), "{out}{err}");
    assert!(err.contains("Input/output error"), "{err}");
    assert_eq!(
        err.matches("fails authentication").count(),
        1,
        "the damage is said once: {err}"
    );
}

/// The image's outer squashfs packed again by mksquashfs with its defaults (data
/// compressed, the tail of each file in a fragment), in a new SIF made with siftool:
/// veil then reads the encrypted image through the outer squashfs's blocks instead of
/// as one stored run.
fn repacked_outer(f: &Fixture, image: &Path, work: &Path) -> PathBuf {
    repacked_outer_with(f, image, work, |_| ())
}

/// As [`repacked_outer`], after `change` has had the unpacked outer tree.
fn repacked_outer_with(
    f: &Fixture,
    image: &Path,
    work: &Path,
    change: impl FnOnce(&Path),
) -> PathBuf {
    let outer = work.join("outer.sqfs");
    let list = siftool_list(image);
    let id = list
        .lines()
        .find(|l| l.contains("*System"))
        .and_then(|l| l.split('|').next())
        .map(|s| s.trim().to_string())
        .expect("a primary partition");
    let dump = run_ok(Command::new("siftool").arg("dump").arg(&id).arg(image));
    std::fs::write(&outer, &dump.stdout).unwrap();
    let tree = work.join("tree");
    run_ok(
        Command::new("unsquashfs")
            .args(["-no-xattrs", "-d"])
            .arg(&tree)
            .arg(&outer),
    );
    change(&tree);
    let packed = work.join("packed.sqfs");
    run_ok(Command::new("mksquashfs").arg(&tree).arg(&packed).args([
        "-noappend",
        "-quiet",
        "-all-root",
        "-b",
        "65536",
    ]));
    let sb = stdout(&run_ok(Command::new("unsquashfs").arg("-s").arg(&packed)));
    assert!(sb.contains("Data is compressed"), "{sb}");
    let sif = work.join("repacked.sif");
    run_ok(Command::new("siftool").arg("new").arg(&sif));
    run_ok(
        Command::new("siftool")
            .args([
                "add",
                "--datatype",
                "4",
                "--parttype",
                "2",
                "--partfs",
                "6",
                "--partarch",
                "2",
                "--groupid",
                "1",
            ])
            .arg(&sif)
            .arg(&packed),
    );
    f.user.own(work);
    sif
}

#[test]
fn an_outer_squashfs_with_compressed_data_and_fragments_is_read_too() {
    let f = require!(fixture(), "gocryptfs, tools or user namespaces missing");
    let work = f.user.dir.path().join("repacked");
    std::fs::create_dir_all(&work).unwrap();
    let sif = repacked_outer(f, f.image("pass", "gzip"), &work);
    let o = f
        .exec("pass", &sif)
        .args(["sh", "-c", "cat /data/marker.txt; sha256sum /data/big.bin"])
        .output()
        .unwrap();
    let (code, out, err) = text(&o);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with(&format!("{}\n", f.marker)), "{out}{err}");
    assert!(out.contains(&f.big_sha), "{out}{err}");
}

#[test]
fn an_encrypted_image_cut_at_a_block_boundary_fails_in_one_line() {
    // The format does not authenticate a file's length: a file cut after a whole
    // block decrypts, shorter. The squashfs inside then ends before its own tables.
    let f = require!(fixture(), "gocryptfs, tools or user namespaces missing");
    let work = f.user.dir.path().join("cut-at-block");
    std::fs::create_dir_all(&work).unwrap();
    let sif = repacked_outer_with(f, f.image("pass", "gzip"), &work, |tree| {
        let inner = std::fs::read_dir(tree)
            .unwrap()
            .filter_map(|e| e.ok())
            .find(|e| e.file_name().to_string_lossy().starts_with("squashfs-"))
            .expect("the encrypted image")
            .path();
        let len = std::fs::metadata(&inner).unwrap().len();
        // 18-byte header, then 4128-byte stored blocks: keep the first half of them.
        let blocks = (len - 18) / 4128;
        let keep = 18 + blocks / 2 * 4128;
        std::fs::OpenOptions::new()
            .write(true)
            .open(&inner)
            .unwrap()
            .set_len(keep)
            .unwrap();
    });
    let o = f.exec("pass", &sif).arg("true").output().unwrap();
    one_line_error(&o, "the decrypted partition is not a usable squashfs");
}

#[test]
fn extended_attributes_read_through_the_container() {
    let f = require!(fixture(), "gocryptfs, tools or user namespaces missing");
    if !Path::new("/lib64/ld-linux-x86-64.so.2").exists() {
        eprintln!("SKIP: no x86_64 glibc loader here to run the host's getfattr in the image");
        return;
    }
    for (mode, comp) in [("pass", "gzip"), ("pem", "zstd")] {
        let o = f
            .exec(mode, f.image(mode, comp))
            .args(["/usr/bin/getfattr", "-d", "/data/marker.txt"])
            .output()
            .unwrap();
        let (code, out, err) = text(&o);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("user.veil=\"gocryptfs-xattr\""), "{out}{err}");
    }
}
