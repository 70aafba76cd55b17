//! The fuzzers' entry point into the gocryptfs reader.

#![forbid(unsafe_code)]

use std::sync::Arc;

use super::config::Config;
use super::content::{DecryptedFile, plain_size, seal};
use super::keys::fixed_key;
use crate::source::ReadAt;

/// Bytes in memory as a source.
struct Mem<'a>(&'a [u8]);

impl ReadAt for Mem<'_> {
    fn len(&self) -> u64 {
        self.0.len() as u64
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        crate::source::check_range(self.len(), offset, buf.len())?;
        buf.copy_from_slice(&self.0[offset as usize..offset as usize + buf.len()]);
        Ok(())
    }
}

/// Reads `f` whole and in pieces at block edges; what a read returns is checked to be
/// `expect`'s bytes when given.
/// Reads `f` whole and in pieces at block edges. With `expect` (a sealed file), every
/// read must succeed with those bytes; without (a forged file, under a key nobody
/// sealed it with), every read of data must fail: no forged block authenticates.
fn read_around<R: ReadAt>(f: &DecryptedFile<R>, expect: Option<&[u8]>) {
    let len = f.len();
    let check = |r: std::io::Result<()>, got: &[u8], off: u64| match expect {
        Some(e) => {
            assert!(r.is_ok(), "a sealed file's read at {off} failed: {r:?}");
            assert_eq!(got, &e[off as usize..off as usize + got.len()], "at {off}");
        }
        None => assert!(r.is_err() || got.is_empty(), "forged data read at {off}"),
    };
    let mut whole = vec![0u8; len.min(1 << 20) as usize];
    let r = f.read_exact_at(&mut whole, 0);
    check(r, &whole, 0);
    for off in [1, 4095, 4096, 4097, 8191, len.saturating_sub(1), len] {
        if off > len {
            continue;
        }
        let mut buf = [0u8; 300];
        let n = (len.saturating_sub(off)).min(300) as usize;
        let r = f.read_exact_at(&mut buf[..n], off);
        check(r, &buf[..n], off);
        // Past the end: always an error, never data.
        assert!(f.read_exact_at(&mut buf, len).is_err());
    }
}

/// Fuzzing entry point: the input as a `gocryptfs.conf`; as an encrypted file under a
/// fixed key (header, length and every read must fail cleanly: a forged block cannot
/// authenticate); and as plaintext sealed under that key, which must read back exactly
/// and fail after any one bit of it flips.
#[doc(hidden)]
pub fn fuzz_one(data: &[u8]) {
    let _ = Config::parse(data);
    let key = Arc::new(fixed_key(&[0x42; 32]));
    if let Ok(f) = DecryptedFile::open(Mem(data), key.clone()) {
        assert_eq!(Some(f.len()), plain_size(data.len() as u64).ok());
        read_around(&f, None);
    }
    let plain = &data[..data.len().min(64 << 10)];
    let Ok(stored) = seal(&key, [0x11; 16], plain) else {
        return;
    };
    let f = DecryptedFile::open(Mem(&stored), key.clone()).expect("a sealed file opens");
    assert_eq!(f.len(), plain.len() as u64);
    read_around(&f, Some(plain));
    if stored.len() > 18 {
        // One bit of the stored bytes (past the header), chosen by the input.
        let at = 18 + (plain.len() * 31 + 7) % (stored.len() - 18);
        let mut bad = stored.clone();
        bad[at] ^= 0x20;
        let f = DecryptedFile::open(Mem(&bad), key).expect("the header is intact");
        let mut whole = vec![0u8; f.len() as usize];
        assert!(
            f.read_exact_at(&mut whole, 0).is_err(),
            "a flipped bit at {at} went unnoticed"
        );
    }
}
