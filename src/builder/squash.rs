//! Writes a [`Tree`] as a squashfs image with libsquashfs (squashfs-tools-ng): file data
//! goes through the library's block processor, which compresses on `threads` worker
//! threads and deduplicates blocks; inodes and directories are written afterwards in
//! post-order (children before their directory, the root last, as mksquashfs numbers
//! them).
//!
//! The library is used through the safe types of `sqfs`, each destroyed on drop, so an
//! error anywhere leaks nothing.

#![forbid(unsafe_code)]

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::error::{BuildError, Result};
use super::sqfs::{self, BlockProcessor, DirWriter, IdTable, Inode, MetaWriter, XattrWriter};
use super::tree::{FileData, Kind, Tree};
use crate::support::progress::Progress;

pub use super::sqfs::Compression;

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
    /// File data uncompressed and without fragments (mksquashfs's `-noD -noF`):
    /// the outer squashfs of a gocryptfs image, whose one big file is ciphertext.
    pub stored: bool,
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
            stored: false,
        }
    }
}

/// Statistics of a written image.
#[derive(Debug, Clone, Copy)]
pub struct SquashStats {
    pub bytes: u64,
    pub inodes: u32,
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
    Fail(PathBuf, std::io::Error),
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
                        let _ = tx.send(Chunk::Fail(p.clone(), e));
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
                                let _ = tx.send(Chunk::Fail(p.clone(), e));
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

/// Why writing stopped: a libsquashfs step (reported with the output's path), or a
/// build error that names its own path (a source file that could not be read).
enum Failure {
    Sqfs(sqfs::Error),
    Build(BuildError),
}

impl From<sqfs::Error> for Failure {
    fn from(e: sqfs::Error) -> Self {
        Failure::Sqfs(e)
    }
}

impl From<BuildError> for Failure {
    fn from(e: BuildError) -> Self {
        Failure::Build(e)
    }
}

/// The numbering of the image: inodes in post-order, their link counts and parents.
struct Numbering {
    /// Inode owners in the order their inodes are written.
    order: Vec<usize>,
    /// Inode number of each owner (0 for hard links and unvisited nodes).
    ino: Vec<u32>,
    nlink: Vec<u32>,
    /// Inode number of each node's directory; the root's is one past the last inode,
    /// as mksquashfs writes it.
    parent: Vec<u32>,
}

impl Numbering {
    fn new(tree: &Tree) -> Numbering {
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
        parent[tree.root()] = order.len() as u32 + 1;
        Numbering {
            order,
            ino,
            nlink,
            parent,
        }
    }
}

/// Writes `tree` as a squashfs image to `out` (created or truncated).
pub fn write(tree: &Tree, out: &Path, opts: &SquashOptions) -> Result<SquashStats> {
    write_image(tree, out, opts).map_err(|f| match f {
        Failure::Sqfs(err) => BuildError::Squashfs {
            path: out.display().to_string(),
            err,
        },
        Failure::Build(e) => e,
    })
}

fn write_image(tree: &Tree, out: &Path, opts: &SquashOptions) -> Result<SquashStats, Failure> {
    let num = Numbering::new(tree);
    let file = sqfs::File::create(out)?;
    let cmp = sqfs::Compressor::new(opts.compression, opts.block_size, opts.level)?;
    let mut sb = sqfs::Super::new(opts.compression, opts.block_size, opts.mkfs_time)?;
    sb.write(&file)?;
    if cmp.write_options(&file)? {
        sb.set_compressor_options();
    }
    if opts.stored {
        sb.set_stored_data();
    }
    let blocks = sqfs::BlockWriter::new(&file)?;
    let frags = sqfs::FragTable::new()?;
    let processor = BlockProcessor::new(opts.block_size, &cmp, opts.threads, &blocks, &frags)?;
    let mut ids = IdTable::new()?;
    let mut xattrs = XattrWriter::new()?;
    let inode_writer = MetaWriter::new(&file, &cmp, false)?;
    let dir_meta = MetaWriter::new(&file, &cmp, true)?;
    let mut dirs = DirWriter::new(&dir_meta)?;

    let file_inodes = write_data(tree, &num.order, processor, opts.progress, opts.stored)?;

    sb.set_inode_table_start(file.size()?);
    let mut w = InodeWriter {
        tree,
        num: &num,
        file_inodes,
        iref: vec![0u64; tree.nodes().len()],
        ids: &mut ids,
        xattrs: &mut xattrs,
        inodes: &inode_writer,
        dirs: &mut dirs,
    };
    for &i in &num.order {
        w.write(i)?;
    }
    let root = tree.root();
    let root_ref = w.iref[root];
    sb.set_root(root_ref, num.order.len() as u32);

    inode_writer.flush("flushing inodes")?;
    dir_meta.flush("flushing directories")?;
    sb.set_directory_table_start(file.size()?);
    dir_meta.write_to_file()?;
    frags.write(&file, &mut sb, &cmp)?;
    dirs.write_export_table(&file, &cmp, (num.ino[root], root_ref), &mut sb)?;
    ids.write(&file, &mut sb, &cmp)?;
    xattrs.write(&file, &mut sb, &cmp)?;
    sb.set_bytes_used(file.size()?);
    sb.write(&file)?;
    // Padded to 4 KiB, as mksquashfs does: the size of an encrypted payload and a loop
    // device's view rely on it.
    let bytes = sb.bytes_used();
    let pad = (4096 - bytes % 4096) % 4096;
    if pad > 0 {
        file.write_at(bytes, &vec![0u8; pad as usize])
            .map_err(|e| sqfs::Error::new("padding", e.to_string()))?;
    }
    Ok(SquashStats {
        bytes: bytes + pad,
        inodes: num.order.len() as u32,
    })
}

/// File data, in `order`: a reader thread reads the files ahead (bounded) while this
/// thread hands the bytes to the block processor, whose workers compress them. Returns
/// each file node's inode, indexed by node.
fn write_data(
    tree: &Tree,
    order: &[usize],
    mut processor: BlockProcessor<'_>,
    show_progress: bool,
    stored: bool,
) -> Result<Vec<Option<Inode>>, Failure> {
    let nodes = tree.nodes();
    let progress = Progress::new("squashfs", tree.data_bytes(), show_progress);
    let files: Vec<(usize, &FileData)> = order
        .iter()
        .filter_map(|&i| match &nodes[i].kind {
            Kind::File(data, _) => Some((i, data)),
            _ => None,
        })
        .collect();
    std::thread::scope(|sc| -> Result<(), Failure> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Chunk>(64);
        let list = &files;
        sc.spawn(move || read_ahead(list, tx));
        for &(_, data) in &files {
            processor.begin_file(stored)?;
            loop {
                let chunk = rx
                    .recv()
                    .map_err(|_| sqfs::Error::new("reading files", "the file reader stopped"))?;
                let read: Vec<u8>;
                let bytes: &[u8] = match chunk {
                    Chunk::Data(v) => {
                        read = v;
                        &read
                    }
                    Chunk::Inline => match data {
                        FileData::Bytes(b) => b,
                        FileData::Path(_) => &[],
                    },
                    Chunk::End => break,
                    Chunk::Fail(path, e) => return Err(BuildError::io(&path, e).into()),
                };
                if !bytes.is_empty() {
                    processor.append(bytes)?;
                }
                progress.add(bytes.len() as u64);
            }
            processor.end_file()?;
        }
        Ok(())
    })?;
    let inodes = processor.finish()?;
    progress.finish();
    let mut by_node: Vec<Option<Inode>> = (0..nodes.len()).map(|_| None).collect();
    for ((i, _), inode) in files.iter().zip(inodes) {
        by_node[*i] = Some(inode);
    }
    Ok(by_node)
}

/// Writes the inodes and the directories, children before their directory.
struct InodeWriter<'t, 'w, 'm> {
    tree: &'t Tree,
    num: &'t Numbering,
    /// The block processor's inodes of the regular files, taken as they are written.
    file_inodes: Vec<Option<Inode>>,
    /// Each written inode's reference, for the directory entries that name it.
    iref: Vec<u64>,
    ids: &'w mut IdTable,
    xattrs: &'w mut XattrWriter,
    inodes: &'w MetaWriter<'m>,
    dirs: &'w mut DirWriter<'m>,
}

impl InodeWriter<'_, '_, '_> {
    fn write(&mut self, i: usize) -> Result<(), Failure> {
        let node = &self.tree.nodes()[i];
        let meta = &node.meta;
        let nlink = self.num.nlink[i];
        let xidx = if meta.xattrs.is_empty() {
            sqfs::NO_XATTRS
        } else {
            self.xattrs.add_set(&meta.xattrs)?
        };
        let mut inode = match &node.kind {
            Kind::Dir(ch) => self.directory(ch, nlink, xidx, self.num.parent[i])?,
            Kind::File(..) => {
                let mut p = self.file_inodes[i].take().ok_or_else(|| {
                    sqfs::Error::new("file inode", "the file's data was not written")
                })?;
                p.set_xattr_index(xidx)?;
                if nlink > 1 {
                    p.set_file_nlink(nlink)?;
                }
                p
            }
            Kind::Symlink(target) => {
                let mut p = Inode::symlink(target, nlink)?;
                p.set_xattr_index(xidx)?;
                p
            }
            Kind::CharDev(rdev) | Kind::BlockDev(rdev) => {
                let kind = if matches!(node.kind, Kind::CharDev(_)) {
                    sqfs::Special::CharDev(*rdev)
                } else {
                    sqfs::Special::BlockDev(*rdev)
                };
                let mut p = Inode::special(kind, nlink)?;
                p.set_xattr_index(xidx)?;
                p
            }
            Kind::Fifo | Kind::Socket => {
                let kind = if matches!(node.kind, Kind::Fifo) {
                    sqfs::Special::Fifo
                } else {
                    sqfs::Special::Socket
                };
                let mut p = Inode::special(kind, nlink)?;
                p.set_xattr_index(xidx)?;
                p
            }
            Kind::HardLink(_) => unreachable!("post_order yields link owners only"),
        };
        inode.set_meta(
            type_bits(&node.kind) | meta.perm,
            meta.mtime,
            self.num.ino[i],
        );
        inode.set_owner(self.ids, meta.uid, meta.gid)?;
        self.iref[i] = self.inodes.write_inode(&inode)?;
        Ok(())
    }

    /// A directory's listing (its children are written already) and its inode.
    fn directory(
        &mut self,
        children: &std::collections::BTreeMap<Vec<u8>, usize>,
        nlink: u32,
        xidx: u32,
        parent: u32,
    ) -> Result<Inode, Failure> {
        let nodes = self.tree.nodes();
        self.dirs.begin()?;
        for (name, &c) in children {
            let o = owner(self.tree, c);
            let mode = type_bits(&nodes[c].kind) | nodes[o].meta.perm;
            self.dirs
                .add_entry(name, self.num.ino[o], self.iref[o], mode)?;
        }
        self.dirs.end()?;
        Ok(self.dirs.create_inode(nlink, xidx, parent)?)
    }
}
