//! Directory listings: runs of up to 256 entries, each run led by a header naming
//! the inode block its entries live in. The extended directory inode's index
//! says where header runs begin at metadata block starts, so a lookup or a resumed
//! readdir jumps close to its target instead of scanning from the start.

#![forbid(unsafe_code)]

use super::blocks::{Blocks, METADATA_SIZE};
use super::error::{Result, corrupt};
use super::inode::{DirInfo, FileKind, MAX_NAME};
use super::metadata::Cursor;
use crate::source::ReadAt;

/// At most this many entries follow one header.
const MAX_RUN: u32 = 256;

/// One stored directory entry.
#[derive(Debug, Clone)]
pub struct RawEntry {
    pub name: Vec<u8>,
    /// Inode reference (block << 16 | offset).
    pub iref: u64,
    /// The inode number the entry claims.
    pub number: u32,
    pub kind: FileKind,
    /// Resume cookie: passing it back continues after this entry.
    pub cookie: u64,
}

struct Run {
    /// Listing offset of the run's header.
    at: u64,
    count: u32,
    done: u32,
    start: u32,
    base: u32,
}

/// Iterates a directory listing from a position.
pub struct Listing<'a, R> {
    c: Cursor<'a, R>,
    /// Listing offset of the cursor.
    pos: u64,
    len: u64,
    run: Option<Run>,
}

/// Cookie for "next entry is number `idx` of the run whose header is at `at`".
fn cookie(at: u64, idx: u32) -> u64 {
    ((at << 9) | u64::from(idx)) + 1
}

impl<'a, R: ReadAt> Listing<'a, R> {
    /// A listing positioned at the resume cookie `cookie` (0: the beginning).
    pub fn resume(img: &'a Blocks<R>, dir: &DirInfo, dir_end: u64, cookie: u64) -> Result<Self> {
        let (at, idx) = match cookie.checked_sub(1) {
            None => (0, 0),
            Some(c) => (c >> 9, (c & 511) as u32),
        };
        let len = dir.listing_len();
        let mut l = Self::seek(img, dir, dir_end, at.min(len))?;
        if idx > 0 && l.pos < l.len {
            l.read_header()?;
            for _ in 0..idx.min(MAX_RUN) {
                if l.next_entry()?.is_none() {
                    break;
                }
            }
        }
        Ok(l)
    }

    /// A listing positioned at listing offset `target`, which must be a header.
    fn seek(img: &'a Blocks<R>, dir: &DirInfo, dir_end: u64, target: u64) -> Result<Self> {
        let best = dir
            .index
            .iter()
            .filter(|i| u64::from(i.index) <= target)
            .max_by_key(|i| i.index);
        let (base_pos, skip) = match best {
            Some(i) => (i.index, u64::from(i.start)),
            None => (0, u64::from(dir.start_block)),
        };
        let offset = (base_pos as usize + usize::from(dir.offset)) % METADATA_SIZE;
        Self::from(img, dir, dir_end, skip, offset, u64::from(base_pos), target)
    }

    /// A listing positioned where a lookup of `name` should start scanning.
    pub fn for_name(img: &'a Blocks<R>, dir: &DirInfo, dir_end: u64, name: &[u8]) -> Result<Self> {
        // The index is sorted like the entries: take the last one not after `name`.
        let mut best = None;
        for i in dir.index.iter() {
            if &*i.name > name {
                break;
            }
            best = Some(i);
        }
        match best {
            Some(i) if u64::from(i.index) <= dir.listing_len() => {
                let offset = (i.index as usize + usize::from(dir.offset)) % METADATA_SIZE;
                let at = u64::from(i.index);
                Self::from(img, dir, dir_end, u64::from(i.start), offset, at, at)
            }
            _ => Self::seek(img, dir, dir_end, 0),
        }
    }

    fn from(
        img: &'a Blocks<R>,
        dir: &DirInfo,
        dir_end: u64,
        block: u64,
        offset: usize,
        at: u64,
        target: u64,
    ) -> Result<Self> {
        let table = img.sb.directory_table;
        let pos = table
            .checked_add(block)
            .ok_or(corrupt("directory block offset", table))?;
        let mut c = Cursor::new(img, pos, offset, dir_end);
        let len = dir.listing_len();
        if target > at && target <= len {
            c.skip(target - at)?;
        }
        Ok(Self {
            c,
            pos: target.max(at).min(len),
            len,
            run: None,
        })
    }

    fn take(&mut self, n: u64) -> Result<()> {
        self.pos = self
            .pos
            .checked_add(n)
            .filter(|&p| p <= self.len)
            .ok_or(corrupt(
                "directory entry runs past the listing",
                self.c.position().0,
            ))?;
        Ok(())
    }

    fn read_header(&mut self) -> Result<()> {
        let at = self.pos;
        self.take(12)?;
        let count = self.c.u32()?;
        let start = self.c.u32()?;
        let base = self.c.u32()?;
        if count >= MAX_RUN {
            return Err(corrupt("directory header count", self.c.position().0));
        }
        self.run = Some(Run {
            at,
            count: count + 1,
            done: 0,
            start,
            base,
        });
        Ok(())
    }

    /// The next entry, or `None` at the end of the listing.
    pub fn next_entry(&mut self) -> Result<Option<RawEntry>> {
        let need_header = self.run.as_ref().is_none_or(|r| r.done >= r.count);
        if need_header {
            if self.pos >= self.len {
                return Ok(None);
            }
            self.read_header()?;
        }
        let Some(run) = self.run.as_ref() else {
            return Ok(None);
        };
        let (start, base) = (run.start, run.base);
        self.take(8)?;
        let e: [u8; 8] = self.c.array()?;
        let offset = super::le::u16(&e, 0);
        let delta = super::le::u16(&e, 2) as i16;
        let kind = FileKind::from_basic(super::le::u16(&e, 4))
            .ok_or(corrupt("directory entry type", self.c.position().0))?;
        let name_len = u64::from(super::le::u16(&e, 6)) + 1;
        if name_len > u64::from(MAX_NAME) {
            return Err(corrupt(
                "directory entry name too long",
                self.c.position().0,
            ));
        }
        self.take(name_len)?;
        let name = self.c.bytes(name_len as usize)?;
        if name.contains(&b'/') || name.contains(&0) || name == b"." || name == b".." {
            return Err(corrupt("directory entry name", self.c.position().0));
        }
        if usize::from(offset) >= METADATA_SIZE {
            return Err(corrupt("directory entry inode offset", self.c.position().0));
        }
        let pos = self.pos;
        let Some(run) = self.run.as_mut() else {
            return Ok(None);
        };
        run.done += 1;
        let next = if run.done < run.count {
            cookie(run.at, run.done)
        } else {
            cookie(pos, 0)
        };
        Ok(Some(RawEntry {
            name,
            iref: (u64::from(start) << 16) | u64::from(offset),
            number: base.wrapping_add_signed(i32::from(delta)),
            kind,
            cookie: next,
        }))
    }
}

impl<R: ReadAt> Iterator for Listing<'_, R> {
    type Item = Result<RawEntry>;
    fn next(&mut self) -> Option<Self::Item> {
        match self.next_entry() {
            Ok(Some(e)) => Some(Ok(e)),
            Ok(None) => None,
            Err(e) => {
                // Stop after an error: a corrupt listing must not loop.
                self.pos = self.len;
                self.run = None;
                Some(Err(e))
            }
        }
    }
}
