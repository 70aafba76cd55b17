//! The three-pass path: per batch, the sectors' initial tweaks in one multi-block
//! AES call, the first tweak XOR, the `aes` crate's multi-block AES, the second
//! XOR.

#![forbid(unsafe_code)]

use aes::Block;
use aes::cipher::array::Array;
use aes::cipher::{BlockCipherDecrypt, BlockCipherEncrypt};

use super::Dir;
use super::simd::Simd;

/// Blocks per batch: 8 KiB, two 4096-byte sectors or sixteen 512-byte ones.
/// Data plus tweaks (16 KiB) stay in L1 across the three passes; fewer, larger
/// batches also halve the `aes` crate's per-call cost (it broadcasts the round
/// keys into 512-bit registers on every call).
pub(super) const BATCH_BLOCKS: usize = 512;

// `as_chunks_mut` is Rust 1.88; the `aes` 0.9.4 dependency (runtime VAES
// detection) needs Rust 1.89 anyway.
#[allow(clippy::incompatible_msrv)]
pub(super) fn crypt<C>(
    data_key: &C,
    tweak_key: &C,
    ss: usize,
    simd: Simd,
    buf: &mut [u8],
    first_iv: u64,
    dir: Dir,
) where
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
            simd.apply_tweaks(&(*b0).into(), sector, tw);
        }
        let (ablocks, _) = Array::slice_as_chunks_mut(batch);
        match dir {
            Dir::Decrypt => data_key.decrypt_blocks(ablocks),
            Dir::Encrypt => data_key.encrypt_blocks(ablocks),
        }
        let (blocks, _) = batch.as_chunks_mut::<16>();
        simd.xor_tweaks(blocks, &tweaks[..nsec * bps]);
    }
    // Tweaks are derived from the key: do not leave them on the stack.
    zeroize::Zeroize::zeroize(&mut tweaks);
    for b in &mut t0 {
        zeroize::Zeroize::zeroize(b.as_mut_slice());
    }
}
