//! A read-only, random-access squashfs reader over any [`crate::source::ReadAt`].
//!
//! It reads everything mksquashfs 4.x writes (gzip, lzma, xz, lzo, lz4, zstd;
//! fragments, sparse files, extended inodes, directory indexes, xattrs) and is
//! built for many threads reading at once: every method takes `&self`, and the
//! metadata, inode, data and fragment caches are sharded and bounded by bytes.
//! Every length and offset in the image is checked before use; a hostile image
//! yields an [`Error`], never a panic, an unbounded allocation or a hang.
//!
//! Layout: [`superblock`] → [`image`] (raw reads, block caches) → `metadata`
//! (cursor over metadata block chains) → `table` (lookup tables), `inode`, `dir`,
//! `data` (file contents and fragments), `xattr` → [`fs`] (the public API).

mod cache;
mod compress;
mod data;
mod dir;
mod error;
pub mod fs;
mod fuzz;
pub mod image;
mod inode;
mod le;
mod metadata;
pub mod superblock;
mod table;
mod xattr;

pub use compress::Compressor;
pub use error::{Error, Result};
pub use fs::{Attr, DirEntry, InodeId, Options, ReadDir, Squashfs, StatFs};
#[doc(hidden)]
pub use fuzz::fuzz_one;
pub use image::CacheSizes;
pub use inode::FileKind;
