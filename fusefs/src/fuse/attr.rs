//! What the kernel is told about a node: the reader's [`Attr`] and the synthetic
//! nodes as [`FileAttr`], and for how long it may trust it.

#![forbid(unsafe_code)]

use std::time::{Duration, UNIX_EPOCH};

use fuser::{FileAttr, FileType, INodeNo};

use super::synthetic::SynthKind;
use crate::squashfs::{Attr, FileKind};

/// How long the kernel may trust what we told it: the image never changes.
pub(super) const TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// Who owns the synthetic nodes (the user the container runs as).
#[derive(Debug, Clone, Copy)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// Attributes of an empty node `ino` owned by root, dated the epoch: a negative entry
/// (node 0, where only the id counts) and, filled in further, a synthetic mount point.
pub(super) fn empty_attr(ino: u64) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size: 0,
        blocks: 0,
        atime: UNIX_EPOCH,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        crtime: UNIX_EPOCH,
        kind: FileType::RegularFile,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 0,
        flags: 0,
    }
}

/// An image node's attributes; `blksize` is the image's block size.
pub(super) fn image_attr(a: &Attr, blksize: u32) -> FileAttr {
    let t = UNIX_EPOCH + Duration::from_secs(u64::from(a.mtime));
    FileAttr {
        ino: INodeNo(a.id.0),
        size: a.size,
        blocks: a.blocks,
        atime: t,
        mtime: t,
        ctime: t,
        crtime: t,
        kind: file_type(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize,
        flags: 0,
    }
}

/// A synthetic node's attributes: an empty directory or file of `owner`'s.
pub(super) fn synth_attr(id: u64, kind: SynthKind, owner: Owner) -> FileAttr {
    let dir = kind == SynthKind::Dir;
    FileAttr {
        kind: synth_type(kind),
        perm: if dir { 0o755 } else { 0o644 },
        nlink: if dir { 2 } else { 1 },
        uid: owner.uid,
        gid: owner.gid,
        blksize: 4096,
        ..empty_attr(id)
    }
}

pub(super) fn synth_type(kind: SynthKind) -> FileType {
    match kind {
        SynthKind::Dir => FileType::Directory,
        SynthKind::File => FileType::RegularFile,
    }
}

pub(super) fn file_type(k: FileKind) -> FileType {
    match k {
        FileKind::Directory => FileType::Directory,
        FileKind::File => FileType::RegularFile,
        FileKind::Symlink => FileType::Symlink,
        FileKind::BlockDevice => FileType::BlockDevice,
        FileKind::CharDevice => FileType::CharDevice,
        FileKind::Fifo => FileType::NamedPipe,
        FileKind::Socket => FileType::Socket,
    }
}
