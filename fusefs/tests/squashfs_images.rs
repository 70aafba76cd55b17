//! veil's squashfs reader against the real squashfs-tools: for every compressor,
//! images made by mksquashfs from a synthetic tree (every node type, sparse and
//! huge files, hard links, xattrs, a 10,000-entry directory) and from real files
//! of this machine must list, stat and read exactly as unsquashfs lists and
//! extracts them.

mod common_squashfs;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::process::Command;

use common_squashfs::*;
use veil_fusefs::source::FileSource;
use veil_fusefs::squashfs::{Attr, Error, FileKind, InodeId, Squashfs};

/// A tree built for one test, removed when the test ends (each test builds its
/// own: a shared static would never be dropped and would leak into /dev/shm).
struct Tree {
    dir: tempfile::TempDir,
}

impl Tree {
    fn synthetic(huge: bool) -> Self {
        let dir = fast_tempdir();
        synthetic_tree(&dir.path().join("tree"), huge);
        Self { dir }
    }

    fn real() -> Option<Self> {
        let dir = fast_tempdir();
        real_tree(&dir.path().join("tree")).then_some(Self { dir })
    }

    fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("tree")
    }
}

fn ready() -> bool {
    if !have_tools(&["mksquashfs", "unsquashfs", "getfattr", "setfattr"]) {
        return false;
    }
    if !is_root() {
        eprintln!(
            "SKIP: these tests need root (mknod, chown, trusted.* xattrs, unsquashfs extraction of owners)"
        );
        return false;
    }
    true
}

/// Builds an image of `tree`, then checks veil's view of it against unsquashfs.
fn check_image(tree: &Path, args: &[&str]) {
    let work = fast_tempdir();
    let img = work.path().join("image.sqfs");
    let t0 = std::time::Instant::now();
    mksquashfs(tree, &img, args);
    let t1 = t0.elapsed();
    let listing = parse_lln(&run(Command::new("unsquashfs").arg("-lln").arg(&img)));
    let out = work.path().join("out");
    run(Command::new("unsquashfs")
        .arg("-no-progress")
        .arg("-d")
        .arg(&out)
        .arg(&img));
    let xattrs = getfattr_tree(&out);
    let t2 = t0.elapsed();

    let fs = Squashfs::open(FileSource::open(&img).unwrap()).unwrap();
    let mut nodes: BTreeMap<String, Attr> = BTreeMap::new();
    nodes.insert(String::new(), fs.getattr(fs.root()).unwrap());
    fs.walk(|p, a| {
        let p = String::from_utf8(p.to_vec()).unwrap();
        assert!(nodes.insert(p, a.clone()).is_none());
        Ok(())
    })
    .unwrap();

    // The listing: same paths, types, modes, owners, sizes, times, targets, devices.
    let ours: BTreeMap<String, Listed> = nodes
        .iter()
        .map(|(p, a)| (p.clone(), listed(&fs, a)))
        .collect();
    assert_eq!(
        ours.len(),
        listing.len(),
        "node count differs from unsquashfs -lln"
    );
    for (p, theirs) in &listing {
        assert_eq!(ours.get(p), Some(theirs), "listing of {p:?}");
    }

    let mut buf = vec![0u8; 4 << 20];
    let mut ext = vec![0u8; 4 << 20];
    let mut bytes = 0u64;
    for (p, a) in &nodes {
        let path = out.join(p);
        // Owners, exact mtimes, link counts, devices and contents against the extraction.
        let Ok(m) = fs::symlink_metadata(&path) else {
            assert_eq!(a.kind, FileKind::Socket, "{p:?} not extracted");
            continue;
        };
        assert_eq!(m.mode(), a.mode(), "mode of {p:?}");
        assert_eq!((m.uid(), m.gid()), (a.uid, a.gid), "owner of {p:?}");
        if a.kind != FileKind::Symlink {
            assert_eq!(m.mtime(), i64::from(a.mtime), "mtime of {p:?}");
        }
        if a.kind == FileKind::File || a.kind == FileKind::Directory {
            assert_eq!(m.nlink(), u64::from(a.nlink), "link count of {p:?}");
        }
        if m.file_type().is_char_device() || m.file_type().is_block_device() {
            assert_eq!(m.rdev(), u64::from(a.rdev), "rdev of {p:?}");
        }
        if a.kind == FileKind::Symlink {
            assert_eq!(
                fs.readlink(a.id).unwrap(),
                fs::read_link(&path)
                    .unwrap()
                    .into_os_string()
                    .into_encoded_bytes()
            );
        }
        if a.kind == FileKind::File {
            assert_eq!(m.size(), a.size, "size of {p:?}");
            let f = fs::File::open(&path).unwrap();
            let mut off = 0u64;
            while off < a.size {
                let n = fs.read(a.id, off, &mut buf).unwrap();
                assert!(n > 0);
                std::os::unix::fs::FileExt::read_exact_at(&f, &mut ext[..n], off).unwrap();
                assert!(buf[..n] == ext[..n], "bytes of {p:?} at {off}");
                off += n as u64;
                bytes += n as u64;
            }
            assert_eq!(fs.read(a.id, a.size, &mut buf).unwrap(), 0);
        }
        let mut ours: BTreeMap<String, String> = BTreeMap::new();
        for (n, v) in fs.xattrs(a.id).unwrap() {
            ours.insert(String::from_utf8(n).unwrap(), hex(&v));
        }
        assert_eq!(
            &ours,
            xattrs.get(p).unwrap_or(&BTreeMap::new()),
            "xattrs of {p:?}"
        );
        for (n, v) in &ours {
            assert_eq!(hex(&fs.getxattr(a.id, n.as_bytes()).unwrap()), *v);
        }
        assert!(matches!(
            fs.getxattr(a.id, b"user.absent"),
            Err(Error::NoXattr)
        ));
        // Every path resolves by lookup to the node the walk found.
        assert_eq!(
            fs.lookup_path(p.as_bytes()).unwrap().id,
            a.id,
            "lookup of {p:?}"
        );
    }
    let s = fs.statfs();
    assert_eq!(s.inodes as usize, nodes.len() - hardlinks(&nodes));
    eprintln!(
        "{args:?}: {} nodes, {bytes} bytes compared; mksquashfs {t1:?}, unsquashfs {:?}, veil {:?}",
        nodes.len(),
        t2 - t1,
        t0.elapsed() - t2
    );
}

/// Number of extra names for already-counted inodes.
fn hardlinks(nodes: &BTreeMap<String, Attr>) -> usize {
    let mut seen = std::collections::HashSet::new();
    nodes.values().filter(|a| !seen.insert(a.id)).count()
}

/// The synthetic tree's special cases, checked directly.
fn check_synthetic_details(tree: &Path, args: &[&str]) {
    let work = fast_tempdir();
    let img = work.path().join("image.sqfs");
    mksquashfs(tree, &img, args);
    let fs = Squashfs::open(FileSource::open(&img).unwrap()).unwrap();
    let many = fs.lookup_path(b"many").unwrap();
    let all: Vec<_> = fs
        .readdir(many.id, 0)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(all.len(), 10_000);
    // Resuming from every 37th cookie yields exactly the rest, in order.
    let mut resumed = Vec::new();
    let mut cookie = 0;
    loop {
        let chunk: Vec<_> = fs
            .readdir(many.id, cookie)
            .unwrap()
            .take(37)
            .collect::<Result<_, _>>()
            .unwrap();
        let Some(last) = chunk.last() else { break };
        cookie = last.cookie;
        resumed.extend(chunk);
    }
    assert_eq!(resumed, all);
    // Lookups go through the directory index: every name, and names that are not there.
    for e in &all {
        assert_eq!(fs.lookup(many.id, &e.name).unwrap().id, e.id);
    }
    for missing in [
        &b"a"[..],
        b"entry_00000",
        b"entry_99999",
        b"zzz",
        b"entry_05000_y",
        b"entry_05001_",
    ] {
        assert!(matches!(fs.lookup(many.id, missing), Err(Error::NotFound)));
    }
    let huge = fs.lookup_path(b"huge_sparse").unwrap();
    assert_eq!(huge.size, (4u64 << 30) + 1_000_007);
    let mut b = [0u8; 7];
    fs.read(huge.id, (4u64 << 30) + 1_000_000, &mut b).unwrap();
    assert_eq!(&b, b"the end");
    let hl = fs.lookup_path(b"hardlink").unwrap();
    assert_eq!(hl.id, fs.lookup_path(b"sub/small.txt").unwrap().id);
    assert_eq!(hl.nlink, 2);
    assert!(matches!(fs.read(many.id, 0, &mut b), Err(Error::NotFile)));
    assert!(matches!(fs.readlink(hl.id), Err(Error::NotSymlink)));
    assert!(matches!(fs.lookup(hl.id, b"x"), Err(Error::NotDir)));
    assert!(matches!(fs.getattr(InodeId(0)), Err(Error::BadInodeId(0))));
    assert!(fs.getattr(InodeId(u64::MAX)).is_err());
    let dev = fs.lookup_path(b"bigminor").unwrap();
    assert_eq!((dev.rdev_major(), dev.rdev_minor()), (250, 70000));
}

/// Checks the synthetic tree (with the sparse file over 4 GiB when `huge`) and the
/// real tree with one compressor.
fn for_compressor(comp: &str, huge: bool) -> Option<Tree> {
    if !ready() {
        return None;
    }
    if !compressors().iter().any(|c| c == comp) {
        eprintln!("SKIP: this mksquashfs has no {comp} support");
        return None;
    }
    let tree = Tree::synthetic(huge);
    check_image(&tree.path(), &["-comp", comp]);
    if let Some(real) = Tree::real() {
        check_image(&real.path(), &["-comp", comp]);
    }
    Some(tree)
}

/// mksquashfs spends ~10 s scanning the sparse file over 4 GiB: only gzip has it.
#[test]
fn gzip() {
    if let Some(tree) = for_compressor("gzip", true) {
        check_synthetic_details(&tree.path(), &["-comp", "gzip"]);
    }
}

#[test]
fn zstd() {
    for_compressor("zstd", false);
}

#[test]
fn xz() {
    for_compressor("xz", false);
}

#[test]
fn lz4() {
    for_compressor("lz4", false);
}

#[test]
fn lzo() {
    for_compressor("lzo", false);
}

/// Uncompressed inodes, data, fragments and xattrs; small blocks; no fragments;
/// no exports: the flags change the layout the reader must follow.
#[test]
fn uncompressed_and_layout_variants() {
    if !ready() {
        return;
    }
    let tree = Tree::synthetic(false);
    let t = tree.path();
    check_image(&t, &["-noI", "-noD", "-noF", "-noX", "-b", "4096"]);
    check_image(
        &t,
        &["-comp", "zstd", "-no-fragments", "-no-exports", "-b", "1M"],
    );
    check_image(
        &t,
        &[
            "-comp",
            "lz4",
            "-Xhc",
            "-always-use-fragments",
            "-no-duplicates",
        ],
    );
}
