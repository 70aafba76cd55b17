//! gocryptfs content decryption per core: AES-256-GCM with 16-byte nonces over 4096-byte
//! blocks (one gocryptfs block per call, with its 24 bytes of associated data, as the
//! reader decrypts them), with criterion, then a timed loop of each implementation whose
//! rates are printed next to `openssl speed -evp aes-256-gcm -decrypt -bytes 4096`
//! measured in the same run: the aes-gcm crate (veil's fallback), and veil's own
//! (`veil_fusefs::cipher::Aes256Gcm`: the VAES + VPCLMULQDQ kernel where the CPU runs
//! it). Compare with the AES-XTS figures of `benches/luks2.rs`.

use std::hint::black_box;
use std::process::Command;
use std::time::Instant;

use aes_gcm::aead::consts::U16;
use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::aes::Aes256;
use aes_gcm::{AesGcm, Nonce};
use criterion::{Criterion, Throughput};
use veil_fusefs::cipher::Aes256Gcm;

type Gcm = AesGcm<Aes256, U16>;
const BLOCK: usize = 4096;
const BLOCKS: usize = 4096; // 16 MiB per pass

/// A stored gocryptfs block: nonce, associated data (block number, file ID), ciphertext,
/// tag.
type Sealed = ([u8; 16], [u8; 24], Vec<u8>, [u8; 16]);

/// 16 MiB of gocryptfs-like blocks.
fn sealed(g: &Gcm) -> Vec<Sealed> {
    (0..BLOCKS)
        .map(|i| {
            let mut nonce = [7u8; 16];
            nonce[..8].copy_from_slice(&(i as u64).to_le_bytes());
            let mut aad = [9u8; 24];
            aad[..8].copy_from_slice(&(i as u64).to_be_bytes());
            let mut data = vec![0x5au8; BLOCK];
            let tag = g
                .encrypt_inout_detached(
                    &Nonce::<U16>::try_from(&nonce[..]).unwrap(),
                    &aad,
                    data.as_mut_slice().into(),
                )
                .unwrap();
            (nonce, aad, data, tag.into())
        })
        .collect()
}

/// Decrypts every block with the aes-gcm crate.
fn pass_crate(g: &Gcm, blocks: &[Sealed], out: &mut [u8]) {
    for (nonce, aad, ct, tag) in blocks {
        let buf = aes_gcm::aead::inout::InOutBuf::new(ct, &mut out[..BLOCK]).unwrap();
        g.decrypt_inout_detached(
            &Nonce::<U16>::try_from(&nonce[..]).unwrap(),
            aad,
            buf,
            &aes_gcm::Tag::<U16>::try_from(&tag[..]).unwrap(),
        )
        .unwrap();
    }
}

/// Decrypts every block with veil's AES-GCM.
fn pass_veil(g: &Aes256Gcm, blocks: &[Sealed], out: &mut [u8]) {
    for (nonce, aad, ct, tag) in blocks {
        g.decrypt(nonce, aad, ct, &mut out[..BLOCK], tag).unwrap();
    }
}

fn openssl_rate() -> Option<f64> {
    let out = Command::new("openssl")
        .args([
            "speed",
            "-evp",
            "aes-256-gcm",
            "-decrypt",
            "-seconds",
            "2",
            "-mr",
            "-bytes",
        ])
        .arg(BLOCK.to_string())
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with("+F:"))
        .and_then(|l| l.rsplit(':').next())
        .and_then(|v| v.trim().parse().ok())
}

/// Bytes per second of `pass` repeated for two seconds.
fn rate(mut pass: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut n = 0usize;
    while start.elapsed().as_secs_f64() < 2.0 {
        pass();
        n += 1;
    }
    (n * BLOCK * BLOCKS) as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let key = [3u8; 32];
    let g = Gcm::new_from_slice(&key).unwrap();
    let veil = Aes256Gcm::new(&key);
    let blocks = sealed(&g);
    let mut out = vec![0u8; BLOCK];
    let mut c = Criterion::default().configure_from_args();
    let mut group = c.benchmark_group("gcm_decrypt_per_core");
    group.throughput(Throughput::Bytes((BLOCK * BLOCKS) as u64));
    group.sample_size(20);
    group.bench_function("aes-gcm-crate/aes-256-gcm-iv128/4096", |b| {
        b.iter(|| pass_crate(&g, black_box(&blocks), &mut out))
    });
    group.bench_function("veil/aes-256-gcm-iv128/4096", |b| {
        b.iter(|| pass_veil(&veil, black_box(&blocks), &mut out))
    });
    group.finish();
    // Plain timed loops for the comparison line.
    let krate = rate(|| pass_crate(&g, &blocks, &mut out));
    let ours = rate(|| pass_veil(&veil, &blocks, &mut out));
    print!(
        "\n== AES-256-GCM decryption of 4096-byte blocks, one core: aes-gcm crate {:.2} GB/s \
         | veil ({}) {:.2} GB/s",
        krate / 1e9,
        veil.implementation(),
        ours / 1e9
    );
    match openssl_rate() {
        Some(o) => println!(
            " | openssl {:.2} GB/s (veil/openssl {:.2})",
            o / 1e9,
            ours / o
        ),
        None => println!(" | openssl not available"),
    }
}
