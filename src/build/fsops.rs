//! File-tree operations on the staging directory: copying a host tree in (sandbox
//! sources, `%files`), extracting a squashfs, and fixing permissions afterwards. Owners
//! are kept only when running as root; an unprivileged build owns everything it writes,
//! and the squashfs writer maps the caller back to root.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use veil_fusefs::source::ReadAt;
use veil_fusefs::squashfs::{FileKind, Squashfs};

use super::error::{BuildError, Result};

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The owner a copied host file gets. In a namespace with subordinate ids, host owners
/// outside the map read as the kernel's overflow ids; a tree made by root on the host
/// (debootstrap under sudo, say) would then become nobody's, so those become root's, as
/// they do without subordinate ids. (A file truly owned by the overflow id inside the
/// map cannot be told apart and becomes root's too.)
fn host_owner(md: &fs::Metadata) -> (u32, u32) {
    if !super::subids::active() {
        return (md.uid(), md.gid());
    }
    let overflow = |f: &str| {
        fs::read_to_string(format!("/proc/sys/kernel/{f}"))
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .unwrap_or(65534)
    };
    let fix = |id: u32, over: u32| if id == over { 0 } else { id };
    (
        fix(md.uid(), overflow("overflowuid")),
        fix(md.gid(), overflow("overflowgid")),
    )
}

/// Device nodes need real root: root of a user namespace may not make them.
fn can_mknod() -> bool {
    is_root() && !super::subids::active()
}

fn cpath(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| BuildError::Source(format!("{}: NUL byte in path", p.display())))
}

/// Sets a path's times without following symlinks.
fn set_mtime(p: &Path, mtime: i64) {
    let Ok(c) = cpath(p) else { return };
    let ts = libc::timespec {
        tv_sec: mtime as _,
        tv_nsec: 0,
    };
    let times = [ts, ts];
    // SAFETY: `c` is NUL-terminated and `times` holds two timespecs, as utimensat wants.
    unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        );
    }
}

fn lchown(p: &Path, uid: u32, gid: u32) -> Result<()> {
    match std::os::unix::fs::lchown(p, Some(uid), Some(gid)) {
        // In a namespace with subordinate ids, an owner outside the map (shown as the
        // overflow id) cannot be given; the file stays root's, as without a map.
        Err(e) if super::subids::active() && e.raw_os_error() == Some(libc::EINVAL) => Ok(()),
        r => r.map_err(|e| BuildError::io(p, e)),
    }
}

fn mknod(p: &Path, mode: u32, rdev: u64) -> Result<()> {
    let c = cpath(p)?;
    // SAFETY: `c` is a NUL-terminated path; mknod has no memory preconditions.
    let rc = unsafe { libc::mknod(c.as_ptr(), mode, rdev as libc::dev_t) };
    if rc != 0 {
        return Err(BuildError::io(p, std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Counts what an unprivileged copy had to leave out.
#[derive(Debug, Default, Clone, Copy)]
pub struct Skipped {
    pub devices: u64,
}

/// Copies `src` (a file, symlink or directory tree) to `dst`, preserving modes, times,
/// symlinks and hard links (and owners, as root). Devices are copied only as root.
pub fn copy_tree(src: &Path, dst: &Path) -> Result<Skipped> {
    let mut links = HashMap::new();
    let mut skipped = Skipped::default();
    let mut dirs = Vec::new();
    copy_one(src, dst, &mut links, &mut skipped, &mut dirs)?;
    for (d, md) in dirs.into_iter().rev() {
        finish_dir(&d, &md)?;
    }
    Ok(skipped)
}

fn finish_dir(d: &Path, md: &fs::Metadata) -> Result<()> {
    fs::set_permissions(d, fs::Permissions::from_mode(md.mode() & 0o7777))
        .map_err(|e| BuildError::io(d, e))?;
    set_mtime(d, md.mtime());
    Ok(())
}

fn copy_one(
    src: &Path,
    dst: &Path,
    links: &mut HashMap<(u64, u64), PathBuf>,
    skipped: &mut Skipped,
    dirs: &mut Vec<(PathBuf, fs::Metadata)>,
) -> Result<()> {
    let md = fs::symlink_metadata(src).map_err(|e| BuildError::io(src, e))?;
    let ft = md.file_type();
    if ft.is_dir() {
        if !dst.is_dir() {
            fs::create_dir(dst).map_err(|e| BuildError::io(dst, e))?;
        }
        // Writable while filling; the real mode is set once the children are in.
        fs::set_permissions(dst, fs::Permissions::from_mode(0o700))
            .map_err(|e| BuildError::io(dst, e))?;
        let mut names: Vec<_> = fs::read_dir(src)
            .map_err(|e| BuildError::io(src, e))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<std::io::Result<_>>()
            .map_err(|e| BuildError::io(src, e))?;
        names.sort();
        for n in names {
            copy_one(&src.join(&n), &dst.join(&n), links, skipped, dirs)?;
        }
        if is_root() {
            let (u, g) = host_owner(&md);
            lchown(dst, u, g)?;
        }
        dirs.push((dst.to_path_buf(), md));
        return Ok(());
    }
    if fs::symlink_metadata(dst).is_ok() {
        fs::remove_file(dst).map_err(|e| BuildError::io(dst, e))?;
    }
    if ft.is_symlink() {
        let t = fs::read_link(src).map_err(|e| BuildError::io(src, e))?;
        symlink(&t, dst).map_err(|e| BuildError::io(dst, e))?;
    } else if ft.is_file() {
        if md.nlink() > 1 {
            if let Some(first) = links.get(&(md.dev(), md.ino())) {
                fs::hard_link(first, dst).map_err(|e| BuildError::io(dst, e))?;
                return Ok(());
            }
            links.insert((md.dev(), md.ino()), dst.to_path_buf());
        }
        fs::copy(src, dst).map_err(|e| BuildError::io(src, e))?;
        fs::set_permissions(dst, fs::Permissions::from_mode(md.mode() & 0o7777))
            .map_err(|e| BuildError::io(dst, e))?;
    } else if can_mknod() {
        mknod(dst, md.mode(), md.rdev())?;
    } else if std::os::unix::fs::FileTypeExt::is_fifo(&ft) {
        nix::unistd::mkfifo(
            dst,
            nix::sys::stat::Mode::from_bits_truncate(md.mode() & 0o777),
        )
        .map_err(|e| BuildError::io(dst, e.into()))?;
    } else {
        skipped.devices += 1;
        return Ok(());
    }
    if is_root() {
        let (u, g) = host_owner(&md);
        lchown(dst, u, g)?;
    }
    set_mtime(dst, md.mtime());
    Ok(())
}

/// Extracts a squashfs into `dest` (an existing, empty directory).
pub fn extract_squashfs<R: ReadAt>(fs_: &Squashfs<R>, dest: &Path) -> Result<Skipped> {
    let root = is_root();
    let mut skipped = Skipped::default();
    let mut dirs: Vec<(PathBuf, u16, u32)> = Vec::new();
    let mut links: HashMap<u32, PathBuf> = HashMap::new();
    let sq = |e: veil_fusefs::squashfs::Error| BuildError::Source(format!("source image: {e}"));
    let rootattr = fs_.getattr(fs_.root()).map_err(sq)?;
    dirs.push((dest.to_path_buf(), rootattr.perm, rootattr.mtime));
    let mut buf = vec![0u8; 1 << 20];
    let mut failure: Option<BuildError> = None;
    fs_.walk(|rel, a| {
        let p = dest.join(std::ffi::OsStr::from_bytes(rel));
        let r: Result<()> = (|| {
            match a.kind {
                FileKind::Directory => {
                    fs::create_dir(&p).map_err(|e| BuildError::io(&p, e))?;
                    fs::set_permissions(&p, fs::Permissions::from_mode(0o700))
                        .map_err(|e| BuildError::io(&p, e))?;
                    dirs.push((p.clone(), a.perm, a.mtime));
                }
                FileKind::File => {
                    if a.nlink > 1 {
                        if let Some(first) = links.get(&a.ino) {
                            fs::hard_link(first, &p).map_err(|e| BuildError::io(&p, e))?;
                            return Ok(());
                        }
                        links.insert(a.ino, p.clone());
                    }
                    let mut f = fs::File::create(&p).map_err(|e| BuildError::io(&p, e))?;
                    let mut off = 0u64;
                    while off < a.size {
                        let n = fs_
                            .read(a.id, off, &mut buf)
                            .map_err(|e| BuildError::Source(format!("source image: {e}")))?;
                        if n == 0 {
                            break;
                        }
                        f.write_all(&buf[..n]).map_err(|e| BuildError::io(&p, e))?;
                        off += n as u64;
                    }
                    fs::set_permissions(&p, fs::Permissions::from_mode(a.perm as u32))
                        .map_err(|e| BuildError::io(&p, e))?;
                }
                FileKind::Symlink => {
                    let t = fs_
                        .readlink(a.id)
                        .map_err(|e| BuildError::Source(format!("source image: {e}")))?;
                    symlink(std::ffi::OsStr::from_bytes(&t), &p)
                        .map_err(|e| BuildError::io(&p, e))?;
                }
                FileKind::Fifo => {
                    nix::unistd::mkfifo(
                        &p,
                        nix::sys::stat::Mode::from_bits_truncate(a.perm as u32 & 0o777),
                    )
                    .map_err(|e| BuildError::io(&p, e.into()))?;
                }
                FileKind::CharDevice | FileKind::BlockDevice | FileKind::Socket => {
                    if !can_mknod() || a.kind == FileKind::Socket {
                        skipped.devices += 1;
                        return Ok(());
                    }
                    let rdev = libc::makedev(a.rdev_major(), a.rdev_minor());
                    mknod(&p, a.mode(), rdev)?;
                }
            }
            if root {
                lchown(&p, a.uid, a.gid)?;
            }
            if a.kind != FileKind::Directory {
                set_mtime(&p, a.mtime as i64);
            }
            Ok(())
        })();
        match r {
            Ok(()) => Ok(()),
            Err(e) => {
                failure = Some(e);
                Err(veil_fusefs::squashfs::Error::DirLoop)
            }
        }
    })
    .map_err(|e| failure.take().unwrap_or_else(|| sq(e)))?;
    if root {
        lchown(dest, rootattr.uid, rootattr.gid)?;
    }
    for (d, perm, mtime) in dirs.into_iter().rev() {
        fs::set_permissions(&d, fs::Permissions::from_mode(perm as u32))
            .map_err(|e| BuildError::io(&d, e))?;
        set_mtime(&d, mtime as i64);
    }
    Ok(skipped)
}

/// Makes every directory under `root` writable by its owner (so a failed or finished
/// build's staging tree can be removed), then removes it.
pub fn remove_tree(root: &Path) {
    fn walk(p: &Path) {
        if fs::symlink_metadata(p).is_ok_and(|md| md.is_dir()) {
            let _ = fs::set_permissions(p, fs::Permissions::from_mode(0o700));
            if let Ok(rd) = fs::read_dir(p) {
                for e in rd.flatten() {
                    walk(&e.path());
                }
            }
        }
    }
    walk(root);
    let _ = fs::remove_dir_all(root);
}
