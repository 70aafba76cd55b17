//! The two binary headers (4096 bytes each, followed by their JSON areas):
//! parsing, checksum verification, choosing a copy, and building new ones.
//!
//! Reading never writes: cryptsetup silently "repairs" a damaged or older copy,
//! this module reports it instead (see [`Header::warnings`]).

#![forbid(unsafe_code)]

use subtle::ConstantTimeEq;

use super::error::{Error, Result};
use super::hash::Hash;
use super::json::{self, Metadata};
use crate::source::ReadAt;

pub const BIN_SIZE: usize = 4096;
const MAGIC_PRIMARY: &[u8; 6] = b"LUKS\xba\xbe";
const MAGIC_SECONDARY: &[u8; 6] = b"SKUL\xba\xbe";
/// The valid `hdr_size` values (16 KiB … 4 MiB); also the secondary scan offsets.
pub const HDR_SIZES: [u64; 9] = [
    0x4000, 0x8000, 0x10000, 0x20000, 0x40000, 0x80000, 0x100000, 0x200000, 0x400000,
];

const OFF_VERSION: usize = 6;
const OFF_HDR_SIZE: usize = 8;
const OFF_SEQID: usize = 16;
const OFF_LABEL: usize = 24;
const OFF_CSUM_ALG: usize = 72;
const OFF_SALT: usize = 104;
const OFF_UUID: usize = 168;
const OFF_SUBSYSTEM: usize = 208;
const OFF_HDR_OFFSET: usize = 256;
const OFF_CSUM: usize = 448;
const LEN_LABEL: usize = 48;
const LEN_CSUM_ALG: usize = 32;
const LEN_SALT: usize = 64;
const LEN_UUID: usize = 40;
const LEN_SUBSYSTEM: usize = 48;
const LEN_CSUM: usize = 64;

/// The fields of a binary header that matter after validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinHeader {
    pub hdr_size: u64,
    pub seqid: u64,
    pub label: String,
    pub checksum_alg: String,
    pub uuid: String,
    pub subsystem: String,
}

/// The chosen header copy, parsed and validated, plus what was wrong with the other.
#[derive(Debug, Clone)]
pub struct Header {
    pub bin: BinHeader,
    pub meta: Metadata,
    /// Set when the copies are not both valid and identical; each a one-line reason.
    pub warnings: Vec<String>,
}

/// Why one copy is unusable: `Rejected` still knows the hdr_size its binary
/// header announced (used to find the secondary, as cryptsetup does).
enum CopyError {
    Unusable(String),
    Rejected { hdr_size: u64, reason: String },
}

struct HeaderCopy {
    bin: BinHeader,
    meta: Metadata,
    is_primary: bool,
}

fn be64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    if let Some(s) = b.get(off..off + 8) {
        a.copy_from_slice(s);
    }
    u64::from_be_bytes(a)
}

/// A NUL-terminated string field; cryptsetup forces the last byte to NUL.
fn cstr(b: &[u8], off: usize, len: usize) -> String {
    let f = b.get(off..off + len - 1).unwrap_or(&[]);
    let end = f.iter().position(|&c| c == 0).unwrap_or(f.len());
    String::from_utf8_lossy(&f[..end]).into_owned()
}

/// Reads and chooses a header copy from `src`.
pub fn read<R: ReadAt + ?Sized>(src: &R) -> Result<Header> {
    let len = src.len();
    if len < BIN_SIZE as u64 {
        return Err(Error::Truncated {
            what: "the LUKS2 binary header",
            needed: BIN_SIZE as u64,
            len,
        });
    }
    let mut first = [0u8; BIN_SIZE];
    src.read_exact_at(&mut first, 0)
        .map_err(Error::io("reading the binary header"))?;
    if &first[..6] == MAGIC_PRIMARY {
        match u16::from_be_bytes([first[OFF_VERSION], first[OFF_VERSION + 1]]) {
            1 => return Err(Error::Luks1Unsupported),
            2 => {}
            v => return Err(Error::Unsupported(format!("LUKS version {v}"))),
        }
    }

    let primary = read_copy(src, 0);
    let secondary_offsets: Vec<u64> = match &primary {
        Ok(c) => vec![c.bin.hdr_size],
        Err(CopyError::Rejected { hdr_size, .. }) => vec![*hdr_size],
        Err(CopyError::Unusable(_)) => HDR_SIZES.to_vec(),
    };
    let mut secondary = Err(CopyError::Unusable("no secondary header found".into()));
    for off in secondary_offsets {
        secondary = read_copy(src, off);
        if secondary.is_ok() {
            break;
        }
    }

    let reason = |e: &CopyError| match e {
        CopyError::Unusable(r) | CopyError::Rejected { reason: r, .. } => r.clone(),
    };
    match (primary, secondary) {
        (Ok(p), Ok(s)) => {
            let mut warnings = Vec::new();
            let use_secondary = s.bin.seqid > p.bin.seqid;
            if p.bin.seqid != s.bin.seqid {
                warnings.push(format!(
                    "header copies disagree (primary seqid {}, secondary seqid {}); using the {} copy",
                    p.bin.seqid,
                    s.bin.seqid,
                    if use_secondary { "secondary" } else { "primary" }
                ));
            }
            let c = if use_secondary { s } else { p };
            Ok(Header {
                bin: c.bin,
                meta: c.meta,
                warnings,
            })
        }
        (Ok(c), Err(e)) | (Err(e), Ok(c)) => {
            let which = if c.is_primary { "secondary" } else { "primary" };
            let warnings = vec![format!(
                "{which} LUKS2 header copy is damaged ({}); using the other copy",
                reason(&e)
            )];
            Ok(Header {
                bin: c.bin,
                meta: c.meta,
                warnings,
            })
        }
        (Err(pe), Err(se)) => {
            if &first[..6] != MAGIC_PRIMARY && matches!(se, CopyError::Unusable(_)) {
                return Err(Error::NotLuks);
            }
            Err(Error::BadHeader(format!(
                "primary: {}; secondary: {}",
                reason(&pe),
                reason(&se)
            )))
        }
    }
}

fn read_copy<R: ReadAt + ?Sized>(
    src: &R,
    offset: u64,
) -> std::result::Result<HeaderCopy, CopyError> {
    let primary = offset == 0;
    let unusable = |m: String| CopyError::Unusable(m);
    let mut bin = [0u8; BIN_SIZE];
    let end = offset.saturating_add(BIN_SIZE as u64);
    if end > src.len() {
        return Err(unusable(format!(
            "volume too short for a header at {offset}"
        )));
    }
    src.read_exact_at(&mut bin, offset)
        .map_err(|e| unusable(format!("read error: {e}")))?;
    let magic = if primary {
        MAGIC_PRIMARY
    } else {
        MAGIC_SECONDARY
    };
    if &bin[..6] != magic {
        return Err(unusable(format!("no LUKS2 magic at offset {offset}")));
    }
    let version = u16::from_be_bytes([bin[OFF_VERSION], bin[OFF_VERSION + 1]]);
    if version != 2 {
        return Err(unusable(format!("version {version} at offset {offset}")));
    }
    let hdr_size = be64(&bin, OFF_HDR_SIZE);
    if !HDR_SIZES.contains(&hdr_size) || (!primary && hdr_size != offset) {
        return Err(unusable(format!(
            "invalid header size {hdr_size} at offset {offset}"
        )));
    }
    let hdr_offset = be64(&bin, OFF_HDR_OFFSET);
    if hdr_offset != offset {
        return Err(unusable(format!(
            "header at {offset} says it is at {hdr_offset}"
        )));
    }
    let rejected = |reason: String| CopyError::Rejected { hdr_size, reason };

    let json_end = offset
        .checked_add(hdr_size)
        .filter(|&e| e <= src.len())
        .ok_or_else(|| {
            rejected(format!(
                "volume too short for the {hdr_size}-byte header at {offset}"
            ))
        })?;
    let mut area = vec![0u8; (json_end - offset) as usize - BIN_SIZE];
    src.read_exact_at(&mut area, offset + BIN_SIZE as u64)
        .map_err(|e| rejected(format!("read error: {e}")))?;

    let checksum_alg = cstr(&bin, OFF_CSUM_ALG, LEN_CSUM_ALG);
    let hash = Hash::from_name(&checksum_alg)
        .ok_or_else(|| rejected(format!("unsupported checksum algorithm \"{checksum_alg}\"")))?;
    let computed = checksum(hash, &bin, &area);
    let stored = &bin[OFF_CSUM..OFF_CSUM + hash.size()];
    if !bool::from(computed[..hash.size()].ct_eq(stored)) {
        return Err(rejected(format!(
            "checksum mismatch in the header at {offset}"
        )));
    }

    let text = json::area_text(&area).map_err(|e| rejected(e.to_string()))?;
    let meta = json::parse(text, hdr_size).map_err(|e| rejected(e.to_string()))?;
    Ok(HeaderCopy {
        bin: BinHeader {
            hdr_size,
            seqid: be64(&bin, OFF_SEQID),
            label: cstr(&bin, OFF_LABEL, LEN_LABEL),
            checksum_alg,
            uuid: cstr(&bin, OFF_UUID, LEN_UUID),
            subsystem: cstr(&bin, OFF_SUBSYSTEM, LEN_SUBSYSTEM),
        },
        meta,
        is_primary: primary,
    })
}

/// `H(binary header with the csum field zeroed || JSON area)`.
pub fn checksum(hash: Hash, bin: &[u8; BIN_SIZE], area: &[u8]) -> [u8; LEN_CSUM] {
    let mut zeroed = *bin;
    zeroed[OFF_CSUM..OFF_CSUM + LEN_CSUM].fill(0);
    let mut out = [0u8; LEN_CSUM];
    hash.digest_into(&[&zeroed, area], &mut out[..hash.size()]);
    out
}

/// Builds one complete header copy (binary header + JSON area, `hdr_size` bytes)
/// with checksum alg sha256. `salt` is the 64-byte anti-dedup salt of this copy.
pub fn build_copy(
    bin: &BinHeader,
    json_text: &[u8],
    primary: bool,
    salt: &[u8],
) -> Result<Vec<u8>> {
    let hdr_size = bin.hdr_size;
    if !HDR_SIZES.contains(&hdr_size) {
        return Err(Error::InvalidOptions(format!("header size {hdr_size}")));
    }
    let json_size = hdr_size as usize - BIN_SIZE;
    // At least one NUL must follow the text.
    if json_text.len() >= json_size {
        return Err(Error::InvalidOptions(format!(
            "metadata JSON of {} bytes does not fit the {json_size}-byte area",
            json_text.len()
        )));
    }
    let put_str = |b: &mut [u8; BIN_SIZE], off: usize, len: usize, s: &str, what: &str| {
        if s.len() >= len || s.as_bytes().contains(&0) {
            return Err(Error::InvalidOptions(format!(
                "{what} must be at most {} bytes without NUL",
                len - 1
            )));
        }
        b[off..off + s.len()].copy_from_slice(s.as_bytes());
        Ok(())
    };
    let mut b = [0u8; BIN_SIZE];
    b[..6].copy_from_slice(if primary {
        MAGIC_PRIMARY
    } else {
        MAGIC_SECONDARY
    });
    b[OFF_VERSION..OFF_VERSION + 2].copy_from_slice(&2u16.to_be_bytes());
    b[OFF_HDR_SIZE..OFF_HDR_SIZE + 8].copy_from_slice(&hdr_size.to_be_bytes());
    b[OFF_SEQID..OFF_SEQID + 8].copy_from_slice(&bin.seqid.to_be_bytes());
    put_str(&mut b, OFF_LABEL, LEN_LABEL, &bin.label, "label")?;
    put_str(
        &mut b,
        OFF_CSUM_ALG,
        LEN_CSUM_ALG,
        "sha256",
        "checksum algorithm",
    )?;
    if salt.len() != LEN_SALT {
        return Err(Error::InvalidOptions("header salt must be 64 bytes".into()));
    }
    b[OFF_SALT..OFF_SALT + LEN_SALT].copy_from_slice(salt);
    put_str(&mut b, OFF_UUID, LEN_UUID, &bin.uuid, "uuid")?;
    put_str(
        &mut b,
        OFF_SUBSYSTEM,
        LEN_SUBSYSTEM,
        &bin.subsystem,
        "subsystem",
    )?;
    let off = if primary { 0 } else { hdr_size };
    b[OFF_HDR_OFFSET..OFF_HDR_OFFSET + 8].copy_from_slice(&off.to_be_bytes());

    let mut area = vec![0u8; json_size];
    area[..json_text.len()].copy_from_slice(json_text);
    let csum = checksum(Hash::Sha256, &b, &area);
    b[OFF_CSUM..OFF_CSUM + LEN_CSUM].copy_from_slice(&csum);

    let mut out = Vec::with_capacity(hdr_size as usize);
    out.extend_from_slice(&b);
    out.extend_from_slice(&area);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest;

    /// The checksum is sha256 over the binary header with bytes 448..512 zeroed,
    /// then the whole JSON area; computed here independently with sha2 directly.
    #[test]
    fn checksum_covers_zeroed_csum_field_and_whole_area() {
        let bin = BinHeader {
            hdr_size: 16384,
            seqid: 7,
            label: "demo".into(),
            checksum_alg: "sha256".into(),
            uuid: "11111111-2222-4333-8444-555555555555".into(),
            subsystem: String::new(),
        };
        let text = br#"{"a":1}"#;
        let copy = build_copy(&bin, text, true, &[7u8; 64]).unwrap();
        assert_eq!(copy.len(), 16384);
        let mut h = sha2::Sha256::new();
        let mut zeroed = copy[..4096].to_vec();
        zeroed[448..512].fill(0);
        h.update(&zeroed);
        h.update(&copy[4096..]);
        assert_eq!(&copy[448..480], &h.finalize()[..]);
        assert!(copy[480..512].iter().all(|&b| b == 0));
        assert_eq!(&copy[0x18..0x1c], b"demo");
        assert_eq!(&copy[0xa8..0xa8 + 36], bin.uuid.as_bytes());
    }
}
