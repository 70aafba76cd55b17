//! The filesystem-facing API: what the FUSE server calls, from any number of
//! threads, through `&self`.
//!
//! # Inode ids
//!
//! An [`InodeId`] is the FUSE node id. The root is always 1 (FUSE's fixed root
//! id); every other node is its squashfs inode reference (block offset << 16 |
//! offset in block, at most 48 bits) plus 2, so ids map to inodes with one
//! subtraction and no table. Hard links share an inode, hence an id. The
//! squashfs inode *number* (what `stat` shows as `st_ino`) is in [`Attr::ino`].

#![forbid(unsafe_code)]

use std::collections::HashSet;
use std::sync::Arc;

use super::blocks::{Blocks, CacheSizes};
use super::cache::{Cache, Weight};
use super::data::{self, Fragments};
use super::dir::{Listing, RawEntry};
use super::error::{Error, Result};
use super::inode::{self, Body, FileKind, Inode, NONE};
use super::superblock::{ABSENT, SIZE, Superblock};
use super::table::Table;
use super::xattr::Xattrs;
use crate::source::ReadAt;

/// A node id, usable directly as the FUSE node id (root = 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InodeId(pub u64);

impl InodeId {
    pub const ROOT: InodeId = InodeId(1);
}

/// Tunables: cache memory and limits on what an image may make us do.
#[derive(Debug, Clone)]
pub struct Options {
    pub caches: CacheSizes,
    /// Most blocks a single file may have (bounds the block list kept in memory).
    /// The default, 2^24, is 2 TiB at the default 128 KiB block size.
    pub max_file_blocks: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            caches: CacheSizes::default(),
            max_file_blocks: 1 << 24,
        }
    }
}

/// Attributes of a node, in the shape `stat` and FUSE want.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    pub id: InodeId,
    /// The squashfs inode number (`st_ino`).
    pub ino: u32,
    pub kind: FileKind,
    /// Permission bits including setuid, setgid and sticky (`mode & 0o7777`).
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// 512-byte units, as `st_blocks`.
    pub blocks: u64,
    /// Seconds since the epoch (squashfs keeps whole seconds only).
    pub mtime: u32,
    pub nlink: u32,
    /// Device number of block and character devices, Linux `dev_t` encoding.
    pub rdev: u32,
    pub has_xattrs: bool,
}

impl Attr {
    /// Full `st_mode`: type bits and permission bits.
    pub fn mode(&self) -> u32 {
        self.kind.mode_bits() | u32::from(self.perm)
    }

    pub fn rdev_major(&self) -> u32 {
        (self.rdev & 0xfff00) >> 8
    }

    pub fn rdev_minor(&self) -> u32 {
        (self.rdev & 0xff) | ((self.rdev >> 12) & 0xfff00)
    }
}

/// One directory entry ("." and ".." are not stored; the FUSE server adds them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub name: Vec<u8>,
    pub id: InodeId,
    /// The squashfs inode number.
    pub ino: u32,
    pub kind: FileKind,
    /// Pass back to [`Squashfs::readdir`] to continue after this entry. Cookies
    /// are non-zero and below 2^42, so a server may reserve small values for "."
    /// and "..".
    pub cookie: u64,
}

/// Filesystem statistics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatFs {
    pub block_size: u32,
    /// Image size in blocks (rounded up).
    pub blocks: u64,
    pub inodes: u32,
    pub bytes_used: u64,
    pub name_max: u32,
}

impl Weight for Inode {
    fn weight(&self) -> usize {
        Inode::weight(self)
    }
}

/// A squashfs image opened over a byte source.
pub struct Squashfs<R> {
    img: Blocks<R>,
    ids: Box<[u32]>,
    frags: Fragments,
    xattrs: Option<Xattrs>,
    inodes: Cache<Inode>,
    /// Where the directory table ends (the next table's first byte).
    dir_end: u64,
    max_blocks: u64,
}

impl<R: ReadAt> Squashfs<R> {
    /// Opens an image with default options.
    pub fn open(src: R) -> Result<Self> {
        Self::open_with(src, Options::default())
    }

    /// Opens an image: validates the superblock, loads the uid/gid table and the
    /// fragment and xattr indexes, and checks that the root is a directory.
    pub fn open_with(src: R, opts: Options) -> Result<Self> {
        let mut b = [0u8; SIZE];
        src.read_exact_at(&mut b, 0)
            .map_err(|_| Error::BadSuperblock("image shorter than a superblock"))?;
        let sb = Superblock::parse(&b, src.len())?;
        let img = Blocks::new(src, sb, &opts.caches);
        let sb = &img.sb;
        let id_table = Table::open(&img, sb.id_table, sb.id_table, u64::from(sb.id_count), 4)?;
        let ids = (0..u64::from(sb.id_count))
            .map(|i| id_table.entry::<R, 4>(&img, i).map(u32::from_le_bytes))
            .collect::<Result<Box<[u32]>>>()?;
        let frags = Fragments::open(&img)?;
        let xattrs = Xattrs::open(&img)?;
        // The directory table ends where the first later table begins.
        let mut candidates = vec![sb.bytes_used, sb.id_table];
        candidates.extend(id_table.first_block());
        candidates.extend(frags.first_block());
        if sb.fragment_count > 0 {
            candidates.push(sb.fragment_table);
        }
        if sb.export_table != ABSENT {
            candidates.push(sb.export_table);
        }
        if sb.has_xattrs() {
            candidates.push(sb.xattr_table);
        }
        let dir_end = candidates
            .into_iter()
            .filter(|&c| c > sb.directory_table)
            .min()
            .unwrap_or(sb.bytes_used);
        let fs = Self {
            ids,
            frags,
            xattrs,
            inodes: Cache::new(opts.caches.inodes),
            dir_end,
            max_blocks: opts.max_file_blocks,
            img,
        };
        if fs.inode(InodeId::ROOT)?.kind != FileKind::Directory {
            return Err(Error::CorruptMsg("root inode is not a directory"));
        }
        Ok(fs)
    }

    /// The superblock, for callers that want the raw figures.
    pub fn superblock(&self) -> &Superblock {
        &self.img.sb
    }

    /// The id of the root directory (always [`InodeId::ROOT`]).
    pub fn root(&self) -> InodeId {
        InodeId::ROOT
    }

    fn id_of(&self, iref: u64) -> InodeId {
        if iref == self.img.sb.root_inode {
            InodeId::ROOT
        } else {
            InodeId(iref + 2)
        }
    }

    fn iref_of(&self, id: InodeId) -> Result<u64> {
        match id.0 {
            0 => Err(Error::BadInodeId(0)),
            1 => Ok(self.img.sb.root_inode),
            n => Ok(n - 2),
        }
    }

    fn inode(&self, id: InodeId) -> Result<Arc<Inode>> {
        let iref = self.iref_of(id)?;
        self.inodes
            .get_or_load(iref, || inode::read(&self.img, iref, self.max_blocks))
    }

    fn attr_of(&self, id: InodeId, i: &Inode) -> Result<Attr> {
        let id_at = |idx: u16| {
            self.ids
                .get(usize::from(idx))
                .copied()
                .ok_or(Error::CorruptMsg("uid/gid index out of range"))
        };
        let blocks = match &i.body {
            Body::File(f) => f.size.saturating_sub(f.sparse).div_ceil(512),
            _ => 0,
        };
        Ok(Attr {
            id,
            ino: i.number,
            kind: i.kind,
            perm: i.perm,
            uid: id_at(i.uid_idx)?,
            gid: id_at(i.gid_idx)?,
            size: i.size(),
            blocks,
            mtime: i.mtime,
            nlink: i.nlink,
            rdev: match i.body {
                Body::Device(d) => d,
                _ => 0,
            },
            has_xattrs: i.xattr != NONE && self.xattrs.is_some(),
        })
    }

    /// Attributes of a node.
    pub fn getattr(&self, id: InodeId) -> Result<Attr> {
        let i = self.inode(id)?;
        self.attr_of(id, &i)
    }

    fn dir(&self, id: InodeId) -> Result<Arc<Inode>> {
        let i = self.inode(id)?;
        match i.body {
            Body::Dir(_) => Ok(i),
            _ => Err(Error::NotDir),
        }
    }

    /// Finds `name` in directory `parent` (using the directory index when the
    /// directory has one) and returns its attributes.
    pub fn lookup(&self, parent: InodeId, name: &[u8]) -> Result<Attr> {
        let p = self.dir(parent)?;
        let Body::Dir(d) = &p.body else {
            return Err(Error::NotDir);
        };
        let mut l = Listing::for_name(&self.img, d, self.dir_end, name)?;
        while let Some(e) = l.next_entry()? {
            match e.name.as_slice().cmp(name) {
                std::cmp::Ordering::Equal => return self.getattr(self.id_of(e.iref)),
                // Entries are sorted by name: past it means it is not there.
                std::cmp::Ordering::Greater => break,
                std::cmp::Ordering::Less => {}
            }
        }
        Err(Error::NotFound)
    }

    /// Resolves a slash-separated path from the root (no symlink following).
    pub fn lookup_path(&self, path: &[u8]) -> Result<Attr> {
        let mut cur = self.getattr(InodeId::ROOT)?;
        for part in path.split(|&b| b == b'/').filter(|p| !p.is_empty()) {
            cur = self.lookup(cur.id, part)?;
        }
        Ok(cur)
    }

    /// Entries of directory `dir`, starting after the entry whose cookie is
    /// `cookie` (0: from the start).
    pub fn readdir(&self, dir: InodeId, cookie: u64) -> Result<ReadDir<'_, R>> {
        let i = self.dir(dir)?;
        let Body::Dir(d) = &i.body else {
            return Err(Error::NotDir);
        };
        let listing = Listing::resume(&self.img, d, self.dir_end, cookie)?;
        Ok(ReadDir { fs: self, listing })
    }

    /// Target of a symbolic link.
    pub fn readlink(&self, id: InodeId) -> Result<Vec<u8>> {
        match &self.inode(id)?.body {
            Body::Symlink(t) => Ok(t.to_vec()),
            _ => Err(Error::NotSymlink),
        }
    }

    /// Reads file bytes at `offset` into `buf`; returns the count, short only at
    /// the end of the file. Only the blocks overlapping the range are read.
    pub fn read(&self, id: InodeId, offset: u64, buf: &mut [u8]) -> Result<usize> {
        match &self.inode(id)?.body {
            Body::File(f) => data::read(&self.img, &self.frags, f, offset, buf, false),
            _ => Err(Error::NotFile),
        }
    }

    /// As [`Squashfs::read`], but every block goes through the block cache: for
    /// readers that share blocks with other threads reading the same file.
    pub fn read_cached(&self, id: InodeId, offset: u64, buf: &mut [u8]) -> Result<usize> {
        match &self.inode(id)?.body {
            Body::File(f) => data::read(&self.img, &self.frags, f, offset, buf, true),
            _ => Err(Error::NotFile),
        }
    }

    /// The stored data blocks of a file as (disk offset, size field, decompressed
    /// length), sparse holes and the fragment tail left out. For benchmarks that
    /// compare reads against raw decompression of the same blocks.
    #[doc(hidden)]
    pub fn data_blocks(&self, id: InodeId) -> Result<Vec<(u64, u32, usize)>> {
        let i = self.inode(id)?;
        let Body::File(f) = &i.body else {
            return Err(Error::NotFile);
        };
        let bs = u64::from(self.img.sb.block_size);
        Ok(f.sizes
            .iter()
            .enumerate()
            .filter(|(_, s)| **s & super::blocks::BLOCK_SIZE_MASK != 0)
            .map(|(n, &s)| (f.block_pos(n), s, (f.size - n as u64 * bs).min(bs) as usize))
            .collect())
    }

    /// Where a regular file's bytes lie as they are, one run in the image, when
    /// they do: every block stored uncompressed and whole (the last one as long as
    /// what is left), no hole and no fragment, as `mksquashfs -noD -noF` writes a
    /// file. `(offset in the source, length)`; `None` otherwise. The file can then
    /// be read straight from the source (and from its mapping), with no block
    /// cache and no copy.
    pub fn stored_extent(&self, id: InodeId) -> Result<Option<(u64, u64)>> {
        let i = self.inode(id)?;
        let Body::File(f) = &i.body else {
            return Err(Error::NotFile);
        };
        if f.fragment != super::inode::NONE || f.sparse != 0 {
            return Ok(None);
        }
        let bs = u64::from(self.img.sb.block_size);
        let whole = f.sizes.iter().enumerate().all(|(n, &s)| {
            let want = f.size.saturating_sub(n as u64 * bs).min(bs);
            s & super::blocks::BLOCK_UNCOMPRESSED != 0
                && u64::from(s & super::blocks::BLOCK_SIZE_MASK) == want
        });
        let end = f.blocks_start.checked_add(f.size);
        Ok((whole
            && f.sizes.len() as u64 == f.size.div_ceil(bs)
            && end.is_some_and(|e| e <= self.img.src.len()))
        .then_some((f.blocks_start, f.size)))
    }

    /// The source the image is read from.
    pub fn source(&self) -> &R {
        &self.img.src
    }

    /// The image's compressor.
    pub fn compressor(&self) -> super::Compressor {
        self.img.sb.compressor
    }

    /// All extended attributes as (full name, value).
    pub fn xattrs(&self, id: InodeId) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let i = self.inode(id)?;
        match (&self.xattrs, i.xattr) {
            (Some(x), idx) if idx != NONE => x.get_all(&self.img, idx),
            _ => Ok(Vec::new()),
        }
    }

    /// Names of the extended attributes (with their namespace prefix).
    pub fn listxattr(&self, id: InodeId) -> Result<Vec<Vec<u8>>> {
        Ok(self.xattrs(id)?.into_iter().map(|(n, _)| n).collect())
    }

    /// Value of one extended attribute; [`Error::NoXattr`] when absent.
    pub fn getxattr(&self, id: InodeId, name: &[u8]) -> Result<Vec<u8>> {
        self.xattrs(id)?
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
            .ok_or(Error::NoXattr)
    }

    pub fn statfs(&self) -> StatFs {
        let sb = &self.img.sb;
        StatFs {
            block_size: sb.block_size,
            blocks: sb.bytes_used.div_ceil(u64::from(sb.block_size)),
            inodes: sb.inode_count,
            bytes_used: sb.bytes_used,
            name_max: inode::MAX_NAME,
        }
    }

    /// Visits every node below the root, depth first, parents before children,
    /// with its path (relative, no leading slash). A directory reached twice is a
    /// loop in a hostile image and ends the walk with [`Error::DirLoop`].
    pub fn walk(&self, mut visit: impl FnMut(&[u8], &Attr) -> Result<()>) -> Result<()> {
        let mut seen = HashSet::new();
        seen.insert(InodeId::ROOT);
        let mut stack = vec![(Vec::new(), InodeId::ROOT)];
        while let Some((path, dir)) = stack.pop() {
            let mut subdirs = Vec::new();
            for e in self.readdir(dir, 0)? {
                let e = e?;
                let mut p = path.clone();
                if !p.is_empty() {
                    p.push(b'/');
                }
                p.extend_from_slice(&e.name);
                let a = self.getattr(e.id)?;
                visit(&p, &a)?;
                if a.kind == FileKind::Directory {
                    if !seen.insert(a.id) {
                        return Err(Error::DirLoop);
                    }
                    subdirs.push((p, a.id));
                }
            }
            stack.extend(subdirs.into_iter().rev());
        }
        Ok(())
    }
}

/// Iterator over directory entries, from [`Squashfs::readdir`].
pub struct ReadDir<'a, R> {
    fs: &'a Squashfs<R>,
    listing: Listing<'a, R>,
}

impl<R: ReadAt> Iterator for ReadDir<'_, R> {
    type Item = Result<DirEntry>;
    fn next(&mut self) -> Option<Self::Item> {
        Some(self.listing.next()?.map(|e: RawEntry| DirEntry {
            id: self.fs.id_of(e.iref),
            name: e.name,
            ino: e.number,
            kind: e.kind,
            cookie: e.cookie,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_can_be_shared_between_threads() {
        fn shared<T: Send + Sync>() {}
        shared::<Squashfs<crate::source::FileSource>>();
        shared::<Squashfs<std::sync::Arc<dyn ReadAt>>>();
    }

    #[test]
    fn garbage_is_refused_without_panicking() {
        assert!(Squashfs::open(&b""[..]).is_err());
        assert!(Squashfs::open(&[0u8; 4096][..]).is_err());
        assert!(matches!(
            Squashfs::open(&b"hsqs"[..]),
            Err(Error::BadSuperblock(_))
        ));
    }
}
