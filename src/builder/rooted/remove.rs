//! Removal without following links: a tree made read-only, or one a build script
//! filled with symlinks, is removed through descriptors only.

#![forbid(unsafe_code)]

use std::ffi::{CString, OsString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, AtFlags, OFlag, openat};
use nix::sys::stat::{FchmodatFlags, Mode, fchmodat, fstat, fstatat};
use nix::unistd::{UnlinkatFlags, unlinkat};

use super::{NodeKind, cname, kind_of};

/// chmod of the inode an O_PATH descriptor holds (fchmod refuses O_PATH descriptors):
/// through its /proc magic link, which names exactly that inode; without /proc, by
/// name in its directory, after checking that the name still is that inode and no
/// symlink.
pub(super) fn chmod_fd(
    fd: BorrowedFd<'_>,
    dir: BorrowedFd<'_>,
    name: &CString,
    mode: u32,
) -> nix::Result<()> {
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
pub(super) fn list(dir: BorrowedFd<'_>) -> nix::Result<Vec<OsString>> {
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
