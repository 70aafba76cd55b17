//! Mount points inside the image's root: symlinks followed as the container will see
//! them, never out of the root.

#![forbid(unsafe_code)]

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use super::super::error::{LaunchError, Result};
use super::apply::display;

/// Resolves `dst` (a path under `root`) the way the container will see it — symlinks in
/// the image are followed inside `root`, never out of it — and creates what is missing:
/// directories, and an empty file for a file mount point.
pub(super) fn mount_point(root: &Path, dst: &Path, file: bool) -> Result<PathBuf> {
    let Ok(rel) = dst.strip_prefix(root) else {
        // A staging path, not inside the container.
        fs::create_dir_all(dst).map_err(|e| LaunchError::io("creating", dst, e))?;
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
            create().map_err(|err| LaunchError::MountPoint {
                path: display(root, &resolved),
                err,
            })?;
            Ok(resolved)
        }
        Err(e) => Err(LaunchError::io("looking up", resolved, e)),
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
                    return Err(LaunchError::TooManyLinks(
                        Path::new("/").join(next.strip_prefix(root).unwrap_or(&next)),
                    ));
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

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
