//! From the password to the content key: scrypt (the config's cost, checked against
//! the memory allowed), HKDF-SHA256 to the key-wrapping key, AES-256-GCM (16-byte
//! nonce, the AAD the block number 0 as 8 zero bytes) unwrapping the 32-byte master
//! key, and HKDF-SHA256 again to the content key. Every key lives in guarded memory;
//! the cipher of the content key, with its expanded round keys (and the VAES
//! kernel's hash-key powers, see `cipher::gcm`), too.

#![forbid(unsafe_code)]

use hkdf::Hkdf;
use sha2::Sha256;

use super::config::{Config, ScryptCost};
use super::error::{Error, Result};
use crate::cipher::Aes256Gcm;
use crate::secret::{Passphrase, SecretBox, SecretBytes};

/// The content key's cipher (AES-256-GCM with gocryptfs's 128-bit nonces), ready
/// to decrypt blocks: the key and its expansion in guarded memory.
pub struct ContentKey(pub(super) SecretBox<Aes256Gcm>);

impl std::fmt::Debug for ContentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ContentKey(redacted)")
    }
}

/// How much the key derivation may cost.
#[derive(Debug, Clone)]
pub struct UnlockLimits {
    /// scrypt's memory, at most (gocryptfs's default cost needs 64 MiB).
    pub max_memory: u64,
    /// scrypt's work (memory × p, the lanes being filled one after the other), at
    /// most: a table at the memory cap filled 64 times over would take minutes.
    pub max_work: u64,
    /// Compare scrypt's memory with MemAvailable and the cgroup limit first.
    pub check_available_memory: bool,
}

impl Default for UnlockLimits {
    fn default() -> Self {
        UnlockLimits {
            max_memory: 4 << 30,
            max_work: 8 << 30,
            check_available_memory: true,
        }
    }
}

fn hkdf_gcm_key(ikm: &[u8]) -> Result<SecretBytes> {
    let mut key = SecretBytes::with_capacity(32);
    key.set_len(32);
    Hkdf::<Sha256>::new(None, ikm)
        .expand(super::HKDF_INFO_GCM, key.as_mut_slice())
        .map_err(|e| Error::Crypto(e.to_string()))?;
    Ok(key)
}

fn gcm(key: &[u8]) -> Result<Aes256Gcm> {
    let key = key
        .try_into()
        .map_err(|_| Error::Crypto(format!("an AES-256 key of {} bytes", key.len())))?;
    Ok(Aes256Gcm::new(key))
}

/// The content key of the volume `config` describes, from `passphrase`. gocryptfs
/// reads its password up to the first newline (Apptainer feeds it the passphrase and
/// a newline), so only that part counts here too.
pub fn unlock(
    config: &Config,
    passphrase: &Passphrase,
    limits: &UnlockLimits,
) -> Result<ContentKey> {
    check_cost(config.scrypt, limits)?;
    crate::secret::scrubbed(|| unwrap_content_key(config, passphrase))
}

/// Refuses a KDF cost above `limits` before any memory is taken: for an unlock, and
/// for a new volume (which veil must then be able to open).
pub fn check_cost(cost: ScryptCost, limits: &UnlockLimits) -> Result<()> {
    let need = cost.memory_bytes();
    let mib = |b: u64| b.div_ceil(1 << 20);
    if need > limits.max_memory {
        return Err(Error::KdfTooCostly {
            need_mib: mib(need),
            limit_mib: mib(limits.max_memory),
            why: "",
        });
    }
    let work = cost.work_bytes();
    if work > limits.max_work {
        return Err(Error::KdfTooCostly {
            need_mib: mib(work),
            limit_mib: mib(limits.max_work),
            why: " of work (memory times p)",
        });
    }
    if limits.check_available_memory
        && let Some(avail) = crate::memory::available_bytes()
        && need > avail / 2
    {
        return Err(Error::KdfTooCostly {
            need_mib: mib(need),
            limit_mib: mib(avail / 2),
            why: " (half the memory available now)",
        });
    }
    Ok(())
}

/// A content key from raw bytes: for the fuzzers and tests, which cannot run scrypt on
/// every input.
pub(crate) fn fixed_key(raw: &[u8; 32]) -> ContentKey {
    ContentKey(SecretBox::new(Aes256Gcm::new(raw)))
}

fn unwrap_content_key(config: &Config, passphrase: &Passphrase) -> Result<ContentKey> {
    let master = unwrap_master(config, passphrase)?;
    content_key(master.as_slice())
}

/// The password gocryptfs reads: the passphrase up to its first newline.
pub(super) fn password(passphrase: &Passphrase) -> &[u8] {
    passphrase
        .bytes()
        .split(|&b| b == b'\n')
        .next()
        .unwrap_or(&[])
}

/// The cipher that wraps the master key: scrypt of the password, then HKDF.
fn wrapping_cipher(password: &[u8], salt: &[u8], cost: ScryptCost) -> Result<SecretBox<Aes256Gcm>> {
    let params = scrypt::Params::new(cost.log_n, cost.r, cost.p)
        .map_err(|e| Error::Config(format!("scrypt parameters: {e}")))?;
    let mut kek = SecretBytes::with_capacity(32);
    kek.set_len(32);
    scrypt::scrypt(password, salt, &params, kek.as_mut_slice())
        .map_err(|e| Error::Crypto(e.to_string()))?;
    let wrapping = hkdf_gcm_key(kek.as_slice())?;
    drop(kek);
    SecretBox::build(|| gcm(wrapping.as_slice()))
}

/// The master key, unwrapped with `passphrase` (no cost checks: callers do them).
pub(super) fn unwrap_master(config: &Config, passphrase: &Passphrase) -> Result<SecretBytes> {
    let cipher = wrapping_cipher(password(passphrase), &config.salt, config.scrypt)?;
    let wrapped = &config.encrypted_key;
    let nonce: &[u8; 16] = wrapped[..16]
        .try_into()
        .map_err(|_| Error::WrongPassphrase)?;
    let tag: &[u8; 16] = wrapped[48..]
        .try_into()
        .map_err(|_| Error::WrongPassphrase)?;
    let mut master = SecretBytes::with_capacity(32);
    master.set_len(32);
    master.as_mut_slice().copy_from_slice(&wrapped[16..48]);
    // The AAD of the master key is the number of block 0, with no file ID.
    cipher
        .decrypt_in_place(nonce, &[0u8; 8], master.as_mut_slice(), tag)
        .map_err(|_| Error::WrongPassphrase)?;
    Ok(master)
}

/// Wraps `master` for `password`: nonce, encrypted key and tag, as `EncryptedKey`
/// holds them.
pub(super) fn wrap_master(
    master: &[u8],
    password: &[u8],
    salt: &[u8],
    cost: ScryptCost,
) -> Result<[u8; 64]> {
    let cipher = wrapping_cipher(password, salt, cost)?;
    let mut out = [0u8; 64];
    crate::secret::fill_random(&mut out[..16]).map_err(|e| Error::Crypto(e.to_string()))?;
    let mut nonce = [0u8; 16];
    nonce.copy_from_slice(&out[..16]);
    out[16..48].copy_from_slice(master);
    let tag = cipher
        .encrypt_in_place(&nonce, &[0u8; 8], &mut out[16..48])
        .map_err(|e| Error::Crypto(e.to_string()))?;
    out[48..].copy_from_slice(&tag);
    Ok(out)
}

/// The content key derived from the master key.
pub(super) fn content_key(master: &[u8]) -> Result<ContentKey> {
    let content = hkdf_gcm_key(master)?;
    Ok(ContentKey(SecretBox::build(|| gcm(content.as_slice()))?))
}

#[cfg(test)]
mod tests {
    use aes_gcm::aead::consts::U16;
    use aes_gcm::aead::{AeadInOut, KeyInit};
    use aes_gcm::aes::Aes256;
    use aes_gcm::{AesGcm, Nonce};

    use super::super::config::ScryptCost;
    use super::*;

    type Reference = AesGcm<Aes256, U16>;

    fn hkdf(ikm: &[u8]) -> [u8; 32] {
        let mut k = [0u8; 32];
        Hkdf::<Sha256>::new(None, ikm)
            .expand(super::super::HKDF_INFO_GCM, &mut k)
            .unwrap();
        k
    }

    /// A master key wrapped by the aes-gcm crate (8 bytes of associated data, as
    /// gocryptfs wraps it) unwraps, and the content key opens what the crate
    /// seals with the content key derived from it.
    #[test]
    fn a_master_key_wrapped_by_the_aes_gcm_crate_unlocks() {
        let salt = vec![3u8; 32];
        let mut kek = [0u8; 32];
        scrypt::scrypt(
            b"pw",
            &salt,
            &scrypt::Params::new(10, 8, 1).unwrap(),
            &mut kek,
        )
        .unwrap();
        let master = [0x5au8; 32];
        let mut wrapped = master;
        let tag = Reference::new(&hkdf(&kek).into())
            .encrypt_inout_detached(
                &Nonce::<U16>::from([9u8; 16]),
                &[0u8; 8],
                (&mut wrapped[..]).into(),
            )
            .unwrap();
        let mut encrypted_key = [9u8; 64];
        encrypted_key[16..48].copy_from_slice(&wrapped);
        encrypted_key[48..].copy_from_slice(&tag);
        let config = Config {
            creator: "test".into(),
            feature_flags: Vec::new(),
            scrypt: ScryptCost {
                log_n: 10,
                r: 8,
                p: 1,
            },
            salt,
            encrypted_key,
        };
        let limits = UnlockLimits::default();
        let key = unlock(&config, &Passphrase::from_slice(b"pw\nnot read"), &limits).unwrap();
        let mut data = vec![1u8; 4096];
        let tag = Reference::new(&hkdf(&master).into())
            .encrypt_inout_detached(
                &Nonce::<U16>::from([4u8; 16]),
                b"block",
                data.as_mut_slice().into(),
            )
            .unwrap();
        let mut out = vec![0u8; 4096];
        key.0
            .decrypt(&[4u8; 16], b"block", &data, &mut out, &tag.into())
            .unwrap();
        assert_eq!(out, vec![1u8; 4096]);
        let wrong = unlock(&config, &Passphrase::from_slice(b"px"), &limits);
        assert!(matches!(wrong, Err(Error::WrongPassphrase)));
    }
}
