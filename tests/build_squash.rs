//! The in-process squashfs writer (libsquashfs) against the real unsquashfs/mksquashfs:
//! the same listing (types, modes, owners, sizes, times, link targets), the same bytes,
//! hard links and xattrs, for every compressor.

mod common;

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::process::Command;

use common::*;
use veil::builder::squash::{self, Compression, SquashOptions};
use veil::builder::tree::{Owners, ScanOptions, Tree};

fn sample_tree(root: &Path) {
    std::fs::create_dir_all(root.join("a/b/c")).unwrap();
    std::fs::create_dir_all(root.join("empty")).unwrap();
    std::fs::write(root.join("a/small.txt"), "hello\n").unwrap();
    std::fs::write(root.join("a/b/zero"), "").unwrap();
    let big: Vec<u8> = (0..(700 * 1024u32))
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(root.join("a/b/big.bin"), &big).unwrap();
    std::fs::write(root.join("a/b/c/sparse"), vec![0u8; 300 * 1024]).unwrap();
    std::fs::write(root.join("a/b/dup.bin"), &big).unwrap();
    std::fs::hard_link(root.join("a/small.txt"), root.join("a/b/hard.txt")).unwrap();
    symlink("../small.txt", root.join("a/b/link")).unwrap();
    symlink("/nonexistent/target", root.join("dangling")).unwrap();
    std::fs::write(root.join("exec.sh"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(
        root.join("exec.sh"),
        std::fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    std::fs::set_permissions(root.join("empty"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let _ = Command::new("mkfifo").arg(root.join("fifo")).status();
    let _ = Command::new("setfattr")
        .args(["-n", "user.veil", "-v", "value"])
        .arg(root.join("a/small.txt"))
        .status();
}

fn listing(img: &Path) -> String {
    let out = run_ok(
        Command::new("unsquashfs")
            .arg("-lln")
            .arg("-d")
            .arg("")
            .arg(img),
    );
    let mut lines: Vec<String> = stdout(&out)
        .lines()
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    lines.sort();
    lines.join("\n")
}

#[test]
fn writer_matches_mksquashfs_listing_and_content() {
    require!(
        which("unsquashfs").and(which("mksquashfs")),
        "squashfs-tools missing"
    );
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    sample_tree(&root);
    let tree = Tree::scan(
        &root,
        &ScanOptions {
            owners: Owners::Keep,
            max_mtime: None,
            xattrs: true,
        },
    )
    .unwrap();
    let ours = dir.path().join("ours.sqfs");
    let stats = squash::write(
        &tree,
        &ours,
        &SquashOptions {
            threads: 2,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(stats.bytes % 4096, 0);
    assert_eq!(std::fs::metadata(&ours).unwrap().len(), stats.bytes);
    let theirs = dir.path().join("theirs.sqfs");
    run_ok(Command::new("mksquashfs").arg(&root).arg(&theirs).args([
        "-noappend",
        "-quiet",
        "-no-progress",
    ]));
    assert_eq!(listing(&ours), listing(&theirs));
    // Contents and xattrs survive extraction.
    let x = dir.path().join("x");
    run_ok(Command::new("unsquashfs").arg("-d").arg(&x).arg(&ours));
    let diff = Command::new("diff")
        .arg("-r")
        .arg("--no-dereference")
        .arg("--exclude=fifo")
        .arg(&root)
        .arg(&x)
        .output()
        .unwrap();
    assert!(
        diff.status.success(),
        "{}",
        String::from_utf8_lossy(&diff.stdout)
    );
    if which("getfattr").is_some() {
        let a = Command::new("getfattr")
            .args(["-n", "user.veil"])
            .arg(root.join("a/small.txt"))
            .output()
            .unwrap();
        if a.status.success() {
            let b = run_ok(
                Command::new("getfattr")
                    .args(["-n", "user.veil"])
                    .arg(x.join("a/small.txt")),
            );
            assert!(stdout(&b).contains("user.veil=\"value\""));
        }
    }
    // The hard link is one inode with two names.
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(x.join("a/small.txt")).unwrap().ino(),
        std::fs::metadata(x.join("a/b/hard.txt")).unwrap().ino()
    );
}

#[test]
fn every_compressor_round_trips_and_output_is_reproducible() {
    require!(which("unsquashfs"), "squashfs-tools missing");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    sample_tree(&root);
    let opts = ScanOptions {
        owners: Owners::all_root(),
        max_mtime: Some(1_000_000),
        xattrs: false,
    };
    let tree = Tree::scan(&root, &opts).unwrap();
    for c in [
        Compression::Gzip,
        Compression::Zstd,
        Compression::Xz,
        Compression::Lz4,
    ] {
        let a = dir.path().join(format!("{}.a", c.name()));
        let b = dir.path().join(format!("{}.b", c.name()));
        let so = SquashOptions {
            compression: c,
            threads: 2,
            mkfs_time: 1_000_000,
            ..Default::default()
        };
        squash::write(&tree, &a, &so).unwrap();
        squash::write(
            &tree,
            &b,
            &SquashOptions {
                threads: 1,
                ..so.clone()
            },
        )
        .unwrap();
        assert_eq!(
            std::fs::read(&a).unwrap(),
            std::fs::read(&b).unwrap(),
            "{} not reproducible",
            c.name()
        );
        // veil's own reader reads every compressor.
        let fs = veil_fusefs::squashfs::Squashfs::open(std::fs::read(&a).unwrap()).unwrap();
        let attr = fs.lookup_path(b"a/b/big.bin").unwrap();
        let mut buf = vec![0u8; 700 * 1024];
        assert_eq!(fs.read(attr.id, 0, &mut buf).unwrap(), buf.len());
        assert_eq!(buf, std::fs::read(root.join("a/b/big.bin")).unwrap());
        if c == Compression::Lz4 {
            // unsquashfs 4.5.1 rejects the id table of lz4 images libsquashfs 1.2 writes
            // (gensquashfs's too), so lz4 is checked with veil's reader only.
            continue;
        }
        let s = stdout(&run_ok(Command::new("unsquashfs").arg("-s").arg(&a)));
        assert!(s.contains(&format!("Compression {}", c.name())), "{s}");
        let l = listing(&a);
        assert!(l.contains("0/0"), "{l}");
        assert!(
            !l.lines().any(|x| !x.contains(" 0/0 ")),
            "owners not all root: {l}"
        );
    }
}
