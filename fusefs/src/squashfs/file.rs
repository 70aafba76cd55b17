//! One regular file of a squashfs as a positional-read source: what lets a file
//! inside an image (the encrypted inner image of Apptainer's gocryptfs layout) be read
//! as an image in turn.

#![forbid(unsafe_code)]

use std::io;
use std::sync::Arc;

use super::error::{Error, Result};
use super::inode::FileKind;
use super::reader::{InodeId, Squashfs};
use crate::source::ReadAt;

pub struct File<R: ReadAt> {
    fs: Arc<Squashfs<R>>,
    id: InodeId,
    len: u64,
}

impl<R: ReadAt> File<R> {
    /// The regular file `id` of `fs`.
    pub fn open(fs: Arc<Squashfs<R>>, id: InodeId) -> Result<Self> {
        let a = fs.getattr(id)?;
        if a.kind != FileKind::File {
            return Err(Error::NotFile);
        }
        Ok(File {
            fs,
            id,
            len: a.size,
        })
    }
}

impl<R: ReadAt> ReadAt for File<R> {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if offset
            .checked_add(buf.len() as u64)
            .is_none_or(|e| e > self.len)
        {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let mut done = 0;
        while done < buf.len() {
            let n = self
                .fs
                .read(self.id, offset + done as u64, &mut buf[done..])
                .map_err(io::Error::other)?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            done += n;
        }
        Ok(())
    }
}
