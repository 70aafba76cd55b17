//! File data: the block processor, which compresses on worker threads and
//! deduplicates, the block writer it writes through, and the fragment table.

use std::marker::PhantomData;
use std::ptr::{self, NonNull};

use super::inode::Inode;
use super::{Compressor, Error, File, Obj, Result, Super, check, ffi};

/// Writes compressed data blocks to the file.
pub struct BlockWriter<'f> {
    pub(super) obj: Obj<ffi::sqfs_block_writer_t>,
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
    ///
    /// `stored` keeps the file's data uncompressed and out of fragments (mksquashfs's
    /// `-noD -noF`), so that its bytes lie in the image as they are, one block after
    /// another.
    pub fn begin_file(&mut self, stored: bool) -> Result<usize> {
        let at = self.slots.push();
        let flags = if stored {
            ffi::SQFS_BLK_DONT_COMPRESS | ffi::SQFS_BLK_DONT_FRAGMENT
        } else {
            0
        };
        // SAFETY: a live processor; `at` stays valid until the processor is destroyed
        // (`self.slots` are freed after it).
        let rc = unsafe {
            ffi::sqfs_block_processor_begin_file(self.obj.ptr(), at, ptr::null_mut(), flags)
        };
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
