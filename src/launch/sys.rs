//! Applies a mount plan with system calls. Runs in the container process, inside its
//! own mount namespace, before `exec`; exercised by the integration tests.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt, symlink};
use std::path::{Component, Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::statvfs::{FsFlags, statvfs};

use super::error::{LaunchError, Result, SysContext};
use super::plan::{IMAGE, SESSION, Step};

const NOSUID_NODEV: MsFlags = MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV);

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
                NOSUID_NODEV,
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
            mount(Some("overlay"), dst, Some("overlay"), NOSUID_NODEV, Some(data.as_str())).ctx(|| {
                "mounting an overlay over the image (the kernel needs unprivileged overlayfs, Linux 5.11 or later)"
                    .to_string()
            })
        }
        Step::Bind {
            src,
            dst,
            recursive,
            readonly,
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
            if *readonly {
                remount_readonly(&dst)
                    .ctx(|| format!("making {} read-only", display(root, &dst)))?;
            }
            Ok(())
        }
        Step::Proc { dst } => {
            let Some(dst) = optional(mount_point(root, dst, false), false, true)? else {
                return Ok(());
            };
            mount(
                Some("proc"),
                &dst,
                Some("proc"),
                NOSUID_NODEV | MsFlags::MS_NOEXEC,
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
                MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
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
        Step::RemountRootReadOnly => {
            remount_readonly(root).ctx(|| "making the container root read-only".to_string())
        }
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

/// `mount -o remount,bind,ro`, keeping the flags the kernel locks in a user namespace
/// (nosuid, nodev, noexec, atime flags): dropping any of them is refused with EPERM.
pub(crate) fn remount_readonly(path: &Path) -> nix::Result<()> {
    let st = statvfs(path)?;
    let f = st.flags();
    let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    for (fs_flag, ms_flag) in [
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
