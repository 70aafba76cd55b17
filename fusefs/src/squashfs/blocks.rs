//! The image's blocks: the byte source, its superblock, and the three block caches
//! (metadata, data, fragments). Everything that touches raw image bytes goes
//! through here, so every offset is checked in one place.

#![forbid(unsafe_code)]

use std::sync::Arc;

use super::cache::{Cache, Weight};
use super::compress::Compressor;
use super::error::{Error, Result, corrupt};
use super::pool::{BlockBuf, Pool};
use super::superblock::Superblock;
use crate::source::ReadAt;

/// Metadata blocks hold at most 8 KiB once decompressed.
pub const METADATA_SIZE: usize = 8192;
/// Block size fields: bit 24 marks a block stored uncompressed.
pub const BLOCK_UNCOMPRESSED: u32 = 1 << 24;
pub const BLOCK_SIZE_MASK: u32 = BLOCK_UNCOMPRESSED - 1;

thread_local! {
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// One decompressed metadata block and where the next one starts on disk.
pub struct MetaBlock {
    pub data: Box<[u8]>,
    /// Disk offset just past this block: the next block of the same table.
    pub next: u64,
}

impl Weight for MetaBlock {
    fn weight(&self) -> usize {
        self.data[..].len() + 64
    }
}

/// Memory bounds of the caches, in bytes.
#[derive(Debug, Clone)]
pub struct CacheSizes {
    pub metadata: usize,
    pub data: usize,
    pub fragments: usize,
    pub inodes: usize,
}

impl Default for CacheSizes {
    fn default() -> Self {
        Self {
            metadata: 32 << 20,
            data: 64 << 20,
            fragments: 32 << 20,
            inodes: 32 << 20,
        }
    }
}

pub struct Blocks<R> {
    pub src: R,
    pub sb: Superblock,
    meta: Cache<MetaBlock>,
    data: Cache<BlockBuf>,
    frags: Cache<BlockBuf>,
    /// Memory for the data and fragment blocks (one block size per image).
    pool: Arc<Pool>,
}

impl Weight for BlockBuf {
    fn weight(&self) -> usize {
        self.footprint() + 64
    }
}

impl<R: ReadAt> Blocks<R> {
    pub fn new(src: R, sb: Superblock, sizes: &CacheSizes) -> Self {
        let pool = Pool::new(sb.block_size as usize);
        Self {
            src,
            sb,
            meta: Cache::new(sizes.metadata),
            data: Cache::new(sizes.data),
            frags: Cache::new(sizes.fragments),
            pool,
        }
    }

    pub fn compressor(&self) -> Compressor {
        self.sb.compressor
    }

    /// Reads raw bytes, refusing anything past `bytes_used`.
    pub fn read_raw(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        match offset.checked_add(buf.len() as u64) {
            Some(end) if end <= self.sb.bytes_used => {}
            _ => return Err(corrupt("read past the end of the image", offset)),
        }
        self.src
            .read_exact_at(buf, offset)
            .map_err(|source| Error::Io { offset, source })
    }

    /// The metadata block starting at `pos`, which must end by `end` (the end of
    /// the table it belongs to).
    pub fn meta_block(&self, pos: u64, end: u64) -> Result<std::sync::Arc<MetaBlock>> {
        let block = self.meta.get_or_load(pos, || self.load_meta(pos))?;
        if block.next > end {
            return Err(corrupt("metadata block runs past its table", pos));
        }
        Ok(block)
    }

    fn load_meta(&self, pos: u64) -> Result<MetaBlock> {
        let mut h = [0u8; 2];
        self.read_raw(&mut h, pos)?;
        let h = u16::from_le_bytes(h);
        let size = usize::from(h & 0x7fff);
        let compressed = h & 0x8000 == 0;
        if size == 0 || size > METADATA_SIZE {
            return Err(corrupt("metadata block length", pos));
        }
        let mut raw = vec![0u8; size];
        self.read_raw(&mut raw, pos + 2)?;
        let data = if compressed {
            let mut out = vec![0u8; METADATA_SIZE];
            let n = self.decompress("metadata", pos, &raw, &mut out)?;
            out.truncate(n);
            out
        } else {
            raw
        };
        if data.is_empty() {
            return Err(corrupt("empty metadata block", pos));
        }
        Ok(MetaBlock {
            data: data.into_boxed_slice(),
            next: pos + 2 + size as u64,
        })
    }

    pub fn decompress(
        &self,
        kind: &'static str,
        pos: u64,
        src: &[u8],
        dst: &mut [u8],
    ) -> Result<usize> {
        self.compressor()
            .decompress(src, dst)
            .map_err(|detail| Error::Decompress {
                kind,
                offset: pos,
                detail,
            })
    }

    /// Reads the data block at `pos` with size field `field` into `out`, which must
    /// be filled exactly (its length is what the block must decompress to).
    pub fn read_block_into(
        &self,
        kind: &'static str,
        pos: u64,
        field: u32,
        out: &mut [u8],
    ) -> Result<()> {
        let size = (field & BLOCK_SIZE_MASK) as usize;
        if size > self.sb.block_size as usize {
            return Err(corrupt("data block larger than the block size", pos));
        }
        if field & BLOCK_UNCOMPRESSED != 0 {
            if size != out.len() {
                return Err(corrupt("uncompressed block of the wrong length", pos));
            }
            return self.read_raw(out, pos);
        }
        // Compressed bytes go through a per-thread scratch buffer: no allocation
        // and no zeroing per block on the sequential read path.
        let n = SCRATCH.with(|cell| {
            let mut raw = cell.borrow_mut();
            raw.resize(size, 0);
            self.read_raw(&mut raw, pos)?;
            self.decompress(kind, pos, &raw, out)
        })?;
        if n != out.len() {
            return Err(corrupt("data block decompresses to the wrong length", pos));
        }
        Ok(())
    }

    /// A data block, decompressed to exactly `len` bytes, through the data cache.
    pub fn data_block(&self, pos: u64, field: u32, len: usize) -> Result<Arc<BlockBuf>> {
        let b = self.data.get_or_load(pos, || {
            let mut out = self.pool.take(len);
            self.read_block_into("data", pos, field, &mut out)?;
            Ok(out)
        })?;
        if b[..].len() != len {
            return Err(corrupt(
                "data block shared by files of different lengths",
                pos,
            ));
        }
        Ok(b)
    }

    /// A data block if it is already cached.
    pub fn cached_data_block(&self, pos: u64) -> Option<Arc<BlockBuf>> {
        self.data.peek(pos)
    }

    /// A fragment block (whatever length it decompresses to, up to the block size).
    pub fn fragment_block(&self, pos: u64, field: u32) -> Result<Arc<BlockBuf>> {
        self.frags.get_or_load(pos, || {
            let size = (field & BLOCK_SIZE_MASK) as usize;
            let bs = self.sb.block_size as usize;
            if size > bs {
                return Err(corrupt("fragment block larger than the block size", pos));
            }
            if field & BLOCK_UNCOMPRESSED != 0 {
                let mut out = self.pool.take(size);
                self.read_raw(&mut out, pos)?;
                return Ok(out);
            }
            let mut out = self.pool.take(bs);
            let n = SCRATCH.with(|cell| {
                let mut raw = cell.borrow_mut();
                raw.resize(size, 0);
                self.read_raw(&mut raw, pos)?;
                self.decompress("fragment", pos, &raw, &mut out)
            })?;
            out.truncate(n);
            Ok(out)
        })
    }
}
