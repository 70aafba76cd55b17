//! File-tree operations on the staging directory: copying a host tree in (sandbox
//! sources, `%files`), extracting a squashfs, and fixing permissions afterwards. Owners
//! are kept only when running as root; an unprivileged build owns everything it writes,
//! and the squashfs writer maps the caller back to root.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use veil_fusefs::source::ReadAt;
use veil_fusefs::squashfs::{FileKind, Squashfs};

use super::error::{BuildError, Result};
use super::rooted::{Meta, Rooted};

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

/// Counts what an unprivileged copy had to leave out.
#[derive(Debug, Default, Clone, Copy)]
pub struct Skipped {
    pub devices: u64,
}

/// Copies `src` (a host file, symlink or directory tree, never followed) to `dst` inside
/// the tree `root` (the root itself for an empty `dst`), preserving modes, times,
/// symlinks and hard links (and owners, as root). Device nodes are made only when
/// `devices` (real root, asked for); otherwise they are counted as left out.
pub fn copy_tree(src: &Path, root: &Rooted, dst: &Path, devices: bool) -> Result<Skipped> {
    let mut c = Copy {
        root,
        links: HashMap::new(),
        skipped: Skipped::default(),
        dirs: Vec::new(),
        made: Vec::new(),
        devices: devices && can_mknod(),
    };
    c.one(src, dst)?;
    for (d, meta) in c.dirs.into_iter().rev() {
        root.set_meta(&d, meta)?;
    }
    Ok(c.skipped)
}

struct Copy<'a> {
    root: &'a Rooted,
    links: HashMap<(u64, u64), PathBuf>,
    skipped: Skipped,
    dirs: Vec<(PathBuf, Meta)>,
    made: Vec<PathBuf>,
    devices: bool,
}

impl Copy<'_> {
    fn meta(&self, md: &fs::Metadata, mode: bool) -> Meta {
        Meta {
            owner: is_root().then(|| host_owner(md)),
            mode: mode.then_some(md.mode() & 0o7777),
            mtime: Some(md.mtime()),
        }
    }

    fn one(&mut self, src: &Path, dst: &Path) -> Result<()> {
        let md = fs::symlink_metadata(src).map_err(|e| BuildError::io(src, e))?;
        let ft = md.file_type();
        let is_top = dst.as_os_str().is_empty();
        if ft.is_dir() {
            if !is_top {
                self.root.mkdir(dst, &mut self.made)?;
            }
            let mut names: Vec<_> = fs::read_dir(src)
                .map_err(|e| BuildError::io(src, e))?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<std::io::Result<_>>()
                .map_err(|e| BuildError::io(src, e))?;
            names.sort();
            for n in names {
                self.one(&src.join(&n), &dst.join(&n))?;
            }
            self.dirs.push((dst.to_path_buf(), self.meta(&md, true)));
            return Ok(());
        }
        if is_top {
            return Err(BuildError::Source(format!(
                "{}: not a directory",
                src.display()
            )));
        }
        if ft.is_symlink() {
            let t = fs::read_link(src).map_err(|e| BuildError::io(src, e))?;
            self.root.symlink(dst, t.as_os_str(), &mut self.made)?;
            return self.root.set_meta(dst, self.meta(&md, false));
        }
        if ft.is_file() {
            if md.nlink() > 1 {
                if let Some(first) = self.links.get(&(md.dev(), md.ino())) {
                    return self.root.hard_link(first, dst, &mut self.made);
                }
                self.links.insert((md.dev(), md.ino()), dst.to_path_buf());
            }
            let mut from = fs::File::open(src).map_err(|e| BuildError::io(src, e))?;
            let mut to = self.root.create_file(dst, true, &mut self.made)?;
            std::io::copy(&mut from, &mut to).map_err(|e| BuildError::io(src, e))?;
        } else if std::os::unix::fs::FileTypeExt::is_fifo(&ft) {
            self.root.mkfifo(dst, &mut self.made)?;
        } else if self.devices
            && (std::os::unix::fs::FileTypeExt::is_char_device(&ft)
                || std::os::unix::fs::FileTypeExt::is_block_device(&ft))
        {
            let block = std::os::unix::fs::FileTypeExt::is_block_device(&ft);
            self.root.mknod(dst, block, md.rdev(), &mut self.made)?;
        } else {
            self.skipped.devices += 1;
            return Ok(());
        }
        self.root.set_meta(dst, self.meta(&md, true))
    }
}

/// Extracts a squashfs into the (empty) tree `root`. A directory whose names are
/// not in strictly increasing order (a duplicate among them) is refused: a squashfs
/// writer never makes one, and a duplicate would replace what was just written.
pub fn extract_squashfs<R: ReadAt>(
    fs_: &Squashfs<R>,
    root: &Rooted,
    devices: bool,
) -> Result<Skipped> {
    let owners = is_root();
    let devices = devices && can_mknod();
    let mut skipped = Skipped::default();
    let mut dirs: Vec<(PathBuf, Meta)> = Vec::new();
    let mut links: HashMap<u32, PathBuf> = HashMap::new();
    let mut last: HashMap<PathBuf, Vec<u8>> = HashMap::new();
    let mut made = Vec::new();
    let sq = |e: veil_fusefs::squashfs::Error| BuildError::Source(format!("source image: {e}"));
    let rootattr = fs_.getattr(fs_.root()).map_err(sq)?;
    dirs.push((
        PathBuf::new(),
        Meta {
            owner: owners.then_some((rootattr.uid, rootattr.gid)),
            mode: Some(rootattr.perm as u32),
            mtime: Some(rootattr.mtime as i64),
        },
    ));
    let mut buf = vec![0u8; 1 << 20];
    let mut failure: Option<BuildError> = None;
    fs_.walk(|rel, a| {
        let p = PathBuf::from(std::ffi::OsStr::from_bytes(rel));
        let r: Result<()> = (|| {
            let name = p
                .file_name()
                .map(|n| n.as_bytes().to_vec())
                .unwrap_or_default();
            let parent = p.parent().map(Path::to_path_buf).unwrap_or_default();
            match last.get(&parent) {
                Some(prev) if prev.as_slice() >= name.as_slice() => {
                    return Err(BuildError::Source(format!(
                        "source image: directory /{} lists {:?} out of order or twice",
                        parent.display(),
                        String::from_utf8_lossy(&name)
                    )));
                }
                _ => {
                    last.insert(parent, name);
                }
            }
            let meta = Meta {
                owner: owners.then_some((a.uid, a.gid)),
                mode: Some(a.perm as u32),
                mtime: Some(a.mtime as i64),
            };
            match a.kind {
                FileKind::Directory => {
                    if !root.mkdir(&p, &mut made)? {
                        return Err(BuildError::Source(format!(
                            "source image: /{} is listed twice",
                            p.display()
                        )));
                    }
                    dirs.push((p.clone(), meta));
                    return Ok(());
                }
                FileKind::File => {
                    if a.nlink > 1 {
                        if let Some(first) = links.get(&a.ino) {
                            return root.hard_link(first, &p, &mut made);
                        }
                        links.insert(a.ino, p.clone());
                    }
                    let mut f = root.create_file(&p, false, &mut made)?;
                    let mut off = 0u64;
                    while off < a.size {
                        let n = fs_
                            .read(a.id, off, &mut buf)
                            .map_err(|e| BuildError::Source(format!("source image: {e}")))?;
                        if n == 0 {
                            break;
                        }
                        f.write_all(&buf[..n])
                            .map_err(|e| BuildError::io(&root.path().join(&p), e))?;
                        off += n as u64;
                    }
                }
                FileKind::Symlink => {
                    let t = fs_
                        .readlink(a.id)
                        .map_err(|e| BuildError::Source(format!("source image: {e}")))?;
                    root.symlink(&p, std::ffi::OsStr::from_bytes(&t), &mut made)?;
                    return root.set_meta(&p, Meta { mode: None, ..meta });
                }
                FileKind::Fifo => root.mkfifo(&p, &mut made)?,
                FileKind::CharDevice | FileKind::BlockDevice if devices => {
                    let rdev = libc::makedev(a.rdev_major(), a.rdev_minor());
                    root.mknod(&p, a.kind == FileKind::BlockDevice, rdev, &mut made)?;
                }
                FileKind::CharDevice | FileKind::BlockDevice | FileKind::Socket => {
                    skipped.devices += 1;
                    return Ok(());
                }
            }
            root.set_meta(&p, meta)
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
    if !made.is_empty() {
        return Err(BuildError::Source(
            "source image: an entry comes before its directory".into(),
        ));
    }
    for (d, meta) in dirs.into_iter().rev() {
        root.set_meta(&d, meta)?;
    }
    Ok(skipped)
}

/// Removes a staging tree, never following a symlink in it (a tree made read-only can
/// still go).
pub fn remove_tree(root: &Path) {
    let _ = super::rooted::remove_tree(root);
}
