//! Adding and removing keyslots on an existing volume file. The volume key is
//! recovered with an existing passphrase, so nothing is re-encrypted. Both
//! header copies are rewritten with seqid + 1.

#![forbid(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use serde_json::Value;

use super::create::{KeyslotOptions, build_headers};
use super::error::{Error, Result};
use super::header::{self, BinHeader, Header};
use super::json::{self, Keyslot};
use super::keyslot;
use super::secret::{self, Passphrase};
use super::unlock::{UnlockOptions, data_segment, unlock_key};
use crate::source::{ReadAt, check_range};

/// A borrowed file read with pread.
struct FileRef<'a> {
    file: &'a File,
    len: u64,
}

impl ReadAt for FileRef<'_> {
    fn len(&self) -> u64 {
        self.len
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        check_range(self.len, offset, buf.len())?;
        self.file.read_exact_at(buf, offset)
    }
}

fn open(file: &File) -> Result<(FileRef<'_>, Header)> {
    let src = FileRef {
        file,
        len: file
            .metadata()
            .map_err(Error::io("reading the volume file's size"))?
            .len(),
    };
    let h = header::read(&src)?;
    Ok((src, h))
}

/// Adds a keyslot for `new` to the volume in `file` (opened read-write), using
/// `existing` to recover the volume key. `slot` picks the keyslot number (else
/// the lowest free one). Returns the new keyslot's number.
pub fn add_keyslot(
    file: &File,
    existing: &Passphrase,
    new: &Passphrase,
    opts: &KeyslotOptions,
    slot: Option<u32>,
) -> Result<u32> {
    add_keyslot_with(file, existing, new, opts, slot, &UnlockOptions::default())
}

/// As [`add_keyslot`], with the KDF limits (and keyslot choice) of `unlock` for
/// opening the volume with `existing`.
pub fn add_keyslot_with(
    file: &File,
    existing: &Passphrase,
    new: &Passphrase,
    opts: &KeyslotOptions,
    slot: Option<u32>,
    unlock: &UnlockOptions,
) -> Result<u32> {
    // The volume key and both keyslots' derived keys pass through the frames below.
    crate::secret::scrubbed(|| {
        let (src, h) = open(file)?;
        let (seg_id, _) = data_segment(&h)?;
        let (open_slot, vk) = unlock_key(&src, &h, seg_id, existing, unlock)?;
        let m = &h.meta;

        let id = match slot {
            Some(s) if s > 31 => return Err(Error::InvalidOptions(format!("keyslot {s} (0..31)"))),
            Some(s) if m.keyslots.contains_key(&s) => {
                return Err(Error::InvalidOptions(format!("keyslot {s} is in use")));
            }
            Some(s) => s,
            None => (0..32)
                .find(|i| !m.keyslots.contains_key(i))
                .ok_or(Error::AllKeyslotsUsed)?,
        };

        // First fit in the keyslots area, 4 KiB aligned, as cryptsetup allocates.
        let need = keyslot::area_len(vk.len());
        let start = 2 * h.bin.hdr_size;
        let end = start + m.config.keyslots_size;
        let mut used: Vec<(u64, u64)> = m
            .keyslots
            .values()
            .filter_map(|k| match k {
                Keyslot::Luks2(k) => Some((k.area_offset, k.area_offset + k.area_size)),
                Keyslot::Other { .. } => None,
            })
            .collect();
        used.sort_unstable();
        let mut at = start;
        for (a, b) in used {
            if at + need <= a {
                break;
            }
            at = at.max(b.div_ceil(4096) * 4096);
        }
        if at + need > end {
            return Err(Error::KeyslotsAreaFull { needed: need });
        }

        let kdf = opts.kdf.resolve(opts.hash)?;
        kdf.check(id, &super::KdfLimits::default())?;
        let ks = keyslot::store(&vk, new, &kdf, opts.hash, at, opts.priority)?;

        let mut raw = m.raw.clone();
        raw_obj(&mut raw, "keyslots")?.insert(id.to_string(), ks.json);
        // Bind the new keyslot to the digest of the keyslot that opened.
        let digest_id = m
            .digests
            .iter()
            .find(|(_, d)| d.keyslots.contains(&open_slot))
            .map(|(i, _)| *i)
            .ok_or_else(|| Error::meta("opened keyslot has no digest"))?;
        let list = raw_obj(&mut raw, "digests")?
            .get_mut(&digest_id.to_string())
            .and_then(|d| d.get_mut("keyslots"))
            .and_then(Value::as_array_mut)
            .ok_or_else(|| Error::meta("digest has no keyslots list"))?;
        list.push(Value::String(id.to_string()));

        // Keyslot material first: until the headers are rewritten nothing refers to it.
        file.write_all_at(&ks.area, at)
            .map_err(Error::io("writing the new keyslot's area"))?;
        file.sync_data()
            .map_err(Error::io("syncing the new keyslot's area"))?;
        write_headers(file, &h.bin, &raw)?;
        Ok(id)
    })
}

/// Removes keyslot `slot` from the volume in `file` and overwrites its area with
/// random bytes. Refuses to remove the last keyslot that opens the data.
pub fn remove_keyslot(file: &File, slot: u32) -> Result<()> {
    let (_src, h) = open(file)?;
    let m = &h.meta;
    let ks = match m.keyslots.get(&slot) {
        Some(Keyslot::Luks2(k)) => k.clone(),
        _ => return Err(Error::NoSuchKeyslot(slot)),
    };
    let (seg_id, _) = data_segment(&h)?;
    let bound: Vec<u32> = m
        .keyslots
        .iter()
        .filter(|(id, k)| {
            matches!(k, Keyslot::Luks2(_))
                && m.digest_for_keyslot(**id)
                    .is_some_and(|d| d.segments.contains(&seg_id))
        })
        .map(|(id, _)| *id)
        .collect();
    if bound == [slot] {
        return Err(Error::LastKeyslot(slot));
    }

    let mut raw = m.raw.clone();
    raw_obj(&mut raw, "keyslots")?.remove(&slot.to_string());
    let name = Value::String(slot.to_string());
    let digests = raw_obj(&mut raw, "digests")?;
    digests.retain(|_, d| {
        if let Some(l) = d.get_mut("keyslots").and_then(Value::as_array_mut) {
            l.retain(|v| *v != name);
            // A digest left with neither keyslots nor segments is dropped.
            let empty = |k: &str| {
                d.get(k)
                    .and_then(Value::as_array)
                    .is_some_and(Vec::is_empty)
            };
            return !(empty("keyslots") && empty("segments"));
        }
        true
    });
    for t in raw_obj(&mut raw, "tokens")?.values_mut() {
        if let Some(l) = t.get_mut("keyslots").and_then(Value::as_array_mut) {
            l.retain(|v| *v != name);
        }
    }

    write_headers(file, &h.bin, &raw)?;
    let mut wipe = vec![0u8; ks.area_size as usize];
    secret::fill_random(&mut wipe)?;
    file.write_all_at(&wipe, ks.area_offset)
        .map_err(Error::io("overwriting the removed keyslot's area"))?;
    file.sync_data()
        .map_err(Error::io("syncing the removed keyslot's area"))?;
    Ok(())
}

fn raw_obj<'a>(raw: &'a mut Value, key: &str) -> Result<&'a mut serde_json::Map<String, Value>> {
    raw.get_mut(key)
        .and_then(Value::as_object_mut)
        .ok_or_else(|| Error::meta(format!("{key} is not an object")))
}

/// Rewrites both header copies with seqid + 1 (validated before anything is written).
fn write_headers(file: &File, old: &BinHeader, raw: &Value) -> Result<()> {
    let bin = BinHeader {
        seqid: old
            .seqid
            .checked_add(1)
            .ok_or_else(|| Error::meta("seqid overflow"))?,
        checksum_alg: "sha256".into(),
        ..old.clone()
    };
    json::from_value(raw.clone(), bin.hdr_size)?;
    let both = build_headers(&bin, raw)?;
    file.write_all_at(&both, 0)
        .map_err(Error::io("writing both header copies"))?;
    file.sync_data()
        .map_err(Error::io("syncing both header copies"))?;
    Ok(())
}
