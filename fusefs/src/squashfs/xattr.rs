//! Extended attributes: an id table (one entry per distinct attribute set) that
//! points into a key/value area. Values too large to repeat are stored once and
//! referenced "out of line" by later sets.

#![forbid(unsafe_code)]

use super::blocks::Blocks;
use super::error::{Error, Result, corrupt};
use super::metadata::Cursor;
use super::table::Table;
use crate::source::ReadAt;

/// Linux limits: a value holds at most 64 KiB, a name 255 bytes, a list 64 KiB.
const MAX_VALUE: u32 = 65536;
const MAX_NAME: u16 = 255;
const MAX_COUNT: u32 = 65536;
/// Flag in the type field: the value is a reference to a value stored elsewhere.
const OUT_OF_LINE: u16 = 0x100;

pub struct Xattrs {
    kv_start: u64,
    kv_end: u64,
    ids: Table,
}

impl Xattrs {
    pub fn open<R: ReadAt>(img: &Blocks<R>) -> Result<Option<Self>> {
        if !img.sb.has_xattrs() {
            return Ok(None);
        }
        let at = img.sb.xattr_table;
        let mut h = [0u8; 16];
        img.read_raw(&mut h, at)?;
        let kv_start = super::le::u64(&h, 0);
        let count = super::le::u32(&h, 8);
        let ids = Table::open(img, at + 16, at, u64::from(count), 16)?;
        let kv_end = ids.first_block().unwrap_or(at);
        if kv_start > kv_end {
            return Err(corrupt("xattr value area", at));
        }
        Ok(Some(Self {
            kv_start,
            kv_end,
            ids,
        }))
    }

    /// All (full name, value) pairs of attribute set `idx`.
    pub fn get_all<R: ReadAt>(&self, img: &Blocks<R>, idx: u32) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let e: [u8; 16] = self.ids.entry(img, u64::from(idx))?;
        let xref = super::le::u64(&e, 0);
        let count = super::le::u32(&e, 8);
        if count > MAX_COUNT {
            return Err(Error::Limit("too many extended attributes on one inode"));
        }
        let mut c = self.cursor(img, xref)?;
        let mut out = Vec::new();
        let mut total = 0usize;
        for _ in 0..count {
            let t = c.u16()?;
            let n = c.u16()?;
            if n > MAX_NAME {
                return Err(corrupt("xattr name too long", self.kv_start));
            }
            let prefix: &[u8] = match t & 0xff {
                0 => b"user.",
                1 => b"trusted.",
                2 => b"security.",
                _ => return Err(corrupt("xattr namespace", self.kv_start)),
            };
            let mut name = prefix.to_vec();
            name.extend_from_slice(&c.bytes(usize::from(n))?);
            let vsize = c.u32()?;
            let value = if t & OUT_OF_LINE != 0 {
                if vsize != 8 {
                    return Err(corrupt("out-of-line xattr reference", self.kv_start));
                }
                let r = c.u64()?;
                let mut v = self.cursor(img, r)?;
                let size = v.u32()?;
                value(&mut v, size)?
            } else {
                value(&mut c, vsize)?
            };
            total += name.len() + value.len();
            if total > 16 * MAX_VALUE as usize {
                return Err(Error::Limit("extended attributes too large"));
            }
            out.push((name, value));
        }
        Ok(out)
    }

    fn cursor<'a, R: ReadAt>(&self, img: &'a Blocks<R>, r: u64) -> Result<Cursor<'a, R>> {
        let pos = self
            .kv_start
            .checked_add(r >> 16)
            .filter(|&p| p < self.kv_end)
            .ok_or(corrupt("xattr reference", self.kv_start))?;
        Ok(Cursor::new(img, pos, (r & 0xffff) as usize, self.kv_end))
    }
}

fn value<R: ReadAt>(c: &mut Cursor<'_, R>, size: u32) -> Result<Vec<u8>> {
    if size > MAX_VALUE {
        return Err(corrupt("xattr value too large", c.position().0));
    }
    c.bytes(size as usize)
}
