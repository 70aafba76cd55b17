//! A gocryptfs file read through a real file mapping (`read_in_place`, the path runs
//! of Apptainer's images take): every range reads back what was sealed, and a flipped
//! bit in the file is an error, never data, on the mapped path as on the copied one.

use std::io::Write;
use std::sync::Arc;

use veil_fusefs::gocryptfs::{self, DecryptedFile, ScryptCost, UnlockLimits};
use veil_fusefs::secret::Passphrase;
use veil_fusefs::source::{FileSource, ReadAt};

const CHEAP: ScryptCost = ScryptCost {
    log_n: 10,
    r: 8,
    p: 1,
};

fn limits() -> UnlockLimits {
    UnlockLimits {
        check_available_memory: false,
        ..Default::default()
    }
}

/// `bytes` in a new file, opened as a mapped source (and as a plain one).
fn sources(bytes: &[u8]) -> (tempfile::NamedTempFile, FileSource, FileSource) {
    let mut t = tempfile::NamedTempFile::new().unwrap();
    t.write_all(bytes).unwrap();
    t.flush().unwrap();
    let f = std::fs::File::open(t.path()).unwrap();
    // SAFETY: nothing writes the file while the source lives (the test writes it
    // before mapping it, and writes a damaged copy to a new file).
    let mapped = unsafe { FileSource::mapped(f, 0, bytes.len() as u64) }.unwrap();
    let plain = FileSource::open(t.path()).unwrap();
    (t, mapped, plain)
}

#[test]
fn mapped_and_copied_reads_agree_and_damage_is_an_error_on_both() {
    let pass = Passphrase::from_slice(b"mapped");
    let vol = gocryptfs::create(&pass, CHEAP, &limits(), "test").unwrap();
    let plain: Vec<u8> = (0..5 * 4096 + 123).map(|i| (i * 31 % 253) as u8).collect();
    let mut sealed = Vec::new();
    gocryptfs::seal_stream(&vol.key, &plain[..], &mut sealed, |_| ()).unwrap();
    let conf = gocryptfs::Config::parse(&vol.config).unwrap();
    let key = Arc::new(gocryptfs::unlock(&conf, &pass, &limits()).unwrap());

    let (_t, mapped, copied) = sources(&sealed);
    let mapped = DecryptedFile::open(mapped, key.clone()).unwrap();
    let copied = DecryptedFile::open(copied, key.clone()).unwrap();
    for (off, len) in [
        (0, plain.len()),
        (0, 4096),
        (4096, 8192),
        (1, 4095),
        (4000, 200),
        (5 * 4096, 123),
        (plain.len() - 1, 1),
    ] {
        let mut a = vec![0u8; len];
        let mut b = vec![1u8; len];
        mapped.read_exact_at(&mut a, off as u64).unwrap();
        copied.read_exact_at(&mut b, off as u64).unwrap();
        assert_eq!(a, plain[off..off + len], "mapped {off}+{len}");
        assert_eq!(b, plain[off..off + len], "copied {off}+{len}");
    }

    // A flipped bit in block 2's ciphertext.
    let mut bad = sealed.clone();
    bad[18 + 2 * 4128 + 16 + 7] ^= 0x20;
    let (_t2, mapped, copied) = sources(&bad);
    for f in [
        DecryptedFile::open(mapped, key.clone()).unwrap(),
        DecryptedFile::open(copied, key.clone()).unwrap(),
    ] {
        let mut buf = vec![0u8; 3 * 4096];
        let e = f.read_exact_at(&mut buf, 0).unwrap_err().to_string();
        assert!(e.contains("block 2 fails authentication"), "{e}");
        // The blocks around it still read.
        let mut one = vec![0u8; 4096];
        f.read_exact_at(&mut one, 4096).unwrap();
        assert_eq!(one, plain[4096..8192]);
    }
}
