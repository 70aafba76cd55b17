//! argon2's working memory in its own mapping (see [`KdfMemory`]).

use crate::memory::{Advice, AnonMap};

/// argon2's working memory: one anonymous mapping, which the kernel may back with
/// transparent huge pages. argon2 writes every byte of it, so with 4 KiB pages a
/// keyslot of m KiB takes m/4 page faults — 8192 for 32 MiB, 262144 for the 1 GiB
/// cryptsetup may choose — each a trap into the kernel, which in a virtual machine
/// costs a trip to the hypervisor. With huge pages it is one fault per 2 MiB; where
/// they are off, 4 KiB pages. The last block of each lane derives the keyslot's key,
/// so the memory is zeroed before it is unmapped.
pub struct KdfMemory {
    map: AnonMap,
}

impl KdfMemory {
    /// Memory for `blocks` argon2 blocks (1 KiB each), zeroed; `None` when it cannot
    /// be mapped.
    pub fn new(blocks: usize) -> Option<KdfMemory> {
        let len = blocks.checked_mul(std::mem::size_of::<argon2::Block>())?;
        let map = AnonMap::new(len)?;
        // The memory derives a keyslot's key: it stays out of core dumps and out of
        // forked children (it is too big to lock).
        map.advise(Advice::HugePage);
        map.advise(Advice::DontDump);
        map.advise(Advice::WipeOnFork);
        Some(KdfMemory { map })
    }

    pub fn blocks(&mut self) -> &mut [argon2::Block] {
        let blocks = self.map.len() / std::mem::size_of::<argon2::Block>();
        // SAFETY: the mapping is `blocks` blocks long (made for exactly that many),
        // page-aligned (so aligned for Block's 64 bytes), zero-filled by the kernel or
        // written by argon2 (a valid Block either way: plain u64s), and borrowed
        // mutably through `&mut self` only.
        unsafe { std::slice::from_raw_parts_mut(self.map.as_ptr().cast(), blocks) }
    }
}

impl Drop for KdfMemory {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(self.map.bytes_mut());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kdf_memory_is_zeroed_writable_and_gives_the_crates_own_result() {
        let mut m = KdfMemory::new(64).expect("map");
        assert_eq!(m.blocks().len(), 64);
        assert!(
            m.blocks()
                .iter()
                .all(|b| b.as_ref().iter().all(|&w| w == 0))
        );
        let params = argon2::Params::new(64, 2, 1, Some(32)).unwrap();
        let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let (mut ours, mut theirs) = ([0u8; 32], [0u8; 32]);
        a.hash_password_into_with_memory(b"pw", b"somesaltsomesalt", &mut ours, m.blocks())
            .unwrap();
        a.hash_password_into(b"pw", b"somesaltsomesalt", &mut theirs)
            .unwrap();
        assert_eq!(ours, theirs);
        assert!(KdfMemory::new(0).is_none());
    }
}
