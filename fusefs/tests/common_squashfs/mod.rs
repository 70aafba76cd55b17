//! Shared by the squashfs integration tests: build trees and images with the real
//! squashfs-tools, and read back what `unsquashfs` lists and extracts.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use veil_fusefs::squashfs::{Attr, FileKind, Squashfs};

/// A temporary directory on tmpfs when there is one: reading the holes of a
/// 4 GiB sparse file costs 11 s on ext4 here and 0.3 s on tmpfs.
pub fn fast_tempdir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(t) = tempfile::tempdir_in(shm)
    {
        return t;
    }
    tempfile::tempdir().unwrap()
}

/// Runs a command, panicking with its output on failure.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .env("TZ", "UTC")
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// True when the tools the tests need are present; prints why not otherwise.
pub fn have_tools(tools: &[&str]) -> bool {
    for t in tools {
        if Command::new(t).arg("-version").output().is_err()
            && Command::new(t).arg("--version").output().is_err()
        {
            eprintln!("SKIP: `{t}` is not installed (apt-get install squashfs-tools attr)");
            return false;
        }
    }
    true
}

pub fn is_root() -> bool {
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// Compressors of this mksquashfs build (its -help lists them).
pub fn compressors() -> Vec<String> {
    let out = Command::new("mksquashfs")
        .arg("-help")
        .output()
        .expect("mksquashfs");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    ["gzip", "lzo", "lz4", "xz", "zstd", "lzma"]
        .iter()
        .filter(|c| {
            text.lines()
                .any(|l| l.trim().trim_end_matches(" (default)") == **c)
        })
        .map(|c| c.to_string())
        .collect()
}

pub fn mksquashfs(src: &Path, img: &Path, args: &[&str]) {
    let mut c = Command::new("mksquashfs");
    c.arg(src)
        .arg(img)
        .args(["-noappend", "-no-progress", "-processors", "2"])
        .args(args);
    run(&mut c);
}

fn set_mtime(p: &Path, secs: i64) {
    run(Command::new("touch")
        .arg("-h")
        .arg("-d")
        .arg(format!("@{secs}"))
        .arg(p));
}

fn setfattr(p: &Path, name: &str, value: &str) {
    run(Command::new("setfattr")
        .arg("-h")
        .arg("-n")
        .arg(name)
        .arg("-v")
        .arg(value)
        .arg(p));
}

/// A small deterministic pseudo-random generator (xorshift) for file contents.
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// A tree with every node type, sparse files, hard links, xattrs in all
/// namespaces (some repeated so mksquashfs stores them out of line), a
/// 10,000-entry directory, long names and symlink targets; with `huge`, a sparse
/// file over 4 GiB.
pub fn synthetic_tree(root: &Path, huge: bool) {
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    let d = |p: &str| {
        let p = root.join(p);
        fs::create_dir_all(&p).unwrap();
        p
    };
    let w = |p: &str, data: &[u8]| fs::write(root.join(p), data).unwrap();
    d("sub/deeper/deepest");
    w("empty", b"");
    w("one", b"x");
    w("sub/small.txt", b"hello squashfs\n");
    let text: Vec<u8> = (0..300_000)
        .flat_map(|i| format!("line {i} of some text\n").into_bytes())
        .collect();
    w("sub/text", &text);
    w("sub/random", &rng.bytes(1_000_000)); // incompressible: stored blocks
    w("exact_block", &rng.bytes(131_072));
    w("block_plus_one", &rng.bytes(131_073));
    w("sub/deeper/dup1", &text[..200_000]);
    w("sub/deeper/dup2", &text[..200_000]);
    // Sparse: data, a hole of several blocks, data, hole at the end.
    {
        let f = fs::File::create(root.join("sparse")).unwrap();
        use std::os::unix::fs::FileExt;
        f.write_all_at(&rng.bytes(5000), 0).unwrap();
        f.write_all_at(&rng.bytes(70_000), 1_000_000).unwrap();
        f.set_len(3_000_000).unwrap();
    }
    if huge {
        let f = fs::File::create(root.join("huge_sparse")).unwrap();
        use std::os::unix::fs::FileExt;
        f.write_all_at(b"start", 0).unwrap();
        f.write_all_at(&rng.bytes(300_000), (4u64 << 30) - 100_000)
            .unwrap();
        f.write_all_at(b"the end", (4u64 << 30) + 1_000_000)
            .unwrap();
    }
    fs::hard_link(root.join("sub/small.txt"), root.join("hardlink")).unwrap();
    fs::hard_link(root.join("sub/random"), root.join("sub/deeper/hardlink2")).unwrap();
    let long_name = "n".repeat(255);
    w(&format!("sub/{long_name}"), b"long name");
    std::os::unix::fs::symlink("sub/small.txt", root.join("link")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/absolute", root.join("sub/abs_link")).unwrap();
    let long_target = "t/".repeat(2000) + "end";
    std::os::unix::fs::symlink(&long_target, root.join("long_link")).unwrap();
    std::os::unix::fs::symlink(&long_name, root.join("sub/link_to_long")).unwrap();
    run(Command::new("mkfifo").arg(root.join("fifo")));
    let sock = std::os::unix::net::UnixListener::bind(root.join("socket")).unwrap();
    drop(sock);
    run(Command::new("mknod")
        .arg(root.join("chardev"))
        .args(["c", "1", "3"]));
    run(Command::new("mknod")
        .arg(root.join("blockdev"))
        .args(["b", "8", "1"]));
    run(Command::new("mknod")
        .arg(root.join("bigminor"))
        .args(["c", "250", "70000"]));
    fs::set_permissions(
        root.join("sub/small.txt"),
        fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    fs::set_permissions(root.join("one"), fs::Permissions::from_mode(0o2640)).unwrap();
    fs::set_permissions(root.join("sub/deeper"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::set_permissions(root.join("empty"), fs::Permissions::from_mode(0o000)).unwrap();
    std::os::unix::fs::lchown(root.join("one"), Some(1000), Some(1001)).unwrap();
    std::os::unix::fs::lchown(root.join("sub/text"), Some(65534), Some(100)).unwrap();
    std::os::unix::fs::lchown(root.join("link"), Some(4242), Some(4343)).unwrap();
    // xattrs: every namespace, on files, dirs and a symlink; a large value repeated.
    let big = "v".repeat(3000);
    setfattr(&root.join("one"), "user.comment", "first");
    setfattr(&root.join("one"), "user.empty", "");
    setfattr(&root.join("one"), "trusted.secret", "t-value");
    setfattr(&root.join("sub"), "security.label", "sec");
    setfattr(&root.join("sub/text"), "user.big", &big);
    setfattr(&root.join("sub/random"), "user.big", &big);
    setfattr(&root.join("exact_block"), "user.big", &big);
    setfattr(&root.join("link"), "trusted.on_link", "yes");
    let many = d("many");
    for i in 0..10_000 {
        fs::write(
            many.join(format!("entry_{i:05}_{}", "x".repeat(i % 40))),
            (i as u32).to_le_bytes(),
        )
        .unwrap();
    }
    // Distinct mtimes, set last (writing into a directory changes its mtime).
    set_mtime(&root.join("one"), 1_000_000_000);
    set_mtime(&root.join("link"), 1_234_567_890);
    set_mtime(&root.join("sub/deeper"), 86_400 * 365);
    set_mtime(root, 1_700_000_000);
}

/// A copy of real files from this machine: part of /usr/share/doc and perl-base.
pub fn real_tree(root: &Path) -> bool {
    let mut srcs: Vec<PathBuf> = fs::read_dir("/usr/share/doc")
        .map(|r| r.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    srcs.retain(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n < "f")
    });
    srcs.sort();
    let perl = PathBuf::from("/usr/lib/x86_64-linux-gnu/perl-base");
    if perl.exists() {
        srcs.push(perl);
    }
    if srcs.is_empty() {
        eprintln!("SKIP: no /usr/share/doc on this machine for the real-tree test");
        return false;
    }
    fs::create_dir_all(root).unwrap();
    let mut c = Command::new("cp");
    c.arg("-a").args(&srcs).arg(root);
    run(&mut c);
    true
}

/// `ls -l` style mode string, as unsquashfs prints it.
pub fn modestr(a: &Attr) -> String {
    let t = match a.kind {
        FileKind::Directory => 'd',
        FileKind::File => '-',
        FileKind::Symlink => 'l',
        FileKind::CharDevice => 'c',
        FileKind::BlockDevice => 'b',
        FileKind::Fifo => 'p',
        FileKind::Socket => 's',
    };
    let p = u32::from(a.perm);
    let bit = |m: u32, c: char| if p & m != 0 { c } else { '-' };
    let special = |x: u32, s: u32, lower: char, upper: char| match (p & x != 0, p & s != 0) {
        (true, true) => lower,
        (false, true) => upper,
        (true, false) => 'x',
        (false, false) => '-',
    };
    let mut out = String::new();
    out.push(t);
    out.push(bit(0o400, 'r'));
    out.push(bit(0o200, 'w'));
    out.push(special(0o100, 0o4000, 's', 'S'));
    out.push(bit(0o040, 'r'));
    out.push(bit(0o020, 'w'));
    out.push(special(0o010, 0o2000, 's', 'S'));
    out.push(bit(0o004, 'r'));
    out.push(bit(0o002, 'w'));
    out.push(special(0o001, 0o1000, 't', 'T'));
    out
}

/// UTC "YYYY-MM-DD HH:MM" of a Unix time.
pub fn utc_minute(t: u32) -> String {
    let t = i64::from(t);
    let (days, secs) = (t.div_euclid(86_400), t.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y}-{m:02}-{d:02} {:02}:{:02}",
        secs / 3600,
        secs % 3600 / 60
    )
}

/// One line of `unsquashfs -lln`, split into comparable fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub mode: String,
    pub owner: String,
    pub size_or_dev: String,
    pub time: String,
    pub target: Option<String>,
}

/// Parses `unsquashfs -lln` output into path (relative, root = "") -> fields.
pub fn parse_lln(out: &str) -> BTreeMap<String, Listed> {
    let mut m = BTreeMap::new();
    for line in out.lines() {
        let toks: Vec<(usize, &str)> = line
            .split(' ')
            .scan(0usize, |pos, t| {
                let start = *pos;
                *pos += t.len() + 1;
                Some((start, t))
            })
            .filter(|(_, t)| !t.is_empty())
            .collect();
        if toks.len() < 5
            || !toks[0].1.starts_with(['d', '-', 'l', 'c', 'b', 'p', 's'])
            || !toks[1].1.contains('/')
        {
            continue;
        }
        // Find the date token (YYYY-MM-DD); everything between owner and it is size/dev.
        let Some(di) = toks
            .iter()
            .skip(2)
            .position(|(_, t)| t.len() == 10 && t.as_bytes()[4] == b'-' && t.as_bytes()[7] == b'-')
            .map(|i| i + 2)
        else {
            continue;
        };
        let size: String = toks[2..di]
            .iter()
            .map(|(_, t)| *t)
            .collect::<Vec<_>>()
            .join("");
        let (tpos, ttok) = toks[di + 1];
        let rest = &line[tpos + ttok.len() + 1..];
        let (path, target) = if toks[0].1.starts_with('l') {
            let (p, t) = rest.split_once(" -> ").expect("symlink line");
            (p, Some(t.to_string()))
        } else {
            (rest, None)
        };
        let path = path
            .strip_prefix("squashfs-root")
            .unwrap_or(path)
            .trim_start_matches('/')
            .to_string();
        m.insert(
            path,
            Listed {
                mode: toks[0].1.to_string(),
                owner: toks[1].1.to_string(),
                size_or_dev: size,
                time: format!("{} {}", toks[di].1, ttok),
                target,
            },
        );
    }
    m
}

/// The same fields for a node read by veil's reader.
pub fn listed<R: veil_fusefs::source::ReadAt>(fs: &Squashfs<R>, a: &Attr) -> Listed {
    let size_or_dev = match a.kind {
        // unsquashfs prints the raw device field as "data >> 8, data & 0xff".
        FileKind::CharDevice | FileKind::BlockDevice => {
            format!("{},{}", a.rdev >> 8, a.rdev & 0xff)
        }
        _ => a.size.to_string(),
    };
    Listed {
        mode: modestr(a),
        owner: format!("{}/{}", a.uid, a.gid),
        size_or_dev,
        time: utc_minute(a.mtime),
        target: (a.kind == FileKind::Symlink)
            .then(|| String::from_utf8_lossy(&fs.readlink(a.id).unwrap()).into_owned()),
    }
}

/// `getfattr` dump of a tree: path (relative) -> name -> hex value.
pub fn getfattr_tree(root: &Path) -> BTreeMap<String, BTreeMap<String, String>> {
    let out = run(Command::new("getfattr")
        .args(["-R", "-h", "-d", "-m", "-", "-e", "hex", "--absolute-names"])
        .arg(root));
    let mut m: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut cur = None;
    let prefix = root.to_string_lossy().into_owned();
    for line in out.lines() {
        if let Some(p) = line.strip_prefix("# file: ") {
            cur = Some(
                p.strip_prefix(&prefix)
                    .unwrap_or(p)
                    .trim_start_matches('/')
                    .to_string(),
            );
        } else if let (Some(p), Some((n, v))) = (&cur, line.split_once('=')) {
            m.entry(p.clone())
                .or_default()
                .insert(n.to_string(), v.trim_start_matches("0x").to_string());
        } else if let (Some(p), false) = (&cur, line.is_empty()) {
            // A name with an empty value prints without "=".
            m.entry(p.clone())
                .or_default()
                .insert(line.to_string(), String::new());
        }
    }
    m
}

pub fn hex(v: &[u8]) -> String {
    v.iter().map(|b| format!("{b:02x}")).collect()
}
