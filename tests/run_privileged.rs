//! The privileged fast path: as real root, the image's squashfs is mounted by the kernel
//! from an auto-clearing loop device (no user namespace, no FUSE) unless --fuse is given.
//! Skipped, with the reason printed, when the tests do not run as root or the machine
//! has no loop devices.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

fn backing_files() -> Vec<String> {
    let mut v = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/sys/block") {
        for e in rd.flatten() {
            if let Ok(f) = std::fs::read_to_string(e.path().join("loop/backing_file")) {
                v.push(f.trim().to_string());
            }
        }
    }
    v
}

#[test]
fn real_root_uses_the_kernel_squashfs_and_leaves_no_loop_device() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP {}: the tests do not run as root", module_path!());
        return;
    }
    if !Path::new("/dev/loop-control").exists() {
        eprintln!(
            "SKIP {}: no /dev/loop-control on this machine",
            module_path!()
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = require!(busybox_rootfs(dir.path()), "busybox is not installed");
    let (_sqfs, sif) = require!(
        squash_and_sif(&root, dir.path()),
        "mksquashfs or /dev/fuse missing"
    );
    let sif = sif.canonicalize().unwrap();

    let o = run_ok(veil().arg("exec").arg(&sif).args([
        "sh",
        "-c",
        "head -1 /proc/self/mounts; cat /data/hello.txt; id -u",
    ]));
    let s = stdout(&o);
    assert!(
        s.starts_with("overlay / overlay ro,"),
        "kernel squashfs under an overlay: {s}"
    );
    assert!(s.contains("hello from the image\n0\n"), "{s}");

    // While a container runs, a loop device is backed by the image; afterwards none is.
    let mut c = veil()
        .arg("exec")
        .arg(&sif)
        .args(["sleep", "30"])
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !backing_files().iter().any(|f| f == sif.to_str().unwrap()) {
        assert!(
            Instant::now() < deadline,
            "no loop device backed by the image: {:?}",
            backing_files()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    c.kill().unwrap();
    c.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while backing_files().iter().any(|f| f == sif.to_str().unwrap()) {
        assert!(
            Instant::now() < deadline,
            "the loop device outlived the container"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // --fuse forces the user-space path.
    let o = run_ok(veil().arg("exec").arg("--fuse").arg(&sif).args([
        "head",
        "-1",
        "/proc/self/mounts",
    ]));
    assert!(
        stdout(&o).starts_with("image.sif / fuse.veil ro,"),
        "{}",
        stdout(&o)
    );
}

/// Names of the device-mapper devices that exist now.
fn dm_names() -> Vec<String> {
    let mut v = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/sys/block") {
        for e in rd.flatten() {
            if let Ok(n) = std::fs::read_to_string(e.path().join("dm/name")) {
                v.push(n.trim().to_string());
            }
        }
    }
    v
}

#[test]
fn real_root_maps_encrypted_images_with_dm_crypt_and_cleans_up() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP {}: the tests do not run as root", module_path!());
        return;
    }
    let misc = std::fs::read_to_string("/proc/misc").unwrap_or_default();
    if !misc.contains("device-mapper") {
        eprintln!(
            "SKIP {}: this kernel has no device-mapper (no 'device-mapper' in /proc/misc), so the dm-crypt path cannot run here; the FUSE path is tested by run_encrypted",
            module_path!()
        );
        return;
    }
    let make = require!(
        shared_dir()
            .map(|d| d.join("interop/make-encrypted-sif"))
            .filter(|p| p.is_file()),
        "../shared/interop/make-encrypted-sif not found"
    );
    require!(which("cryptsetup"), "cryptsetup is not installed");
    let dir = tempfile::tempdir().unwrap();
    let root = require!(busybox_rootfs(dir.path()), "busybox is not installed");
    for ss in ["512", "4096"] {
        let sif = dir.path().join(format!("enc-{ss}.sif"));
        let st = std::process::Command::new(&make)
            .arg("--rootfs")
            .arg(&root)
            .arg("-o")
            .arg(&sif)
            .args([
                "--fast",
                "-q",
                "--passphrase",
                "dm-secret",
                "--sector-size",
                ss,
            ])
            .status()
            .unwrap();
        assert!(st.success());
        let before = dm_names();
        let o = run_ok(
            veil()
                .arg("exec")
                .arg(&sif)
                .args([
                    "sh",
                    "-c",
                    "grep -c ' fuse' /proc/self/mounts; cat /data/hello.txt",
                ])
                .env("VEIL_ENCRYPTION_PASSPHRASE", "dm-secret"),
        );
        let s = stdout(&o);
        assert!(s.starts_with("0\n"), "no FUSE mount with dm-crypt: {s}");
        assert!(s.contains("hello from the image"), "{s}");
        // The mapping and the loop device go with the container.
        let deadline = Instant::now() + Duration::from_secs(5);
        while (dm_names().len() > before.len()
            || backing_files().iter().any(|f| f.contains("enc-")))
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(dm_names(), before, "a dm-crypt mapping was left behind");
        assert!(
            !backing_files().iter().any(|f| f.contains("enc-")),
            "a loop device was left behind"
        );
        // --fuse forces the user-space path.
        let o = run_ok(
            veil()
                .args(["exec", "--fuse"])
                .arg(&sif)
                .args(["grep", "-c", " fuse", "/proc/self/mounts"])
                .env("VEIL_ENCRYPTION_PASSPHRASE", "dm-secret"),
        );
        assert_ne!(stdout(&o).trim(), "0");
    }
}

/// As real root, an image file that another user could change while it runs (its
/// owner, or anyone through a group or world write bit) is refused, in one line.
#[test]
fn real_root_refuses_an_image_file_other_users_can_change() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP {}: the tests do not run as root", module_path!());
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let root = require!(busybox_rootfs(dir.path()), "busybox is not installed");
    let (_sqfs, sif) = require!(
        squash_and_sif(&root, dir.path()),
        "mksquashfs or /dev/fuse missing"
    );
    let mode = |m: u32| std::fs::set_permissions(&sif, std::fs::Permissions::from_mode(m)).unwrap();
    let refused = |why: &str| {
        for extra in [&[][..], &["--fuse"][..]] {
            let err = run_err(veil().arg("exec").args(extra).arg(&sif).arg("true"));
            assert_eq!(err.trim().lines().count(), 1, "{err}");
            assert!(
                err.contains("refusing to run as root an image file that another user can change")
                    && err.contains(why),
                "{extra:?}: {err}"
            );
        }
    };
    mode(0o664);
    refused("mode 0664 lets its group or others write it");
    mode(0o646);
    refused("mode 0646");
    mode(0o644);
    std::os::unix::fs::chown(&sif, Some(65534), None).unwrap();
    refused("it belongs to uid 65534");
    std::os::unix::fs::chown(&sif, Some(0), None).unwrap();
    run_ok(veil().arg("exec").arg(&sif).arg("true"));
}

/// The descriptors `ls /proc/self/fd` lists, sorted.
fn fds_listed(out: &std::process::Output) -> Vec<u32> {
    let mut v: Vec<u32> = stdout(out)
        .split_whitespace()
        .map(|f| f.parse().unwrap())
        .collect();
    v.sort();
    v
}

/// As real root (the kernel's squashfs from a loop device, FUSE, and dm-crypt for an
/// encrypted image whose passphrase comes on descriptor 3, as `--passphrase-fd 3`),
/// nothing the caller left open and nothing the launcher opened reaches the container.
#[test]
fn no_descriptor_reaches_a_root_container() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP {}: the tests do not run as root", module_path!());
        return;
    }
    if !Path::new("/dev/loop-control").exists() {
        eprintln!("SKIP {}: no /dev/loop-control", module_path!());
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = require!(busybox_rootfs(dir.path()), "busybox is not installed");
    let (_sqfs, sif) = require!(
        squash_and_sif(&root, dir.path()),
        "mksquashfs or /dev/fuse missing"
    );
    let seven = std::fs::File::create(dir.path().join("fd-seven")).unwrap();
    for flags in [&[][..], &["--containall"], &["--fuse"]] {
        let mut c = veil();
        c.arg("exec")
            .args(flags)
            .arg(&sif)
            .args(["ls", "/proc/self/fd"]);
        inherit_fds(&mut c, &[(&seven, 7)]);
        let o = run_ok(&mut c);
        assert_eq!(fds_listed(&o), [0, 1, 2, 3], "{flags:?}");
    }
    // An encrypted image: dm-crypt where the kernel has device-mapper, else (as veil
    // falls back) FUSE decrypting in the launcher; the key descriptor either way.
    let make = shared_dir()
        .map(|d| d.join("interop/make-encrypted-sif"))
        .filter(|p| p.is_file());
    let (Some(make), Some(_)) = (make, which("cryptsetup")) else {
        eprintln!(
            "SKIP {} (encrypted part): cryptsetup or ../shared/interop/make-encrypted-sif missing",
            module_path!()
        );
        return;
    };
    let enc = dir.path().join("enc.sif");
    let st = std::process::Command::new(&make)
        .arg("--rootfs")
        .arg(&root)
        .arg("-o")
        .arg(&enc)
        .args(["--fast", "-q", "--passphrase", "fd-secret"])
        .status()
        .unwrap();
    assert!(st.success());
    let pass = dir.path().join("pass");
    std::fs::write(&pass, "fd-secret\n").unwrap();
    for flags in [&[][..], &["--pid"]] {
        let three = std::fs::File::open(&pass).unwrap();
        let mut c = veil();
        c.arg("exec")
            .args(flags)
            .args(["--passphrase-fd", "3"])
            .arg(&enc)
            .args(["ls", "/proc/self/fd"]);
        inherit_fds(&mut c, &[(&three, 3), (&seven, 7)]);
        let o = run_ok(&mut c);
        assert_eq!(fds_listed(&o), [0, 1, 2, 3], "encrypted {flags:?}");
    }
}
