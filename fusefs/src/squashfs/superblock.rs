//! The 96-byte superblock: parsed and checked before anything else is read, so
//! every later table offset is known to lie inside the image.

#![forbid(unsafe_code)]

use super::compress::Compressor;
use super::error::{Error, Result};
use super::le;

pub const MAGIC: u32 = 0x7371_7368; // "hsqs"
pub const SIZE: usize = 96;
/// Tables that are absent are stored as all-ones.
pub const ABSENT: u64 = u64::MAX;

pub const FLAG_NO_XATTRS: u16 = 0x200;
pub const FLAG_COMPRESSOR_OPTIONS: u16 = 0x400;

#[derive(Debug, Clone)]
pub struct Superblock {
    pub inode_count: u32,
    pub mtime: u32,
    pub block_size: u32,
    pub block_log: u16,
    pub fragment_count: u32,
    pub compressor: Compressor,
    pub flags: u16,
    pub id_count: u16,
    pub root_inode: u64,
    pub bytes_used: u64,
    pub id_table: u64,
    pub xattr_table: u64,
    pub inode_table: u64,
    pub directory_table: u64,
    pub fragment_table: u64,
    pub export_table: u64,
}

impl Superblock {
    /// Parses and validates the superblock against the length of the image.
    pub fn parse(b: &[u8; SIZE], image_len: u64) -> Result<Self> {
        let magic = le::u32(b, 0);
        if magic != MAGIC {
            return Err(Error::BadMagic(magic));
        }
        let (major, minor) = (le::u16(b, 28), le::u16(b, 30));
        if (major, minor) != (4, 0) {
            return Err(Error::UnsupportedVersion(major, minor));
        }
        let sb = Superblock {
            inode_count: le::u32(b, 4),
            mtime: le::u32(b, 8),
            block_size: le::u32(b, 12),
            fragment_count: le::u32(b, 16),
            compressor: Compressor::from_id(le::u16(b, 20))?,
            block_log: le::u16(b, 22),
            flags: le::u16(b, 24),
            id_count: le::u16(b, 26),
            root_inode: le::u64(b, 32),
            bytes_used: le::u64(b, 40),
            id_table: le::u64(b, 48),
            xattr_table: le::u64(b, 56),
            inode_table: le::u64(b, 64),
            directory_table: le::u64(b, 72),
            fragment_table: le::u64(b, 80),
            export_table: le::u64(b, 88),
        };
        // mksquashfs accepts 4 KiB to 1 MiB, powers of two; the log must agree so
        // that nobody can pair a small log with a huge size.
        if !(4096..=1 << 20).contains(&sb.block_size) || !sb.block_size.is_power_of_two() {
            return Err(Error::BadSuperblock(
                "block size is not a power of two in 4 KiB..1 MiB",
            ));
        }
        if 1u32.checked_shl(u32::from(sb.block_log)) != Some(sb.block_size) {
            return Err(Error::BadSuperblock(
                "block log does not match the block size",
            ));
        }
        if sb.bytes_used > image_len {
            return Err(Error::BadSuperblock("bytes used exceeds the image size"));
        }
        if sb.id_count == 0 {
            return Err(Error::BadSuperblock("empty uid/gid table"));
        }
        let used = sb.bytes_used;
        if !(SIZE as u64 <= sb.inode_table
            && sb.inode_table < sb.directory_table
            && sb.directory_table < used)
        {
            return Err(Error::BadSuperblock(
                "inode and directory tables out of order or outside the image",
            ));
        }
        if sb.id_table < sb.directory_table || sb.id_table >= used {
            return Err(Error::BadSuperblock("uid/gid table outside the image"));
        }
        if sb.fragment_count > 0
            && (sb.fragment_table < sb.directory_table || sb.fragment_table >= used)
        {
            return Err(Error::BadSuperblock("fragment table outside the image"));
        }
        if sb.has_xattrs() && (sb.xattr_table < sb.directory_table || sb.xattr_table >= used) {
            return Err(Error::BadSuperblock("xattr table outside the image"));
        }
        Ok(sb)
    }

    pub fn has_xattrs(&self) -> bool {
        self.xattr_table != ABSENT && self.flags & FLAG_NO_XATTRS == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> [u8; SIZE] {
        let mut b = [0u8; SIZE];
        let put32 =
            |b: &mut [u8; SIZE], at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_le_bytes());
        let put16 =
            |b: &mut [u8; SIZE], at: usize, v: u16| b[at..at + 2].copy_from_slice(&v.to_le_bytes());
        let put64 =
            |b: &mut [u8; SIZE], at: usize, v: u64| b[at..at + 8].copy_from_slice(&v.to_le_bytes());
        put32(&mut b, 0, MAGIC);
        put32(&mut b, 12, 131_072);
        put16(&mut b, 20, 1);
        put16(&mut b, 22, 17);
        put16(&mut b, 26, 1);
        put16(&mut b, 28, 4);
        put64(&mut b, 40, 4096);
        put64(&mut b, 48, 3000);
        put64(&mut b, 56, ABSENT);
        put64(&mut b, 64, 1000);
        put64(&mut b, 72, 2000);
        b
    }

    #[test]
    fn accepts_a_sane_superblock_and_names_what_is_wrong_otherwise() {
        assert!(Superblock::parse(&valid(), 4096).is_ok());
        let mut b = valid();
        b[0] = 0;
        assert!(matches!(
            Superblock::parse(&b, 4096),
            Err(Error::BadMagic(_))
        ));
        let mut b = valid();
        b[28] = 3;
        assert!(matches!(
            Superblock::parse(&b, 4096),
            Err(Error::UnsupportedVersion(3, 0))
        ));
        let mut b = valid();
        b[20] = 9;
        assert!(matches!(
            Superblock::parse(&b, 4096),
            Err(Error::UnsupportedCompressor(9))
        ));
        let mut b = valid();
        b[22] = 16; // log disagrees with the size
        assert!(Superblock::parse(&b, 4096).is_err());
        // bytes_used beyond the image: a truncated file.
        assert!(matches!(
            Superblock::parse(&valid(), 4095),
            Err(Error::BadSuperblock(_))
        ));
        let mut b = valid();
        b[64..72].copy_from_slice(&5000u64.to_le_bytes()); // inode table after directory table
        assert!(Superblock::parse(&b, 8192).is_err());
        let e = Superblock::parse(&valid(), 10).unwrap_err().to_string();
        assert!(!e.contains('\n'), "one-line message: {e}");
    }
}
