//! Putting a build script (`%post`, `%test`) inside the image being built the way a
//! container runs: the staging tree becomes the root of the script's own mount
//! namespace through `pivot_root`, the host's root is detached (not merely hidden
//! behind a `chroot`, which a process with CAP_SYS_CHROOT leaves with a second
//! `chroot`), `/proc` is the script's own PID namespace's, `/dev` holds only the
//! harmless devices, and no descriptor but stdin, stdout and stderr reaches it. The
//! build process itself is made non-dumpable before it reads a key, so that neither
//! the script nor any other process of the user can read its memory.
//!
//! Everything here runs in a forked child that is about to exec, except
//! [`protect_process`]. The mounts and the pivot go through the system-call seam
//! ([`Sys`]); the tests record them on a scratch tree.

pub(crate) mod error;
#[cfg(test)]
mod tests;

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, open, openat, openat2};
use nix::mount::{MntFlags, MsFlags};
use nix::sys::stat::{Mode, SFlag, fstat, mkdirat};

use crate::support::sys::Sys;
use error::Step;
pub use error::{Result, SandboxError};

/// Makes this process non-dumpable: no core dump, and its memory, descriptors and
/// environment in /proc are closed to other processes of the same user (a build
/// script included). Call before any secret is read, and after the build's user
/// namespace has its id maps, which an unprivileged process may only write while
/// dumpable.
pub fn protect_process() -> Result<()> {
    nix::sys::prctl::set_dumpable(false).op("prctl(PR_SET_DUMPABLE, 0)")
}

/// Opens `rel` below `dir` with every symbolic link resolved inside it, as the script
/// will see the path after the root changes; a link planted in the image can never
/// point a mount outside the staging tree.
fn open_inside(dir: &OwnedFd, rel: &str, flags: OFlag) -> nix::Result<OwnedFd> {
    let how = OpenHow::new()
        .flags(flags | OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    match openat2(dir, rel, how) {
        // Before Linux 5.6: no symbolic link is followed at all.
        Err(Errno::ENOSYS) if !rel.contains('/') => openat(
            dir,
            rel,
            flags | OFlag::O_PATH | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
            Mode::empty(),
        ),
        r => r,
    }
}

/// The path that names an opened descriptor for mount(2).
fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// A directory `name` directly in `dir` (made when missing), opened. A symbolic link
/// there is refused: a mount point is never where an image's link says.
fn dir_inside(dir: &OwnedFd, name: &str) -> Result<OwnedFd> {
    let shown = || Path::new("/").join(name);
    match mkdirat(dir, name, Mode::from_bits_truncate(0o755)) {
        Ok(()) => {}
        Err(Errno::EEXIST) => {
            let st = nix::sys::stat::fstatat(dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
                .at("inspecting", shown())?;
            if st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFLNK.bits() {
                return Err(SandboxError::LinkedMountPoint { path: shown() });
            }
        }
        Err(e) => return Err(SandboxError::path("creating", shown(), e)),
    }
    open_inside(dir, name, OFlag::O_DIRECTORY).at("opening", shown())
}

fn bind<S: Sys>(sys: &S, src: &Path, dst: &OwnedFd, recursive: bool) -> nix::Result<()> {
    let mut flags = MsFlags::MS_BIND;
    if recursive {
        flags |= MsFlags::MS_REC;
    }
    sys.mount(Some(src), &fd_path(dst), None, flags, None)
}

/// Remounts the mount at `rel` inside `dir` read-only (and nosuid, nodev, noexec).
fn read_only<S: Sys>(sys: &S, dir: &OwnedFd, rel: &str) -> Result<()> {
    let shown = || Path::new("/").join(rel);
    let m = open_inside(dir, rel, OFlag::O_DIRECTORY).at("opening", shown())?;
    sys.mount(
        None,
        &fd_path(&m),
        None,
        MsFlags::MS_REMOUNT
            | MsFlags::MS_BIND
            | MsFlags::MS_RDONLY
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV
            | MsFlags::MS_NOEXEC,
        None,
    )
    .at("making read-only", shown())
}

/// The devices a build script may use, bound from the host one by one onto empty
/// files in a fresh tmpfs, with the usual links and a private devpts and /dev/shm: no
/// disk, no terminal of the host but the controlling one, nothing to mount the host's
/// file systems from.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

fn minimal_dev<S: Sys>(sys: &S, root: &OwnedFd) -> Result<()> {
    let dev = dir_inside(root, "dev")?;
    sys.mount(
        Some(Path::new("tmpfs")),
        &fd_path(&dev),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("mode=755,size=1m"),
    )
    .at("mounting a tmpfs on", "/dev")?;
    // The descriptor still names the directory under the tmpfs: open the tmpfs.
    let dev = open_inside(root, "dev", OFlag::O_DIRECTORY).at("opening", "/dev")?;
    for d in DEVICES {
        let host = Path::new("/dev").join(d);
        if std::fs::metadata(&host).is_err() {
            continue;
        }
        let f = openat(
            &dev,
            *d,
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o666),
        )
        .at("creating", Path::new("/dev").join(d))?;
        bind(sys, &host, &f, false).at("binding", &host)?;
    }
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        nix::unistd::symlinkat(target, &dev, link).at("creating", Path::new("/dev").join(link))?;
    }
    let pts = dir_inside(&dev, "pts")?;
    // A private instance; where the kernel refuses it, scripts get no pseudo-terminals.
    let _ = sys.mount(
        Some(Path::new("devpts")),
        &fd_path(&pts),
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    );
    let shm = dir_inside(&dev, "shm")?;
    sys.mount(
        Some(Path::new("tmpfs")),
        &fd_path(&shm),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
    )
    .at("mounting a tmpfs on", "/dev/shm")?;
    Ok(())
}

/// Makes `root` (the staging tree) the root of this process's mount namespace, which
/// must be its own and in a PID namespace of its own: /proc is mounted fresh for it,
/// /sys and the minimal /dev are bound in, the host's DNS files over the image's
/// regular ones, then `pivot_root` and a lazy unmount of the old root leave nothing of
/// the host's tree reachable. On return the working directory is the new `/`.
///
/// `real_root` (no user namespace) keeps root's power over its files, so what plain
/// uid 0 may write there without a capability is made read-only (see rootcaps).
pub fn enter_root<S: Sys>(sys: &S, root: &Path, real_root: bool) -> Result<()> {
    sys.mount(
        None,
        Path::new("/"),
        None,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None,
    )
    .op("making the mounts private")?;
    // pivot_root needs the new root to be a mount of its own.
    sys.mount(
        Some(root),
        root,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )
    .at("binding onto itself", root)?;
    let dir = open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .at("opening", root)?;

    // This PID namespace's own /proc: the host's would show (and, for real root, give
    // a way into) every process of the host, the build's among them.
    let proc_dir = dir_inside(&dir, "proc")?;
    sys.mount(
        Some(Path::new("proc")),
        &fd_path(&proc_dir),
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None,
    )
    .at("mounting", "/proc")?;
    let sys_dir = dir_inside(&dir, "sys")?;
    bind(sys, Path::new("/sys"), &sys_dir, !real_root).at("binding", "/sys")?;
    if real_root {
        read_only(sys, &dir, "sys")?;
        let ps = open_inside(&dir, "proc/sys", OFlag::O_DIRECTORY).at("opening", "/proc/sys")?;
        let p = fd_path(&ps);
        sys.mount(Some(&p), &p, None, MsFlags::MS_BIND, None)
            .at("binding", "/proc/sys")?;
        read_only(sys, &dir, "proc/sys")?;
        for f in ["proc/sysrq-trigger", "proc/kcore"] {
            if let Ok(t) = open_inside(&dir, f, OFlag::O_NOFOLLOW) {
                bind(sys, Path::new("/dev/null"), &t, false)
                    .at("masking", Path::new("/").join(f))?;
            }
        }
    }
    minimal_dev(sys, &dir)?;
    for f in ["etc/resolv.conf", "etc/hosts"] {
        let host = Path::new("/").join(f);
        if !host.is_file() {
            continue;
        }
        // Only over a regular file of the image's (a link, commonly to a resolver's
        // run-time file, is left as the image has it).
        let Ok(t) = open_inside(&dir, f, OFlag::O_NOFOLLOW) else {
            continue;
        };
        let regular = fstat(&t).is_ok_and(|st| {
            SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFREG
        });
        if regular {
            let _ = bind(sys, &host, &t, false);
        }
    }

    // Into the tree by its descriptor: the path could have been replaced meanwhile.
    sys.chdir(&fd_path(&dir)).at("entering", root)?;
    sys.pivot_root(Path::new("."), Path::new("."))
        .op("pivot_root into the image")?;
    sys.umount(Path::new("."), MntFlags::MNT_DETACH)
        .op("detaching the host's root")?;
    sys.chdir(Path::new("/")).at("chdir", "/")?;
    Ok(())
}
