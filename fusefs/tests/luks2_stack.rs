//! Unlocking and creating a volume do not leave its key on the stack: the key
//! schedules and copies made in the frames below the caller are wiped before the
//! call returns. Looked for through /proc/self/mem in the stack just below the
//! caller's frame.

use std::io::{Read, Seek, SeekFrom};

use veil_fusefs::luks2::{
    self, CreateOptions, KdfChoice, KdfParams, KeyslotOptions, Passphrase, UnlockOptions, VolumeKey,
};
use veil_fusefs::source::FileSource;

/// `len` bytes of this thread's stack below `top` (an address in a live frame).
fn stack_below(top: usize, len: usize) -> Vec<u8> {
    let mut f = std::fs::File::open("/proc/self/mem").unwrap();
    f.seek(SeekFrom::Start((top - len) as u64)).unwrap();
    let mut b = vec![0u8; len];
    f.read_exact(&mut b).unwrap();
    b
}

/// Which 16-byte pieces of `key` occur in `hay` (AES round key 0 is the key itself).
fn pieces_found(hay: &[u8], key: &[u8]) -> Vec<usize> {
    key.chunks(16)
        .enumerate()
        .filter(|(_, k)| hay.windows(16).any(|w| w == *k))
        .map(|(i, _)| i)
        .collect()
}

#[test]
fn no_volume_key_left_on_the_stack() {
    // A key that appears nowhere else.
    let key: Vec<u8> = (0..64u32).map(|i| (i * 37 + 11) as u8 ^ 0x5a).collect();
    let opts = CreateOptions {
        volume_key: Some(VolumeKey::from_slice(&key).unwrap()),
        keyslot: KeyslotOptions {
            kdf: KdfChoice::Fixed(KdfParams::Pbkdf2 {
                hash: "sha256".into(),
                iterations: 1000,
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("v.img");
    let payload = vec![7u8; 8192];
    let pass = Passphrase::new(b"pw".to_vec());
    // Fresh threads: their stacks hold nothing but one call each.
    let out = std::thread::spawn(move || {
        let marker = 0u8;
        let top = std::hint::black_box(&marker) as *const u8 as usize;
        let mut out = Vec::new();
        luks2::create(&mut out, &payload[..], payload.len() as u64, &pass, &opts).unwrap();
        let found = pieces_found(&stack_below(top, 48 << 10), &key);
        assert!(
            found.is_empty(),
            "create left key pieces {found:?} on the stack"
        );
        (out, key, pass)
    })
    .join()
    .unwrap();
    let (out, key, pass) = out;
    std::fs::write(&img, &out).unwrap();
    std::thread::spawn(move || {
        let marker = 0u8;
        let top = std::hint::black_box(&marker) as *const u8 as usize;
        let src = FileSource::open(&img).unwrap();
        let v = luks2::unlock(src, &pass, &UnlockOptions::default()).unwrap();
        let found = pieces_found(&stack_below(top, 48 << 10), &key);
        assert!(
            found.is_empty(),
            "unlock left key pieces {found:?} on the stack"
        );
        drop(v);
    })
    .join()
    .unwrap();
}

/// The key as the test keeps it: every byte flipped, so that the test's own copy is
/// never the key's bytes, and a search finds only what the library left.
struct Masked(Vec<u8>);

impl Masked {
    fn found_in(&self, hay: &[u8]) -> Vec<usize> {
        self.0
            .chunks(16)
            .enumerate()
            .filter(|(_, m)| {
                hay.windows(16)
                    .any(|w| w.iter().zip(m.iter()).all(|(&h, &k)| h == k ^ 0xff))
            })
            .map(|(i, _)| i)
            .collect()
    }
}

/// Readable memory of this process that is not marked to be left out of core dumps
/// (guarded key memory is), region by region, as (description, bytes).
fn ordinary_memory() -> Vec<(String, Vec<u8>)> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let mut mem = std::fs::File::open("/proc/self/mem").unwrap();
    let mut out = Vec::new();
    let mut current: Option<(u64, u64, String)> = None;
    let mut flush = |r: Option<(u64, u64, String)>, dontdump: bool| {
        if let Some((start, end, desc)) = r
            && !dontdump
        {
            let mut b = vec![0u8; (end - start) as usize];
            if mem.seek(SeekFrom::Start(start)).is_ok() && mem.read_exact(&mut b).is_ok() {
                out.push((desc, b));
            } else {
                // Another test thread may have unmapped part of the region since smaps
                // was read: take it page by page, what is still there.
                b.fill(0);
                for (i, page) in b.chunks_mut(4096).enumerate() {
                    let at = start + (i * 4096) as u64;
                    if mem.seek(SeekFrom::Start(at)).is_ok() {
                        let _ = mem.read_exact(page);
                    }
                }
                out.push((desc, b));
            }
        }
    };
    let mut dontdump = false;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((a, b)) = first.split_once('-')
            && let (Ok(start), Ok(end)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16))
        {
            flush(current.take(), dontdump);
            dontdump = false;
            let perms = line.split_whitespace().nth(1).unwrap_or("");
            // Only private, readable, writable memory can hold what the code made.
            if perms.starts_with("rw") && end - start <= 1 << 30 {
                current = Some((start, end, line.to_string()));
            }
        } else if let Some(flags) = line.strip_prefix("VmFlags:") {
            dontdump = flags.split_whitespace().any(|f| f == "dd");
        }
    }
    flush(current.take(), dontdump);
    out
}

#[test]
fn no_volume_key_in_ordinary_memory_after_an_argon2_unlock() {
    // argon2id with two lanes: the derivation runs on worker threads of its own.
    let masked = Masked(
        (0..64u32)
            .map(|i| ((i * 53 + 7) as u8 ^ 0x3c) ^ 0xff)
            .collect(),
    );
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("a.img");
    {
        let key = zeroize::Zeroizing::new(masked.0.iter().map(|b| b ^ 0xff).collect::<Vec<u8>>());
        let opts = CreateOptions {
            volume_key: Some(VolumeKey::from_slice(&key).unwrap()),
            keyslot: KeyslotOptions {
                kdf: KdfChoice::Fixed(KdfParams::Argon2 {
                    variant: luks2::Argon2Variant::Argon2id,
                    time: 1,
                    memory_kib: 1024,
                    cpus: 2,
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let mut out = Vec::new();
        let payload = vec![7u8; 8192];
        let pass = Passphrase::new(b"pw".to_vec());
        luks2::create(&mut out, &payload[..], payload.len() as u64, &pass, &opts).unwrap();
        std::fs::write(&img, &out).unwrap();
    }
    let pass = Passphrase::new(b"pw".to_vec());
    let v = std::thread::spawn(move || {
        let src = FileSource::open(&img).unwrap();
        luks2::unlock(src, &pass, &UnlockOptions::default()).unwrap()
    })
    .join()
    .unwrap();
    // The search sees ordinary memory: a copy of a key piece on the heap is found.
    let mut canary: Vec<u8> = masked.0[16..32].iter().map(|b| b ^ 0xff).collect();
    let seen = ordinary_memory()
        .iter()
        .any(|(_, bytes)| masked.found_in(bytes).contains(&1));
    zeroize::Zeroize::zeroize(&mut canary);
    drop(canary);
    assert!(seen, "the memory search does not see the heap");
    let leaks: Vec<String> = ordinary_memory()
        .iter()
        .filter_map(|(desc, bytes)| {
            let f = masked.found_in(bytes);
            (!f.is_empty()).then(|| format!("pieces {f:?} in {desc}"))
        })
        .collect();
    assert!(
        leaks.is_empty(),
        "key bytes outside guarded memory:\n{}",
        leaks.join("\n")
    );
    drop(v);
}
