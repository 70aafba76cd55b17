//! Inodes, and the tables they refer to: ids and xattrs.

use std::ffi::CString;
use std::ptr::{self, NonNull};

use super::{Compressor, Error, File, Obj, Result, Super, check, ffi};

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
    // Both are 32-bit numbers in a 64-bit type; bits shifted past 32 are dropped, as
    // they were when this was computed in u32.
    let major = nix::sys::stat::major(rdev);
    let minor = nix::sys::stat::minor(rdev);
    ((minor & 0xff) | ((major & 0xfff) << 8) | ((minor & 0xffff_ff00) << 12)) as u32
}

/// One inode in the library's in-memory form, freed on drop.
pub struct Inode(pub(super) NonNull<ffi::sqfs_inode_generic_t>);

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
        let rc = unsafe { ffi::sqfs_id_table_id_to_index(self.0.ptr(), id, &mut index) };
        check(rc, op)?;
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
        let rc = unsafe { ffi::sqfs_xattr_writer_end(xw, &mut index) };
        check(rc, "xattrs")?;
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

#[cfg(test)]
mod tests {
    use super::devno;
    use nix::sys::stat::makedev;

    /// The old encoding: minor's low byte, 12 bits of major, then minor's upper bits.
    #[test]
    fn device_numbers_in_the_old_encoding() {
        assert_eq!(devno(makedev(1, 3)), 0x103);
        assert_eq!(devno(makedev(8, 0x1_2345)), 0x1230_0845);
        assert_eq!(devno(makedev(0xfff, 0xff)), 0xf_ffff);
    }
}
