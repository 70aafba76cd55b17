//! Creating a LUKS2 volume around a payload, laid out as cryptsetup lays it out.
//!
//! Output is streamed to any `Write`: both header copies, the keyslots area
//! (keyslot 0, the rest random), then the payload encrypted in batches of
//! [`BATCH`] bytes, each batch encrypted on all cores. Memory stays bounded by
//! the batch size whatever the payload length.

#![forbid(unsafe_code)]

use std::io::{self, Read, Write};

use serde_json::json;

use super::error::{Error, Result};
use super::hash::Hash;
use super::header::{self, BinHeader};
use super::json;
use super::kdf::{self, KdfChoice};
use super::keyslot;
use super::secret::{self, Passphrase, VolumeKey};
use super::xts::Xts;
use super::{DATA_CIPHER, HeaderSummary};

/// Header copy size (binary header + JSON area), cryptsetup's default.
const HDR_SIZE: u64 = 16384;
/// cryptsetup's default data offset.
pub const DEFAULT_DATA_OFFSET: u64 = 16 << 20;
/// Payload bytes encrypted per step (bounded memory, parallel inside).
const BATCH: usize = 8 << 20;

/// How a keyslot is made.
#[derive(Debug, Clone)]
pub struct KeyslotOptions {
    pub kdf: KdfChoice,
    /// Hash for a pbkdf2 KDF and the AF splitter (cryptsetup's default: sha256).
    pub hash: Hash,
    /// Keyslot priority (0 = only when named, 2 = preferred); `None` writes none (= 1).
    pub priority: Option<u32>,
}

impl Default for KeyslotOptions {
    fn default() -> Self {
        KeyslotOptions {
            kdf: KdfChoice::default(),
            hash: Hash::Sha256,
            priority: None,
        }
    }
}

/// How a volume is made. `Default` is cryptsetup's luksFormat (argon2id for ~2 s,
/// 16 MiB data offset) with 4096-byte sectors.
#[derive(Debug)]
pub struct CreateOptions {
    /// Encryption sector size: 512, 1024, 2048 or 4096.
    pub sector_size: u32,
    pub keyslot: KeyslotOptions,
    /// Up to 47 bytes.
    pub label: String,
    /// RFC 4122 text; random v4 when `None`.
    pub uuid: Option<String>,
    /// A given volume key (32 or 64 bytes); a fresh random 64-byte key when `None`.
    pub volume_key: Option<VolumeKey>,
    /// Byte offset of the data segment (multiple of 4096, at least 32 KiB plus
    /// the keyslot area); the keyslots area fills the space before it.
    pub data_offset: u64,
    /// PBKDF2 iterations of the volume key digest; `None` = 1000 with fixed KDF
    /// costs, else benchmarked for 125 ms like cryptsetup.
    pub digest_iterations: Option<u32>,
}

impl Default for CreateOptions {
    fn default() -> Self {
        CreateOptions {
            sector_size: 4096,
            keyslot: KeyslotOptions::default(),
            label: String::new(),
            uuid: None,
            volume_key: None,
            data_offset: DEFAULT_DATA_OFFSET,
            digest_iterations: None,
        }
    }
}

impl CreateOptions {
    fn check(&self, key_size: usize) -> Result<()> {
        if !matches!(self.sector_size, 512 | 1024 | 2048 | 4096) {
            return Err(Error::InvalidOptions(format!(
                "sector size {} (must be 512, 1024, 2048 or 4096)",
                self.sector_size
            )));
        }
        let min = 2 * HDR_SIZE + keyslot::area_len(key_size);
        if !self.data_offset.is_multiple_of(4096)
            || self.data_offset < min
            || self.data_offset - 2 * HDR_SIZE > json::MAX_KEYSLOTS_SIZE
        {
            return Err(Error::InvalidOptions(format!(
                "data offset {} must be a multiple of 4096 between {min} and {}",
                self.data_offset,
                2 * HDR_SIZE + json::MAX_KEYSLOTS_SIZE
            )));
        }
        Ok(())
    }
}

/// Bytes of encrypted data for a payload: whole sectors, at least one.
fn data_len(payload_len: u64, sector_size: u32) -> u64 {
    let ss = u64::from(sector_size);
    payload_len.div_ceil(ss).max(1) * ss
}

/// Total byte size [`create`] writes for a payload of `payload_len` bytes.
pub fn volume_size(payload_len: u64, opts: &CreateOptions) -> Result<u64> {
    opts.check(opts.volume_key.as_ref().map_or(64, VolumeKey::len))?;
    opts.data_offset
        .checked_add(data_len(payload_len, opts.sector_size))
        .ok_or_else(|| Error::InvalidOptions("payload too large".into()))
}

/// Writes a complete LUKS2 volume: headers, keyslots area and the encrypted
/// `payload` (exactly `payload_len` bytes are read; the last sector is
/// zero-padded). Returns the summary of the header written.
pub fn create<W: Write, R: Read>(
    mut out: W,
    mut payload: R,
    payload_len: u64,
    passphrase: &Passphrase,
    opts: &CreateOptions,
) -> Result<HeaderSummary> {
    // Key material (derived keys, AES key schedules) passes through the frames below.
    crate::secret::scrubbed(|| {
        let random_vk;
        let vk = match &opts.volume_key {
            Some(k) => k,
            None => {
                random_vk = VolumeKey::random(64)?;
                &random_vk
            }
        };
        opts.check(vk.len())?;
        let uuid = match &opts.uuid {
            Some(u) => uuid::Uuid::parse_str(u).map_err(|err| Error::BadUuid {
                uuid: u.clone(),
                err,
            })?,
            None => uuid::Uuid::new_v4(),
        }
        .hyphenated()
        .to_string();

        let ks_opts = &opts.keyslot;
        let kdf = ks_opts.kdf.resolve(ks_opts.hash)?;
        kdf.check(0, &super::KdfLimits::default())?;
        let digest_iterations = match (opts.digest_iterations, &ks_opts.kdf) {
            (Some(n), _) => n.max(1),
            (None, KdfChoice::Fixed(_)) => 1000,
            (None, KdfChoice::Calibrated { .. }) => kdf::pbkdf2_iterations_for(Hash::Sha256, 125.0),
        };

        let area_offset = 2 * HDR_SIZE;
        let ks = keyslot::store(
            vk,
            passphrase,
            &kdf,
            ks_opts.hash,
            area_offset,
            ks_opts.priority,
        )?;
        let digest = keyslot::make_digest(vk, digest_iterations, &[0], &[0])?;
        let keyslots_size = opts.data_offset - 2 * HDR_SIZE;
        let meta = json!({
            "keyslots": {"0": ks.json},
            "tokens": {},
            "segments": {"0": {
                "type": "crypt",
                "offset": opts.data_offset.to_string(),
                "size": "dynamic",
                "iv_tweak": "0",
                "encryption": DATA_CIPHER,
                "sector_size": opts.sector_size,
            }},
            "digests": {"0": digest},
            "config": {
                "json_size": (HDR_SIZE - 4096).to_string(),
                "keyslots_size": keyslots_size.to_string(),
            },
        });
        let bin = BinHeader {
            hdr_size: HDR_SIZE,
            seqid: 1,
            label: opts.label.clone(),
            checksum_alg: "sha256".into(),
            uuid,
            subsystem: String::new(),
        };
        let headers = build_headers(&bin, &meta)?;

        // The metadata region: headers, keyslot 0, random fill (as cryptsetup does).
        let mut region = vec![0u8; opts.data_offset as usize];
        region[..headers.len()].copy_from_slice(&headers);
        let ks_start = area_offset as usize;
        let ks_end = ks_start + ks.area.len();
        region[ks_start..ks_end].copy_from_slice(&ks.area);
        secret::fill_random(&mut region[ks_end..])?;
        // Validate what we are about to write with the reader itself.
        let summary = super::inspect(&region[..])?;
        out.write_all(&region)
            .map_err(Error::io("writing the headers and keyslot area"))?;
        drop(region);

        encrypt_payload(&mut out, &mut payload, payload_len, vk, opts.sector_size)?;
        out.flush().map_err(Error::io("flushing the new volume"))?;
        Ok(summary)
    })
}

/// Both header copies (primary then secondary) for `meta`, validated first.
pub(crate) fn build_headers(bin: &BinHeader, meta: &serde_json::Value) -> Result<Vec<u8>> {
    json::from_value(meta.clone(), bin.hdr_size)?;
    let text = json::to_text(meta)?;
    let mut v = header::build_copy(bin, &text, true, &secret::random_vec(64)?)?;
    v.extend(header::build_copy(
        bin,
        &text,
        false,
        &secret::random_vec(64)?,
    )?);
    Ok(v)
}

fn encrypt_payload<W: Write, R: Read>(
    out: &mut W,
    payload: &mut R,
    payload_len: u64,
    vk: &VolumeKey,
    sector_size: u32,
) -> Result<()> {
    let xts = crate::secret::SecretBox::build(|| Xts::new(vk.bytes(), sector_size as usize))?;
    let total = data_len(payload_len, sector_size);
    let batch_len = BATCH.min(total as usize);
    let mut buf = vec![0u8; batch_len];
    let mut pos = 0u64;
    while pos < total {
        let n = (total - pos).min(batch_len as u64) as usize;
        let chunk = &mut buf[..n];
        // Payload bytes in this chunk; the rest (end of the last sector) is zero.
        let have = payload_len.saturating_sub(pos).min(n as u64) as usize;
        payload.read_exact(&mut chunk[..have]).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                Error::InvalidOptions(format!(
                    "payload ended before the declared {payload_len} bytes"
                ))
            } else {
                Error::io("reading the payload")(e)
            }
        })?;
        chunk[have..].fill(0);
        xts.encrypt(chunk, pos / 512);
        out.write_all(chunk)
            .map_err(Error::io("writing the data segment"))?;
        pos += n as u64;
    }
    Ok(())
}
