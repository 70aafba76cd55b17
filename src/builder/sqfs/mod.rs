//! A safe wrapper over the part of libsquashfs (squashfs-tools-ng) that the squashfs
//! writer uses: one owning type per library object, destroyed on drop, and borrows
//! that keep each object alive as long as the objects holding a pointer to it (the
//! compiler then orders the teardown). The raw declarations are in `ffi`; every call
//! into the library is made here.
//!
//! The library's objects are not thread-safe; the raw pointers inside make every type
//! here neither `Send` nor `Sync`. Methods take `&self` where other library objects
//! keep a pointer to the same object (the file, the compressor, the metadata writer
//! of the directories): the library mutates it behind those pointers anyway, and no
//! Rust reference into its memory is ever formed.

mod data;
mod ffi;
mod inode;
mod meta;

pub use data::{BlockProcessor, BlockWriter, FragTable};
pub use inode::{IdTable, Inode, NO_XATTRS, Special, XattrWriter};
pub use meta::{DirWriter, MetaWriter};

use std::ffi::CString;
use std::fmt;
use std::os::raw::c_uint;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr::{self, NonNull};

/// A libsquashfs step that failed: what was being done, and why.
#[derive(Debug)]
pub struct Error {
    op: String,
    why: String,
}

impl Error {
    pub fn new(op: impl Into<String>, why: impl Into<String>) -> Error {
        Error {
            op: op.into(),
            why: why.into(),
        }
    }

    fn code(op: &str, rc: i32) -> Error {
        let why = match rc {
            -1 => "out of memory",
            -2 => "I/O error",
            -3 => "compressor error",
            -7 => "size overflow",
            -16 => "invalid argument",
            _ => "internal error",
        };
        Error::new(op, format!("{why} ({rc})"))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.op, self.why)
    }
}

impl std::error::Error for Error {}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn check(rc: i32, op: &str) -> Result<()> {
    if rc < 0 {
        return Err(Error::code(op, rc));
    }
    Ok(())
}

/// One library object, destroyed on drop.
struct Obj<T>(NonNull<T>);

impl<T> Obj<T> {
    /// Takes ownership of what a libsquashfs constructor returned (null means it could
    /// not allocate).
    ///
    /// # Safety
    /// `p` is null or a live libsquashfs object whose first member is `sqfs_object_t`,
    /// owned by nobody else.
    unsafe fn new(p: *mut T, op: &str) -> Result<Obj<T>> {
        NonNull::new(p)
            .map(Obj)
            .ok_or_else(|| Error::new(op, "out of memory"))
    }

    fn ptr(&self) -> *mut T {
        self.0.as_ptr()
    }
}

impl<T> Drop for Obj<T> {
    fn drop(&mut self) {
        // SAFETY: `Obj::new`'s contract: a live object this value alone owns, so it is
        // destroyed once, and its borrowers (see the lifetimes below) are gone.
        unsafe { ffi::destroy(self.ptr()) }
    }
}

/// Squashfs compressors veil can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Zstd,
    Xz,
    Lz4,
}

impl Compression {
    fn id(self) -> c_uint {
        c_uint::from(match self {
            Compression::Gzip => ffi::SQFS_COMP_GZIP,
            Compression::Zstd => ffi::SQFS_COMP_ZSTD,
            Compression::Xz => ffi::SQFS_COMP_XZ,
            Compression::Lz4 => ffi::SQFS_COMP_LZ4,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::Xz => "xz",
            Compression::Lz4 => "lz4",
        }
    }
}

/// The image file being written (created or truncated).
pub struct File(Obj<ffi::sqfs_file_t>);

impl File {
    pub fn create(path: &Path) -> Result<File> {
        let op = "creating the file";
        let c = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| Error::new(op, "the path contains a NUL byte"))?;
        let flags = ffi::SQFS_FILE_OPEN_OVERWRITE | ffi::SQFS_FILE_OPEN_NO_CHARSET_XFRM;
        // SAFETY: `c` is a NUL-terminated path that outlives the call.
        let p = unsafe { ffi::sqfs_open_file(c.as_ptr(), flags) };
        if p.is_null() {
            return Err(Error::new(op, "cannot create it"));
        }
        // SAFETY: a new file object, ours alone.
        Ok(File(unsafe { Obj::new(p, op) }?))
    }

    /// The file's size: where the next table goes.
    pub fn size(&self) -> Result<u64> {
        let f = self.0.ptr();
        // SAFETY: `f` is live; reading a method pointer of its table is what the
        // library's own inline helpers do.
        let get_size = unsafe { (*f).get_size }
            .ok_or_else(|| Error::new("file size", "the file object has no get_size"))?;
        // SAFETY: the object's own method, called on it.
        Ok(unsafe { get_size(f) })
    }

    pub fn write_at(&self, offset: u64, data: &[u8]) -> Result<()> {
        let f = self.0.ptr();
        // SAFETY: as in `size`.
        let write_at = unsafe { (*f).write_at }
            .ok_or_else(|| Error::new("writing", "the file object has no write_at"))?;
        // SAFETY: the object's own method, called on it with a buffer of `data.len()`
        // readable bytes.
        let rc = unsafe { write_at(f, offset, data.as_ptr().cast(), data.len()) };
        check(rc, "writing")
    }
}

pub struct Compressor(Obj<ffi::sqfs_compressor_t>);

impl Compressor {
    /// A compressor for `block_size` blocks; `level` `None` keeps the library's default.
    pub fn new(c: Compression, block_size: u32, level: Option<u32>) -> Result<Compressor> {
        let mut cfg = ffi::sqfs_compressor_config_t::default();
        // SAFETY: `cfg` is a valid configuration for the library to fill in.
        let rc =
            unsafe { ffi::sqfs_compressor_config_init(&mut cfg, c.id(), block_size as usize, 0) };
        check(rc, "compressor configuration")?;
        if let Some(level) = level {
            cfg.level = level;
        }
        let op = format!("creating the {} compressor", c.name());
        let mut p = ptr::null_mut();
        // SAFETY: `cfg` was initialised by the library; `p` receives the new object.
        check(unsafe { ffi::sqfs_compressor_create(&cfg, &mut p) }, &op)?;
        // SAFETY: a new compressor, ours alone.
        Ok(Compressor(unsafe { Obj::new(p, &op) }?))
    }

    /// Writes the compressor's options after the superblock; true when it wrote any
    /// (the superblock must then say so).
    pub fn write_options(&self, file: &File) -> Result<bool> {
        let c = self.0.ptr();
        // SAFETY: `c` is live; reading a method pointer of its table.
        let write_options = unsafe { (*c).write_options }.ok_or_else(|| {
            Error::new(
                "writing compressor options",
                "the compressor has no options writer",
            )
        })?;
        // SAFETY: the object's own method, called on it and a live file.
        let n = unsafe { write_options(c, file.0.ptr()) };
        check(n, "writing compressor options")?;
        Ok(n > 0)
    }
}

/// The superblock, filled in as the tables are written.
pub struct Super(ffi::sqfs_super_t);

impl Super {
    pub fn new(c: Compression, block_size: u32, mkfs_time: u32) -> Result<Super> {
        let mut sb = ffi::sqfs_super_t::default();
        // SAFETY: `sb` is a valid superblock for the library to fill in.
        let rc = unsafe { ffi::sqfs_super_init(&mut sb, block_size as usize, mkfs_time, c.id()) };
        check(rc, "superblock")?;
        Ok(Super(sb))
    }

    pub fn write(&self, file: &File) -> Result<()> {
        // SAFETY: a valid superblock and a live file.
        let rc = unsafe { ffi::sqfs_super_write(&self.0, file.0.ptr()) };
        check(rc, "writing the superblock")
    }

    pub fn set_compressor_options(&mut self) {
        self.0.flags |= ffi::SQFS_FLAG_COMPRESSOR_OPTIONS;
    }

    /// Says that file data is stored uncompressed and that there are no fragments
    /// (what mksquashfs's `-noD -noF` set, and what `unsquashfs -s` reports).
    pub fn set_stored_data(&mut self) {
        self.0.flags |= ffi::SQFS_FLAG_UNCOMPRESSED_DATA | ffi::SQFS_FLAG_NO_FRAGMENTS;
    }

    pub fn set_inode_table_start(&mut self, at: u64) {
        self.0.inode_table_start = at;
    }

    pub fn set_directory_table_start(&mut self, at: u64) {
        self.0.directory_table_start = at;
    }

    pub fn set_root(&mut self, inode_ref: u64, inode_count: u32) {
        self.0.root_inode_ref = inode_ref;
        self.0.inode_count = inode_count;
    }

    pub fn bytes_used(&self) -> u64 {
        self.0.bytes_used
    }

    pub fn set_bytes_used(&mut self, n: u64) {
        self.0.bytes_used = n;
    }
}
