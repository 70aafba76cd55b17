//! Memory for secrets: each buffer is an anonymous mapping of its own, so that the
//! kernel can be told about it page by page:
//!
//! - `MADV_DONTDUMP`: left out of core dumps, whatever the process's dumpable state;
//! - `mlock`: kept out of swap, where `RLIMIT_MEMLOCK` allows (a refusal is not an
//!   error: the secret is still wiped, only possibly swapped);
//! - `MADV_WIPEONFORK` (byte buffers only): a forked child (a build's `%post`
//!   helper, a PID-namespace helper) sees zeros instead of a copy of the secret;
//! - zeroed before it is unmapped.
//!
//! A byte buffer may be given a large capacity (a passphrase read from a pipe, up to
//! cryptsetup's 8 MiB): pages the kernel never had to provide cost nothing, and only
//! what was written is wiped.

use zeroize::Zeroize;

use crate::memory::{Advice, AnonMap, page_size};

/// Mappings up to this size are locked; larger ones (a read buffer sized for the
/// worst case) would exceed the usual 8 MiB RLIMIT_MEMLOCK for nothing.
const LOCK_MAX: usize = 64 << 10;

/// One anonymous private mapping with the protections above.
struct Region {
    map: AnonMap,
}

impl Region {
    fn new(want: usize, wipe_on_fork: bool) -> Region {
        let page = page_size();
        let len = want.max(1).div_ceil(page) * page;
        let Some(mut map) = AnonMap::new(len) else {
            // As the global allocator does when memory runs out.
            std::alloc::handle_alloc_error(
                std::alloc::Layout::from_size_align(len, page)
                    .unwrap_or(std::alloc::Layout::new::<u8>()),
            );
        };
        map.advise(Advice::DontDump);
        if wipe_on_fork {
            map.advise(Advice::WipeOnFork);
        }
        // A refusal (EPERM, ENOMEM over the limit) leaves the pages swappable, and
        // still wiped at the end.
        if len <= LOCK_MAX {
            map.lock();
        }
        Region { map }
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    fn is_locked(&self) -> bool {
        self.map.is_locked()
    }

    /// The first byte, page-aligned.
    fn addr(&self) -> *mut u8 {
        self.map.as_ptr()
    }

    /// The first `n` bytes (`n` ≤ `len`).
    fn bytes_mut(&mut self, n: usize) -> &mut [u8] {
        debug_assert!(n <= self.len());
        let n = n.min(self.len());
        &mut self.map.bytes_mut()[..n]
    }

    fn bytes(&self, n: usize) -> &[u8] {
        &self.map.bytes()[..n.min(self.len())]
    }

    /// Wipes the first `n` bytes; the mapping is unlocked and unmapped when the
    /// region is dropped.
    fn release(&mut self, n: usize) {
        self.bytes_mut(n).zeroize();
    }
}

/// Secret bytes in guarded memory: a length within a fixed capacity.
pub struct SecretBytes {
    region: Region,
    len: usize,
    /// The most bytes ever written: what is wiped at the end.
    dirty: usize,
}

impl SecretBytes {
    /// An empty buffer that can hold `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> SecretBytes {
        SecretBytes {
            region: Region::new(capacity, true),
            len: 0,
            dirty: 0,
        }
    }

    /// A copy of `bytes` (the caller remains responsible for its own copy).
    pub fn from_slice(bytes: &[u8]) -> SecretBytes {
        let mut s = SecretBytes::with_capacity(bytes.len());
        s.region.bytes_mut(bytes.len()).copy_from_slice(bytes);
        s.set_len(bytes.len());
        s
    }

    pub fn capacity(&self) -> usize {
        self.region.len()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the pages are locked in memory (for tests and diagnostics).
    pub fn is_locked(&self) -> bool {
        self.region.is_locked()
    }

    pub fn as_slice(&self) -> &[u8] {
        self.region.bytes(self.len)
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        let n = self.len;
        self.region.bytes_mut(n)
    }

    /// The unused capacity, to read into; then [`SecretBytes::set_len`].
    pub fn spare(&mut self) -> &mut [u8] {
        let (len, cap) = (self.len, self.region.len());
        // Whatever is handed out may be written: it is wiped at the end.
        self.dirty = cap;
        &mut self.region.bytes_mut(cap)[len..]
    }

    /// Sets the length (at most the capacity).
    pub fn set_len(&mut self, n: usize) {
        self.len = n.min(self.region.len());
        self.dirty = self.dirty.max(self.len);
    }

    /// Shortens the buffer, wiping what is cut off.
    pub fn truncate(&mut self, n: usize) {
        if n < self.len {
            let len = self.len;
            self.region.bytes_mut(len)[n..].zeroize();
            self.len = n;
        }
    }
}

impl Drop for SecretBytes {
    fn drop(&mut self) {
        self.region.release(self.dirty);
    }
}

impl std::fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretBytes({} bytes, redacted)", self.len)
    }
}

/// A value (a cipher with its expanded keys) kept in guarded memory. Not wiped on
/// fork: a forked child must still be able to drop it.
pub struct SecretBox<T> {
    region: Region,
    /// Owns a `T`: Send and Sync exactly when `T` is, as a `Box<T>` would be.
    _owns: std::marker::PhantomData<T>,
}

/// How much stack [`scrub_stack`] clears: deeper than the frames of a keyslot
/// unlock (KDF, key-material decryption, AES key expansion) reach.
const SCRUB: usize = 64 << 10;

/// Zeroes the stack below the caller's frame. A function that handled a key (the
/// AES key schedule builds its round keys in locals, a value moved into guarded
/// memory leaves its old bytes in the frame it came from) leaves those bytes on the
/// stack when it returns; calling this right after such calls overwrites them.
#[inline(never)]
pub fn scrub_stack() {
    let mut area = [0u8; SCRUB];
    // Volatile writes: the compiler may not drop them as dead stores.
    area.zeroize();
    std::hint::black_box(&area);
}

/// Runs `f` in frames below this one, then wipes the stack they used (see
/// [`scrub_stack`]): the way every public operation that handles key material
/// (unlock, create, add a keyslot) leaves none of it behind.
pub fn scrubbed<T>(f: impl FnOnce() -> T) -> T {
    let r = below(f);
    scrub_stack();
    r
}

/// A frame of its own for [`scrubbed`]'s `f`, so that everything `f` leaves on the
/// stack lies below the caller's frame, where `scrub_stack` writes.
#[inline(never)]
fn below<T>(f: impl FnOnce() -> T) -> T {
    f()
}

impl<T> SecretBox<T> {
    /// Makes the value with `make` and moves it into guarded memory, then wipes what
    /// making and moving left on the stack (see [`scrub_stack`]).
    pub fn build<E>(make: impl FnOnce() -> Result<T, E>) -> Result<SecretBox<T>, E> {
        scrubbed(|| Self::build_inner(make))
    }

    #[inline(never)]
    fn build_inner<E>(make: impl FnOnce() -> Result<T, E>) -> Result<SecretBox<T>, E> {
        let mut value = std::mem::ManuallyDrop::new(make()?);
        let region = Region::new(std::mem::size_of::<T>(), false);
        assert!(
            std::mem::align_of::<T>() <= page_size(),
            "over-aligned secret type"
        );
        let at: *mut T = &mut *value;
        // SAFETY: the region is page-aligned (so aligned for T) and at least
        // size_of::<T>() bytes; `value` is a valid T that is never used or dropped
        // after this bitwise move, so its bytes may then be overwritten.
        unsafe {
            std::ptr::copy_nonoverlapping(at, region.addr().cast::<T>(), 1);
            for i in 0..std::mem::size_of::<T>() {
                std::ptr::write_volatile(at.cast::<u8>().add(i), 0);
            }
        }
        Ok(SecretBox {
            region,
            _owns: std::marker::PhantomData,
        })
    }

    pub fn new(value: T) -> SecretBox<T> {
        assert!(
            std::mem::align_of::<T>() <= page_size(),
            "over-aligned secret type"
        );
        let region = Region::new(std::mem::size_of::<T>(), false);
        // SAFETY: the mapping is at least size_of::<T>() bytes and page-aligned, so
        // aligned for T (checked above); it holds no value yet.
        unsafe { region.addr().cast::<T>().write(value) };
        SecretBox {
            region,
            _owns: std::marker::PhantomData,
        }
    }

    pub fn is_locked(&self) -> bool {
        self.region.is_locked()
    }
}

impl<T> std::ops::Deref for SecretBox<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: `new` wrote a T there, which lives until Drop.
        unsafe { &*self.region.addr().cast::<T>() }
    }
}

impl<T> Drop for SecretBox<T> {
    fn drop(&mut self) {
        // SAFETY: the T written by `new`, dropped once; its bytes are wiped after.
        unsafe { std::ptr::drop_in_place(self.region.addr().cast::<T>()) };
        self.region.release(std::mem::size_of::<T>());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The VmFlags line of the mapping that holds `addr`, from /proc/self/smaps.
    fn vm_flags(addr: usize) -> String {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut inside = false;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ')
                && let Some((a, b)) = range.split_once('-')
                && let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
            {
                inside = (a..b).contains(&addr);
                continue;
            }
            if inside && let Some(f) = line.strip_prefix("VmFlags:") {
                return f.trim().to_string();
            }
        }
        panic!("no mapping holds {addr:#x}");
    }

    #[test]
    fn secret_pages_are_not_dumped_are_wiped_on_fork_and_locked_when_allowed() {
        let s = SecretBytes::from_slice(b"secret");
        assert_eq!(s.as_slice(), b"secret");
        let flags = vm_flags(s.as_slice().as_ptr() as usize);
        // dd: do not dump; wf: wipe on fork; lo: locked.
        assert!(flags.split(' ').any(|f| f == "dd"), "{flags}");
        assert!(flags.split(' ').any(|f| f == "wf"), "{flags}");
        assert_eq!(
            flags.split(' ').any(|f| f == "lo"),
            s.is_locked(),
            "{flags}"
        );
        let b = SecretBox::new([7u64; 16]);
        let flags = vm_flags(b.as_ptr() as usize);
        assert!(flags.split(' ').any(|f| f == "dd"), "{flags}");
        assert!(!flags.split(' ').any(|f| f == "wf"), "{flags}");
        assert_eq!(b[3], 7);
    }

    #[test]
    fn lengths_and_truncation() {
        let mut s = SecretBytes::with_capacity(10);
        assert!(s.capacity() >= 10 && s.is_empty());
        s.spare()[..4].copy_from_slice(b"abcd");
        s.set_len(4);
        assert_eq!(s.as_slice(), b"abcd");
        s.truncate(2);
        assert_eq!(s.as_slice(), b"ab");
        s.set_len(4);
        assert_eq!(s.as_slice(), b"ab\0\0", "what truncate cut off is wiped");
        // Big capacities are not locked (nor touched).
        let big = SecretBytes::with_capacity(8 << 20);
        assert!(!big.is_locked());
    }
}
