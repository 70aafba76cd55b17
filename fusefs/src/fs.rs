//! The FUSE server: a read-only [`fuser::Filesystem`] over a squashfs reader.
//!
//! The image is immutable, so the kernel may cache everything for as long as it likes:
//! entries and attributes get long timeouts, files are opened with `FOPEN_KEEP_CACHE`,
//! directories with `FOPEN_CACHE_DIR`, and readdirplus answers lookups in bulk.
//!
//! A container needs mount points that the image may lack (its user's home directory,
//! `/etc/resolv.conf`, …). The server can present such *synthetic* empty directories and
//! files on top of the image, so the root stays read-only and the image unchanged.
//!
//! Reader errors become errno values in exactly one place, [`errno`].

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEntry,
    ReplyOpen, ReplyStatfs, ReplyXattr, Request,
};

use crate::source::ReadAt;
use crate::squashfs::{Attr, Error, FileKind, InodeId, Squashfs};
use crate::warm::{NotifierSlot, Parents, SIBLING_MAX_FILE, WARM_MAX, Warmer};

/// How long the kernel may trust what we told it: the image never changes.
const TTL: Duration = Duration::from_secs(365 * 24 * 3600);
/// Synthetic node ids live far above any squashfs id (those stay below 2^48 + 2).
const SYNTH_BASE: u64 = 1 << 62;
/// readdir offsets: "." and "..", then the image's own cookies (below 2^42), then the
/// synthetic entries.
const OFF_DOT: u64 = 1 << 60;
const OFF_DOTDOT: u64 = (1 << 60) | 1;
const OFF_SYNTH: u64 = 1 << 61;
/// Most symbolic links followed while placing one synthetic mount point.
const MAX_LINKS: usize = 40;

/// Maps a reader error to the errno the container sees.
pub fn errno(e: &Error) -> Errno {
    match e {
        Error::NotFound => Errno::ENOENT,
        Error::NotDir => Errno::ENOTDIR,
        Error::NotFile => Errno::EISDIR,
        Error::NotSymlink => Errno::EINVAL,
        Error::NoXattr => Errno::NO_XATTR,
        Error::BadInodeId(_) => Errno::ESTALE,
        _ => Errno::EIO,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SynthKind {
    Dir,
    File,
}

#[derive(Debug)]
struct SynthNode {
    kind: SynthKind,
    parent: u64,
}

/// Empty directories and files added on top of the image. Built before mounting and
/// immutable afterwards, so the server reads it without locks.
#[derive(Debug, Default)]
pub struct Synthetic {
    nodes: HashMap<u64, SynthNode>,
    /// parent id -> children (name, id), in insertion order.
    children: HashMap<u64, Vec<(Vec<u8>, u64)>>,
}

impl Synthetic {
    fn child(&self, parent: u64, name: &[u8]) -> Option<u64> {
        self.children
            .get(&parent)?
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, id)| *id)
    }

    fn create(&mut self, parent: u64, name: &[u8], kind: SynthKind) -> u64 {
        let id = SYNTH_BASE + self.nodes.len() as u64 + 1;
        self.nodes.insert(id, SynthNode { kind, parent });
        self.children
            .entry(parent)
            .or_default()
            .push((name.to_vec(), id));
        id
    }

    /// Adds `path` (absolute, inside the image) as a directory or an empty file unless
    /// it exists. Symbolic links in the image are followed inside the image, as the
    /// container will follow them when it mounts on the path. Paths that cannot be
    /// placed (a regular file in the middle, a link loop) are left alone: mounting on
    /// them will then fail and be reported by the launcher.
    pub fn add<R: ReadAt>(&mut self, fs: &Squashfs<R>, path: &[u8], is_file: bool) {
        let mut pending: Vec<Vec<u8>> = path
            .split(|&b| b == b'/')
            .filter(|c| !c.is_empty() && *c != b".")
            .rev()
            .map(<[u8]>::to_vec)
            .collect();
        let mut stack: Vec<u64> = vec![InodeId::ROOT.0];
        let mut links = 0;
        while let Some(c) = pending.pop() {
            let cur = *stack.last().unwrap_or(&InodeId::ROOT.0);
            if c == b".." {
                if stack.len() > 1 {
                    stack.pop();
                }
                continue;
            }
            let last = pending.is_empty();
            if let Some(id) = self.child(cur, &c) {
                stack.push(id);
                continue;
            }
            if cur >= SYNTH_BASE {
                if self.nodes.get(&cur).map(|n| n.kind) != Some(SynthKind::Dir) {
                    return;
                }
                let kind = if last && is_file {
                    SynthKind::File
                } else {
                    SynthKind::Dir
                };
                stack.push(self.create(cur, &c, kind));
                continue;
            }
            match fs.lookup(InodeId(cur), &c) {
                Ok(a) if a.kind == FileKind::Directory => stack.push(a.id.0),
                Ok(a) if a.kind == FileKind::Symlink => {
                    links += 1;
                    let Ok(target) = fs.readlink(a.id) else {
                        return;
                    };
                    if links > MAX_LINKS {
                        return;
                    }
                    if target.first() == Some(&b'/') {
                        stack.truncate(1);
                    }
                    pending.extend(
                        target
                            .split(|&b| b == b'/')
                            .filter(|c| !c.is_empty() && *c != b".")
                            .rev()
                            .map(<[u8]>::to_vec),
                    );
                }
                Ok(_) => return, // exists (a file): fine if last, unplaceable otherwise
                Err(Error::NotFound) => {
                    let kind = if last && is_file {
                        SynthKind::File
                    } else {
                        SynthKind::Dir
                    };
                    stack.push(self.create(cur, &c, kind));
                }
                Err(_) => return,
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

/// Who owns the synthetic nodes (the user the container runs as).
#[derive(Debug, Clone, Copy)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// The warmer of an image, started before the image is mounted: the launcher starts
/// it as soon as it is in its user namespace, so that what the container runs first
/// is being decompressed while the rest of the launch is prepared. Cheap to clone.
pub struct Warm<R> {
    fs: Arc<Squashfs<R>>,
    warmer: Option<Arc<Warmer>>,
    notifier: NotifierSlot,
}

impl<R> Clone for Warm<R> {
    fn clone(&self) -> Self {
        Warm {
            fs: self.fs.clone(),
            warmer: self.warmer.clone(),
            notifier: self.notifier.clone(),
        }
    }
}

impl<R: ReadAt + 'static> Warm<R> {
    /// Starts the warmer's threads (none on a single core).
    pub fn start(fs: &Arc<Squashfs<R>>) -> Self {
        let notifier = NotifierSlot::default();
        let warmer = Warmer::start(fs, &notifier).map(Arc::new);
        Warm {
            fs: fs.clone(),
            warmer,
            notifier,
        }
    }

    /// Decompresses file `id` on the warmer's threads before anyone reads it: for the
    /// program a container is about to start, while its namespaces are being set up.
    /// A no-op for what is not a file of the warmer's sizes, or without a warmer.
    ///
    /// The blocks holding the byte offsets `first` are decompressed first (for an
    /// executable: where its entry point and its writable data are, which it touches
    /// before anything else), the rest in file order.
    pub fn prewarm(&self, id: InodeId, first: &[u64]) {
        let (Some(w), Ok(a)) = (&self.warmer, self.fs.getattr(id)) else {
            return;
        };
        if a.kind == FileKind::File && a.size > 0 && a.size <= WARM_MAX {
            w.decompress(
                id.0,
                a.size,
                u64::from(self.fs.superblock().block_size),
                first,
            );
        }
    }

    /// The kernel has looked file `id` up (it holds the inode): its blocks, prewarmed or
    /// not, go into the page cache as the warmer decompresses them, so that the program
    /// it is about to start takes its page faults without a round trip to the server.
    pub fn store_ahead(&self, id: InodeId) {
        let (Some(w), Ok(a)) = (&self.warmer, self.fs.getattr(id)) else {
            return;
        };
        if a.kind == FileKind::File && a.size > 0 && a.size <= WARM_MAX {
            w.store_ahead(id.0, a.size, u64::from(self.fs.superblock().block_size));
        }
    }
}

/// The FUSE filesystem serving one image.
pub struct ImageFs<R> {
    fs: Arc<Squashfs<R>>,
    synth: Synthetic,
    owner: Owner,
    /// The first reader error is reported on stderr; the rest only as EIO.
    reported: AtomicBool,
    warmer: Option<Arc<Warmer>>,
    notifier: NotifierSlot,
    parents: Parents,
    /// The kernel can do without OPENDIR (learned at INIT).
    no_opendir: bool,
}

thread_local! {
    /// Each worker's buffer for the data of a read, kept from one read to the next: a
    /// fresh one per read would be fresh pages to fault in (and, above malloc's mmap
    /// threshold, to unmap again, with a TLB flush on every core) for each request.
    static READ_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Attributes of an empty node `ino` owned by root, dated the epoch: a negative entry
/// (node 0, where only the id counts) and, filled in further, a synthetic mount point.
fn empty_attr(ino: u64) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size: 0,
        blocks: 0,
        atime: UNIX_EPOCH,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        crtime: UNIX_EPOCH,
        kind: FileType::RegularFile,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 0,
        flags: 0,
    }
}

impl<R: ReadAt + 'static> ImageFs<R> {
    pub fn new(fs: Arc<Squashfs<R>>, synth: Synthetic, owner: Owner) -> Self {
        let warm = Warm::start(&fs);
        Self::with_warm(warm, synth, owner)
    }

    /// Serves the image of `warm`, whose warmer may already be at work.
    pub fn with_warm(warm: Warm<R>, synth: Synthetic, owner: Owner) -> Self {
        ImageFs {
            fs: warm.fs,
            synth,
            owner,
            reported: AtomicBool::new(false),
            warmer: warm.warmer,
            notifier: warm.notifier,
            parents: Parents::new(),
            no_opendir: false,
        }
    }

    fn fail(&self, e: &Error) -> Errno {
        let code = errno(e);
        if code == Errno::EIO && !self.reported.swap(true, Ordering::Relaxed) {
            eprintln!("veil: error reading the image (the container sees EIO): {e}");
        }
        code
    }

    fn file_attr(&self, a: &Attr) -> FileAttr {
        let t = UNIX_EPOCH + Duration::from_secs(u64::from(a.mtime));
        FileAttr {
            ino: INodeNo(a.id.0),
            size: a.size,
            blocks: a.blocks,
            atime: t,
            mtime: t,
            ctime: t,
            crtime: t,
            kind: file_type(a.kind),
            perm: a.perm,
            nlink: a.nlink,
            uid: a.uid,
            gid: a.gid,
            rdev: a.rdev,
            blksize: self.fs.statfs().block_size,
            flags: 0,
        }
    }

    fn synth_attr(&self, id: u64, kind: SynthKind) -> FileAttr {
        let dir = kind == SynthKind::Dir;
        FileAttr {
            kind: if dir {
                FileType::Directory
            } else {
                FileType::RegularFile
            },
            perm: if dir { 0o755 } else { 0o644 },
            nlink: if dir { 2 } else { 1 },
            uid: self.owner.uid,
            gid: self.owner.gid,
            blksize: 4096,
            ..empty_attr(id)
        }
    }

    fn attr(&self, id: u64) -> Result<FileAttr, Errno> {
        if id >= SYNTH_BASE {
            return match self.synth.nodes.get(&id) {
                Some(n) => Ok(self.synth_attr(id, n.kind)),
                None => Err(Errno::ESTALE),
            };
        }
        self.fs
            .getattr(InodeId(id))
            .map(|a| self.file_attr(&a))
            .map_err(|e| self.fail(&e))
    }

    fn lookup_attr(&self, parent: u64, name: &[u8]) -> Result<FileAttr, Errno> {
        if parent < SYNTH_BASE {
            match self.fs.lookup(InodeId(parent), name) {
                Ok(a) => return Ok(self.file_attr(&a)),
                Err(Error::NotFound) => {}
                Err(e) => return Err(self.fail(&e)),
            }
        }
        match self.synth.child(parent, name) {
            Some(id) => self.attr(id),
            None => Err(Errno::ENOENT),
        }
    }

    /// Walks a directory from `offset`, calling `emit(id, next_offset, kind, name)` until
    /// it returns true (buffer full).
    fn list(
        &self,
        dir: u64,
        offset: u64,
        mut emit: impl FnMut(u64, u64, FileType, &[u8]) -> bool,
    ) -> Result<(), Errno> {
        let parent = if dir >= SYNTH_BASE {
            self.synth
                .nodes
                .get(&dir)
                .map(|n| n.parent)
                .ok_or(Errno::ESTALE)?
        } else {
            dir // squashfs does not tell us a directory's parent; ".." is resolved by the kernel
        };
        if offset == 0 && emit(dir, OFF_DOT, FileType::Directory, b".") {
            return Ok(());
        }
        if offset < OFF_DOTDOT
            && (offset == 0 || offset == OFF_DOT)
            && emit(parent, OFF_DOTDOT, FileType::Directory, b"..")
        {
            return Ok(());
        }
        if dir < SYNTH_BASE && offset < OFF_SYNTH {
            let cookie = if offset >= OFF_DOT { 0 } else { offset };
            let entries = self
                .fs
                .readdir(InodeId(dir), cookie)
                .map_err(|e| self.fail(&e))?;
            for e in entries {
                let e = e.map_err(|e| self.fail(&e))?;
                if emit(e.id.0, e.cookie, file_type(e.kind), &e.name) {
                    return Ok(());
                }
            }
        }
        let start = if offset >= OFF_SYNTH {
            (offset - OFF_SYNTH) as usize
        } else {
            0
        };
        if let Some(children) = self.synth.children.get(&dir) {
            for (i, (name, id)) in children.iter().enumerate().skip(start) {
                let kind = match self.synth.nodes.get(id).map(|n| n.kind) {
                    Some(SynthKind::File) => FileType::RegularFile,
                    _ => FileType::Directory,
                };
                if emit(*id, OFF_SYNTH + i as u64 + 1, kind, name) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

fn file_type(k: FileKind) -> FileType {
    match k {
        FileKind::Directory => FileType::Directory,
        FileKind::File => FileType::RegularFile,
        FileKind::Symlink => FileType::Symlink,
        FileKind::BlockDevice => FileType::BlockDevice,
        FileKind::CharDevice => FileType::CharDevice,
        FileKind::Fifo => FileType::NamedPipe,
        FileKind::Socket => FileType::Socket,
    }
}

/// Answers an xattr request: the size when asked for it, the bytes when they fit.
fn xattr_reply(reply: ReplyXattr, size: u32, data: &[u8]) {
    if size == 0 {
        reply.size(data.len() as u32);
    } else if (size as usize) < data.len() {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(data);
    }
}

impl<R: ReadAt + 'static> fuser::Filesystem for ImageFs<R> {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Each is an optimisation the kernel may refuse; none is required.
        let _ = config.add_capabilities(InitFlags::FUSE_DO_READDIRPLUS);
        let _ = config.add_capabilities(InitFlags::FUSE_CACHE_SYMLINKS);
        let _ = config.add_capabilities(InitFlags::FUSE_PARALLEL_DIROPS);
        let _ = config.set_max_readahead(1 << 20);
        self.no_opendir = config
            .capabilities()
            .contains(InitFlags::FUSE_NO_OPENDIR_SUPPORT);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.lookup_attr(parent.0, name.as_bytes()) {
            Ok(a) => {
                if a.kind == FileType::RegularFile && a.size <= SIBLING_MAX_FILE {
                    self.parents.note(a.ino.0, parent.0);
                }
                reply.entry(&TTL, &a, Generation(0))
            }
            // A name that is not there never will be (the image and its synthetic mount
            // points are fixed before the first request): node 0 tells the kernel to
            // remember its absence for as long as a positive entry. A PATH search or an
            // interpreter's module search then asks once per name, not once per try.
            Err(Errno::ENOENT) => reply.entry(&TTL, &empty_attr(0), Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr(ino.0) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        if ino.0 >= SYNTH_BASE {
            return reply.error(Errno::EINVAL);
        }
        match self.fs.readlink(InodeId(ino.0)) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(self.fail(&e)),
        }
    }

    fn open(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        // ENOSYS makes the kernel stop sending OPEN (and RELEASE) for files at all: one
        // round trip fewer per file, which is most of the cost of reading many small
        // files. Writes never get here: the mount is read-only.
        reply.error(Errno::ENOSYS);
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        if ino.0 >= SYNTH_BASE {
            return reply.data(&[]);
        }
        // The kernel asks for whole readahead windows; allocate only what the file has.
        let file_size = match self.fs.getattr(InodeId(ino.0)) {
            Ok(a) => a.size,
            Err(e) => return reply.error(self.fail(&e)),
        };
        let len = file_size.saturating_sub(offset).min(u64::from(size)) as usize;
        let bs = u64::from(self.fs.superblock().block_size);
        let via_cache = match &self.warmer {
            Some(w) if file_size <= WARM_MAX => w.read(ino.0, offset, len as u64, file_size, bs),
            _ => false,
        };
        if let Some(w) = &self.warmer
            && file_size <= SIBLING_MAX_FILE
            && let Some(dir) = self.parents.of(ino.0)
        {
            w.siblings(dir);
        }
        if via_cache && let Some(w) = &self.warmer {
            w.reading(ino.0, offset, len as u64, bs);
        }
        READ_BUF.with_borrow_mut(|buf| {
            if buf.len() < len {
                buf.resize(len, 0);
            }
            let buf = &mut buf[..len];
            let got = if via_cache {
                self.fs.read_cached(InodeId(ino.0), offset, buf)
            } else {
                self.fs.read(InodeId(ino.0), offset, buf)
            };
            match got {
                Ok(n) => reply.data(&buf[..n.min(len)]),
                Err(e) => reply.error(self.fail(&e)),
            }
        });
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        // As for files: a kernel that can do without OPENDIR (5.1 and later) stops
        // sending it, and RELEASEDIR, once told ENOSYS, and then caches the listing
        // as FOPEN_CACHE_DIR would: one round trip fewer per directory of a walk.
        if self.no_opendir {
            return reply.error(Errno::ENOSYS);
        }
        reply.opened(
            FileHandle(0),
            FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_CACHE_DIR,
        );
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let r = self.list(ino.0, offset, |id, next, kind, name| {
            reply.add(INodeNo(id), next, kind, OsStr::from_bytes(name))
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let mut err = None;
        let r = self.list(ino.0, offset, |id, next, _kind, name| {
            // "." and ".." carry no attributes the kernel would use; the rest are full entries.
            let attr = match self.attr(id) {
                Ok(a) => a,
                Err(e) => {
                    err = Some(e);
                    return true;
                }
            };
            if attr.kind == FileType::RegularFile && attr.size <= SIBLING_MAX_FILE {
                self.parents.note(id, ino.0);
            }
            reply.add(
                INodeNo(id),
                next,
                OsStr::from_bytes(name),
                &TTL,
                &attr,
                Generation(0),
            )
        });
        match (r, err) {
            (Ok(()), None) => reply.ok(),
            (Err(e), _) | (_, Some(e)) => reply.error(e),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let s = self.fs.statfs();
        reply.statfs(
            s.blocks,
            0,
            0,
            u64::from(s.inodes),
            0,
            s.block_size,
            s.name_max,
            s.block_size,
        );
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        if ino.0 >= SYNTH_BASE {
            return reply.error(Errno::NO_XATTR);
        }
        match self.fs.getxattr(InodeId(ino.0), name.as_bytes()) {
            Ok(v) => xattr_reply(reply, size, &v),
            Err(e) => reply.error(self.fail(&e)),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        if ino.0 >= SYNTH_BASE {
            return xattr_reply(reply, size, &[]);
        }
        match self.fs.listxattr(InodeId(ino.0)) {
            Ok(names) => {
                let mut data = Vec::new();
                for n in names {
                    data.extend_from_slice(&n);
                    data.push(0);
                }
                xattr_reply(reply, size, &data);
            }
            Err(e) => reply.error(self.fail(&e)),
        }
    }
}

/// Mount options for `mount(2)` of a FUSE filesystem on an open `/dev/fuse` descriptor.
/// `uid`/`gid` are the mounting user's ids as seen in its user namespace.
pub fn mount_data(fd: i32, uid: u32, gid: u32) -> String {
    format!("fd={fd},rootmode=40000,user_id={uid},group_id={gid},default_permissions")
}

/// Serves `fs` on an already-mounted `/dev/fuse` descriptor with `threads` workers, each
/// on its own cloned descriptor. Returns once the kernel handshake is done; the workers
/// run until the mount goes away.
pub fn serve<R: ReadAt + 'static>(
    fs: ImageFs<R>,
    fuse_fd: std::os::fd::OwnedFd,
    threads: usize,
) -> std::io::Result<fuser::BackgroundSession> {
    let mut config = fuser::Config::default();
    config.n_threads = Some(threads.max(1));
    config.clone_fd = true;
    // The kernel already lets only the mounting user in (no allow_other).
    config.acl = fuser::SessionACL::All;
    let slot = fs.notifier.clone();
    let session = fuser::Session::from_fd(fs, fuse_fd, fuser::SessionACL::All, config)?;
    let _ = slot.set(session.notifier());
    session.spawn()
}
