//! Opening a volume with a passphrase: choosing the data segment, trying keyslots
//! within the KDF budget, and the decrypting view over the segment.

#![forbid(unsafe_code)]

use super::DATA_CIPHER;
use super::error::{Error, Result};
use super::header::{self, Header};
use super::json::{self, CryptSegment, Keyslot, SegmentSize};
use super::kdf::KdfLimits;
use super::keyslot;
use super::secret::{Passphrase, VolumeKey};
use super::segment::{KernelMapping, UnlockedVolume};
use super::summary::{data_segment_any, summarize};
use super::xts::Xts;
use crate::secret as guarded;
use crate::source::ReadAt;

/// How to unlock.
#[derive(Debug, Clone, Default)]
pub struct UnlockOptions {
    /// Try only this keyslot (then priority 0 is allowed too).
    pub keyslot: Option<u32>,
    /// Cost limits for the keyslot KDFs; the default also checks available memory.
    pub limits: KdfLimits,
}

/// The data segment, if this implementation can activate the volume.
pub(super) fn data_segment(h: &Header) -> Result<(u32, &CryptSegment)> {
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
pub(super) fn unlock_key<R: ReadAt + ?Sized>(
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
    // The keyslot's derived key, the volume key and the AES key schedules pass
    // through the frames below this one.
    guarded::scrubbed(|| {
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
    })
}
