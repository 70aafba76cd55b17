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
//! mapping marks the mapping broken and replaces the rest of it with zero pages (the
//! faulting access then completes); [`Mapping::read_with`] reports the read as
//! failed, and the mapping is not used again: the caller falls back to `pread(2)`,
//! which reports a short file as an error the normal way. A fault anywhere else, or
//! a SIGBUS the kernel did not raise for a fault, goes to the handler that was there
//! before (the Rust runtime's), or to the default action.
//!
//! The mapped bytes are never seen as a Rust slice: the file may change under them
//! (the handler's zero pages, or another process writing the file), which a shared
//! reference promises cannot happen. They are handed out as [`MappedBytes`], read
//! only by copying them or by decrypting them, each byte read once.
//!
//! A mapping's pages count in the process's resident memory (as file pages, shared
//! with the page cache). So that streaming a large image does not make the FUSE
//! server look large to the OOM killer, every [`RESIDENT_MAX`] bytes read the
//! mapping's page table entries are dropped (the page cache keeps the pages).

use std::fs::File;
use std::io;
use std::marker::PhantomData;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use super::map::{FileMap, page_size};

/// Mappings alive at once (one per encrypted image a process has open).
const MAX_MAPPINGS: usize = 16;

/// Bytes read through a mapping between two drops of its page table entries.
pub const RESIDENT_MAX: u64 = 64 << 20;

/// Linux si_code values of a SIGBUS raised by a memory access (asm-generic/siginfo.h;
/// the libc crate does not name them for Linux): no such page in the object (a
/// mapping past the end of its file, or an I/O error reading it), an
/// object-specific error, and a memory error in the page being accessed.
const BUS_ADRERR: libc::c_int = 2;
const BUS_OBJERR: libc::c_int = 3;
const BUS_MCEERR_AR: libc::c_int = 4;

/// What the signal handler can see of a mapping: atomics only (the handler may run
/// at any point in any thread). `seq` is odd while `start`/`end` are being changed,
/// and changes with every change: the handler trusts a pair only if `seq` was even
/// and the same before and after reading it.
struct Region {
    seq: AtomicUsize,
    start: AtomicUsize,
    end: AtomicUsize,
    broken: AtomicBool,
}

static REGIONS: [Region; MAX_MAPPINGS] = [const {
    Region {
        seq: AtomicUsize::new(0),
        start: AtomicUsize::new(0),
        end: AtomicUsize::new(0),
        broken: AtomicBool::new(false),
    }
}; MAX_MAPPINGS];

/// The SIGBUS action before ours, to pass foreign signals on to; set before ours is
/// installed.
static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();
/// Whether ours is installed (nothing is mapped otherwise).
static INSTALLED: OnceLock<bool> = OnceLock::new();

/// A read-only shared mapping of part of a file.
pub struct Mapping {
    /// The whole mapping, from a page boundary.
    map: FileMap,
    /// The file offset `offset` handed to [`Mapping::new`] lies `lead` bytes into it.
    lead: usize,
    len: usize,
    slot: usize,
    /// Bytes read since the page table entries were last dropped.
    read: AtomicU64,
}

impl std::fmt::Debug for Mapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mapping").field("len", &self.len).finish()
    }
}

/// Bytes inside a live [`Mapping`]: valid for reads for the lifetime `'a` (a page
/// lost to a truncation reads as zeros rather than faulting, and the read is then
/// reported failed), but not a slice: they may change while being read.
#[derive(Clone, Copy)]
pub struct MappedBytes<'a> {
    ptr: *const u8,
    len: usize,
    _mapping: PhantomData<&'a Mapping>,
}

impl<'a> MappedBytes<'a> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The first byte: valid for reads of [`MappedBytes::len`] bytes while `'a`
    /// lasts, which no Rust reference may alias mutably (it is mapped memory).
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr
    }

    /// The `len` bytes at `start`; panics when they are not all inside.
    pub fn sub(&self, start: usize, len: usize) -> MappedBytes<'a> {
        assert!(
            start.checked_add(len).is_some_and(|e| e <= self.len),
            "mapped range out of bounds"
        );
        MappedBytes {
            // SAFETY: start <= self.len (asserted), so the result stays inside
            // (or one past the end of) the same mapping.
            ptr: unsafe { self.ptr.add(start) },
            len,
            _mapping: PhantomData,
        }
    }

    /// Copies the bytes into `dst` (as long as they are).
    pub fn copy_to(&self, dst: &mut [u8]) {
        assert_eq!(dst.len(), self.len, "copy of mapped bytes: lengths differ");
        // SAFETY: `ptr` is valid for `len` reads (the type's invariant), `dst` for
        // `len` writes, and a Rust buffer cannot overlap a read-only file mapping.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr, dst.as_mut_ptr(), self.len) };
    }
}

impl Mapping {
    /// Maps `len` bytes of `file` from `offset` (page-aligned as needed). Fails
    /// when the file cannot be mapped (some filesystems; a limit on the address
    /// space, which a large image should not use up; 32-bit systems), the handler
    /// cannot be installed, or too many mappings are alive: the caller then reads
    /// with `pread(2)`.
    ///
    /// # Safety
    /// The file must not be written in place by this process while the mapping
    /// lives (veil only ever reads images); a truncation by anyone is handled.
    pub unsafe fn new(file: &File, offset: u64, len: u64) -> io::Result<Self> {
        if !cfg!(target_pointer_width = "64") {
            return Err(io::Error::other("file mappings only on 64-bit systems"));
        }
        if address_space_limited() {
            return Err(io::Error::other("the address space is limited"));
        }
        let page = page_size();
        let lead = (offset % page as u64) as usize;
        let len = usize::try_from(len).map_err(|_| io::Error::other("too large to map"))?;
        let map_len = len
            .checked_add(lead)
            .ok_or_else(|| io::Error::other("too large to map"))?;
        if len == 0 {
            return Err(io::Error::other("nothing to map"));
        }
        if !*INSTALLED.get_or_init(install_handler) {
            return Err(io::Error::other("no SIGBUS handler"));
        }
        let map = FileMap::new(file, offset - lead as u64, map_len)?;
        let start = map.as_ptr() as usize;
        for (slot, r) in REGIONS.iter().enumerate() {
            let seq = r.seq.load(Ordering::SeqCst);
            // A free slot, claimed by making its sequence odd.
            if seq % 2 == 0
                && r.start.load(Ordering::SeqCst) == 0
                && r.seq
                    .compare_exchange(seq, seq + 1, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
            {
                r.broken.store(false, Ordering::SeqCst);
                r.start.store(start, Ordering::SeqCst);
                r.end.store(start + map_len, Ordering::SeqCst);
                r.seq.store(seq + 2, Ordering::SeqCst);
                return Ok(Mapping {
                    map,
                    lead,
                    len,
                    slot,
                    read: AtomicU64::new(0),
                });
            }
        }
        // `map` is unmapped here, never registered.
        Err(io::Error::other("too many file mappings"))
    }

    /// The mapped length (never 0).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false (see [`Mapping::len`]).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// False once the file shrank under the mapping; it is then not used again.
    pub fn is_intact(&self) -> bool {
        !REGIONS[self.slot].broken.load(Ordering::SeqCst)
    }

    /// Runs `f` on the `len` bytes at `offset` (counted from the `offset` given to
    /// [`Mapping::new`]). `None` when the mapping is broken (before or during the
    /// call: the bytes `f` saw may then include zeros standing in for lost pages) or
    /// the range is outside it.
    pub fn read_with<T>(
        &self,
        offset: usize,
        len: usize,
        f: impl FnOnce(MappedBytes<'_>) -> T,
    ) -> Option<T> {
        let end = offset.checked_add(len)?;
        if end > self.len || !self.is_intact() {
            return None;
        }
        let bytes = MappedBytes {
            // SAFETY: lead + offset + len <= lead + self.len = the mapping's length
            // (checked above): inside the live mapping, unmapped only when `self` is
            // dropped.
            ptr: unsafe { self.map.as_ptr().add(self.lead + offset) },
            len,
            _mapping: PhantomData,
        };
        let out = f(bytes);
        // The handler marks the mapping broken before it maps zero pages, so a read
        // that saw any of them sees the mark here.
        let intact = self.is_intact();
        let before = self.read.fetch_add(len as u64, Ordering::Relaxed);
        if (before + len as u64) / RESIDENT_MAX != before / RESIDENT_MAX {
            self.drop_resident();
        }
        intact.then_some(out)
    }

    /// Drops the mapping's page table entries: its pages stay in the page cache, and
    /// the next read of each faults it back in.
    fn drop_resident(&self) {
        self.map.drop_resident();
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        let r = &REGIONS[self.slot];
        let seq = r.seq.load(Ordering::SeqCst);
        r.seq.store(seq + 1, Ordering::SeqCst);
        r.start.store(0, Ordering::SeqCst);
        r.end.store(0, Ordering::SeqCst);
        // Even again, with start 0: free. Unregistered before `map` is unmapped
        // (fields drop after this), so the handler never trusts an unmapped range.
        r.seq.store(seq + 2, Ordering::SeqCst);
    }
}

/// True when RLIMIT_AS is set: a mapping of a large image would use up what the
/// process may allocate later (the KDF's memory among it).
fn address_space_limited() -> bool {
    use nix::sys::resource::{RLIM_INFINITY, Resource, getrlimit};
    getrlimit(Resource::RLIMIT_AS).map_or(true, |(soft, _)| soft != RLIM_INFINITY)
}

fn install_handler() -> bool {
    // SAFETY: sigaction calls with zero-initialised structs (a valid value for the
    // type). The current action is recorded before ours replaces it, so a foreign
    // SIGBUS in between finds it. The handler only touches atomics, errno and
    // async-signal-safe system calls (mmap, sigaction).
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut old) != 0 {
            return false;
        }
        let _ = PREVIOUS.set(old);
        let mut new: libc::sigaction = std::mem::zeroed();
        new.sa_sigaction = on_sigbus as *const () as usize;
        new.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        libc::sigemptyset(&mut new.sa_mask);
        libc::sigaction(libc::SIGBUS, &new, std::ptr::null_mut()) == 0
    }
}

/// The registered mapping holding `addr`: (slot, start, end), read consistently.
fn region_of(addr: usize) -> Option<(usize, usize, usize)> {
    for (i, r) in REGIONS.iter().enumerate() {
        let seq = r.seq.load(Ordering::SeqCst);
        if seq % 2 == 1 {
            continue;
        }
        let (start, end) = (r.start.load(Ordering::SeqCst), r.end.load(Ordering::SeqCst));
        if r.seq.load(Ordering::SeqCst) != seq {
            continue;
        }
        if start != 0 && addr >= start && addr < end {
            return Some((i, start, end));
        }
    }
    None
}

extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: errno is this thread's; saved here and restored below, so the
    // interrupted code does not see the handler's system calls in it.
    let errno = unsafe { *libc::__errno_location() };
    // SAFETY: the kernel passes a valid siginfo for an SA_SIGINFO handler.
    let (code, addr) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
    let ours = matches!(code, BUS_ADRERR | BUS_OBJERR | BUS_MCEERR_AR)
        .then(|| region_of(addr))
        .flatten();
    if let Some((slot, _, end)) = ours {
        // The pages from the faulting one to the end of the mapping lie past the
        // file's new end. Marked first: a reader that sees a zero page then also
        // sees the mark when it checks after reading.
        REGIONS[slot].broken.store(true, Ordering::SeqCst);
        let page = addr & !(page_size() - 1);
        // SAFETY: the range lies inside a live mapping this module made (its
        // registration was read consistently above, and a mapping is unregistered
        // before it is unmapped); replaced by an anonymous read-only mapping of the
        // same extent, which nothing else owns. mmap is async-signal-safe.
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
            // SAFETY: as above.
            unsafe { *libc::__errno_location() = errno };
            return;
        }
    }
    // Not ours (or the zero pages could not be mapped): what was there before.
    let old = PREVIOUS.get();
    match old.map(|o| (o.sa_sigaction, o.sa_flags)) {
        Some((h, flags)) if h != libc::SIG_DFL && h != libc::SIG_IGN => {
            if flags & libc::SA_SIGINFO != 0 {
                // SAFETY: the previous SA_SIGINFO handler, called as the kernel would.
                let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                    unsafe { std::mem::transmute(h) };
                f(sig, info, ctx);
            } else {
                // SAFETY: the previous plain handler, called as the kernel would.
                let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(h) };
                f(sig);
            }
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
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;

    fn file_of(len: usize) -> (tempfile::NamedTempFile, Vec<u8>) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        f.write_all(&data).unwrap();
        f.flush().unwrap();
        (f, data)
    }

    fn map(f: &tempfile::NamedTempFile, offset: u64, len: u64) -> Mapping {
        // SAFETY: the tests write their files only through `set_len`, which the
        // mapping handles.
        unsafe { Mapping::new(f.as_file(), offset, len) }.unwrap()
    }

    fn bytes(m: &Mapping, offset: usize, len: usize) -> Option<Vec<u8>> {
        m.read_with(offset, len, |b| {
            let mut v = vec![0u8; b.len()];
            b.copy_to(&mut v);
            v
        })
    }

    #[test]
    fn reads_the_file_from_any_offset() {
        let (f, data) = file_of(3 << 20);
        let m = map(&f, 0, data.len() as u64);
        assert_eq!(m.len(), data.len());
        assert_eq!(
            bytes(&m, 12345, 70000).unwrap(),
            &data[12345..12345 + 70000]
        );
        assert!(bytes(&m, data.len() - 10, 11).is_none());
        assert!(bytes(&m, usize::MAX, 2).is_none());
        // A window that does not start on a page.
        let m = map(&f, 5000, 1 << 20);
        assert_eq!(bytes(&m, 0, 3).unwrap(), &data[5000..5003]);
        assert_eq!(
            bytes(&m, (1 << 20) - 7, 7).unwrap(),
            &data[5000 + (1 << 20) - 7..5000 + (1 << 20)]
        );
        assert!(bytes(&m, (1 << 20) - 7, 8).is_none());
        let sub = m.read_with(100, 1000, |b| b.sub(10, 20).len());
        assert_eq!(sub, Some(20));
        assert!(m.is_intact());
    }

    /// The resident part of the mapping `m` (its VMA's `Rss` in /proc/self/smaps), in
    /// bytes.
    fn resident(m: &Mapping) -> u64 {
        let base = m.read_with(0, 1, |b| b.as_ptr() as usize).unwrap() & !(page_size() - 1);
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut lines = smaps.lines();
        while let Some(l) = lines.next() {
            let start = l
                .split('-')
                .next()
                .and_then(|a| usize::from_str_radix(a, 16).ok());
            if start == Some(base) {
                for l in lines.by_ref() {
                    if let Some(kb) = l.strip_prefix("Rss:") {
                        return kb
                            .trim()
                            .trim_end_matches("kB")
                            .trim()
                            .parse::<u64>()
                            .unwrap()
                            << 10;
                    }
                }
            }
        }
        panic!("mapping at {base:#x} not in /proc/self/smaps");
    }

    /// Reading a file larger than the resident limit from start to end leaves no more
    /// than the limit mapped (the page table entries are dropped on the way), and the
    /// bytes read stay right, also when read again after a drop.
    #[test]
    fn reads_past_the_resident_limit_drop_the_mapped_pages() {
        let len = (RESIDENT_MAX + RESIDENT_MAX / 2) as usize;
        let (f, data) = file_of(len);
        let m = map(&f, 0, len as u64);
        let chunk = 1 << 20;
        let mut most = 0;
        for at in (0..len).step_by(chunk) {
            let n = chunk.min(len - at);
            assert_eq!(bytes(&m, at, n).unwrap(), &data[at..at + n], "at {at}");
            most = most.max(resident(&m));
        }
        assert!(
            most <= RESIDENT_MAX + 2 * chunk as u64,
            "{most} bytes mapped at once"
        );
        assert!(
            resident(&m) < RESIDENT_MAX,
            "{} bytes still mapped",
            resident(&m)
        );
        // Again from the start, after the drop.
        assert_eq!(
            bytes(&m, 4097, 3 << 20).unwrap(),
            &data[4097..4097 + (3 << 20)]
        );
    }

    /// Under an address-space limit nothing is mapped (checked in a child, which
    /// sets the limit), and a file source falls back to reading.
    #[test]
    fn no_mapping_under_an_address_space_limit() {
        let (f, data) = file_of(64 << 10);
        // SAFETY: the child only sets a limit, makes system calls and exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let lim = libc::rlimit {
                rlim_cur: 1 << 40,
                rlim_max: libc::RLIM_INFINITY,
            };
            // SAFETY: setrlimit reads the struct passed; _exit always may be called.
            unsafe {
                libc::setrlimit(libc::RLIMIT_AS, &lim);
                let mapped = Mapping::new(f.as_file(), 0, data.len() as u64).is_ok();
                let src = crate::source::FileSource::mapped(f.reopen().unwrap(), 0, 4096).unwrap();
                let in_place =
                    crate::source::ReadAt::read_in_place(&src, 0, 10, &mut |_| ()).is_some();
                let mut b = [0u8; 10];
                let read = crate::source::ReadAt::read_exact_at(&src, &mut b, 5).is_ok()
                    && b == data[5..15];
                libc::_exit(if !mapped && !in_place && read { 0 } else { 1 });
            }
        }
        let mut status = 0;
        // SAFETY: waiting for the child forked above.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "status {status:#x}"
        );
        // Without the limit (the parent's), the same file is mapped.
        assert!(map(&f, 0, data.len() as u64).is_intact());
    }

    /// A truncation under the mapping: the read that meets the lost pages fails
    /// (no SIGBUS reaches the process), and so does every later one; another
    /// mapping is not affected.
    #[test]
    fn a_truncated_file_fails_reads_instead_of_crashing() {
        let (f, data) = file_of(1 << 20);
        let (g, other) = file_of(64 << 10);
        let m = map(&f, 0, data.len() as u64);
        let n = map(&g, 0, other.len() as u64);
        assert_eq!(bytes(&m, 100, 1).unwrap(), [data[100]]);
        f.as_file().set_len(100_000).unwrap();
        // Inside what is left: still the file's bytes.
        assert_eq!(bytes(&m, 100, 1).unwrap(), [data[100]]);
        // Past the new end: the read runs (on zeros), and is reported as failed.
        assert_eq!(bytes(&m, 200_000, 300_000), None);
        assert!(!m.is_intact());
        assert_eq!(bytes(&m, 100, 1), None);
        assert!(n.is_intact());
        assert_eq!(bytes(&n, 0, 100).unwrap(), &other[..100]);
        drop(m);
        // The slot is free again and a new mapping of the same file works.
        let m = map(&f, 0, 100_000);
        assert_eq!(bytes(&m, 99_000, 1000).unwrap(), &data[99_000..100_000]);
    }

    /// A SIGBUS outside every mapping still ends the process with SIGBUS (checked in
    /// a child: a plain file mapping read past the file's end), and one sent with
    /// sigqueue(3) that names an address inside a mapping leaves the mapping alone.
    #[test]
    fn foreign_sigbus_is_not_ours() {
        let (f, data) = file_of(64 << 10);
        let m = map(&f, 0, data.len() as u64);
        let inside = m.read_with(0, 1, |b| b.as_ptr() as usize).unwrap();
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
        for sent in [false, true] {
            // SAFETY: the child only reads memory, raises a signal and exits; it
            // takes no lock.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                if sent {
                    // SAFETY: a zeroed siginfo (valid for the type) with the code of
                    // sigqueue(3) and, where Linux keeps si_addr (after three ints
                    // and padding), an address inside the mapping; sent to this
                    // thread. Then the mapping's state is the exit code.
                    unsafe {
                        let mut si: libc::siginfo_t = std::mem::zeroed();
                        si.si_signo = libc::SIGBUS;
                        si.si_code = -1; // SI_QUEUE
                        let addr = (&raw mut si).cast::<u8>().add(16).cast::<usize>();
                        addr.write_unaligned(inside);
                        libc::syscall(
                            libc::SYS_rt_tgsigqueueinfo,
                            libc::getpid(),
                            libc::gettid(),
                            libc::SIGBUS,
                            &raw mut si,
                        );
                        libc::_exit(if m.is_intact() { 0 } else { 3 });
                    }
                }
                // SAFETY: reading the mapping (past the file's end now: SIGBUS).
                let v = unsafe { std::ptr::read_volatile(p.cast::<u8>().add(8192)) };
                // SAFETY: _exit is always safe to call.
                unsafe { libc::_exit(i32::from(v) + 1) };
            }
            let mut status = 0;
            // SAFETY: waiting for the child forked above.
            assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
            if sent {
                assert!(libc::WIFEXITED(status), "status {status:#x}");
                assert_eq!(
                    libc::WEXITSTATUS(status),
                    0,
                    "a sent SIGBUS broke the mapping"
                );
            } else {
                assert!(libc::WIFSIGNALED(status), "status {status:#x}");
                assert_eq!(libc::WTERMSIG(status), libc::SIGBUS);
            }
        }
        assert!(m.is_intact());
        // SAFETY: the mapping made above.
        unsafe { libc::munmap(p, 64 << 10) };
    }
}
