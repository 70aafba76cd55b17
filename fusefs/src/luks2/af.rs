//! The LUKS1 anti-forensic splitter (AF split / merge), used by LUKS2 keyslots.
//!
//! A key of n bytes is stored as `stripes` blocks of n bytes; all but the last are
//! random and the last is `key XOR D`, where D chains the earlier stripes through
//! the hash-based diffuser. Losing any stripe loses the key.

#![forbid(unsafe_code)]

use zeroize::Zeroizing;

use super::error::{Error, Result};
use super::hash::Hash;

/// The only stripe count cryptsetup uses (it ignores the JSON value).
pub const STRIPES: usize = 4000;

/// `diffuse(B)`: each full hash-sized block j becomes `H(BE32(j) || block)`; a short
/// last block is hashed the same way and truncated to its length.
fn diffuse(hash: Hash, buf: &mut [u8]) {
    if hash == Hash::Sha256 {
        return diffuse_sha256(buf);
    }
    let h = hash.size();
    let mut out = Zeroizing::new([0u8; 64]);
    for (j, block) in buf.chunks_mut(h).enumerate() {
        let iv = (j as u32).to_be_bytes();
        let n = block.len();
        hash.digest_into(&[&iv, block], &mut out[..n]);
        block.copy_from_slice(&out[..n]);
    }
}

/// [`diffuse`] for SHA-256, cryptsetup's default AF hash. Each message (a 4-byte
/// index and at most 32 bytes) fits one padded 64-byte block, so its digest is one call
/// of the compression function, without the hasher's buffering: a keyslot merge
/// diffuses 4000 times, and the buffering's small copies cost more than the
/// compressions (in the static build, whose memcpy has a slow start for small sizes).
fn diffuse_sha256(buf: &mut [u8]) {
    const H0: [u32; 8] = [
        0x6a09_e667,
        0xbb67_ae85,
        0x3c6e_f372,
        0xa54f_f53a,
        0x510e_527f,
        0x9b05_688c,
        0x1f83_d9ab,
        0x5be0_cd19,
    ];
    let mut m = Zeroizing::new([[0u8; 64]; 1]);
    let mut state = Zeroizing::new([0u32; 8]);
    for (j, block) in buf.chunks_mut(32).enumerate() {
        let n = block.len();
        let msg = &mut m[0];
        msg.fill(0);
        msg[..4].copy_from_slice(&(j as u32).to_be_bytes());
        msg[4..4 + n].copy_from_slice(block);
        msg[4 + n] = 0x80;
        msg[56..].copy_from_slice(&(((4 + n) as u64) * 8).to_be_bytes());
        *state = H0;
        sha2::block_api::compress256(&mut state, &m[..]);
        for (out, word) in block.chunks_mut(4).zip(state.iter()) {
            out.copy_from_slice(&word.to_be_bytes()[..out.len()]);
        }
    }
}

/// Recovers the key (`key.len()` bytes) from `material` of `key.len() * STRIPES` bytes.
pub fn merge(hash: Hash, material: &[u8], key: &mut [u8]) -> Result<()> {
    let n = key.len();
    let stripes = material
        .get(..n * STRIPES)
        .ok_or_else(|| Error::meta("keyslot AF material is shorter than key_size * 4000"))?;
    let mut d = Zeroizing::new(vec![0u8; n]);
    let mut chunks = stripes.chunks_exact(n);
    for s in chunks.by_ref().take(STRIPES - 1) {
        xor_into(&mut d, s);
        diffuse(hash, &mut d);
    }
    let last = chunks
        .next()
        .ok_or_else(|| Error::meta("keyslot AF material is incomplete"))?;
    for ((k, a), b) in key.iter_mut().zip(d.iter()).zip(last) {
        *k = a ^ b;
    }
    Ok(())
}

/// Splits `key` into `key.len() * STRIPES` bytes of AF material, with random stripes
/// from the OS CSPRNG.
pub fn split(hash: Hash, key: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    let n = key.len();
    let mut material = Zeroizing::new(vec![0u8; n * STRIPES]);
    super::secret::fill_random(&mut material[..n * (STRIPES - 1)])?;
    let mut d = Zeroizing::new(vec![0u8; n]);
    for s in material[..n * (STRIPES - 1)].chunks_exact(n) {
        xor_into(&mut d, s);
        diffuse(hash, &mut d);
    }
    let last = &mut material[n * (STRIPES - 1)..];
    for ((o, a), b) in last.iter_mut().zip(d.iter()).zip(key) {
        *o = a ^ b;
    }
    Ok(material)
}

fn xor_into(dst: &mut [u8], src: &[u8]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d ^= s;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_then_merge_round_trips_for_every_hash_and_key_size() {
        for hash in [Hash::Sha1, Hash::Sha256, Hash::Sha512] {
            for n in [32usize, 64] {
                let key: Vec<u8> = (0..n as u8).collect();
                let m = split(hash, &key).unwrap();
                let mut out = vec![0u8; n];
                merge(hash, &m, &mut out).unwrap();
                assert_eq!(out, key, "{hash} {n}");
            }
        }
    }

    /// The diffuser computed independently with the hasher `D`, written out here.
    fn diffused<D: sha2::Digest>(orig: &[u8], size: usize) -> Vec<u8> {
        let mut expect = Vec::new();
        for (j, chunk) in orig.chunks(size).enumerate() {
            let mut h = D::new();
            h.update((j as u32).to_be_bytes());
            h.update(chunk);
            expect.extend_from_slice(&h.finalize()[..chunk.len()]);
        }
        expect
    }

    /// The SHA-256 fast path (one compression per block) against the hasher, for
    /// lengths with and without a short last block.
    #[test]
    fn diffuse_sha256_matches_the_hasher_for_every_length() {
        for len in [1usize, 4, 31, 32, 33, 63, 64, 65, 100, 128] {
            let orig: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let mut b = orig.clone();
            diffuse(Hash::Sha256, &mut b);
            assert_eq!(b, diffused::<sha2::Sha256>(&orig, 32), "length {len}");
        }
    }

    /// sha1 with a 64-byte key: three full 20-byte blocks and a 4-byte last block that
    /// is H(BE32(3) || 4 bytes) truncated.
    #[test]
    fn diffuse_with_short_last_block() {
        let mut b: Vec<u8> = (100..164u8).collect();
        let orig = b.clone();
        diffuse(Hash::Sha1, &mut b);
        let expect = diffused::<sha1::Sha1>(&orig, 20);
        assert_eq!(expect.len(), 64);
        assert_eq!(b, expect);
    }
}
