//! The image tree the squashfs writer consumes: every entry's type, metadata and where
//! its bytes come from, held in memory before anything is written. A tree is scanned from
//! a directory, then the build adds or replaces entries (the `/.singularity.d` layout)
//! without touching the source directory.

#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::error::{BuildError, Result};

/// Where a regular file's bytes come from.
#[derive(Debug, Clone)]
pub enum FileData {
    /// A file on disk, read at write time.
    Path(PathBuf),
    /// Bytes held in memory (generated files).
    Bytes(Vec<u8>),
}

#[derive(Debug, Clone)]
pub enum Kind {
    /// Children by name (sorted bytewise, as squashfs requires).
    Dir(BTreeMap<Vec<u8>, usize>),
    File(FileData, u64),
    Symlink(Vec<u8>),
    CharDev(u64),
    BlockDev(u64),
    Fifo,
    Socket,
    /// Another name for the file at this index.
    HardLink(usize),
}

#[derive(Debug, Clone, Default)]
pub struct Meta {
    /// Permission bits, including setuid/setgid/sticky.
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u32,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

#[derive(Debug, Clone)]
pub struct Node {
    pub kind: Kind,
    pub meta: Meta,
}

/// One id range of a user namespace map: `inside` ids `inside..inside+count` are
/// `outside..outside+count` on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub inside: u32,
    pub outside: u32,
    pub count: u32,
}

/// How host file owners become image owners.
#[derive(Debug, Clone)]
pub enum Owners {
    /// As they are on disk.
    Keep,
    /// Through the inverse of a user-namespace map; ids outside every range become 0.
    /// An empty map makes every file root's, as `mksquashfs -all-root`.
    Map {
        uids: Vec<IdRange>,
        gids: Vec<IdRange>,
    },
}

impl Owners {
    pub fn all_root() -> Owners {
        Owners::Map {
            uids: Vec::new(),
            gids: Vec::new(),
        }
    }

    fn map(ranges: &[IdRange], host: u32) -> u32 {
        ranges
            .iter()
            .find(|r| host >= r.outside && host - r.outside < r.count)
            .map(|r| r.inside + (host - r.outside))
            .unwrap_or(0)
    }

    fn apply(&self, uid: u32, gid: u32) -> (u32, u32) {
        match self {
            Owners::Keep => (uid, gid),
            Owners::Map { uids, gids } => (Self::map(uids, uid), Self::map(gids, gid)),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Tree {
    nodes: Vec<Node>,
}

fn xattrs_of(path: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    // Extended attributes are copied where the host lets us read them; a file system
    // without xattr support simply has none. `list` and `get` do not follow a
    // symbolic link: its own attributes are read.
    let Ok(names) = xattr::list(path) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for name in names {
        let bytes = name.as_bytes();
        // Only the namespaces squashfs can store.
        if !(bytes.starts_with(b"user.")
            || bytes.starts_with(b"trusted.")
            || bytes.starts_with(b"security."))
        {
            continue;
        }
        if let Ok(Some(val)) = xattr::get(path, &name) {
            out.push((bytes.to_vec(), val));
        }
    }
    out.sort();
    out
}

fn clamp_time(t: i64, max: Option<u32>) -> u32 {
    let t = t.clamp(0, u32::MAX as i64) as u32;
    match max {
        Some(m) => t.min(m),
        None => t,
    }
}

/// Options for scanning a directory into a tree.
#[derive(Debug, Clone)]
pub struct ScanOptions {
    pub owners: Owners,
    /// Clamp every mtime to this (SOURCE_DATE_EPOCH).
    pub max_mtime: Option<u32>,
    /// Read extended attributes.
    pub xattrs: bool,
}

impl Tree {
    /// A tree holding only a root directory (0755, root-owned).
    pub fn new(mtime: u32) -> Tree {
        Tree {
            nodes: vec![Node {
                kind: Kind::Dir(BTreeMap::new()),
                meta: Meta {
                    perm: 0o755,
                    mtime,
                    ..Default::default()
                },
            }],
        }
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    pub fn root(&self) -> usize {
        0
    }

    /// Scans `dir` recursively (symlinks are not followed) into a tree.
    pub fn scan(dir: &Path, opts: &ScanOptions) -> Result<Tree> {
        let md = fs::metadata(dir).map_err(|e| BuildError::io(dir, e))?;
        if !md.is_dir() {
            return Err(BuildError::source(dir, "not a directory"));
        }
        let mut t = Tree::new(0);
        t.nodes[0].meta = t.meta_of(dir, &md, opts);
        let mut links: HashMap<(u64, u64), usize> = HashMap::new();
        t.scan_into(0, dir, opts, &mut links, md.dev())?;
        Ok(t)
    }

    fn meta_of(&self, path: &Path, md: &fs::Metadata, opts: &ScanOptions) -> Meta {
        let (uid, gid) = opts.owners.apply(md.uid(), md.gid());
        Meta {
            perm: (md.mode() & 0o7777) as u16,
            uid,
            gid,
            mtime: clamp_time(md.mtime(), opts.max_mtime),
            xattrs: if opts.xattrs {
                xattrs_of(path)
            } else {
                Vec::new()
            },
        }
    }

    fn scan_into(
        &mut self,
        parent: usize,
        dir: &Path,
        opts: &ScanOptions,
        links: &mut HashMap<(u64, u64), usize>,
        dev: u64,
    ) -> Result<()> {
        let rd = fs::read_dir(dir).map_err(|e| BuildError::io(dir, e))?;
        let mut entries: Vec<_> = rd
            .map(|e| e.map(|e| e.file_name()))
            .collect::<std::io::Result<_>>()
            .map_err(|e| BuildError::io(dir, e))?;
        entries.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for name in entries {
            let path = dir.join(&name);
            let md = fs::symlink_metadata(&path).map_err(|e| BuildError::io(&path, e))?;
            let meta = self.meta_of(&path, &md, opts);
            let ft = md.file_type();
            let kind = if ft.is_dir() {
                Kind::Dir(BTreeMap::new())
            } else if ft.is_file() {
                if md.nlink() > 1
                    && let Some(&first) = links.get(&(md.dev(), md.ino()))
                {
                    self.link(parent, name.into_vec(), Kind::HardLink(first), meta);
                    continue;
                }
                Kind::File(FileData::Path(path.clone()), md.len())
            } else if ft.is_symlink() {
                let target = fs::read_link(&path).map_err(|e| BuildError::io(&path, e))?;
                Kind::Symlink(target.into_os_string().into_vec())
            } else if ft.is_char_device() {
                Kind::CharDev(md.rdev())
            } else if ft.is_block_device() {
                Kind::BlockDev(md.rdev())
            } else if ft.is_fifo() {
                Kind::Fifo
            } else {
                Kind::Socket
            };
            let is_dir = matches!(kind, Kind::Dir(_));
            let idx = self.link(parent, name.into_vec(), kind, meta);
            if ft.is_file() && md.nlink() > 1 {
                links.insert((md.dev(), md.ino()), idx);
            }
            // Like mksquashfs without -one-file-system, but a mount point inside the
            // tree (a bind left over by a build step) is kept as an empty directory.
            if is_dir && md.dev() == dev {
                self.scan_into(idx, &path, opts, links, dev)?;
            }
        }
        Ok(())
    }

    fn link(&mut self, parent: usize, name: Vec<u8>, kind: Kind, meta: Meta) -> usize {
        let idx = self.nodes.len();
        self.nodes.push(Node { kind, meta });
        if let Kind::Dir(children) = &mut self.nodes[parent].kind {
            children.insert(name, idx);
        }
        idx
    }

    /// The index of the directory at `path` (`/a/b`), created (0755, root, `mtime`) with
    /// its parents when missing. A non-directory in the way is replaced.
    pub fn mkdir_p(&mut self, path: &str, mtime: u32) -> usize {
        let mut cur = 0;
        for comp in path.split('/').filter(|c| !c.is_empty() && *c != ".") {
            let existing = match &self.nodes[cur].kind {
                Kind::Dir(ch) => ch.get(comp.as_bytes()).copied(),
                _ => None,
            };
            cur = match existing {
                Some(i) if matches!(self.nodes[i].kind, Kind::Dir(_)) => i,
                _ => self.link(
                    cur,
                    comp.as_bytes().to_vec(),
                    Kind::Dir(BTreeMap::new()),
                    Meta {
                        perm: 0o755,
                        mtime,
                        ..Default::default()
                    },
                ),
            };
        }
        cur
    }

    /// Puts an entry at `path`, replacing what was there (a directory keeps its children
    /// when replaced by a directory).
    pub fn put(&mut self, path: &str, kind: Kind, meta: Meta) {
        let (dir, name) = match path.trim_end_matches('/').rsplit_once('/') {
            Some((d, n)) => (d, n),
            None => ("", path),
        };
        let parent = self.mkdir_p(dir, meta.mtime);
        let existing = match &self.nodes[parent].kind {
            Kind::Dir(ch) => ch.get(name.as_bytes()).copied(),
            _ => None,
        };
        match existing {
            Some(i)
                if matches!(kind, Kind::Dir(_)) && matches!(self.nodes[i].kind, Kind::Dir(_)) =>
            {
                self.nodes[i].meta = meta;
            }
            _ => {
                self.link(parent, name.as_bytes().to_vec(), kind, meta);
            }
        }
    }

    /// Looks up `path`, following no symlinks.
    pub fn lookup(&self, path: &str) -> Option<usize> {
        let mut cur = 0;
        for comp in path.split('/').filter(|c| !c.is_empty() && *c != ".") {
            cur = match &self.nodes[cur].kind {
                Kind::Dir(ch) => *ch.get(comp.as_bytes())?,
                _ => return None,
            };
        }
        Some(cur)
    }

    /// The bytes of a regular file in the tree, when small enough to read.
    pub fn read_file(&self, path: &str) -> Option<Vec<u8>> {
        let mut i = self.lookup(path)?;
        if let Kind::HardLink(t) = self.nodes[i].kind {
            i = t;
        }
        match &self.nodes[i].kind {
            Kind::File(FileData::Bytes(b), _) => Some(b.clone()),
            Kind::File(FileData::Path(p), len) if *len < (16 << 20) => fs::read(p).ok(),
            _ => None,
        }
    }

    /// Total bytes of regular file data (for progress).
    pub fn data_bytes(&self) -> u64 {
        self.nodes
            .iter()
            .map(|n| match n.kind {
                Kind::File(_, len) => len,
                _ => 0,
            })
            .sum()
    }
}
