//! The one error type of the squashfs reader. Every variant renders as a single
//! line naming what is wrong, because the CLI prints `{err}` as it is.

#![forbid(unsafe_code)]

use std::io;

/// What can go wrong while reading a squashfs image.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("squashfs: read of the image failed at offset {offset}: {source}")]
    Io {
        offset: u64,
        #[source]
        source: io::Error,
    },
    #[error("not a squashfs image (magic {0:#010x})")]
    BadMagic(u32),
    #[error("unsupported squashfs version {0}.{1} (only 4.0 is read)")]
    UnsupportedVersion(u16, u16),
    #[error("unsupported squashfs compressor id {0}")]
    UnsupportedCompressor(u16),
    #[error("corrupt squashfs superblock: {0}")]
    BadSuperblock(&'static str),
    #[error("corrupt squashfs image: {what} at offset {offset}")]
    Corrupt { what: &'static str, offset: u64 },
    #[error("corrupt squashfs image: {0}")]
    CorruptMsg(&'static str),
    #[error("squashfs {kind} block at offset {offset} does not decompress: {detail}")]
    Decompress {
        kind: &'static str,
        offset: u64,
        detail: String,
    },
    #[error("squashfs limit exceeded: {0}")]
    Limit(&'static str),
    #[error("invalid squashfs inode id {0}")]
    BadInodeId(u64),
    #[error("no such file or directory")]
    NotFound,
    #[error("not a directory")]
    NotDir,
    #[error("not a regular file")]
    NotFile,
    #[error("not a symbolic link")]
    NotSymlink,
    #[error("no such extended attribute")]
    NoXattr,
    #[error("directory loop: a directory contains one of its ancestors")]
    DirLoop,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Shorthand for a corruption found at a known image offset.
pub(crate) fn corrupt(what: &'static str, offset: u64) -> Error {
    Error::Corrupt { what, offset }
}
