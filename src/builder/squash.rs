//! Writes a [`Tree`] as a squashfs image with libsquashfs (squashfs-tools-ng): file data
//! goes through the library's block processor, which compresses on `threads` worker
//! threads and deduplicates blocks; inodes and directories are written afterwards in
//! post-order (children before their directory, the root last, as mksquashfs numbers
//! them).
//!
//! Every libsquashfs object lives in [`Sqfs`], which destroys them in reverse order on
//! drop, so an error anywhere leaks nothing.

use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::ptr;

use super::error::{BuildError, Result};
use super::progress::Progress;
use super::sqfs_ffi as ffi;
use super::tree::{FileData, Kind, Tree};

/// Squashfs compressors veil can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Zstd,
    Xz,
    Lz4,
}

impl Compression {
    fn id(self) -> u16 {
        match self {
            Compression::Gzip => ffi::SQFS_COMP_GZIP,
            Compression::Zstd => ffi::SQFS_COMP_ZSTD,
            Compression::Xz => ffi::SQFS_COMP_XZ,
            Compression::Lz4 => ffi::SQFS_COMP_LZ4,
        }
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

#[derive(Debug, Clone)]
pub struct SquashOptions {
    pub compression: Compression,
    /// Compression level; `None` = the library default (gzip 9, zstd 15, xz 6), the
    /// same defaults as mksquashfs.
    pub level: Option<u32>,
    pub block_size: u32,
    /// Compression threads.
    pub threads: u32,
    /// The superblock's creation time.
    pub mkfs_time: u32,
    pub progress: bool,
}

impl Default for SquashOptions {
    fn default() -> Self {
        SquashOptions {
            compression: Compression::Gzip,
            level: None,
            block_size: 128 * 1024,
            threads: std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(1),
            mkfs_time: 0,
            progress: false,
        }
    }
}

fn check(rc: i32, what: &str) -> Result<()> {
    if rc < 0 {
        let why = match rc {
            -1 => "out of memory",
            -2 => "I/O error",
            -3 => "compressor error",
            -7 => "size overflow",
            -16 => "invalid argument",
            _ => "internal error",
        };
        return Err(BuildError::Squashfs(format!("{what}: {why} ({rc})")));
    }
    Ok(())
}

fn non_null<T>(p: *mut T, what: &str) -> Result<*mut T> {
    if p.is_null() {
        return Err(BuildError::Squashfs(format!("{what}: out of memory")));
    }
    Ok(p)
}

/// The library objects of one image being written.
struct Sqfs {
    file: *mut ffi::sqfs_file_t,
    cmp: *mut ffi::sqfs_compressor_t,
    bw: *mut ffi::sqfs_block_writer_t,
    frag: *mut ffi::sqfs_frag_table_t,
    proc_: *mut ffi::sqfs_block_processor_t,
    ids: *mut ffi::sqfs_id_table_t,
    xw: *mut ffi::sqfs_xattr_writer_t,
    im: *mut ffi::sqfs_meta_writer_t,
    dm: *mut ffi::sqfs_meta_writer_t,
    dw: *mut ffi::sqfs_dir_writer_t,
    /// Inodes: file inodes belong to the library (`sqfs_free`), the others are ours
    /// (`libc::free`); both are the C allocator's. Boxed on purpose: the block processor
    /// keeps the address of each slot and updates it, so slots must not move when the
    /// vector grows.
    #[allow(clippy::vec_box)]
    inodes: Vec<Box<*mut ffi::sqfs_inode_generic_t>>,
}

impl Drop for Sqfs {
    fn drop(&mut self) {
        // SAFETY: every pointer is null or an object created by libsquashfs for this
        // image and not destroyed before; the order tears down users before what they
        // use (the processor before the block writer and table, writers before the file).
        unsafe {
            ffi::destroy(self.proc_);
            ffi::destroy(self.dw);
            ffi::destroy(self.dm);
            ffi::destroy(self.im);
            ffi::destroy(self.xw);
            ffi::destroy(self.ids);
            ffi::destroy(self.frag);
            ffi::destroy(self.bw);
            ffi::destroy(self.cmp);
            ffi::destroy(self.file);
            for p in self.inodes.drain(..) {
                if !p.is_null() {
                    ffi::sqfs_free((*p).cast());
                }
            }
        }
    }
}

/// Statistics of a written image.
#[derive(Debug, Clone, Copy)]
pub struct SquashStats {
    pub bytes: u64,
    pub inodes: u32,
}

/// Allocates an inode of `type_` with `payload` extra bytes (zeroed).
fn alloc_inode(type_: u16, payload: usize) -> Result<*mut ffi::sqfs_inode_generic_t> {
    let size = std::mem::size_of::<ffi::sqfs_inode_generic_t>() + payload;
    // SAFETY: calloc returns zeroed memory of `size` bytes or null; C malloc alignment
    // (16) satisfies the struct's 8.
    let p = unsafe { libc::calloc(1, size) } as *mut ffi::sqfs_inode_generic_t;
    let p = non_null(p, "allocating an inode")?;
    // SAFETY: `p` points to a zeroed allocation large enough for the struct.
    unsafe {
        (*p).base.type_ = type_;
        (*p).payload_bytes_available = payload as u32;
        (*p).payload_bytes_used = payload as u32;
    }
    Ok(p)
}

fn devno(rdev: u64) -> u32 {
    let major = libc::major(rdev);
    let minor = libc::minor(rdev);
    (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12)
}

fn type_bits(kind: &Kind) -> u16 {
    (match kind {
        Kind::Dir(_) => libc::S_IFDIR,
        Kind::File(..) | Kind::HardLink(_) => libc::S_IFREG,
        Kind::Symlink(_) => libc::S_IFLNK,
        Kind::CharDev(_) => libc::S_IFCHR,
        Kind::BlockDev(_) => libc::S_IFBLK,
        Kind::Fifo => libc::S_IFIFO,
        Kind::Socket => libc::S_IFSOCK,
    }) as u16
}

/// Resolves a hard link to the node that owns the inode.
fn owner(tree: &Tree, i: usize) -> usize {
    match tree.nodes()[i].kind {
        Kind::HardLink(t) => t,
        _ => i,
    }
}

/// Post-order list of inode owners (children before their directory; each inode once).
fn post_order(tree: &Tree) -> (Vec<usize>, Vec<u32>) {
    let n = tree.nodes().len();
    let mut ino = vec![0u32; n];
    let mut order = Vec::new();
    // Iterative DFS: (node, children visited?)
    let mut stack = vec![(tree.root(), false)];
    while let Some((i, done)) = stack.pop() {
        match &tree.nodes()[i].kind {
            Kind::Dir(ch) if !done => {
                stack.push((i, true));
                for &c in ch.values().rev() {
                    stack.push((c, false));
                }
            }
            _ => {
                let o = owner(tree, i);
                if ino[o] == 0 {
                    order.push(o);
                    ino[o] = order.len() as u32;
                }
            }
        }
    }
    (order, ino)
}

/// What the reader thread sends for each file: its bytes in chunks (`Inline` for a file
/// held in memory), then `End`; `Fail` stops the build.
enum Chunk {
    Data(Vec<u8>),
    Inline,
    End,
    Fail(String),
}

/// Reads every file of `files` in order, in chunks of up to 1 MiB. Stops when the
/// receiver is gone.
fn read_ahead(files: &[(usize, &FileData)], tx: std::sync::mpsc::SyncSender<Chunk>) {
    const CHUNK: usize = 1 << 20;
    for (_, data) in files {
        match data {
            FileData::Bytes(_) => {
                if tx.send(Chunk::Inline).is_err() {
                    return;
                }
            }
            FileData::Path(p) => {
                let mut f = match File::open(p) {
                    Ok(f) => f,
                    Err(e) => {
                        let _ = tx.send(Chunk::Fail(format!("{}: {e}", p.display())));
                        return;
                    }
                };
                // Buffers sized to what is left (plus one byte to see the end without
                // another read), so small files cost small allocations.
                let mut left = f.metadata().map(|m| m.len()).unwrap_or(0);
                loop {
                    let want = (left.saturating_add(1)).min(CHUNK as u64) as usize;
                    let mut buf = vec![0u8; want];
                    let mut n = 0;
                    while n < want {
                        match f.read(&mut buf[n..]) {
                            Ok(0) => break,
                            Ok(k) => n += k,
                            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                            Err(e) => {
                                let _ = tx.send(Chunk::Fail(format!("{}: {e}", p.display())));
                                return;
                            }
                        }
                    }
                    if n == 0 {
                        break;
                    }
                    buf.truncate(n);
                    left = left.saturating_sub(n as u64);
                    let last = n < want;
                    if tx.send(Chunk::Data(buf)).is_err() {
                        return;
                    }
                    if last {
                        break;
                    }
                }
            }
        }
        if tx.send(Chunk::End).is_err() {
            return;
        }
    }
}

/// Writes `tree` as a squashfs image to `out` (created or truncated).
pub fn write(tree: &Tree, out: &Path, opts: &SquashOptions) -> Result<SquashStats> {
    let nodes = tree.nodes();
    let (order, ino) = post_order(tree);
    let mut nlink = vec![0u32; nodes.len()];
    for (i, n) in nodes.iter().enumerate() {
        match &n.kind {
            Kind::HardLink(t) => nlink[*t] += 1,
            Kind::Dir(ch) => {
                nlink[i] += 2 + ch
                    .values()
                    .filter(|&&c| matches!(nodes[c].kind, Kind::Dir(_)))
                    .count() as u32;
            }
            _ => nlink[i] += 1,
        }
    }
    let mut parent = vec![0u32; nodes.len()];
    for (i, n) in nodes.iter().enumerate() {
        if let Kind::Dir(ch) = &n.kind {
            for &c in ch.values() {
                parent[c] = ino[i];
            }
        }
    }
    // The root's parent is one past the last inode, as mksquashfs writes it.
    let root_parent = order.len() as u32 + 1;

    let cpath = CString::new(std::os::unix::ffi::OsStrExt::as_bytes(out.as_os_str()))
        .map_err(|_| BuildError::Squashfs("output path contains a NUL byte".into()))?;
    let mut s = Sqfs {
        file: ptr::null_mut(),
        cmp: ptr::null_mut(),
        bw: ptr::null_mut(),
        frag: ptr::null_mut(),
        proc_: ptr::null_mut(),
        ids: ptr::null_mut(),
        xw: ptr::null_mut(),
        im: ptr::null_mut(),
        dm: ptr::null_mut(),
        dw: ptr::null_mut(),
        inodes: Vec::new(),
    };
    let mut sb = ffi::sqfs_super_t::default();
    let progress = Progress::new("squashfs", tree.data_bytes(), opts.progress);

    // SAFETY (whole block): each call receives objects created above in this function and
    // owned by `s`, or plain values; return codes and null results are checked before
    // an object is used; inode pointers handed to the block processor live in boxes kept
    // in `s.inodes` until `s` is dropped, after the processor has finished with them.
    unsafe {
        s.file = ffi::sqfs_open_file(
            cpath.as_ptr(),
            ffi::SQFS_FILE_OPEN_OVERWRITE | ffi::SQFS_FILE_OPEN_NO_CHARSET_XFRM,
        );
        if s.file.is_null() {
            return Err(BuildError::Squashfs(format!(
                "cannot create {}",
                out.display()
            )));
        }
        let mut cfg: ffi::sqfs_compressor_config_t = std::mem::zeroed();
        check(
            ffi::sqfs_compressor_config_init(
                &mut cfg,
                opts.compression.id() as u32,
                opts.block_size as usize,
                0,
            ),
            "compressor configuration",
        )?;
        if let Some(level) = opts.level {
            cfg.level = level;
        }
        check(
            ffi::sqfs_compressor_create(&cfg, &mut s.cmp),
            &format!("creating the {} compressor", opts.compression.name()),
        )?;
        check(
            ffi::sqfs_super_init(
                &mut sb,
                opts.block_size as usize,
                opts.mkfs_time,
                opts.compression.id() as u32,
            ),
            "superblock",
        )?;
        check(ffi::sqfs_super_write(&sb, s.file), "writing the superblock")?;
        let wo = (*s.cmp)
            .write_options
            .ok_or_else(|| BuildError::Squashfs("compressor without options writer".into()))?;
        let n = wo(s.cmp, s.file);
        check(n, "writing compressor options")?;
        if n > 0 {
            sb.flags |= ffi::SQFS_FLAG_COMPRESSOR_OPTIONS;
        }
        s.bw = non_null(
            ffi::sqfs_block_writer_create(s.file, 4096, 0),
            "block writer",
        )?;
        s.frag = non_null(ffi::sqfs_frag_table_create(0), "fragment table")?;
        let threads = opts.threads.max(1);
        s.proc_ = non_null(
            ffi::sqfs_block_processor_create(
                opts.block_size as usize,
                s.cmp,
                threads,
                (threads as usize) * 32,
                s.bw,
                s.frag,
            ),
            "block processor",
        )?;
        s.ids = non_null(ffi::sqfs_id_table_create(0), "id table")?;
        s.xw = non_null(ffi::sqfs_xattr_writer_create(0), "xattr writer")?;
        s.im = non_null(
            ffi::sqfs_meta_writer_create(s.file, s.cmp, 0),
            "inode writer",
        )?;
        s.dm = non_null(
            ffi::sqfs_meta_writer_create(s.file, s.cmp, ffi::SQFS_META_WRITER_KEEP_IN_MEMORY),
            "directory writer",
        )?;
        s.dw = non_null(
            ffi::sqfs_dir_writer_create(s.dm, ffi::SQFS_DIR_WRITER_CREATE_EXPORT_TABLE),
            "directory writer",
        )?;

        // 1. File data, in tree order. A reader thread reads the files ahead (bounded)
        // while this thread hands the bytes to the block processor, whose workers
        // compress them.
        let mut file_inode: Vec<Option<usize>> = vec![None; nodes.len()];
        let files: Vec<(usize, &FileData)> = order
            .iter()
            .filter_map(|&i| match &nodes[i].kind {
                Kind::File(data, _) => Some((i, data)),
                _ => None,
            })
            .collect();
        std::thread::scope(|sc| -> Result<()> {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Chunk>(64);
            let list = &files;
            sc.spawn(move || read_ahead(list, tx));
            for &(i, data) in &files {
                s.inodes.push(Box::new(ptr::null_mut()));
                let slot = s.inodes.len() - 1;
                let inode_pp: *mut *mut ffi::sqfs_inode_generic_t = &mut *s.inodes[slot];
                check(
                    ffi::sqfs_block_processor_begin_file(s.proc_, inode_pp, ptr::null_mut(), 0),
                    "starting a file",
                )?;
                loop {
                    let chunk = rx
                        .recv()
                        .map_err(|_| BuildError::Squashfs("the file reader stopped".into()))?;
                    let bytes: &[u8] = match &chunk {
                        Chunk::Data(v) => v,
                        Chunk::Inline => match data {
                            FileData::Bytes(b) => b,
                            FileData::Path(_) => &[],
                        },
                        Chunk::End => break,
                        Chunk::Fail(e) => {
                            return Err(BuildError::Source(e.clone()));
                        }
                    };
                    if !bytes.is_empty() {
                        check(
                            ffi::sqfs_block_processor_append(
                                s.proc_,
                                bytes.as_ptr().cast(),
                                bytes.len(),
                            ),
                            "adding file data",
                        )?;
                    }
                    progress.add(bytes.len() as u64);
                }
                check(
                    ffi::sqfs_block_processor_end_file(s.proc_),
                    "finishing a file",
                )?;
                file_inode[i] = Some(slot);
            }
            Ok(())
        })?;
        check(
            ffi::sqfs_block_processor_finish(s.proc_),
            "compressing file data",
        )?;
        progress.finish();

        // 2. Inodes and directories, post-order.
        let get_size = (*s.file)
            .get_size
            .ok_or_else(|| BuildError::Squashfs("file without get_size".into()))?;
        sb.inode_table_start = get_size(s.file);
        let mut iref = vec![0u64; nodes.len()];
        for &i in &order {
            let node = &nodes[i];
            let meta = &node.meta;
            let mut xidx = ffi::SQFS_XATTR_NONE;
            if !meta.xattrs.is_empty() {
                check(ffi::sqfs_xattr_writer_begin(s.xw, 0), "xattrs")?;
                for (k, v) in &meta.xattrs {
                    let Ok(ck) = CString::new(k.clone()) else {
                        continue;
                    };
                    check(
                        ffi::sqfs_xattr_writer_add(s.xw, ck.as_ptr(), v.as_ptr().cast(), v.len()),
                        "adding an xattr",
                    )?;
                }
                check(ffi::sqfs_xattr_writer_end(s.xw, &mut xidx), "xattrs")?;
            }
            let inode: *mut ffi::sqfs_inode_generic_t = match &node.kind {
                Kind::Dir(ch) => {
                    check(ffi::sqfs_dir_writer_begin(s.dw, 0), "starting a directory")?;
                    for (name, &c) in ch {
                        let o = owner(tree, c);
                        let cname = CString::new(name.clone()).map_err(|_| {
                            BuildError::Squashfs("a file name contains a NUL byte".into())
                        })?;
                        let mode = type_bits(&nodes[c].kind) | nodes[o].meta.perm;
                        check(
                            ffi::sqfs_dir_writer_add_entry(
                                s.dw,
                                cname.as_ptr(),
                                ino[o],
                                iref[o],
                                mode,
                            ),
                            "adding a directory entry",
                        )?;
                    }
                    check(ffi::sqfs_dir_writer_end(s.dw), "finishing a directory")?;
                    let p = non_null(
                        ffi::sqfs_dir_writer_create_inode(
                            s.dw,
                            nlink[i] as usize,
                            xidx,
                            if i == tree.root() {
                                root_parent
                            } else {
                                parent[i]
                            },
                        ),
                        "directory inode",
                    )?;
                    s.inodes.push(Box::new(p));
                    p
                }
                Kind::File(..) => {
                    let slot = file_inode[i].ok_or_else(|| {
                        BuildError::Squashfs("a file's data was not written".into())
                    })?;
                    let p = *s.inodes[slot];
                    let p = non_null(p, "file inode")?;
                    check(ffi::sqfs_inode_set_xattr_index(p, xidx), "file xattrs")?;
                    if nlink[i] > 1 {
                        check(ffi::sqfs_inode_make_extended(p), "file inode")?;
                        (*p).data.file_ext.nlink = nlink[i];
                    }
                    p
                }
                Kind::Symlink(target) => {
                    let p = alloc_inode(ffi::SQFS_INODE_SLINK, target.len())?;
                    s.inodes.push(Box::new(p));
                    (*p).data.slink = ffi::sqfs_inode_slink_t {
                        nlink: nlink[i],
                        target_size: target.len() as u32,
                    };
                    let extra = ptr::addr_of_mut!((*p).extra) as *mut u8;
                    ptr::copy_nonoverlapping(target.as_ptr(), extra, target.len());
                    check(ffi::sqfs_inode_set_xattr_index(p, xidx), "symlink xattrs")?;
                    p
                }
                Kind::CharDev(rdev) | Kind::BlockDev(rdev) => {
                    let t = if matches!(node.kind, Kind::CharDev(_)) {
                        ffi::SQFS_INODE_CDEV
                    } else {
                        ffi::SQFS_INODE_BDEV
                    };
                    let p = alloc_inode(t, 0)?;
                    s.inodes.push(Box::new(p));
                    (*p).data.dev = ffi::sqfs_inode_dev_t {
                        nlink: nlink[i],
                        devno: devno(*rdev),
                    };
                    check(ffi::sqfs_inode_set_xattr_index(p, xidx), "device xattrs")?;
                    p
                }
                Kind::Fifo | Kind::Socket => {
                    let t = if matches!(node.kind, Kind::Fifo) {
                        ffi::SQFS_INODE_FIFO
                    } else {
                        ffi::SQFS_INODE_SOCKET
                    };
                    let p = alloc_inode(t, 0)?;
                    s.inodes.push(Box::new(p));
                    (*p).data.ipc = ffi::sqfs_inode_ipc_t { nlink: nlink[i] };
                    check(ffi::sqfs_inode_set_xattr_index(p, xidx), "xattrs")?;
                    p
                }
                Kind::HardLink(_) => unreachable!("post_order yields link owners only"),
            };
            (*inode).base.mode = type_bits(&node.kind) | meta.perm;
            (*inode).base.mod_time = meta.mtime;
            (*inode).base.inode_number = ino[i];
            check(
                ffi::sqfs_id_table_id_to_index(s.ids, meta.uid, &mut (*inode).base.uid_idx),
                "uid table",
            )?;
            check(
                ffi::sqfs_id_table_id_to_index(s.ids, meta.gid, &mut (*inode).base.gid_idx),
                "gid table",
            )?;
            let (mut block, mut offset) = (0u64, 0u32);
            ffi::sqfs_meta_writer_get_position(s.im, &mut block, &mut offset);
            iref[i] = (block << 16) | offset as u64;
            check(
                ffi::sqfs_meta_writer_write_inode(s.im, inode),
                "writing an inode",
            )?;
        }
        let root = tree.root();
        sb.root_inode_ref = iref[root];
        sb.inode_count = order.len() as u32;
        check(ffi::sqfs_meta_writer_flush(s.im), "flushing inodes")?;
        check(ffi::sqfs_meta_writer_flush(s.dm), "flushing directories")?;
        sb.directory_table_start = get_size(s.file);
        check(
            ffi::sqfs_meta_write_write_to_file(s.dm),
            "writing directories",
        )?;
        check(
            ffi::sqfs_frag_table_write(s.frag, s.file, &mut sb, s.cmp),
            "writing the fragment table",
        )?;
        check(
            ffi::sqfs_dir_writer_write_export_table(
                s.dw, s.file, s.cmp, ino[root], iref[root], &mut sb,
            ),
            "writing the export table",
        )?;
        check(
            ffi::sqfs_id_table_write(s.ids, s.file, &mut sb, s.cmp),
            "writing the id table",
        )?;
        check(
            ffi::sqfs_xattr_writer_flush(s.xw, s.file, &mut sb, s.cmp),
            "writing the xattr table",
        )?;
        sb.bytes_used = get_size(s.file);
        check(ffi::sqfs_super_write(&sb, s.file), "writing the superblock")?;
        // Pad to 4 KiB, as mksquashfs does (the size of an encrypted payload and a
        // loop device's view rely on it).
        let pad = (4096 - sb.bytes_used % 4096) % 4096;
        if pad > 0 {
            let zeros = vec![0u8; pad as usize];
            let write_at = (*s.file)
                .write_at
                .ok_or_else(|| BuildError::Squashfs("file without write_at".into()))?;
            check(
                write_at(s.file, sb.bytes_used, zeros.as_ptr().cast(), zeros.len()),
                "padding",
            )?;
        }
        Ok(SquashStats {
            bytes: sb.bytes_used + pad,
            inodes: order.len() as u32,
        })
    }
}
