//! veil inside a real container, as CI runners run it: rootless podman (Debian's,
//! with runc, vfs storage and no network), the container's user unprivileged. With
//! `--device /dev/fuse` veil serves the image with FUSE; without it, it unpacks the
//! image into memory (a ramfs in its own mount namespace) and says so, for encrypted
//! images too; `--unsquash` asks for that, `-q` silences the note.
//!
//! Podman runs as `veil-podman`, the user install-deps.sh makes with subordinate ids
//! (when the tests run as root), or as the caller when it has subordinate ids.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

/// The user podman runs as: (uid, gid, home).
fn podman_user() -> Option<(u32, u32, PathBuf)> {
    let me = nix::unistd::geteuid();
    let name = if me.is_root() {
        "veil-podman".to_string()
    } else {
        nix::unistd::User::from_uid(me).ok()??.name
    };
    let user = nix::unistd::User::from_name(&name).ok()??;
    let subuid = std::fs::read_to_string("/etc/subuid").unwrap_or_default();
    if !subuid.lines().any(|l| l.starts_with(&format!("{name}:"))) {
        eprintln!(
            "{name} has no subordinate ids in /etc/subuid (install-deps.sh gives veil-podman some)"
        );
        return None;
    }
    Some((user.uid.as_raw(), user.gid.as_raw(), user.dir))
}

struct Podman {
    uid: u32,
    gid: u32,
    home: PathBuf,
    dir: tempfile::TempDir,
}

impl Podman {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("timeout");
        c.arg("180")
            .arg("podman")
            .args([
                "--runtime",
                "runc",
                "--storage-driver",
                "vfs",
                "--cgroup-manager",
                "cgroupfs",
            ])
            .arg("--root")
            .arg(self.dir.path().join("storage"))
            .arg("--runroot")
            .arg(self.dir.path().join("run"))
            .args(args)
            .env_clear()
            .env("HOME", &self.home)
            .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
            .env("XDG_RUNTIME_DIR", self.dir.path().join("xdg"))
            .current_dir(self.dir.path());
        if nix::unistd::geteuid().is_root() {
            c.uid(self.uid).gid(self.gid);
        }
        c
    }

    /// `veil ARGS` in a new container of the test image, as uid 1000 inside.
    fn veil(&self, fuse: bool, args: &[&str]) -> Output {
        let mut run = vec![
            "run",
            "--rm",
            "--network",
            "none",
            "--user",
            "1000:1000",
            "-e",
            "HOME=/home/u",
        ];
        if fuse {
            run.extend(["--device", "/dev/fuse"]);
        }
        run.extend(["veil-test:1", "/bin/veil"]);
        run.extend(args);
        self.command(&run).output().unwrap()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // Rootless podman keeps a pause process holding its user namespace: stop it.
        let pid = self.dir.path().join("xdg/libpod/tmp/pause.pid");
        // (Only a process of the podman user's: the file is that user's to write.)
        if let Ok(p) = std::fs::read_to_string(pid)
            && let Ok(p) = p.trim().parse::<i32>()
            && std::fs::metadata(format!("/proc/{p}"))
                .is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == self.uid)
        {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), nix::sys::signal::SIGKILL);
        }
    }
}

/// A root filesystem with busybox, a stripped veil, a plain and an encrypted image.
fn image_tree(dir: &Path) -> Option<PathBuf> {
    let root = dir.join("rootfs");
    for d in ["bin", "tmp", "etc", "home/u", "var/tmp"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::set_permissions(root.join("home/u"), std::fs::Permissions::from_mode(0o777)).unwrap();
    let busybox = which("busybox")?;
    copy_executable(&busybox, &root.join("bin/busybox")).unwrap();
    for t in ["sh", "cat", "echo", "id", "grep"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(t)).unwrap();
    }
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0::/root:/bin/sh\nu:x:1000:1000::/home/u:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\nu:x:1000:\n").unwrap();
    let st = Command::new("strip")
        .arg("-o")
        .arg(root.join("bin/veil"))
        .arg(env!("CARGO_BIN_EXE_veil"))
        .status()
        .ok()?;
    assert!(st.success());
    // The images: a busybox tree with a marker, plain and encrypted.
    let img = dir.join("image");
    std::fs::create_dir(&img).unwrap();
    let tree = busybox_rootfs(&img)?;
    std::fs::write(tree.join("marker"), "in-the-image\n").unwrap();
    run_ok(
        veil()
            .env("HOME", dir)
            .args(["build", "-q"])
            .arg(root.join("plain.sif"))
            .arg(&tree),
    );
    std::fs::write(root.join("pass"), "podman test passphrase\n").unwrap();
    run_ok(
        veil()
            .env("HOME", dir)
            .args(["build", "-q", "--passphrase-file"])
            .arg(root.join("pass"))
            .arg(root.join("enc.sif"))
            .arg(&tree),
    );
    let out = Command::new("chmod")
        .arg("-R")
        .arg("a+rX")
        .arg(&root)
        .status()
        .unwrap();
    assert!(out.success());
    let tar = dir.join("rootfs.tar");
    let st = Command::new("tar")
        .args(["--owner=0", "--group=0", "-C"])
        .arg(&root)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::set_permissions(&tar, std::fs::Permissions::from_mode(0o644)).unwrap();
    Some(tar)
}

#[test]
fn veil_runs_inside_rootless_podman_with_and_without_dev_fuse() {
    require!(
        which("podman"),
        "podman is not installed (install-deps.sh installs it)"
    );
    require!(
        which("runc"),
        "runc is not installed (install-deps.sh installs it)"
    );
    require!(
        Path::new("/dev/fuse").exists().then_some(()),
        "this machine has no /dev/fuse to pass on"
    );
    let (uid, gid, home) = require!(
        podman_user(),
        "no user with subordinate ids for rootless podman"
    );
    let dir = tempfile::Builder::new()
        .prefix("veil-podman-")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let tar = require!(image_tree(dir.path()), "busybox is not installed");
    for d in ["storage", "run", "xdg"] {
        std::fs::create_dir(dir.path().join(d)).unwrap();
        std::fs::set_permissions(dir.path().join(d), std::fs::Permissions::from_mode(0o700))
            .unwrap();
        nix::unistd::chown(&dir.path().join(d), Some(uid.into()), Some(gid.into())).unwrap();
    }
    let p = Podman {
        uid,
        gid,
        home,
        dir,
    };
    let o = p
        .command(&["import"])
        .arg(&tar)
        .arg("veil-test:1")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "podman import: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let check = |o: &Output, want: &str| -> String {
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert!(o.status.success(), "{err}");
        assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), want, "{err}");
        err
    };
    // With /dev/fuse: served by FUSE, no unpacking.
    let err = check(
        &p.veil(true, &["exec", "/plain.sif", "cat", "/marker"]),
        "in-the-image",
    );
    assert!(!err.contains("unpacking"), "{err}");
    // Without it: unpacked into memory, with a note naming the reason.
    let err = check(
        &p.veil(false, &["exec", "/plain.sif", "cat", "/marker"]),
        "in-the-image",
    );
    assert!(
        err.contains("unpacking the image into memory") && err.contains("/dev/fuse"),
        "{err}"
    );
    // An encrypted image too, its key from a file.
    let o = p.veil(
        false,
        &[
            "exec",
            "--passphrase-file",
            "/pass",
            "/enc.sif",
            "sh",
            "-c",
            "cat /marker; id -u",
        ],
    );
    let err = check(&o, "in-the-image\n1000");
    assert!(err.contains("unpacking"), "{err}");
    // A wrong key still fails as such, before anything is unpacked.
    let o = p.veil(
        false,
        &[
            "exec",
            "--passphrase-file",
            "/etc/passwd",
            "/enc.sif",
            "true",
        ],
    );
    assert_eq!(
        o.status.code(),
        Some(251),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // --unsquash asks for it where FUSE works; -q keeps the note quiet.
    let err = check(
        &p.veil(
            true,
            &["exec", "--unsquash", "/plain.sif", "cat", "/marker"],
        ),
        "in-the-image",
    );
    assert!(err.contains("--unsquash"), "{err}");
    let err = check(
        &p.veil(false, &["-q", "exec", "/plain.sif", "cat", "/marker"]),
        "in-the-image",
    );
    assert!(err.is_empty(), "{err}");
    // --no-tmp-sandbox forbids it: the missing device is the error.
    let o = p.veil(false, &["exec", "--no-tmp-sandbox", "/plain.sif", "true"]);
    assert_eq!(
        o.status.code(),
        Some(253),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("--device /dev/fuse"));
}
