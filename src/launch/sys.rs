//! Applies a mount plan with system calls. Runs in the container process, inside its
//! own mount namespace, before `exec`; exercised by the integration tests.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt, symlink};
use std::path::{Component, Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::statvfs::{FsFlags, statvfs};

use super::error::{LaunchError, Result, SysContext};
use super::plan::{Attrs, IMAGE, SESSION, Step};

/// The flags for a new mount with `attrs`.
fn ms_flags(attrs: Attrs) -> MsFlags {
    let mut f = MsFlags::empty();
    f.set(MsFlags::MS_RDONLY, attrs.readonly);
    f.set(MsFlags::MS_NOSUID, attrs.nosuid);
    f.set(MsFlags::MS_NODEV, attrs.nodev);
    f.set(MsFlags::MS_NOEXEC, attrs.noexec);
    f
}

pub fn apply(steps: &[Step], root: &Path) -> Result<()> {
    for step in steps {
        apply_one(step, root)?;
    }
    Ok(())
}

fn apply_one(step: &Step, root: &Path) -> Result<()> {
    match step {
        Step::Tmpfs { dst, mode } => {
            let Some(dst) = optional(mount_point(root, dst, false), false, true)? else {
                return Ok(());
            };
            let data = format!("mode={mode:o}");
            mount(
                Some("tmpfs"),
                &dst,
                Some("tmpfs"),
                ms_flags(Attrs::NOSUID_NODEV),
                Some(data.as_str()),
            )
            .ctx(|| format!("mounting a tmpfs on {}", display(root, &dst)))
        }
        Step::Mkdir { path, mode } => {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(*mode)
                .create(path)?;
            // The umask must not narrow modes like 1777.
            fs::set_permissions(path, fs::Permissions::from_mode(*mode))?;
            Ok(())
        }
        Step::WriteFile { path, contents } => Ok(fs::write(path, contents)?),
        Step::Overlay { dst } => {
            let data = format!(
                "lowerdir={IMAGE},upperdir={SESSION}/upper,workdir={SESSION}/work,userxattr"
            );
            mount(Some("overlay"), dst, Some("overlay"), ms_flags(Attrs::NOSUID_NODEV), Some(data.as_str())).ctx(|| {
                "mounting an overlay over the image (the kernel needs unprivileged overlayfs, Linux 5.11 or later)"
                    .to_string()
            })
        }
        Step::Bind {
            src,
            dst,
            recursive,
            attrs,
            file,
            required,
            why,
        } => {
            // Only a missing home or working directory is worth a warning; the host's
            // /etc files are a convenience the image may not have room for.
            let loud = *required || why.contains("home") || why.contains("working");
            let Some(dst) = optional(mount_point(root, dst, *file), *required, loud)? else {
                return Ok(());
            };
            let mut flags = MsFlags::MS_BIND;
            if *recursive {
                flags |= MsFlags::MS_REC;
            }
            mount(Some(src.as_path()), &dst, None::<&str>, flags, None::<&str>).ctx(|| {
                format!(
                    "binding {} to {} ({why})",
                    strip_host(src),
                    display(root, &dst)
                )
            })?;
            // A bind keeps the flags of what it binds (the host's home may well allow
            // set-user-ID programs); the plan's are set on it and, for a recursive
            // bind, on every mount it brought along.
            set_attrs(&dst, *attrs, *recursive)
                .ctx(|| format!("setting the flags of {}", display(root, &dst)))
        }
        Step::Proc { dst } => {
            let Some(dst) = optional(mount_point(root, dst, false), false, true)? else {
                return Ok(());
            };
            mount(
                Some("proc"),
                &dst,
                Some("proc"),
                ms_flags(step.attrs().unwrap_or(Attrs::NOSUID_NODEV)),
                None::<&str>,
            )
            .ctx(|| "mounting a private /proc".to_string())
        }
        Step::Devpts { dst } => {
            let Some(dst) = optional(mount_point(root, dst, false), false, true)? else {
                return Ok(());
            };
            // A private devpts may be refused in some user namespaces; the host's terminal
            // still works through the bound /dev/tty, so this is not fatal.
            let _ = mount(
                Some("devpts"),
                &dst,
                Some("devpts"),
                ms_flags(step.attrs().unwrap_or(Attrs::DEVICES)),
                Some("newinstance,ptmxmode=0666,mode=0620"),
            );
            Ok(())
        }
        Step::Symlink { target, link } => match symlink(target, link) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                eprintln!("veil: warning: cannot create {}: {e}", display(root, link));
                Ok(())
            }
            _ => Ok(()),
        },
        // Only the root itself: the binds on it have their own flags.
        Step::RemountRootReadOnly => set_attrs(root, Attrs::READ_ONLY, false)
            .ctx(|| "making the container root read-only".to_string()),
    }
}

/// A mount point that could not be made: fatal when `required`, else a warning.
fn optional(r: Result<PathBuf>, required: bool, loud: bool) -> Result<Option<PathBuf>> {
    match r {
        Ok(p) => Ok(Some(p)),
        Err(LaunchError::MountPoint(msg)) if !required => {
            if loud || std::env::var_os("VEIL_DEBUG").is_some() {
                eprintln!("veil: warning: skipping a mount: {msg}");
            }
            Ok(None)
        }
        Err(e) => Err(e),
    }
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
/// that kernel, a remount of each mount listed in /proc/self/mountinfo.
pub(crate) fn set_attrs(path: &Path, attrs: Attrs, recursive: bool) -> nix::Result<()> {
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
        nix::Error::ENOSYS => remount_tree(path, attrs, recursive),
        e => Err(e),
    }
}

/// What [`set_attrs`] does without mount_setattr: a remount of each mount.
fn remount_tree(path: &Path, attrs: Attrs, recursive: bool) -> nix::Result<()> {
    let mut points = vec![path.to_path_buf()];
    if recursive {
        points.extend(mounts_below(path));
    }
    points.iter().try_for_each(|p| remount_adding(p, attrs))
}

/// The mount points strictly below `path`, in the order /proc/self/mountinfo lists
/// them (parents before children).
fn mounts_below(path: &Path) -> Vec<PathBuf> {
    // While the plan is applied the host's /proc is at /.host/proc.
    let table = ["/proc/self/mountinfo", "/.host/proc/self/mountinfo"]
        .iter()
        .find_map(|p| fs::read_to_string(p).ok())
        .unwrap_or_default();
    mountinfo_points(&table)
        .into_iter()
        .filter(|p| p != path && p.starts_with(path))
        .collect()
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
    mount(None::<&str>, path, None::<&str>, flags, None::<&str>)
}

fn strip_host(p: &Path) -> String {
    match p.strip_prefix(super::plan::HOST) {
        Ok(rest) => Path::new("/").join(rest).display().to_string(),
        Err(_) => p.display().to_string(),
    }
}

fn display(root: &Path, p: &Path) -> String {
    match p.strip_prefix(root) {
        Ok(rest) => Path::new("/").join(rest).display().to_string(),
        Err(_) => p.display().to_string(),
    }
}

/// Resolves `dst` (a path under `root`) the way the container will see it — symlinks in
/// the image are followed inside `root`, never out of it — and creates what is missing:
/// directories, and an empty file for a file mount point.
fn mount_point(root: &Path, dst: &Path, file: bool) -> Result<PathBuf> {
    let Ok(rel) = dst.strip_prefix(root) else {
        // A staging path, not inside the container.
        fs::create_dir_all(dst)?;
        return Ok(dst.to_path_buf());
    };
    let resolved = resolve_in_root(root, rel)?;
    match fs::symlink_metadata(&resolved) {
        Ok(_) => Ok(resolved),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let create = || -> io::Result<()> {
                if file {
                    if let Some(parent) = resolved.parent() {
                        fs::create_dir_all(parent)?;
                    }
                    fs::OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(false)
                        .open(&resolved)?;
                } else {
                    fs::create_dir_all(&resolved)?;
                }
                Ok(())
            };
            create().map_err(|e| {
                LaunchError::MountPoint(format!(
                    "cannot create the mount point {} in the image: {e}",
                    display(root, &resolved)
                ))
            })?;
            Ok(resolved)
        }
        Err(e) => Err(e.into()),
    }
}

/// Follows symlinks component by component inside `root` (at most 40, like the kernel).
pub(crate) fn resolve_in_root(root: &Path, rel: &Path) -> Result<PathBuf> {
    let mut out = root.to_path_buf();
    let mut pending: Vec<std::ffi::OsString> = rel
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    let mut links = 0;
    while let Some(c) = pending.pop() {
        if c == ".." {
            if out != root {
                out.pop();
            }
            continue;
        }
        let next = out.join(&c);
        match fs::read_link(&next) {
            Ok(target) => {
                links += 1;
                if links > 40 {
                    return Err(LaunchError::Invalid(format!(
                        "too many symbolic links under {}",
                        display(root, &next)
                    )));
                }
                if target.is_absolute() {
                    out = root.to_path_buf();
                }
                for tc in target.components().rev() {
                    match tc {
                        Component::Normal(n) => pending.push(n.to_os_string()),
                        Component::ParentDir => pending.push("..".into()),
                        _ => {}
                    }
                }
            }
            Err(_) => out = next,
        }
    }
    Ok(out)
}

/// Makes the old root disappear: `pivot_root(".", ".")` then a lazy unmount of what is
/// stacked on top, the way that needs no directory for the old root.
pub fn pivot_into(new_root: &Path) -> Result<()> {
    nix::unistd::chdir(new_root).ctx(|| format!("entering {}", new_root.display()))?;
    nix::unistd::pivot_root(".", ".").ctx(|| "pivot_root into the container".to_string())?;
    umount2(".", MntFlags::MNT_DETACH).ctx(|| "detaching the host root".to_string())?;
    nix::unistd::chdir("/").ctx(|| "chdir /".to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let by_setattr = probe(&|p| set_attrs(p, Attrs::READ_ONLY, true));
        let Some(by_setattr) = by_setattr else {
            eprintln!("SKIP flags_are_set_down_the_tree: no user namespace for this test");
            return;
        };
        assert!(
            by_setattr,
            "mount_setattr left a mount of the tree writable"
        );
        assert_eq!(
            probe(&|p| remount_tree(p, Attrs::READ_ONLY, true)),
            Some(true),
            "remounting left a mount of the tree writable"
        );
        // Not recursive: the submount keeps its flags.
        assert_eq!(
            probe(&|p| remount_tree(p, Attrs::READ_ONLY, false)),
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

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        fs::create_dir_all(root.join("run/real")).unwrap();
        fs::create_dir_all(root.join("etc")).unwrap();
        symlink("/run/real/resolv.conf", root.join("etc/resolv.conf")).unwrap();
        symlink("../../..", root.join("run/real/up")).unwrap();
        symlink("loop", root.join("loop")).unwrap();
        assert_eq!(
            resolve_in_root(root, Path::new("etc/resolv.conf")).unwrap(),
            root.join("run/real/resolv.conf")
        );
        // `..` never climbs out of the root.
        assert_eq!(
            resolve_in_root(root, Path::new("run/real/up/etc")).unwrap(),
            root.join("etc")
        );
        assert!(resolve_in_root(root, Path::new("loop/x")).is_err());
        let p = mount_point(root, &root.join("etc/resolv.conf"), true).unwrap();
        assert_eq!(p, root.join("run/real/resolv.conf"));
        assert!(p.is_file());
    }
}
