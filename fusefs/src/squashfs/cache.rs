//! A sharded LRU cache bounded by bytes, holding `Arc` values keyed by a `u64`
//! (an image offset or an inode reference).
//!
//! Each shard is a small mutex-protected LRU, so N reader threads mostly touch
//! different locks. A missing entry is loaded outside the shard lock through a
//! `OnceLock` slot: threads asking for the same block at once wait for the first
//! loader instead of decompressing it again.

#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use super::error::Result;

/// A value that knows how many bytes it keeps alive.
pub trait Weight {
    fn weight(&self) -> usize;
}

type Slot<V> = Arc<OnceLock<Option<Arc<V>>>>;

struct Entry<V> {
    slot: Slot<V>,
    tick: u64,
    weight: usize,
}

struct Shard<V> {
    map: HashMap<u64, Entry<V>>,
    /// Recency order: tick -> key. The smallest tick is evicted first.
    order: BTreeMap<u64, u64>,
    tick: u64,
    bytes: usize,
}

pub struct Cache<V> {
    shards: Box<[Mutex<Shard<V>>]>,
    budget: usize,
}

const SHARDS: usize = 16;

impl<V: Weight> Cache<V> {
    /// A cache holding about `bytes` bytes in total.
    pub fn new(bytes: usize) -> Self {
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    map: HashMap::new(),
                    order: BTreeMap::new(),
                    tick: 0,
                    bytes: 0,
                })
            })
            .collect();
        Self {
            shards,
            budget: bytes / SHARDS,
        }
    }

    fn shard(&self, key: u64) -> MutexGuard<'_, Shard<V>> {
        // Keys are offsets, often multiples of a block size: mix the bits first.
        let h = (key ^ (key >> 29)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let i = (h >> 60) as usize % SHARDS; // < SHARDS == shards.len()
        // A poisoned lock only means another thread panicked mid-update of plain
        // bookkeeping; the map is still consistent enough to keep serving.
        match self.shards[i].lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// The cached value, if present and loaded, without loading it.
    pub fn peek(&self, key: u64) -> Option<Arc<V>> {
        let mut s = self.shard(key);
        let slot = s.touch(key)?;
        slot.get().and_then(|v| v.clone())
    }

    /// The cached value, loading it with `load` on a miss.
    pub fn get_or_load(&self, key: u64, load: impl FnOnce() -> Result<V>) -> Result<Arc<V>> {
        let slot = {
            let mut s = self.shard(key);
            match s.touch(key) {
                Some(slot) => slot,
                None => {
                    let slot: Slot<V> = Arc::new(OnceLock::new());
                    s.insert(key, slot.clone());
                    slot
                }
            }
        };
        if let Some(Some(v)) = slot.get() {
            return Ok(v.clone());
        }
        let mut error = None;
        let value = slot.get_or_init(|| match load() {
            Ok(v) => Some(Arc::new(v)),
            Err(e) => {
                error = Some(e);
                None
            }
        });
        let mut s = self.shard(key);
        let ours = s.map.get(&key).is_some_and(|e| Arc::ptr_eq(&e.slot, &slot));
        match value {
            Some(v) => {
                if ours {
                    s.account(key, v.weight(), self.budget);
                }
                Ok(v.clone())
            }
            None => {
                if ours {
                    s.remove(key);
                }
                drop(s);
                match error {
                    Some(e) => Err(e),
                    // Another thread's load failed while we waited: not cached, and
                    // the error is theirs, so report ours by loading again.
                    None => Err(super::error::Error::CorruptMsg(
                        "concurrent block load failed",
                    )),
                }
            }
        }
    }
}

impl<V> Shard<V> {
    fn touch(&mut self, key: u64) -> Option<Slot<V>> {
        self.tick += 1;
        let tick = self.tick;
        let e = self.map.get_mut(&key)?;
        self.order.remove(&e.tick);
        e.tick = tick;
        self.order.insert(tick, key);
        Some(e.slot.clone())
    }

    fn insert(&mut self, key: u64, slot: Slot<V>) {
        self.tick += 1;
        let tick = self.tick;
        self.order.insert(tick, key);
        self.map.insert(
            key,
            Entry {
                slot,
                tick,
                weight: 0,
            },
        );
    }

    fn remove(&mut self, key: u64) {
        if let Some(e) = self.map.remove(&key) {
            self.order.remove(&e.tick);
            self.bytes = self.bytes.saturating_sub(e.weight);
        }
    }

    /// Records the weight of a freshly loaded entry and evicts the least recently
    /// used ones until the shard fits its budget again.
    fn account(&mut self, key: u64, weight: usize, budget: usize) {
        if let Some(e) = self.map.get_mut(&key)
            && e.weight == 0
        {
            e.weight = weight.max(1);
            self.bytes += e.weight;
        }
        // The newest entry always stays, even alone over budget: an inode with a
        // block list bigger than a shard's share must survive until the next
        // insertion, or every read of that file would parse the list again.
        while self.bytes > budget && self.order.len() > 1 {
            let Some((_, victim)) = self.order.pop_first() else {
                break;
            };
            if let Some(e) = self.map.remove(&victim) {
                self.bytes = self.bytes.saturating_sub(e.weight);
            }
        }
    }
}

impl Weight for Box<[u8]> {
    fn weight(&self) -> usize {
        self[..].len() + 64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_within_its_byte_budget_and_keeps_hot_entries() {
        let c: Cache<Box<[u8]>> = Cache::new(64 * 1024);
        for k in 0..10_000u64 {
            c.get_or_load(k * 4096, || Ok(vec![0u8; 1000].into_boxed_slice()))
                .unwrap();
            // Key 0 is touched constantly, so LRU never evicts it.
            assert!(c.peek(0).is_some(), "hot entry evicted at {k}");
        }
        let total: usize = c
            .shards
            .iter()
            .map(|s| s.lock().map(|s| s.bytes).unwrap_or(0))
            .sum();
        // Each shard may exceed its share by at most its newest entry.
        assert!(total <= 64 * 1024 + SHARDS * 1064, "{total} bytes cached");
        let misses = (0..100u64).filter(|k| c.peek(k * 4096).is_none()).count();
        assert!(misses > 90, "old entries were not evicted");
    }

    #[test]
    fn failed_loads_are_not_cached() {
        let c: Cache<Box<[u8]>> = Cache::new(1 << 20);
        let e = c.get_or_load(7, || Err(super::super::Error::NotFound));
        assert!(e.is_err());
        assert!(c.peek(7).is_none());
        let v = c
            .get_or_load(7, || Ok(vec![1u8].into_boxed_slice()))
            .unwrap();
        assert_eq!(&v[..], &[1u8]);
    }
}
