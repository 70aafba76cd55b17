//! Inodes: the 16-byte common header and the fourteen type-specific bodies
//! (basic and extended forms of directory, file, symlink, block and character
//! device, fifo and socket).

#![forbid(unsafe_code)]

use super::blocks::{BLOCK_SIZE_MASK, Blocks, METADATA_SIZE};
use super::error::{Error, Result, corrupt};
use super::metadata::Cursor;
use crate::source::ReadAt;

/// "No fragment" and "no xattrs" are both stored as all-ones.
pub const NONE: u32 = u32::MAX;
/// Longest symlink target accepted (Linux PATH_MAX).
pub const MAX_SYMLINK: u32 = 4096;
/// Longest file name in a directory or directory index.
pub const MAX_NAME: u32 = 256;
/// Block-list checkpoints: one absolute disk position every this many blocks, so a
/// random read sums at most this many sizes to find its block.
const CHECKPOINT_EVERY: usize = 64;

/// The type of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    Directory,
    File,
    Symlink,
    BlockDevice,
    CharDevice,
    Fifo,
    Socket,
}

impl FileKind {
    /// Kind from the basic type number used in inodes and directory entries.
    pub fn from_basic(t: u16) -> Option<Self> {
        Some(match t {
            1 => Self::Directory,
            2 => Self::File,
            3 => Self::Symlink,
            4 => Self::BlockDevice,
            5 => Self::CharDevice,
            6 => Self::Fifo,
            7 => Self::Socket,
            _ => return None,
        })
    }

    /// The `S_IFMT` bits of `st_mode`.
    pub fn mode_bits(self) -> u32 {
        match self {
            Self::Directory => 0o040000,
            Self::File => 0o100000,
            Self::Symlink => 0o120000,
            Self::BlockDevice => 0o060000,
            Self::CharDevice => 0o020000,
            Self::Fifo => 0o010000,
            Self::Socket => 0o140000,
        }
    }
}

#[derive(Debug)]
pub struct Inode {
    pub kind: FileKind,
    pub perm: u16,
    pub uid_idx: u16,
    pub gid_idx: u16,
    pub mtime: u32,
    pub number: u32,
    pub nlink: u32,
    pub xattr: u32,
    pub body: Body,
}

#[derive(Debug)]
pub enum Body {
    Dir(DirInfo),
    File(FileLayout),
    Symlink(Box<[u8]>),
    Device(u32),
    Ipc,
}

#[derive(Debug)]
pub struct DirInfo {
    /// Block of the listing, relative to the directory table.
    pub start_block: u32,
    pub offset: u16,
    /// The stored size: listing bytes + 3 (for the invented "." and "..").
    pub size: u32,
    pub index: Box<[DirIndex]>,
}

impl DirInfo {
    pub fn listing_len(&self) -> u64 {
        u64::from(self.size.saturating_sub(3))
    }
}

/// A directory index entry: where a header run starting a metadata block sits.
#[derive(Debug)]
pub struct DirIndex {
    /// Offset of the header inside the listing.
    pub index: u32,
    /// Metadata block holding it, relative to the directory table.
    pub start: u32,
    /// Name of the first entry after the header.
    pub name: Box<[u8]>,
}

#[derive(Debug)]
pub struct FileLayout {
    pub blocks_start: u64,
    pub size: u64,
    pub sparse: u64,
    pub fragment: u32,
    pub frag_offset: u32,
    /// Size field of each full-or-last block (bit 24: stored uncompressed; 0: sparse).
    pub sizes: Box<[u32]>,
    /// Disk position of block `i * CHECKPOINT_EVERY`.
    checkpoints: Box<[u64]>,
}

impl FileLayout {
    /// Disk position of block `i` (which must be `< sizes.len()`).
    pub fn block_pos(&self, i: usize) -> u64 {
        let c = i / CHECKPOINT_EVERY;
        let base = self
            .checkpoints
            .get(c)
            .copied()
            .unwrap_or(self.blocks_start);
        let from = c * CHECKPOINT_EVERY;
        base + self
            .sizes
            .get(from..i)
            .unwrap_or_default()
            .iter()
            .map(|&s| u64::from(s & BLOCK_SIZE_MASK))
            .sum::<u64>()
    }
}

impl Inode {
    /// Bytes this inode keeps alive in the inode cache.
    pub fn weight(&self) -> usize {
        96 + match &self.body {
            Body::Dir(d) => d.index.iter().map(|i| i.name[..].len() + 32).sum(),
            Body::File(f) => f.sizes.len() * 4 + f.checkpoints.len() * 8,
            Body::Symlink(t) => t[..].len(),
            _ => 0,
        }
    }

    pub fn size(&self) -> u64 {
        match &self.body {
            Body::Dir(d) => u64::from(d.size),
            Body::File(f) => f.size,
            Body::Symlink(t) => t[..].len() as u64,
            _ => 0,
        }
    }
}

/// Reads the inode at reference `iref` (block offset << 16 | offset in block).
pub fn read<R: ReadAt>(img: &Blocks<R>, iref: u64, max_blocks: u64) -> Result<Inode> {
    let sb = &img.sb;
    let offset = (iref & 0xffff) as usize;
    let pos = sb.inode_table.checked_add(iref >> 16);
    let pos = match pos {
        Some(p) if p < sb.directory_table && offset < METADATA_SIZE && iref >> 48 == 0 => p,
        _ => return Err(Error::BadInodeId(iref)),
    };
    let mut c = Cursor::new(img, pos, offset, sb.directory_table);
    let h: [u8; 16] = c.array()?;
    let le16 = |o| super::le::u16(&h, o);
    let t = le16(0);
    let kind = FileKind::from_basic(if t > 7 { t - 7 } else { t })
        .ok_or(corrupt("unknown inode type", pos))?;
    let extended = t > 7;
    let mut inode = Inode {
        kind,
        perm: le16(2) & 0o7777,
        uid_idx: le16(4),
        gid_idx: le16(6),
        mtime: super::le::u32(&h, 8),
        number: super::le::u32(&h, 12),
        nlink: 1,
        xattr: NONE,
        body: Body::Ipc,
    };
    match (kind, extended) {
        (FileKind::Directory, false) => {
            let start_block = c.u32()?;
            inode.nlink = c.u32()?;
            let size = u32::from(c.u16()?);
            let offset = c.u16()?;
            let _parent = c.u32()?;
            inode.body = Body::Dir(dir_info(start_block, offset, size, Box::new([]), pos)?);
        }
        (FileKind::Directory, true) => {
            inode.nlink = c.u32()?;
            let size = c.u32()?;
            let start_block = c.u32()?;
            let _parent = c.u32()?;
            let count = c.u16()?;
            let offset = c.u16()?;
            inode.xattr = c.u32()?;
            let index = dir_index(&mut c, count, pos)?;
            inode.body = Body::Dir(dir_info(start_block, offset, size, index, pos)?);
        }
        (FileKind::File, _) => {
            // The same fields in each layout, in a different order and width.
            let (blocks_start, size, sparse, fragment, frag_offset);
            if extended {
                blocks_start = c.u64()?;
                size = c.u64()?;
                sparse = c.u64()?;
                inode.nlink = c.u32()?;
                fragment = c.u32()?;
                frag_offset = c.u32()?;
                inode.xattr = c.u32()?;
            } else {
                blocks_start = u64::from(c.u32()?);
                fragment = c.u32()?;
                frag_offset = c.u32()?;
                size = u64::from(c.u32()?);
                sparse = 0;
            }
            inode.body = Body::File(file_layout(
                img,
                &mut c,
                pos,
                blocks_start,
                size,
                sparse,
                fragment,
                frag_offset,
                max_blocks,
            )?);
        }
        (FileKind::Symlink, _) => {
            inode.nlink = c.u32()?;
            let n = c.u32()?;
            if n > MAX_SYMLINK {
                return Err(corrupt("symlink target too long", pos));
            }
            inode.body = Body::Symlink(c.bytes(n as usize)?.into_boxed_slice());
            if extended {
                inode.xattr = c.u32()?;
            }
        }
        (FileKind::BlockDevice | FileKind::CharDevice, _) => {
            inode.nlink = c.u32()?;
            inode.body = Body::Device(c.u32()?);
            if extended {
                inode.xattr = c.u32()?;
            }
        }
        (FileKind::Fifo | FileKind::Socket, _) => {
            inode.nlink = c.u32()?;
            if extended {
                inode.xattr = c.u32()?;
            }
        }
    }
    Ok(inode)
}

/// The `count` entries of an extended directory inode's index.
fn dir_index<R: ReadAt>(c: &mut Cursor<'_, R>, count: u16, pos: u64) -> Result<Box<[DirIndex]>> {
    let mut index = Vec::new();
    for _ in 0..count {
        let i = c.u32()?;
        let start = c.u32()?;
        let n = c.u32()?;
        if n >= MAX_NAME {
            return Err(corrupt("directory index name too long", pos));
        }
        let name = c.bytes(n as usize + 1)?.into_boxed_slice();
        index.push(DirIndex {
            index: i,
            start,
            name,
        });
    }
    Ok(index.into())
}

fn dir_info(
    start_block: u32,
    offset: u16,
    size: u32,
    index: Box<[DirIndex]>,
    pos: u64,
) -> Result<DirInfo> {
    if size < 3 || usize::from(offset) >= METADATA_SIZE {
        return Err(corrupt("directory inode size or offset", pos));
    }
    Ok(DirInfo {
        start_block,
        offset,
        size,
        index,
    })
}

#[allow(clippy::too_many_arguments)]
fn file_layout<R: ReadAt>(
    img: &Blocks<R>,
    c: &mut Cursor<'_, R>,
    pos: u64,
    blocks_start: u64,
    size: u64,
    sparse: u64,
    fragment: u32,
    frag_offset: u32,
    max_blocks: u64,
) -> Result<FileLayout> {
    let bs = u64::from(img.sb.block_size);
    let n = if fragment == NONE {
        size.div_ceil(bs)
    } else {
        size / bs
    };
    if n > max_blocks {
        return Err(Error::Limit(
            "file has more blocks than the configured limit",
        ));
    }
    let data_end = img.sb.inode_table;
    // Grow the list as entries actually decode, so a huge claimed size costs only
    // as much memory as the metadata really present.
    let mut sizes = Vec::with_capacity((n as usize).min(4096));
    let mut checkpoints = Vec::with_capacity((n as usize / CHECKPOINT_EVERY + 1).min(4096));
    let mut at = blocks_start;
    for i in 0..n as usize {
        if i % CHECKPOINT_EVERY == 0 {
            checkpoints.push(at);
        }
        let s = c.u32()?;
        if u64::from(s & BLOCK_SIZE_MASK) > bs
            || s & !(BLOCK_SIZE_MASK | super::blocks::BLOCK_UNCOMPRESSED) != 0
        {
            return Err(corrupt("file block size field", pos));
        }
        at = at
            .checked_add(u64::from(s & BLOCK_SIZE_MASK))
            .filter(|&e| e <= data_end)
            .ok_or(corrupt("file blocks run past the data area", pos))?;
        sizes.push(s);
    }
    Ok(FileLayout {
        blocks_start,
        size,
        sparse,
        fragment,
        frag_offset,
        sizes: sizes.into_boxed_slice(),
        checkpoints: checkpoints.into_boxed_slice(),
    })
}
