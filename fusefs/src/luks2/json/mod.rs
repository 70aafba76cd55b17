//! The JSON metadata area: strict parsing into typed values, and validation.
//!
//! The text is parsed into a `serde_json::Value` by a deserializer that rejects
//! duplicate member names, then every field the implementation uses is read with
//! an exact type (string-uint64, u32 integer, base64, id lists), and the
//! cross-references and layout rules of the LUKS2 spec are checked. The raw value
//! is kept so a rewrite (add/remove keyslot) preserves members it does not know.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::Value;

use super::error::{Error, Result};
use super::kdf::{Argon2Variant, KdfParams};
use fields::{
    as_obj, b64_field, field, id_list, obj_field, parse_id, str_field, str_list, u32_field, u64_str,
};
use strict::StrictValue;

mod fields;
mod strict;

/// cryptsetup's limits on object counts.
const MAX_KEYSLOT_ID: u32 = 31;
const MAX_TOKEN_ID: u32 = 31;
const MAX_SEGMENTS: usize = 32;
const MAX_DIGESTS: usize = 8;
/// Largest keyslots area cryptsetup allows.
pub const MAX_KEYSLOTS_SIZE: u64 = 128 << 20;
/// Largest key this implementation accepts anywhere (cryptsetup: 512 bytes).
const MAX_KEY_SIZE: u32 = 512;

/// The parsed, validated metadata of one header copy.
#[derive(Debug, Clone)]
pub struct Metadata {
    pub keyslots: BTreeMap<u32, Keyslot>,
    pub segments: BTreeMap<u32, Segment>,
    pub digests: BTreeMap<u32, Digest>,
    pub token_count: usize,
    pub config: Config,
    /// The whole JSON value, for rewriting without losing unknown members.
    pub(crate) raw: Value,
}

#[derive(Debug, Clone)]
pub enum Keyslot {
    Luks2(Luks2Keyslot),
    /// A keyslot of another type (e.g. "reencrypt"): kept, never used.
    Other {
        kind: String,
    },
}

#[derive(Debug, Clone)]
pub struct Luks2Keyslot {
    pub key_size: u32,
    /// 0 = only when named, 1 = normal, 2 = preferred.
    pub priority: u32,
    pub af_hash: String,
    pub area_offset: u64,
    pub area_size: u64,
    pub area_encryption: String,
    pub area_key_size: u32,
    pub kdf: KdfParams,
    pub kdf_salt: Vec<u8>,
}

#[derive(Debug, Clone)]
pub enum Segment {
    Crypt(CryptSegment),
    /// Another segment type (e.g. "linear" during reencryption): never used.
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentSize {
    /// Up to the end of the device.
    Dynamic,
    Fixed(u64),
}

#[derive(Debug, Clone)]
pub struct CryptSegment {
    pub offset: u64,
    pub size: SegmentSize,
    pub iv_tweak: u64,
    pub encryption: String,
    pub sector_size: u32,
    pub integrity: bool,
    pub flags: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Digest {
    pub keyslots: Vec<u32>,
    pub segments: Vec<u32>,
    pub hash: String,
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub digest: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub keyslots_size: u64,
    /// `requirements.mandatory`: features a reader must implement to activate.
    pub requirements: Vec<String>,
}

impl Metadata {
    /// The digest that lists keyslot `id`.
    pub fn digest_for_keyslot(&self, id: u32) -> Option<&Digest> {
        self.digests.values().find(|d| d.keyslots.contains(&id))
    }
}

/// Extracts the JSON text from a JSON area: `{`, the text, then only NUL bytes.
pub fn area_text(area: &[u8]) -> Result<&[u8]> {
    if area.first() != Some(&b'{') {
        return Err(Error::meta("JSON area does not start with '{'"));
    }
    let end = area
        .iter()
        .position(|&b| b == 0)
        .ok_or_else(|| Error::meta("JSON area is not NUL-terminated"))?;
    if area[end..].iter().any(|&b| b != 0) {
        return Err(Error::meta("non-zero bytes after the JSON text"));
    }
    Ok(&area[..end])
}

/// Parses and validates the JSON text of a header whose `hdr_size` is given.
pub fn parse(text: &[u8], hdr_size: u64) -> Result<Metadata> {
    let raw: StrictValue = serde_json::from_slice(text).map_err(Error::JsonSyntax)?;
    from_value(raw.0, hdr_size)
}

/// Validates an in-memory value (used after a rewrite, before it is written).
pub fn from_value(raw: Value, hdr_size: u64) -> Result<Metadata> {
    let top = as_obj(&raw, "top level")?;
    let config = parse_config(field(top, "config", "top level")?, hdr_size)?;
    let meta_end = hdr_size
        .checked_mul(2)
        .and_then(|m| m.checked_add(config.keyslots_size))
        .ok_or_else(|| Error::meta("metadata size overflows"))?;

    let mut keyslots = BTreeMap::new();
    for (name, v) in obj_field(top, "keyslots", "top level")? {
        let id = parse_id(name, "keyslot")?;
        if id > MAX_KEYSLOT_ID {
            return Err(Error::meta(format!("keyslot id {id} is above 31")));
        }
        keyslots.insert(id, parse_keyslot(id, v, hdr_size, meta_end)?);
    }
    check_area_overlaps(&keyslots)?;

    let tokens = obj_field(top, "tokens", "top level")?;
    for (name, v) in tokens {
        let id = parse_id(name, "token")?;
        if id > MAX_TOKEN_ID {
            return Err(Error::meta(format!("token id {id} is above 31")));
        }
        let t = as_obj(v, "token")?;
        str_field(t, "type", "token")?;
        for k in id_list(t, "keyslots", "token")? {
            if !keyslots.contains_key(&k) {
                return Err(Error::meta(format!(
                    "token {id} refers to missing keyslot {k}"
                )));
            }
        }
    }

    let segs = obj_field(top, "segments", "top level")?;
    if segs.is_empty() {
        return Err(Error::meta("no segments"));
    }
    if segs.len() > MAX_SEGMENTS {
        return Err(Error::meta("more than 32 segments"));
    }
    let mut segments = BTreeMap::new();
    for (name, v) in segs {
        let id = parse_id(name, "segment")?;
        segments.insert(id, parse_segment(id, v, meta_end)?);
    }

    let digs = obj_field(top, "digests", "top level")?;
    if digs.len() > MAX_DIGESTS {
        return Err(Error::meta("more than 8 digests"));
    }
    let mut digests = BTreeMap::new();
    for (name, v) in digs {
        let id = parse_id(name, "digest")?;
        let d = parse_digest(id, v)?;
        for k in &d.keyslots {
            if !keyslots.contains_key(k) {
                return Err(Error::meta(format!(
                    "digest {id} refers to missing keyslot {k}"
                )));
            }
        }
        for s in &d.segments {
            if !segments.contains_key(s) {
                return Err(Error::meta(format!(
                    "digest {id} refers to missing segment {s}"
                )));
            }
        }
        digests.insert(id, d);
    }
    for (id, ks) in &keyslots {
        if let Keyslot::Luks2(_) = ks {
            let n = digests.values().filter(|d| d.keyslots.contains(id)).count();
            if n != 1 {
                return Err(Error::meta(format!(
                    "keyslot {id} is listed in {n} digests (must be exactly one)"
                )));
            }
        }
    }
    for (id, s) in &segments {
        if let Segment::Crypt(_) = s
            && !digests.values().any(|d| d.segments.contains(id))
        {
            return Err(Error::meta(format!("segment {id} has no digest")));
        }
    }

    Ok(Metadata {
        keyslots,
        segments,
        digests,
        token_count: tokens.len(),
        config,
        raw,
    })
}

fn parse_config(v: &Value, hdr_size: u64) -> Result<Config> {
    let c = as_obj(v, "config")?;
    let json_size = u64_str(c, "json_size", "config")?;
    if Some(json_size) != hdr_size.checked_sub(4096) {
        return Err(Error::meta(format!(
            "config.json_size {json_size} does not match the header size {hdr_size}"
        )));
    }
    let keyslots_size = u64_str(c, "keyslots_size", "config")?;
    if keyslots_size % 4096 != 0 || keyslots_size > MAX_KEYSLOTS_SIZE {
        return Err(Error::meta(format!(
            "config.keyslots_size {keyslots_size} is not a multiple of 4096 up to 128 MiB"
        )));
    }
    // Activation flags are only type-checked: they tune dm-crypt, not the format.
    if c.get("flags").is_some() {
        str_list(c, "flags", "config")?;
    }
    let requirements = match c.get("requirements") {
        None => Vec::new(),
        Some(r) => {
            let r = as_obj(r, "config.requirements")?;
            match r.get("mandatory") {
                None => Vec::new(),
                Some(_) => str_list(r, "mandatory", "config.requirements")?,
            }
        }
    };
    Ok(Config {
        keyslots_size,
        requirements,
    })
}

fn parse_keyslot(id: u32, v: &Value, hdr_size: u64, meta_end: u64) -> Result<Keyslot> {
    let ctx = format!("keyslots.{id}");
    let o = as_obj(v, &ctx)?;
    let kind = str_field(o, "type", &ctx)?;
    if kind != "luks2" {
        return Ok(Keyslot::Other {
            kind: kind.to_string(),
        });
    }
    let key_size = u32_field(o, "key_size", &ctx)?;
    if key_size == 0 || key_size > MAX_KEY_SIZE {
        return Err(Error::meta(format!(
            "{ctx}.key_size {key_size} out of range"
        )));
    }
    let priority = match o.get("priority") {
        None => 1,
        Some(_) => u32_field(o, "priority", &ctx)?,
    };
    if priority > 2 {
        return Err(Error::meta(format!(
            "{ctx}.priority {priority} out of range"
        )));
    }

    let actx = format!("{ctx}.af");
    let af = as_obj(field(o, "af", &ctx)?, &actx)?;
    if str_field(af, "type", &actx)? != "luks1" {
        return Err(Error::meta(format!("{actx}.type is not \"luks1\"")));
    }
    let stripes = u32_field(af, "stripes", &actx)?;
    if stripes as usize != super::af::STRIPES {
        return Err(Error::meta(format!(
            "{actx}.stripes is {stripes}; only 4000 is valid"
        )));
    }
    let af_hash = str_field(af, "hash", &actx)?.to_string();

    let actx = format!("{ctx}.area");
    let area = as_obj(field(o, "area", &ctx)?, &actx)?;
    if str_field(area, "type", &actx)? != "raw" {
        return Err(Error::meta(format!("{actx}.type is not \"raw\"")));
    }
    let area_offset = u64_str(area, "offset", &actx)?;
    let area_size = u64_str(area, "size", &actx)?;
    let area_end = area_offset
        .checked_add(area_size)
        .ok_or_else(|| Error::meta(format!("{actx} offset + size overflows")))?;
    if area_size == 0 || area_offset < 2 * hdr_size || area_end > meta_end {
        return Err(Error::meta(format!(
            "{actx} [{area_offset}, {area_end}) is not inside the keyslots area [{}, {meta_end})",
            2 * hdr_size
        )));
    }
    let area_encryption = str_field(area, "encryption", &actx)?.to_string();
    let area_key_size = u32_field(area, "key_size", &actx)?;
    if area_key_size == 0 || area_key_size > MAX_KEY_SIZE {
        return Err(Error::meta(format!(
            "{actx}.key_size {area_key_size} out of range"
        )));
    }

    let kctx = format!("{ctx}.kdf");
    let kdf = as_obj(field(o, "kdf", &ctx)?, &kctx)?;
    let kdf_salt = b64_field(kdf, "salt", &kctx)?;
    if kdf_salt.len() != 32 {
        return Err(Error::meta(format!("{kctx}.salt is not 32 bytes")));
    }
    let kdf = match str_field(kdf, "type", &kctx)? {
        "pbkdf2" => KdfParams::Pbkdf2 {
            hash: str_field(kdf, "hash", &kctx)?.to_string(),
            iterations: u32_field(kdf, "iterations", &kctx)?,
        },
        t @ ("argon2i" | "argon2id") => KdfParams::Argon2 {
            variant: if t == "argon2i" {
                Argon2Variant::Argon2i
            } else {
                Argon2Variant::Argon2id
            },
            time: u32_field(kdf, "time", &kctx)?,
            memory_kib: u32_field(kdf, "memory", &kctx)?,
            cpus: u32_field(kdf, "cpus", &kctx)?,
        },
        other => {
            return Err(Error::meta(format!("{kctx}.type \"{other}\" is unknown")));
        }
    };
    Ok(Keyslot::Luks2(Luks2Keyslot {
        key_size,
        priority,
        af_hash,
        area_offset,
        area_size,
        area_encryption,
        area_key_size,
        kdf,
        kdf_salt,
    }))
}

fn check_area_overlaps(keyslots: &BTreeMap<u32, Keyslot>) -> Result<()> {
    let mut areas: Vec<(u64, u64, u32)> = keyslots
        .iter()
        .filter_map(|(id, k)| match k {
            Keyslot::Luks2(k) => Some((k.area_offset, k.area_offset + k.area_size, *id)),
            Keyslot::Other { .. } => None,
        })
        .collect();
    areas.sort_unstable();
    for w in areas.windows(2) {
        if let [a, b] = w
            && b.0 < a.1
        {
            return Err(Error::meta(format!(
                "keyslot areas of keyslots {} and {} overlap",
                a.2, b.2
            )));
        }
    }
    Ok(())
}

fn parse_segment(id: u32, v: &Value, meta_end: u64) -> Result<Segment> {
    let ctx = format!("segments.{id}");
    let o = as_obj(v, &ctx)?;
    let kind = str_field(o, "type", &ctx)?;
    let offset = u64_str(o, "offset", &ctx)?;
    if offset % 512 != 0 {
        return Err(Error::meta(format!(
            "{ctx}.offset is not a multiple of 512"
        )));
    }
    if offset < meta_end {
        return Err(Error::meta(format!(
            "{ctx}.offset {offset} overlaps the metadata (which ends at {meta_end})"
        )));
    }
    if kind != "crypt" {
        return Ok(Segment::Other);
    }
    let sector_size = u32_field(o, "sector_size", &ctx)?;
    if !matches!(sector_size, 512 | 1024 | 2048 | 4096) {
        return Err(Error::meta(format!(
            "{ctx}.sector_size {sector_size} is not 512, 1024, 2048 or 4096"
        )));
    }
    let size = match str_field(o, "size", &ctx)? {
        "dynamic" => SegmentSize::Dynamic,
        _ => {
            let s = u64_str(o, "size", &ctx)?;
            if s == 0 || s % 512 != 0 || s % u64::from(sector_size) != 0 {
                return Err(Error::meta(format!(
                    "{ctx}.size {s} is not a positive multiple of the sector size"
                )));
            }
            if offset.checked_add(s).is_none() {
                return Err(Error::meta(format!("{ctx} offset + size overflows")));
            }
            SegmentSize::Fixed(s)
        }
    };
    let iv_tweak = u64_str(o, "iv_tweak", &ctx)?;
    let encryption = str_field(o, "encryption", &ctx)?.to_string();
    let integrity = match o.get("integrity") {
        None => false,
        Some(i) => {
            as_obj(i, &format!("{ctx}.integrity"))?;
            true
        }
    };
    let flags = match o.get("flags") {
        None => Vec::new(),
        Some(_) => str_list(o, "flags", &ctx)?,
    };
    Ok(Segment::Crypt(CryptSegment {
        offset,
        size,
        iv_tweak,
        encryption,
        sector_size,
        integrity,
        flags,
    }))
}

fn parse_digest(id: u32, v: &Value) -> Result<Digest> {
    let ctx = format!("digests.{id}");
    let o = as_obj(v, &ctx)?;
    let kind = str_field(o, "type", &ctx)?;
    if kind != "pbkdf2" {
        return Err(Error::meta(format!("{ctx}.type \"{kind}\" is unknown")));
    }
    let salt = b64_field(o, "salt", &ctx)?;
    if salt.len() != 32 {
        return Err(Error::meta(format!("{ctx}.salt is not 32 bytes")));
    }
    let digest = b64_field(o, "digest", &ctx)?;
    if digest.is_empty() || digest.len() > 64 {
        return Err(Error::meta(format!("{ctx}.digest has a bad length")));
    }
    Ok(Digest {
        keyslots: id_list(o, "keyslots", &ctx)?,
        segments: id_list(o, "segments", &ctx)?,
        hash: str_field(o, "hash", &ctx)?.to_string(),
        iterations: u32_field(o, "iterations", &ctx)?,
        salt,
        digest,
    })
}

// ---- writing helpers ---------------------------------------------------------

/// Encodes bytes as LUKS2 base64.
pub fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

/// Compact JSON text of a value (what cryptsetup writes).
pub fn to_text(v: &Value) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(Error::JsonWrite)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fields::parse_decimal;

    #[test]
    fn strict_parsing_rejects_duplicates_and_wrong_types() {
        assert!(parse(br#"{"a":1,"a":2}"#, 16384).is_err());
        let e = parse(br#"{"a":1,"a":2}"#, 16384).unwrap_err().to_string();
        assert!(e.contains("duplicate"), "{e}");
        assert_eq!(parse_decimal("16777216"), Some(16777216));
        assert_eq!(parse_decimal("+1"), None);
        assert_eq!(parse_decimal("99999999999999999999"), None);
        assert_eq!(parse_decimal(""), None);
        assert!(parse_id("01", "x").is_err());
        assert!(parse_id("0", "x").is_ok());
        assert!(area_text(b"{}\0\0").is_ok());
        assert!(area_text(b"{}\0x").is_err());
        assert!(area_text(b"{}").is_err());
    }
}
