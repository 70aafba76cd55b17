//! File-tree operations on the staging directory: copying a host tree in (sandbox
//! sources, `%files`), extracting a squashfs, and fixing permissions afterwards. Owners
//! are kept only when running as root; an unprivileged build owns everything it writes,
//! and the squashfs writer maps the caller back to root.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::fs;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, AtFlags, OFlag, openat, readlinkat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, fstatat};

use veil_fusefs::source::ReadAt;
use veil_fusefs::squashfs::{FileKind, Squashfs};

use super::error::{BuildError, Result};
use super::rooted::{Meta, Rooted};

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The owner a copied host file gets. In a namespace with subordinate ids, host owners
/// outside the map read as the kernel's overflow ids; a tree made by root on the host
/// (debootstrap under sudo, say) would then become nobody's, so those become root's, as
/// they do without subordinate ids. (A file truly owned by the overflow id inside the
/// map cannot be told apart and becomes root's too.)
fn host_owner(uid: u32, gid: u32) -> (u32, u32) {
    if !super::subids::active() {
        return (uid, gid);
    }
    let overflow = |f: &str| {
        fs::read_to_string(format!("/proc/sys/kernel/{f}"))
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .unwrap_or(65534)
    };
    let fix = |id: u32, over: u32| if id == over { 0 } else { id };
    (
        fix(uid, overflow("overflowuid")),
        fix(gid, overflow("overflowgid")),
    )
}

/// Device nodes need real root: root of a user namespace may not make them.
fn can_mknod() -> bool {
    is_root() && !super::subids::active()
}

/// Counts what an unprivileged copy had to leave out.
#[derive(Debug, Default, Clone, Copy)]
pub struct Skipped {
    pub devices: u64,
}

/// Copies `src` (a host file, symlink or directory tree, never followed) to `dst` inside
/// the tree `root` (the root itself for an empty `dst`), preserving modes, times,
/// symlinks and hard links (and owners, as root). Device nodes are made only when
/// `devices` (real root, asked for); otherwise they are counted as left out.
///
/// The source is walked by descriptors: each name is opened relative to its parent's
/// descriptor with `O_NOFOLLOW`, and what is copied is what that descriptor shows. A
/// file swapped for a symlink while the build runs (by someone else who can write in
/// the source tree) is refused instead of followed to whatever it points at.
pub fn copy_tree(src: &Path, root: &Rooted, dst: &Path, devices: bool) -> Result<Skipped> {
    let mut c = Copy {
        root,
        links: HashMap::new(),
        skipped: Skipped::default(),
        dirs: Vec::new(),
        made: Vec::new(),
        devices: devices && can_mknod(),
    };
    let at = Source {
        dir: None,
        name: cstr(src.as_os_str().as_bytes(), src)?,
        path: src,
    };
    c.one(&at, dst)?;
    for (d, meta) in c.dirs.into_iter().rev() {
        root.set_meta(&d, meta)?;
    }
    Ok(c.skipped)
}

fn cstr(b: &[u8], path: &Path) -> Result<CString> {
    CString::new(b).map_err(|_| BuildError::source(path, "NUL in a name"))
}

/// One node of the source tree: a name relative to its parent directory's descriptor
/// (the current directory for the top), and the path it has for messages.
struct Source<'a> {
    dir: Option<BorrowedFd<'a>>,
    name: CString,
    path: &'a Path,
}

impl Source<'_> {
    fn err(&self, e: Errno) -> BuildError {
        BuildError::io(self.path, std::io::Error::from(e))
    }

    fn lstat(&self) -> Result<FileStat> {
        match self.dir {
            Some(d) => fstatat(d, self.name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW),
            None => fstatat(AT_FDCWD, self.name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW),
        }
        .map_err(|e| self.err(e))
    }

    /// Opens the node itself, never a symlink's target; ELOOP means it became a
    /// symlink since it was looked at.
    fn open(&self, flags: OFlag) -> Result<OwnedFd> {
        let flags = flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK;
        match self.dir {
            Some(d) => openat(d, self.name.as_c_str(), flags, Mode::empty()),
            None => openat(AT_FDCWD, self.name.as_c_str(), flags, Mode::empty()),
        }
        .map_err(|e| match e {
            Errno::ELOOP | Errno::ENOTDIR => self.changed(),
            e => self.err(e),
        })
    }

    fn changed(&self) -> BuildError {
        BuildError::source(self.path, "changed while it was being copied")
    }

    fn readlink(&self) -> Result<std::ffi::OsString> {
        match self.dir {
            Some(d) => readlinkat(d, self.name.as_c_str()),
            None => readlinkat(AT_FDCWD, self.name.as_c_str()),
        }
        .map_err(|e| match e {
            Errno::EINVAL => self.changed(),
            e => self.err(e),
        })
    }
}

fn file_type(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT
}

struct Copy<'a> {
    root: &'a Rooted,
    links: HashMap<(u64, u64), PathBuf>,
    skipped: Skipped,
    dirs: Vec<(PathBuf, Meta)>,
    made: Vec<PathBuf>,
    devices: bool,
}

impl Copy<'_> {
    fn meta(&self, st: &FileStat, mode: bool) -> Meta {
        Meta {
            owner: is_root().then(|| host_owner(st.st_uid, st.st_gid)),
            mode: mode.then_some(st.st_mode & 0o7777),
            mtime: Some(st.st_mtime),
        }
    }

    fn one(&mut self, src: &Source, dst: &Path) -> Result<()> {
        let st = src.lstat()?;
        let ft = file_type(&st);
        let is_top = dst.as_os_str().is_empty();
        if ft == SFlag::S_IFDIR {
            let fd = src.open(OFlag::O_RDONLY | OFlag::O_DIRECTORY)?;
            // What is copied is what the descriptor shows, not the earlier look.
            let st = fstat(&fd).map_err(|e| src.err(e))?;
            if !is_top {
                self.root.mkdir(dst, &mut self.made)?;
            }
            let dup = fd.try_clone().map_err(|e| BuildError::io(src.path, e))?;
            let mut names: Vec<Vec<u8>> = Vec::new();
            for e in Dir::from_fd(dup).map_err(|e| src.err(e))?.iter() {
                let e = e.map_err(|e| src.err(e))?;
                let n = e.file_name().to_bytes();
                if n != b"." && n != b".." {
                    names.push(n.to_vec());
                }
            }
            names.sort();
            for n in names {
                let name = OsStr::from_bytes(&n);
                let path = src.path.join(name);
                let child = Source {
                    dir: Some(fd.as_fd()),
                    name: cstr(&n, &path)?,
                    path: &path,
                };
                self.one(&child, &dst.join(name))?;
            }
            self.dirs.push((dst.to_path_buf(), self.meta(&st, true)));
            return Ok(());
        }
        if is_top {
            return Err(BuildError::source(src.path, "not a directory"));
        }
        let st = match ft {
            SFlag::S_IFLNK => {
                let t = src.readlink()?;
                self.root.symlink(dst, &t, &mut self.made)?;
                return self.root.set_meta(dst, self.meta(&st, false));
            }
            SFlag::S_IFREG => {
                let fd = src.open(OFlag::O_RDONLY)?;
                let st = fstat(&fd).map_err(|e| src.err(e))?;
                if file_type(&st) != SFlag::S_IFREG {
                    return Err(src.changed());
                }
                if st.st_nlink > 1 {
                    let key = (st.st_dev, st.st_ino);
                    if let Some(first) = self.links.get(&key) {
                        return self.root.hard_link(first, dst, &mut self.made);
                    }
                    self.links.insert(key, dst.to_path_buf());
                }
                let mut from = fs::File::from(fd);
                let mut to = self.root.create_file(dst, true, &mut self.made)?;
                std::io::copy(&mut from, &mut to).map_err(|e| BuildError::io(src.path, e))?;
                st
            }
            SFlag::S_IFIFO => {
                self.root.mkfifo(dst, &mut self.made)?;
                st
            }
            SFlag::S_IFCHR | SFlag::S_IFBLK if self.devices => {
                let block = ft == SFlag::S_IFBLK;
                self.root.mknod(dst, block, st.st_rdev, &mut self.made)?;
                st
            }
            _ => {
                self.skipped.devices += 1;
                return Ok(());
            }
        };
        self.root.set_meta(dst, self.meta(&st, true))
    }
}

/// Extracts a squashfs into the (empty) tree `root`. A directory whose names are
/// not in strictly increasing order (a duplicate among them) is refused: a squashfs
/// writer never makes one, and a duplicate would replace what was just written.
/// `image` names the source image in errors.
pub fn extract_squashfs<R: ReadAt>(
    fs_: &Squashfs<R>,
    image: &Path,
    root: &Rooted,
    devices: bool,
) -> Result<Skipped> {
    extract(fs_, image, root, devices, is_root())
}

/// As [`extract_squashfs`], every file the caller's, no device nodes: an image
/// unpacked for a run in a user namespace that maps only the caller (`launch::unpack`).
pub fn extract_squashfs_as_caller<R: ReadAt>(
    fs_: &Squashfs<R>,
    image: &Path,
    root: &Rooted,
) -> Result<Skipped> {
    extract(fs_, image, root, false, false)
}

fn extract<R: ReadAt>(
    fs_: &Squashfs<R>,
    image: &Path,
    root: &Rooted,
    devices: bool,
    owners: bool,
) -> Result<Skipped> {
    let mut x = Extract {
        fs: fs_,
        image,
        root,
        owners,
        devices: devices && can_mknod(),
        skipped: Skipped::default(),
        dirs: Vec::new(),
        links: HashMap::new(),
        last: HashMap::new(),
        made: Vec::new(),
        buf: vec![0u8; 1 << 20],
    };
    let rootattr = fs_.getattr(fs_.root()).map_err(|e| x.read_err(e))?;
    let meta = x.meta(&rootattr);
    x.dirs.push((PathBuf::new(), meta));
    let mut failure: Option<BuildError> = None;
    fs_.walk(|rel, a| {
        let p = PathBuf::from(std::ffi::OsStr::from_bytes(rel));
        x.entry(p, a).map_err(|e| {
            // The walk stops at any error of its own type; the real one is kept here.
            failure = Some(e);
            veil_fusefs::squashfs::Error::DirLoop
        })
    })
    .map_err(|e| failure.take().unwrap_or_else(|| x.read_err(e)))?;
    if !x.made.is_empty() {
        return Err(BuildError::source_image(
            image,
            "an entry comes before its directory",
        ));
    }
    for (d, meta) in x.dirs.into_iter().rev() {
        root.set_meta(&d, meta)?;
    }
    Ok(x.skipped)
}

/// One extraction under way.
struct Extract<'a, R: ReadAt> {
    fs: &'a Squashfs<R>,
    image: &'a Path,
    root: &'a Rooted,
    /// Keep the image's owners (real root only).
    owners: bool,
    devices: bool,
    skipped: Skipped,
    /// The directories and their metadata, set last (deepest first), once nothing
    /// more is written into them.
    dirs: Vec<(PathBuf, Meta)>,
    /// The first path of each inode with several links.
    links: HashMap<u32, PathBuf>,
    /// The last name seen in each directory, to check the order.
    last: HashMap<PathBuf, Vec<u8>>,
    made: Vec<PathBuf>,
    buf: Vec<u8>,
}

impl<R: ReadAt> Extract<'_, R> {
    fn read_err(&self, e: veil_fusefs::squashfs::Error) -> BuildError {
        BuildError::source_image(self.image, format!("reading: {e}"))
    }

    fn meta(&self, a: &veil_fusefs::squashfs::Attr) -> Meta {
        Meta {
            owner: self.owners.then_some((a.uid, a.gid)),
            mode: Some(a.perm as u32),
            mtime: Some(a.mtime as i64),
        }
    }

    /// Refuses a name that does not come after the last one of its directory.
    fn check_order(&mut self, p: &Path) -> Result<()> {
        let name = p
            .file_name()
            .map(|n| n.as_bytes().to_vec())
            .unwrap_or_default();
        let parent = p.parent().map(Path::to_path_buf).unwrap_or_default();
        match self.last.get(&parent) {
            Some(prev) if prev.as_slice() >= name.as_slice() => Err(BuildError::source_image(
                self.image,
                format!(
                    "directory /{} lists {:?} out of order or twice",
                    parent.display(),
                    String::from_utf8_lossy(&name)
                ),
            )),
            _ => {
                self.last.insert(parent, name);
                Ok(())
            }
        }
    }

    fn entry(&mut self, p: PathBuf, a: &veil_fusefs::squashfs::Attr) -> Result<()> {
        self.check_order(&p)?;
        let meta = self.meta(a);
        let root = self.root;
        match a.kind {
            FileKind::Directory => {
                if !root.mkdir(&p, &mut self.made)? {
                    return Err(BuildError::source_image(
                        self.image,
                        format!("/{} is listed twice", p.display()),
                    ));
                }
                self.dirs.push((p, meta));
                return Ok(());
            }
            FileKind::File => {
                if a.nlink > 1 {
                    if let Some(first) = self.links.get(&a.ino) {
                        return root.hard_link(first, &p, &mut self.made);
                    }
                    self.links.insert(a.ino, p.clone());
                }
                self.copy_file(&p, a)?;
            }
            FileKind::Symlink => {
                let t = self.fs.readlink(a.id).map_err(|e| self.read_err(e))?;
                root.symlink(&p, std::ffi::OsStr::from_bytes(&t), &mut self.made)?;
                return root.set_meta(&p, Meta { mode: None, ..meta });
            }
            FileKind::Fifo => root.mkfifo(&p, &mut self.made)?,
            FileKind::CharDevice | FileKind::BlockDevice if self.devices => {
                let rdev = nix::sys::stat::makedev(a.rdev_major().into(), a.rdev_minor().into());
                root.mknod(&p, a.kind == FileKind::BlockDevice, rdev, &mut self.made)?;
            }
            FileKind::CharDevice | FileKind::BlockDevice | FileKind::Socket => {
                self.skipped.devices += 1;
                return Ok(());
            }
        }
        root.set_meta(&p, meta)
    }

    fn copy_file(&mut self, p: &Path, a: &veil_fusefs::squashfs::Attr) -> Result<()> {
        let mut f = self.root.create_file(p, false, &mut self.made)?;
        let mut off = 0u64;
        while off < a.size {
            let n = match self.fs.read(a.id, off, &mut self.buf) {
                Ok(n) => n,
                Err(e) => return Err(self.read_err(e)),
            };
            if n == 0 {
                break;
            }
            f.write_all(&self.buf[..n])
                .map_err(|e| BuildError::io(&self.root.path().join(p), e))?;
            off += n as u64;
        }
        Ok(())
    }
}

/// Removes a staging tree, never following a symlink in it (a tree made read-only can
/// still go).
pub fn remove_tree(root: &Path) {
    let _ = super::rooted::remove_tree(root);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Someone who can write in the source tree swaps files for symlinks to a file
    /// they cannot read, while the build copies the tree (as root, the copy could
    /// read it). Whatever the timing, the copy holds a symlink or the public bytes,
    /// or fails as changed; never the secret's bytes.
    #[test]
    fn copy_never_follows_a_file_swapped_for_a_symlink() {
        let t = tempfile::tempdir().unwrap();
        let secret = t.path().join("secret");
        std::fs::write(&secret, b"SECRET").unwrap();
        let src = t.path().join("src");
        std::fs::create_dir(&src).unwrap();
        const N: usize = 64;
        for i in 0..N {
            std::fs::write(src.join(format!("a{i:02}")), b"public").unwrap();
        }
        let stop = Arc::new(AtomicBool::new(false));
        let swapper = {
            let (src, stop, secret) = (src.clone(), stop.clone(), secret.clone());
            let (link, file) = (t.path().join("link"), t.path().join("file"));
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let victim = src.join(format!("a{:02}", i % N));
                    symlink(&secret, &link).unwrap();
                    fs::rename(&link, &victim).unwrap();
                    std::fs::write(&file, b"public").unwrap();
                    fs::rename(&file, &victim).unwrap();
                    i += 1;
                }
            })
        };
        let mut copied = 0;
        for round in 0..200 {
            let out = t.path().join(format!("out{round}"));
            std::fs::create_dir(&out).unwrap();
            let root = Rooted::open(&out).unwrap();
            match copy_tree(&src, &root, Path::new(""), false) {
                Ok(_) => copied += 1,
                Err(e) => assert!(e.to_string().contains("changed while"), "{e}"),
            }
            for e in fs::read_dir(&out).unwrap() {
                let p = e.unwrap().path();
                let md = fs::symlink_metadata(&p).unwrap();
                if md.is_file() {
                    assert_eq!(fs::read(&p).unwrap(), b"public", "{} leaked", p.display());
                }
            }
            std::fs::remove_dir_all(&out).unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        swapper.join().unwrap();
        assert!(copied > 0, "no copy ever completed");
    }
}
