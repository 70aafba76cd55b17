//! A read-only mapping of a file that a truncation of the file cannot crash.
//!
//! Decryption reads every byte of the ciphertext anyway, so it can read it where the
//! page cache holds it, instead of copying it into a buffer with `pread(2)` first:
//! one pass over the bytes instead of two (for big reads of an encrypted image, that
//! copy cost about as much as the decryption took off the reader's path). The hazard
//! of a file mapping is that a page past the file's end, once another process
//! truncates it, raises SIGBUS, which would kill the FUSE server and leave the
//! container with a dead filesystem.
//!
//! So every mapping is registered with a SIGBUS handler. A fault inside a registered
//! mapping replaces the rest of that mapping with zero pages (the faulting access
//! then completes) and marks the mapping broken; [`Mapping::read_with`] reports the
//! read as failed, and the mapping is not used again: the caller falls back to
//! `pread(2)`, which reports a short file as an error the normal way. A fault
//! anywhere else goes to the handler that was there before (the Rust runtime's), or
//! to the default action.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Mappings alive at once (one per encrypted image a process has open).
const MAX_MAPPINGS: usize = 16;

/// What the signal handler can see of a mapping: atomics only (the handler may run
/// at any point in any thread).
struct Region {
    start: AtomicUsize,
    end: AtomicUsize,
    broken: AtomicBool,
}

static REGIONS: [Region; MAX_MAPPINGS] = [const {
    Region {
        start: AtomicUsize::new(0),
        end: AtomicUsize::new(0),
        broken: AtomicBool::new(false),
    }
}; MAX_MAPPINGS];

/// The SIGBUS action before ours, to pass foreign faults on to; `None` when ours
/// could not be installed (then nothing is mapped).
static PREVIOUS: OnceLock<Option<libc::sigaction>> = OnceLock::new();

/// A read-only shared mapping of a whole file.
pub struct Mapping {
    ptr: *const u8,
    len: usize,
    slot: usize,
}

// SAFETY: the mapping is read-only memory owned by this value; reading it from any
// thread is sound (the SIGBUS handler covers the one way a read could fault).
unsafe impl Send for Mapping {}
// SAFETY: as for Send: shared access only ever reads.
unsafe impl Sync for Mapping {}

impl std::fmt::Debug for Mapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mapping").field("len", &self.len).finish()
    }
}

impl Mapping {
    /// Maps the first `len` bytes of `file`. Fails when the file cannot be mapped
    /// (some filesystems), the handler cannot be installed, or too many mappings
    /// are alive: the caller then reads with `pread(2)` as before.
    pub fn new(file: &File, len: u64) -> io::Result<Self> {
        let len = usize::try_from(len).map_err(|_| io::Error::other("file too large to map"))?;
        if len == 0 {
            return Err(io::Error::other("empty file"));
        }
        // Asked now, so the handler never has to.
        page_size();
        if PREVIOUS.get_or_init(install_handler).is_none() {
            return Err(io::Error::other("no SIGBUS handler"));
        }
        // SAFETY: a new read-only shared mapping chosen by the kernel (no address
        // hint), of a descriptor that stays open for the call; the mapping keeps its
        // own reference to the file.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let start = ptr as usize;
        for (slot, r) in REGIONS.iter().enumerate() {
            if r.start
                .compare_exchange(0, start, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                r.broken.store(false, Ordering::Release);
                r.end.store(start + len, Ordering::Release);
                return Ok(Mapping {
                    ptr: ptr.cast_const().cast(),
                    len,
                    slot,
                });
            }
        }
        // SAFETY: the mapping made above, not yet shared with anyone.
        unsafe { libc::munmap(ptr, len) };
        Err(io::Error::other("too many file mappings"))
    }

    /// The mapped length (never 0: an empty file is not mapped).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false (see [`Mapping::len`]); for symmetry with `len`.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// False until the file shrank under the mapping; the mapping is then not used
    /// again.
    pub fn is_intact(&self) -> bool {
        !REGIONS[self.slot].broken.load(Ordering::Acquire)
    }

    /// Runs `f` on the bytes `[offset, offset + len)`, which must lie inside the
    /// mapping. `None` when the mapping is broken (before or during the call: the
    /// bytes `f` saw may then include zeros standing in for lost pages) or the range
    /// is outside it.
    pub fn read_with<T>(&self, offset: usize, len: usize, f: impl FnOnce(&[u8]) -> T) -> Option<T> {
        let end = offset.checked_add(len)?;
        if end > self.len || !self.is_intact() {
            return None;
        }
        // SAFETY: [offset, end) lies inside the live mapping (checked above; it is
        // unmapped only in `drop`, which cannot run while `self` is borrowed). The
        // memory is read-only; a page lost to a truncation is replaced with zeros by
        // the SIGBUS handler rather than faulting, and reported below.
        let bytes = unsafe { std::slice::from_raw_parts(self.ptr.add(offset), len) };
        let out = f(bytes);
        self.is_intact().then_some(out)
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        let r = &REGIONS[self.slot];
        r.end.store(0, Ordering::Release);
        r.start.store(0, Ordering::Release);
        // SAFETY: the mapping this value made; no borrow of it outlives `self`.
        unsafe { libc::munmap(self.ptr.cast_mut().cast(), self.len) };
    }
}

fn install_handler() -> Option<libc::sigaction> {
    // SAFETY: plain sigaction calls with zero-initialised structs (a valid value for
    // the type); the handler only touches atomics and makes async-signal-safe system
    // calls (mmap, sigaction).
    unsafe {
        let mut new: libc::sigaction = std::mem::zeroed();
        new.sa_sigaction = on_sigbus as *const () as usize;
        new.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        libc::sigemptyset(&mut new.sa_mask);
        let mut old: libc::sigaction = std::mem::zeroed();
        (libc::sigaction(libc::SIGBUS, &new, &mut old) == 0).then_some(old)
    }
}

extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for an SA_SIGINFO handler.
    let addr = unsafe { (*info).si_addr() } as usize;
    for r in &REGIONS {
        let (start, end) = (
            r.start.load(Ordering::Acquire),
            r.end.load(Ordering::Acquire),
        );
        if start == 0 || addr < start || addr >= end {
            continue;
        }
        // The pages from the faulting one to the end of the mapping lie past the
        // file's new end: zeros in their place let the access complete.
        let page = addr & !(page_size() - 1);
        // SAFETY: the range is inside a live mapping this module made (registered
        // above), replaced by an anonymous read-only mapping of the same extent;
        // nothing else owns those addresses. mmap is async-signal-safe.
        let p = unsafe {
            libc::mmap(
                page as *mut libc::c_void,
                end - page,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if p != libc::MAP_FAILED {
            r.broken.store(true, Ordering::Release);
            return;
        }
        break;
    }
    // Not ours (or the zero pages could not be mapped): what was there before.
    match PREVIOUS.get() {
        Some(Some(old))
            if old.sa_sigaction != libc::SIG_DFL
                && old.sa_sigaction != libc::SIG_IGN
                && old.sa_flags & libc::SA_SIGINFO != 0 =>
        {
            // SAFETY: the previous SA_SIGINFO handler, called as the kernel would.
            let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                unsafe { std::mem::transmute(old.sa_sigaction) };
            f(sig, info, ctx);
        }
        _ => {
            // The default action: on return the access faults again and the process
            // ends with SIGBUS, as it would have without this handler.
            // SAFETY: a zeroed sigaction is SIG_DFL with an empty mask.
            unsafe {
                let mut dfl: libc::sigaction = std::mem::zeroed();
                libc::sigemptyset(&mut dfl.sa_mask);
                libc::sigaction(libc::SIGBUS, &dfl, std::ptr::null_mut());
            }
        }
    }
}

fn page_size() -> usize {
    static PAGE: AtomicUsize = AtomicUsize::new(0);
    let p = PAGE.load(Ordering::Relaxed);
    if p != 0 {
        return p;
    }
    // SAFETY: sysconf has no preconditions.
    let p = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
        .ok()
        .filter(|p| p.is_power_of_two())
        .unwrap_or(4096);
    PAGE.store(p, Ordering::Relaxed);
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_of(len: usize) -> (tempfile::NamedTempFile, Vec<u8>) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        f.write_all(&data).unwrap();
        f.flush().unwrap();
        (f, data)
    }

    #[test]
    fn reads_the_file() {
        let (f, data) = file_of(3 << 20);
        let m = Mapping::new(f.as_file(), data.len() as u64).unwrap();
        assert_eq!(m.len(), data.len());
        let got = m.read_with(12345, 70000, |b| b.to_vec()).unwrap();
        assert_eq!(got, &data[12345..12345 + 70000]);
        assert!(m.read_with(data.len() - 10, 11, |_| ()).is_none());
        assert!(m.read_with(usize::MAX, 2, |_| ()).is_none());
        assert!(m.is_intact());
    }

    /// A truncation under the mapping: the read that meets the lost pages fails
    /// (no SIGBUS reaches the process), and so does every later one; another
    /// mapping is not affected.
    #[test]
    fn a_truncated_file_fails_reads_instead_of_crashing() {
        let (f, data) = file_of(1 << 20);
        let (g, other) = file_of(64 << 10);
        let m = Mapping::new(f.as_file(), data.len() as u64).unwrap();
        let n = Mapping::new(g.as_file(), other.len() as u64).unwrap();
        assert_eq!(m.read_with(0, 4096, |b| b[100]), Some(data[100]));
        f.as_file().set_len(100_000).unwrap();
        // Inside what is left: still the file's bytes.
        assert_eq!(m.read_with(0, 4096, |b| b[100]), Some(data[100]));
        // Past the new end: the read runs (on zeros), and is reported as failed.
        let sum = m.read_with(200_000, 300_000, |b| {
            b.iter().map(|&x| u64::from(x)).sum::<u64>()
        });
        assert_eq!(sum, None);
        assert!(!m.is_intact());
        assert_eq!(m.read_with(0, 4096, |b| b[100]), None);
        assert!(n.is_intact());
        assert_eq!(n.read_with(0, 100, |b| b.to_vec()).unwrap(), &other[..100]);
        drop(m);
        // The slot is free again and a new mapping of the same file works.
        let m = Mapping::new(f.as_file(), 100_000).unwrap();
        assert_eq!(
            m.read_with(99_000, 1000, |b| b.to_vec()).unwrap(),
            &data[99_000..100_000]
        );
    }

    /// A SIGBUS outside every mapping still ends the process with SIGBUS (checked in
    /// a child: a plain file mapping read past the file's end).
    #[test]
    fn a_foreign_sigbus_still_kills() {
        let (f, data) = file_of(64 << 10);
        let _m = Mapping::new(f.as_file(), data.len() as u64).unwrap();
        let (g, _) = file_of(64 << 10);
        // SAFETY: a fresh read-only mapping of an open file.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                64 << 10,
                libc::PROT_READ,
                libc::MAP_SHARED,
                g.as_file().as_raw_fd(),
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        g.as_file().set_len(0).unwrap();
        // SAFETY: the child only reads memory and exits; it takes no lock.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: reading the mapping (past the file's end now: SIGBUS).
            let v = unsafe { std::ptr::read_volatile(p.cast::<u8>().add(8192)) };
            // SAFETY: _exit is always safe to call.
            unsafe { libc::_exit(i32::from(v) + 1) };
        }
        let mut status = 0;
        // SAFETY: waiting for the child forked above.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFSIGNALED(status), "status {status:#x}");
        assert_eq!(libc::WTERMSIG(status), libc::SIGBUS);
        // SAFETY: the mapping made above.
        unsafe { libc::munmap(p, 64 << 10) };
    }
}
