//! Memory for decompressed blocks: fixed-size slots carved from large mappings that
//! the kernel can back with transparent huge pages, reused when the cache lets a
//! block go.
//!
//! Why: a block decompressed into freshly allocated memory takes one page fault per
//! 4 KiB page it fills — 32 for a 128 KiB block — and each fault is a trap into the
//! kernel, which in a virtual machine also costs a trip to the hypervisor. A
//! container start decompresses a few megabytes of blocks on its critical path: a
//! huge page takes one fault where small pages take 512, and a reused slot takes
//! none (figures in benches/README.md). Where huge pages are off, the slots are
//! plain pages, still reused.

use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};

use crate::memory::{Advice, AnonMap};

/// Chunks are mapped this big (and at least one slot), aligned to it: the size of a
/// transparent huge page on x86-64 and on arm64 with 4 KiB pages, so that one fault
/// fills a whole chunk. (With `defrag=madvise`, the kernel may compact memory to find
/// one, which costs less than the 512 small faults it saves.)
const CHUNK: usize = 2 << 20;
const PAGE: usize = 4096;

/// A pool of equal slots, each big enough for one block of an image.
pub struct Pool {
    slot: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Addresses of slots not in use.
    free: Vec<usize>,
    /// Every mapping made, unmapped when the pool goes: after its last buffer, as
    /// each holds an `Arc<Pool>`, so no slot address outlives its mapping.
    chunks: Vec<AnonMap>,
}

impl Pool {
    /// A pool of slots of `slot` bytes (rounded up to whole pages).
    pub fn new(slot: usize) -> Arc<Pool> {
        Arc::new(Pool {
            slot: slot.max(1).div_ceil(PAGE) * PAGE,
            state: Mutex::new(State::default()),
        })
    }

    /// A buffer of `len` bytes (at most the slot size), holding whatever the slot
    /// held before: the caller overwrites all of it. Falls back to the heap when
    /// `len` does not fit a slot or no memory can be mapped.
    pub fn take(self: &Arc<Self>, len: usize) -> BlockBuf {
        if len <= self.slot
            && let Some(ptr) = self.slot_addr().and_then(|a| NonNull::new(a as *mut u8))
        {
            return BlockBuf {
                inner: Inner::Slot {
                    ptr,
                    len,
                    pool: self.clone(),
                },
            };
        }
        BlockBuf {
            inner: Inner::Heap(vec![0u8; len].into_boxed_slice()),
        }
    }

    fn slot_addr(&self) -> Option<usize> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(a) = s.free.pop() {
            return Some(a);
        }
        let chunk = map_chunk(CHUNK.max(self.slot))?;
        let (addr, n) = (chunk.as_ptr() as usize, chunk.len() / self.slot);
        s.free.extend((1..n).rev().map(|i| addr + i * self.slot));
        let first = addr;
        s.chunks.push(chunk);
        Some(first)
    }

    fn give_back(&self, addr: usize) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.free.push(addr);
    }
}

/// Maps `len` bytes (a multiple of the page size) of anonymous memory, aligned to
/// `CHUNK` so that the kernel can back it with one huge page on its first write.
/// Where transparent huge pages are off the advice is refused and the memory is
/// ordinary pages. Faulting the chunk in ahead (MADV_POPULATE_WRITE) is slower: the
/// thread that first needs a block would wait for the whole chunk.
fn map_chunk(len: usize) -> Option<AnonMap> {
    let chunk = AnonMap::aligned(len, CHUNK)?;
    chunk.advise(Advice::HugePage);
    Some(chunk)
}

/// A decompressed block's bytes: a pool slot, or heap memory.
pub struct BlockBuf {
    inner: Inner,
}

enum Inner {
    Slot {
        ptr: NonNull<u8>,
        len: usize,
        pool: Arc<Pool>,
    },
    Heap(Box<[u8]>),
}

// SAFETY: a slot belongs to one BlockBuf until it is dropped (the pool hands each
// free address out once), so the buffer owns its bytes like a Box<[u8]>; the pool it
// points back to is Sync (its state is behind a Mutex).
unsafe impl Send for BlockBuf {}
// SAFETY: shared access only reads the bytes (Deref); writing needs `&mut`.
unsafe impl Sync for BlockBuf {}

impl BlockBuf {
    /// Shortens the buffer to its first `len` bytes (a block that decompressed to
    /// less than the slot).
    pub fn truncate(&mut self, len: usize) {
        match &mut self.inner {
            Inner::Slot { len: l, .. } => *l = (*l).min(len),
            Inner::Heap(b) => {
                if len < b.len() {
                    *b = b[..len].into();
                }
            }
        }
    }

    /// Bytes of memory it keeps alive, for the cache's budget.
    pub fn footprint(&self) -> usize {
        match &self.inner {
            Inner::Slot { pool, .. } => pool.slot,
            Inner::Heap(b) => b.len(),
        }
    }
}

impl Deref for BlockBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.inner {
            // SAFETY: the slot is `len <= slot` bytes of a live mapping (the Arc keeps
            // the pool, and so the mapping, alive), owned by this buffer, and always
            // initialized (anonymous memory starts zeroed; later it holds old bytes).
            Inner::Slot { ptr, len, .. } => unsafe {
                std::slice::from_raw_parts(ptr.as_ptr(), *len)
            },
            Inner::Heap(b) => b,
        }
    }
}

impl DerefMut for BlockBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        match &mut self.inner {
            // SAFETY: as in `deref`; `&mut self` makes this the only access.
            Inner::Slot { ptr, len, .. } => unsafe {
                std::slice::from_raw_parts_mut(ptr.as_ptr(), *len)
            },
            Inner::Heap(b) => b,
        }
    }
}

impl Drop for BlockBuf {
    fn drop(&mut self) {
        if let Inner::Slot { ptr, pool, .. } = &self.inner {
            pool.give_back(ptr.as_ptr() as usize);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_distinct_reused_and_keep_their_bytes() {
        let pool = Pool::new(128 << 10);
        let mut a = pool.take(128 << 10);
        let mut b = pool.take(1000);
        assert_eq!((a.len(), b.len()), (128 << 10, 1000));
        a.fill(1);
        b.fill(2);
        assert!(a.iter().all(|&x| x == 1) && b.iter().all(|&x| x == 2));
        let (pa, pb) = (a.as_ptr() as usize, b.as_ptr() as usize);
        assert!(pa.abs_diff(pb) >= 128 << 10, "slots overlap");
        assert_eq!(pa % (128 << 10), 0);
        drop(a);
        // The freed slot is handed out again before any new one.
        let c = pool.take(64);
        assert_eq!(c.as_ptr() as usize, pa);
        assert_eq!(c.footprint(), 128 << 10);
    }

    #[test]
    fn grows_past_one_chunk_and_falls_back_to_the_heap_for_oversize() {
        let pool = Pool::new(1 << 20);
        let bufs: Vec<BlockBuf> = (0..5).map(|_| pool.take(1 << 20)).collect();
        let mut addrs: Vec<usize> = bufs.iter().map(|b| b.as_ptr() as usize).collect();
        addrs.sort();
        addrs.dedup();
        assert_eq!(addrs.len(), 5);
        let big = pool.take((1 << 20) + 1);
        assert_eq!(big.len(), (1 << 20) + 1);
        assert!(big.iter().all(|&x| x == 0));
        let mut t = pool.take(100);
        t.truncate(10);
        assert_eq!(t.len(), 10);
    }

    #[test]
    fn buffers_outlive_their_pool_handle() {
        let pool = Pool::new(4096);
        let mut b = pool.take(4096);
        drop(pool);
        b.fill(7);
        assert_eq!(b[4095], 7);
    }
}
