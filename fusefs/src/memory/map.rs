//! Owned memory mappings: the one place that maps, advises, locks and unmaps.
//!
//! [`AnonMap`] is private memory that only its owner reaches, so it can be handed out
//! as slices. [`FileMap`] is a read-only shared mapping of a file, whose bytes another
//! process may change (or truncate away): it hands out only its address, and its
//! user decides how the bytes may be read.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The system's page size, asked once. Async-signal-safe once it has been asked (a
/// relaxed atomic load), which [`FileMap::new`] does before there is anything a
/// signal handler could look at.
pub(crate) fn page_size() -> usize {
    static PAGE: AtomicUsize = AtomicUsize::new(0);
    let p = PAGE.load(Ordering::Relaxed);
    if p != 0 {
        return p;
    }
    use nix::unistd::{SysconfVar, sysconf};
    let p = sysconf(SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|p| usize::try_from(p).ok())
        .filter(|p| p.is_power_of_two())
        .unwrap_or(4096);
    PAGE.store(p, Ordering::Relaxed);
    p
}

/// Advice the kernel may take or leave: none of it changes what the memory holds,
/// and a kernel that does not know one returns EINVAL, which is ignored.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Advice {
    /// Back it with transparent huge pages where they are on (fewer page faults).
    HugePage,
    /// Leave it out of core dumps.
    DontDump,
    /// A forked child sees zeros instead of a copy.
    WipeOnFork,
}

/// An address range this process mapped, unmapped (and unlocked) when dropped.
struct Map {
    addr: NonNull<u8>,
    len: usize,
    locked: bool,
}

impl Map {
    /// Wraps what `mmap` returned; `None` for `MAP_FAILED`.
    fn from_raw(raw: *mut libc::c_void, len: usize) -> Option<Map> {
        if raw == libc::MAP_FAILED {
            return None;
        }
        NonNull::new(raw.cast::<u8>()).map(|addr| Map {
            addr,
            len,
            locked: false,
        })
    }

    fn advise(&self, advice: Advice) {
        let advice = match advice {
            Advice::HugePage => libc::MADV_HUGEPAGE,
            Advice::DontDump => libc::MADV_DONTDUMP,
            Advice::WipeOnFork => libc::MADV_WIPEONFORK,
        };
        // SAFETY: advice on the whole of a live mapping this value owns; none of the
        // three changes what the memory holds as seen by its users.
        unsafe { libc::madvise(self.addr.as_ptr().cast(), self.len, advice) };
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: the range this value mapped, unmapped once, here. Owners hand out
        // borrows tied to themselves, and raw addresses only to users who promise not
        // to use them past the owner's life (see `as_ptr`).
        unsafe {
            if self.locked {
                libc::munlock(self.addr.as_ptr().cast(), self.len);
            }
            libc::munmap(self.addr.as_ptr().cast(), self.len);
        }
    }
}

/// Private, zero-filled, readable and writable memory at a page-aligned address.
pub(crate) struct AnonMap(Map);

// SAFETY: the memory is owned by this value alone, like a Box<[u8]>.
unsafe impl Send for AnonMap {}
// SAFETY: shared access only reads (`bytes`); writing needs `&mut`.
unsafe impl Sync for AnonMap {}

impl AnonMap {
    /// `len` bytes (more than 0), at an address of the kernel's choosing; `None`
    /// when the kernel refuses.
    pub(crate) fn new(len: usize) -> Option<AnonMap> {
        if len == 0 {
            return None;
        }
        let raw = mmap_anon(len);
        Map::from_raw(raw, len).map(AnonMap)
    }

    /// `len` bytes (a multiple of the page size, more than 0) at an address aligned
    /// to `align` (a power of two, a multiple of the page size), as a huge page needs:
    /// `len + align` bytes are mapped, and the slack on both sides unmapped again.
    pub(crate) fn aligned(len: usize, align: usize) -> Option<AnonMap> {
        let span = len.checked_add(align)?;
        if len == 0 {
            return None;
        }
        let raw = mmap_anon(span);
        if raw == libc::MAP_FAILED {
            return None;
        }
        let start = raw as usize;
        let addr = start.next_multiple_of(align);
        let end = addr + len;
        // SAFETY: both ranges lie inside the mapping just made and are page-aligned
        // (mmap returns page-aligned addresses; `align` and `len` are page multiples);
        // what is unmapped is the slack around the aligned part, which nothing refers
        // to.
        unsafe {
            if addr > start {
                libc::munmap(raw, addr - start);
            }
            if start + span > end {
                libc::munmap(end as *mut libc::c_void, start + span - end);
            }
        }
        Map::from_raw(addr as *mut libc::c_void, len).map(AnonMap)
    }

    pub(crate) fn advise(&self, advice: Advice) {
        self.0.advise(advice);
    }

    /// Keeps the pages out of swap; false when the kernel refuses (`RLIMIT_MEMLOCK`),
    /// which changes nothing else.
    pub(crate) fn lock(&mut self) -> bool {
        if !self.0.locked {
            // SAFETY: locking the whole of a live mapping this value owns; unlocked
            // in Drop before it is unmapped.
            self.0.locked = unsafe { libc::mlock(self.0.addr.as_ptr().cast(), self.0.len) } == 0;
        }
        self.0.locked
    }

    pub(crate) fn is_locked(&self) -> bool {
        self.0.locked
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len
    }

    /// The first byte. Valid for reads and writes of [`AnonMap::len`] bytes while
    /// this value lives; whoever keeps it must not use it longer, nor alongside a
    /// borrow from [`AnonMap::bytes_mut`].
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.0.addr.as_ptr()
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: `len` initialised bytes (zero-filled by the kernel), owned by this
        // value and borrowed with it.
        unsafe { std::slice::from_raw_parts(self.as_ptr(), self.0.len) }
    }

    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`; `&mut self` makes this the only borrow.
        unsafe { std::slice::from_raw_parts_mut(self.as_ptr(), self.0.len) }
    }
}

/// Maps `len` bytes of fresh private memory; the caller checks for `MAP_FAILED`.
fn mmap_anon(len: usize) -> *mut libc::c_void {
    // SAFETY: an anonymous private mapping at an address of the kernel's choosing
    // (no hint, no descriptor) touches no existing memory.
    unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    }
}

/// A read-only shared mapping of part of a file, from a page-aligned offset.
pub(crate) struct FileMap(Map);

// SAFETY: read-only memory owned by this value; it hands out only its address.
unsafe impl Send for FileMap {}
// SAFETY: as for Send.
unsafe impl Sync for FileMap {}

impl FileMap {
    /// Maps `len` bytes (more than 0) of `file` from `offset`, a multiple of the page
    /// size.
    pub(crate) fn new(file: &File, offset: u64, len: usize) -> io::Result<FileMap> {
        page_size();
        let offset =
            libc::off_t::try_from(offset).map_err(|_| io::Error::other("offset too large"))?;
        // SAFETY: a new read-only shared mapping chosen by the kernel (no address
        // hint), of a descriptor that stays open for the call, at a page-aligned
        // offset; the mapping keeps its own reference to the file.
        let raw = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                offset,
            )
        };
        Map::from_raw(raw, len)
            .map(FileMap)
            .ok_or_else(io::Error::last_os_error)
    }

    /// Drops the page table entries. Only for file mappings (on private anonymous
    /// memory MADV_DONTNEED would zero what a live borrow sees): a file's pages stay
    /// in the page cache and fault back in, unchanged, on the next access.
    pub(crate) fn drop_resident(&self) {
        // SAFETY: the whole of a live file mapping this value owns; its contents are
        // the file's, which the next access reads back.
        unsafe { libc::madvise(self.0.addr.as_ptr().cast(), self.0.len, libc::MADV_DONTNEED) };
    }

    /// The first byte: readable for the mapped length while this value lives,
    /// though the bytes may change under a reader (another process writing or
    /// truncating the file).
    pub(crate) fn as_ptr(&self) -> *const u8 {
        self.0.addr.as_ptr()
    }
}
