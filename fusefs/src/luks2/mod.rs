//! LUKS2: header parsing, keyslot unlock, data-segment decryption and volume
//! creation, interoperable with cryptsetup (format: `shared/spec/luks2.md`).
//!
//! * [`inspect`] parses a volume without a key ([`HeaderSummary`]).
//! * [`unlock`] opens it with a [`Passphrase`] and returns an [`UnlockedVolume`],
//!   a [`ReadAt`] over the decrypted data segment.
//! * [`create`] writes a complete new volume to any `Write`; [`volume_size`] says
//!   how long it will be. [`add_keyslot`] / [`remove_keyslot`] re-key a volume file.
//!
//! Nothing here writes while reading: a damaged header copy is reported in
//! [`HeaderSummary::warnings`], never repaired.
//!
//! Modules, one job each: `header` (binary headers), `json` (metadata types and
//! validation), `kdf` (PBKDF2/Argon2, limits, calibration), `mem` (available
//! memory), `af` (anti-forensic splitter), `hash`, `xts` (batched AES-XTS),
//! `keyslot` (open/store one keyslot), `segment` (the decrypting `ReadAt`),
//! `create`, `rekey`, `secret`, `error`.

mod af;
mod create;
mod error;
mod guarded;
mod hash;
mod header;
mod json;
mod kdf;
mod keyslot;
mod mem;
mod rekey;
mod secret;
mod segment;
mod xts;

pub use create::{CreateOptions, KeyslotOptions, create, volume_size};
pub use error::{Error, Result};
pub use guarded::{SecretBox, SecretBytes};
pub use hash::Hash;
pub use kdf::{Argon2Variant, KdfChoice, KdfKind, KdfLimits, KdfParams};
pub use mem::available_bytes;
pub use rekey::{add_keyslot, add_keyslot_with, remove_keyslot};
pub use secret::{Passphrase, VolumeKey};
pub use segment::{KernelMapping, UnlockedVolume};
pub use xts::Xts;

use crate::source::ReadAt;
use header::Header;
use json::{CryptSegment, Keyslot, Segment, SegmentSize};

/// The only data cipher implemented.
pub const DATA_CIPHER: &str = "aes-xts-plain64";

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

/// How to unlock.
#[derive(Debug, Clone, Default)]
pub struct UnlockOptions {
    /// Try only this keyslot (then priority 0 is allowed too).
    pub keyslot: Option<u32>,
    /// Cost limits for the keyslot KDFs; the default also checks available memory.
    pub limits: KdfLimits,
}

/// Reads and validates the header of a volume without a key.
pub fn inspect<R: ReadAt + ?Sized>(src: &R) -> Result<HeaderSummary> {
    Ok(summarize(&header::read(src)?))
}

fn summarize(h: &Header) -> HeaderSummary {
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
fn data_segment_any(h: &Header) -> Option<(u32, &CryptSegment)> {
    h.meta.segments.iter().find_map(|(&id, s)| match s {
        Segment::Crypt(c) => Some((id, c)),
        Segment::Other => None,
    })
}

/// The data segment, if this implementation can activate the volume.
fn data_segment(h: &Header) -> Result<(u32, &CryptSegment)> {
    if let Some(r) = h.meta.config.requirements.first() {
        return Err(Error::Unsupported(format!(
            "the volume requires \"{r}\" (e.g. an unfinished reencryption)"
        )));
    }
    if h.meta.segments.len() != 1 {
        return Err(Error::Unsupported(format!(
            "{} segments (reencryption in progress?); only one is supported",
            h.meta.segments.len()
        )));
    }
    let (id, seg) = data_segment_any(h)
        .ok_or_else(|| Error::Unsupported("the only segment is not a crypt segment".into()))?;
    if seg.encryption != DATA_CIPHER {
        return Err(Error::Unsupported(format!(
            "data cipher \"{}\" (only {DATA_CIPHER})",
            seg.encryption
        )));
    }
    if seg.integrity {
        return Err(Error::Unsupported(
            "authenticated encryption (integrity)".into(),
        ));
    }
    if !seg.flags.is_empty() {
        return Err(Error::Unsupported(format!("segment flags {:?}", seg.flags)));
    }
    if seg.iv_tweak != 0 {
        return Err(Error::Unsupported(format!(
            "a single segment with iv_tweak {}",
            seg.iv_tweak
        )));
    }
    Ok((id, seg))
}

/// Finds the volume key: tries keyslots by priority (or the named one).
fn unlock_key<R: ReadAt + ?Sized>(
    src: &R,
    h: &Header,
    seg_id: u32,
    passphrase: &Passphrase,
    opts: &UnlockOptions,
) -> Result<(u32, VolumeKey)> {
    let m = &h.meta;
    let bound = |id: u32| {
        m.digest_for_keyslot(id)
            .is_some_and(|d| d.segments.contains(&seg_id))
    };
    let mut slots: Vec<(u32, &json::Luks2Keyslot)> = m
        .keyslots
        .iter()
        .filter_map(|(&id, k)| match k {
            Keyslot::Luks2(k) if bound(id) => Some((id, k)),
            _ => None,
        })
        .collect();
    match opts.keyslot {
        Some(want) => {
            slots.retain(|(id, _)| *id == want);
            if slots.is_empty() {
                return Err(Error::NoSuchKeyslot(want));
            }
        }
        None => {
            slots.retain(|(_, k)| k.priority > 0);
            // Preferred (2) first, then normal; stable, so ids stay ascending.
            slots.sort_by_key(|(_, k)| std::cmp::Reverse(k.priority));
        }
    }
    if slots.is_empty() {
        return Err(Error::NoUsableKeyslot);
    }
    let mut blocked: Option<Error> = None;
    // The work done so far, in units of the per-keyslot cap.
    let (mut spent, mut tried) = (0.0f64, 0usize);
    for (id, ks) in slots {
        let digest = m.digest_for_keyslot(id).map_or(0, |d| d.iterations);
        let share = ks.kdf.work_share(&opts.limits)
            + f64::from(digest) / opts.limits.max_pbkdf2_iterations.max(1) as f64;
        if tried > 0 && spent + share > opts.limits.max_total_work {
            blocked.get_or_insert(Error::KdfBudgetSpent {
                slot: id,
                tried,
                value: spent + share,
                max: opts.limits.max_total_work,
            });
            continue;
        }
        let r = keyslot::open(src, m, id, ks, passphrase, &opts.limits);
        if r.is_ok() {
            spent += share;
            tried += 1;
        }
        match r {
            Ok(Some(vk)) => return Ok((id, vk)),
            Ok(None) => {}
            Err(e) if opts.keyslot.is_some() => return Err(e),
            // A keyslot that cannot be tried (too costly, unsupported): try the
            // others, but if none opens, that is the more useful error.
            Err(e) => {
                blocked.get_or_insert(e);
            }
        }
    }
    Err(blocked.unwrap_or(Error::WrongPassphrase))
}

/// Opens a volume: `src` holds the whole LUKS2 volume (typically a slice of a SIF
/// file). Returns a [`ReadAt`] over the decrypted data segment.
pub fn unlock<R: ReadAt>(
    src: R,
    passphrase: &Passphrase,
    opts: &UnlockOptions,
) -> Result<UnlockedVolume<R>> {
    let v = unlock_inner(src, passphrase, opts);
    // The keyslot's derived key, the volume key and the AES key schedules passed
    // through the frames below this one.
    guarded::scrub_stack();
    v
}

#[inline(never)]
fn unlock_inner<R: ReadAt>(
    src: R,
    passphrase: &Passphrase,
    opts: &UnlockOptions,
) -> Result<UnlockedVolume<R>> {
    let h = header::read(&src)?;
    let (seg_id, seg) = data_segment(&h)?;
    let ss = u64::from(seg.sector_size);
    let len = match seg.size {
        SegmentSize::Fixed(n) => {
            let end = seg.offset.saturating_add(n);
            if end > src.len() {
                return Err(Error::Truncated {
                    what: "the data segment",
                    needed: end,
                    len: src.len(),
                });
            }
            n
        }
        SegmentSize::Dynamic => {
            let n = src.len().checked_sub(seg.offset).ok_or(Error::Truncated {
                what: "the data segment",
                needed: seg.offset,
                len: src.len(),
            })?;
            n - n % ss
        }
    };
    let (slot, vk) = unlock_key(&src, &h, seg_id, passphrase, opts)?;
    let xts = guarded::SecretBox::build(|| Xts::new(vk.bytes(), seg.sector_size as usize))?;
    let offset = seg.offset;
    let summary = summarize(&h);
    let warnings = h.warnings.clone();
    let mapping = KernelMapping::new(&vk, offset, len, seg.sector_size);
    Ok(UnlockedVolume::new(
        src, xts, offset, len, summary, warnings, slot, mapping,
    ))
}

/// Fuzzing entry point: parses headers and JSON from memory and, with tiny KDF
/// limits so it cannot be slow, tries an unlock and a few reads: once on the
/// input as is, once with the input zero-extended to 4 MiB so that inputs
/// holding only the header area still reach the keyslot and data paths.
#[doc(hidden)]
pub fn fuzz_one(data: &[u8]) {
    /// `data` followed by zeros up to `len`.
    struct ZeroExtended<'a> {
        data: &'a [u8],
        len: u64,
    }
    impl ReadAt for ZeroExtended<'_> {
        fn len(&self) -> u64 {
            self.len
        }
        fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
            crate::source::check_range(self.len, offset, buf.len())?;
            buf.fill(0);
            let dl = self.data.len() as u64;
            if offset < dl {
                let n = ((dl - offset) as usize).min(buf.len());
                buf[..n].copy_from_slice(&self.data[offset as usize..offset as usize + n]);
            }
            Ok(())
        }
    }

    let _ = inspect(data);
    let opts = UnlockOptions {
        keyslot: None,
        limits: KdfLimits {
            max_pbkdf2_iterations: 2000,
            max_argon2_work: 1024,
            max_total_work: 4.0,
            max_argon2_time: 4,
            max_argon2_memory_kib: 256,
            max_argon2_cpus: 2,
            check_available_memory: false,
        },
    };
    let pass = Passphrase::from_slice(b"fuzz");
    let try_read = |v: &dyn ReadAt| {
        let mut buf = vec![0u8; 8192.min(v.len() as usize)];
        let _ = v.read_exact_at(&mut buf, 0);
        let n = 100.min(buf.len());
        let _ = v.read_exact_at(
            &mut buf[..n],
            v.len().saturating_sub(n as u64).saturating_sub(1),
        );
    };
    if let Ok(v) = unlock(data, &pass, &opts) {
        try_read(&v);
    }
    let ext = ZeroExtended {
        data,
        len: (data.len() as u64).max(4 << 20),
    };
    if let Ok(v) = unlock(ext, &pass, &opts) {
        try_read(&v);
    }
}
