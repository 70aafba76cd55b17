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
