//! Lookup tables (uid/gid, fragments, xattr ids): fixed-size entries packed into
//! metadata blocks, found through an array of u64 block positions. The metadata
//! blocks are written just before that array, so they must end where it starts.

#![forbid(unsafe_code)]

use super::blocks::{Blocks, METADATA_SIZE};
use super::error::{Result, corrupt};
use super::metadata::Cursor;
use crate::source::ReadAt;

pub struct Table {
    /// Disk positions of the metadata blocks holding the entries.
    blocks: Box<[u64]>,
    count: u64,
    entry_size: usize,
    /// Where the index array starts: the entry blocks must end by here.
    end: u64,
}

impl Table {
    /// Reads the index of a table of `count` entries of `entry_size` bytes whose
    /// index array starts at `start` and whose entry blocks end by `end`. The
    /// allocation is checked against the image first.
    pub fn open<R: ReadAt>(
        img: &Blocks<R>,
        start: u64,
        end: u64,
        count: u64,
        entry_size: usize,
    ) -> Result<Self> {
        let nblocks = (count * entry_size as u64).div_ceil(METADATA_SIZE as u64);
        let len = nblocks * 8;
        if start.checked_add(len).is_none_or(|e| e > img.sb.bytes_used) {
            return Err(corrupt(
                "lookup table runs past the end of the image",
                start,
            ));
        }
        let mut raw = vec![0u8; len as usize];
        img.read_raw(&mut raw, start)?;
        let blocks: Box<[u64]> = raw.chunks_exact(8).map(|c| super::le::u64(c, 0)).collect();
        if blocks.iter().any(|&b| b >= end) {
            return Err(corrupt("lookup table block after its index", start));
        }
        Ok(Self {
            blocks,
            count,
            entry_size,
            end,
        })
    }

    /// Position of the first entry block, where the table's data begins.
    pub fn first_block(&self) -> Option<u64> {
        self.blocks.first().copied()
    }

    /// The raw bytes of entry `i`.
    pub fn entry<R: ReadAt, const N: usize>(&self, img: &Blocks<R>, i: u64) -> Result<[u8; N]> {
        if i >= self.count || N != self.entry_size {
            return Err(corrupt("lookup table index out of range", self.end));
        }
        let per_block = (METADATA_SIZE / self.entry_size) as u64;
        let Some(&pos) = self.blocks.get((i / per_block) as usize) else {
            return Err(corrupt("lookup table index out of range", self.end));
        };
        let offset = ((i % per_block) as usize) * self.entry_size;
        Cursor::new(img, pos, offset, self.end).array::<N>()
    }
}
