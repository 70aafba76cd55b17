//! Applies a mount plan through the seam. Runs in the container process, inside its
//! own mount namespace, before `exec`.

#![forbid(unsafe_code)]

use std::io;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};

use super::super::error::{LaunchError, Result, SysContext};
use super::super::plan::{Attrs, IMAGE, SESSION, Step};
use super::LaunchSys;
use crate::support::sys::ms_flags;

pub fn apply<S: LaunchSys>(sys: &S, steps: &[Step], root: &Path) -> Result<()> {
    for step in steps {
        apply_one(sys, step, root)?;
    }
    Ok(())
}

fn apply_one<S: LaunchSys>(sys: &S, step: &Step, root: &Path) -> Result<()> {
    match step {
        Step::Tmpfs { dst, mode } => {
            let Some(dst) = optional(sys.mount_point(root, dst, false), false, true)? else {
                return Ok(());
            };
            let data = format!("mode={mode:o}");
            sys.mount(
                Some(Path::new("tmpfs")),
                &dst,
                Some("tmpfs"),
                ms_flags(Attrs::NOSUID_NODEV),
                Some(data.as_str()),
            )
            .ctx_at("mounting a tmpfs on", display(root, &dst))
        }
        Step::Mkdir { path, mode } => sys
            .create_dir_all(path, *mode)
            .map_err(|err| LaunchError::io("creating", path, err)),
        Step::WriteFile { path, contents } => sys
            .write_file(path, contents)
            .map_err(|err| LaunchError::io("writing", path, err)),
        Step::Overlay { dst } => {
            let data = format!(
                "lowerdir={IMAGE},upperdir={SESSION}/upper,workdir={SESSION}/work,userxattr"
            );
            sys.mount(
                Some(Path::new("overlay")),
                dst,
                Some("overlay"),
                ms_flags(Attrs::NOSUID_NODEV),
                Some(data.as_str()),
            )
            .ctx("mounting an overlay over the image (the kernel needs unprivileged overlayfs, Linux 5.11 or later)")
        }
        Step::Bind {
            src,
            dst,
            recursive,
            attrs,
            file,
            required,
            why,
        } => apply_bind(
            sys,
            root,
            (src, dst),
            *recursive,
            *attrs,
            (*file, *required),
            why,
        ),
        Step::Proc { dst } => {
            let Some(dst) = optional(sys.mount_point(root, dst, false), false, true)? else {
                return Ok(());
            };
            sys.mount(
                Some(Path::new("proc")),
                &dst,
                Some("proc"),
                ms_flags(step.attrs().unwrap_or(Attrs::NOSUID_NODEV)),
                None,
            )
            .ctx("mounting a private /proc")
        }
        Step::Devpts { dst } => {
            let Some(dst) = optional(sys.mount_point(root, dst, false), false, true)? else {
                return Ok(());
            };
            // A private devpts may be refused in some user namespaces; the host's terminal
            // still works through the bound /dev/tty, so this is not fatal.
            let _ = sys.mount(
                Some(Path::new("devpts")),
                &dst,
                Some("devpts"),
                ms_flags(step.attrs().unwrap_or(Attrs::DEVICES)),
                Some("newinstance,ptmxmode=0666,mode=0620"),
            );
            Ok(())
        }
        Step::Symlink { target, link } => match sys.symlink(target, link) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                crate::say_warn!(
                    "veil: warning: cannot create {}: {e}",
                    display(root, link).display()
                );
                Ok(())
            }
            _ => Ok(()),
        },
        // Only the root itself: the binds on it have their own flags.
        Step::RemountRootReadOnly => sys
            .set_attrs(root, Attrs::READ_ONLY, false)
            .ctx("making the container root read-only"),
    }
}

/// A bind of `src` onto `dst` with the flags `attrs` (see [`Step::Bind`]).
fn apply_bind<S: LaunchSys>(
    sys: &S,
    root: &Path,
    (src, dst): (&Path, &Path),
    recursive: bool,
    attrs: Attrs,
    (file, required): (bool, bool),
    why: &str,
) -> Result<()> {
    // Only a missing home or working directory is worth a warning; the host's /etc
    // files are a convenience the image may not have room for.
    let loud = required || why.contains("home") || why.contains("working");
    let Some(dst) = optional(sys.mount_point(root, dst, file), required, loud)? else {
        return Ok(());
    };
    let mut flags = MsFlags::MS_BIND;
    if recursive {
        flags |= MsFlags::MS_REC;
    }
    match sys.mount(Some(src), &dst, None, flags, None) {
        // A default bind of something the host lacks (a minimal container as the
        // host, without /var/tmp): nothing to bind.
        Err(nix::errno::Errno::ENOENT) if !required => {
            crate::support::diag::debug_note(&format!(
                "skipping the bind of {} ({why}): not on the host",
                strip_host(src).display()
            ));
            return Ok(());
        }
        r => r,
    }
    .map_err(|err| LaunchError::Bind {
        src: strip_host(src),
        dst: display(root, &dst),
        why: why.to_string(),
        err,
    })?;
    // A bind keeps the flags of what it binds (the host's home may well allow
    // set-user-ID programs); the plan's are set on it and, for a recursive bind, on
    // every mount it brought along.
    sys.set_attrs(&dst, attrs, recursive)
        .ctx_at("setting the flags of", display(root, &dst))
}

/// A mount point that could not be made: fatal when `required`, else a warning.
fn optional(r: Result<PathBuf>, required: bool, loud: bool) -> Result<Option<PathBuf>> {
    match r {
        Ok(p) => Ok(Some(p)),
        Err(e @ LaunchError::MountPoint { .. }) if !required => {
            if loud || crate::support::say::verbose() {
                crate::say_warn!("veil: warning: skipping a mount: {e}");
            }
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

fn strip_host(p: &Path) -> PathBuf {
    match p.strip_prefix(super::super::plan::HOST) {
        Ok(rest) => Path::new("/").join(rest),
        Err(_) => p.to_path_buf(),
    }
}

/// `p` as the container sees it, when it is under `root`.
pub(super) fn display(root: &Path, p: &Path) -> PathBuf {
    match p.strip_prefix(root) {
        Ok(rest) => Path::new("/").join(rest),
        Err(_) => p.to_path_buf(),
    }
}

/// Makes the old root disappear: `pivot_root(".", ".")` then a lazy unmount of what is
/// stacked on top, the way that needs no directory for the old root.
pub fn pivot_into<S: LaunchSys>(sys: &S, new_root: &Path) -> Result<()> {
    sys.chdir(new_root).ctx_at("entering", new_root)?;
    sys.pivot_root(Path::new("."), Path::new("."))
        .ctx("pivot_root into the container")?;
    sys.umount(Path::new("."), MntFlags::MNT_DETACH)
        .ctx("detaching the host root")?;
    sys.chdir(Path::new("/")).ctx("chdir /")?;
    Ok(())
}
