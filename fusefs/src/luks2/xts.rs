//! AES-XTS (IEEE 1619) over whole sectors, with dm-crypt's `plain64` IV.
//!
//! This is the hot path of every read from an encrypted image, so it is written
//! for throughput: per batch of up to 4 KiB it computes all tweaks first (the
//! initial tweak of every sector in one multi-block AES call, then the α-multiples
//! as 128-bit shifts), XORs them in, runs the `aes` crate's multi-block
//! (pipelined AES-NI) decryption over the whole batch, and XORs again. A
//! block-at-a-time XTS loop is four to five times slower.

use aes::cipher::array::Array;
use aes::cipher::{BlockCipherDecrypt, BlockCipherEncrypt, KeyInit};
use aes::{Aes128, Aes256, Block};
use rayon::prelude::*;

use super::error::{Error, Result};

/// Blocks per batch: 4 KiB, one 4096-byte sector or eight 512-byte ones. Big
/// enough to keep the AES pipeline full, small enough to stay in L1.
const BATCH_BLOCKS: usize = 256;

/// Buffers at least this large are split across threads.
const PARALLEL_MIN: usize = 512 * 1024;
/// Size of each piece handed to a thread.
const PARALLEL_PIECE: usize = 128 * 1024;

/// The two AES keys of an XTS key (data key, tweak key). One per open volume,
/// so the size difference between the variants does not matter.
#[allow(clippy::large_enum_variant)]
enum Keys {
    A128(Aes128, Aes128),
    A256(Aes256, Aes256),
}

/// An AES-XTS cipher for `aes-xts-plain64` with a given encryption sector size.
pub struct Xts {
    keys: Keys,
    sector_size: usize,
}

impl Xts {
    /// `key` is 32 bytes (AES-128-XTS) or 64 bytes (AES-256-XTS): first half data
    /// key, second half tweak key. `sector_size` is 512..=4096, a power of two.
    pub fn new(key: &[u8], sector_size: usize) -> Result<Self> {
        if !(512..=4096).contains(&sector_size) || !sector_size.is_power_of_two() {
            return Err(Error::Unsupported(format!("sector size {sector_size}")));
        }
        let bad = |_| Error::Unsupported(format!("aes-xts key of {} bytes", key.len()));
        let keys = match key.len() {
            32 => Keys::A128(
                Aes128::new_from_slice(&key[..16]).map_err(bad)?,
                Aes128::new_from_slice(&key[16..]).map_err(bad)?,
            ),
            64 => Keys::A256(
                Aes256::new_from_slice(&key[..32]).map_err(bad)?,
                Aes256::new_from_slice(&key[32..]).map_err(bad)?,
            ),
            n => {
                return Err(Error::Unsupported(format!(
                    "aes-xts key of {n} bytes (need 32 or 64)"
                )));
            }
        };
        Ok(Xts { keys, sector_size })
    }

    pub fn sector_size(&self) -> usize {
        self.sector_size
    }

    /// Decrypts whole sectors in place. `buf.len()` must be a multiple of the sector
    /// size; the first sector's IV is `first_iv` and each following one adds
    /// `sector_size / 512` (IVs count 512-byte units, as LUKS2 requires).
    pub fn decrypt(&self, buf: &mut [u8], first_iv: u64) {
        self.run(buf, first_iv, Dir::Decrypt)
    }

    /// Encrypts whole sectors in place (see [`Xts::decrypt`] for the IV rule).
    pub fn encrypt(&self, buf: &mut [u8], first_iv: u64) {
        self.run(buf, first_iv, Dir::Encrypt)
    }

    /// Single-threaded variant, for callers that parallelise themselves or measure
    /// per-core speed.
    pub fn decrypt_serial(&self, buf: &mut [u8], first_iv: u64) {
        self.serial(buf, first_iv, Dir::Decrypt)
    }

    fn run(&self, buf: &mut [u8], first_iv: u64, dir: Dir) {
        if buf.len() < PARALLEL_MIN {
            return self.serial(buf, first_iv, dir);
        }
        let ss = self.sector_size;
        let units = (ss / 512) as u64;
        let piece = PARALLEL_PIECE.max(ss);
        buf.par_chunks_mut(piece)
            .enumerate()
            .for_each(|(i, chunk)| {
                let first_sector = (i * piece / ss) as u64;
                self.serial(
                    chunk,
                    first_iv.wrapping_add(first_sector.wrapping_mul(units)),
                    dir,
                )
            });
    }

    fn serial(&self, buf: &mut [u8], first_iv: u64, dir: Dir) {
        match &self.keys {
            Keys::A128(k1, k2) => crypt(k1, k2, self.sector_size, buf, first_iv, dir),
            Keys::A256(k1, k2) => crypt(k1, k2, self.sector_size, buf, first_iv, dir),
        }
    }
}

#[derive(Clone, Copy)]
enum Dir {
    Encrypt,
    Decrypt,
}

/// Multiplies a tweak by α in GF(2^128) (little-endian convention of IEEE 1619).
#[inline(always)]
fn mul_alpha(t: u128) -> u128 {
    (t << 1) ^ ((t >> 127) * 0x87)
}

/// `MUL8[b]` = b · 0x87 carry-less: the reduction of the 8 bits shifted out when a
/// tweak is multiplied by α⁸.
const MUL8: [u128; 256] = {
    let mut t = [0u128; 256];
    let mut b = 0;
    while b < 256 {
        let mut r = 0u128;
        let mut i = 0;
        while i < 8 {
            if (b >> i) & 1 == 1 {
                r ^= 0x87 << i;
            }
            i += 1;
        }
        t[b] = r;
        b += 1;
    }
    t
};

/// Multiplies a tweak by α⁸: a byte shift plus a table lookup.
#[inline(always)]
fn mul_alpha8(t: u128) -> u128 {
    (t << 8) ^ MUL8[(t >> 120) as usize]
}

/// XORs the blocks of one sector with t, t·α, t·α², … and keeps those tweaks in
/// `tw` for the second XOR. Eight independent chains (each stepping by α⁸)
/// instead of one serial chain, so the CPU overlaps them; the XOR is fused in to
/// save a pass over the data.
#[inline(always)]
fn apply_tweaks(t: u128, blocks: &mut [[u8; 16]], tw: &mut [u128]) {
    let n = blocks.len().min(tw.len());
    let (blocks, tw) = (&mut blocks[..n], &mut tw[..n]);
    let mut x = t;
    for (b, slot) in blocks.iter_mut().zip(tw.iter_mut()).take(8) {
        *slot = x;
        *b = (u128::from_le_bytes(*b) ^ x).to_le_bytes();
        x = mul_alpha(x);
    }
    for i in 8..n {
        let x = mul_alpha8(tw[i - 8]);
        tw[i] = x;
        blocks[i] = (u128::from_le_bytes(blocks[i]) ^ x).to_le_bytes();
    }
}

/// XORs each 16-byte block with its tweak.
#[inline(always)]
fn xor_tweaks(blocks: &mut [[u8; 16]], tweaks: &[u128]) {
    for (b, t) in blocks.iter_mut().zip(tweaks) {
        *b = (u128::from_le_bytes(*b) ^ t).to_le_bytes();
    }
}

// `as_chunks_mut` is Rust 1.88; the `aes` 0.9.4 dependency (runtime VAES
// detection) needs Rust 1.89 anyway, above the workspace's declared 1.85.
#[allow(clippy::incompatible_msrv)]
fn crypt<C>(data_key: &C, tweak_key: &C, ss: usize, buf: &mut [u8], first_iv: u64, dir: Dir)
where
    C: BlockCipherEncrypt + BlockCipherDecrypt<BlockSize = aes::cipher::consts::U16>,
{
    let bps = ss / 16; // blocks per sector
    let sectors_per_batch = (BATCH_BLOCKS / bps).max(1);
    let units = (ss / 512) as u64;
    let mut tweaks = [0u128; BATCH_BLOCKS];
    let mut t0 = [Block::default(); BATCH_BLOCKS / 32];

    // Only whole sectors are processed; callers guarantee alignment.
    let whole = buf.len() - buf.len() % ss;
    for (batch_no, batch) in buf[..whole].chunks_mut(sectors_per_batch * ss).enumerate() {
        let nsec = batch.len() / ss;
        let first_sector = (batch_no * sectors_per_batch) as u64;
        // Initial tweak of every sector: E_k2(LE128(iv)), all in one call.
        for (s, b) in t0[..nsec].iter_mut().enumerate() {
            let iv = first_iv.wrapping_add((first_sector + s as u64).wrapping_mul(units));
            *b = Array::from((iv as u128).to_le_bytes());
        }
        tweak_key.encrypt_blocks(&mut t0[..nsec]);
        let (blocks, _) = batch.as_chunks_mut::<16>();
        for ((sector, tw), b0) in blocks
            .chunks_mut(bps)
            .zip(tweaks.chunks_mut(bps))
            .zip(&t0[..nsec])
        {
            apply_tweaks(u128::from_le_bytes((*b0).into()), sector, tw);
        }
        let (ablocks, _) = Array::slice_as_chunks_mut(batch);
        match dir {
            Dir::Decrypt => data_key.decrypt_blocks(ablocks),
            Dir::Encrypt => data_key.encrypt_blocks(ablocks),
        }
        let (blocks, _) = batch.as_chunks_mut::<16>();
        xor_tweaks(blocks, &tweaks[..nsec * bps]);
    }
    // Tweaks are derived from the key: do not leave them on the stack.
    zeroize::Zeroize::zeroize(&mut tweaks);
    for b in &mut t0 {
        zeroize::Zeroize::zeroize(b.as_mut_slice());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// IEEE 1619-2007 vector 10 (AES-256-XTS, data unit sequence number 0xff, 512
    /// bytes). The published vector uses a 512-byte data unit, i.e. one
    /// plain64 sector with IV 0xff.
    #[test]
    fn ieee1619_vector_10() {
        let key = hex(concat!(
            "2718281828459045235360287471352662497757247093699959574966967627",
            "3141592653589793238462643383279502884197169399375105820974944592"
        ));
        let pt: Vec<u8> = (0..512).map(|i| (i % 256) as u8).collect();
        let ct_start = hex("1c3b3a102f770386e4836c99e370cf9bea00803f5e482357a4ae12d414a3e63b");
        let ct_end = hex("773dad38014bd2092fa755c824bb5e54c4f36ffda9fcea70b9c6e693e148c151");
        let x = Xts::new(&key, 512).unwrap();
        let mut buf = pt.clone();
        x.encrypt(&mut buf, 0xff);
        assert_eq!(&buf[..32], &ct_start[..]);
        assert_eq!(&buf[480..], &ct_end[..]);
        x.decrypt(&mut buf, 0xff);
        assert_eq!(buf, pt);
    }

    /// With 4096-byte sectors, sector j uses IV 8·j (512-byte units), and the tweak
    /// runs through all 256 blocks of the sector instead of restarting every 512
    /// bytes. The data path interop tests check the same rule against cryptsetup.
    #[test]
    fn sector_size_and_iv_units() {
        let key: Vec<u8> = (0..64).collect();
        let pt: Vec<u8> = (0..8192u32).map(|i| (i * 31 % 251) as u8).collect();
        let big = Xts::new(&key, 4096).unwrap();
        let small = Xts::new(&key, 512).unwrap();
        let mut a = pt.clone();
        big.encrypt(&mut a, 0);
        // The second 4096-byte sector uses IV 8, so encrypting it alone at IV 8 matches.
        let mut b = pt[4096..].to_vec();
        big.encrypt(&mut b, 8);
        assert_eq!(&a[4096..], &b[..]);
        // The first 512 bytes of a 4096-byte sector equal a 512-byte sector at the same IV
        // (same initial tweak, same first 32 α-multiples).
        let mut c = pt[..512].to_vec();
        small.encrypt(&mut c, 0);
        assert_eq!(&a[..512], &c[..]);
        // ...but the second 512 bytes do not equal a 512-byte sector with IV 1.
        let mut d = pt[512..1024].to_vec();
        small.encrypt(&mut d, 1);
        assert_ne!(&a[512..1024], &d[..]);
    }

    /// Known answer from python3-cryptography (OpenSSL's XTS): two 4096-byte
    /// sectors of a LUKS2 segment use tweaks LE(0) and LE(8) — 512-byte units.
    #[test]
    fn iv_units_with_4096_byte_sectors_match_openssl() {
        let key: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(11) ^ 0x3c).collect();
        let pt: Vec<u8> = (0..8192u32).map(|i| (i * 13 % 256) as u8).collect();
        let script = "import sys\n\
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes\n\
k=bytes((i*11%256)^0x3c for i in range(64)); p=bytes(i*13%256 for i in range(8192)); out=b''\n\
for j in range(2):\n    e=Cipher(algorithms.AES(k),modes.XTS((j*8).to_bytes(16,'little'))).encryptor(); out+=e.update(p[j*4096:(j+1)*4096])+e.finalize()\n\
sys.stdout.write(out.hex())";
        let out = match std::process::Command::new("/usr/bin/python3")
            .args(["-c", script])
            .output()
        {
            Ok(o) if o.status.success() => String::from_utf8(o.stdout).unwrap(),
            _ => {
                eprintln!("SKIP: python3-cryptography not available for the cross-check");
                return;
            }
        };
        let x = Xts::new(&key, 4096).unwrap();
        let mut buf = pt.clone();
        x.encrypt(&mut buf, 0);
        let got: String = buf.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(got, out);
        x.decrypt(&mut buf, 0);
        assert_eq!(buf, pt);
    }

    #[test]
    fn alpha8_equals_eight_alpha_steps() {
        let mut t = 0x8000_0000_0000_0000_0000_0000_0000_0001u128 ^ 0xdead_beef << 64;
        for _ in 0..1000 {
            let mut s = t;
            for _ in 0..8 {
                s = mul_alpha(s);
            }
            assert_eq!(mul_alpha8(t), s);
            t = s ^ (t >> 3);
        }
    }

    #[test]
    fn parallel_equals_serial() {
        let key: Vec<u8> = (0..32).collect();
        let pt: Vec<u8> = (0..(3 << 20) as u32).map(|i| (i * 7 % 253) as u8).collect();
        for ss in [512, 4096] {
            let x = Xts::new(&key, ss).unwrap();
            let mut a = pt.clone();
            let mut b = pt.clone();
            x.encrypt(&mut a, 40);
            x.serial(&mut b, 40, Dir::Encrypt);
            assert_eq!(a, b);
            x.decrypt(&mut a, 40);
            assert_eq!(a, pt);
        }
    }
}
