//! Making gocryptfs volumes as Apptainer's unprivileged builds do (`gocryptfs -init
//! -deterministic-names -plaintextnames`, then the image written through the mount):
//! a random 32-byte master key wrapped under the password in a new
//! `gocryptfs.conf`, and files sealed block by block under the content key. Also the
//! re-wrapping of an existing master key for another password, which is all that
//! changing a gocryptfs volume's password is: the content stays as it is.

#![forbid(unsafe_code)]

use std::io::{Read, Write};

use super::config::{self, Config, ScryptCost};
use super::content::{BLOCK, seal_block};
use super::error::{Error, Result};
use super::keys::{self, ContentKey, UnlockLimits};
use crate::secret::{Passphrase, SecretBytes};

/// gocryptfs's default scrypt cost: N = 2^16, r = 8, p = 1 (64 MiB).
pub const DEFAULT_SCRYPT: ScryptCost = ScryptCost {
    log_n: 16,
    r: 8,
    p: 1,
};

/// The lowest scrypt cost gocryptfs accepts (`-scryptn 10`).
pub const MIN_LOG_N: u8 = 10;
/// The highest this implementation writes: 2^20, 1 GiB of memory, what veil opens
/// without `--max-kdf-cost` (gocryptfs allows up to 2^28, 32 GiB).
pub const MAX_LOG_N: u8 = 20;

/// The longest password gocryptfs reads.
pub const MAX_PASSWORD: usize = 2048;

/// A new volume: its configuration file and the key to seal its files with.
pub struct NewVolume {
    /// `gocryptfs.conf`'s bytes.
    pub config: Vec<u8>,
    pub key: ContentKey,
}

/// Checks that gocryptfs would read `passphrase` as it is: not empty, and with no
/// newline (gocryptfs stops at the first one, so the rest would silently not count).
pub fn check_password(passphrase: &Passphrase) -> Result<()> {
    let b = passphrase.bytes();
    if b.is_empty() {
        return Err(Error::Password("it is empty".into()));
    }
    if b.len() > MAX_PASSWORD {
        return Err(Error::Password(format!(
            "it is {} bytes long, and gocryptfs reads at most {MAX_PASSWORD}",
            b.len()
        )));
    }
    if b.contains(&b'\n') {
        return Err(Error::Password(
            "it holds a newline, and gocryptfs reads a password only up to the first one".into(),
        ));
    }
    Ok(())
}

fn check_cost(cost: ScryptCost) -> Result<()> {
    if !(MIN_LOG_N..=MAX_LOG_N).contains(&cost.log_n) {
        return Err(Error::Config(format!(
            "scrypt N = 2^{} (from 2^{MIN_LOG_N} to 2^{MAX_LOG_N})",
            cost.log_n
        )));
    }
    Ok(())
}

fn random_salt() -> Result<[u8; 32]> {
    let mut salt = [0u8; 32];
    crate::secret::fill_random(&mut salt).map_err(|e| Error::Crypto(e.to_string()))?;
    Ok(salt)
}

/// A new volume for `passphrase`, its master key wrapped with scrypt at `cost`.
/// `creator` goes into the file's `Creator` field (gocryptfs shows it, nothing checks
/// it).
/// The cost must also fit `limits`, as an unlock's would.
pub fn create(
    passphrase: &Passphrase,
    cost: ScryptCost,
    limits: &UnlockLimits,
    creator: &str,
) -> Result<NewVolume> {
    check_password(passphrase)?;
    check_cost(cost)?;
    keys::check_cost(cost, limits)?;
    crate::secret::scrubbed(|| {
        let mut master = SecretBytes::with_capacity(32);
        master.set_len(32);
        crate::secret::fill_random(master.as_mut_slice())
            .map_err(|e| Error::Crypto(e.to_string()))?;
        let salt = random_salt()?;
        let wrapped =
            keys::wrap_master(master.as_slice(), keys::password(passphrase), &salt, cost)?;
        Ok(NewVolume {
            config: config::write(creator, &salt, cost, &wrapped)?,
            key: keys::content_key(master.as_slice())?,
        })
    })
}

/// `gocryptfs.conf` for the same master key under `new` (a new salt; the cost of the
/// current file unless `cost` says otherwise). `current` must unwrap the key: a
/// wrong one is [`Error::WrongPassphrase`]. The content needs no change.
pub fn rewrap(
    config: &Config,
    current: &Passphrase,
    new: &Passphrase,
    cost: Option<ScryptCost>,
    limits: &UnlockLimits,
    creator: &str,
) -> Result<Vec<u8>> {
    check_password(new)?;
    // (The range applies to a cost given now; the file's own is bounded by `limits`,
    // as for an unlock, and kept.)
    if let Some(c) = cost {
        check_cost(c)?;
    }
    let cost = cost.unwrap_or(config.scrypt);
    keys::check_cost(config.scrypt, limits)?;
    keys::check_cost(cost, limits)?;
    crate::secret::scrubbed(|| {
        let master = keys::unwrap_master(config, current)?;
        let salt = random_salt()?;
        let wrapped = keys::wrap_master(master.as_slice(), keys::password(new), &salt, cost)?;
        config::write(creator, &salt, cost, &wrapped)
    })
}

/// Seals everything `input` yields as one gocryptfs file into `out` (a header with a
/// random file ID, then the blocks), calling `progress` with each block's plaintext
/// length. Returns the bytes written. An empty input is an empty file, as gocryptfs
/// stores it.
pub fn seal_stream(
    key: &ContentKey,
    mut input: impl Read,
    mut out: impl Write,
    mut progress: impl FnMut(u64),
) -> Result<u64> {
    let mut block = zeroize::Zeroizing::new(vec![0u8; BLOCK as usize]);
    let mut file_id = [0u8; 16];
    let mut written = 0u64;
    let mut n = 0u64;
    let mut stored = Vec::with_capacity(BLOCK as usize + 32);
    loop {
        let len = fill(&mut input, &mut block)?;
        if len == 0 {
            break;
        }
        if n == 0 {
            // gocryptfs refuses a file ID of zeros, as veil does; random bytes make
            // one with probability 2^-128, but the check costs nothing.
            while file_id == [0u8; 16] {
                crate::secret::fill_random(&mut file_id)
                    .map_err(|e| Error::Crypto(e.to_string()))?;
            }
            out.write_all(&2u16.to_be_bytes()).map_err(Error::Write)?;
            out.write_all(&file_id).map_err(Error::Write)?;
            written += super::content::HEADER_LEN;
        }
        stored.clear();
        seal_block(key, n, &file_id, &block[..len], &mut stored)?;
        out.write_all(&stored).map_err(Error::Write)?;
        written += stored.len() as u64;
        progress(len as u64);
        n += 1;
        if len < BLOCK as usize {
            break;
        }
    }
    out.flush().map_err(Error::Write)?;
    Ok(written)
}

/// Reads until `buf` is full or the input ends; returns how much was read.
fn fill(input: &mut impl Read, buf: &mut [u8]) -> Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match input.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::Input(e)),
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::gocryptfs::{DecryptedFile, unlock};
    use crate::source::ReadAt;

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

    struct Mem(Vec<u8>);
    impl ReadAt for Mem {
        fn len(&self) -> u64 {
            self.0.len() as u64
        }
        fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
            crate::source::check_range(self.len(), offset, buf.len())?;
            buf.copy_from_slice(&self.0[offset as usize..offset as usize + buf.len()]);
            Ok(())
        }
    }

    #[test]
    fn a_new_volume_opens_with_its_password_and_reads_back_what_was_sealed() {
        let pass = Passphrase::from_slice(b"correct horse");
        let v = create(&pass, CHEAP, &limits(), "veil test").unwrap();
        let text = String::from_utf8(v.config.clone()).unwrap();
        assert!(text.starts_with("{\n\t\"Creator\": \"veil test\",\n\t\"EncryptedKey\": "));
        assert!(text.contains("\"N\": 1024"));
        let conf = Config::parse(&v.config).unwrap();
        assert_eq!(conf.scrypt, CHEAP);
        assert_eq!(conf.feature_flags, ["HKDF", "GCMIV128", "PlaintextNames"]);
        for len in [0usize, 1, 4095, 4096, 4097, 3 * 4096, 3 * 4096 + 17] {
            let plain: Vec<u8> = (0..len).map(|i| (i * 13 % 256) as u8).collect();
            let mut sealed = Vec::new();
            let mut seen = 0;
            let n = seal_stream(&v.key, &plain[..], &mut sealed, |k| seen += k).unwrap();
            assert_eq!((n as usize, seen as usize), (sealed.len(), len));
            // Opened with a key derived from the file, not the one that sealed it.
            let key = unlock(&conf, &pass, &limits()).unwrap();
            let f = DecryptedFile::open(Mem(sealed), Arc::new(key)).unwrap();
            let mut back = vec![0u8; len];
            f.read_exact_at(&mut back, 0).unwrap();
            assert_eq!(back, plain, "{len}");
        }
        assert!(matches!(
            unlock(&conf, &Passphrase::from_slice(b"wrong"), &limits()),
            Err(Error::WrongPassphrase)
        ));
    }

    #[test]
    fn rewrapping_keeps_the_content_key_and_only_the_new_password_opens_it() {
        let old = Passphrase::from_slice(b"old");
        let new = Passphrase::from_slice(b"0123456789abcdef0123456789abcdef");
        let v = create(&old, CHEAP, &limits(), "veil test").unwrap();
        let mut sealed = Vec::new();
        seal_stream(&v.key, &b"payload"[..], &mut sealed, |_| ()).unwrap();
        let conf = Config::parse(&v.config).unwrap();
        let again = rewrap(&conf, &old, &new, None, &limits(), "veil test").unwrap();
        let conf2 = Config::parse(&again).unwrap();
        assert_ne!(conf2.salt, conf.salt);
        assert!(matches!(
            unlock(&conf2, &old, &limits()),
            Err(Error::WrongPassphrase)
        ));
        let key = unlock(&conf2, &new, &limits()).unwrap();
        let f = DecryptedFile::open(Mem(sealed), Arc::new(key)).unwrap();
        let mut back = [0u8; 7];
        f.read_exact_at(&mut back, 0).unwrap();
        assert_eq!(&back, b"payload");
        // A wrong current password rewraps nothing.
        assert!(matches!(
            rewrap(&conf, &new, &old, None, &limits(), "x"),
            Err(Error::WrongPassphrase)
        ));
    }

    #[test]
    fn passwords_gocryptfs_would_read_differently_are_refused() {
        let long = vec![b'x'; MAX_PASSWORD + 1];
        for bad in [&b""[..], b"two\nlines", b"trailing\n", &long] {
            assert!(create(&Passphrase::from_slice(bad), CHEAP, &limits(), "x").is_err());
        }
        let too_cheap = ScryptCost { log_n: 9, ..CHEAP };
        assert!(create(&Passphrase::from_slice(b"p"), too_cheap, &limits(), "x").is_err());
    }
}
