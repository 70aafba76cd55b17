//! The sandbox of a build script, recorded on the fake seam over a scratch tree: the
//! order and flags of its mounts, and what it refuses.

#![forbid(unsafe_code)]

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};

use super::{DEVICES, SandboxError, enter_root};
use crate::support::sys::recording::{Call, RecordingSys};

/// An image tree as `%post` finds it: an ordinary /etc/resolv.conf, an /etc/hosts that
/// is a link, and the /proc entries a real root masks.
fn scratch_root() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().canonicalize().unwrap();
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::create_dir_all(root.join("run")).unwrap();
    fs::write(root.join("etc/resolv.conf"), "nameserver 192.0.2.1\n").unwrap();
    symlink("../run/hosts", root.join("etc/hosts")).unwrap();
    fs::create_dir_all(root.join("proc/sys")).unwrap();
    fs::write(root.join("proc/sysrq-trigger"), "").unwrap();
    fs::write(root.join("proc/kcore"), "").unwrap();
    (t, root)
}

const READ_ONLY_REMOUNT: MsFlags = MsFlags::MS_REMOUNT
    .union(MsFlags::MS_BIND)
    .union(MsFlags::MS_RDONLY)
    .union(MsFlags::MS_NOSUID)
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC);

/// Every step `enter_root` makes, as the code is meant to make them.
fn expected(root: &Path, real_root: bool) -> Vec<Call> {
    let mut c = vec![
        Call::mount(
            None,
            Path::new("/"),
            None,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None,
        ),
        Call::bind(root, root, MsFlags::MS_REC),
        Call::mount(
            Some(Path::new("proc")),
            &root.join("proc"),
            Some("proc"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            None,
        ),
    ];
    if real_root {
        c.push(Call::bind(
            Path::new("/sys"),
            &root.join("sys"),
            MsFlags::empty(),
        ));
        c.push(Call::mount(
            None,
            &root.join("sys"),
            None,
            READ_ONLY_REMOUNT,
            None,
        ));
        let ps = root.join("proc/sys");
        c.push(Call::bind(&ps, &ps, MsFlags::empty()));
        c.push(Call::mount(None, &ps, None, READ_ONLY_REMOUNT, None));
        for f in ["proc/sysrq-trigger", "proc/kcore"] {
            c.push(Call::bind(
                Path::new("/dev/null"),
                &root.join(f),
                MsFlags::empty(),
            ));
        }
    } else {
        c.push(Call::bind(
            Path::new("/sys"),
            &root.join("sys"),
            MsFlags::MS_REC,
        ));
    }
    let dev = root.join("dev");
    c.push(Call::mount(
        Some(Path::new("tmpfs")),
        &dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("mode=755,size=1m"),
    ));
    for d in DEVICES {
        let host = Path::new("/dev").join(d);
        if host.exists() {
            c.push(Call::bind(&host, &dev.join(d), MsFlags::empty()));
        }
    }
    c.push(Call::mount(
        Some(Path::new("devpts")),
        &dev.join("pts"),
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    ));
    c.push(Call::mount(
        Some(Path::new("tmpfs")),
        &dev.join("shm"),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
    ));
    // The host's resolver file over the image's regular one; the image's link to
    // /etc/hosts is left alone.
    if Path::new("/etc/resolv.conf").is_file() {
        c.push(Call::bind(
            Path::new("/etc/resolv.conf"),
            &root.join("etc/resolv.conf"),
            MsFlags::empty(),
        ));
    }
    c.extend([
        Call::Chdir(root.to_path_buf()),
        Call::PivotRoot {
            new_root: ".".into(),
            put_old: ".".into(),
        },
        Call::Umount {
            path: ".".into(),
            flags: MntFlags::MNT_DETACH,
        },
        Call::Chdir("/".into()),
    ]);
    c
}

#[test]
fn a_script_in_a_user_namespace_gets_its_own_proc_the_host_sys_and_a_minimal_dev() {
    let (_t, root) = scratch_root();
    let sys = RecordingSys::resolving_descriptors();
    enter_root(&sys, &root, false).unwrap();
    assert_eq!(sys.calls(), expected(&root, false));
    // The devices are bound onto empty files and the usual links made.
    assert!(root.join("dev/null").is_file());
    assert_eq!(
        fs::read_link(root.join("dev/fd")).unwrap(),
        Path::new("/proc/self/fd")
    );
    assert_eq!(
        fs::read_link(root.join("dev/ptmx")).unwrap(),
        Path::new("pts/ptmx")
    );
}

#[test]
fn a_script_of_real_root_gets_sys_and_proc_sys_read_only_and_the_dangerous_files_masked() {
    let (_t, root) = scratch_root();
    let sys = RecordingSys::resolving_descriptors();
    enter_root(&sys, &root, true).unwrap();
    assert_eq!(sys.calls(), expected(&root, true));
}

#[test]
fn a_link_where_a_mount_point_belongs_is_refused_before_anything_is_mounted_there() {
    let (_t, root) = scratch_root();
    fs::remove_dir_all(root.join("proc")).unwrap();
    symlink("/etc", root.join("proc")).unwrap();
    let sys = RecordingSys::resolving_descriptors();
    let err = enter_root(&sys, &root, false).unwrap_err();
    assert!(
        matches!(&err, SandboxError::LinkedMountPoint { path } if path == Path::new("/proc")),
        "{err}"
    );
    let calls = sys.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(!calls.iter().any(|c| matches!(c, Call::PivotRoot { .. })));
}

#[test]
fn links_in_the_image_never_lead_a_mount_out_of_the_tree() {
    let (_t, root) = scratch_root();
    // /etc as a link to a directory outside with a regular resolv.conf in it: the
    // host's file must not be bound over that one.
    let outside = tempfile::tempdir().unwrap();
    let outside = outside.path().canonicalize().unwrap();
    fs::write(outside.join("resolv.conf"), "").unwrap();
    fs::remove_dir_all(root.join("etc")).unwrap();
    symlink(&outside, root.join("etc")).unwrap();
    let sys = RecordingSys::resolving_descriptors();
    enter_root(&sys, &root, false).unwrap();
    for c in sys.calls() {
        if let Call::Mount { dst, .. } = c {
            assert!(
                dst == Path::new("/") || dst.starts_with(&root),
                "a mount outside the tree: {}",
                dst.display()
            );
        }
    }
}
