//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository's `shared/` sibling: specs, interop scripts and reference data.
pub fn shared_dir() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared");
    p.is_dir().then(|| p.canonicalize().unwrap())
}

pub fn veil() -> Command {
    Command::new(env!("CARGO_BIN_EXE_veil"))
}

/// Copies a program that is run afterwards. `cp` does the writing: a descriptor open
/// for writing in this (multi-threaded) test process would be inherited by any child
/// another test forks meanwhile, and exec of the copy would fail with "Text file busy"
/// until that child execs.
pub fn copy_executable(src: &Path, dst: &Path) -> std::io::Result<()> {
    let st = Command::new("cp").arg("--").arg(src).arg(dst).status()?;
    if st.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "cp {} failed",
            src.display()
        )))
    }
}

/// Full path of a program on PATH.
pub fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(tool))
            .find(|p| p.is_file())
    })
}

/// Skips the calling test, saying why, when a requirement is missing.
#[macro_export]
macro_rules! require {
    ($opt:expr, $why:expr) => {
        match $opt {
            Some(v) => v,
            None => {
                eprintln!("SKIP {}: {}", module_path!(), $why);
                return;
            }
        }
    };
}

/// Runs a command and returns its output, panicking with its stderr if it failed.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// True for one of veil's own failure statuses (249–255, docs/compat.md), which are
/// kept apart from a container's.
pub fn veil_failed(status: std::process::ExitStatus) -> bool {
    matches!(status.code(), Some(249..=255))
}

/// Runs a command expected to fail; returns its stderr.
pub fn run_err(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        !out.status.success(),
        "{cmd:?} succeeded but should have failed; stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An unprivileged identity to run the launcher as: the caller itself when it is not
/// root; when the tests run as root, uid/gid 65534 (nobody), with the veil binary copied
/// where that user can execute it and a home directory it owns.
pub struct Unprivileged {
    pub uid: u32,
    pub gid: u32,
    pub dir: tempfile::TempDir,
    pub bin: PathBuf,
    pub home: PathBuf,
}

impl Unprivileged {
    pub fn new() -> Option<Unprivileged> {
        Self::with_uid(65534)
    }

    /// As [`new`](Self::new), with `uid` (and the same gid) when the tests run as root.
    pub fn with_uid(unprivileged: u32) -> Option<Unprivileged> {
        use std::os::unix::fs::{PermissionsExt, chown};
        let euid = nix::unistd::geteuid().as_raw();
        let (uid, gid) = if euid == 0 {
            (unprivileged, unprivileged)
        } else {
            (euid, nix::unistd::getegid().as_raw())
        };
        let dir = tempfile::Builder::new()
            .prefix("veil-test-")
            .tempdir_in("/tmp")
            .ok()?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).ok()?;
        let bin = dir.path().join("veil");
        copy_executable(Path::new(env!("CARGO_BIN_EXE_veil")), &bin).ok()?;
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).ok()?;
        // Its registry helper goes where veil looks for it: beside it.
        let helper = dir.path().join("veil-registry");
        copy_executable(Path::new(env!("CARGO_BIN_EXE_veil-registry")), &helper).ok()?;
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).ok()?;
        let home = dir.path().join("home");
        std::fs::create_dir(&home).ok()?;
        if euid == 0 {
            chown(&home, Some(uid), Some(gid)).ok()?;
        }
        let u = Unprivileged {
            uid,
            gid,
            dir,
            bin,
            home,
        };
        // Can this user make a user namespace here at all?
        let probe = Command::new("unshare")
            .args(["-Urm", "true"])
            .uid(u.uid)
            .gid(u.gid)
            .output();
        match probe {
            Ok(o) if o.status.success() => Some(u),
            Ok(o) => {
                eprintln!(
                    "user namespaces are not available to uid {uid}: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("cannot run unshare: {e}");
                None
            }
        }
    }

    /// `veil ARGS`, as this user, as [`Unprivileged::command`] runs programs.
    pub fn veil(&self) -> Command {
        self.command(&self.bin)
    }

    /// `program`, as this user, in its home directory, with a small fixed environment.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(program);
        c.uid(self.uid)
            .gid(self.gid)
            .current_dir(&self.home)
            .env_clear()
            .env("HOME", &self.home)
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("LANG", "C.UTF-8");
        c
    }

    /// Gives a path (recursively) to this user, as a sandbox the user built would be.
    pub fn own(&self, path: &Path) {
        if nix::unistd::geteuid().as_raw() == 0 {
            let st = Command::new("chown")
                .arg("-R")
                .arg(format!("{}:{}", self.uid, self.gid))
                .arg(path)
                .status()
                .unwrap();
            assert!(st.success());
        }
    }
}

/// A busybox root filesystem laid out like an Apptainer build: /.singularity.d with a
/// runscript, a test script, environment scripts and labels.
pub fn busybox_rootfs(dir: &Path) -> Option<PathBuf> {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())?;
    let root = dir.join("rootfs");
    for d in [
        "bin",
        "etc",
        "tmp",
        "home",
        "root",
        ".singularity.d/env",
        ".singularity.d/actions",
        "data",
    ] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    copy_executable(&busybox, &root.join("bin/busybox")).unwrap();
    for tool in [
        "sh",
        "ls",
        "cat",
        "echo",
        "id",
        "pwd",
        "env",
        "sleep",
        "grep",
        "hostname",
        "ps",
        "true",
        "false",
        "touch",
        "wc",
        "head",
        "kill",
        "stat",
        "readlink",
        "sha256sum",
        "dd",
        "test",
        "mount",
        "umount",
        "setsid",
        "cut",
    ] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(tool)).unwrap();
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\n").unwrap();
    let sd = root.join(".singularity.d");
    std::fs::write(
        sd.join("runscript"),
        "#!/bin/sh\necho \"runscript: $*\"\nexit ${RUN_EXIT:-0}\n",
    )
    .unwrap();
    std::fs::write(sd.join("test"), "#!/bin/sh\necho test-ok\nexit 0\n").unwrap();
    std::fs::write(
        sd.join("env/90-environment.sh"),
        "export FROM_IMAGE=image-value\nexport OVERRIDDEN=image\n",
    )
    .unwrap();
    std::fs::write(sd.join("labels.json"), "{\"org.label\":\"veil\"}\n").unwrap();
    std::fs::write(root.join("data/hello.txt"), "hello from the image\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    for f in ["runscript", "test"] {
        std::fs::set_permissions(sd.join(f), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    Some(root)
}

/// Packs a root filesystem with the real mksquashfs, and wraps the result in a SIF the
/// way Apptainer lays it out (primary system partition, group 1). Returns
/// (squashfs, sif), or None when mksquashfs or a usable /dev/fuse is missing.
pub fn squash_and_sif(rootfs: &Path, dir: &Path) -> Option<(PathBuf, PathBuf)> {
    if which("mksquashfs").is_none() {
        eprintln!("mksquashfs is not installed (apt-get install squashfs-tools)");
        return None;
    }
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .is_err()
    {
        eprintln!("/dev/fuse is not usable here");
        return None;
    }
    let sqfs = dir.join("image.sqfs");
    let st = Command::new("mksquashfs")
        .arg(rootfs)
        .arg(&sqfs)
        .args(["-noappend", "-quiet", "-all-root", "-no-progress"])
        .stdout(std::process::Stdio::null())
        .status()
        .ok()?;
    assert!(st.success(), "mksquashfs failed");
    let sif = dir.join("image.sif");
    sif_from_squashfs(&sqfs, &sif);
    Some((sqfs, sif))
}

/// A SIF holding `sqfs` as its primary system partition, as Apptainer builds it.
pub fn sif_from_squashfs(sqfs: &Path, sif: &Path) {
    use veil::sif::*;
    let mut part = NewObject::new(DataType::Partition, ObjectData::Path(sqfs));
    part.group = 1;
    part.extra = Extra::Partition {
        fs: FsType::Squash,
        part: PartType::PrimSys,
        arch: Arch::host(),
    };
    let opts = CreateOptions {
        launch_script: DEFAULT_LAUNCH_SCRIPT.into(),
        ..Default::default()
    };
    if let Err(e) = veil::sif::create(sif, &opts, vec![part]) {
        panic!("writing {} from {}: {e}", sif.display(), sqfs.display());
    }
}

/// `shared/testdata/sif`: the reference SIF images and test keys.
pub fn sif_testdata() -> Option<PathBuf> {
    shared_dir()
        .map(|d| d.join("testdata/sif"))
        .filter(|p| p.join("images").is_dir())
}

/// A `veil` command whose HOME is `home`, so keyrings under it are the only ones seen,
/// with no passphrase in the environment unless the test sets one.
pub fn veil_in(home: &Path) -> Command {
    let mut c = veil();
    c.env("HOME", home).env_remove("VEIL_PASSPHRASE");
    c
}

/// A `gpg` command on a private GNUPGHOME, batch mode, loopback pinentry.
pub fn gpg_in(gnupghome: &Path) -> Command {
    let mut c = Command::new("gpg");
    c.env("GNUPGHOME", gnupghome).args([
        "--batch",
        "--no-tty",
        "--pinentry-mode",
        "loopback",
        "--quiet",
    ]);
    c
}

/// A fresh private GNUPGHOME (mode 0700, as gpg insists).
pub fn new_gnupghome(parent: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let d = parent.join("gnupg");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
    d
}

/// The contents of the regular files directly in `dir`, in name order (none if absent).
pub fn files_in(dir: &Path) -> Vec<Vec<u8>> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<_> = rd
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v.into_iter().map(|p| std::fs::read(p).unwrap()).collect()
}

/// Deterministic, poorly compressible bytes.
pub fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A regular file entry for a test tarball.
pub fn tar_file(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8], mode: u32) {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(mode);
    h.set_mtime(1_600_000_000);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, path, data).unwrap();
}

/// A directory entry (mode 0755) for a test tarball.
pub fn tar_dir(b: &mut tar::Builder<Vec<u8>>, path: &str) {
    tar_entry(b, path, tar::EntryType::Directory, 0o755, None);
}

/// A symlink entry for a test tarball.
pub fn tar_symlink(b: &mut tar::Builder<Vec<u8>>, path: &str, target: &str) {
    tar_entry(b, path, tar::EntryType::Symlink, 0o777, Some(target));
}

/// Any entry without data: its type, mode and, for links, target.
pub fn tar_entry(
    b: &mut tar::Builder<Vec<u8>>,
    path: &str,
    kind: tar::EntryType,
    mode: u32,
    link: Option<&str>,
) {
    let mut h = tar::Header::new_gnu();
    h.set_size(0);
    h.set_mode(mode);
    h.set_mtime(1_600_000_000);
    h.set_entry_type(kind);
    match link {
        Some(t) => b.append_link(&mut h, path, t).unwrap(),
        None => b.append_data(&mut h, path, &[][..]).unwrap(),
    }
}

/// Gives the command's process each `(file, target)` pair's file as descriptor
/// `target`, without close-on-exec, as a caller passing `--pem-fd 3` (or a shell with
/// a descriptor open) would. Each source is first copied above every target, so a
/// source that already has a target's number (the test harness runs tests on threads,
/// so numbers vary) cannot be overwritten or keep its close-on-exec flag.
pub fn inherit_fds(cmd: &mut Command, fds: &[(&std::fs::File, i32)]) {
    use std::os::fd::AsRawFd;
    let pairs: Vec<(i32, i32)> = fds.iter().map(|(f, t)| (f.as_raw_fd(), *t)).collect();
    // SAFETY: fcntl and dup2 are async-signal-safe and touch only descriptors; the
    // sources stay open in the parent until the child has been spawned (the caller
    // holds the files).
    unsafe {
        cmd.pre_exec(move || {
            let mut high = [0i32; 8];
            for (i, (src, _)) in pairs.iter().enumerate().take(8) {
                high[i] = libc::fcntl(*src, libc::F_DUPFD_CLOEXEC, 100);
                if high[i] < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (i, (_, target)) in pairs.iter().enumerate().take(8) {
                if libc::dup2(high[i], *target) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}
pub mod registry;
pub mod sks;
pub mod slurm;

/// Polls `done` every 20 ms for up to 40 seconds, then fails naming `what`.
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(40),
            "timed out: {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Whether process `pid` runs (a zombie does not).
pub fn pid_alive(pid: i64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| !s[s.rfind(')').unwrap() + 2..].starts_with('Z'))
}

/// Where veil records `u`'s instances on this host.
pub fn instance_dir(u: &Unprivileged) -> PathBuf {
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    u.home.join(".veil/instances").join(host)
}

/// An RSA key pair made by openssl in `dir`: `NAME.pem` (private, PKCS#1, as the
/// peers' docs make it) and `NAME_pub.pem` (public, PKCS#1), both 0644.
#[allow(dead_code)]
pub fn openssl_rsa_pair(dir: &Path, name: &str) {
    let private = format!("{name}.pem");
    run_ok(
        Command::new("openssl")
            .args(["genrsa", "-traditional", "-out", &private, "2048"])
            .current_dir(dir),
    );
    run_ok(
        Command::new("openssl")
            .args(["rsa", "-in", &private, "-RSAPublicKey_out", "-out"])
            .arg(format!("{name}_pub.pem"))
            .current_dir(dir),
    );
    use std::os::unix::fs::PermissionsExt;
    for f in [private, format!("{name}_pub.pem")] {
        std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
}

/// `siftool list` of an image.
#[allow(dead_code)]
pub fn siftool_list(sif: &Path) -> String {
    stdout(&run_ok(Command::new("siftool").arg("list").arg(sif)))
}

/// The `.veil-*` temporaries left in `dir`.
#[allow(dead_code)]
pub fn veil_temporaries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".veil-"))
        .map(|e| e.path())
        .collect()
}
