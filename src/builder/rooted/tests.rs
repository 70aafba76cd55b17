//! The rooted writer against planted links, bad names and read-only trees, with
//! openat2 and with the emulated resolver.

#![forbid(unsafe_code)]

use super::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};

/// A host directory beside the root, with a file and a subdirectory, and the
/// root itself; returns (tempdir, root path, host path).
fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let host = t.path().join("host");
    std::fs::create_dir_all(host.join("sub")).unwrap();
    std::fs::write(host.join("file"), b"host\n").unwrap();
    std::fs::set_permissions(host.join("file"), std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::create_dir(&root).unwrap();
    // Every way a planted link can point at the host directory.
    symlink(&host, root.join("abs")).unwrap();
    symlink("../host", root.join("rel")).unwrap();
    symlink("../../../../../../..", root.join("up")).unwrap();
    symlink(host.join("file"), root.join("filelink")).unwrap();
    (t, root, host)
}

fn snapshot(p: &Path) -> Vec<(PathBuf, u32, u64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![p.to_path_buf()];
    while let Some(d) = stack.pop() {
        let md = std::fs::symlink_metadata(&d).unwrap();
        let data = if md.is_file() {
            std::fs::read(&d).unwrap()
        } else {
            Vec::new()
        };
        out.push((d.clone(), md.mode(), md.mtime() as u64, data));
        if md.is_dir() {
            for e in std::fs::read_dir(&d).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
    out.sort();
    out
}

fn both(test: impl Fn(&Rooted, &Path, &Path)) {
    for emulate in [false, true] {
        let (_t, root, host) = setup();
        let before = snapshot(&host);
        let mut r = Rooted::open(&root).unwrap();
        if emulate {
            r = r.emulated();
        }
        test(&r, &root, &host);
        assert_eq!(
            snapshot(&host),
            before,
            "host tree changed (emulate={emulate})"
        );
    }
}

#[test]
fn writes_through_planted_links_land_inside_the_root() {
    both(|r, root, host| {
        let mut made = Vec::new();
        // `abs` and `rel` name ROOT/<host path> and ROOT/host, which do not exist:
        // writes through them fail; `up` names the root itself: they land there.
        for l in ["abs", "rel", "up"] {
            let p = |n: &str| Path::new(l).join(n);
            let results = [
                r.create_file(&p("new"), false, &mut made)
                    .and_then(|mut f| {
                        std::io::Write::write_all(&mut f, b"x")
                            .map_err(|e| BuildError::io(&p("new"), e))
                    }),
                r.mkdir(&p("dir"), &mut made).map(|_| ()),
                r.symlink(&p("sl"), OsStr::new("/etc"), &mut made),
                r.set_meta(
                    &p("sub"),
                    Meta {
                        owner: None,
                        mode: Some(0o4777),
                        mtime: Some(1),
                    },
                ),
                r.remove(&p("file")),
                r.clear_dir(Path::new(l), |n| {
                    ["abs", "rel", "up", "filelink"].iter().any(|k| n == *k)
                }),
            ];
            if l == "up" {
                for (i, res) in results.iter().enumerate() {
                    assert!(res.is_ok() || i == 3, "{l} {i}: {res:?}");
                }
            }
        }
        assert!(!root.join("new").exists(), "cleared again by clear_dir");
        // A final symlink is replaced or changed itself, never followed.
        r.set_meta(
            Path::new("filelink"),
            Meta {
                owner: None,
                mode: Some(0o777),
                mtime: Some(5),
            },
        )
        .unwrap();
        r.write_file(Path::new("filelink"), b"replaced", 0o644)
            .unwrap();
        assert_eq!(std::fs::read(root.join("filelink")).unwrap(), b"replaced");
        assert!(!host.join("new").exists());
    });
}

#[test]
fn hard_links_and_reads_resolve_inside_the_root() {
    both(|r, root, _host| {
        let mut made = Vec::new();
        // The host file is not reachable as a link target or for reading.
        assert!(
            r.hard_link(Path::new("abs/file"), Path::new("stolen"), &mut made)
                .is_err()
        );
        assert!(
            r.hard_link(Path::new("rel/file"), Path::new("stolen"), &mut made)
                .is_err()
        );
        assert!(r.read(Path::new("abs/file")).unwrap().is_none());
        assert!(r.read(Path::new("filelink")).unwrap().is_none());
        assert!(!root.join("stolen").exists());
        // Inside the root, both work.
        r.write_file(Path::new("a"), b"inside", 0o600).unwrap();
        r.hard_link(Path::new("a"), Path::new("b"), &mut made)
            .unwrap();
        assert_eq!(r.read(Path::new("up/b")).unwrap().unwrap(), b"inside");
    });
}

#[test]
fn names_that_are_not_one_entry_are_refused() {
    both(|r, root, _host| {
        for bad in ["..", ".", "", "a/.."] {
            assert!(
                r.remove(Path::new(bad)).is_err() || bad == "a/..",
                "{bad:?}"
            );
        }
        assert!(check_name(OsStr::new("..")).is_err());
        assert!(check_name(OsStr::new(".")).is_err());
        assert!(check_name(OsStr::new("")).is_err());
        assert!(check_name(OsStr::new("a/b")).is_err());
        assert!(check_name(OsStr::new("a")).is_ok());
        // `..` in a parent stops at the root.
        let mut made = Vec::new();
        r.create_file(Path::new("../../../../escaped"), false, &mut made)
            .unwrap();
        assert!(root.join("escaped").exists());
        assert!(!root.parent().unwrap().join("escaped").exists());
    });
}

#[test]
fn owner_is_set_before_mode_so_setuid_bits_stay() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP builder::rooted: chown to another user needs root");
        return;
    }
    both(|r, root, _host| {
        r.write_file(Path::new("su"), b"#!/bin/sh\n", 0o644)
            .unwrap();
        r.set_meta(
            Path::new("su"),
            Meta {
                owner: Some((1000, 1000)),
                mode: Some(0o4755),
                mtime: Some(7),
            },
        )
        .unwrap();
        let md = std::fs::symlink_metadata(root.join("su")).unwrap();
        assert_eq!(
            (md.uid(), md.gid(), md.mode() & 0o7777, md.mtime()),
            (1000, 1000, 0o4755, 7)
        );
    });
}

#[test]
fn remove_tree_removes_read_only_trees_and_not_what_links_name() {
    let (_t, root, host) = setup();
    let before = snapshot(&host);
    std::fs::create_dir_all(root.join("ro/inner")).unwrap();
    std::fs::write(root.join("ro/inner/f"), b"x").unwrap();
    std::fs::set_permissions(
        root.join("ro/inner"),
        std::fs::Permissions::from_mode(0o500),
    )
    .unwrap();
    std::fs::set_permissions(root.join("ro"), std::fs::Permissions::from_mode(0o000)).unwrap();
    remove_tree(&root).unwrap();
    assert!(!root.exists());
    assert_eq!(snapshot(&host), before);
}
