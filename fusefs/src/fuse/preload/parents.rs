//! Which directory a small file was seen in, for warming its siblings.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::Mutex;

/// Which directory each small file was last seen in (by lookup or readdirplus): the
/// inodes of a squashfs do not record it. Sharded, as every lookup writes to it.
pub(in crate::fuse) struct Parents {
    shards: Box<[Mutex<HashMap<u64, u64>>]>,
}

impl Parents {
    const SHARDS: usize = 16;
    /// Entries per shard before it is cleared (a forgotten parent only means no warming).
    const CAP: usize = 1 << 16;

    pub(in crate::fuse) fn new() -> Self {
        Parents {
            shards: (0..Self::SHARDS)
                .map(|_| Mutex::new(HashMap::new()))
                .collect(),
        }
    }

    fn shard(&self, ino: u64) -> &Mutex<HashMap<u64, u64>> {
        &self.shards[(ino as usize) % Self::SHARDS]
    }

    pub(in crate::fuse) fn note(&self, ino: u64, dir: u64) {
        if let Ok(mut m) = self.shard(ino).lock() {
            if m.len() >= Self::CAP {
                m.clear();
            }
            m.insert(ino, dir);
        }
    }

    pub(in crate::fuse) fn of(&self, ino: u64) -> Option<u64> {
        self.shard(ino).lock().ok()?.get(&ino).copied()
    }
}
