//! gocryptfs content decryption per core: AES-256-GCM with 16-byte nonces over 4096-byte
//! blocks (one gocryptfs block per call, as the reader decrypts them), with criterion,
//! then a timed loop whose rate is printed next to `openssl speed -evp aes-256-gcm
//! -decrypt -bytes 4096` measured in the same run. The goal is AES-GCM at the
//! AES unit's speed; compare with the AES-XTS figures of `benches/luks2.rs`.

use std::hint::black_box;
use std::process::Command;
use std::time::Instant;

use aes_gcm::aead::consts::U16;
use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::aes::Aes256;
use aes_gcm::{AesGcm, Nonce};
use criterion::{Criterion, Throughput};

type Gcm = AesGcm<Aes256, U16>;
const BLOCK: usize = 4096;
const BLOCKS: usize = 4096; // 16 MiB per pass

/// 16 MiB of gocryptfs-like blocks: (nonce, ciphertext, tag) for each.
fn sealed(g: &Gcm) -> Vec<([u8; 16], Vec<u8>, [u8; 16])> {
    (0..BLOCKS)
        .map(|i| {
            let mut nonce = [7u8; 16];
            nonce[..8].copy_from_slice(&(i as u64).to_le_bytes());
            let mut data = vec![0x5au8; BLOCK];
            let tag = g
                .encrypt_inout_detached(
                    &Nonce::<U16>::try_from(&nonce[..]).unwrap(),
                    &(i as u64).to_be_bytes(),
                    data.as_mut_slice().into(),
                )
                .unwrap();
            (nonce, data, tag.into())
        })
        .collect()
}

fn pass(g: &Gcm, blocks: &[([u8; 16], Vec<u8>, [u8; 16])], out: &mut [u8]) {
    for (i, (nonce, ct, tag)) in blocks.iter().enumerate() {
        let buf = aes_gcm::aead::inout::InOutBuf::new(ct, &mut out[..BLOCK]).unwrap();
        g.decrypt_inout_detached(
            &Nonce::<U16>::try_from(&nonce[..]).unwrap(),
            &(i as u64).to_be_bytes(),
            buf,
            &aes_gcm::Tag::<U16>::try_from(&tag[..]).unwrap(),
        )
        .unwrap();
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

fn main() {
    let g = Gcm::new_from_slice(&[3u8; 32]).unwrap();
    let blocks = sealed(&g);
    let mut out = vec![0u8; BLOCK];
    let mut c = Criterion::default().configure_from_args();
    let mut group = c.benchmark_group("gcm_decrypt_per_core");
    group.throughput(Throughput::Bytes((BLOCK * BLOCKS) as u64));
    group.sample_size(20);
    group.bench_function("aes-256-gcm-iv128/4096", |b| {
        b.iter(|| pass(&g, black_box(&blocks), &mut out))
    });
    group.finish();
    // A plain timed loop for the comparison line.
    let start = Instant::now();
    let mut n = 0usize;
    while start.elapsed().as_secs_f64() < 2.0 {
        pass(&g, &blocks, &mut out);
        n += 1;
    }
    let ours = (n * BLOCK * BLOCKS) as f64 / start.elapsed().as_secs_f64();
    print!(
        "\n== AES-256-GCM decryption of 4096-byte blocks, one core: veil (aes-gcm crate) {:.2} GB/s",
        ours / 1e9
    );
    match openssl_rate() {
        Some(o) => println!(" | openssl {:.2} GB/s (ratio {:.2})", o / 1e9, ours / o),
        None => println!(" | openssl not available"),
    }
}
