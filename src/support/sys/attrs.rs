//! Adding flags to a mount and to the mounts below it: mount_setattr(2), or a remount
//! of each mount on kernels without it.

use std::fs;
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;
use nix::sys::statvfs::{FsFlags, statvfs};

/// Flags of a mount; for a bind, of every mount under it as well.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Attrs {
    pub readonly: bool,
    pub nosuid: bool,
    pub nodev: bool,
    pub noexec: bool,
}

impl Attrs {
    /// What every mount gets: no set-user-ID programs, no device files.
    pub const NOSUID_NODEV: Attrs = Attrs {
        readonly: false,
        nosuid: true,
        nodev: true,
        noexec: false,
    };
    /// Devices (the host's /dev, a device file, a devpts): nosuid only.
    pub const DEVICES: Attrs = Attrs {
        nodev: false,
        ..Attrs::NOSUID_NODEV
    };
    pub const READ_ONLY: Attrs = Attrs {
        readonly: true,
        ..Attrs::NOSUID_NODEV
    };
}

/// The flags for a new mount with `attrs`.
pub fn ms_flags(attrs: Attrs) -> MsFlags {
    let mut f = MsFlags::empty();
    f.set(MsFlags::MS_RDONLY, attrs.readonly);
    f.set(MsFlags::MS_NOSUID, attrs.nosuid);
    f.set(MsFlags::MS_NODEV, attrs.nodev);
    f.set(MsFlags::MS_NOEXEC, attrs.noexec);
    f
}

/// `struct mount_attr` of mount_setattr(2).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOUNT_ATTR_NOEXEC: u64 = 0x8;

/// Adds the flags `attrs` asks for to the mount at `path` and, when `recursive`, to
/// every mount below it; flags already set stay (those the kernel locks in a user
/// namespace cannot be cleared anyway). One mount_setattr(2) call (Linux 5.12); before
/// that kernel, a remount of each mount listed in `self/mountinfo` under `proc`.
pub fn set_attrs(path: &Path, attrs: Attrs, recursive: bool, proc: &Path) -> nix::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let mut set = 0;
    for (on, bit) in [
        (attrs.readonly, MOUNT_ATTR_RDONLY),
        (attrs.nosuid, MOUNT_ATTR_NOSUID),
        (attrs.nodev, MOUNT_ATTR_NODEV),
        (attrs.noexec, MOUNT_ATTR_NOEXEC),
    ] {
        if on {
            set |= bit;
        }
    }
    if set == 0 {
        return Ok(());
    }
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| nix::Error::EINVAL)?;
    let attr = MountAttr {
        attr_set: set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let flags = if recursive { libc::AT_RECURSIVE } else { 0 };
    // SAFETY: a NUL-terminated path and a mount_attr of the size passed, both valid for
    // the call; the kernel only reads them.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            c.as_ptr(),
            flags as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r == 0 {
        return Ok(());
    }
    match nix::Error::last() {
        nix::Error::ENOSYS => remount_tree(path, attrs, recursive, proc),
        e => Err(e),
    }
}

/// What [`set_attrs`] does without mount_setattr: a remount of each mount.
fn remount_tree(path: &Path, attrs: Attrs, recursive: bool, proc: &Path) -> nix::Result<()> {
    let mut points = vec![path.to_path_buf()];
    if recursive {
        points.extend(mounts_below(path, proc)?);
    }
    points.iter().try_for_each(|p| remount_adding(p, attrs))
}

/// The mount points strictly below `path`, in the order `self/mountinfo` under
/// `proc` lists them (parents before children). Without the table the tree cannot be
/// covered: an error, not a partial remount.
fn mounts_below(path: &Path, proc: &Path) -> nix::Result<Vec<PathBuf>> {
    let table = fs::read_to_string(proc.join("self/mountinfo"))
        .map_err(|e| nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
    Ok(mountinfo_points(&table)
        .into_iter()
        .filter(|p| p != path && p.starts_with(path))
        .collect())
}

/// The mount points of a mountinfo table (the fifth field, octal escapes decoded).
fn mountinfo_points(table: &str) -> Vec<PathBuf> {
    use std::os::unix::ffi::OsStringExt;
    table
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|field| {
            let b = field.as_bytes();
            let mut out = Vec::with_capacity(b.len());
            let mut i = 0;
            while i < b.len() {
                let octal = b.get(i + 1..i + 4).and_then(|d| {
                    std::str::from_utf8(d)
                        .ok()
                        .and_then(|d| u8::from_str_radix(d, 8).ok())
                });
                match (b[i], octal) {
                    (b'\\', Some(c)) => {
                        out.push(c);
                        i += 4;
                    }
                    (c, _) => {
                        out.push(c);
                        i += 1;
                    }
                }
            }
            PathBuf::from(std::ffi::OsString::from_vec(out))
        })
        .collect()
}

/// `mount -o remount,bind` adding `attrs`, keeping the flags the mount has (those the
/// kernel locks in a user namespace — nosuid, nodev, noexec, atime flags — must be
/// repeated, or the remount is refused with EPERM).
fn remount_adding(path: &Path, attrs: Attrs) -> nix::Result<()> {
    let st = statvfs(path)?;
    let f = st.flags();
    let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | ms_flags(attrs);
    for (fs_flag, ms_flag) in [
        (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        // ST_RELATIME (Linux's statfs flag 0x1000), spelt out: musl's headers lack it.
        (FsFlags::from_bits_retain(0x1000), MsFlags::MS_RELATIME),
    ] {
        if f.contains(fs_flag) {
            flags |= ms_flag;
        }
    }
    nix::mount::mount(None::<&str>, path, None::<&str>, flags, None::<&str>)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::mount::mount;

    /// Both ways of setting the flags, on a tree of two tmpfs mounts, in a user and
    /// mount namespace of a child process of the test's own.
    #[test]
    fn flags_are_set_down_the_tree_with_mount_setattr_and_by_remounting() {
        let dir = tempfile::tempdir().unwrap();
        let probe = |f: &dyn Fn(&Path) -> nix::Result<()>| -> Option<bool> {
            // SAFETY: the child only makes system calls and file operations, then _exits.
            match unsafe { nix::unistd::fork() }.unwrap() {
                nix::unistd::ForkResult::Child => {
                    let ok =
                        (|| -> Option<bool> {
                            let (uid, gid) = (nix::unistd::getuid(), nix::unistd::getgid());
                            nix::sched::unshare(
                                nix::sched::CloneFlags::CLONE_NEWUSER
                                    | nix::sched::CloneFlags::CLONE_NEWNS,
                            )
                            .ok()?;
                            fs::write("/proc/self/setgroups", "deny").ok()?;
                            fs::write("/proc/self/uid_map", format!("0 {uid} 1")).ok()?;
                            fs::write("/proc/self/gid_map", format!("0 {gid} 1")).ok()?;
                            let top = dir.path();
                            let tmpfs = |p: &Path| {
                                mount(Some("t"), p, Some("tmpfs"), MsFlags::empty(), None::<&str>)
                            };
                            tmpfs(top).ok()?;
                            fs::create_dir(top.join("sub")).ok()?;
                            tmpfs(&top.join("sub")).ok()?;
                            f(top).ok()?;
                            let want = FsFlags::ST_RDONLY | FsFlags::ST_NOSUID | FsFlags::ST_NODEV;
                            Some([top.to_path_buf(), top.join("sub")].iter().all(|p| {
                                statvfs(p.as_path()).is_ok_and(|s| s.flags().contains(want))
                            }))
                        })();
                    // SAFETY: leave the forked test process at once.
                    unsafe { libc::_exit(ok.map_or(2, |all| if all { 0 } else { 1 })) }
                }
                nix::unistd::ForkResult::Parent { child } => {
                    match nix::sys::wait::waitpid(child, None).unwrap() {
                        nix::sys::wait::WaitStatus::Exited(_, 0) => Some(true),
                        nix::sys::wait::WaitStatus::Exited(_, 1) => Some(false),
                        _ => None,
                    }
                }
            }
        };
        let proc = Path::new("/proc");
        let by_setattr = probe(&|p| set_attrs(p, Attrs::READ_ONLY, true, proc));
        let Some(by_setattr) = by_setattr else {
            eprintln!("SKIP flags_are_set_down_the_tree: no user namespace for this test");
            return;
        };
        assert!(
            by_setattr,
            "mount_setattr left a mount of the tree writable"
        );
        assert_eq!(
            probe(&|p| remount_tree(p, Attrs::READ_ONLY, true, proc)),
            Some(true),
            "remounting left a mount of the tree writable"
        );
        // Not recursive: the submount keeps its flags.
        assert_eq!(
            probe(&|p| remount_tree(p, Attrs::READ_ONLY, false, proc)),
            Some(false)
        );
    }

    #[test]
    fn mountinfo_points_are_decoded() {
        let table = "36 35 98:0 / /mnt/a\\040b rw,nosuid - ext3 /dev/root rw\n\
                     37 36 0:5 / /mnt/a\\040b/sub rw - tmpfs none rw\n\
                     38 35 0:6 / /mnt/ab rw - tmpfs none rw\n";
        assert_eq!(
            mountinfo_points(table),
            [
                PathBuf::from("/mnt/a b"),
                PathBuf::from("/mnt/a b/sub"),
                PathBuf::from("/mnt/ab")
            ]
        );
        // "Below" is by path component: /mnt/ab is not under /mnt/a.
        let below: Vec<PathBuf> = mountinfo_points(table)
            .into_iter()
            .filter(|p| p != Path::new("/mnt/a b") && p.starts_with("/mnt/a b"))
            .collect();
        assert_eq!(below, [PathBuf::from("/mnt/a b/sub")]);
    }
}
