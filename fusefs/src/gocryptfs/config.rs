//! `gocryptfs.conf`: a JSON object written by `gocryptfs -init`. Facts about the
//! format (from gocryptfs 2.x): `Version` 2; `FeatureFlags` from a fixed set; the
//! master key wrapped with AES-256-GCM (a 16-byte nonce, the 32-byte key, a 16-byte
//! tag) under a key derived from the password by scrypt (`ScryptObject`) and then
//! HKDF-SHA256; byte strings in standard base64 with padding.

#![forbid(unsafe_code)]

use base64::Engine;
use serde::{Deserialize, Serialize};

use super::error::{Error, Result};

/// The largest `gocryptfs.conf` read (gocryptfs writes about 400 bytes).
pub const MAX_LEN: u64 = 64 << 10;

/// Every flag gocryptfs 2.x knows; others make it refuse the volume, and so does veil.
const KNOWN_FLAGS: [&str; 11] = [
    "PlaintextNames",
    "DirIV",
    "EMENames",
    "GCMIV128",
    "LongNames",
    "LongNameMax",
    "AESSIV",
    "Raw64",
    "HKDF",
    "FIDO2",
    "XChaCha20Poly1305",
];

#[derive(Deserialize, Serialize)]
struct File {
    #[serde(rename = "Creator", default)]
    creator: String,
    #[serde(rename = "EncryptedKey")]
    encrypted_key: String,
    #[serde(rename = "ScryptObject")]
    scrypt: ScryptFile,
    #[serde(rename = "Version")]
    version: u16,
    #[serde(rename = "FeatureFlags", default)]
    feature_flags: Vec<String>,
}

/// The feature flags of the volumes Apptainer makes (`gocryptfs -init
/// -deterministic-names -plaintextnames`), in the order gocryptfs writes them.
pub(super) const APPTAINER_FLAGS: [&str; 3] = ["HKDF", "GCMIV128", "PlaintextNames"];

#[derive(Deserialize, Serialize)]
struct ScryptFile {
    #[serde(rename = "Salt")]
    salt: String,
    #[serde(rename = "N")]
    n: u64,
    #[serde(rename = "R")]
    r: u32,
    #[serde(rename = "P")]
    p: u32,
    #[serde(rename = "KeyLen")]
    key_len: u32,
}

/// The scrypt parameters of the password's key derivation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScryptCost {
    /// log2 of N, the CPU and memory cost (gocryptfs's default: 16).
    pub log_n: u8,
    pub r: u32,
    pub p: u32,
}

impl ScryptCost {
    /// The memory scrypt needs: 128 · r · N bytes (its table), plus a little.
    pub fn memory_bytes(&self) -> u64 {
        128 * u64::from(self.r) * (1u64 << self.log_n)
    }

    /// The work one derivation takes, in bytes of table filled: 128 · N · r · p (the
    /// p lanes run one after the other).
    pub fn work_bytes(&self) -> u64 {
        self.memory_bytes().saturating_mul(u64::from(self.p))
    }
}

/// A parsed, checked `gocryptfs.conf`.
#[derive(Debug, Clone)]
pub struct Config {
    /// Who wrote it (`gocryptfs v2.3`, say); for people only.
    pub creator: String,
    pub feature_flags: Vec<String>,
    pub scrypt: ScryptCost,
    pub(super) salt: Vec<u8>,
    /// Nonce (16), wrapped master key (32), tag (16).
    pub(super) encrypted_key: [u8; 64],
}

/// `gocryptfs.conf` as gocryptfs writes it (the same fields in the same order,
/// tab-indented), for a volume with Apptainer's feature flags.
pub(super) fn write(
    creator: &str,
    salt: &[u8],
    cost: ScryptCost,
    encrypted_key: &[u8; 64],
) -> Result<Vec<u8>> {
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let file = File {
        creator: creator.to_string(),
        encrypted_key: b64(encrypted_key),
        scrypt: ScryptFile {
            salt: b64(salt),
            n: 1u64 << cost.log_n,
            r: cost.r,
            p: cost.p,
            key_len: 32,
        },
        version: 2,
        feature_flags: APPTAINER_FLAGS.iter().map(|f| f.to_string()).collect(),
    };
    let mut out = Vec::with_capacity(512);
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"\t");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    file.serialize(&mut ser)
        .map_err(|e| Error::Config(format!("writing: {e}")))?;
    out.push(b'\n');
    Ok(out)
}

fn decode(what: &str, s: &str) -> Result<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|_| Error::Config(format!("{what} is not base64")))
}

impl Config {
    /// Parses and checks `gocryptfs.conf`'s bytes.
    pub fn parse(bytes: &[u8]) -> Result<Config> {
        let f: File = serde_json::from_slice(bytes)
            .map_err(|e| Error::Config(format!("not a gocryptfs configuration ({e})")))?;
        if f.version != 2 {
            return Err(Error::Config(format!(
                "on-disk format version {} (only version 2, gocryptfs 1.x and 2.x)",
                f.version
            )));
        }
        let has = |flag: &str| f.feature_flags.iter().any(|x| x == flag);
        if let Some(unknown) = f
            .feature_flags
            .iter()
            .find(|x| !KNOWN_FLAGS.contains(&x.as_str()))
        {
            return Err(Error::Config(format!("unknown feature flag {unknown:?}")));
        }
        for (flag, what) in [
            ("XChaCha20Poly1305", "XChaCha20-Poly1305 content encryption"),
            ("AESSIV", "AES-SIV content encryption (reverse mode)"),
            ("FIDO2", "a FIDO2 token as the key"),
        ] {
            if has(flag) {
                return Err(Error::Unsupported(format!("{what} ({flag})")));
            }
        }
        if !has("PlaintextNames") {
            return Err(Error::Unsupported("encrypted file names".into()));
        }
        if !has("GCMIV128") {
            return Err(Error::Unsupported(
                "AES-GCM with 96-bit nonces (a volume of gocryptfs 0.x)".into(),
            ));
        }
        if !has("HKDF") {
            return Err(Error::Unsupported(
                "keys without HKDF (a volume of gocryptfs 1.2 or older)".into(),
            ));
        }
        let s = &f.scrypt;
        if s.key_len != 32 {
            return Err(Error::Config(format!(
                "scrypt key length {} (gocryptfs uses 32)",
                s.key_len
            )));
        }
        if !s.n.is_power_of_two() || s.n < 1024 || s.n > 1 << 28 {
            return Err(Error::Config(format!(
                "scrypt N = {} (a power of two from 1024 to 2^28)",
                s.n
            )));
        }
        if s.r < 8 || s.r > 1024 || s.p < 1 || s.p > 64 {
            return Err(Error::Config(format!(
                "scrypt r = {}, p = {} (r from 8 to 1024, p from 1 to 64)",
                s.r, s.p
            )));
        }
        let salt = decode("the scrypt salt", &s.salt)?;
        if salt.len() < 32 || salt.len() > 1024 {
            return Err(Error::Config(format!(
                "a scrypt salt of {} bytes (gocryptfs writes 32)",
                salt.len()
            )));
        }
        let key = decode("the encrypted key", &f.encrypted_key)?;
        let encrypted_key: [u8; 64] = key.as_slice().try_into().map_err(|_| {
            Error::Config(format!(
                "an encrypted key of {} bytes (64: nonce, key and tag)",
                key.len()
            ))
        })?;
        Ok(Config {
            creator: f.creator,
            feature_flags: f.feature_flags,
            scrypt: ScryptCost {
                log_n: s.n.trailing_zeros() as u8,
                r: s.r,
                p: s.p,
            },
            salt,
            encrypted_key,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(flags: &str, n: u64, key_b64_len: usize) -> String {
        format!(
            r#"{{"Creator":"gocryptfs v2.3","EncryptedKey":"{}","ScryptObject":{{"Salt":"{}","N":{n},"R":8,"P":1,"KeyLen":32}},"Version":2,"FeatureFlags":[{flags}]}}"#,
            base64::engine::general_purpose::STANDARD.encode(vec![7u8; key_b64_len]),
            base64::engine::general_purpose::STANDARD.encode([1u8; 32]),
        )
    }

    const APPTAINERS: &str = r#""HKDF","GCMIV128","PlaintextNames""#;

    #[test]
    fn apptainers_configuration_is_read() {
        let c = Config::parse(conf(APPTAINERS, 65536, 64).as_bytes()).unwrap();
        assert_eq!(
            c.scrypt,
            ScryptCost {
                log_n: 16,
                r: 8,
                p: 1
            }
        );
        assert_eq!(c.scrypt.memory_bytes(), 64 << 20);
        assert_eq!(c.creator, "gocryptfs v2.3");
    }

    #[test]
    fn what_is_not_read_is_refused_with_the_reason() {
        for (text, why) in [
            (
                conf(r#""HKDF","GCMIV128""#, 65536, 64),
                "encrypted file names",
            ),
            (conf(r#""HKDF","PlaintextNames""#, 65536, 64), "96-bit"),
            (conf(r#""GCMIV128","PlaintextNames""#, 65536, 64), "HKDF"),
            (
                conf(r#""HKDF","XChaCha20Poly1305","PlaintextNames""#, 65536, 64),
                "XChaCha20",
            ),
            (
                conf(r#""HKDF","GCMIV128","PlaintextNames","Bogus""#, 65536, 64),
                "unknown feature flag",
            ),
            (conf(APPTAINERS, 1000, 64), "scrypt N"),
            (conf(APPTAINERS, 1 << 30, 64), "scrypt N"),
            (conf(APPTAINERS, 65536, 60), "encrypted key of 60 bytes"),
            (
                conf(APPTAINERS, 65536, 64).replace("\"Version\":2", "\"Version\":3"),
                "version 3",
            ),
            ("{".to_string(), "not a gocryptfs configuration"),
        ] {
            let e = Config::parse(text.as_bytes()).unwrap_err().to_string();
            assert!(e.contains(why), "{why}: {e}");
        }
    }
}
