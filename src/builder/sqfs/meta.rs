//! The metadata writers: inodes, and directory listings with the export table.

use std::ffi::CString;
use std::marker::PhantomData;
use std::ptr::NonNull;

use super::inode::Inode;
use super::{Compressor, Error, File, Obj, Result, Super, check, ffi};

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
