//! What a volume's header says, readable without a key ([`HeaderSummary`]).

#![forbid(unsafe_code)]

use super::error::Result;
use super::header::{self, Header};
use super::json::{CryptSegment, Keyslot, Segment, SegmentSize};
use super::kdf::KdfParams;
use crate::source::ReadAt;

/// What `veil inspect` shows: everything readable without a key. Plain data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderSummary {
    pub uuid: String,
    pub label: String,
    pub subsystem: String,
    /// Metadata sequence number of the copy in use.
    pub seqid: u64,
    /// Binary header + JSON area size of each copy.
    pub header_size: u64,
    pub keyslots_size: u64,
    /// Data segment cipher (e.g. `aes-xts-plain64`); empty if there is no crypt segment.
    pub cipher: String,
    /// Volume key size in bytes (64 = AES-256-XTS); 0 if unknown.
    pub key_size: u32,
    pub sector_size: u32,
    /// Byte offset of the data segment.
    pub segment_offset: u64,
    /// Byte size of the data segment; `None` = "dynamic" (to the end of the device).
    pub segment_size: Option<u64>,
    pub keyslots: Vec<KeyslotSummary>,
    pub tokens: usize,
    /// `config.requirements.mandatory` (a volume with any cannot be unlocked here).
    pub requirements: Vec<String>,
    /// Damaged or outdated header copies (the other copy was used; nothing repaired).
    pub warnings: Vec<String>,
}

/// One keyslot of a [`HeaderSummary`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyslotSummary {
    pub id: u32,
    /// `luks2` for ordinary keyslots.
    pub kind: String,
    /// 0 = only when named, 1 = normal, 2 = preferred.
    pub priority: u32,
    pub key_size: u32,
    /// KDF type and costs (`None` for non-luks2 keyslots).
    pub kdf: Option<KdfParams>,
    pub af_hash: String,
    pub area_offset: u64,
    pub area_size: u64,
}

/// Reads and validates the header of a volume without a key.
pub fn inspect<R: ReadAt + ?Sized>(src: &R) -> Result<HeaderSummary> {
    Ok(summarize(&header::read(src)?))
}

pub(super) fn summarize(h: &Header) -> HeaderSummary {
    let m = &h.meta;
    let seg = data_segment_any(h);
    let key_size = seg
        .and_then(|(id, _)| m.digests.values().find(|d| d.segments.contains(&id)))
        .and_then(|d| {
            d.keyslots.iter().find_map(|k| match m.keyslots.get(k) {
                Some(Keyslot::Luks2(ks)) => Some(ks.key_size),
                _ => None,
            })
        })
        .unwrap_or(0);
    HeaderSummary {
        uuid: h.bin.uuid.clone(),
        label: h.bin.label.clone(),
        subsystem: h.bin.subsystem.clone(),
        seqid: h.bin.seqid,
        header_size: h.bin.hdr_size,
        keyslots_size: m.config.keyslots_size,
        cipher: seg.map(|(_, s)| s.encryption.clone()).unwrap_or_default(),
        key_size,
        sector_size: seg.map_or(0, |(_, s)| s.sector_size),
        segment_offset: seg.map_or(0, |(_, s)| s.offset),
        segment_size: seg.and_then(|(_, s)| match s.size {
            SegmentSize::Dynamic => None,
            SegmentSize::Fixed(n) => Some(n),
        }),
        keyslots: m
            .keyslots
            .iter()
            .map(|(&id, k)| match k {
                Keyslot::Luks2(k) => KeyslotSummary {
                    id,
                    kind: "luks2".into(),
                    priority: k.priority,
                    key_size: k.key_size,
                    kdf: Some(k.kdf.clone()),
                    af_hash: k.af_hash.clone(),
                    area_offset: k.area_offset,
                    area_size: k.area_size,
                },
                Keyslot::Other { kind } => KeyslotSummary {
                    id,
                    kind: kind.clone(),
                    priority: 0,
                    key_size: 0,
                    kdf: None,
                    af_hash: String::new(),
                    area_offset: 0,
                    area_size: 0,
                },
            })
            .collect(),
        tokens: m.token_count,
        requirements: m.config.requirements.clone(),
        warnings: h.warnings.clone(),
    }
}

/// The first crypt segment (for display).
pub(super) fn data_segment_any(h: &Header) -> Option<(u32, &CryptSegment)> {
    h.meta.segments.iter().find_map(|(&id, s)| match s {
        Segment::Crypt(c) => Some((id, c)),
        Segment::Other => None,
    })
}
