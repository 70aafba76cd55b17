//! The preloader's threads and its queue of jobs. See [`Preloader`].

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use fuser::INodeNo;

use super::NotifierSlot;
use super::stores::Stores;
use crate::source::ReadAt;
use crate::squashfs::{FileKind, InodeId, Squashfs};

/// Loads the rest of a file into the kernel's page cache, on spare cores, once its
/// reader jumps around in it. A program being started reads its executable and
/// libraries in page faults scattered over the whole file, one at a time: each a round
/// trip to this server and, on a miss, one block's decompression, while the program
/// waits. The preloader decompresses the file's blocks in parallel (through the block
/// cache the workers use too) and pushes them into the page cache with
/// FUSE_NOTIFY_STORE, so later faults never leave the kernel. A sequential reader is
/// left alone: the kernel's readahead already asks for many blocks at once, and
/// warming would only copy the same data twice. Files bigger than [`WARM_MAX`] are
/// never warmed whole.
pub(in crate::fuse) struct Preloader {
    jobs: Mutex<mpsc::Sender<Job>>,
    /// Shared with the preloader's threads.
    stores: Arc<Stores>,
    /// Jobs queued and not yet done: past `MAX_PENDING`, nothing more is queued (a
    /// reader jumping around in many files at once gets no warming rather than an
    /// ever longer queue).
    pending: Arc<AtomicUsize>,
    /// Per file: where its next sequential read would start, or `PREWARMED` or
    /// `WARMED` (cleared when it grows large).
    reads: Mutex<HashMap<u64, u64>>,
    /// Directories whose small files were handed to the preloader (likewise).
    dirs: Mutex<HashSet<u64>>,
}

enum Job {
    /// Read a block-sized range of file `ino` at `offset` (through the block cache),
    /// and push it into the page cache when `store`.
    Range { ino: u64, offset: u64, store: bool },
    /// Push the small files of directory `dir` into the page cache.
    Siblings { dir: u64 },
}

/// Files up to this size are warmed whole when read out of order.
pub(in crate::fuse) const WARM_MAX: u64 = 8 << 20;
/// A read this far from where the previous one ended is out of order (the kernel may
/// handle a sequential reader's readahead requests a little out of order).
const JUMP: u64 = 512 << 10;
/// At most this many blocks (or directories) waiting for the preloader: 512 MiB of blocks.
const MAX_PENDING: usize = 4096;
/// `Preloader::reads` marker of a file already handed to the preloader ...
const WARMED: u64 = u64::MAX;
/// ... and of one decompressed ahead of its first read (`Warm::prewarm`).
const PREWARMED: u64 = u64::MAX - 1;

/// A small file's siblings are warmed once one of them is read (`cat *`, a package's
/// modules, a data set of small files): files of up to this size each ...
pub(in crate::fuse) const SIBLING_MAX_FILE: u64 = 128 << 10;
/// ... at most this many per directory, and at most this many bytes.
const SIBLING_MAX_COUNT: usize = 4096;
const SIBLING_MAX_BYTES: u64 = 32 << 20;

/// Lets the calling thread run only when a core would otherwise be idle, so warming
/// never delays the reader it works for (or anything else on the machine).
fn idle_priority() {
    // The kernel's struct sched_param is one int (libc's may carry more fields).
    let priority: libc::c_int = 0;
    // SAFETY: the raw system call, because musl's wrapper refuses to set a single
    // thread's policy (ENOSYS); pid 0 is the calling thread, and `priority` is the
    // int the kernel reads, alive for the call. Failure leaves the thread at normal
    // priority, which is only less polite.
    unsafe {
        libc::syscall(
            libc::SYS_sched_setscheduler,
            0,
            libc::SCHED_IDLE,
            &priority as *const libc::c_int,
        );
    }
}

/// One warming read: `buf.len()` bytes (or to the end) of `ino` at `offset`, the
/// `block`th block of the file, stored in the page cache when the job asks for it or
/// the file is one of `stores` (and that block is not there yet).
fn warm_range<R: ReadAt>(
    fs: &Squashfs<R>,
    notifier: &NotifierSlot,
    stores: &Stores,
    buf: &mut [u8],
    ino: u64,
    offset: u64,
    store: bool,
) {
    let block = offset / buf.len().max(1) as u64;
    if stores.done(ino, block) {
        return;
    }
    // Errors are the reader's to report, when it gets there.
    let Ok(n) = fs.read_cached(InodeId(ino), offset, buf) else {
        return;
    };
    let Some(notifier) = notifier.get() else {
        return;
    };
    if stores.claim(ino, block, store) && notifier.store(INodeNo(ino), offset, &buf[..n]).is_err() {
        // Refused (the kernel does not hold the inode, say): the kernel simply reads
        // the range when it needs it, or a later job stores it.
        stores.unclaim(ino, block);
    }
}

/// Pushes the small files of `dir` into the page cache, in directory order.
fn warm_siblings<R: ReadAt>(fs: &Squashfs<R>, notifier: &NotifierSlot, buf: &mut [u8], dir: u64) {
    let Ok(entries) = fs.readdir(InodeId(dir), 0) else {
        return;
    };
    let (mut count, mut bytes) = (0usize, 0u64);
    for e in entries {
        let Ok(e) = e else { return };
        if e.kind != FileKind::File {
            continue;
        }
        let Ok(a) = fs.getattr(e.id) else { continue };
        if a.size == 0 || a.size > SIBLING_MAX_FILE || a.size > buf.len() as u64 {
            continue;
        }
        count += 1;
        bytes += a.size;
        if count > SIBLING_MAX_COUNT || bytes > SIBLING_MAX_BYTES {
            return;
        }
        warm_range(
            fs,
            notifier,
            &Stores::default(),
            &mut buf[..a.size as usize],
            e.id.0,
            0,
            true,
        );
    }
}

impl Preloader {
    /// One thread per core beyond the first (at most three); none on a single core,
    /// where warming could only compete with the reader.
    pub(in crate::fuse) fn start<R: ReadAt + 'static>(
        fs: &Arc<Squashfs<R>>,
        notifier: &NotifierSlot,
    ) -> Option<Preloader> {
        let cores = crate::cores();
        let threads = (cores - 1).min(3);
        if threads == 0 {
            return None;
        }
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let pending = Arc::new(AtomicUsize::new(0));
        let stores = Arc::new(Stores::default());
        let bs = u64::from(fs.superblock().block_size);
        for i in 0..threads {
            let fs = fs.clone();
            let rx = rx.clone();
            let notifier = notifier.clone();
            let pending = pending.clone();
            let stores = stores.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("veil-warm-{i}"))
                .spawn(move || {
                    idle_priority();
                    let mut buf = vec![0u8; bs as usize];
                    loop {
                        // The lock is held only while taking one job.
                        let job = match rx.lock() {
                            Ok(r) => r.recv(),
                            Err(_) => return,
                        };
                        let Ok(job) = job else { return };
                        match job {
                            Job::Range { ino, offset, store } => {
                                warm_range(&fs, &notifier, &stores, &mut buf, ino, offset, store);
                            }
                            Job::Siblings { dir } => warm_siblings(&fs, &notifier, &mut buf, dir),
                        }
                        pending.fetch_sub(1, Ordering::Relaxed);
                    }
                });
            if spawned.is_err() {
                return None;
            }
        }
        Some(Preloader {
            jobs: Mutex::new(tx),
            stores,
            pending,
            reads: Mutex::new(HashMap::new()),
            dirs: Mutex::new(HashSet::new()),
        })
    }

    /// Notes a read of `len` bytes at `offset` of file `ino` (`size` bytes, blocks of
    /// `bs`), and says whether the reader should go through the block cache (the
    /// preloader works on the file). The first read out of order, or the first read of a
    /// prewarmed file, queues every block of the file for the page cache, in file order
    /// from the one after the block being read; that one comes last (the read fills
    /// only the pages it asked for).
    pub(in crate::fuse) fn read(
        &self,
        ino: u64,
        offset: u64,
        len: u64,
        size: u64,
        bs: u64,
    ) -> bool {
        {
            let Ok(mut r) = self.reads.lock() else {
                return false;
            };
            if r.len() >= 1 << 16 {
                r.clear();
            }
            match r.get(&ino).copied() {
                Some(WARMED) => return true,
                _ if self.pending.load(Ordering::Relaxed) >= MAX_PENDING => return false,
                Some(PREWARMED) => {}
                Some(next) if offset.abs_diff(next) > JUMP => {}
                _ if size <= JUMP => return false,
                _ => {
                    r.insert(ino, offset + len);
                    return false;
                }
            }
            r.insert(ino, WARMED);
        }
        let first = offset / bs;
        let blocks = size.div_ceil(bs);
        self.send((1..=blocks).map(|k| Job::Range {
            ino,
            offset: (first + k) % blocks * bs,
            store: true,
        }));
        true
    }

    /// Queues `jobs`, counting them as pending.
    fn send(&self, jobs: impl Iterator<Item = Job>) {
        let Ok(tx) = self.jobs.lock() else { return };
        for j in jobs {
            if tx.send(j).is_ok() {
                self.pending.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// A read of `len` bytes at `offset` of file `ino` (blocks of `bs`) is on its way
    /// to the page cache: the preloader does not store those blocks too (its store would
    /// only wait for the pages the kernel holds locked for that read).
    pub(in crate::fuse) fn reading(&self, ino: u64, offset: u64, len: u64, bs: u64) {
        if len == 0 || bs == 0 {
            return;
        }
        for block in offset / bs..(offset + len).div_ceil(bs) {
            self.stores.claim(ino, block, false);
        }
    }

    /// Queues every block of file `ino` for decompression into the block cache only
    /// (the kernel does not know the file yet, so there is no page cache to fill).
    /// The blocks holding the byte offsets `first` come first, in that order (where a
    /// program will fault first), then the rest in file order.
    pub(in crate::fuse) fn decompress(&self, ino: u64, size: u64, bs: u64, first: &[u64]) {
        if self.pending.load(Ordering::Relaxed) >= MAX_PENDING || bs == 0 {
            return;
        }
        if let Ok(mut r) = self.reads.lock() {
            r.insert(ino, PREWARMED);
        }
        let blocks = size.div_ceil(bs);
        let mut order: Vec<u64> = Vec::with_capacity(blocks as usize);
        for b in first.iter().map(|o| o / bs).chain(0..blocks) {
            if b < blocks && !order.contains(&b) {
                order.push(b);
            }
        }
        self.send(order.into_iter().map(|k| Job::Range {
            ino,
            offset: k * bs,
            store: false,
        }));
    }

    /// The kernel now knows file `ino` (`size` bytes, blocks of `bs`), which was queued
    /// for decompression ahead of its first read (`decompress`): its blocks go to the
    /// page cache as soon as they are decompressed, or at once for those that already
    /// are, so that the program's page faults never leave the kernel.
    pub(in crate::fuse) fn store_ahead(&self, ino: u64, size: u64, bs: u64) {
        self.stores.want(ino);
        {
            let Ok(mut r) = self.reads.lock() else { return };
            if r.get(&ino) == Some(&WARMED) {
                return;
            }
            r.insert(ino, WARMED);
        }
        // Blocks still waiting in the queue are stored when their turn comes; these
        // jobs, queued behind them, store what was decompressed before (each block once).
        self.send((0..size.div_ceil(bs)).map(|k| Job::Range {
            ino,
            offset: k * bs,
            store: true,
        }));
    }

    /// Queues the small files of directory `dir`, unless it was queued before.
    pub(in crate::fuse) fn siblings(&self, dir: u64) {
        if self.pending.load(Ordering::Relaxed) >= MAX_PENDING {
            return;
        }
        {
            let Ok(mut d) = self.dirs.lock() else { return };
            if d.len() >= 1 << 16 {
                d.clear();
            }
            if !d.insert(dir) {
                return;
            }
        }
        self.send(std::iter::once(Job::Siblings { dir }));
    }
}
