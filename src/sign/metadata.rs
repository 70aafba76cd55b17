//! What a signature covers (spec/sif.md §7.1, §8): the header and descriptor integrity
//! streams, object digests, and the image-metadata JSON that is clear-signed.
//!
//! The streams deliberately leave out fields the reference leaves out (header arch,
//! timestamps and geometry; descriptor absolute ID, group, offset, padding, ModifiedAt),
//! so an image signed by a peer verifies here and the other way round.

#![forbid(unsafe_code)]

use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use veil_fusefs::source::ReadAt;

use super::error::{Result, SignError};
use crate::sif::{Descriptor, Header, Sif};

/// Length of the header integrity stream: LaunchScript ‖ Magic ‖ Version ‖ ID.
pub const HEADER_STREAM_LEN: usize = 61;
/// Length of the descriptor integrity stream.
pub const DESCRIPTOR_STREAM_LEN: usize = 557;
/// Objects are hashed in chunks of this size, so a multi-gigabyte partition never has to
/// fit in memory.
const HASH_CHUNK: usize = 1 << 20;

/// The digest algorithms the metadata JSON may name. Signing always uses SHA-256.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestAlg {
    Sha224,
    Sha256,
    Sha384,
    Sha512,
    Sha512_224,
    Sha512_256,
}

impl DigestAlg {
    pub fn name(self) -> &'static str {
        match self {
            DigestAlg::Sha224 => "sha224",
            DigestAlg::Sha256 => "sha256",
            DigestAlg::Sha384 => "sha384",
            DigestAlg::Sha512 => "sha512",
            DigestAlg::Sha512_224 => "sha512_224",
            DigestAlg::Sha512_256 => "sha512_256",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        [
            DigestAlg::Sha224,
            DigestAlg::Sha256,
            DigestAlg::Sha384,
            DigestAlg::Sha512,
            DigestAlg::Sha512_224,
            DigestAlg::Sha512_256,
        ]
        .into_iter()
        .find(|a| a.name() == name)
    }

    pub fn output_len(self) -> usize {
        match self {
            DigestAlg::Sha224 | DigestAlg::Sha512_224 => 28,
            DigestAlg::Sha256 | DigestAlg::Sha512_256 => 32,
            DigestAlg::Sha384 => 48,
            DigestAlg::Sha512 => 64,
        }
    }

    pub fn hasher(self) -> Hasher {
        match self {
            DigestAlg::Sha224 => Hasher::Sha224(sha2::Sha224::new()),
            DigestAlg::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            DigestAlg::Sha384 => Hasher::Sha384(sha2::Sha384::new()),
            DigestAlg::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
            DigestAlg::Sha512_224 => Hasher::Sha512_224(sha2::Sha512_224::new()),
            DigestAlg::Sha512_256 => Hasher::Sha512_256(sha2::Sha512_256::new()),
        }
    }

    pub fn hash(self, data: &[u8]) -> Vec<u8> {
        let mut h = self.hasher();
        h.update(data);
        h.finish()
    }
}

/// An incremental hash over one of the [`DigestAlg`]s.
pub enum Hasher {
    Sha224(sha2::Sha224),
    Sha256(sha2::Sha256),
    Sha384(sha2::Sha384),
    Sha512(sha2::Sha512),
    Sha512_224(sha2::Sha512_224),
    Sha512_256(sha2::Sha512_256),
}

impl Hasher {
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha224(h) => h.update(data),
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha384(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
            Hasher::Sha512_224(h) => h.update(data),
            Hasher::Sha512_256(h) => h.update(data),
        }
    }

    pub fn finish(self) -> Vec<u8> {
        match self {
            Hasher::Sha224(h) => h.finalize().to_vec(),
            Hasher::Sha256(h) => h.finalize().to_vec(),
            Hasher::Sha384(h) => h.finalize().to_vec(),
            Hasher::Sha512(h) => h.finalize().to_vec(),
            Hasher::Sha512_224(h) => h.finalize().to_vec(),
            Hasher::Sha512_256(h) => h.finalize().to_vec(),
        }
    }
}

/// A digest as written in the metadata JSON: `<alg>:<lowercase hex>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    pub alg: DigestAlg,
    pub value: Vec<u8>,
}

impl Digest {
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        let (alg, hex) = s
            .split_once(':')
            .ok_or_else(|| format!("malformed digest {s:?}"))?;
        let alg = DigestAlg::from_name(alg)
            .ok_or_else(|| format!("unsupported digest algorithm {alg:?}"))?;
        let value = decode_hex(hex).ok_or_else(|| format!("malformed digest value {hex:?}"))?;
        if value.len() != alg.output_len() {
            return Err(format!(
                "{} digest has {} bytes, expected {}",
                alg.name(),
                value.len(),
                alg.output_len()
            ));
        }
        Ok(Digest { alg, value })
    }

    pub fn text(&self) -> String {
        format!("{}:{}", self.alg.name(), encode_hex(&self.value))
    }
}

pub fn encode_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// LaunchScript ‖ Magic ‖ Version ‖ ID: the only header bytes a signature covers.
pub fn header_stream(h: &Header) -> [u8; HEADER_STREAM_LEN] {
    let raw = h.to_bytes();
    let mut s = [0u8; HEADER_STREAM_LEN];
    s[..45].copy_from_slice(&raw[..0x2D]); // launch script, magic, version
    s[45..].copy_from_slice(&raw[0x30..0x40]); // ID (the arch in between is skipped)
    s
}

/// The descriptor fields a signature covers, with the object's ID made relative to its
/// group's minimum ID so objects can be renumbered together without breaking it.
pub fn descriptor_stream(d: &Descriptor, relative_id: u32) -> [u8; DESCRIPTOR_STREAM_LEN] {
    let raw = d.to_bytes();
    let mut s = [0u8; DESCRIPTOR_STREAM_LEN];
    s[0..5].copy_from_slice(&raw[0..5]); // data type, used
    s[5..9].copy_from_slice(&relative_id.to_le_bytes());
    s[9..13].copy_from_slice(&raw[13..17]); // link (raw)
    s[13..21].copy_from_slice(&raw[25..33]); // size
    s[21..29].copy_from_slice(&raw[41..49]); // created at
    s[29..DESCRIPTOR_STREAM_LEN].copy_from_slice(&raw[57..585]); // uid, gid, name, extra
    s
}

/// Hashes an object's data by streaming it from the image.
pub fn hash_object<R: ReadAt>(sif: &Sif<R>, d: &Descriptor, alg: DigestAlg) -> Result<Vec<u8>> {
    let mut h = alg.hasher();
    hash_object_into(sif, d, &mut h)?;
    Ok(h.finish())
}

/// Feeds an object's data into `h`, in bounded chunks.
pub fn hash_object_into<R: ReadAt>(sif: &Sif<R>, d: &Descriptor, h: &mut Hasher) -> Result<()> {
    // The SIF reader checked at open that [offset, offset+size) lies inside the file.
    let (start, end) = d.range();
    let mut buf = vec![0u8; HASH_CHUNK.min((end - start) as usize)];
    let mut pos = start;
    while pos < end {
        let n = ((end - pos) as usize).min(buf.len());
        sif.source()
            .read_exact_at(&mut buf[..n], pos)
            .map_err(SignError::ReadImage)?;
        h.update(&buf[..n]);
        pos += n as u64;
    }
    Ok(())
}

/// The minimum ID among the used descriptors with this group (signatures in the group
/// included, as the reference does): relative IDs count from it.
pub fn group_min_id<R: ReadAt>(sif: &Sif<R>, group: u32) -> Option<u32> {
    sif.objects()
        .filter(|d| d.group() == group)
        .map(|d| d.id)
        .min()
}

/// The signed JSON, field for field and in Go's order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageMetadata {
    pub version: i64,
    pub header: HeaderMetadata,
    #[serde(default)]
    pub objects: Option<Vec<ObjectMetadata>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeaderMetadata {
    pub digest: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ObjectMetadata {
    #[serde(rename = "relativeId")]
    pub relative_id: u32,
    #[serde(rename = "descriptorDigest")]
    pub descriptor_digest: String,
    #[serde(rename = "objectDigest")]
    pub object_digest: String,
}

/// Builds the metadata for `objects` (all in one group, in ascending ID order) with SHA-256.
pub fn image_metadata<R: ReadAt>(
    sif: &Sif<R>,
    min_id: u32,
    objects: &[&Descriptor],
) -> Result<ImageMetadata> {
    let alg = DigestAlg::Sha256;
    let header = Digest {
        alg,
        value: alg.hash(&header_stream(sif.header())),
    };
    let mut out = Vec::with_capacity(objects.len());
    for d in objects {
        let rel =
            d.id.checked_sub(min_id)
                .ok_or(SignError::ObjectBelowGroup(d.id))?;
        out.push(ObjectMetadata {
            relative_id: rel,
            descriptor_digest: Digest {
                alg,
                value: alg.hash(&descriptor_stream(d, rel)),
            }
            .text(),
            object_digest: Digest {
                alg,
                value: hash_object(sif, d, alg)?,
            }
            .text(),
        });
    }
    Ok(ImageMetadata {
        version: 1,
        header: HeaderMetadata {
            digest: header.text(),
        },
        objects: Some(out),
    })
}

impl ImageMetadata {
    /// Compact JSON with no trailing newline, byte-identical to Go's `encoding/json`.
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain strings and integers cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// Checks one digest string against freshly hashed bytes. A digest that does not even
/// parse counts as a mismatch of the thing it describes.
pub fn digest_matches(
    text: &str,
    compute: impl FnOnce(DigestAlg) -> Result<Vec<u8>>,
) -> Result<bool> {
    match Digest::parse(text) {
        Ok(d) => Ok(compute(d.alg)? == d.value),
        Err(_) => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_text_round_trip() {
        let d = Digest::parse(&format!("sha384:{}", "ab".repeat(48))).unwrap();
        assert_eq!(d.alg, DigestAlg::Sha384);
        assert_eq!(d.text(), format!("sha384:{}", "ab".repeat(48)));
        assert!(Digest::parse("sha256:abcd").is_err());
        assert!(Digest::parse("md5:d41d8cd98f00b204e9800998ecf8427e").is_err());
        assert!(Digest::parse("sha256").is_err());
        assert!(Digest::parse(&format!("sha256:{}", "zz".repeat(32))).is_err());
    }

    #[test]
    fn hash_names_and_lengths() {
        for a in [
            "sha224",
            "sha256",
            "sha384",
            "sha512",
            "sha512_224",
            "sha512_256",
        ] {
            let alg = DigestAlg::from_name(a).unwrap();
            assert_eq!(alg.hash(b"blah").len(), alg.output_len());
        }
    }
}
