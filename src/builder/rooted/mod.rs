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

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{
    FileStat, Mode, SFlag, UtimensatFlags, fstat, fstatat, mkdirat, mknodat, utimensat,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, fchownat, linkat, mkfifoat, symlinkat};

use super::error::{BuildError, Result};

mod remove;
mod resolve;

use remove::{chmod_fd, list};
pub use remove::{remove_at, remove_tree};

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

#[cfg(test)]
mod tests;
