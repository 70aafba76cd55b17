//! Re-keying an encrypted SIF without rebuilding it: keyslots are added to or removed
//! from the LUKS2 header inside the partition, and the RSA crypto message is added,
//! replaced or deleted, while the encrypted data is left alone.
//!
//! The LUKS2 header area (both header copies and the keyslots, everything before the
//! data segment) is copied to a private temporary file, edited there with the
//! keyslot code of veil-fusefs, and written back in place, as `cryptsetup luksAddKey`
//! edits a device in place, in an order that survives an interruption (`write_back`).

#![forbid(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;

use veil_fusefs::luks2::{self, KeyslotOptions, Passphrase};
use veil_fusefs::source::FileSource;

use super::assemble::TempPath;
use super::error::{BuildError, ImageFault, Result};
use crate::sif::{
    DataType, DeleteOptions, Editor, Extra, FormatType, FsType, Link, MessageType, NewObject,
    ObjectData, Sif,
};

/// The encrypted primary partition of a SIF and its crypto messages.
pub struct Partition {
    pub id: u32,
    pub offset: u64,
    pub size: u64,
    /// (object ID, content) of each PEM/RSA-OAEP message linked to the partition, in
    /// object order (the peers use the first).
    pub messages: Vec<(u32, Vec<u8>)>,
    pub header: luks2::HeaderSummary,
}

/// An exclusive lock on the image file for one re-keying (`flock`, released on
/// drop): two at once would each think its key the one the image now holds.
pub struct Lock(#[allow(dead_code)] nix::fcntl::Flock<File>);

/// Takes the image's lock, or says that another re-keying holds it.
pub fn lock(path: &Path) -> Result<Lock> {
    let f = File::open(path).map_err(|e| BuildError::io(path, e))?;
    let lock = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(
        |(_, e)| match e {
            nix::errno::Errno::EWOULDBLOCK => BuildError::rekey(
                path,
                ImageFault::Image(
                    "another `veil keyslot` is changing this image; try again when it is done"
                        .into(),
                ),
            ),
            e => BuildError::io(path, e.into()),
        },
    )?;
    // A re-keying that replaced the file (gocryptfs) ended between the open and the
    // lock: this lock is on the old file.
    use std::os::unix::fs::MetadataExt;
    let (held, now) = (lock.metadata(), std::fs::metadata(path));
    match (held, now) {
        (Ok(h), Ok(n)) if (h.dev(), h.ino()) == (n.dev(), n.ino()) => Ok(Lock(lock)),
        _ => Err(BuildError::rekey(
            path,
            ImageFault::Image(
                "the image was replaced meanwhile by another `veil keyslot`; try again".into(),
            ),
        )),
    }
}

/// Whether the image's primary partition is in the gocryptfs layout (fstype 6).
pub fn is_gocryptfs(path: &Path) -> Result<bool> {
    let sif = Sif::open_path(path).map_err(|e| BuildError::rekey(path, e))?;
    let prim = sif
        .primary_partition()
        .ok_or_else(|| BuildError::rekey(path, ImageFault::NoPrimaryPartition))?;
    Ok(matches!(
        prim.extra(),
        Extra::Partition {
            fs: FsType::GocryptfsSquashfs,
            ..
        }
    ))
}

/// Finds the encrypted primary partition.
pub fn partition(path: &Path) -> Result<Partition> {
    let sif = Sif::open_path(path).map_err(|e| BuildError::rekey(path, e))?;
    let prim = sif
        .primary_partition()
        .ok_or_else(|| BuildError::rekey(path, ImageFault::NoPrimaryPartition))?;
    match prim.extra() {
        Extra::Partition {
            fs: FsType::EncryptedSquashfs,
            ..
        } => {}
        Extra::Partition {
            fs: FsType::GocryptfsSquashfs,
            ..
        } => return Err(BuildError::rekey(path, ImageFault::GocryptfsHasNoKeyslots)),
        _ => return Err(BuildError::rekey(path, ImageFault::NotEncrypted)),
    }
    let (offset, end) = prim.range();
    let messages = sif
        .objects_of_type(DataType::CryptoMessage)
        .filter(|d| {
            d.link() == Link::Object(prim.id)
                && d.extra()
                    == Extra::CryptoMessage {
                        format: FormatType::Pem,
                        message: MessageType::RsaOaep,
                    }
        })
        .map(|d| Ok((d.id, sif.read_object(d, 64 << 10)?)))
        .collect::<crate::sif::Result<Vec<_>>>()
        .map_err(|e| BuildError::rekey(path, e))?;
    let slice = sif
        .object_source(prim)
        .map_err(|e| BuildError::rekey(path, e))?;
    let header = luks2::inspect(&slice).map_err(|e| BuildError::rekey(path, e))?;
    Ok(Partition {
        id: prim.id,
        offset,
        size: end - offset,
        messages,
        header,
    })
}

/// The keyslot `key` opens.
pub fn slot_of(path: &Path, p: &Partition, key: &Passphrase) -> Result<u32> {
    let file = Arc::new(FileSource::open(path).map_err(|e| BuildError::io(path, e))?);
    let sif = Sif::open(file).map_err(|e| BuildError::rekey(path, e))?;
    let d = sif.object(p.id).map_err(|e| BuildError::rekey(path, e))?;
    let slice = sif
        .object_source(d)
        .map_err(|e| BuildError::rekey(path, e))?;
    let vol = luks2::unlock(slice, key, &crate::image::kdf::unlock_options())
        .map_err(|e| BuildError::rekey(path, e))?;
    Ok(vol.keyslot())
}

/// Runs `edit` on a private copy of the header area, then writes it back (in `order`).
fn with_header<T>(
    path: &Path,
    p: &Partition,
    order: Order,
    edit: impl FnOnce(&File) -> Result<T>,
) -> Result<T> {
    let window = p.header.segment_offset;
    if window == 0 || window > p.size {
        return Err(BuildError::rekey(path, ImageFault::BadDataOffset));
    }
    let img = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| BuildError::io(path, e))?;
    let mut bytes = vec![0u8; window as usize];
    img.read_exact_at(&mut bytes, p.offset)
        .map_err(|e| BuildError::io(path, e))?;
    let tmp = TempPath::new(crate::fsutil::parent_dir(path), "header");
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp.path())
        .map_err(|e| BuildError::io(tmp.path(), e))?;
    (&f).write_all(&bytes)
        .map_err(|e| BuildError::io(tmp.path(), e))?;
    let out = edit(&f)?;
    let mut edited = vec![0u8; window as usize];
    f.read_exact_at(&mut edited, 0)
        .map_err(|e| BuildError::io(tmp.path(), e))?;
    write_back(&img, p, &bytes, &edited, order).map_err(|e| BuildError::io(path, e))?;
    Ok(out)
}

/// Which part of an edited header area reaches the disk first.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Order {
    /// A new keyslot: its key material before the headers that point at it.
    AreasFirst,
    /// A removed keyslot: the headers that forget it before its material is wiped.
    HeadersFirst,
}

/// Writes the changed parts of the header area back so that an interruption at any
/// point leaves an image that opens with the old or the new set of keys: the primary
/// header, then the secondary (each synced; a torn copy fails its checksum and the
/// other, valid one is used, the higher sequence number winning when both are), with
/// the keyslot areas before or after both.
fn write_back(
    img: &File,
    p: &Partition,
    old: &[u8],
    new: &[u8],
    order: Order,
) -> std::io::Result<()> {
    let h = p.header.header_size as usize;
    let all = old.len();
    let (primary, secondary, areas) = if h > 0 && 2 * h <= all {
        (0..h, h..2 * h, 2 * h..all)
    } else {
        (0..all, all..all, all..all)
    };
    let put = |r: std::ops::Range<usize>| -> std::io::Result<()> {
        if old[r.clone()] != new[r.clone()] {
            img.write_all_at(&new[r.clone()], p.offset + r.start as u64)?;
            img.sync_data()?;
        }
        Ok(())
    };
    if order == Order::AreasFirst {
        put(areas.clone())?;
    }
    put(primary)?;
    put(secondary)?;
    if order == Order::HeadersFirst {
        put(areas)?;
    }
    Ok(())
}

/// Adds a keyslot for `new`, unlocking the volume key with `existing`.
pub fn add_keyslot(
    path: &Path,
    p: &Partition,
    existing: &Passphrase,
    new: &Passphrase,
    opts: &KeyslotOptions,
) -> Result<u32> {
    with_header(path, p, Order::AreasFirst, |f| {
        let unlock = crate::image::kdf::unlock_options();
        luks2::add_keyslot_with(f, existing, new, opts, None, &unlock)
            .map_err(|e| BuildError::rekey(path, e))
    })
}

/// Removes keyslot `slot` (never the last one).
pub fn remove_keyslot(path: &Path, p: &Partition, slot: u32) -> Result<()> {
    with_header(path, p, Order::HeadersFirst, |f| {
        luks2::remove_keyslot(f, slot).map_err(|e| BuildError::rekey(path, e))
    })
}

/// Adds a crypto message linked to the partition.
pub fn add_message(path: &Path, p: &Partition, msg: &[u8]) -> Result<u32> {
    let mut ed = Editor::open(path).map_err(|e| BuildError::rekey(path, e))?;
    let mut o = NewObject::new(DataType::CryptoMessage, ObjectData::Bytes(msg));
    o.group = 1;
    o.link = Link::Object(p.id);
    o.extra = Extra::CryptoMessage {
        format: FormatType::Pem,
        message: MessageType::RsaOaep,
    };
    ed.add(o).map_err(|e| BuildError::rekey(path, e))
}

/// Deletes a crypto message, zeroing its bytes.
pub fn delete_message(path: &Path, id: u32) -> Result<()> {
    let mut ed = Editor::open(path).map_err(|e| BuildError::rekey(path, e))?;
    ed.delete(
        id,
        DeleteOptions {
            zero: true,
            compact: false,
        },
    )
    .map_err(|e| BuildError::rekey(path, e))
}
