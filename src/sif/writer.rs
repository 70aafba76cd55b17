//! Writing SIF files: create, add objects, delete objects, set the primary partition,
//! following the reference library's rules (spec/sif.md §5).
//!
//! A new image is assembled in a temporary file next to the target and renamed into
//! place, so a failed create leaves nothing behind. Edits of an existing image happen in
//! place in the order data → descriptor → header: an interruption leaves the previous
//! image intact, at worst followed by bytes no descriptor refers to.

#![forbid(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use crate::fsutil::TempFile;
use veil_fusefs::source::FileSource;

use super::descriptor::{DESCRIPTOR_LEN, Descriptor, EXTRA_LEN, Extra, GROUP_MASK, Link, NAME_LEN};
use super::error::{Result, SifError};
use super::header::{GO_ZERO_TIME, Header};
use super::image::{MAX_DESCRIPTORS, Sif};
use super::types::{Arch, DataType, PartType};

/// Default descriptor capacity, as the reference library.
pub const DEFAULT_DESCRIPTORS: i64 = 48;
/// Default descriptor table offset.
pub const DEFAULT_DESCRIPTORS_OFFSET: i64 = 4096;
/// Partitions are aligned to this by default so they can be mapped page-wise.
pub const PARTITION_ALIGNMENT: u64 = 4096;
/// Highest group number: the top nibble of the raw value is the group marker.
pub const MAX_GROUP: u32 = !GROUP_MASK;

/// How a new image is created.
#[derive(Debug, Clone)]
pub struct CreateOptions {
    pub launch_script: String,
    /// `None`: a random v4 UUID (or the nil UUID when deterministic).
    pub id: Option<[u8; 16]>,
    /// Nil UUID and Go-zero timestamps, as the reference library's deterministic mode.
    pub deterministic: bool,
    /// Creation time (unix seconds); `None` = now.
    pub time: Option<i64>,
    pub descriptors: i64,
}

impl Default for CreateOptions {
    fn default() -> Self {
        CreateOptions {
            launch_script: String::new(),
            id: None,
            deterministic: false,
            time: None,
            descriptors: DEFAULT_DESCRIPTORS,
        }
    }
}

/// Where a new object's bytes come from.
pub enum ObjectData<'a> {
    Bytes(&'a [u8]),
    Path(&'a Path),
    Reader(&'a mut dyn Read),
}

/// A data object to add.
pub struct NewObject<'a> {
    pub data_type: DataType,
    pub data: ObjectData<'a>,
    /// 0 = no group.
    pub group: u32,
    pub link: Link,
    pub name: String,
    pub extra: Extra,
    /// `None` = the default (4096 for partitions, none otherwise).
    pub alignment: Option<u64>,
    /// Object time (unix seconds); `None` = the operation time.
    pub time: Option<i64>,
}

impl<'a> NewObject<'a> {
    pub fn new(data_type: DataType, data: ObjectData<'a>) -> Self {
        NewObject {
            data_type,
            data,
            group: 0,
            link: Link::None,
            name: String::new(),
            extra: Extra::None,
            alignment: None,
            time: None,
        }
    }
}

/// Options for deleting an object.
#[derive(Debug, Clone, Copy, Default)]
pub struct DeleteOptions {
    /// Overwrite the object's bytes with zeros.
    pub zero: bool,
    /// Shrink the data section and the file to the end of the last remaining object.
    pub compact: bool,
}

/// Creates a new image at `path` holding `objects`, atomically: the image is built in a
/// temporary file in the same directory and renamed over `path` only when complete.
pub fn create(path: &Path, opts: &CreateOptions, objects: Vec<NewObject<'_>>) -> Result<()> {
    let dir = crate::fsutil::parent_dir(path);
    let tmp = TempFile::new_in(dir, path)?;
    let result = write_new(tmp.file(), opts, objects);
    match result {
        Ok(()) => Ok(tmp.persist(path)?),
        Err(e) => Err(e),
    }
}

/// Writes a new image holding `objects` into `f`, an open file that becomes it
/// whatever it held: for a caller that keeps the temporary file itself.
pub fn write_new(f: &File, opts: &CreateOptions, objects: Vec<NewObject<'_>>) -> Result<()> {
    write_empty(f, opts)?;
    let mut ed = Editor::from_file(f.try_clone()?)?;
    for obj in objects {
        ed.add(obj)?;
    }
    f.sync_all()?;
    Ok(())
}

/// Writes the header and an empty descriptor table of a new image to `f`.
fn write_empty(f: &File, opts: &CreateOptions) -> Result<()> {
    if !(1..=MAX_DESCRIPTORS).contains(&opts.descriptors) {
        return Err(SifError::Invalid(format!(
            "descriptor capacity must be 1..={MAX_DESCRIPTORS}, not {}",
            opts.descriptors
        )));
    }
    let launch_script = Header::encode_launch_script(&opts.launch_script)?;
    let time = if opts.deterministic {
        GO_ZERO_TIME
    } else {
        opts.time.unwrap_or_else(now)
    };
    let id = match (opts.id, opts.deterministic) {
        (Some(id), _) => id,
        (None, true) => [0; 16],
        (None, false) => *uuid::Uuid::new_v4().as_bytes(),
    };
    let size = opts.descriptors * DESCRIPTOR_LEN as i64;
    let h = Header {
        launch_script,
        arch: Arch::UNKNOWN,
        id,
        created_at: time,
        modified_at: time,
        descriptors_free: opts.descriptors,
        descriptors_total: opts.descriptors,
        descriptors_offset: DEFAULT_DESCRIPTORS_OFFSET,
        descriptors_size: size,
        data_offset: DEFAULT_DESCRIPTORS_OFFSET + size,
        data_size: 0,
    };
    f.set_len(0)?;
    // The zero fill between the header and the table, and the free slots, come from
    // extending the file: they read as zeros.
    f.set_len(h.data_offset as u64)?;
    f.write_all_at(&h.to_bytes(), 0)?;
    Ok(())
}

/// An existing image opened for editing.
pub struct Editor {
    file: File,
    header: Header,
    slots: Vec<Descriptor>,
}

impl Editor {
    /// Opens `path` for reading and writing and validates it like a reader would.
    pub fn open(path: &Path) -> Result<Self> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        Self::from_file(file)
    }

    fn from_file(file: File) -> Result<Self> {
        let sif = Sif::open(FileSource::new(file.try_clone()?)?)?;
        Ok(Editor {
            header: sif.header().clone(),
            slots: sif.slots().to_vec(),
            file,
        })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The time an edit is stamped with: Go-zero for deterministic images, else now.
    fn op_time(&self) -> i64 {
        if self.header.is_deterministic() {
            GO_ZERO_TIME
        } else {
            now()
        }
    }

    fn used(&self) -> impl Iterator<Item = &Descriptor> {
        self.slots.iter().filter(|d| d.used)
    }

    /// Adds an object and returns its ID.
    pub fn add(&mut self, obj: NewObject<'_>) -> Result<u32> {
        self.check_new(&obj)?;
        let slot = self
            .slots
            .iter()
            .position(|d| !d.used)
            .ok_or(SifError::NoFreeSlots(self.header.descriptors_total))?;
        let id = slot as u32 + 1;

        // Where the data section really ends: after a delete, space at the end is reused.
        let data_end = self
            .used()
            .map(|d| d.offset + d.size)
            .max()
            .unwrap_or(self.header.data_offset)
            .max(self.header.data_offset);
        self.header.data_size = data_end - self.header.data_offset;
        let alignment = obj
            .alignment
            .unwrap_or(if obj.data_type == DataType::Partition {
                PARTITION_ALIGNMENT
            } else {
                0
            });
        let offset = next_aligned(data_end as u64, alignment)?;

        let wants_digest = matches!(obj.data_type, DataType::OciRootIndex | DataType::OciBlob)
            && obj.extra == Extra::None;
        let (size, digest) = match self.write_data(offset, obj.data, wants_digest) {
            Ok(r) => r,
            Err(e) => {
                // Leave the file as it was: nothing refers to the bytes written so far.
                let _ = self.file.set_len(self.current_len_hint(data_end as u64));
                return Err(e);
            }
        };
        self.file.sync_data()?;

        let op_time = self.op_time();
        let time = obj.time.unwrap_or(op_time);
        let size_with_padding = offset as i64 - data_end + size as i64;
        let mut name = [0u8; NAME_LEN];
        name[..obj.name.len()].copy_from_slice(obj.name.as_bytes());
        let d = Descriptor {
            data_type: obj.data_type,
            used: true,
            id,
            group_raw: obj.group | GROUP_MASK,
            link_raw: obj.link.to_raw(),
            offset: offset as i64,
            size: size as i64,
            size_with_padding,
            created_at: time,
            modified_at: time,
            uid: 0,
            gid: 0,
            name,
            extra: match digest {
                Some(d) => Extra::OciDigest(d).encode(),
                None => obj.extra.encode(),
            },
        };
        if let Extra::Partition {
            part: PartType::PrimSys,
            arch,
            ..
        } = obj.extra
        {
            self.header.arch = arch;
        }
        self.header.descriptors_free -= 1;
        self.header.data_size += size_with_padding;
        self.header.modified_at = op_time;
        self.slots[slot] = d;
        self.write_slot(slot)?;
        self.write_header()?;
        Ok(id)
    }

    /// The file length to restore after a failed add: the end of the data section, but
    /// never less than the table (a freshly created image has no data).
    fn current_len_hint(&self, data_end: u64) -> u64 {
        data_end.max(self.header.data_offset as u64)
    }

    fn check_new(&self, obj: &NewObject<'_>) -> Result<()> {
        if obj.name.len() > NAME_LEN {
            return Err(SifError::Invalid(format!(
                "object name is {} bytes; at most {NAME_LEN} fit",
                obj.name.len()
            )));
        }
        if obj.group > MAX_GROUP {
            return Err(SifError::Invalid(format!(
                "group ID {} is too large (at most {MAX_GROUP})",
                obj.group
            )));
        }
        match obj.link {
            Link::Object(id) if id & GROUP_MASK == GROUP_MASK => {
                return Err(SifError::Invalid(format!(
                    "link to object ID {id} is out of range"
                )));
            }
            Link::Group(g) if g > MAX_GROUP => {
                return Err(SifError::Invalid(format!(
                    "link to group {g} is out of range"
                )));
            }
            _ => {}
        }
        if let Extra::OciDigest(d) = &obj.extra
            && d.len() >= EXTRA_LEN
        {
            return Err(SifError::Invalid("OCI digest too long".into()));
        }
        if let Extra::Partition { part, arch, .. } = obj.extra {
            if obj.data_type != DataType::Partition {
                return Err(SifError::Invalid(
                    "partition metadata on a non-partition object".into(),
                ));
            }
            if !arch.is_known() {
                return Err(SifError::Invalid(format!(
                    "unknown partition architecture code {:?}",
                    String::from_utf8_lossy(&arch.0[..2])
                )));
            }
            if part == PartType::PrimSys && self.used().any(is_primary) {
                return Err(SifError::PrimaryExists);
            }
        } else if obj.data_type == DataType::Partition {
            return Err(SifError::Invalid(
                "a partition needs its filesystem, partition type and architecture".into(),
            ));
        }
        Ok(())
    }

    /// Copies the object's bytes to `offset`; returns their length and, when asked, their
    /// OCI digest (`sha256:<hex>`), computed while streaming as the reference writer does.
    fn write_data(
        &self,
        offset: u64,
        data: ObjectData<'_>,
        digest: bool,
    ) -> Result<(u64, Option<String>)> {
        let mut hasher = digest.then(Sha256::new);
        let n = match data {
            ObjectData::Bytes(mut b) => copy_at(&mut b, &self.file, offset, hasher.as_mut())?,
            ObjectData::Path(p) => {
                let mut f = File::open(p).map_err(|e| {
                    SifError::Io(io::Error::new(e.kind(), format!("{}: {e}", p.display())))
                })?;
                copy_at(&mut f, &self.file, offset, hasher.as_mut())?
            }
            ObjectData::Reader(r) => copy_at(r, &self.file, offset, hasher.as_mut())?,
        };
        let digest = hasher.map(|h| {
            let d = h.finalize();
            format!(
                "sha256:{}",
                d.iter().map(|b| format!("{b:02x}")).collect::<String>()
            )
        });
        Ok((n, digest))
    }

    /// Deletes an object. Other objects keep their IDs and places.
    pub fn delete(&mut self, id: u32, opts: DeleteOptions) -> Result<()> {
        let slot = self.slot_of(id)?;
        let d = self.slots[slot].clone();
        if opts.zero {
            zero_range(&self.file, d.offset as u64, d.size as u64)?;
        }
        if is_primary(&d) {
            self.header.arch = Arch::UNKNOWN;
        }
        self.header.descriptors_free += 1;
        self.slots[slot] = Descriptor::parse(&[0u8; DESCRIPTOR_LEN]);
        self.header.modified_at = self.op_time();
        if opts.compact {
            let end = self
                .used()
                .map(|d| d.offset + d.size)
                .max()
                .unwrap_or(self.header.data_offset)
                .max(self.header.data_offset);
            self.header.data_size = end - self.header.data_offset;
        }
        self.write_slot(slot)?;
        self.write_header()?;
        if opts.compact {
            self.file
                .set_len((self.header.data_offset + self.header.data_size) as u64)?;
        }
        Ok(())
    }

    /// Makes a system partition the primary one, demoting the current primary.
    pub fn set_primary(&mut self, id: u32) -> Result<()> {
        let slot = self.slot_of(id)?;
        let (fs, part, arch) = match self.slots[slot].extra() {
            Extra::Partition { fs, part, arch } => (fs, part, arch),
            _ => return Err(SifError::NotPartition(id)),
        };
        if part == PartType::PrimSys {
            return Ok(()); // already primary: nothing changes, not even the times
        }
        if part != PartType::System {
            return Err(SifError::NotSystemPartition(id));
        }
        let t = self.op_time();
        for i in 0..self.slots.len() {
            let d = &self.slots[i];
            if i != slot
                && d.used
                && is_primary(d)
                && let Extra::Partition { fs, arch, .. } = d.extra()
            {
                let demoted = Extra::Partition {
                    fs,
                    part: PartType::System,
                    arch,
                };
                self.slots[i].extra = demoted.encode();
                self.slots[i].modified_at = t;
                self.write_slot(i)?;
            }
        }
        self.slots[slot].extra = Extra::Partition {
            fs,
            part: PartType::PrimSys,
            arch,
        }
        .encode();
        self.slots[slot].modified_at = t;
        self.write_slot(slot)?;
        self.header.arch = arch;
        self.header.modified_at = t;
        self.write_header()
    }

    fn slot_of(&self, id: u32) -> Result<usize> {
        self.slots
            .iter()
            .position(|d| d.used && d.id == id)
            .ok_or(SifError::ObjectNotFound(id))
    }

    fn write_slot(&self, slot: usize) -> Result<()> {
        let off = self.header.descriptors_offset as u64 + (slot * DESCRIPTOR_LEN) as u64;
        self.file.write_all_at(&self.slots[slot].to_bytes(), off)?;
        Ok(())
    }

    fn write_header(&self) -> Result<()> {
        self.file.write_all_at(&self.header.to_bytes(), 0)?;
        self.file.sync_data()?;
        Ok(())
    }
}

fn is_primary(d: &Descriptor) -> bool {
    matches!(
        d.extra(),
        Extra::Partition {
            part: PartType::PrimSys,
            ..
        }
    )
}

/// `x` rounded up to a multiple of `a` (unchanged when `a` is 0).
fn next_aligned(x: u64, a: u64) -> Result<u64> {
    if a == 0 || x.is_multiple_of(a) {
        return Ok(x);
    }
    x.checked_add(a - x % a)
        .ok_or_else(|| SifError::Invalid(format!("alignment {a} overflows the file size")))
}

fn copy_at(
    r: &mut dyn Read,
    f: &File,
    mut offset: u64,
    mut hasher: Option<&mut Sha256>,
) -> Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        f.write_all_at(&buf[..n], offset)?;
        if let Some(h) = hasher.as_mut() {
            h.update(&buf[..n]);
        }
        offset += n as u64;
        total += n as u64;
    }
}

fn zero_range(f: &File, mut offset: u64, mut len: u64) -> Result<()> {
    let zeros = vec![0u8; 1 << 20];
    while len > 0 {
        let n = len.min(zeros.len() as u64) as usize;
        f.write_all_at(&zeros[..n], offset)?;
        offset += n as u64;
        len -= n as u64;
    }
    Ok(())
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alignment() {
        assert_eq!(next_aligned(32176, 4096).unwrap(), 32768);
        assert_eq!(next_aligned(32768, 4096).unwrap(), 32768);
        assert_eq!(next_aligned(32772, 0).unwrap(), 32772);
        assert!(next_aligned(u64::MAX - 1, 4096).is_err());
    }
}
