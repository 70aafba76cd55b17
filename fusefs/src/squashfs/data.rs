//! File contents: full blocks (compressed, stored, or sparse holes) and the tail
//! packed into a shared fragment block. Any byte range is served by touching only
//! the blocks it overlaps: block positions come from the inode's checkpointed
//! block list, never from decompressing earlier blocks.

#![forbid(unsafe_code)]

use super::blocks::{BLOCK_SIZE_MASK, Blocks};
use super::error::{Result, corrupt};
use super::inode::FileLayout;
use super::table::Table;
use crate::source::ReadAt;

/// The fragment table: where each shared tail block lives.
pub struct Fragments {
    table: Option<Table>,
}

impl Fragments {
    pub fn open<R: ReadAt>(img: &Blocks<R>) -> Result<Self> {
        let sb = &img.sb;
        if sb.fragment_count == 0 {
            return Ok(Self { table: None });
        }
        let t = Table::open(
            img,
            sb.fragment_table,
            sb.fragment_table,
            u64::from(sb.fragment_count),
            16,
        )?;
        Ok(Self { table: Some(t) })
    }

    pub fn first_block(&self) -> Option<u64> {
        self.table.as_ref().and_then(Table::first_block)
    }

    /// Disk position and size field of fragment block `i`.
    fn entry<R: ReadAt>(&self, img: &Blocks<R>, i: u32) -> Result<(u64, u32)> {
        let Some(t) = &self.table else {
            return Err(corrupt(
                "fragment index without a fragment table",
                img.sb.fragment_table,
            ));
        };
        let e: [u8; 16] = t.entry(img, u64::from(i))?;
        let start = super::le::u64(&e, 0);
        let size = super::le::u32(&e, 8);
        if start
            .checked_add(u64::from(size & BLOCK_SIZE_MASK))
            .is_none_or(|end| end > img.sb.inode_table)
        {
            return Err(corrupt("fragment block outside the data area", start));
        }
        Ok((start, size))
    }
}

/// Copies the bytes of `f` at `offset` into `buf`; returns how many (short only at
/// the end of the file). A whole block that is not cached is decompressed straight
/// into `buf`, unless `via_cache` (another thread may want the same block: the
/// decompression is then shared through the cache).
pub fn read<R: ReadAt>(
    img: &Blocks<R>,
    frags: &Fragments,
    f: &FileLayout,
    offset: u64,
    buf: &mut [u8],
    via_cache: bool,
) -> Result<usize> {
    if offset >= f.size {
        return Ok(0);
    }
    let len = (buf.len() as u64).min(f.size - offset) as usize;
    let bs = u64::from(img.sb.block_size);
    let mut done = 0usize;
    while done < len {
        let pos = offset + done as u64;
        let bi = pos / bs;
        let in_block = (pos % bs) as usize;
        let block_len = (f.size - bi * bs).min(bs) as usize;
        let n = (block_len - in_block).min(len - done);
        let Some(out) = buf.get_mut(done..done + n) else {
            return Err(corrupt("read buffer arithmetic", pos));
        };
        match f.sizes.get(bi as usize) {
            Some(&field) if field & BLOCK_SIZE_MASK == 0 => out.fill(0), // sparse hole
            Some(&field) => {
                let at = f.block_pos(bi as usize);
                let cached = img.cached_data_block(at);
                if cached.is_none() && in_block == 0 && n == block_len && !via_cache {
                    // The caller wants the whole block: decompress straight into its
                    // buffer, no cache copy (sequential reads run at decompression speed).
                    img.read_block_into("data", at, field, out)?;
                } else {
                    let b = match cached {
                        Some(b) => b,
                        None => img.data_block(at, field, block_len)?,
                    };
                    copy(out, &b, in_block, at)?;
                }
            }
            None => {
                // Past the full blocks: the tail lives in a fragment.
                let (at, field) = frags.entry(img, f.fragment)?;
                let b = img.fragment_block(at, field)?;
                let from = (f.frag_offset as usize)
                    .checked_add(in_block)
                    .ok_or(corrupt("fragment offset", at))?;
                copy(out, &b, from, at)?;
            }
        }
        done += n;
    }
    Ok(len)
}

fn copy(out: &mut [u8], block: &[u8], from: usize, at: u64) -> Result<()> {
    let src = from
        .checked_add(out.len())
        .and_then(|end| block.get(from..end))
        .ok_or(corrupt("file data runs past its block", at))?;
    out.copy_from_slice(src);
    Ok(())
}
