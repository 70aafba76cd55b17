//! The decrypted data segment as a [`ReadAt`].
//!
//! Reads at any offset and length: the covering sectors are read from the
//! source and decrypted; whole sectors in the middle of a request are read
//! straight into the caller's buffer and decrypted in place, so large aligned
//! reads do no extra copy. A source that is a mapped file is not copied at all:
//! its sectors are decrypted from where they lie into the caller's buffer. There
//! is no write path.

use std::io;

use super::xts::Xts;
use crate::memory::mapping::MappedBytes;
use crate::secret::{SecretBox, SecretBytes};
use crate::source::{ReadAt, check_range};

/// An unlocked LUKS2 volume: the plaintext of its data segment.
pub struct UnlockedVolume<R> {
    src: R,
    /// The cipher and its expanded keys, in guarded memory.
    xts: SecretBox<Xts>,
    /// Byte offset of the segment in `src`.
    offset: u64,
    /// Plaintext length (a multiple of the sector size).
    len: u64,
    summary: super::HeaderSummary,
    warnings: Vec<String>,
    keyslot: u32,
    mapping: KernelMapping,
}

/// What the kernel's dm-crypt needs to map the same data segment (the privileged
/// fast path): the volume key, and where the segment lies in the volume. The key is
/// kept in guarded memory as bytes; its hex form, which the crypt target's table
/// line needs, is made only by [`KernelMapping::crypt_params`], for the ioctl.
pub struct KernelMapping {
    /// The volume key; `None` once handed out by `take_kernel_mapping`.
    key: Option<SecretBytes>,
    /// Byte offset of the data segment in the volume.
    pub offset: u64,
    /// Plaintext length in bytes.
    pub len: u64,
    pub sector_size: u32,
}

impl KernelMapping {
    pub(crate) fn new(key: &super::VolumeKey, offset: u64, len: u64, sector_size: u32) -> Self {
        KernelMapping {
            key: Some(SecretBytes::from_slice(key.bytes())),
            offset,
            len,
            sector_size,
        }
    }

    /// The crypt target's parameter string for a device `dev` (`major:minor` or a
    /// path) that holds the whole volume:
    /// `aes-xts-plain64 <hex key> 0 <dev> <offset> [1 sector_size:N]`. Contains the
    /// key: hand it to the kernel only, and drop it at once (it is wiped then).
    pub fn crypt_params(&self, dev: &str) -> SecretBytes {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let key = self.key.as_ref().map_or(&[][..], SecretBytes::as_slice);
        // LUKS2 counts IVs in 512-byte units from the segment start, which is
        // dm-crypt's default (no iv_large_sectors); this module refuses iv_tweak != 0.
        let tail = if self.sector_size != 512 {
            format!(
                " 0 {dev} {} 1 sector_size:{}",
                self.offset / 512,
                self.sector_size
            )
        } else {
            format!(" 0 {dev} {}", self.offset / 512)
        };
        let head = super::DATA_CIPHER.as_bytes();
        let mut s = SecretBytes::with_capacity(head.len() + 1 + 2 * key.len() + tail.len());
        let out = s.spare();
        let mut n = 0;
        let mut put = |b: u8| {
            out[n] = b;
            n += 1;
        };
        head.iter().for_each(|&b| put(b));
        put(b' ');
        for &b in key {
            put(HEX[usize::from(b >> 4)]);
            put(HEX[usize::from(b & 15)]);
        }
        tail.bytes().for_each(put);
        s.set_len(n);
        s
    }
}

impl std::fmt::Debug for KernelMapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelMapping")
            .field("offset", &self.offset)
            .field("len", &self.len)
            .field("sector_size", &self.sector_size)
            .field("key", &"[redacted]")
            .finish()
    }
}

impl<R: ReadAt> UnlockedVolume<R> {
    // Internal constructor fed from one place (`unlock`); a parameter struct would
    // only rename the same eight values.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        src: R,
        xts: SecretBox<Xts>,
        offset: u64,
        len: u64,
        summary: super::HeaderSummary,
        warnings: Vec<String>,
        keyslot: u32,
        mapping: KernelMapping,
    ) -> Self {
        UnlockedVolume {
            src,
            xts,
            offset,
            len,
            summary,
            warnings,
            keyslot,
            mapping,
        }
    }

    /// The header this volume was opened with.
    pub fn summary(&self) -> &super::HeaderSummary {
        &self.summary
    }

    /// Damaged or outdated header copies found while opening (nothing was repaired).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The same segment as a dm-crypt mapping, for the privileged path.
    pub fn kernel_mapping(&self) -> &KernelMapping {
        &self.mapping
    }

    /// Hands out the mapping (the volume stays usable).
    pub fn take_kernel_mapping(&mut self) -> KernelMapping {
        KernelMapping {
            key: self.mapping.key.take(),
            ..self.mapping
        }
    }

    /// The keyslot the passphrase opened.
    pub fn keyslot(&self) -> u32 {
        self.keyslot
    }

    /// Encryption sector size in bytes.
    pub fn sector_size(&self) -> u32 {
        self.xts.sector_size() as u32
    }

    /// The underlying (encrypted) source.
    pub fn source(&self) -> &R {
        &self.src
    }

    /// Reads whole sectors starting at plaintext offset `pos` (sector aligned) into
    /// `buf` (a multiple of the sector size) and decrypts them.
    fn read_sectors(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        self.src.read_exact_at(buf, self.offset + pos)?;
        // plain64 IV: the position in 512-byte units from the segment start.
        self.xts.decrypt(buf, pos / 512);
        Ok(())
    }

    /// Decrypts the bytes at plaintext `offset` into `buf` from `m`, the ciphertext
    /// of the sectors covering them, which start at plaintext offset `start`.
    fn decrypt_from(&self, m: MappedBytes<'_>, buf: &mut [u8], offset: u64, start: u64) {
        let ss = self.xts.sector_size();
        let lead = (offset - start) as usize;
        let mut sector = [0u8; 4096];
        let sector = &mut sector[..ss];
        // `done` bytes of `buf` are written; `at` is where in `m` the sector holding
        // the next one starts, and `into` where that byte lies in it.
        let (mut done, mut at) = (0, 0);
        while done < buf.len() {
            let into = lead + done - at;
            // plain64 IV: the position in 512-byte units from the segment start.
            let iv = (start + at as u64) / 512;
            let whole = if into == 0 {
                (buf.len() - done) / ss * ss
            } else {
                0
            };
            if whole > 0 {
                let (src, dst) = (m.sub(at, whole), &mut buf[done..done + whole]);
                // SAFETY: `src` lies in the live mapping (`sub` checks the range)
                // and is as long as `dst`, a Rust buffer, which cannot overlap it.
                unsafe { self.xts.decrypt_from_ptr(src.as_ptr(), dst, iv) };
                done += whole;
                at += whole;
            } else {
                let src = m.sub(at, ss);
                // SAFETY: as above, into the local sector buffer.
                unsafe { self.xts.decrypt_from_ptr(src.as_ptr(), sector, iv) };
                let n = (ss - into).min(buf.len() - done);
                buf[done..done + n].copy_from_slice(&sector[into..into + n]);
                done += n;
                at += ss;
            }
        }
    }
}

impl<R: ReadAt> ReadAt for UnlockedVolume<R> {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        check_range(self.len, offset, buf.len())?;
        if buf.is_empty() {
            return Ok(());
        }
        let ss = self.xts.sector_size() as u64;
        let end = offset + buf.len() as u64;
        let (start, stop) = (offset - offset % ss, end.div_ceil(ss) * ss);
        // A mapped file: decrypt straight from the page cache into `buf`, one pass
        // over the bytes instead of a copy and a pass. Should the file shrink
        // meanwhile, the read below redoes it all and reports the short file.
        let in_place =
            self.src
                .read_in_place(self.offset + start, (stop - start) as usize, &mut |m| {
                    self.decrypt_from(m, buf, offset, start)
                });
        if in_place.is_some() {
            return Ok(());
        }
        // The partial sectors' plaintext is image data, not key material: the same
        // bytes go on to the caller, the block cache and the kernel's page cache, so
        // the scratch is not zeroized (byte-wise volatile clearing of 8 KiB per
        // read would cost CPU on every read for nothing).
        let mut scratch = [0u8; 8192];
        let (head, tail) = scratch.split_at_mut(4096);
        let (head, tail) = (&mut head[..ss as usize], &mut tail[..ss as usize]);
        if stop - start == ss && (offset != start || end != stop) {
            // Part of a single sector.
            self.read_sectors(head, start)?;
            let from = (offset - start) as usize;
            buf.copy_from_slice(&head[from..from + buf.len()]);
            return Ok(());
        }
        // Whole sectors only can be decrypted: the caller's own bytes are read straight
        // into its buffer, the partial sectors at either end into scratch sectors, and
        // all of it in one read of the source (one system call for a file; a squashfs
        // block rarely starts or ends on a sector boundary, and took three).
        let (partial_head, partial_tail) = (offset != start, end != stop);
        let mid_begin = if partial_head { start + ss } else { start };
        let mid_end = if partial_tail { stop - ss } else { stop };
        let (mb, me) = ((mid_begin - offset) as usize, (mid_end - offset) as usize);
        {
            // On the stack: see `FileSource::read_vectored_exact_at`.
            let mut parts: [&mut [u8]; 3] = [&mut [], &mut [], &mut []];
            let mut n = 0;
            if partial_head {
                parts[n] = &mut *head;
                n += 1;
            }
            if me > mb {
                parts[n] = &mut buf[mb..me];
                n += 1;
            }
            if partial_tail {
                parts[n] = &mut *tail;
                n += 1;
            }
            self.src
                .read_vectored_exact_at(&mut parts[..n], self.offset + start)?;
        }
        // plain64 IV: the position in 512-byte units from the segment start.
        if partial_head {
            self.xts.decrypt(head, start / 512);
            buf[..mb].copy_from_slice(&head[(offset - start) as usize..]);
        }
        if me > mb {
            self.xts.decrypt(&mut buf[mb..me], mid_begin / 512);
        }
        if partial_tail {
            self.xts.decrypt(tail, (stop - ss) / 512);
            let n = buf.len() - me;
            buf[me..].copy_from_slice(&tail[..n]);
        }
        Ok(())
    }
}

impl<R> std::fmt::Debug for UnlockedVolume<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnlockedVolume")
            .field("offset", &self.offset)
            .field("len", &self.len)
            .field("keyslot", &self.keyslot)
            .field("key", &"[redacted]")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table line dm-crypt gets, made on demand from the key bytes.
    #[test]
    fn crypt_params_are_the_dm_crypt_table_line() {
        let key: Vec<u8> = (0..64u8).collect();
        let vk = super::super::VolumeKey::from_slice(&key).unwrap();
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        let m = KernelMapping::new(&vk, 16 << 20, 1 << 30, 4096);
        assert_eq!(
            std::str::from_utf8(m.crypt_params("7:3").as_slice()).unwrap(),
            format!("aes-xts-plain64 {hex} 0 7:3 32768 1 sector_size:4096")
        );
        let m = KernelMapping::new(&vk, 2 << 20, 1 << 30, 512);
        assert_eq!(
            std::str::from_utf8(m.crypt_params("/dev/loop0").as_slice()).unwrap(),
            format!("aes-xts-plain64 {hex} 0 /dev/loop0 4096")
        );
        assert!(!format!("{m:?}").contains(&hex[..16]));
    }
}
