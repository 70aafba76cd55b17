//! Hand-written declarations for the part of libsquashfs (squashfs-tools-ng 1.x) that
//! the squashfs writer uses. Only the functions and structs below are used; the struct
//! layouts mirror `<sqfs/*.h>` of libsquashfs 1.2 field by field, and the layout test at
//! the bottom pins their sizes.
//!
//! Nothing here is used outside `sqfs`, whose safe types wrap every call.

#![allow(non_camel_case_types)]

use std::os::raw::{c_char, c_int, c_uint, c_void};

pub const SQFS_COMP_GZIP: u16 = 1;
pub const SQFS_COMP_XZ: u16 = 4;
pub const SQFS_COMP_LZ4: u16 = 5;
pub const SQFS_COMP_ZSTD: u16 = 6;

pub const SQFS_INODE_SLINK: u16 = 3;
pub const SQFS_INODE_BDEV: u16 = 4;
pub const SQFS_INODE_CDEV: u16 = 5;
pub const SQFS_INODE_FIFO: u16 = 6;
pub const SQFS_INODE_SOCKET: u16 = 7;
pub const SQFS_INODE_EXT_FILE: u16 = 9;

pub const SQFS_FILE_OPEN_OVERWRITE: u32 = 0x02;
pub const SQFS_FILE_OPEN_NO_CHARSET_XFRM: u32 = 0x04;
pub const SQFS_META_WRITER_KEEP_IN_MEMORY: u32 = 0x01;
pub const SQFS_DIR_WRITER_CREATE_EXPORT_TABLE: u32 = 0x01;
pub const SQFS_FLAG_COMPRESSOR_OPTIONS: u16 = 0x0400;
pub const SQFS_FLAG_UNCOMPRESSED_DATA: u16 = 0x0002;
pub const SQFS_FLAG_NO_FRAGMENTS: u16 = 0x0010;
pub const SQFS_XATTR_NONE: u32 = 0xFFFF_FFFF;
// sqfs/block.h, SQFS_BLK_FLAGS (the per-file ones begin_file takes).
pub const SQFS_BLK_DONT_COMPRESS: u32 = 0x0001;
pub const SQFS_BLK_DONT_FRAGMENT: u32 = 0x0004;

#[repr(C)]
pub struct sqfs_object_t {
    pub destroy: Option<unsafe extern "C" fn(*mut sqfs_object_t)>,
    pub copy: Option<unsafe extern "C" fn(*const sqfs_object_t) -> *mut sqfs_object_t>,
}

#[repr(C)]
pub struct sqfs_file_t {
    pub base: sqfs_object_t,
    pub read_at: Option<unsafe extern "C" fn(*mut sqfs_file_t, u64, *mut c_void, usize) -> c_int>,
    pub write_at:
        Option<unsafe extern "C" fn(*mut sqfs_file_t, u64, *const c_void, usize) -> c_int>,
    pub get_size: Option<unsafe extern "C" fn(*const sqfs_file_t) -> u64>,
    pub truncate: Option<unsafe extern "C" fn(*mut sqfs_file_t, u64) -> c_int>,
}

#[repr(C)]
pub struct sqfs_compressor_t {
    pub base: sqfs_object_t,
    pub get_configuration:
        Option<unsafe extern "C" fn(*const sqfs_compressor_t, *mut sqfs_compressor_config_t)>,
    pub write_options:
        Option<unsafe extern "C" fn(*mut sqfs_compressor_t, *mut sqfs_file_t) -> c_int>,
    pub read_options:
        Option<unsafe extern "C" fn(*mut sqfs_compressor_t, *mut sqfs_file_t) -> c_int>,
    pub do_block:
        Option<unsafe extern "C" fn(*mut sqfs_compressor_t, *const u8, u32, *mut u8, u32) -> i32>,
}

/// `sqfs_compressor_config_t`: the option union is 16 bytes, 8-aligned.
#[repr(C)]
#[derive(Default)]
pub struct sqfs_compressor_config_t {
    pub id: u16,
    pub flags: u16,
    pub block_size: u32,
    pub level: u32,
    pub opt: [u64; 2],
}

/// `sqfs_super_t`: the on-disk superblock, field by field.
#[repr(C)]
#[derive(Default)]
pub struct sqfs_super_t {
    pub magic: u32,
    pub inode_count: u32,
    pub modification_time: u32,
    pub block_size: u32,
    pub fragment_entry_count: u32,
    pub compression_id: u16,
    pub block_log: u16,
    pub flags: u16,
    pub id_count: u16,
    pub version_major: u16,
    pub version_minor: u16,
    pub root_inode_ref: u64,
    pub bytes_used: u64,
    pub id_table_start: u64,
    pub xattr_id_table_start: u64,
    pub inode_table_start: u64,
    pub directory_table_start: u64,
    pub fragment_table_start: u64,
    pub export_table_start: u64,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct sqfs_inode_t {
    pub type_: u16,
    pub mode: u16,
    pub uid_idx: u16,
    pub gid_idx: u16,
    pub mod_time: u32,
    pub inode_number: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct sqfs_inode_dev_t {
    pub nlink: u32,
    pub devno: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct sqfs_inode_ipc_t {
    pub nlink: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct sqfs_inode_slink_t {
    pub nlink: u32,
    pub target_size: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct sqfs_inode_file_ext_t {
    pub blocks_start: u64,
    pub file_size: u64,
    pub sparse: u64,
    pub nlink: u32,
    pub fragment_idx: u32,
    pub fragment_offset: u32,
    pub xattr_idx: u32,
}

/// The inode union; only the members the writer touches are named, the largest
/// (`file_ext`, 40 bytes, 8-aligned) fixes its size.
#[repr(C)]
#[derive(Clone, Copy)]
pub union sqfs_inode_data {
    pub dev: sqfs_inode_dev_t,
    pub ipc: sqfs_inode_ipc_t,
    pub slink: sqfs_inode_slink_t,
    pub file_ext: sqfs_inode_file_ext_t,
}

/// `sqfs_inode_generic_t`, followed in memory by `payload_bytes_available` bytes.
#[repr(C)]
pub struct sqfs_inode_generic_t {
    pub base: sqfs_inode_t,
    pub payload_bytes_available: u32,
    pub payload_bytes_used: u32,
    pub data: sqfs_inode_data,
    pub extra: [u32; 0],
}

/// Opaque library objects.
#[repr(C)]
pub struct sqfs_block_writer_t {
    _private: [u8; 0],
}
#[repr(C)]
pub struct sqfs_block_processor_t {
    _private: [u8; 0],
}
#[repr(C)]
pub struct sqfs_frag_table_t {
    _private: [u8; 0],
}
#[repr(C)]
pub struct sqfs_id_table_t {
    _private: [u8; 0],
}
#[repr(C)]
pub struct sqfs_xattr_writer_t {
    _private: [u8; 0],
}
#[repr(C)]
pub struct sqfs_meta_writer_t {
    _private: [u8; 0],
}
#[repr(C)]
pub struct sqfs_dir_writer_t {
    _private: [u8; 0],
}

// Linked statically: a shared libsquashfs (and the zlib and lz4 it pulls in) would be
// loaded and relocated at the start of every veil process, although only `build` uses
// it. Its zstd and xz symbols come from the statically built copies the decompressors
// already link.
#[link(name = "squashfs", kind = "static", modifiers = "-bundle")]
unsafe extern "C" {
    pub fn sqfs_open_file(filename: *const c_char, flags: u32) -> *mut sqfs_file_t;
    pub fn sqfs_compressor_config_init(
        cfg: *mut sqfs_compressor_config_t,
        id: c_uint,
        block_size: usize,
        flags: u16,
    ) -> c_int;
    pub fn sqfs_compressor_create(
        cfg: *const sqfs_compressor_config_t,
        out: *mut *mut sqfs_compressor_t,
    ) -> c_int;
    pub fn sqfs_super_init(
        sb: *mut sqfs_super_t,
        block_size: usize,
        mtime: u32,
        compressor: c_uint,
    ) -> c_int;
    pub fn sqfs_super_write(sb: *const sqfs_super_t, file: *mut sqfs_file_t) -> c_int;
    pub fn sqfs_block_writer_create(
        file: *mut sqfs_file_t,
        devblksz: usize,
        flags: u32,
    ) -> *mut sqfs_block_writer_t;
    pub fn sqfs_frag_table_create(flags: u32) -> *mut sqfs_frag_table_t;
    pub fn sqfs_frag_table_write(
        tbl: *mut sqfs_frag_table_t,
        file: *mut sqfs_file_t,
        sb: *mut sqfs_super_t,
        cmp: *mut sqfs_compressor_t,
    ) -> c_int;
    pub fn sqfs_block_processor_create(
        max_block_size: usize,
        cmp: *mut sqfs_compressor_t,
        num_workers: c_uint,
        max_backlog: usize,
        wr: *mut sqfs_block_writer_t,
        tbl: *mut sqfs_frag_table_t,
    ) -> *mut sqfs_block_processor_t;
    pub fn sqfs_block_processor_begin_file(
        proc_: *mut sqfs_block_processor_t,
        inode: *mut *mut sqfs_inode_generic_t,
        user: *mut c_void,
        flags: u32,
    ) -> c_int;
    pub fn sqfs_block_processor_append(
        proc_: *mut sqfs_block_processor_t,
        data: *const c_void,
        size: usize,
    ) -> c_int;
    pub fn sqfs_block_processor_end_file(proc_: *mut sqfs_block_processor_t) -> c_int;
    pub fn sqfs_block_processor_finish(proc_: *mut sqfs_block_processor_t) -> c_int;
    pub fn sqfs_id_table_create(flags: u32) -> *mut sqfs_id_table_t;
    pub fn sqfs_id_table_id_to_index(tbl: *mut sqfs_id_table_t, id: u32, out: *mut u16) -> c_int;
    pub fn sqfs_id_table_write(
        tbl: *mut sqfs_id_table_t,
        file: *mut sqfs_file_t,
        sb: *mut sqfs_super_t,
        cmp: *mut sqfs_compressor_t,
    ) -> c_int;
    pub fn sqfs_xattr_writer_create(flags: u32) -> *mut sqfs_xattr_writer_t;
    pub fn sqfs_xattr_writer_begin(xwr: *mut sqfs_xattr_writer_t, flags: u32) -> c_int;
    pub fn sqfs_xattr_writer_add(
        xwr: *mut sqfs_xattr_writer_t,
        key: *const c_char,
        value: *const c_void,
        size: usize,
    ) -> c_int;
    pub fn sqfs_xattr_writer_end(xwr: *mut sqfs_xattr_writer_t, out: *mut u32) -> c_int;
    pub fn sqfs_xattr_writer_flush(
        xwr: *const sqfs_xattr_writer_t,
        file: *mut sqfs_file_t,
        sb: *mut sqfs_super_t,
        cmp: *mut sqfs_compressor_t,
    ) -> c_int;
    pub fn sqfs_meta_writer_create(
        file: *mut sqfs_file_t,
        cmp: *mut sqfs_compressor_t,
        flags: u32,
    ) -> *mut sqfs_meta_writer_t;
    pub fn sqfs_meta_writer_flush(m: *mut sqfs_meta_writer_t) -> c_int;
    pub fn sqfs_meta_writer_get_position(
        m: *const sqfs_meta_writer_t,
        block_start: *mut u64,
        offset: *mut u32,
    );
    pub fn sqfs_meta_write_write_to_file(m: *mut sqfs_meta_writer_t) -> c_int;
    pub fn sqfs_meta_writer_write_inode(
        iw: *mut sqfs_meta_writer_t,
        n: *const sqfs_inode_generic_t,
    ) -> c_int;
    pub fn sqfs_dir_writer_create(
        dm: *mut sqfs_meta_writer_t,
        flags: u32,
    ) -> *mut sqfs_dir_writer_t;
    pub fn sqfs_dir_writer_begin(writer: *mut sqfs_dir_writer_t, flags: u32) -> c_int;
    pub fn sqfs_dir_writer_add_entry(
        writer: *mut sqfs_dir_writer_t,
        name: *const c_char,
        inode_num: u32,
        inode_ref: u64,
        mode: u16,
    ) -> c_int;
    pub fn sqfs_dir_writer_end(writer: *mut sqfs_dir_writer_t) -> c_int;
    pub fn sqfs_dir_writer_create_inode(
        writer: *const sqfs_dir_writer_t,
        hlinks: usize,
        xattr: u32,
        parent_ino: u32,
    ) -> *mut sqfs_inode_generic_t;
    pub fn sqfs_dir_writer_write_export_table(
        writer: *mut sqfs_dir_writer_t,
        file: *mut sqfs_file_t,
        cmp: *mut sqfs_compressor_t,
        root_inode_num: u32,
        root_inode_ref: u64,
        sb: *mut sqfs_super_t,
    ) -> c_int;
    pub fn sqfs_inode_set_xattr_index(inode: *mut sqfs_inode_generic_t, index: u32) -> c_int;
    pub fn sqfs_inode_make_extended(inode: *mut sqfs_inode_generic_t) -> c_int;
    pub fn sqfs_free(ptr: *mut c_void);
}

// libsquashfs's own dependencies, linked after it (one block each: several `link`
// attributes on one block read as duplicates to clippy).
#[link(name = "z", kind = "static", modifiers = "-bundle")]
unsafe extern "C" {}
#[link(name = "lz4", kind = "static", modifiers = "-bundle")]
unsafe extern "C" {}

/// `sqfs_destroy`: the library's objects free themselves through their first field.
///
/// # Safety
/// `obj` is null or a live libsquashfs object (`sqfs_object_t` first), not used afterwards.
pub unsafe fn destroy<T>(obj: *mut T) {
    if obj.is_null() {
        return;
    }
    let o = obj as *mut sqfs_object_t;
    // SAFETY: the caller guarantees `obj` is a live object whose first member is
    // `sqfs_object_t`, so reading `destroy` and calling it on itself is what the
    // library's own inline `sqfs_destroy` does.
    unsafe {
        if let Some(d) = (*o).destroy {
            d(o);
        }
    }
}

/// Debian's libsquashfs.a is compiled against glibc with _FORTIFY_SOURCE, and calls
/// glibc's checked memcpy; musl has no fortified entry points, so a musl build
/// provides this one (same contract: abort when the copy would overrun `dstlen`).
#[cfg(target_env = "musl")]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __memcpy_chk(
    dst: *mut c_void,
    src: *const c_void,
    len: usize,
    dstlen: usize,
) -> *mut c_void {
    if len > dstlen {
        std::process::abort();
    }
    // SAFETY: the caller's contract is memcpy's, and `len` fits the destination.
    unsafe { libc::memcpy(dst, src, len) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{align_of, offset_of, size_of};

    #[test]
    fn layouts_match_libsquashfs_1_2() {
        assert_eq!(size_of::<sqfs_super_t>(), 96);
        assert_eq!(size_of::<sqfs_inode_t>(), 16);
        assert_eq!(size_of::<sqfs_inode_data>(), 40);
        assert_eq!(align_of::<sqfs_inode_data>(), 8);
        assert_eq!(offset_of!(sqfs_inode_generic_t, data), 24);
        assert_eq!(size_of::<sqfs_inode_generic_t>(), 64);
        assert_eq!(size_of::<sqfs_compressor_config_t>(), 32);
        assert_eq!(offset_of!(sqfs_file_t, get_size), 32);
    }
}
