//! Positional-read byte sources.
//!
//! Every layer of the read path (a partition inside a SIF, the LUKS2 decrypting
//! view of it, the squashfs reader on top) reads by offset through `&self`. There is
//! no shared cursor and no `Read + Seek` behind a mutex, so any number of threads
//! can read at once.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use crate::memory::mapping::{MappedBytes, Mapping};

/// A thread-safe source of bytes read by absolute offset.
pub trait ReadAt: Send + Sync {
    /// Total length of the source in bytes.
    fn len(&self) -> u64;

    /// True when the source holds no bytes.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fill `buf` with the bytes at `offset`. A read that would go past
    /// [`ReadAt::len`] fails with [`io::ErrorKind::UnexpectedEof`] and must not
    /// return partial data as success.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;

    /// Runs `f` on the bytes `[offset, offset + len)` where they lie, when the
    /// source is a mapped file: a reader that transforms every byte anyway
    /// (decryption) then makes one pass over them instead of a copy and a pass.
    /// `None` when the source cannot do it, or could not complete it (the file
    /// shrank meanwhile): whatever `f` wrote is then to be redone with a read.
    fn read_in_place(
        &self,
        offset: u64,
        len: usize,
        f: &mut dyn FnMut(MappedBytes<'_>),
    ) -> Option<()> {
        let _ = (offset, len, f);
        None
    }

    /// Fills `bufs`, one after the other, with the consecutive bytes at `offset`, as
    /// one read (a file does it in one system call): for a reader that needs a range
    /// split over buffers of its own, like whole sectors around a caller's bytes.
    fn read_vectored_exact_at(&self, bufs: &mut [&mut [u8]], offset: u64) -> io::Result<()> {
        let mut at = offset;
        for b in bufs.iter_mut() {
            self.read_exact_at(b, at)?;
            at += b.len() as u64;
        }
        Ok(())
    }
}

/// Checks that `[offset, offset + n)` lies inside a source of length `len`.
pub fn check_range(len: u64, offset: u64, n: usize) -> io::Result<()> {
    match offset.checked_add(n as u64) {
        Some(end) if end <= len => Ok(()),
        _ => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("read of {n} bytes at offset {offset} past the end ({len} bytes)"),
        )),
    }
}

/// A pointer-like wrapper of a source reads as the source itself, every method
/// passed through (a method left to its default would lose the inner source's
/// own version, like a file's single-call vectored read).
macro_rules! forward_read_at {
    ($($wrapper:ty),*) => {$(
        impl<T: ReadAt + ?Sized> ReadAt for $wrapper {
            fn len(&self) -> u64 {
                (**self).len()
            }
            fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
                (**self).read_exact_at(buf, offset)
            }
            fn read_vectored_exact_at(
                &self,
                bufs: &mut [&mut [u8]],
                offset: u64,
            ) -> io::Result<()> {
                (**self).read_vectored_exact_at(bufs, offset)
            }
            fn read_in_place(
                &self,
                offset: u64,
                len: usize,
                f: &mut dyn FnMut(MappedBytes<'_>),
            ) -> Option<()> {
                (**self).read_in_place(offset, len, f)
            }
        }
    )*};
}

forward_read_at!(Arc<T>, &T, Box<T>);

/// In-memory bytes: tests, fuzzing, and small decoded objects.
impl ReadAt for [u8] {
    fn len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        check_range(<[u8]>::len(self) as u64, offset, buf.len())?;
        let start = offset as usize;
        buf.copy_from_slice(&self[start..start + buf.len()]);
        Ok(())
    }
}

impl ReadAt for Vec<u8> {
    fn len(&self) -> u64 {
        self.as_slice().len() as u64
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.as_slice().read_exact_at(buf, offset)
    }
}

/// A whole file read with `pread(2)`. The length is fixed when opened: images are
/// immutable while in use.
#[derive(Debug)]
pub struct FileSource {
    file: File,
    len: u64,
    /// Part of the file mapped as well, and where that part starts, for
    /// [`ReadAt::read_in_place`] (see [`FileSource::mapped`]).
    map: Option<(u64, Mapping)>,
}

impl FileSource {
    pub fn open(path: impl AsRef<Path>) -> io::Result<Self> {
        Self::new(File::open(path)?)
    }

    pub fn new(file: File) -> io::Result<Self> {
        let len = file.metadata()?.len();
        Ok(Self {
            file,
            len,
            map: None,
        })
    }

    /// As [`FileSource::new`], and the bytes `[offset, offset + len)` of the file
    /// are mapped too, for readers that want to read them in place
    /// ([`ReadAt::read_in_place`]); reads still use `pread(2)`. Where they cannot be
    /// mapped, the file is read as by [`FileSource::new`].
    ///
    /// # Safety
    /// As [`Mapping::new`]: this process must not write the file in place while
    /// the source lives.
    pub unsafe fn mapped(file: File, offset: u64, len: u64) -> io::Result<Self> {
        let mut s = Self::new(file)?;
        if offset.checked_add(len).is_some_and(|end| end <= s.len) {
            // SAFETY: the caller's promise, passed on.
            s.map = unsafe { Mapping::new(&s.file, offset, len) }
                .ok()
                .map(|m| (offset, m));
        }
        Ok(s)
    }

    /// The open file.
    pub fn file(&self) -> &File {
        &self.file
    }
}

impl ReadAt for FileSource {
    fn len(&self) -> u64 {
        self.len
    }
    fn read_in_place(
        &self,
        offset: u64,
        len: usize,
        f: &mut dyn FnMut(MappedBytes<'_>),
    ) -> Option<()> {
        let (start, map) = self.map.as_ref()?;
        let at = usize::try_from(offset.checked_sub(*start)?).ok()?;
        map.read_with(at, len, f)
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        check_range(self.len, offset, buf.len())?;
        self.file.read_exact_at(buf, offset)
    }
    fn read_vectored_exact_at(&self, bufs: &mut [&mut [u8]], offset: u64) -> io::Result<()> {
        use nix::sys::uio::preadv;
        use std::io::IoSliceMut;
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        check_range(self.len, offset, total)?;
        // The usual two or three parts (a block and the partial sectors around it)
        // take no allocation: musl's allocator hands a page back to the kernel
        // when its last small object is freed, and that munmap's TLB shootdown
        // interrupted the other core on every read.
        const INLINE: usize = 4;
        let parts = bufs.len();
        if parts <= 1024 {
            let offset = offset as libc::off_t;
            let n = if parts <= INLINE {
                let mut inline: [IoSliceMut<'_>; INLINE] =
                    std::array::from_fn(|_| IoSliceMut::new(&mut []));
                for (v, b) in inline.iter_mut().zip(bufs.iter_mut()) {
                    *v = IoSliceMut::new(b);
                }
                preadv(&self.file, &mut inline[..parts], offset)
            } else {
                let mut heap: Vec<IoSliceMut<'_>> =
                    bufs.iter_mut().map(|b| IoSliceMut::new(b)).collect();
                preadv(&self.file, &mut heap, offset)
            };
            if n == Ok(total) {
                return Ok(());
            }
        }
        // A short read (interrupted, or the file shrank) or an error: again, one
        // buffer at a time, which retries and reports as `read_exact_at` does.
        let mut at = offset;
        for b in bufs.iter_mut() {
            self.file.read_exact_at(b, at)?;
            at += b.len() as u64;
        }
        Ok(())
    }
}

/// A whole file mapped into memory. Reads are copies out of the page cache with no
/// system call.
#[derive(Debug)]
pub struct MmapSource {
    map: memmap2::Mmap,
}

impl MmapSource {
    pub fn open(path: impl AsRef<Path>) -> io::Result<Self> {
        Self::new(&File::open(path)?)
    }

    pub fn new(file: &File) -> io::Result<Self> {
        // SAFETY: the mapping is read-only and private to this process. Images are
        // treated as immutable while open; if another process truncates the file
        // anyway, access past the new end raises SIGBUS, which is the documented
        // hazard of file mappings and the reason `FileSource` exists as well.
        let map = unsafe { memmap2::MmapOptions::new().map(file)? };
        Ok(Self { map })
    }

    /// The mapped bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }
}

impl ReadAt for MmapSource {
    fn len(&self) -> u64 {
        self.map.len() as u64
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.bytes().read_exact_at(buf, offset)
    }
}

/// The window `[offset, offset + len)` of another source, seen as a source of its own
/// starting at 0: a partition inside a SIF, a data segment inside a LUKS2 volume.
#[derive(Debug, Clone)]
pub struct Slice<R> {
    inner: R,
    offset: u64,
    len: u64,
}

impl<R: ReadAt> Slice<R> {
    /// Fails when the window does not lie inside `inner`.
    pub fn new(inner: R, offset: u64, len: u64) -> io::Result<Self> {
        match offset.checked_add(len) {
            Some(end) if end <= inner.len() => Ok(Self { inner, offset, len }),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "window of {len} bytes at offset {offset} lies outside a source of {} bytes",
                    inner.len()
                ),
            )),
        }
    }

    pub fn inner(&self) -> &R {
        &self.inner
    }

    pub fn offset(&self) -> u64 {
        self.offset
    }
}

impl<R: ReadAt> ReadAt for Slice<R> {
    fn len(&self) -> u64 {
        self.len
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        check_range(self.len, offset, buf.len())?;
        self.inner.read_exact_at(buf, self.offset + offset)
    }
    fn read_vectored_exact_at(&self, bufs: &mut [&mut [u8]], offset: u64) -> io::Result<()> {
        check_range(self.len, offset, bufs.iter().map(|b| b.len()).sum())?;
        self.inner
            .read_vectored_exact_at(bufs, self.offset + offset)
    }
    fn read_in_place(
        &self,
        offset: u64,
        len: usize,
        f: &mut dyn FnMut(MappedBytes<'_>),
    ) -> Option<()> {
        check_range(self.len, offset, len).ok()?;
        self.inner.read_in_place(self.offset + offset, len, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn slices_read_inside_and_refuse_outside() {
        let data: Vec<u8> = (0..=255u8).collect();
        let s = Slice::new(data.clone(), 10, 20).unwrap();
        let mut buf = [0u8; 5];
        s.read_exact_at(&mut buf, 15).unwrap();
        assert_eq!(buf, [25, 26, 27, 28, 29]);
        assert_eq!(
            s.read_exact_at(&mut buf, 16).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
        assert!(s.read_exact_at(&mut buf, u64::MAX).is_err());
        assert!(Slice::new(data.clone(), 250, 7).is_err());
        assert!(Slice::new(data, u64::MAX, 2).is_err());
    }

    /// A temporary file of 10,000 patterned bytes (`step` varies the pattern).
    fn patterned_file(step: u32) -> (tempfile::NamedTempFile, Vec<u8>) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * step % 251) as u8).collect();
        f.write_all(&data).unwrap();
        (f, data)
    }

    #[test]
    fn file_and_mmap_agree() {
        let (f, data) = patterned_file(7);
        let a = FileSource::open(f.path()).unwrap();
        let b = MmapSource::open(f.path()).unwrap();
        assert_eq!(a.len(), 10_000);
        assert_eq!(b.len(), 10_000);
        let (mut x, mut y) = ([0u8; 333], [0u8; 333]);
        a.read_exact_at(&mut x, 4321).unwrap();
        b.read_exact_at(&mut y, 4321).unwrap();
        assert_eq!(x, y);
        assert_eq!(&x[..], &data[4321..4321 + 333]);
        assert!(a.read_exact_at(&mut x, 9_800).is_err());
        assert!(b.read_exact_at(&mut x, 9_800).is_err());
    }

    /// A vectored read fills its buffers with consecutive bytes, through a file
    /// (preadv), a slice of it and memory alike, and refuses to run past the end.
    #[test]
    fn vectored_reads_fill_buffers_in_order() {
        let (f, data) = patterned_file(13);
        let file = FileSource::open(f.path()).unwrap();
        let slice = Slice::new(FileSource::open(f.path()).unwrap(), 1000, 8000).unwrap();
        let sources: [(&dyn ReadAt, &[u8]); 3] =
            [(&file, &data), (&slice, &data[1000..9000]), (&data, &data)];
        for (src, bytes) in sources {
            let (mut a, mut b, mut c) = ([0u8; 7], vec![0u8; 4096], [0u8; 1]);
            src.read_vectored_exact_at(&mut [&mut a, &mut b, &mut c], 333)
                .unwrap();
            assert_eq!(a, bytes[333..340]);
            assert_eq!(b, bytes[340..4436]);
            assert_eq!(c, bytes[4436..4437]);
            let end = src.len() - 5;
            let err = src
                .read_vectored_exact_at(&mut [&mut a[..3], &mut c], end)
                .map(|_| ());
            assert!(err.is_ok());
            let err = src.read_vectored_exact_at(&mut [&mut a, &mut c], end);
            assert_eq!(err.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        }
    }
}
