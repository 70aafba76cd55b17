//! One keyslot: passphrase → KDF → decrypt the AF material → AF merge → digest
//! check (opening), and the reverse for a new keyslot (storing).

#![forbid(unsafe_code)]

use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::af;
use super::error::{Error, Result};
use super::hash::Hash;
use super::json::{self, Digest, Luks2Keyslot, Metadata};
use super::kdf::{KdfLimits, KdfParams};
use super::secret::{self, Passphrase, VolumeKey};
use super::xts::Xts;
use crate::secret::SecretBytes;
use crate::source::ReadAt;

/// The only keyslot-area cipher implemented.
pub const AREA_CIPHER: &str = "aes-xts-plain64";

/// Bytes of AF material for a key: round_up(key_size * 4000, 512).
pub fn material_len(key_size: usize) -> usize {
    (key_size * af::STRIPES).div_ceil(512) * 512
}

/// Bytes cryptsetup allocates for a keyslot area: round_up(key_size * 4000, 4096).
pub fn area_len(key_size: usize) -> u64 {
    ((key_size * af::STRIPES).div_ceil(4096) * 4096) as u64
}

fn hash_named(name: &str, what: &str) -> Result<Hash> {
    Hash::from_name(name).ok_or_else(|| Error::Unsupported(format!("{what} hash \"{name}\"")))
}

/// Tries `passphrase` on keyslot `id`. `Ok(None)`: the passphrase does not open
/// this keyslot. `Err`: the keyslot cannot be tried (unsupported, too costly,
/// unreadable).
pub fn open<R: ReadAt + ?Sized>(
    src: &R,
    meta: &Metadata,
    id: u32,
    ks: &Luks2Keyslot,
    passphrase: &Passphrase,
    limits: &KdfLimits,
) -> Result<Option<VolumeKey>> {
    let digest = meta
        .digest_for_keyslot(id)
        .ok_or_else(|| Error::meta(format!("keyslot {id} has no digest")))?;
    if ks.area_encryption != AREA_CIPHER {
        return Err(Error::Unsupported(format!(
            "keyslot {id} area cipher \"{}\"",
            ks.area_encryption
        )));
    }
    let af_hash = hash_named(&ks.af_hash, "AF")?;
    let digest_hash = hash_named(&digest.hash, "digest")?;
    let area_key_size = ks.area_key_size as usize;
    let key_size = ks.key_size as usize;
    if !matches!(area_key_size, 32 | 64) {
        return Err(Error::Unsupported(format!(
            "keyslot {id} area key size {area_key_size}"
        )));
    }
    let n = material_len(key_size);
    if n as u64 > ks.area_size {
        return Err(Error::meta(format!(
            "keyslot {id} area of {} bytes is too small for a {key_size}-byte key",
            ks.area_size
        )));
    }
    let end = ks.area_offset.saturating_add(n as u64);
    if end > src.len() {
        return Err(Error::Truncated {
            what: "a keyslot area",
            needed: end,
            len: src.len(),
        });
    }
    ks.kdf.check(id, limits)?;
    // The digest's PBKDF2 runs on every try too: the same limit applies.
    if digest.iterations == 0 {
        return Err(Error::meta(format!("keyslot {id}: digest iterations is 0")));
    }
    if u64::from(digest.iterations) > limits.max_pbkdf2_iterations {
        return Err(Error::KdfWorkTooHigh {
            slot: id,
            cost: format!("its digest takes {} pbkdf2 iterations", digest.iterations),
            limit: format!("{} iterations", limits.max_pbkdf2_iterations),
            value: digest.iterations.into(),
            max: limits.max_pbkdf2_iterations,
        });
    }

    let mut dk = Zeroizing::new(vec![0u8; area_key_size]);
    ks.kdf.derive(passphrase.bytes(), &ks.kdf_salt, &mut dk)?;

    let mut material = Zeroizing::new(vec![0u8; n]);
    src.read_exact_at(&mut material, ks.area_offset)
        .map_err(Error::io("reading a keyslot's key material"))?;
    // Keyslot material: 512-byte sectors, IVs counted from the area start.
    Xts::new(&dk, 512)?.decrypt(&mut material, 0);

    let mut candidate = SecretBytes::with_capacity(key_size);
    candidate.set_len(key_size);
    af::merge(af_hash, &material, candidate.as_mut_slice())?;
    if verify_digest(digest_hash, digest, candidate.as_slice()) {
        Ok(Some(VolumeKey::from_secret(candidate)))
    } else {
        Ok(None)
    }
}

/// `PBKDF2(candidate, salt, iterations) == digest`, compared in constant time.
fn verify_digest(hash: Hash, d: &Digest, candidate: &[u8]) -> bool {
    let mut x = Zeroizing::new(vec![0u8; d.digest.len()]);
    hash.pbkdf2(candidate, &d.salt, d.iterations, &mut x);
    bool::from(x.ct_eq(&d.digest))
}

/// A new keyslot: its JSON object and the encrypted AF material to write at
/// `area_offset` (`area_len(key_size)` bytes, zero-padded after the material).
pub struct NewKeyslot {
    pub json: Value,
    pub area: Vec<u8>,
}

/// Builds keyslot material for `vk` protected by `passphrase`.
pub fn store(
    vk: &VolumeKey,
    passphrase: &Passphrase,
    kdf: &KdfParams,
    af_hash: Hash,
    area_offset: u64,
    priority: Option<u32>,
) -> Result<NewKeyslot> {
    let key_size = vk.len();
    let salt = secret::random_vec(32)?;
    // The keyslot area cipher has the segment's key size (cryptsetup's default).
    let mut dk = Zeroizing::new(vec![0u8; key_size]);
    kdf.derive(passphrase.bytes(), &salt, &mut dk)?;
    let stripes = af::split(af_hash, vk.bytes())?;
    let n = material_len(key_size);
    let mut area = vec![0u8; area_len(key_size) as usize];
    area[..stripes.len()].copy_from_slice(&stripes);
    Xts::new(&dk, 512)?.encrypt(&mut area[..n], 0);

    let kdf_json = match kdf {
        KdfParams::Pbkdf2 { hash, iterations } => json!({
            "type": "pbkdf2", "hash": hash, "iterations": iterations, "salt": json::b64(&salt),
        }),
        KdfParams::Argon2 {
            variant,
            time,
            memory_kib,
            cpus,
        } => json!({
            "type": variant.name(), "time": time, "memory": memory_kib, "cpus": cpus,
            "salt": json::b64(&salt),
        }),
    };
    let mut ks = json!({
        "type": "luks2",
        "key_size": key_size,
        "af": {"type": "luks1", "stripes": af::STRIPES, "hash": af_hash.name()},
        "area": {
            "type": "raw",
            "offset": area_offset.to_string(),
            "size": area_len(key_size).to_string(),
            "encryption": AREA_CIPHER,
            "key_size": key_size,
        },
        "kdf": kdf_json,
    });
    if let (Some(p), Some(o)) = (priority, ks.as_object_mut()) {
        o.insert("priority".into(), json!(p));
    }
    Ok(NewKeyslot { json: ks, area })
}

/// A new digest object for `vk` over keyslots and segments.
pub fn make_digest(
    vk: &VolumeKey,
    iterations: u32,
    keyslots: &[u32],
    segments: &[u32],
) -> Result<Value> {
    let salt = secret::random_vec(32)?;
    let mut d = [0u8; 32];
    Hash::Sha256.pbkdf2(vk.bytes(), &salt, iterations, &mut d);
    let ids = |v: &[u32]| v.iter().map(u32::to_string).collect::<Vec<_>>();
    Ok(json!({
        "type": "pbkdf2",
        "keyslots": ids(keyslots),
        "segments": ids(segments),
        "hash": "sha256",
        "iterations": iterations,
        "salt": json::b64(&salt),
        "digest": json::b64(&d),
    }))
}
