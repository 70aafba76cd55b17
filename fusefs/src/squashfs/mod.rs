//! A read-only, random-access squashfs reader over any [`crate::source::ReadAt`].
//!
//! It reads everything mksquashfs 4.x writes (gzip, lzma, xz, lzo, lz4, zstd;
//! fragments, sparse files, extended inodes, directory indexes, xattrs) and is
//! built for many threads reading at once: every method takes `&self`, and the
//! metadata, inode, data and fragment caches are sharded and bounded by bytes.
//! Every length and offset in the image is checked before use; a hostile image
//! yields an [`Error`], never a panic, an unbounded allocation or a hang.
//!
//! For the FUSE server (all `&self`, call from any thread):
//! - [`Squashfs::open`] / [`Squashfs::open_with`] over any `ReadAt`;
//! - node ids are FUSE node ids: [`InodeId::ROOT`] is 1, every other id is the
//!   squashfs inode reference + 2 (see [`reader`]); [`Attr::ino`] is `st_ino`;
//! - [`Squashfs::lookup`], [`Squashfs::getattr`] → [`Attr`];
//!   [`Squashfs::readdir`]`(dir, cookie)` → entries each carrying the cookie to
//!   resume after it (0 starts; "." and ".." are the server's);
//!   [`Squashfs::readlink`]; [`Squashfs::read`]`(id, offset, buf)`;
//!   [`Squashfs::listxattr`] / [`Squashfs::getxattr`]; [`Squashfs::statfs`];
//! - [`Error`] variants map to errno in the server: `NotFound` → ENOENT,
//!   `NotDir` → ENOTDIR, `NotFile` → EISDIR/EINVAL, `NotSymlink` → EINVAL,
//!   `NoXattr` → ENODATA, `BadInodeId` → ESTALE, everything else → EIO.
//!
//! Layout: [`superblock`] → [`blocks`] (raw reads, block caches) → `metadata`
//! (cursor over metadata block chains) → `table` (lookup tables), `inode`, `dir`,
//! `data` (file contents and fragments), `xattr` → [`reader`] (the public API).

pub mod blocks;
mod cache;
mod compress;
mod data;
mod dir;
mod error;
mod file;
mod fuzz;
mod inode;
mod le;
mod metadata;
mod pool;
pub mod reader;
pub mod superblock;
mod table;
mod xattr;

pub use blocks::CacheSizes;
pub use compress::Compressor;
pub use error::{Error, Result};
pub use file::File;
#[doc(hidden)]
pub use fuzz::fuzz_one;
pub use inode::FileKind;
pub use reader::{Attr, DirEntry, InodeId, Options, ReadDir, Squashfs, StatFs};
