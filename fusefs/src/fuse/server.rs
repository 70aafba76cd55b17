//! The FUSE server: a read-only [`fuser::Filesystem`] over a squashfs reader and the
//! synthetic mount points on top of it.
//!
//! The image is immutable, so the kernel may cache everything for as long as it likes:
//! entries and attributes get long timeouts, files are opened with `FOPEN_KEEP_CACHE`,
//! directories with `FOPEN_CACHE_DIR`, and readdirplus answers lookups in bulk.

#![forbid(unsafe_code)]

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEntry,
    ReplyOpen, ReplyStatfs, ReplyXattr, Request,
};

use super::attr::{Owner, TTL, empty_attr, image_attr, synth_attr};
use super::errno::errno;
use super::listing::list;
use super::preload::{NotifierSlot, Parents, Preloader, SIBLING_MAX_FILE, WARM_MAX, Warm};
use super::synthetic::{Synthetic, is_synthetic};
use crate::source::ReadAt;
use crate::squashfs::{Error, InodeId, Squashfs};

/// The FUSE filesystem serving one image.
pub struct ImageFs<R> {
    fs: Arc<Squashfs<R>>,
    synth: Synthetic,
    owner: Owner,
    /// The first reader error is reported on stderr; the rest only as EIO.
    reported: AtomicBool,
    preloader: Option<Arc<Preloader>>,
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

impl<R: ReadAt + 'static> ImageFs<R> {
    pub fn new(fs: Arc<Squashfs<R>>, synth: Synthetic, owner: Owner) -> Self {
        let warm = Warm::start(&fs);
        Self::with_warm(warm, synth, owner)
    }

    /// Serves the image of `warm`, whose preloader may already be at work.
    pub fn with_warm(warm: Warm<R>, synth: Synthetic, owner: Owner) -> Self {
        ImageFs {
            fs: warm.fs,
            synth,
            owner,
            reported: AtomicBool::new(false),
            preloader: warm.preloader,
            notifier: warm.notifier,
            parents: Parents::new(),
            no_opendir: false,
        }
    }
}

impl<R: ReadAt> ImageFs<R> {
    /// Where the session's notifier goes once it exists, for the preloader.
    pub(super) fn notifier(&self) -> NotifierSlot {
        self.notifier.clone()
    }

    fn fail(&self, e: &Error) -> Errno {
        let code = errno(e);
        if code == Errno::EIO && !self.reported.swap(true, Ordering::Relaxed) {
            eprintln!("veil: error reading the image (the container sees EIO): {e}");
        }
        code
    }

    fn attr(&self, id: u64) -> Result<FileAttr, Errno> {
        if is_synthetic(id) {
            return match self.synth.kind(id) {
                Some(kind) => Ok(synth_attr(id, kind, self.owner)),
                None => Err(Errno::ESTALE),
            };
        }
        self.fs
            .getattr(InodeId(id))
            .map(|a| image_attr(&a, self.fs.statfs().block_size))
            .map_err(|e| self.fail(&e))
    }

    fn lookup_attr(&self, parent: u64, name: &[u8]) -> Result<FileAttr, Errno> {
        if !is_synthetic(parent) {
            match self.fs.lookup(InodeId(parent), name) {
                Ok(a) => return Ok(image_attr(&a, self.fs.statfs().block_size)),
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
        emit: impl FnMut(u64, u64, FileType, &[u8]) -> bool,
    ) -> Result<(), Errno> {
        list(&self.fs, &self.synth, dir, offset, |e| self.fail(e), emit)
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
        if is_synthetic(ino.0) {
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
        if is_synthetic(ino.0) {
            return reply.data(&[]);
        }
        // The kernel asks for whole readahead windows; allocate only what the file has.
        let file_size = match self.fs.getattr(InodeId(ino.0)) {
            Ok(a) => a.size,
            Err(e) => return reply.error(self.fail(&e)),
        };
        let len = file_size.saturating_sub(offset).min(u64::from(size)) as usize;
        let bs = u64::from(self.fs.superblock().block_size);
        let via_cache = match &self.preloader {
            Some(w) if file_size <= WARM_MAX => w.read(ino.0, offset, len as u64, file_size, bs),
            _ => false,
        };
        if let Some(w) = &self.preloader
            && file_size <= SIBLING_MAX_FILE
            && let Some(dir) = self.parents.of(ino.0)
        {
            w.siblings(dir);
        }
        if via_cache && let Some(w) = &self.preloader {
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
        if is_synthetic(ino.0) {
            return reply.error(Errno::NO_XATTR);
        }
        match self.fs.getxattr(InodeId(ino.0), name.as_bytes()) {
            Ok(v) => xattr_reply(reply, size, &v),
            Err(e) => reply.error(self.fail(&e)),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        if is_synthetic(ino.0) {
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
