//! The fuzzing harness for layer application: arbitrary bytes become a sequence of
//! hostile layers (dot-names, whiteouts, opaque whiteouts, symlinks and hard links
//! aimed at a host directory, modes), applied to a fresh staging root that has a host
//! directory beside it. The invariant, checked after every input: nothing outside the
//! root was created, changed or removed, whatever the layers did or failed to do.
//! Shared by the cargo-fuzz target and the corpus replay test.

#![forbid(unsafe_code)]

use std::io::Cursor;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::archive::{ApplyOptions, DirFixups, Tally, apply_layer, finish_dirs};
use super::rooted::{Rooted, remove_tree};

/// Names an entry path is made of: ordinary ones, dot-names, whiteout prefixes,
/// absolute and slash-bearing ones.
const PARTS: &[&str] = &[
    "a",
    "b",
    "..",
    ".",
    "",
    "c/d",
    "/abs",
    ".wh..",
    ".wh...",
    ".wh.a",
    ".wh..wh..opq",
    "host",
];

/// Link targets: the host directory by absolute path (filled in), by climbing, and
/// ordinary in-tree targets.
const TARGETS: &[&str] = &[
    "@HOST",
    "@HOST/canary",
    "@HOST/cdir",
    "../../../../../../../../..@HOST",
    "../host",
    "/",
    "..",
    "a",
    "a/b",
    "/a/b",
    "canary",
    "cdir/f",
];

struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn next(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
}

/// One raw ustar/GNU header: names are written as they are, with no cleaning, as a
/// hostile archive would have them.
fn header(name: &[u8], kind: u8, mode: u32, link: &[u8], size: u64) -> [u8; 512] {
    let mut h = [0u8; 512];
    let n = name.len().min(99);
    h[..n].copy_from_slice(&name[..n]);
    let octal = |dst: &mut [u8], v: u64| {
        let s = format!("{:0w$o}", v, w = dst.len() - 1);
        let b = s.as_bytes();
        let b = &b[b.len() - (dst.len() - 1)..];
        dst[..b.len()].copy_from_slice(b);
    };
    octal(&mut h[100..108], mode as u64);
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], 1_600_000_000);
    h[156] = kind;
    let l = link.len().min(99);
    h[157..157 + l].copy_from_slice(&link[..l]);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    h
}

/// Turns the input into layers (tar streams).
fn layers(data: &[u8], host: &Path) -> Vec<Vec<u8>> {
    let host = host.display().to_string();
    let mut r = Bytes(data);
    let mut out = vec![Vec::new()];
    while let Some(op) = r.next() {
        if out.len() > 4 || out.last().map_or(0, Vec::len) > 64 * 1024 {
            break;
        }
        let kind = op % 8;
        if kind == 7 {
            out.push(Vec::new());
            continue;
        }
        let mut name = Vec::new();
        for i in 0..=(op >> 3) % 3 {
            if i > 0 {
                name.push(b'/');
            }
            let p = PARTS[r.next().unwrap_or(0) as usize % PARTS.len()];
            name.extend_from_slice(p.as_bytes());
        }
        let mode = match r.next().unwrap_or(0) % 4 {
            0 => 0o755,
            1 => 0o4777,
            2 => 0o000,
            _ => 0o644,
        };
        let target =
            TARGETS[r.next().unwrap_or(0) as usize % TARGETS.len()].replace("@HOST", &host);
        let l = out.last_mut().expect("one layer at least");
        let (t, link, data): (u8, &[u8], &[u8]) = match kind {
            0 => (b'5', b"", b""),
            1 => (b'0', b"", b"data\n"),
            2 => (b'2', target.as_bytes(), b""),
            3 => (b'1', target.as_bytes(), b""),
            4 => {
                // A whiteout of a name: `.wh.` before the last part.
                let at = name.iter().rposition(|&c| c == b'/').map_or(0, |i| i + 1);
                name.splice(at..at, b".wh.".iter().copied());
                (b'0', b"", b"")
            }
            5 => {
                name.extend_from_slice(b"/.wh..wh..opq");
                (b'0', b"", b"")
            }
            _ => (b'6', b"", b""),
        };
        l.extend_from_slice(&header(&name, t, mode, link, data.len() as u64));
        if !data.is_empty() {
            let mut block = [0u8; 512];
            block[..data.len()].copy_from_slice(data);
            l.extend_from_slice(&block);
        }
    }
    for l in &mut out {
        l.extend_from_slice(&[0u8; 1024]);
    }
    out
}

/// What a directory tree holds: every path with its kind, mode, link count and
/// content or link target.
pub fn snapshot(p: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![p.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(md) = std::fs::symlink_metadata(&d) else {
            out.push(format!("{} gone", d.display()));
            continue;
        };
        let what = if md.is_file() {
            format!("{:?}", std::fs::read(&d).unwrap_or_default())
        } else if md.file_type().is_symlink() {
            format!("{:?}", std::fs::read_link(&d).unwrap_or_default())
        } else {
            String::new()
        };
        out.push(format!(
            "{} {:o} {} {} {what}",
            d.display(),
            md.mode(),
            md.nlink(),
            md.mtime()
        ));
        if md.is_dir()
            && let Ok(rd) = std::fs::read_dir(&d)
        {
            for e in rd.flatten() {
                stack.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// A scratch directory holding `root/` (the tree the layers go to) and `host/` (what
/// they must not touch).
fn scene() -> (PathBuf, PathBuf, PathBuf) {
    let base = std::env::temp_dir().join(format!(
        "veil-layer-fuzz-{}-{:08x}",
        std::process::id(),
        uuid::Uuid::new_v4().as_u128() as u32
    ));
    let root = base.join("root");
    let host = base.join("host");
    std::fs::create_dir_all(host.join("cdir")).expect("scratch directory");
    std::fs::create_dir(&root).expect("scratch directory");
    std::fs::write(host.join("canary"), b"host file\n").expect("scratch file");
    std::fs::write(host.join("cdir/f"), b"host dir file\n").expect("scratch file");
    (base, root, host)
}

/// Applies the layers `data` describes to a fresh root (both resolvers, in turn) and
/// panics if anything outside the root changed.
pub fn fuzz_one(data: &[u8]) {
    for emulate in [false, true] {
        let (base, root, host) = scene();
        let before = (snapshot(&host), names(&base));
        let _ = apply_all(&root, &host, data, emulate);
        let after = (snapshot(&host), names(&base));
        let _ = remove_tree(&base);
        assert_unchanged(&before, &after, data);
    }
}

fn apply_all(root: &Path, host: &Path, data: &[u8], emulate: bool) -> super::Result<()> {
    let mut r = Rooted::open(root)?;
    if emulate {
        r = r.emulated();
    }
    let mut dirs = DirFixups::new();
    // File data beyond this is refused, as a full disk would refuse it.
    let mut tally = Tally::with_room(64 << 20, "64 MiB".into());
    let opts = ApplyOptions::default();
    for l in layers(data, host) {
        // A layer that fails stops there, as a build would; what it did so far stays.
        if apply_layer(
            &r,
            Cursor::new(l),
            Path::new("layer"),
            &mut dirs,
            &mut tally,
            opts,
        )
        .is_err()
        {
            break;
        }
    }
    finish_dirs(&r, dirs)
}

fn names(base: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(base)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The invariant: the host side is exactly as it was.
pub fn assert_unchanged<T: PartialEq + std::fmt::Debug>(before: &T, after: &T, data: &[u8]) {
    assert_eq!(
        before, after,
        "layers {data:?} changed something outside the staging root"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_invariant_check_sees_a_write_outside_the_root() {
        let (base, _root, host) = scene();
        let before = snapshot(&host);
        std::fs::write(host.join("canary"), b"changed").unwrap();
        let after = snapshot(&host);
        let _ = remove_tree(&base);
        let r = std::panic::catch_unwind(|| assert_unchanged(&before, &after, b""));
        assert!(r.is_err(), "a changed host file must fail the check");
    }

    #[test]
    fn hostile_sequences_apply_and_leave_the_host_alone() {
        // Each byte group: op (kind | parts << 3), part index, mode, target index.
        let seeds: &[&[u8]] = &[
            // symlink a -> @HOST, then opaque whiteout under it
            &[2, 0, 0, 0, 5, 0, 0, 0],
            // dir a (4777), symlink a -> @HOST/canary
            &[0, 0, 1, 0, 2, 0, 0, 1],
            // symlink a -> @HOST, hard link b -> a/canary... (target index 1: @HOST/canary)
            &[2, 0, 0, 0, 3, 1, 0, 1],
            // whiteout of `..`, `.` and the empty name
            &[4, 2, 0, 0, 4, 3, 0, 0, 4, 4, 0, 0],
            // climbing symlink, then a file below it in the next layer
            &[2, 0, 0, 3, 7, 9, 0, 0, 0],
        ];
        for s in seeds {
            fuzz_one(s);
        }
    }
}
