//! gocryptfs's file content format, and a reader that decrypts it on demand.
//!
//! A file is an 18-byte header (the format version 2, big-endian, then a random
//! 16-byte file ID) followed by blocks of up to 4096 plaintext bytes, each stored as
//! a 16-byte nonce, the ciphertext and a 16-byte GCM tag, the last one short. Block n
//! starts at 18 + n · 4128 and is authenticated with n (big-endian) and the file ID
//! as its associated data, so no block can be moved, swapped between files or cut
//! An empty file has no header. gocryptfs reads a whole stored block of zero bytes as
//! a hole (zeros); veil refuses it like a block that fails authentication, because
//! the outer squashfs is not authenticated and anyone could zero a block of an image
//! (Apptainer writes the inner image sequentially, so it has no holes). What the
//! format cannot show is a file cut at a block boundary: the length is not
//! authenticated (a squashfs cut short fails on its own checks).

#![forbid(unsafe_code)]

use std::io;
use std::sync::Arc;

use super::error::{Error, Result};
use super::keys::ContentKey;
use crate::memory::mapping::MappedBytes;
use crate::source::ReadAt;

/// The file header's length.
pub const HEADER_LEN: u64 = 18;
/// Plaintext bytes per block.
pub const BLOCK: u64 = 4096;
const NONCE: u64 = 16;
const TAG: u64 = 16;
/// A whole stored block.
const STORED: u64 = NONCE + BLOCK + TAG;

/// The plaintext length of a file whose stored length is `stored`.
pub fn plain_size(stored: u64) -> Result<u64> {
    if stored == 0 || stored == HEADER_LEN {
        return Ok(0);
    }
    if stored < HEADER_LEN {
        return Err(Error::Corrupt(format!(
            "{stored} bytes, shorter than a file header"
        )));
    }
    let body = stored - HEADER_LEN;
    let blocks = body.div_ceil(STORED);
    let last = body - (blocks - 1) * STORED;
    if last <= NONCE + TAG {
        return Err(Error::Corrupt(format!(
            "it ends in a block of {last} bytes, which holds no data (truncated?)"
        )));
    }
    Ok(body - blocks * (NONCE + TAG))
}

/// A decrypted view of an encrypted file.
pub struct DecryptedFile<R> {
    src: R,
    key: Arc<ContentKey>,
    file_id: [u8; 16],
    len: u64,
}

impl<R: ReadAt> DecryptedFile<R> {
    /// Opens the encrypted file `src` (its header and length are checked here; blocks
    /// when they are read). A block that fails is an I/O error of the read, which the
    /// FUSE server reports (once) and turns into EIO.
    pub fn open(src: R, key: Arc<ContentKey>) -> Result<Self> {
        let len = plain_size(src.len())?;
        let mut file_id = [0u8; 16];
        if len > 0 {
            let mut header = [0u8; HEADER_LEN as usize];
            src.read_exact_at(&mut header, 0)?;
            let version = u16::from_be_bytes([header[0], header[1]]);
            if version != 2 {
                return Err(Error::Corrupt(format!(
                    "file header version {version} (gocryptfs writes 2)"
                )));
            }
            file_id.copy_from_slice(&header[2..]);
            if file_id == [0u8; 16] {
                return Err(Error::Corrupt("a file ID of zeros".into()));
            }
        }
        Ok(DecryptedFile {
            src,
            key,
            file_id,
            len,
        })
    }

    /// Decrypts stored block `n` (`stored`: its bytes, nonce to tag) into `out`, which
    /// is as long as its plaintext.
    fn decrypt_block(&self, n: u64, stored: &Stored<'_>, out: &mut [u8]) -> io::Result<()> {
        let plain = stored.len() - (NONCE + TAG) as usize;
        debug_assert_eq!(out.len(), plain);
        let bad = |why: &str| io::Error::other(format!("gocryptfs block {n} {why}"));
        let mut nonce = [0u8; NONCE as usize];
        let mut tag = [0u8; TAG as usize];
        stored.copy_out(0, &mut nonce);
        stored.copy_out(NONCE as usize + plain, &mut tag);
        if nonce == [0u8; NONCE as usize] {
            return Err(bad(if stored.is_zero() {
                "is all zeros (a hole, or zeroed: not accepted as data)"
            } else {
                "has an all-zero nonce"
            }));
        }
        let mut aad = [0u8; 24];
        aad[..8].copy_from_slice(&n.to_be_bytes());
        aad[8..].copy_from_slice(&self.file_id);
        let r = match stored {
            Stored::Bytes(b) => {
                let ct = &b[NONCE as usize..NONCE as usize + plain];
                self.key.0.decrypt(&nonce, &aad, ct, out, &tag)
            }
            Stored::Mapped(m) => {
                self.key
                    .0
                    .decrypt_mapped(&nonce, &aad, m.sub(NONCE as usize, plain), out, &tag)
            }
        };
        r.map_err(|_| bad("fails authentication (damaged or tampered with)"))
    }

    /// Decrypts `blocks`, stored in `stored`, into `buf`, which starts at plaintext
    /// offset `offset` in the first of them.
    fn decrypt_range(
        &self,
        stored: &Stored<'_>,
        blocks: std::ops::RangeInclusive<u64>,
        offset: u64,
        buf: &mut [u8],
    ) -> io::Result<()> {
        let first = *blocks.start();
        // A partial block's plaintext passes through here: wiped however this ends.
        // Made only for one: wiping it is 4096 volatile byte stores, which a read of
        // whole blocks should not pay.
        let mut block: Option<zeroize::Zeroizing<[u8; BLOCK as usize]>> = None;
        let mut at = offset;
        let mut done = 0usize;
        for n in blocks {
            let s = ((n - first) * STORED) as usize;
            let e = (s + STORED as usize).min(stored.len());
            let one = stored.sub(s, e - s);
            let plain_len = e - s - (NONCE + TAG) as usize;
            let within = (at - n * BLOCK) as usize;
            let want = (plain_len - within).min(buf.len() - done);
            if within == 0 && want == plain_len {
                // A whole block: straight into the caller's buffer.
                self.decrypt_block(n, &one, &mut buf[done..done + want])?;
            } else {
                let block =
                    block.get_or_insert_with(|| zeroize::Zeroizing::new([0; BLOCK as usize]));
                self.decrypt_block(n, &one, &mut block[..plain_len])?;
                buf[done..done + want].copy_from_slice(&block[within..within + want]);
            }
            done += want;
            at += want as u64;
        }
        Ok(())
    }
}

/// Stored blocks: read into a buffer, or in a file mapping (read in place, each
/// byte once, by the cipher).
enum Stored<'a> {
    Bytes(&'a [u8]),
    Mapped(MappedBytes<'a>),
}

impl<'a> Stored<'a> {
    fn len(&self) -> usize {
        match self {
            Stored::Bytes(b) => <[u8]>::len(b),
            Stored::Mapped(m) => m.len(),
        }
    }

    fn sub(&self, start: usize, len: usize) -> Stored<'a> {
        match self {
            Stored::Bytes(b) => Stored::Bytes(&b[start..start + len]),
            Stored::Mapped(m) => Stored::Mapped(m.sub(start, len)),
        }
    }

    /// Copies the bytes at `start` into `dst`.
    fn copy_out(&self, start: usize, dst: &mut [u8]) {
        match self {
            Stored::Bytes(b) => dst.copy_from_slice(&b[start..start + dst.len()]),
            Stored::Mapped(m) => m.sub(start, dst.len()).copy_to(dst),
        }
    }

    /// Whether every byte is zero (for the message of a block that failed).
    fn is_zero(&self) -> bool {
        match self {
            Stored::Bytes(b) => b.iter().all(|&x| x == 0),
            Stored::Mapped(m) => {
                let mut v = vec![0u8; m.len()];
                m.copy_to(&mut v);
                v.iter().all(|&x| x == 0)
            }
        }
    }
}

impl<R: ReadAt> ReadAt for DecryptedFile<R> {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&e| e <= self.len)
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        if buf.is_empty() {
            return Ok(());
        }
        let first = offset / BLOCK;
        let last = (end - 1) / BLOCK;
        // The stored blocks of the range, read at once. (`len` came from the source's
        // length, so these fit; checked all the same.)
        let range = || -> Option<(u64, u64)> {
            let from = HEADER_LEN.checked_add(first.checked_mul(STORED)?)?;
            let to = HEADER_LEN
                .checked_add(last.checked_add(1)?.checked_mul(STORED)?)?
                .min(self.src.len());
            (to > from).then_some((from, to))
        };
        let (from, to) = range().ok_or_else(|| io::Error::from(io::ErrorKind::InvalidData))?;
        let len = usize::try_from(to - from).map_err(|_| io::ErrorKind::InvalidData)?;
        // A mapped file: straight from the page cache into `buf`, with no copy.
        // Should the mapping not serve it (the file shrank), it is read again below.
        let mut result = Ok(());
        let in_place = self.src.read_in_place(from, len, &mut |m| {
            result = self.decrypt_range(&Stored::Mapped(m), first..=last, offset, buf);
        });
        if in_place.is_some() {
            return result;
        }
        with_scratch(len, |stored| {
            self.src.read_exact_at(stored, from)?;
            self.decrypt_range(&Stored::Bytes(stored), first..=last, offset, buf)
        })
    }
}

/// The most stored bytes a thread keeps between reads (squashfs reads its blocks,
/// at most 1 MiB, through here; a larger read gets a buffer of its own, freed
/// after it).
const SCRATCH_KEEP: usize = 1 << 20;

thread_local! {
    /// Where each thread reads stored blocks: ciphertext, not secret.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` on a buffer of `len` bytes (of unspecified content): this thread's
/// scratch buffer, grown as needed, rather than an allocation per read.
fn with_scratch<T>(len: usize, f: impl FnOnce(&mut [u8]) -> T) -> T {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut v) if len <= SCRATCH_KEEP => {
            if v.len() < len {
                v.resize(len, 0);
            }
            f(&mut v[..len])
        }
        // Larger, or a read nested in another (a stack of decrypting sources).
        _ => f(&mut vec![0u8; len]),
    })
}

/// Encrypts `plain` as gocryptfs stores a file: a header with `file_id`, then each
/// block under a fresh random nonce.
pub(crate) fn seal(key: &ContentKey, file_id: [u8; 16], plain: &[u8]) -> Result<Vec<u8>> {
    if plain.is_empty() {
        return Ok(Vec::new());
    }
    let blocks = plain.len().div_ceil(BLOCK as usize);
    let mut out = Vec::with_capacity(HEADER_LEN as usize + plain.len() + blocks * 32);
    out.extend_from_slice(&2u16.to_be_bytes());
    out.extend_from_slice(&file_id);
    for (n, chunk) in plain.chunks(BLOCK as usize).enumerate() {
        seal_block(key, n as u64, &file_id, chunk, &mut out)?;
    }
    Ok(out)
}

/// Appends block `n` of the file `file_id` holding `plain` (at most [`BLOCK`] bytes)
/// to `out`: a fresh random nonce, the ciphertext and the tag.
pub(crate) fn seal_block(
    key: &ContentKey,
    n: u64,
    file_id: &[u8; 16],
    plain: &[u8],
    out: &mut Vec<u8>,
) -> Result<()> {
    debug_assert!(!plain.is_empty() && plain.len() <= BLOCK as usize);
    let mut nonce = [0u8; NONCE as usize];
    // (A nonce of zeros is refused when read; random bytes make one with probability
    // 2^-128, and a retry costs nothing.)
    while nonce == [0u8; NONCE as usize] {
        crate::secret::fill_random(&mut nonce).map_err(|e| Error::Crypto(e.to_string()))?;
    }
    let mut aad = [0u8; 24];
    aad[..8].copy_from_slice(&n.to_be_bytes());
    aad[8..].copy_from_slice(file_id);
    let start = out.len() + NONCE as usize;
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plain);
    let tag = key
        .0
        .encrypt_in_place(&nonce, &aad, &mut out[start..])
        .map_err(|e| Error::Crypto(e.to_string()))?;
    out.extend_from_slice(&tag);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes in memory as a source.
    pub(crate) struct Mem(pub Vec<u8>);

    impl ReadAt for Mem {
        fn len(&self) -> u64 {
            self.0.len() as u64
        }
        fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
            crate::source::check_range(self.len(), offset, buf.len())?;
            buf.copy_from_slice(&self.0[offset as usize..offset as usize + buf.len()]);
            Ok(())
        }
    }

    #[test]
    fn sealed_files_read_back_at_any_range_and_damage_is_an_error() {
        let key = Arc::new(super::super::keys::fixed_key(&[9u8; 32]));
        let plain: Vec<u8> = (0..3 * 4096 + 100).map(|i| (i * 7 % 251) as u8).collect();
        let stored = seal(&key, [5u8; 16], &plain).unwrap();
        assert_eq!(stored.len(), 18 + 3 * 4128 + 132);
        let f = DecryptedFile::open(Mem(stored.clone()), key.clone()).unwrap();
        assert_eq!(f.len(), plain.len() as u64);
        for (off, len) in [
            (0, plain.len()),
            (1, 4096),
            (4095, 2),
            (8192, 4196),
            (12287, 101),
        ] {
            let mut buf = vec![0u8; len];
            f.read_exact_at(&mut buf, off as u64).unwrap();
            assert_eq!(buf, plain[off..off + len], "{off}+{len}");
        }
        let mut buf = vec![0u8; 2];
        assert!(f.read_exact_at(&mut buf, plain.len() as u64 - 1).is_err());
        // A flipped bit in block 1, blocks swapped, another file's ID: errors.
        let mut bad = stored.clone();
        bad[18 + 4128 + 100] ^= 1;
        let f = DecryptedFile::open(Mem(bad), key.clone()).unwrap();
        let mut buf = vec![0u8; 10];
        f.read_exact_at(&mut buf, 0).unwrap();
        assert!(f.read_exact_at(&mut buf, 4096).is_err());
        let mut swapped = stored.clone();
        let (a, b) = (18..18 + 4128, 18 + 4128..18 + 2 * 4128);
        let first = stored[a.clone()].to_vec();
        swapped[a].copy_from_slice(&stored[b.clone()]);
        swapped[b].copy_from_slice(&first);
        let f = DecryptedFile::open(Mem(swapped), key.clone()).unwrap();
        assert!(f.read_exact_at(&mut buf, 0).is_err());
        let mut other = stored.clone();
        other[2] ^= 1;
        let f = DecryptedFile::open(Mem(other), key.clone()).unwrap();
        assert!(f.read_exact_at(&mut buf, 0).is_err());
        // A block of zeros (gocryptfs's hole) is refused, not read as zeros.
        let mut holed = stored;
        holed[18 + 4128..18 + 2 * 4128].fill(0);
        let f = DecryptedFile::open(Mem(holed), key).unwrap();
        let mut buf = vec![1u8; 4096];
        assert!(f.read_exact_at(&mut buf, 4096).is_err());
        f.read_exact_at(&mut buf, 0).unwrap();
    }

    #[test]
    fn stored_lengths_map_to_plaintext_lengths() {
        // gocryptfs's figures: 1 byte is 51 stored, 5000 bytes 5082.
        assert_eq!(plain_size(0).unwrap(), 0);
        assert_eq!(plain_size(18).unwrap(), 0);
        assert_eq!(plain_size(51).unwrap(), 1);
        assert_eq!(plain_size(18 + 4128).unwrap(), 4096);
        assert_eq!(plain_size(5082).unwrap(), 5000);
        assert!(plain_size(10).is_err());
        // A last block of nonce and tag only (or less) holds nothing: damaged.
        assert!(plain_size(18 + 4128 + 32).is_err());
        assert!(plain_size(18 + 20).is_err());
    }
}
