//! OpenPGP keyrings on disk, in the peers' layout: a binary public ring and a binary
//! secret ring (concatenated transferable keys). veil's own rings are in
//! `~/.veil/keys/{pgp-public,pgp-secret}`; Apptainer's (`~/.apptainer/keys`) and
//! SingularityCE's (`~/.singularity/sypgp`) are read, never written, when present.

#![forbid(unsafe_code)]

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use sequoia_openpgp as openpgp;

use openpgp::Cert;
use openpgp::cert::CertParser;
use openpgp::cert::prelude::*;
use openpgp::packet::Packet;
use openpgp::parse::Parse;
use openpgp::policy::StandardPolicy;
use openpgp::serialize::{Serialize, SerializeInto};
use openpgp::types::{KeyFlags, PublicKeyAlgorithm};

use super::error::{CertsError, Result, SignError};
use super::passphrase::Passphrase;
use crate::fsutil::TempFile;

pub const PUBLIC_RING: &str = "pgp-public";
pub const SECRET_RING: &str = "pgp-secret";
/// A keyring file larger than this is refused rather than read into memory.
const MAX_RING: u64 = 64 << 20;

/// The keyring directories of one user.
#[derive(Debug, Clone)]
pub struct KeyStore {
    /// veil's own directory, the only one written.
    pub dir: PathBuf,
    /// The peers' directories, read when present.
    pub peers: Vec<PathBuf>,
}

/// Which ring(s) an operation is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ring {
    Public,
    Secret,
}

impl KeyStore {
    /// The standard locations under `home`.
    pub fn for_home(home: &Path) -> Self {
        KeyStore {
            dir: home.join(".veil/keys"),
            peers: vec![
                home.join(".apptainer/keys"),
                home.join(".singularity/sypgp"),
            ],
        }
    }

    /// The standard locations under `$HOME`.
    pub fn from_env() -> Result<Self> {
        let home = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .ok_or(SignError::NoHome)?;
        Ok(Self::for_home(Path::new(&home)))
    }

    pub fn path(&self, ring: Ring) -> PathBuf {
        self.dir.join(match ring {
            Ring::Public => PUBLIC_RING,
            Ring::Secret => SECRET_RING,
        })
    }

    /// veil's own ring (empty if the file does not exist yet).
    pub fn load(&self, ring: Ring) -> Result<Vec<Cert>> {
        read_ring_file(&self.path(ring))
    }

    /// veil's ring followed by the peers' rings of the same kind, each certificate once
    /// (the first occurrence wins, so indexes stay stable when a peer ring changes).
    pub fn load_all(&self, ring: Ring) -> Result<Vec<Cert>> {
        let mut out = self.load(ring)?;
        for dir in &self.peers {
            let name = match ring {
                Ring::Public => PUBLIC_RING,
                Ring::Secret => SECRET_RING,
            };
            for c in read_peer_ring(&dir.join(name)) {
                if ring == Ring::Secret && !c.is_tsk() {
                    continue;
                }
                if !out.iter().any(|o| o.fingerprint() == c.fingerprint()) {
                    out.push(c);
                }
            }
        }
        Ok(out)
    }

    /// Every certificate usable to check a signature: all public rings plus the public
    /// halves of all secret rings.
    pub fn verification_certs(&self) -> Result<Vec<Cert>> {
        let mut out = self.load_all(Ring::Public)?;
        for c in self.load_all(Ring::Secret)? {
            merge_into(&mut out, c.strip_secret_key_material());
        }
        Ok(out)
    }

    /// The secret keys usable for signing, in the order `key list --secret` shows them.
    pub fn signing_keys(&self) -> Result<Vec<Cert>> {
        self.load_all(Ring::Secret)
    }

    /// Replaces veil's ring with `certs`. The secret ring is written with mode 0600.
    pub fn save(&self, ring: Ring, certs: &[Cert]) -> Result<()> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|err| SignError::CreateDir {
                path: self.dir.clone(),
                err,
            })?;
        let dest = self.path(ring);
        let failed = |err| SignError::Write {
            path: dest.clone(),
            err,
        };
        let tmp = TempFile::new_in(&self.dir, &dest).map_err(failed)?;
        if ring == Ring::Secret {
            tmp.file()
                .set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(failed)?;
        }
        let mut w = std::io::BufWriter::new(tmp.file());
        for c in certs {
            let r = match ring {
                Ring::Public => c.serialize(&mut w),
                Ring::Secret => c.as_tsk().serialize(&mut w),
            };
            // sequoia's serialiser fails mostly through the writer, whose io::Error it
            // boxes in anyhow: unbox that one; any other error keeps its text.
            r.map_err(|e| SignError::Write {
                path: dest.clone(),
                err: e
                    .downcast::<std::io::Error>()
                    .unwrap_or_else(std::io::Error::other),
            })?;
        }
        w.flush().map_err(failed)?;
        drop(w);
        tmp.persist(&dest).map_err(failed)?;
        Ok(())
    }

    /// Adds (or merges) `cert` into veil's ring and saves it. Returns true if the key was
    /// new to that ring.
    pub fn add(&self, ring: Ring, cert: Cert) -> Result<bool> {
        let mut certs = self.load(ring)?;
        let new = merge_into(&mut certs, cert);
        self.save(ring, &certs)?;
        Ok(new)
    }

    /// Removes the key matching `selector` from veil's ring. Returns the removed keys.
    pub fn remove(&self, ring: Ring, selector: &str) -> Result<Vec<Cert>> {
        let sel = Selector::parse(selector)?;
        let certs = self.load(ring)?;
        let (gone, kept): (Vec<_>, Vec<_>) = certs.into_iter().partition(|c| sel.matches(c));
        if !gone.is_empty() {
            self.save(ring, &kept)?;
        }
        Ok(gone)
    }
}

/// Adds `cert` to `certs`, merging with an existing copy of the same key. True if new.
fn merge_into(certs: &mut Vec<Cert>, cert: Cert) -> bool {
    match certs
        .iter()
        .position(|c| c.fingerprint() == cert.fingerprint())
    {
        Some(i) => {
            let old = certs[i].clone();
            certs[i] = old.clone().merge_public_and_secret(cert).unwrap_or(old);
            false
        }
        None => {
            certs.push(cert);
            true
        }
    }
}

/// Reads a keyring file; a missing file is an empty ring.
pub fn read_ring_file(path: &Path) -> Result<Vec<Cert>> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => {
            return Err(SignError::ReadKeyring {
                path: path.to_path_buf(),
                err,
            });
        }
    };
    if meta.len() > MAX_RING {
        return Err(SignError::KeyringTooLarge {
            path: path.to_path_buf(),
            size: meta.len(),
            limit: MAX_RING,
        });
    }
    let bytes = std::fs::read(path).map_err(|err| SignError::ReadKeyring {
        path: path.to_path_buf(),
        err,
    })?;
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    parse_certs(&bytes).map_err(|err| SignError::BadKeyring {
        path: path.to_path_buf(),
        err,
    })
}

/// Reads a peer's keyring, skipping what cannot be read: veil never writes these, and
/// one odd entry (a key type sequoia does not know, say) must not stop verification
/// with the keys that are fine.
fn read_peer_ring(path: &Path) -> Vec<Cert> {
    match std::fs::metadata(path) {
        Ok(m) if m.len() <= MAX_RING => {}
        _ => return Vec::new(),
    }
    let Ok(bytes) = std::fs::read(path) else {
        return Vec::new();
    };
    match CertParser::from_bytes(&bytes) {
        Ok(p) => p.filter_map(|c| c.ok()).collect(),
        Err(_) => Vec::new(),
    }
}

/// Reads a key file (armored or binary, one or more keys).
pub fn read_key_file(path: &Path) -> Result<Vec<Cert>> {
    let read_err = |err| SignError::ReadKeyFile {
        path: path.to_path_buf(),
        err,
    };
    let meta = std::fs::metadata(path).map_err(read_err)?;
    if meta.len() > MAX_RING {
        return Err(SignError::KeyFileTooLarge {
            path: path.to_path_buf(),
            size: meta.len(),
        });
    }
    let bytes = std::fs::read(path).map_err(read_err)?;
    let certs = parse_certs(&bytes).map_err(|err| SignError::BadKeyFile {
        path: path.to_path_buf(),
        err,
    })?;
    if certs.is_empty() {
        return Err(SignError::NoKeyInFile {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// Parses every certificate in `bytes` (armor is detected).
pub fn parse_certs(bytes: &[u8]) -> std::result::Result<Vec<Cert>, CertsError> {
    let parser = CertParser::from_bytes(bytes).map_err(|e| CertsError::NotOpenPgp(e.into()))?;
    parser
        .map(|r| r.map_err(|e| CertsError::Malformed(e.into())))
        .collect()
}

/// Serialises certificates for export.
pub fn export(certs: &[Cert], secret: bool, armor: bool) -> Result<Vec<u8>> {
    let err = |e: anyhow::Error| SignError::Export(e.into());
    let mut out = Vec::new();
    for c in certs {
        let bytes = match (secret, armor) {
            (false, false) => c.to_vec(),
            (false, true) => c.armored().to_vec(),
            (true, false) => c.as_tsk().to_vec(),
            (true, true) => c.as_tsk().armored().to_vec(),
        }
        .map_err(err)?;
        out.extend_from_slice(&bytes);
    }
    Ok(out)
}

/// How a key is named on the command line: a fingerprint or a (long or short) key ID,
/// hex, case and spaces ignored, optional `0x`.
pub struct Selector(String);

impl Selector {
    pub fn parse(s: &str) -> Result<Self> {
        let hex: String = s
            .trim()
            .trim_start_matches("0x")
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect::<String>()
            .to_ascii_uppercase();
        if !matches!(hex.len(), 8 | 16 | 40) || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(SignError::BadKeySelector {
                value: s.to_string(),
            });
        }
        Ok(Selector(hex))
    }

    /// True if the primary key's fingerprint ends with the selector.
    pub fn matches(&self, c: &Cert) -> bool {
        c.fingerprint().to_hex().ends_with(&self.0)
    }
}

/// A key as `key list` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyInfo {
    pub index: usize,
    pub user_ids: Vec<String>,
    pub fingerprint: String,
    /// Unix seconds.
    pub created: i64,
    pub algorithm: String,
    pub bits: Option<usize>,
    pub secret: bool,
    /// For secret keys: whether the key material is passphrase-protected.
    pub protected: bool,
}

pub fn describe(index: usize, c: &Cert) -> KeyInfo {
    let pk = c.primary_key().key();
    let created = pk
        .creation_time()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let algorithm = match pk.pk_algo() {
        PublicKeyAlgorithm::RSAEncryptSign => "RSA".to_string(),
        PublicKeyAlgorithm::EdDSA => "EdDSA".to_string(),
        PublicKeyAlgorithm::Ed25519 => "Ed25519".to_string(),
        PublicKeyAlgorithm::ECDSA => "ECDSA".to_string(),
        other => other.to_string(),
    };
    KeyInfo {
        index,
        user_ids: c
            .userids()
            .map(|u| String::from_utf8_lossy(u.userid().value()).into_owned())
            .collect(),
        fingerprint: c.fingerprint().to_hex(),
        created,
        algorithm,
        bits: pk.mpis().bits(),
        secret: c.is_tsk(),
        protected: c.is_tsk() && !c.keys().secret().any(|k| k.key().has_unencrypted_secret()),
    }
}

/// Encrypts every unencrypted secret key of `cert` with `pass` (an empty passphrase leaves
/// the key unprotected, as `gpg` does when asked for none).
pub fn protect(cert: Cert, pass: &Passphrase) -> Result<Cert> {
    if pass.is_empty() {
        return Ok(cert);
    }
    let err = |e: anyhow::Error| SignError::Protect(e.into());
    let pw = pass.to_password();
    let mut packets: Vec<Packet> = Vec::new();
    for ka in cert.keys().secret() {
        if !ka.key().has_unencrypted_secret() {
            continue;
        }
        let key = ka.key().clone().encrypt_secret(&pw).map_err(err)?;
        packets.push(if ka.primary() {
            key.role_into_primary().into()
        } else {
            key.role_into_subordinate().into()
        });
    }
    let (cert, _) = cert.insert_packets(packets).map_err(err)?;
    Ok(cert)
}

/// Key generation parameters for `key newpair`.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub name: String,
    pub email: String,
    pub comment: String,
    pub kind: KeyKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Rsa(u32),
    Ed25519,
}

/// Generates a key the peers can use: the primary key certifies and signs (so the
/// signature's issuer is the primary key whose fingerprint goes in the descriptor), with
/// an encryption subkey, as `apptainer key newpair` makes them.
pub fn generate(spec: &NewKey, pass: &Passphrase) -> Result<Cert> {
    let suite = match spec.kind {
        KeyKind::Rsa(2048) => CipherSuite::RSA2k,
        KeyKind::Rsa(3072) => CipherSuite::RSA3k,
        KeyKind::Rsa(4096) => CipherSuite::RSA4k,
        KeyKind::Rsa(n) => {
            return Err(SignError::RsaKeySize { bits: n });
        }
        KeyKind::Ed25519 => CipherSuite::Cv25519,
    };
    let mut uid = spec.name.clone();
    if !spec.comment.is_empty() {
        uid.push_str(&format!(" ({})", spec.comment));
    }
    if !spec.email.is_empty() {
        uid.push_str(&format!(" <{}>", spec.email));
    }
    if uid.trim().is_empty() {
        return Err(SignError::NoUserId);
    }
    // Back-date a little: a signature made in the same second as the key would otherwise
    // be rejected by verifiers whose clock is slightly behind.
    let created = SystemTime::now() - std::time::Duration::from_secs(60);
    let mut b = CertBuilder::new()
        .set_cipher_suite(suite)
        .set_creation_time(created)
        .set_primary_key_flags(KeyFlags::empty().set_certification().set_signing())
        .add_userid(uid)
        .add_transport_encryption_subkey()
        .set_validity_period(None);
    if !pass.is_empty() {
        b = b.set_password(Some(pass.to_password()));
    }
    let (cert, _rev) = b.generate().map_err(|e| SignError::Generate(e.into()))?;
    Ok(cert)
}

/// Unlocks the signing key of `cert` (its primary key when that can sign, else the first
/// signing subkey), asking for the passphrase only if the key is protected.
pub fn signing_keypair(
    cert: &Cert,
    pass: impl FnOnce() -> Result<Passphrase>,
) -> Result<openpgp::crypto::KeyPair> {
    let policy = StandardPolicy::new();
    let fpr = cert.fingerprint().to_hex();
    let valid = cert
        .with_policy(&policy, None)
        .map_err(|e| SignError::KeyNotUsable {
            fpr: fpr.clone(),
            err: e.into(),
        })?;
    let mut cands: Vec<_> = valid
        .keys()
        .secret()
        .alive()
        .revoked(false)
        .for_signing()
        .collect();
    // Prefer the primary key: its fingerprint is what the descriptor records.
    cands.sort_by_key(|k| !k.primary());
    let ka = cands
        .into_iter()
        .next()
        .ok_or_else(|| SignError::NoSigningKey { fpr: fpr.clone() })?;
    let mut key = ka.key().clone();
    if !key.has_unencrypted_secret() {
        let p = pass()?;
        key = key
            .decrypt_secret(&p.to_password())
            .map_err(|_| SignError::WrongPassphrase { fpr: fpr.clone() })?;
    }
    key.into_keypair()
        .map_err(|e| SignError::Keypair { fpr, err: e.into() })
}
