//! LUKS2 benchmarks.
//!
//! 1. AES-XTS decryption per core (512- and 4096-byte sectors, 16 MiB buffers),
//!    with criterion, then a plain timed loop whose rate is printed next to
//!    `openssl speed -evp aes-256-xts -decrypt` measured in the same run
//!    (goal: ≥ 0.9× OpenSSL).
//! 2. Sequential 128 KiB reads (a FUSE read's size) through an unlocked volume
//!    on a file, the ciphertext read with pread then decrypted, against decrypted
//!    in place from a mapping of the file (how veil reads encrypted images).
//! 3. argon2id unlock of a keyslot made by cryptsetup, timed against
//!    `cryptsetup open --test-passphrase` on the same volume file (goal: ≤ 1.1×).
//!
//! Set `VEIL_BENCH_ARGON2_MIB` (default 512) to change the keyslot's memory cost,
//! `VEIL_BENCH_NO_ARGON2=1` to skip part 2.

use std::hint::black_box;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use veil_fusefs::luks2::{
    self, CreateOptions, KdfChoice, KdfParams, KeyslotOptions, Passphrase, UnlockOptions, Xts,
};
use veil_fusefs::source::{FileSource, ReadAt};

const BUF: usize = 16 << 20;

fn xts_criterion(c: &mut Criterion) {
    let key: Vec<u8> = (0..64u8).collect();
    let mut g = c.benchmark_group("xts_decrypt_per_core");
    g.throughput(Throughput::Bytes(BUF as u64));
    g.sample_size(20);
    for ss in [512usize, 4096] {
        let x = Xts::new(&key, ss).unwrap();
        let mut buf = vec![0x5au8; BUF];
        g.bench_function(format!("aes-256-xts/{ss}"), |b| {
            b.iter(|| x.decrypt_serial(black_box(&mut buf), 0))
        });
    }
    g.finish();
}

fn volume_reads(c: &mut Criterion) {
    const PAYLOAD: usize = 64 << 20;
    const READ: usize = 128 << 10;
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("vol.img");
    let pass = Passphrase::from_slice(b"bench");
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let payload: Vec<u8> = (0..PAYLOAD)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let mut g = c.benchmark_group("volume_read_128k");
    g.throughput(Throughput::Bytes(PAYLOAD as u64));
    g.sample_size(20);
    for ss in [512u32, 4096] {
        let opts = CreateOptions {
            sector_size: ss,
            keyslot: KeyslotOptions {
                kdf: KdfChoice::Fixed(KdfParams::Pbkdf2 {
                    hash: "sha256".into(),
                    iterations: 1000,
                }),
                ..KeyslotOptions::default()
            },
            digest_iterations: Some(1000),
            ..CreateOptions::default()
        };
        let out = std::fs::File::create(&img).unwrap();
        luks2::create(out, &payload[..], PAYLOAD as u64, &pass, &opts).unwrap();
        for (name, src) in [
            ("pread", FileSource::open(&img).unwrap()),
            ("mapped", mapped_source(&img)),
        ] {
            let v = luks2::unlock(src, &pass, &UnlockOptions::default()).unwrap();
            let mut buf = vec![0u8; READ];
            // Squashfs blocks rarely start on a sector: offsets are shifted by 100.
            g.bench_function(format!("{name}/{ss}"), |b| {
                b.iter(|| {
                    let mut at = 100u64;
                    while at + READ as u64 <= PAYLOAD as u64 {
                        v.read_exact_at(black_box(&mut buf), at).unwrap();
                        at += READ as u64;
                    }
                })
            });
        }
    }
    g.finish();
}

/// CPU time this thread has run, in seconds (`/proc/thread-self/schedstat`, ns).
fn thread_cpu_secs() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: f64 = s.split_whitespace().next()?.parse().ok()?;
    Some(ns / 1e9)
}

/// Bytes per second of single-threaded decryption over a 16 MiB buffer:
/// (per CPU second, per wall second). `openssl speed` divides by CPU time too,
/// so the first is the fair comparison on a busy machine.
fn own_rate(ss: usize, len: usize) -> (f64, f64) {
    let key: Vec<u8> = (0..64u8).collect();
    let x = Xts::new(&key, ss).unwrap();
    let mut buf = vec![0x5au8; len];
    x.decrypt_serial(&mut buf, 0); // warm up
    let cpu0 = thread_cpu_secs();
    let t = Instant::now();
    let mut n = 0u64;
    while t.elapsed() < Duration::from_secs(2) {
        x.decrypt_serial(black_box(&mut buf), n);
        n += 1;
    }
    let wall = t.elapsed().as_secs_f64();
    let bytes = n as f64 * len as f64;
    let cpu = match (cpu0, thread_cpu_secs()) {
        (Some(a), Some(b)) if b > a => b - a,
        _ => wall,
    };
    (bytes / cpu, bytes / wall)
}

/// OpenSSL's single-threaded aes-256-xts decryption rate (bytes/s) for `bytes`-sized calls.
fn openssl_rate(bytes: usize) -> Option<f64> {
    let out = Command::new("openssl")
        .args([
            "speed",
            "-evp",
            "aes-256-xts",
            "-decrypt",
            "-seconds",
            "2",
            "-mr",
            "-bytes",
        ])
        .arg(bytes.to_string())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "+F:<n>:AES-256-XTS:<bytes per second>"
    text.lines()
        .find(|l| l.starts_with("+F:"))
        .and_then(|l| l.rsplit(':').next())
        .and_then(|v| v.trim().parse().ok())
}

fn xts_vs_openssl() {
    println!(
        "\n== AES-256-XTS decryption, one core (openssl speed divides by CPU time; so does veil's figure) =="
    );
    let best_openssl = openssl_rate(16384);
    for ss in [512usize, 4096] {
        let (ours, wall) = own_rate(ss, BUF);
        let (hot, _) = own_rate(ss, 64 << 10);
        let theirs = openssl_rate(ss);
        print!(
            "veil {ss:>4}-byte sectors: 16 MiB buffer {:.2} GB/s per CPU-second ({:.2} wall), 64 KiB (in cache, like openssl's) {:.2} GB/s",
            ours / 1e9,
            wall / 1e9,
            hot / 1e9
        );
        if let Some(o) = theirs {
            print!(
                " | openssl -bytes {ss}: {:.2} GB/s (ratio {:.2}, in cache {:.2})",
                o / 1e9,
                ours / o,
                hot / o
            );
        }
        if let Some(o) = best_openssl {
            print!(
                " | openssl -bytes 16384: {:.2} GB/s (ratio {:.2}, in cache {:.2})",
                o / 1e9,
                ours / o,
                hot / o
            );
        }
        println!();
    }
    if best_openssl.is_none() {
        println!("openssl not available: no comparison");
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn argon2_vs_cryptsetup() {
    println!("\n== argon2id unlock: veil vs cryptsetup open --test-passphrase ==");
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/interop");
    if !shared.join("make-luks2").is_file()
        || !Command::new("cryptsetup")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    {
        println!("SKIP: shared/interop or cryptsetup not available");
        return;
    }
    let mib: u32 = std::env::var("VEIL_BENCH_ARGON2_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512);
    let cpus = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(4);
    let dir = tempfile::tempdir().unwrap();
    let payload = dir.path().join("payload");
    std::fs::write(&payload, b"benchmark payload").unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, b"bench passphrase").unwrap();
    let img = dir.path().join("vol.img");
    let st = Command::new("/usr/bin/python3")
        .arg(shared.join("make-luks2"))
        .args(["-q", "-k"])
        .arg(&key)
        .args([
            "--pbkdf",
            "argon2id",
            "--pbkdf-force-iterations",
            "4",
            "--pbkdf-memory",
        ])
        .arg((mib * 1024).to_string())
        .arg("--pbkdf-parallel")
        .arg(cpus.to_string())
        .args(["--offset", "4096"])
        .arg(&payload)
        .arg(&img)
        .status()
        .unwrap();
    assert!(st.success(), "make-luks2 failed");
    println!("keyslot: argon2id time 4, memory {mib} MiB, {cpus} lanes");

    let pass = Passphrase::from_slice(b"bench passphrase");
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let v = luks2::unlock(
            FileSource::open(&img).unwrap(),
            &pass,
            &UnlockOptions::default(),
        )
        .unwrap();
        ours.push(t.elapsed());
        drop(v);
        let t = Instant::now();
        let st = Command::new("cryptsetup")
            .args(["open", "--test-passphrase", "--disable-locks", "--key-file"])
            .arg(&key)
            .arg(&img)
            .status()
            .unwrap();
        theirs.push(t.elapsed());
        assert!(st.success(), "cryptsetup open --test-passphrase failed");
    }
    let (o, c) = (median(ours), median(theirs));
    println!(
        "veil unlock {:.3} s | cryptsetup --test-passphrase {:.3} s | ratio {:.2} (medians of 3)",
        o.as_secs_f64(),
        c.as_secs_f64(),
        o.as_secs_f64() / c.as_secs_f64()
    );
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    xts_criterion(&mut c);
    volume_reads(&mut c);
    c.final_summary();
    // The comparisons below are not criterion benchmarks; skip them when
    // criterion is only listing or testing benches.
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list" || a == "--test") {
        return;
    }
    xts_vs_openssl();
    if std::env::var_os("VEIL_BENCH_NO_ARGON2").is_none() {
        argon2_vs_cryptsetup();
    }
}

/// The volume file through a mapping, as veil opens encrypted images.
fn mapped_source(img: &std::path::Path) -> FileSource {
    let len = std::fs::metadata(img).unwrap().len();
    // SAFETY: nothing writes the file in place while it is mapped (one test
    // truncates it, which the mapping handles).
    unsafe { FileSource::mapped(std::fs::File::open(img).unwrap(), 0, len) }.unwrap()
}
