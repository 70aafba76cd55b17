//! Which blocks of which files the preloader has put into the page cache.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::Mutex;

/// Files whose blocks go to the page cache as soon as they are decompressed (the kernel
/// knows their inodes already), and which blocks of them are there: a block is copied
/// into the page cache once, whichever job gets to it first.
#[derive(Default)]
pub(super) struct Stores {
    files: Mutex<HashMap<u64, Vec<u64>>>,
}

impl Stores {
    /// Marks file `ino` as one whose blocks are stored as they come.
    pub(super) fn want(&self, ino: u64) {
        if let Ok(mut f) = self.files.lock() {
            if f.len() >= 1 << 16 {
                f.clear();
            }
            f.entry(ino).or_default();
        }
    }

    /// Whether block `block` of `ino` should be stored now (`asked`: the job says so),
    /// and if so, claims it, so that no other job copies it again.
    pub(super) fn claim(&self, ino: u64, block: u64, asked: bool) -> bool {
        let Ok(mut f) = self.files.lock() else {
            return asked;
        };
        let Some(bits) = f.get_mut(&ino) else {
            return asked;
        };
        let (word, bit) = ((block / 64) as usize, 1u64 << (block % 64));
        if bits.len() <= word {
            bits.resize(word + 1, 0);
        }
        let fresh = bits[word] & bit == 0;
        bits[word] |= bit;
        fresh
    }

    /// Whether block `block` of `ino` is in the page cache already (nothing left to do).
    pub(super) fn done(&self, ino: u64, block: u64) -> bool {
        self.files.lock().is_ok_and(|f| {
            f.get(&ino)
                .and_then(|b| b.get((block / 64) as usize))
                .is_some_and(|w| w & (1u64 << (block % 64)) != 0)
        })
    }

    /// Gives a block back after a failed store, so that a later job may try again.
    pub(super) fn unclaim(&self, ino: u64, block: u64) {
        if let Ok(mut f) = self.files.lock()
            && let Some(w) = f
                .get_mut(&ino)
                .and_then(|b| b.get_mut((block / 64) as usize))
        {
            *w &= !(1u64 << (block % 64));
        }
    }
}
