//! The system-call seam: every mount and namespace step of a run (`launch`) and of a
//! build script's sandbox (`builder::isolate`) is a call on [`Sys`]. [`RealSys`] makes
//! the system calls; the tests' `RecordingSys` records them, so the order of the steps
//! and their flags are checked without a kernel.
//!
//! Generic code (`S: Sys`) keeps the calls statically dispatched: the real
//! implementation's methods are the system calls themselves (it holds only where
//! /proc is).

mod attrs;
mod loopback;
#[cfg(test)]
pub(crate) mod recording;

use std::io;
use std::os::fd::BorrowedFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;

use crate::support::userns;
pub use attrs::{Attrs, ms_flags};

/// The mount and namespace system calls a launch or a build script's sandbox makes.
pub trait Sys {
    /// mount(2).
    fn mount(
        &self,
        src: Option<&Path>,
        dst: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> nix::Result<()>;
    /// Adds `attrs` to the mount at `path` (and every mount below it when `recursive`).
    fn set_attrs(&self, path: &Path, attrs: Attrs, recursive: bool) -> nix::Result<()>;
    /// umount2(2).
    fn umount(&self, path: &Path, flags: MntFlags) -> nix::Result<()>;
    /// pivot_root(2).
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> nix::Result<()>;
    fn chdir(&self, path: &Path) -> nix::Result<()>;
    /// unshare(2).
    fn unshare(&self, flags: CloneFlags) -> nix::Result<()>;
    /// setns(2) into the namespace open at `fd`.
    fn setns(&self, fd: BorrowedFd<'_>, flags: CloneFlags) -> nix::Result<()>;
    fn sethostname(&self, name: &str) -> nix::Result<()>;
    /// Brings up `lo` in this process's network namespace.
    fn loopback_up(&self) -> nix::Result<()>;
    /// Enters new user and mount namespaces with one id mapped (`support::userns`).
    fn enter_userns(
        &self,
        uid: u32,
        gid: u32,
        inner_uid: u32,
        inner_gid: u32,
    ) -> userns::Result<()>;
    /// One directory, with the default mode.
    fn create_dir(&self, path: &Path) -> io::Result<()>;
    /// A directory and its parents, `path` itself with exactly `mode` (the umask must
    /// not narrow modes like 1777).
    fn create_dir_all(&self, path: &Path, mode: u32) -> io::Result<()>;
    fn remove_dir(&self, path: &Path) -> io::Result<()>;
    fn write_file(&self, path: &Path, contents: &[u8]) -> io::Result<()>;
    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()>;
    /// A block device node for `major:minor`, mode 0600.
    fn mknod_block(&self, path: &Path, major: u32, minor: u32) -> nix::Result<()>;
}

/// The kernel. `proc` is where this process finds the proc file system: `/proc`,
/// unless a pivot has put the host's tree elsewhere (remounting a tree on kernels
/// without mount_setattr(2) reads the mount table there).
#[derive(Debug, Clone, Copy)]
pub struct RealSys {
    proc: &'static str,
}

impl RealSys {
    pub const fn new() -> Self {
        RealSys { proc: "/proc" }
    }

    /// The kernel, for a process that finds /proc at `proc`.
    pub const fn with_proc(proc: &'static str) -> Self {
        RealSys { proc }
    }
}

impl Default for RealSys {
    fn default() -> Self {
        RealSys::new()
    }
}

impl Sys for RealSys {
    fn mount(
        &self,
        src: Option<&Path>,
        dst: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> nix::Result<()> {
        nix::mount::mount(src, dst, fstype, flags, data)
    }
    fn set_attrs(&self, path: &Path, attrs: Attrs, recursive: bool) -> nix::Result<()> {
        attrs::set_attrs(path, attrs, recursive, Path::new(self.proc))
    }
    fn umount(&self, path: &Path, flags: MntFlags) -> nix::Result<()> {
        nix::mount::umount2(path, flags)
    }
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> nix::Result<()> {
        nix::unistd::pivot_root(new_root, put_old)
    }
    fn chdir(&self, path: &Path) -> nix::Result<()> {
        nix::unistd::chdir(path)
    }
    fn unshare(&self, flags: CloneFlags) -> nix::Result<()> {
        nix::sched::unshare(flags)
    }
    fn setns(&self, fd: BorrowedFd<'_>, flags: CloneFlags) -> nix::Result<()> {
        nix::sched::setns(fd, flags)
    }
    fn sethostname(&self, name: &str) -> nix::Result<()> {
        nix::unistd::sethostname(name)
    }
    fn loopback_up(&self) -> nix::Result<()> {
        loopback::up()
    }
    fn enter_userns(
        &self,
        uid: u32,
        gid: u32,
        inner_uid: u32,
        inner_gid: u32,
    ) -> userns::Result<()> {
        userns::enter(uid, gid, inner_uid, inner_gid)
    }
    fn create_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir(path)
    }
    fn create_dir_all(&self, path: &Path, mode: u32) -> io::Result<()> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
    }
    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir(path)
    }
    fn write_file(&self, path: &Path, contents: &[u8]) -> io::Result<()> {
        std::fs::write(path, contents)
    }
    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()> {
        std::os::unix::fs::symlink(target, link)
    }
    fn mknod_block(&self, path: &Path, major: u32, minor: u32) -> nix::Result<()> {
        use nix::sys::stat::{Mode, SFlag, makedev, mknod};
        mknod(
            path,
            SFlag::S_IFBLK,
            Mode::from_bits_truncate(0o600),
            makedev(major.into(), minor.into()),
        )
    }
}
