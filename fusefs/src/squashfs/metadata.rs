//! Sequential reads through a chain of metadata blocks (inode, directory, xattr,
//! and lookup tables all live in them). A cursor is (block position, offset
//! inside the decompressed block); a read may cross into following blocks.
//!
//! Chains cannot cycle: the next block always starts past the current one, and
//! every block must end before the end of its table, so a cursor touches at most
//! (table length / 3) blocks.

#![forbid(unsafe_code)]

use std::sync::Arc;

use super::blocks::{Blocks, MetaBlock};
use super::error::{Result, corrupt};
use crate::source::ReadAt;

pub struct Cursor<'a, R> {
    img: &'a Blocks<R>,
    /// Disk position of the current block.
    pos: u64,
    /// Offset inside the decompressed current block.
    offset: usize,
    /// Disk offset where this table ends: no block may run past it.
    end: u64,
    block: Option<Arc<MetaBlock>>,
}

impl<'a, R: ReadAt> Cursor<'a, R> {
    pub fn new(img: &'a Blocks<R>, pos: u64, offset: usize, end: u64) -> Self {
        Self {
            img,
            pos,
            offset,
            end,
            block: None,
        }
    }

    /// The current position as (block position, offset), for saving and resuming.
    pub fn position(&self) -> (u64, usize) {
        (self.pos, self.offset)
    }

    fn current(&mut self) -> Result<Arc<MetaBlock>> {
        loop {
            let block = match &self.block {
                Some(b) => b.clone(),
                None => {
                    if self.pos >= self.end {
                        return Err(corrupt("metadata read past the end of its table", self.pos));
                    }
                    let b = self.img.meta_block(self.pos, self.end)?;
                    self.block = Some(b.clone());
                    b
                }
            };
            if self.offset < block.data[..].len() {
                return Ok(block);
            }
            if self.offset > block.data[..].len() {
                return Err(corrupt("metadata offset beyond its block", self.pos));
            }
            // Exactly at the end: continue in the next block of the chain.
            self.pos = block.next;
            self.offset = 0;
            self.block = None;
        }
    }

    /// Fills `buf` from the chain.
    pub fn read(&mut self, buf: &mut [u8]) -> Result<()> {
        // Fast path, most field reads: the bytes lie in the block already held.
        if let Some(src) = self
            .block
            .as_ref()
            .and_then(|b| b.data.get(self.offset..self.offset + buf.len()))
        {
            buf.copy_from_slice(src);
            self.offset += buf.len();
            return Ok(());
        }
        let mut done = 0;
        while done < buf.len() {
            let block = self.current()?;
            let avail = block.data.get(self.offset..).unwrap_or_default();
            let n = avail.len().min(buf.len() - done);
            if let (Some(d), Some(s)) = (buf.get_mut(done..done + n), avail.get(..n)) {
                d.copy_from_slice(s);
            }
            done += n;
            self.offset += n;
        }
        Ok(())
    }

    /// Skips `n` bytes without copying them.
    pub fn skip(&mut self, mut n: u64) -> Result<()> {
        while n > 0 {
            let block = self.current()?;
            let avail = (block.data[..].len() - self.offset) as u64;
            let step = avail.min(n);
            self.offset += step as usize;
            n -= step;
        }
        Ok(())
    }

    pub fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        self.read(&mut a)?;
        Ok(a)
    }

    pub fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// Reads `n` bytes into a new vector; `n` must already be bounded by the caller.
    pub fn bytes(&mut self, n: usize) -> Result<Vec<u8>> {
        let mut v = vec![0u8; n];
        self.read(&mut v)?;
        Ok(v)
    }
}
