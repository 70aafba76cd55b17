//! `%post` and `%test` run isolated like a container, as real root and unprivileged:
//! the image is their root through `pivot_root` with the host's root detached (a
//! second `chroot` leads nowhere, no mount of the host's root file system is left, no
//! `/proc` of the host), only stdin, stdout and stderr reach them (and `%setup`) even
//! when veil was given a key descriptor and another open descriptor, and no key is in
//! their environment.

mod common;

use std::collections::BTreeSet;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

/// A static program that tries the classic way out of a `chroot`: into a new
/// directory with the working directory left outside it, up as far as `..` goes, and
/// `chroot(".")` there. Then it prints the file it was given, if it can read it.
const ESCAPE_C: &str = r#"
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>
int main(int argc, char **argv) {
    printf("escape helper ran\n");
    fflush(stdout);
    mkdir("/escape-dir", 0755);
    if (chroot("/escape-dir") != 0) perror("chroot /escape-dir");
    for (int i = 0; i < 64; i++) chdir("..");
    if (chroot(".") != 0) perror("chroot .");
    for (int a = 1; a < argc; a++) {
        char buf[512];
        int fd = open(argv[a], O_RDONLY);
        if (fd < 0) { perror(argv[a]); continue; }
        ssize_t n = read(fd, buf, sizeof buf);
        if (n > 0) write(1, buf, n);
        close(fd);
    }
    return 0;
}
"#;

fn compile_escape(dir: &Path) -> Option<PathBuf> {
    let cc = which("musl-gcc").or_else(|| which("cc"))?;
    let src = dir.join("escape.c");
    std::fs::write(&src, ESCAPE_C).unwrap();
    let bin = dir.join("escape");
    let ok = Command::new(cc)
        .args(["-static", "-Os", "-o"])
        .arg(&bin)
        .arg(&src)
        .status()
        .ok()?
        .success();
    ok.then_some(bin)
}

const DEF: &str = "\
Bootstrap: localimage
From: rootfs

%setup
    echo BEGIN-SETUP-FDS; ls -1 /proc/self/fd; echo END-SETUP-FDS
    echo BEGIN-SETUP-ENV; env; echo END-SETUP-ENV

%post
    echo BEGIN-FDS; ls -1 /proc/self/fd; echo END-FDS
    echo BEGIN-ENV; env; echo END-ENV
    echo BEGIN-MOUNTINFO; cat /proc/self/mountinfo; echo END-MOUNTINFO
    /bin/escape MARKER || true
    cat /proc/1/root/MARKER /proc/*/root/MARKER /proc/1/cwd/MARKER || true
    ls /proc/1/root/.. /proc/*/root/../.. || true
    ls /dev

%test
    echo BEGIN-TEST-FDS; ls -1 /proc/self/fd; echo END-TEST-FDS
    /bin/escape MARKER || true
";

const ENV_PASSPHRASE: &str = "env-passphrase-3a7c1e";
const FD_PASSPHRASE: &str = "fd-passphrase-9b2d4f";
const PEM_DATA_MARK: &str = "pem-data-not-a-key-5e8a";

struct Setup {
    work: PathBuf,
    marker: PathBuf,
    marker_text: String,
    public_pem: Option<PathBuf>,
}

/// A busybox rootfs with the escape helper, a definition file, a marker file on the
/// host readable by everyone, and (with openssl) an RSA public key, all in `dir`.
fn prepare(dir: &Path) -> Option<Setup> {
    use std::os::unix::fs::PermissionsExt;
    let escape = compile_escape(dir)?;
    let work = dir.join("work");
    std::fs::create_dir_all(&work).unwrap();
    let root = busybox_rootfs(&work)?;
    std::fs::copy(&escape, root.join("bin/escape")).unwrap();
    for tool in ["mkdir", "chroot"] {
        let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(tool));
    }
    let marker = dir.join("host-marker");
    let marker_text = format!("host marker {}", std::process::id());
    std::fs::write(&marker, &marker_text).unwrap();
    std::fs::set_permissions(&marker, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(
        work.join("iso.def"),
        DEF.replace("MARKER", &marker.to_string_lossy()),
    )
    .unwrap();
    let public_pem = which("openssl").map(|_| {
        let pri = dir.join("pri.pem");
        let publ = work.join("pub.pem");
        run_ok(
            Command::new("openssl")
                .args(["genrsa", "-traditional", "-out"])
                .arg(&pri)
                .arg("2048"),
        );
        run_ok(
            Command::new("openssl")
                .args(["rsa", "-RSAPublicKey_out", "-in"])
                .arg(&pri)
                .arg("-out")
                .arg(&publ),
        );
        publ
    });
    Some(Setup {
        work,
        marker,
        marker_text,
        public_pem,
    })
}

/// How the build gets its key: on descriptor 4, which veil is started with; a file of
/// the host is open on descriptor 5 as well, and secret variables are set.
#[derive(Clone, Copy, Debug)]
enum KeyFd {
    Passphrase,
    Pem,
}

fn build(mut cmd: Command, s: &Setup, key: KeyFd, out: &str) -> Output {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let data = match key {
        KeyFd::Passphrase => FD_PASSPHRASE.as_bytes().to_vec(),
        KeyFd::Pem => std::fs::read(s.public_pem.as_ref().unwrap()).unwrap(),
    };
    std::fs::File::from(w).write_all_and_close(&data);
    let extra = std::fs::File::open(&s.marker).unwrap();
    let flag = match key {
        KeyFd::Passphrase => "--passphrase-fd",
        KeyFd::Pem => "--pem-fd",
    };
    cmd.current_dir(&s.work)
        .args([
            "build",
            "-q",
            "--kdf-time",
            "20",
            "--kdf-memory",
            "8",
            flag,
            "4",
        ])
        .arg(out)
        .arg("iso.def")
        .env("APPTAINER_ENCRYPTION_PASSPHRASE", ENV_PASSPHRASE)
        .env("SINGULARITY_ENCRYPTION_PASSPHRASE", ENV_PASSPHRASE)
        .env("VEIL_ENCRYPTION_PEM_DATA", PEM_DATA_MARK);
    let r = std::fs::File::from(r);
    inherit_fds(&mut cmd, &[(&r, 4), (&extra, 5)]);
    let o = cmd.output().unwrap();
    drop((r, extra));
    o
}

trait WriteAllAndClose {
    fn write_all_and_close(self, data: &[u8]);
}

impl WriteAllAndClose for std::fs::File {
    fn write_all_and_close(mut self, data: &[u8]) {
        use std::io::Write;
        self.write_all(data).unwrap();
    }
}

fn block<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    let begin = format!("BEGIN-{name}");
    let end = format!("END-{name}");
    let mut lines = text.lines().skip_while(|l| *l != begin);
    assert!(lines.next().is_some(), "no {begin} in the output:\n{text}");
    lines.take_while(|l| *l != end).collect()
}

/// The host's root mount as the tests see it: (major:minor, root within the fs).
fn host_root_mount() -> (String, String) {
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let f: Vec<&str> = mi
        .lines()
        .map(|l| l.split(' ').collect::<Vec<_>>())
        .rfind(|f| f.get(4) == Some(&"/"))
        .expect("a root mount");
    (f[2].to_string(), f[3].to_string())
}

/// Every way the build's scripts were not isolated, as messages (none: isolated).
fn failures(o: &Output, s: &Setup, key: KeyFd) -> Vec<String> {
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{key:?}: build failed:\n{out}\n{err}");
    let mut fails = Vec::new();

    // Descriptors: 0, 1, 2, and the one ls opens to list them.
    for name in ["SETUP-FDS", "FDS", "TEST-FDS"] {
        let fds: BTreeSet<u32> = block(&out, name)
            .iter()
            .map(|l| l.trim().parse().unwrap())
            .collect();
        let extra: Vec<_> = fds.iter().filter(|&&fd| fd > 2).collect();
        if !(fds.is_superset(&[0, 1, 2].into()) && extra.len() <= 1) {
            fails.push(format!("{name}: descriptors {fds:?} reach the script"));
        }
    }
    // No secret in any environment, nor anywhere else in what the scripts printed.
    for name in ["SETUP-ENV", "ENV"] {
        for l in block(&out, name) {
            if l.contains("PASSPHRASE") || l.contains("PEM_DATA") {
                fails.push(format!("{name} has {l:?}"));
            }
        }
    }
    for secret in [
        ENV_PASSPHRASE,
        FD_PASSPHRASE,
        PEM_DATA_MARK,
        "BEGIN RSA PUBLIC",
    ] {
        if out.contains(secret) || err.contains(secret) {
            fails.push(format!("{secret:?} reached a script"));
        }
    }
    // The host's files stay out of reach: the escape helper ran (twice) and read nothing.
    assert_eq!(
        out.matches("escape helper ran").count(),
        2,
        "{key:?}: the helper did not run:\n{out}\n{err}"
    );
    if out.contains(&s.marker_text) {
        fails.push(format!("a script read the host's {}", s.marker.display()));
    }
    // The root is the staging tree's own mount, and no mount shows the host's root
    // file system from its top, nor the host's /dev.
    let mounts = block(&out, "MOUNTINFO");
    let fields: Vec<Vec<&str>> = mounts.iter().map(|l| l.split(' ').collect()).collect();
    match fields.iter().find(|f| f.get(4) == Some(&"/")) {
        None => fails.push(format!("no mount at / in %post:\n{}", mounts.join("\n"))),
        Some(root) if !root[3].contains(".veil-build-") => {
            fails.push(format!("/ in %post is not the staging tree: {root:?}"))
        }
        Some(_) => {}
    }
    let (dev, host_root) = host_root_mount();
    for f in &fields {
        if f[2] == dev && f[3] == host_root {
            fails.push(format!("the host's root is mounted in %post: {f:?}"));
        }
        let fstype = f.iter().skip_while(|x| **x != "-").nth(1).copied();
        // (Single devices bound from it, /dev/null and the like, are fine.)
        if fstype == Some("devtmpfs") && f[3] == "/" {
            fails.push(format!("the host's /dev is mounted in %post: {f:?}"));
        }
    }
    fails
}

#[test]
fn post_and_test_are_isolated_as_root_and_unprivileged() {
    require!(
        which("openssl"),
        "openssl missing (it makes the test's RSA key)"
    );
    let root_dir = tempfile::tempdir().unwrap();
    let s = require!(
        prepare(root_dir.path()),
        "no C compiler for the static escape helper, or no busybox"
    );
    // Every failure of every build, reported together.
    let mut fails = Vec::new();
    let mut check = |o: &Output, s: &Setup, who: &str, key: KeyFd| {
        for f in failures(o, s, key) {
            fails.push(format!("{who} build, key on a descriptor ({key:?}): {f}"));
        }
    };
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        for key in [KeyFd::Passphrase, KeyFd::Pem] {
            let mut c = veil();
            c.env_clear()
                .env("PATH", "/usr/local/bin:/usr/bin:/bin")
                .env("HOME", root_dir.path());
            let o = build(c, &s, key, &format!("root-{key:?}.sif"));
            check(&o, &s, "root", key);
        }
    } else {
        eprintln!("SKIP the real-root half: the tests do not run as root");
    }

    let user = require!(Unprivileged::new(), "user namespaces unavailable");
    let s = require!(prepare(user.dir.path()), "unreachable: prepared once");
    user.own(&s.work);
    for key in [KeyFd::Passphrase, KeyFd::Pem] {
        let o = build(user.veil(), &s, key, &format!("user-{key:?}.sif"));
        check(&o, &s, "unprivileged", key);
    }
    assert!(fails.is_empty(), "\n  {}", fails.join("\n  "));
}

/// While `%post` runs, another process of the same user cannot read the build
/// process's memory or environment, where the key is.
#[test]
fn the_build_process_is_not_readable_by_the_user_while_post_runs() {
    use std::os::unix::fs::PermissionsExt;
    let user = require!(Unprivileged::new(), "user namespaces unavailable");
    let work = user.dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    require!(busybox_rootfs(&work), "busybox missing");
    std::fs::write(
        work.join("slow.def"),
        "Bootstrap: localimage\nFrom: rootfs\n%post\n    touch /post-running\n    sleep 20\n",
    )
    .unwrap();
    std::fs::set_permissions(&work, std::fs::Permissions::from_mode(0o755)).unwrap();
    user.own(&work);
    let mut child = user
        .veil()
        .current_dir(&work)
        .args([
            "build",
            "-q",
            "--encrypt",
            "--kdf-time",
            "20",
            "--kdf-memory",
            "8",
        ])
        .args(["slow.sif", "slow.def"])
        .env("APPTAINER_ENCRYPTION_PASSPHRASE", ENV_PASSPHRASE)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    let running = loop {
        let found = std::fs::read_dir(&work).unwrap().flatten().any(|e| {
            e.file_name().to_string_lossy().starts_with(".veil-build-")
                && e.path().join("rootfs/post-running").exists()
        });
        if found {
            break true;
        }
        if t0.elapsed().as_secs() > 30 || child.try_wait().unwrap().is_some() {
            break false;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut reads = Vec::new();
    if running {
        for f in ["environ", "maps"] {
            let path = format!("/proc/{}/{f}", child.id());
            let o = Command::new("head")
                .args(["-c", "65536"])
                .arg(&path)
                .uid(user.uid)
                .gid(user.gid)
                .output()
                .unwrap();
            reads.push((f, o.status.success(), o.stdout));
        }
    }
    // SAFETY: kill has no memory effects; the pid is our child's, not yet reaped.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        running,
        "%post did not start: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (f, ok, data) in reads {
        assert!(
            !ok,
            "another process of uid {} read /proc/PID/{f} of the build ({} bytes{})",
            user.uid,
            data.len(),
            if String::from_utf8_lossy(&data).contains(ENV_PASSPHRASE) {
                ", the passphrase among them"
            } else {
                ""
            }
        );
    }
}

/// A real-root build's `%post` keeps root's power over the tree but not over the
/// host's kernel: no CAP_SYS_ADMIN (no mount, no sethostname), no CAP_MKNOD, and
/// `/proc/sys` and `/sys` read-only (plain uid 0 may write `kernel.core_pattern`,
/// which runs a command as host root at the next crash, without any capability).
#[test]
fn a_root_builds_scripts_cannot_reach_the_hosts_kernel() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP the real-root build: the tests do not run as root");
        return;
    }
    let busybox = require!(which("busybox"), "busybox is not installed");
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs");
    for d in ["bin", "etc", "mnt", "dev"] {
        std::fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    common::copy_executable(&busybox, &rootfs.join("bin/busybox")).unwrap();
    for a in [
        "sh", "cat", "echo", "grep", "mount", "touch", "hostname", "mknod", "chown",
    ] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(a)).unwrap();
    }
    let def = format!(
        "Bootstrap: localimage\nFrom: {}\n\n%post\n{}",
        rootfs.display(),
        r#"grep CapEff /proc/self/status
v=$(cat /proc/sys/kernel/core_pattern); echo "$v" > /proc/sys/kernel/core_pattern && echo ESCAPE-core_pattern || true
h=$(cat /proc/sys/kernel/hostname); hostname "$h" && echo ESCAPE-hostname || true
mount -t tmpfs none /mnt && echo ESCAPE-mount || true
grep -q ' /sys rw' /proc/self/mountinfo && echo ESCAPE-sys-writable || true
mknod /dev/veil-disk b 8 0 && echo ESCAPE-mknod || true
chown 1000:1000 /etc && echo CHOWN-OK
"#
    );
    std::fs::write(dir.path().join("esc.def"), def).unwrap();
    let before = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let o = veil()
        .current_dir(dir.path())
        .args(["build", "-q", "--sandbox", "out", "esc.def"])
        .env_remove("VEIL_DEBUG")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap(),
        before
    );
    let escapes: Vec<&str> = out.lines().filter(|l| l.starts_with("ESCAPE-")).collect();
    assert!(
        escapes.is_empty(),
        "%post reached the host's kernel: {escapes:?}"
    );
    assert!(
        out.contains("CHOWN-OK"),
        "root's power over the tree is kept: {out}"
    );
    let eff = out
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|h| u64::from_str_radix(h.trim(), 16).unwrap())
        .expect("CapEff");
    assert_eq!(eff & (1 << 21), 0, "CAP_SYS_ADMIN kept: {eff:x}");
}

/// An image whose /dev, /proc or /sys is a symbolic link to a host path: the build
/// fails before `%post` with a line naming the link (the old set-up followed the
/// links, mounted outside the tree and failed with a bare exit status 127), and the
/// host path never appears. As root and unprivileged.
#[test]
fn image_links_do_not_aim_the_mounts_at_the_host() {
    let user = require!(Unprivileged::new(), "user namespaces unavailable");
    let mut runs: Vec<(&str, PathBuf, Command)> = Vec::new();
    let root_dir = tempfile::tempdir().unwrap();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let mut c = veil();
        c.env_clear().env("PATH", "/usr/local/bin:/usr/bin:/bin");
        runs.push(("root", root_dir.path().join("work"), c));
    }
    runs.push(("unprivileged", user.dir.path().join("work"), user.veil()));
    let mut fails = Vec::new();
    for (who, work, mut cmd) in runs {
        std::fs::create_dir_all(&work).unwrap();
        let rootfs = require!(busybox_rootfs(&work), "busybox missing");
        let planted = work.join("planted");
        for d in ["dev", "proc", "sys"] {
            let _ = std::fs::remove_dir(rootfs.join(d));
            std::os::unix::fs::symlink(planted.join(d), rootfs.join(d)).unwrap();
        }
        std::fs::write(
            work.join("link.def"),
            "Bootstrap: localimage\nFrom: rootfs\n%post\n    true\n",
        )
        .unwrap();
        user.own(&work);
        let o = cmd
            .current_dir(&work)
            .args(["build", "-q", "--sandbox", "out", "link.def"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        if planted.exists() {
            fails.push(format!("{who}: the build created {}", planted.display()));
        }
        if o.status.success() || !err.contains("is a symbolic link") {
            fails.push(format!("{who}: expected a refusal naming the link: {err}"));
        }
    }
    assert!(fails.is_empty(), "\n  {}", fails.join("\n  "));
}
