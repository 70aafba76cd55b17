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

mod ffi;

use std::ffi::CString;
use std::fmt;
use std::marker::PhantomData;
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

/// Writes compressed data blocks to the file.
pub struct BlockWriter<'f> {
    obj: Obj<ffi::sqfs_block_writer_t>,
    _file: PhantomData<&'f File>,
}

impl<'f> BlockWriter<'f> {
    pub fn new(file: &'f File) -> Result<BlockWriter<'f>> {
        // SAFETY: a live file, which the borrow keeps alive as long as the writer.
        let p = unsafe { ffi::sqfs_block_writer_create(file.0.ptr(), 4096, 0) };
        Ok(BlockWriter {
            // SAFETY: a new object, ours alone.
            obj: unsafe { Obj::new(p, "block writer") }?,
            _file: PhantomData,
        })
    }
}

/// Where the block processor records fragments; written after the data.
pub struct FragTable(Obj<ffi::sqfs_frag_table_t>);

impl FragTable {
    pub fn new() -> Result<FragTable> {
        // SAFETY: a plain constructor; the result is a new object or null.
        let p = unsafe { ffi::sqfs_frag_table_create(0) };
        // SAFETY: a new object, ours alone.
        Ok(FragTable(unsafe { Obj::new(p, "fragment table") }?))
    }

    pub fn write(&self, file: &File, sb: &mut Super, cmp: &Compressor) -> Result<()> {
        // SAFETY: live objects and a valid superblock, all borrowed for the call.
        let rc = unsafe {
            ffi::sqfs_frag_table_write(self.0.ptr(), file.0.ptr(), &mut sb.0, cmp.0.ptr())
        };
        check(rc, "writing the fragment table")
    }
}

/// Where the block processor leaves the files' inodes. It keeps each slot's address
/// from `begin_file` on and stores (and reallocates) the inode there until it is
/// destroyed, so each slot is an allocation of its own, held by raw pointer (a `Box`
/// moved along with the vector would claim unique access to what the library writes).
#[derive(Default)]
struct Slots(Vec<NonNull<*mut ffi::sqfs_inode_generic_t>>);

impl Slots {
    fn push(&mut self) -> *mut *mut ffi::sqfs_inode_generic_t {
        let slot = NonNull::from(Box::leak(Box::new(ptr::null_mut())));
        self.0.push(slot);
        slot.as_ptr()
    }

    /// Moves the inodes out, in the order the slots were made.
    fn take_inodes(&mut self) -> Result<Vec<Inode>> {
        self.0
            .iter()
            .map(|slot| {
                // SAFETY: a slot of ours (see `push`), which the destroyed processor no
                // longer writes to.
                let p = unsafe { ptr::replace(slot.as_ptr(), ptr::null_mut()) };
                NonNull::new(p)
                    .map(Inode)
                    .ok_or_else(|| Error::new("file inode", "out of memory"))
            })
            .collect()
    }
}

impl Drop for Slots {
    fn drop(&mut self) {
        for slot in self.0.drain(..) {
            // SAFETY: each slot came from `Box::leak` in `push` and is reclaimed once,
            // after the processor that wrote to it is destroyed (field order in
            // `BlockProcessor`, or `finish`).
            let inode = unsafe { *Box::from_raw(slot.as_ptr()) };
            if !inode.is_null() {
                // SAFETY: an inode the library allocated and left to us, freed once.
                unsafe { ffi::sqfs_free(inode.cast()) }
            }
        }
    }
}

/// Compresses file data on worker threads, deduplicates blocks, and hands the blocks
/// to a block writer and the tail ends to the fragment table.
pub struct BlockProcessor<'a> {
    // Declared first: destroyed before the slots it writes to are freed.
    obj: Obj<ffi::sqfs_block_processor_t>,
    slots: Slots,
    _uses: PhantomData<(&'a Compressor, &'a BlockWriter<'a>, &'a FragTable)>,
}

impl<'a> BlockProcessor<'a> {
    pub fn new(
        block_size: u32,
        cmp: &'a Compressor,
        threads: u32,
        writer: &'a BlockWriter<'a>,
        frags: &'a FragTable,
    ) -> Result<BlockProcessor<'a>> {
        let threads = threads.max(1);
        // SAFETY: live objects, which the borrows keep alive as long as the processor.
        let p = unsafe {
            ffi::sqfs_block_processor_create(
                block_size as usize,
                cmp.0.ptr(),
                threads,
                threads as usize * 32,
                writer.obj.ptr(),
                frags.0.ptr(),
            )
        };
        Ok(BlockProcessor {
            // SAFETY: a new object, ours alone.
            obj: unsafe { Obj::new(p, "block processor") }?,
            slots: Slots::default(),
            _uses: PhantomData,
        })
    }

    /// Starts a file; the data follows with `append`, then `end_file`. Files are
    /// numbered from 0 in the order they are begun, which is their index in what
    /// `finish` returns.
    pub fn begin_file(&mut self) -> Result<usize> {
        let at = self.slots.push();
        // SAFETY: a live processor; `at` stays valid until the processor is destroyed
        // (`self.slots` are freed after it).
        let rc =
            unsafe { ffi::sqfs_block_processor_begin_file(self.obj.ptr(), at, ptr::null_mut(), 0) };
        check(rc, "starting a file")?;
        Ok(self.slots.0.len() - 1)
    }

    pub fn append(&mut self, data: &[u8]) -> Result<()> {
        // SAFETY: a live processor; it copies `data.len()` readable bytes.
        let rc = unsafe {
            ffi::sqfs_block_processor_append(self.obj.ptr(), data.as_ptr().cast(), data.len())
        };
        check(rc, "adding file data")
    }

    pub fn end_file(&mut self) -> Result<()> {
        // SAFETY: a live processor.
        check(
            unsafe { ffi::sqfs_block_processor_end_file(self.obj.ptr()) },
            "finishing a file",
        )
    }

    /// Waits for every block to be compressed and written, and returns the files'
    /// inodes in the order they were begun.
    pub fn finish(mut self) -> Result<Vec<Inode>> {
        // SAFETY: a live processor.
        let rc = unsafe { ffi::sqfs_block_processor_finish(self.obj.ptr()) };
        check(rc, "compressing file data")?;
        let mut slots = std::mem::take(&mut self.slots);
        // The processor goes first: nothing writes to the slots afterwards.
        drop(self);
        slots.take_inodes()
    }
}

/// A file that is not a regular file or a directory.
#[derive(Debug, Clone, Copy)]
pub enum Special {
    /// With the device number as `st_rdev` has it.
    CharDev(u64),
    BlockDev(u64),
    Fifo,
    Socket,
}

/// The device number as squashfs stores it: the kernel's old 32-bit encoding.
fn devno(rdev: u64) -> u32 {
    let major = libc::major(rdev);
    let minor = libc::minor(rdev);
    (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12)
}

/// One inode in the library's in-memory form, freed on drop.
pub struct Inode(NonNull<ffi::sqfs_inode_generic_t>);

impl Inode {
    /// Allocates an inode of `type_` with `payload` extra bytes, all zeroed.
    fn alloc(type_: u16, payload: usize) -> Result<Inode> {
        let size = std::mem::size_of::<ffi::sqfs_inode_generic_t>() + payload;
        // SAFETY: calloc returns zeroed memory of `size` bytes or null; the C
        // allocator's alignment (16) satisfies the struct's 8. The library frees
        // inodes with free(), which is what `Drop` does.
        let p = unsafe { libc::calloc(1, size) }.cast::<ffi::sqfs_inode_generic_t>();
        let p =
            NonNull::new(p).ok_or_else(|| Error::new("allocating an inode", "out of memory"))?;
        let mut inode = Inode(p);
        let raw = inode.raw();
        raw.base.type_ = type_;
        raw.payload_bytes_available = payload as u32;
        raw.payload_bytes_used = payload as u32;
        Ok(inode)
    }

    /// The fixed part of the inode.
    fn raw(&mut self) -> &mut ffi::sqfs_inode_generic_t {
        // SAFETY: the pointer is live and this value owns it; `&mut self` makes the
        // borrow exclusive.
        unsafe { self.0.as_mut() }
    }

    pub fn symlink(target: &[u8], nlink: u32) -> Result<Inode> {
        let mut inode = Inode::alloc(ffi::SQFS_INODE_SLINK, target.len())?;
        inode.raw().data.slink = ffi::sqfs_inode_slink_t {
            nlink,
            target_size: target.len() as u32,
        };
        let p = inode.0.as_ptr();
        // SAFETY: `alloc` reserved `target.len()` payload bytes right after the
        // struct, where `extra` begins, in the allocation `p` points to; the source is
        // a distinct Rust slice.
        unsafe {
            let extra = (&raw mut (*p).extra).cast::<u8>();
            ptr::copy_nonoverlapping(target.as_ptr(), extra, target.len());
        }
        Ok(inode)
    }

    pub fn special(kind: Special, nlink: u32) -> Result<Inode> {
        let (type_, dev) = match kind {
            Special::CharDev(rdev) => (ffi::SQFS_INODE_CDEV, Some(devno(rdev))),
            Special::BlockDev(rdev) => (ffi::SQFS_INODE_BDEV, Some(devno(rdev))),
            Special::Fifo => (ffi::SQFS_INODE_FIFO, None),
            Special::Socket => (ffi::SQFS_INODE_SOCKET, None),
        };
        let mut inode = Inode::alloc(type_, 0)?;
        inode.raw().data = match dev {
            Some(devno) => ffi::sqfs_inode_data {
                dev: ffi::sqfs_inode_dev_t { nlink, devno },
            },
            None => ffi::sqfs_inode_data {
                ipc: ffi::sqfs_inode_ipc_t { nlink },
            },
        };
        Ok(inode)
    }

    pub fn set_xattr_index(&mut self, index: u32) -> Result<()> {
        // SAFETY: a live inode this value owns; the library changes its type in place.
        let rc = unsafe { ffi::sqfs_inode_set_xattr_index(self.0.as_ptr(), index) };
        check(rc, "xattrs of an inode")
    }

    /// Sets the link count of a regular file's inode, which only the extended form of
    /// the inode stores.
    pub fn set_file_nlink(&mut self, nlink: u32) -> Result<()> {
        // SAFETY: a live inode this value owns; the library changes its type in place.
        let rc = unsafe { ffi::sqfs_inode_make_extended(self.0.as_ptr()) };
        check(rc, "file inode")?;
        let raw = self.raw();
        if raw.base.type_ != ffi::SQFS_INODE_EXT_FILE {
            return Err(Error::new("file inode", "not a regular file"));
        }
        // Writing a union field is safe; the type check above says it is the live one.
        raw.data.file_ext.nlink = nlink;
        Ok(())
    }

    /// Mode (type and permission bits), modification time and inode number.
    pub fn set_meta(&mut self, mode: u16, mtime: u32, number: u32) {
        let base = &mut self.raw().base;
        base.mode = mode;
        base.mod_time = mtime;
        base.inode_number = number;
    }

    pub fn set_owner(&mut self, ids: &mut IdTable, uid: u32, gid: u32) -> Result<()> {
        let uid_idx = ids.index(uid, "uid table")?;
        let gid_idx = ids.index(gid, "gid table")?;
        let base = &mut self.raw().base;
        base.uid_idx = uid_idx;
        base.gid_idx = gid_idx;
        Ok(())
    }
}

impl Drop for Inode {
    fn drop(&mut self) {
        // SAFETY: a C allocation this value owns (calloc'd here or allocated by the
        // library), freed once.
        unsafe { ffi::sqfs_free(self.0.as_ptr().cast()) }
    }
}

/// The table of uids and gids the inodes refer to by index.
pub struct IdTable(Obj<ffi::sqfs_id_table_t>);

impl IdTable {
    pub fn new() -> Result<IdTable> {
        // SAFETY: a plain constructor; the result is a new object or null.
        let p = unsafe { ffi::sqfs_id_table_create(0) };
        // SAFETY: a new object, ours alone.
        Ok(IdTable(unsafe { Obj::new(p, "id table") }?))
    }

    fn index(&mut self, id: u32, op: &str) -> Result<u16> {
        let mut index = 0u16;
        // SAFETY: a live table and a place for the result.
        check(
            unsafe { ffi::sqfs_id_table_id_to_index(self.0.ptr(), id, &mut index) },
            op,
        )?;
        Ok(index)
    }

    pub fn write(&self, file: &File, sb: &mut Super, cmp: &Compressor) -> Result<()> {
        // SAFETY: live objects and a valid superblock, all borrowed for the call.
        let rc =
            unsafe { ffi::sqfs_id_table_write(self.0.ptr(), file.0.ptr(), &mut sb.0, cmp.0.ptr()) };
        check(rc, "writing the id table")
    }
}

/// Collects the inodes' xattr sets (identical sets are stored once).
pub struct XattrWriter(Obj<ffi::sqfs_xattr_writer_t>);

impl XattrWriter {
    pub fn new() -> Result<XattrWriter> {
        // SAFETY: a plain constructor; the result is a new object or null.
        let p = unsafe { ffi::sqfs_xattr_writer_create(0) };
        // SAFETY: a new object, ours alone.
        Ok(XattrWriter(unsafe { Obj::new(p, "xattr writer") }?))
    }

    /// Records one inode's xattrs and returns the index the inode refers to them by.
    /// A key with a NUL byte inside (which no filesystem has) is left out.
    pub fn add_set(&mut self, pairs: &[(Vec<u8>, Vec<u8>)]) -> Result<u32> {
        let xw = self.0.ptr();
        // SAFETY: a live writer.
        check(unsafe { ffi::sqfs_xattr_writer_begin(xw, 0) }, "xattrs")?;
        for (k, v) in pairs {
            let Ok(key) = CString::new(k.as_slice()) else {
                continue;
            };
            // SAFETY: a live writer, a NUL-terminated key and `v.len()` readable bytes,
            // which the library copies.
            let rc =
                unsafe { ffi::sqfs_xattr_writer_add(xw, key.as_ptr(), v.as_ptr().cast(), v.len()) };
            check(rc, "adding an xattr")?;
        }
        let mut index = ffi::SQFS_XATTR_NONE;
        // SAFETY: a live writer and a place for the result.
        check(
            unsafe { ffi::sqfs_xattr_writer_end(xw, &mut index) },
            "xattrs",
        )?;
        Ok(index)
    }

    pub fn write(&self, file: &File, sb: &mut Super, cmp: &Compressor) -> Result<()> {
        // SAFETY: live objects and a valid superblock, all borrowed for the call.
        let rc = unsafe {
            ffi::sqfs_xattr_writer_flush(self.0.ptr(), file.0.ptr(), &mut sb.0, cmp.0.ptr())
        };
        check(rc, "writing the xattr table")
    }
}

/// The inode index of an inode without xattrs.
pub const NO_XATTRS: u32 = ffi::SQFS_XATTR_NONE;

/// Writes compressed metadata blocks (the inode or the directory table).
pub struct MetaWriter<'a> {
    obj: Obj<ffi::sqfs_meta_writer_t>,
    _uses: PhantomData<(&'a File, &'a Compressor)>,
}

impl<'a> MetaWriter<'a> {
    /// `keep_in_memory`: hold the blocks until `write_to_file` (the directory table,
    /// which goes after the inode table it is written alongside).
    pub fn new(
        file: &'a File,
        cmp: &'a Compressor,
        keep_in_memory: bool,
    ) -> Result<MetaWriter<'a>> {
        let flags = if keep_in_memory {
            ffi::SQFS_META_WRITER_KEEP_IN_MEMORY
        } else {
            0
        };
        // SAFETY: live objects, which the borrows keep alive as long as the writer.
        let p = unsafe { ffi::sqfs_meta_writer_create(file.0.ptr(), cmp.0.ptr(), flags) };
        let op = if keep_in_memory {
            "directory writer"
        } else {
            "inode writer"
        };
        Ok(MetaWriter {
            // SAFETY: a new object, ours alone.
            obj: unsafe { Obj::new(p, op) }?,
            _uses: PhantomData,
        })
    }

    /// Writes an inode and returns its reference (block start << 16 | offset).
    pub fn write_inode(&self, inode: &Inode) -> Result<u64> {
        let (mut block, mut offset) = (0u64, 0u32);
        // SAFETY: a live writer and places for the result.
        unsafe { ffi::sqfs_meta_writer_get_position(self.obj.ptr(), &mut block, &mut offset) };
        // SAFETY: a live writer and a live inode, which the library only reads.
        let rc = unsafe { ffi::sqfs_meta_writer_write_inode(self.obj.ptr(), inode.0.as_ptr()) };
        check(rc, "writing an inode")?;
        Ok((block << 16) | u64::from(offset))
    }

    pub fn flush(&self, op: &str) -> Result<()> {
        // SAFETY: a live writer.
        check(unsafe { ffi::sqfs_meta_writer_flush(self.obj.ptr()) }, op)
    }

    /// Writes the blocks a `keep_in_memory` writer held.
    pub fn write_to_file(&self) -> Result<()> {
        // SAFETY: a live writer.
        check(
            unsafe { ffi::sqfs_meta_write_write_to_file(self.obj.ptr()) },
            "writing directories",
        )
    }
}

/// Writes directory listings (and records the export table).
pub struct DirWriter<'a> {
    obj: Obj<ffi::sqfs_dir_writer_t>,
    _uses: PhantomData<&'a MetaWriter<'a>>,
}

impl<'a> DirWriter<'a> {
    pub fn new(dm: &'a MetaWriter<'a>) -> Result<DirWriter<'a>> {
        // SAFETY: a live metadata writer, which the borrow keeps alive as long as this one.
        let p = unsafe {
            ffi::sqfs_dir_writer_create(dm.obj.ptr(), ffi::SQFS_DIR_WRITER_CREATE_EXPORT_TABLE)
        };
        Ok(DirWriter {
            // SAFETY: a new object, ours alone.
            obj: unsafe { Obj::new(p, "directory writer") }?,
            _uses: PhantomData,
        })
    }

    pub fn begin(&mut self) -> Result<()> {
        // SAFETY: a live writer.
        check(
            unsafe { ffi::sqfs_dir_writer_begin(self.obj.ptr(), 0) },
            "starting a directory",
        )
    }

    pub fn add_entry(&mut self, name: &[u8], number: u32, inode_ref: u64, mode: u16) -> Result<()> {
        let op = "adding a directory entry";
        let name =
            CString::new(name).map_err(|_| Error::new(op, "a file name contains a NUL byte"))?;
        // SAFETY: a live writer and a NUL-terminated name, which the library copies.
        let rc = unsafe {
            ffi::sqfs_dir_writer_add_entry(self.obj.ptr(), name.as_ptr(), number, inode_ref, mode)
        };
        check(rc, op)
    }

    pub fn end(&mut self) -> Result<()> {
        // SAFETY: a live writer.
        check(
            unsafe { ffi::sqfs_dir_writer_end(self.obj.ptr()) },
            "finishing a directory",
        )
    }

    /// The inode of the directory just ended.
    pub fn create_inode(&self, hlinks: u32, xattr: u32, parent: u32) -> Result<Inode> {
        // SAFETY: a live writer; the result is a new inode or null.
        let p = unsafe {
            ffi::sqfs_dir_writer_create_inode(self.obj.ptr(), hlinks as usize, xattr, parent)
        };
        NonNull::new(p)
            .map(Inode)
            .ok_or_else(|| Error::new("directory inode", "out of memory"))
    }

    pub fn write_export_table(
        &self,
        file: &File,
        cmp: &Compressor,
        root: (u32, u64),
        sb: &mut Super,
    ) -> Result<()> {
        // SAFETY: live objects and a valid superblock, all borrowed for the call.
        let rc = unsafe {
            ffi::sqfs_dir_writer_write_export_table(
                self.obj.ptr(),
                file.0.ptr(),
                cmp.0.ptr(),
                root.0,
                root.1,
                &mut sb.0,
            )
        };
        check(rc, "writing the export table")
    }
}
