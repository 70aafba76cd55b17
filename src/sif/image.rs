//! Reading a SIF: the header and descriptor table, validated against the file, and
//! each object handed out as a byte range of the underlying positional-read source.

#![forbid(unsafe_code)]

use std::path::Path;
use std::sync::Arc;

use veil_fusefs::source::{FileSource, ReadAt, Slice};

use super::descriptor::{DESCRIPTOR_LEN, Descriptor, Extra};
use super::error::{Result, SifError, malformed};
use super::header::{HEADER_LEN, Header};
use super::types::{DataType, PartType};

/// The most descriptor slots veil accepts. The reference tools create 48; the cap keeps a
/// hostile header from making us read and hold an enormous table.
pub const MAX_DESCRIPTORS: i64 = 1 << 16;

/// A parsed SIF over a byte source.
#[derive(Debug)]
pub struct Sif<R> {
    src: R,
    header: Header,
    slots: Vec<Descriptor>,
}

impl Sif<Arc<FileSource>> {
    /// Opens and validates the SIF at `path`.
    pub fn open_path(path: impl AsRef<Path>) -> Result<Self> {
        Self::open(Arc::new(FileSource::open(path)?))
    }
}

impl<R: ReadAt> Sif<R> {
    /// Parses and validates the header and the descriptor table. Everything an object
    /// descriptor claims (its range, its ID) is checked against the file, so later reads
    /// never go outside it.
    pub fn open(src: R) -> Result<Self> {
        let file_len = src.len();
        if file_len < HEADER_LEN as u64 {
            return Err(SifError::NotSif(
                "file is shorter than the 128-byte SIF header",
            ));
        }
        let mut hb = [0u8; HEADER_LEN];
        src.read_exact_at(&mut hb, 0)?;
        let header = Header::parse(&hb)?;
        let slots = read_table(&src, &header, file_len)?;
        validate_objects(&header, &slots, file_len)?;
        Ok(Sif { src, header, slots })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Every descriptor slot, used or not, in slot order.
    pub fn slots(&self) -> &[Descriptor] {
        &self.slots
    }

    /// The used descriptors, in slot order.
    pub fn objects(&self) -> impl Iterator<Item = &Descriptor> {
        self.slots.iter().filter(|d| d.used)
    }

    /// The used descriptor with this ID.
    pub fn object(&self, id: u32) -> Result<&Descriptor> {
        if id == 0 {
            return Err(SifError::Invalid(
                "object ID 0 does not exist (IDs start at 1)".into(),
            ));
        }
        self.objects()
            .find(|d| d.id == id)
            .ok_or(SifError::ObjectNotFound(id))
    }

    /// The primary system partition, if there is one.
    pub fn primary_partition(&self) -> Option<&Descriptor> {
        self.objects().find(|d| {
            matches!(
                d.extra(),
                Extra::Partition {
                    part: PartType::PrimSys,
                    ..
                }
            )
        })
    }

    /// The used descriptors of one data type, in slot order.
    pub fn objects_of_type(&self, t: DataType) -> impl Iterator<Item = &Descriptor> {
        self.objects().filter(move |d| d.data_type == t)
    }

    /// The underlying source.
    pub fn source(&self) -> &R {
        &self.src
    }

    /// Reads a whole object into memory. `limit` guards callers that expect small
    /// objects (metadata, signatures, key messages) against a hostile size.
    pub fn read_object(&self, d: &Descriptor, limit: u64) -> Result<Vec<u8>> {
        if d.size as u64 > limit {
            return Err(SifError::Invalid(format!(
                "object {} is {} bytes, more than the {limit} expected for a {}",
                d.id, d.size, d.data_type
            )));
        }
        let mut buf = vec![0u8; d.size as usize];
        self.src.read_exact_at(&mut buf, d.offset as u64)?;
        Ok(buf)
    }
}

impl<R: ReadAt + Clone> Sif<R> {
    /// The object's bytes as a source of their own, without copying: this is how a
    /// partition reaches the squashfs reader or the LUKS2 layer.
    pub fn object_source(&self, d: &Descriptor) -> Result<Slice<R>> {
        Ok(Slice::new(
            self.src.clone(),
            d.offset as u64,
            d.size as u64,
        )?)
    }
}

fn read_table<R: ReadAt>(src: &R, h: &Header, file_len: u64) -> Result<Vec<Descriptor>> {
    if !(0..=MAX_DESCRIPTORS).contains(&h.descriptors_total) {
        return Err(malformed(format!(
            "descriptor count {} is outside 0..={MAX_DESCRIPTORS}",
            h.descriptors_total
        )));
    }
    if !(0..=h.descriptors_total).contains(&h.descriptors_free) {
        return Err(malformed(format!(
            "{} free descriptors claimed out of {}",
            h.descriptors_free, h.descriptors_total
        )));
    }
    let table_len = h.descriptors_total * DESCRIPTOR_LEN as i64;
    if h.descriptors_size != table_len {
        return Err(malformed(format!(
            "descriptor table size {} does not match {} descriptors of {DESCRIPTOR_LEN} bytes",
            h.descriptors_size, h.descriptors_total
        )));
    }
    if h.descriptors_offset < HEADER_LEN as i64 {
        return Err(malformed(format!(
            "descriptor table offset {} overlaps the header",
            h.descriptors_offset
        )));
    }
    let table_end = h.descriptors_offset as u64 + table_len as u64;
    if table_end > file_len {
        return Err(malformed(format!(
            "truncated: the descriptor table ends at byte {table_end} but the file has {file_len}"
        )));
    }
    if h.data_offset < 0 || (h.data_offset as u64) < table_end {
        return Err(malformed(format!(
            "data offset {} lies inside the descriptor table (which ends at {table_end})",
            h.data_offset
        )));
    }
    match (h.data_offset as u64).checked_add(h.data_size as u64) {
        Some(end) if h.data_size >= 0 && end <= file_len => {}
        _ if h.data_size < 0 => {
            return Err(malformed(format!("negative data size {}", h.data_size)));
        }
        _ => {
            return Err(malformed(format!(
                "truncated: the data section should end at byte {} but the file has {file_len}",
                h.data_offset as i128 + h.data_size as i128
            )));
        }
    }

    let mut table = vec![0u8; table_len as usize];
    src.read_exact_at(&mut table, h.descriptors_offset as u64)?;
    Ok(table
        .chunks_exact(DESCRIPTOR_LEN)
        .map(|c| {
            let mut slot = [0u8; DESCRIPTOR_LEN];
            slot.copy_from_slice(c);
            Descriptor::parse(&slot)
        })
        .collect())
}

fn validate_objects(h: &Header, slots: &[Descriptor], file_len: u64) -> Result<()> {
    let data_start = h.data_offset as u64;
    let mut ranges: Vec<(u64, u64, u32)> = Vec::new();
    let mut ids = std::collections::HashSet::new();
    let mut primaries = 0;
    for d in slots.iter().filter(|d| d.used) {
        if d.id == 0 {
            return Err(malformed("a used descriptor has object ID 0"));
        }
        if !ids.insert(d.id) {
            return Err(malformed(format!("object ID {} is used twice", d.id)));
        }
        if d.offset < 0 || d.size < 0 {
            return Err(malformed(format!(
                "object {} has a negative offset or size ({}, {})",
                d.id, d.offset, d.size
            )));
        }
        let start = d.offset as u64;
        let end = start.checked_add(d.size as u64).filter(|&e| e <= file_len).ok_or_else(|| {
            malformed(format!(
                "object {} (bytes {}+{}) lies outside the file ({file_len} bytes): truncated or corrupt",
                d.id, d.offset, d.size
            ))
        })?;
        if d.size > 0 && start < data_start {
            return Err(malformed(format!(
                "object {} starts at byte {start}, before the data section ({data_start})",
                d.id
            )));
        }
        if let Extra::Partition {
            part: PartType::PrimSys,
            ..
        } = d.extra()
        {
            primaries += 1;
        }
        if d.size > 0 {
            ranges.push((start, end, d.id));
        }
    }
    if primaries > 1 {
        return Err(malformed(format!(
            "{primaries} primary system partitions (at most one is allowed)"
        )));
    }
    ranges.sort_unstable();
    for w in ranges.windows(2) {
        if w[1].0 < w[0].1 {
            return Err(malformed(format!(
                "objects {} and {} overlap",
                w[0].2, w[1].2
            )));
        }
    }
    Ok(())
}
