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
