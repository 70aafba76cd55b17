//! The one way a build writes into a staging tree or sandbox: every path is resolved
//! inside a root directory, as if that directory were `/`, and every change is made
//! relative to a descriptor, never by a path the host would resolve.
//!
//! Build inputs are untrusted: an archive layer, a base image or a `%post` script can
//! plant symlinks to host directories, `..` entries, or names that collide. Resolving
//! with `openat2(RESOLVE_IN_ROOT)` makes an absolute symlink or a `..` stop at the root,
//! so a write can only land inside the tree. The last component of every operation is
//! never followed (`O_NOFOLLOW`, `AT_SYMLINK_NOFOLLOW`, `O_EXCL`), and metadata is set
//! on an opened descriptor of the node itself. Where openat2 is missing (before Linux
//! 5.6, or refused by a seccomp filter), the same resolution is done one component at
//! a time with `O_NOFOLLOW`, reading each symlink and restarting it at the root.

use std::collections::VecDeque;
use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, AtFlags, OFlag, OpenHow, ResolveFlag, openat, openat2, readlinkat};
use nix::sys::stat::{
    FchmodatFlags, FileStat, Mode, SFlag, UtimensatFlags, fchmodat, fstat, fstatat, mkdirat,
    mknodat, utimensat,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchownat, linkat, mkfifoat, symlinkat, unlinkat};

use super::error::{BuildError, Result};

/// How many symlinks one resolution may follow (the kernel's own limit).
const MAX_LINKS: usize = 40;

/// The kind of node at a path, as `lstat` sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    Dir,
    File,
    Symlink,
    Other,
}

fn kind_of(st: &FileStat) -> NodeKind {
    match SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT {
        SFlag::S_IFDIR => NodeKind::Dir,
        SFlag::S_IFREG => NodeKind::File,
        SFlag::S_IFLNK => NodeKind::Symlink,
        _ => NodeKind::Other,
    }
}

/// Metadata to apply to a node. Owners are set before the mode, since a change of
/// owner clears the setuid and setgid bits.
#[derive(Debug, Clone, Copy, Default)]
pub struct Meta {
    pub owner: Option<(u32, u32)>,
    pub mode: Option<u32>,
    pub mtime: Option<i64>,
}

/// A directory that every operation stays inside.
pub struct Rooted {
    dir: OwnedFd,
    path: PathBuf,
    /// Resolve without openat2 (the fallback; tests select it to cover both).
    emulate: bool,
}

fn io_err(path: &Path, op: &str, e: Errno) -> BuildError {
    BuildError::Io {
        path: format!("{} ({op})", path.display()),
        err: std::io::Error::from(e),
    }
}

/// The final name of `rel`: one plain component. `.`, `..`, empty names and names
/// with a slash (a whiteout's target, say) are refused.
pub fn check_name(name: &OsStr) -> std::result::Result<(), String> {
    let b = name.as_bytes();
    if b.is_empty() || b == b"." || b == b".." || b.contains(&b'/') || b.contains(&0) {
        return Err(format!("invalid file name {:?}", name));
    }
    Ok(())
}

/// Splits `rel` into its parent's components and its final name. Leading `/` and `.`
/// components are dropped; `..` is kept for the resolver, which stops it at the root.
fn split(rel: &Path) -> std::result::Result<(Vec<OsString>, OsString), String> {
    let mut parts: Vec<OsString> = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(n) => parts.push(n.to_owned()),
            Component::ParentDir => parts.push("..".into()),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    let name = parts
        .pop()
        .ok_or_else(|| format!("{}: names the root itself", rel.display()))?;
    check_name(&name)?;
    Ok((parts, name))
}

fn cname(name: &OsStr) -> CString {
    // check_name refused NUL bytes.
    CString::new(name.as_bytes()).unwrap_or_default()
}

impl Rooted {
    /// Takes the directory at `path` as the root. The path itself is the caller's
    /// choice (a staging tree it made, or a source directory the user named) and is
    /// followed like any path the user gives; only what lies below it is confined.
    pub fn open(path: &Path) -> Result<Rooted> {
        let dir = nix::fcntl::open(
            path,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_err(path, "open", e))?;
        Ok(Rooted {
            dir,
            path: path.to_path_buf(),
            emulate: false,
        })
    }

    /// The same root, resolving without openat2.
    #[doc(hidden)]
    pub fn emulated(mut self) -> Rooted {
        self.emulate = true;
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn shown(&self, rel: &Path) -> PathBuf {
        self.path.join(rel.strip_prefix("/").unwrap_or(rel))
    }

    fn err(&self, rel: &Path, op: &str, e: Errno) -> BuildError {
        io_err(&self.shown(rel), op, e)
    }

    fn bad(&self, rel: &Path, msg: String) -> BuildError {
        BuildError::staged(&self.shown(rel), msg)
    }

    fn root_dup(&self) -> nix::Result<OwnedFd> {
        openat(
            &self.dir,
            ".",
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
    }

    /// Opens the directory named by `parts` inside the root (O_PATH).
    fn resolve_dir(&self, parts: &[OsString]) -> nix::Result<OwnedFd> {
        if parts.iter().all(|p| p == ".") {
            return self.root_dup();
        }
        if !self.emulate {
            let mut joined = Vec::new();
            for (i, p) in parts.iter().enumerate() {
                if i > 0 {
                    joined.push(b'/');
                }
                joined.extend_from_slice(p.as_bytes());
            }
            let how = OpenHow::new()
                .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
                .resolve(
                    ResolveFlag::RESOLVE_IN_ROOT
                        | ResolveFlag::RESOLVE_NO_MAGICLINKS
                        | ResolveFlag::RESOLVE_NO_XDEV,
                );
            let path = OsStr::from_bytes(&joined);
            for _ in 0..16 {
                match openat2(&self.dir, path, how) {
                    // A concurrent rename somewhere on the system: the kernel asks to retry.
                    Err(Errno::EAGAIN) => continue,
                    Err(Errno::ENOSYS) | Err(Errno::EPERM) => break,
                    r => return r,
                }
            }
        }
        self.resolve_emulated(parts)
    }

    /// RESOLVE_IN_ROOT done by hand: each component opened with O_NOFOLLOW; a symlink's
    /// target is spliced into the remaining components, an absolute one restarting at
    /// the root; `..` never climbs above the root.
    fn resolve_emulated(&self, parts: &[OsString]) -> nix::Result<OwnedFd> {
        let mut queue: VecDeque<OsString> = parts.iter().cloned().collect();
        let mut stack: Vec<OwnedFd> = Vec::new();
        let mut cur = self.root_dup()?;
        let mut links = 0;
        while let Some(c) = queue.pop_front() {
            if c.is_empty() || c == "." {
                continue;
            }
            if c == ".." {
                if let Some(up) = stack.pop() {
                    cur = up;
                }
                continue;
            }
            let fd = openat(
                &cur,
                c.as_os_str(),
                OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )?;
            match kind_of(&fstat(&fd)?) {
                NodeKind::Dir => {
                    stack.push(std::mem::replace(&mut cur, fd));
                }
                NodeKind::Symlink => {
                    links += 1;
                    if links > MAX_LINKS {
                        return Err(Errno::ELOOP);
                    }
                    let target = readlinkat(&fd, "")?;
                    let tb = target.as_bytes();
                    if tb.first() == Some(&b'/') {
                        stack.clear();
                        cur = self.root_dup()?;
                    }
                    for part in tb.split(|&b| b == b'/').rev() {
                        queue.push_front(OsString::from_vec(part.to_vec()));
                    }
                }
                _ => return Err(Errno::ENOTDIR),
            }
        }
        Ok(cur)
    }

    /// The parent directory of `rel` (O_PATH) and the final name.
    fn parent(&self, rel: &Path) -> Result<(OwnedFd, CString)> {
        let (parts, name) = split(rel).map_err(|m| self.bad(rel, m))?;
        let dir = self
            .resolve_dir(&parts)
            .map_err(|e| self.err(rel, "resolve parent", e))?;
        Ok((dir, cname(&name)))
    }

    /// Like `parent`, but a parent that does not exist (or is no directory) is `None`.
    fn parent_if_any(&self, rel: &Path) -> Result<Option<(OwnedFd, CString)>> {
        match self.parent(rel) {
            Ok(x) => Ok(Some(x)),
            Err(BuildError::Io { err, .. })
                if matches!(err.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Like `parent`, creating missing parent directories (mode 0755, owned by the
    /// caller). Returns the directories it made, relative to the root.
    fn parent_made(&self, rel: &Path, made: &mut Vec<PathBuf>) -> Result<(OwnedFd, CString)> {
        let (parts, name) = split(rel).map_err(|m| self.bad(rel, m))?;
        match self.resolve_dir(&parts) {
            Ok(dir) => return Ok((dir, cname(&name))),
            Err(Errno::ENOENT) => {}
            Err(e) => return Err(self.err(rel, "resolve parent", e)),
        }
        let mut prefix = PathBuf::new();
        for (i, p) in parts.iter().enumerate() {
            prefix.push(p);
            match self.resolve_dir(&parts[..=i]) {
                Ok(_) => continue,
                Err(Errno::ENOENT) => {}
                Err(e) => return Err(self.err(&prefix, "resolve", e)),
            }
            // The missing component may itself be a dangling symlink: create what it
            // names would be following it out of this step's control, so refuse.
            let (d, n) = self.parent(&prefix)?;
            if fstatat(&d, n.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW).is_ok() {
                return Err(self.bad(
                    &prefix,
                    "a dangling symlink stands where a directory is needed".into(),
                ));
            }
            mkdirat(&d, n.as_c_str(), Mode::from_bits_truncate(0o755))
                .map_err(|e| self.err(&prefix, "mkdir", e))?;
            made.push(prefix.clone());
        }
        let dir = self
            .resolve_dir(&parts)
            .map_err(|e| self.err(rel, "resolve parent", e))?;
        Ok((dir, cname(&name)))
    }

    /// What is at `rel` (not following a final symlink), if anything.
    pub fn kind(&self, rel: &Path) -> Result<Option<NodeKind>> {
        let Some((d, n)) = self.parent_if_any(rel)? else {
            return Ok(None);
        };
        match fstatat(&d, n.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(kind_of(&st))),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(self.err(rel, "stat", e)),
        }
    }

    /// Whether `rel` names a directory, following symlinks inside the root.
    pub fn is_dir(&self, rel: &Path) -> bool {
        let parts: Vec<OsString> = rel
            .components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n.to_owned()),
                Component::ParentDir => Some("..".into()),
                _ => None,
            })
            .collect();
        self.resolve_dir(&parts).is_ok()
    }

    /// Removes whatever is at `rel` (a directory with everything in it); nothing there
    /// is not an error.
    pub fn remove(&self, rel: &Path) -> Result<()> {
        let Some((d, n)) = self.parent_if_any(rel)? else {
            return Ok(());
        };
        remove_at(d.as_fd(), &n).map_err(|e| self.err(rel, "remove", e))
    }

    /// Empties the directory at `rel` of every entry `keep` does not keep.
    pub fn clear_dir(&self, rel: &Path, keep: impl Fn(&OsStr) -> bool) -> Result<()> {
        let mut parts: Vec<OsString> = Vec::new();
        for c in rel.components() {
            match c {
                Component::Normal(n) => parts.push(n.to_owned()),
                Component::ParentDir => parts.push("..".into()),
                _ => {}
            }
        }
        let d = match self.resolve_dir(&parts) {
            Ok(d) => d,
            Err(Errno::ENOENT) | Err(Errno::ENOTDIR) => return Ok(()),
            Err(e) => return Err(self.err(rel, "resolve", e)),
        };
        for name in list(d.as_fd()).map_err(|e| self.err(rel, "list", e))? {
            if !keep(&name) {
                remove_at(d.as_fd(), &cname(&name)).map_err(|e| self.err(rel, "remove", e))?;
            }
        }
        Ok(())
    }

    /// Makes `rel` a directory (mode 0700 until `set_meta` gives its real mode), keeping
    /// one that is there and replacing anything else. Returns whether it was made.
    pub fn mkdir(&self, rel: &Path, made: &mut Vec<PathBuf>) -> Result<bool> {
        let (d, n) = self.parent_made(rel, made)?;
        match fstatat(&d, n.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) if kind_of(&st) == NodeKind::Dir => return Ok(false),
            Ok(_) => remove_at(d.as_fd(), &n).map_err(|e| self.err(rel, "remove", e))?,
            Err(Errno::ENOENT) => {}
            Err(e) => return Err(self.err(rel, "stat", e)),
        }
        mkdirat(&d, n.as_c_str(), Mode::from_bits_truncate(0o700))
            .map_err(|e| self.err(rel, "mkdir", e))?;
        Ok(true)
    }

    /// Creates a new regular file at `rel` (replacing what is there when `replace`),
    /// mode 0600 until `set_meta`. Never opens an existing file or follows a link.
    pub fn create_file(&self, rel: &Path, replace: bool, made: &mut Vec<PathBuf>) -> Result<File> {
        let (d, n) = self.parent_made(rel, made)?;
        if replace {
            remove_at(d.as_fd(), &n).map_err(|e| self.err(rel, "remove", e))?;
        }
        let fd = openat(
            &d,
            n.as_c_str(),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| self.err(rel, "create", e))?;
        Ok(File::from(fd))
    }

    /// Writes a whole new file (see `create_file`) and gives it `mode`.
    pub fn write_file(&self, rel: &Path, bytes: &[u8], mode: u32) -> Result<()> {
        use std::io::Write;
        let mut made = Vec::new();
        let mut f = self.create_file(rel, true, &mut made)?;
        f.write_all(bytes)
            .map_err(|e| BuildError::io(&self.shown(rel), e))?;
        nix::sys::stat::fchmod(&f, Mode::from_bits_truncate(mode))
            .map_err(|e| self.err(rel, "chmod", e))?;
        Ok(())
    }

    /// A symlink at `rel` (replacing what is there) pointing at `target`, which is
    /// stored as given: it is only ever resolved inside the root.
    pub fn symlink(&self, rel: &Path, target: &OsStr, made: &mut Vec<PathBuf>) -> Result<()> {
        let (d, n) = self.parent_made(rel, made)?;
        remove_at(d.as_fd(), &n).map_err(|e| self.err(rel, "remove", e))?;
        symlinkat(target, &d, n.as_c_str()).map_err(|e| self.err(rel, "symlink", e))
    }

    /// A hard link at `rel` to the node at `target` (both inside the root; a symlink at
    /// `target` is linked as the symlink, never followed).
    pub fn hard_link(&self, target: &Path, rel: &Path, made: &mut Vec<PathBuf>) -> Result<()> {
        let (td, tn) = self.parent(target)?;
        match fstatat(&td, tn.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) if kind_of(&st) != NodeKind::Dir => {}
            Ok(_) => {
                return Err(self.bad(
                    rel,
                    format!("hard link to a directory {}", target.display()),
                ));
            }
            Err(e) => return Err(self.err(target, "hard link target", e)),
        }
        let (d, n) = self.parent_made(rel, made)?;
        remove_at(d.as_fd(), &n).map_err(|e| self.err(rel, "remove", e))?;
        linkat(&td, tn.as_c_str(), &d, n.as_c_str(), AtFlags::empty())
            .map_err(|e| self.err(rel, "link", e))
    }

    /// A FIFO at `rel` (replacing what is there).
    pub fn mkfifo(&self, rel: &Path, made: &mut Vec<PathBuf>) -> Result<()> {
        let (d, n) = self.parent_made(rel, made)?;
        remove_at(d.as_fd(), &n).map_err(|e| self.err(rel, "remove", e))?;
        mkfifoat(&d, n.as_c_str(), Mode::from_bits_truncate(0o600))
            .map_err(|e| self.err(rel, "mkfifo", e))
    }

    /// A device node at `rel` (replacing what is there), mode 0600 until `set_meta`.
    /// Only real root can make one; the caller decides whether it should.
    pub fn mknod(&self, rel: &Path, block: bool, rdev: u64, made: &mut Vec<PathBuf>) -> Result<()> {
        let (d, n) = self.parent_made(rel, made)?;
        remove_at(d.as_fd(), &n).map_err(|e| self.err(rel, "remove", e))?;
        let kind = if block {
            SFlag::S_IFBLK
        } else {
            SFlag::S_IFCHR
        };
        mknodat(
            &d,
            n.as_c_str(),
            kind,
            Mode::from_bits_truncate(0o600),
            rdev as _,
        )
        .map_err(|e| self.err(rel, "mknod", e))
    }

    /// Opens the regular file at `rel` for reading (none there, or anything but a
    /// regular file: `None`).
    pub fn open_read(&self, rel: &Path) -> Result<Option<File>> {
        let Some((d, n)) = self.parent_if_any(rel)? else {
            return Ok(None);
        };
        let fd = match openat(
            &d,
            n.as_c_str(),
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(None),
            Err(e) => return Err(self.err(rel, "open", e)),
        };
        if kind_of(&fstat(&fd).map_err(|e| self.err(rel, "stat", e))?) != NodeKind::File {
            return Ok(None);
        }
        // The name was checked to be a regular file; open it (O_NONBLOCK: never wait on
        // a FIFO swapped in) and check it is still the same inode.
        let f = openat(
            &d,
            n.as_c_str(),
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| self.err(rel, "open", e))?;
        let (a, b) = (
            fstat(&fd).map_err(|e| self.err(rel, "stat", e))?,
            fstat(&f).map_err(|e| self.err(rel, "stat", e))?,
        );
        if (a.st_dev, a.st_ino) != (b.st_dev, b.st_ino) {
            return Ok(None);
        }
        Ok(Some(File::from(f)))
    }

    /// Reads the regular file at `rel`, if there is one.
    pub fn read(&self, rel: &Path) -> Result<Option<Vec<u8>>> {
        use std::io::Read;
        let Some(mut f) = self.open_read(rel)? else {
            return Ok(None);
        };
        let mut b = Vec::new();
        f.read_to_end(&mut b)
            .map_err(|e| BuildError::io(&self.shown(rel), e))?;
        Ok(Some(b))
    }

    /// Applies `meta` to the node at `rel` (the root itself for an empty path), not
    /// following a final symlink: owner first, then mode, then time.
    pub fn set_meta(&self, rel: &Path, meta: Meta) -> Result<()> {
        let is_root = !rel
            .components()
            .any(|c| matches!(c, Component::Normal(_) | Component::ParentDir));
        let (d, n) = if is_root {
            (
                self.root_dup().map_err(|e| self.err(rel, "open", e))?,
                CString::from(c"."),
            )
        } else {
            self.parent(rel)?
        };
        let fd = openat(
            &d,
            n.as_c_str(),
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| self.err(rel, "open", e))?;
        let st = fstat(&fd).map_err(|e| self.err(rel, "stat", e))?;
        let kind = kind_of(&st);
        if let Some((uid, gid)) = meta.owner {
            let flags = AtFlags::AT_EMPTY_PATH | AtFlags::AT_SYMLINK_NOFOLLOW;
            match fchownat(
                &fd,
                "",
                Some(Uid::from_raw(uid)),
                Some(Gid::from_raw(gid)),
                flags,
            ) {
                Ok(()) => {}
                // In a namespace with subordinate ids, an owner outside the map cannot
                // be given; the node stays the build's, as without a map.
                Err(Errno::EINVAL) if super::subids::active() => {}
                Err(e) => return Err(self.err(rel, "chown", e)),
            }
        }
        if let (Some(mode), false) = (meta.mode, kind == NodeKind::Symlink) {
            chmod_fd(fd.as_fd(), d.as_fd(), &n, mode & 0o7777)
                .map_err(|e| self.err(rel, "chmod", e))?;
        }
        if let Some(t) = meta.mtime {
            let ts = TimeSpec::new(t, 0);
            let r = if is_root {
                utimensat(&self.dir, ".", &ts, &ts, UtimensatFlags::FollowSymlink)
            } else {
                utimensat(&d, n.as_c_str(), &ts, &ts, UtimensatFlags::NoFollowSymlink)
            };
            r.map_err(|e| self.err(rel, "set times", e))?;
        }
        Ok(())
    }
}

/// chmod of the inode an O_PATH descriptor holds (fchmod refuses O_PATH descriptors):
/// through its /proc magic link, which names exactly that inode; without /proc, by
/// name in its directory, after checking that the name still is that inode and no
/// symlink.
fn chmod_fd(fd: BorrowedFd<'_>, dir: BorrowedFd<'_>, name: &CString, mode: u32) -> nix::Result<()> {
    let mode = Mode::from_bits_truncate(mode);
    let proc = format!("/proc/self/fd/{}", fd.as_raw_fd());
    match fchmodat(AT_FDCWD, proc.as_str(), mode, FchmodatFlags::FollowSymlink) {
        Err(Errno::ENOENT) => {}
        r => return r,
    }
    let held = fstat(fd)?;
    let now = fstatat(dir, name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW)?;
    if (held.st_dev, held.st_ino) != (now.st_dev, now.st_ino) || kind_of(&now) == NodeKind::Symlink
    {
        return Err(Errno::ESTALE);
    }
    fchmodat(dir, name.as_c_str(), mode, FchmodatFlags::FollowSymlink)
}

/// The names in a directory (without `.` and `..`).
fn list(dir: BorrowedFd<'_>) -> nix::Result<Vec<OsString>> {
    let fd = openat(
        dir,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let mut d = nix::dir::Dir::from_fd(fd)?;
    let mut out = Vec::new();
    for e in d.iter() {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            out.push(OsString::from_vec(n.to_vec()));
        }
    }
    Ok(out)
}

/// Removes `name` in `dir`, a directory with all it holds; nothing there is fine.
/// Directories are made writable first (a tree made read-only can still go), and
/// every step is relative to a descriptor, so a symlink is removed, never followed.
pub fn remove_at(dir: BorrowedFd<'_>, name: &CString) -> nix::Result<()> {
    let st = match fstatat(dir, name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(e),
    };
    if kind_of(&st) != NodeKind::Dir {
        return unlinkat(dir, name.as_c_str(), UnlinkatFlags::NoRemoveDir);
    }
    let sub = openat(
        dir,
        name.as_c_str(),
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .or_else(|_| {
        // An unreadable directory of ours: give it back its owner's rights first,
        // through a descriptor of that very directory (never by name alone, which a
        // process could have swapped for a symlink meanwhile).
        let held = openat(
            dir,
            name.as_c_str(),
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        chmod_fd(held.as_fd(), dir, name, 0o700)?;
        openat(
            dir,
            name.as_c_str(),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
    })?;
    let _ = nix::sys::stat::fchmod(&sub, Mode::from_bits_truncate(0o700));
    for n in list(sub.as_fd())? {
        remove_at(sub.as_fd(), &cname(&n))?;
    }
    unlinkat(dir, name.as_c_str(), UnlinkatFlags::RemoveDir)
}

/// Removes the tree at `path` without following any symlink in it; the path's own
/// parent is taken as it is.
pub fn remove_tree(path: &Path) -> std::io::Result<()> {
    let parent = crate::fsutil::parent_dir(path);
    let Some(name) = path.file_name() else {
        return Err(std::io::Error::from(Errno::EINVAL));
    };
    let d = nix::fcntl::open(
        parent,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    remove_at(d.as_fd(), &cname(name)).map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests {
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
        std::fs::set_permissions(host.join("file"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
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
}
