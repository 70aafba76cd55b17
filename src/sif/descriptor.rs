//! The 585-byte data object descriptor (spec/sif.md §3–4) and its typed Extra field.

#![forbid(unsafe_code)]

use super::header::cstr;
use super::types::{
    Arch, DataType, FormatType, FsType, HashType, MessageType, PartType, SbomFormat,
};

pub const DESCRIPTOR_LEN: usize = 585;
pub const NAME_LEN: usize = 128;
pub const EXTRA_LEN: usize = 384;
/// Group IDs and group links carry these bits set in the raw value.
pub const GROUP_MASK: u32 = 0xF000_0000;
/// Length of an OpenPGP v4 fingerprint, stored at the start of a signature's Entity.
pub const FINGERPRINT_LEN: usize = 20;

/// What a descriptor's LinkedID points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    None,
    Object(u32),
    Group(u32),
}

impl Link {
    pub fn from_raw(raw: u32) -> Self {
        if raw == 0 {
            Link::None
        } else if raw & GROUP_MASK == GROUP_MASK {
            Link::Group(raw & !GROUP_MASK)
        } else {
            Link::Object(raw)
        }
    }

    pub fn to_raw(self) -> u32 {
        match self {
            Link::None => 0,
            Link::Object(id) => id,
            Link::Group(g) => g | GROUP_MASK,
        }
    }
}

/// A descriptor slot as stored. Unused slots are all zero.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    pub data_type: DataType,
    pub used: bool,
    pub id: u32,
    /// Raw group value, including [`GROUP_MASK`].
    pub group_raw: u32,
    /// Raw link value, including [`GROUP_MASK`] for a group link.
    pub link_raw: u32,
    pub offset: i64,
    pub size: i64,
    pub size_with_padding: i64,
    pub created_at: i64,
    pub modified_at: i64,
    pub uid: i64,
    pub gid: i64,
    pub name: [u8; NAME_LEN],
    pub extra: [u8; EXTRA_LEN],
}

fn le<const N: usize>(b: &[u8], off: usize) -> [u8; N] {
    let mut v = [0u8; N];
    v.copy_from_slice(&b[off..off + N]);
    v
}

impl Descriptor {
    pub fn parse(b: &[u8; DESCRIPTOR_LEN]) -> Self {
        Descriptor {
            data_type: DataType::from_code(i32::from_le_bytes(le(b, 0))),
            used: b[4] != 0,
            id: u32::from_le_bytes(le(b, 5)),
            group_raw: u32::from_le_bytes(le(b, 9)),
            link_raw: u32::from_le_bytes(le(b, 13)),
            offset: i64::from_le_bytes(le(b, 17)),
            size: i64::from_le_bytes(le(b, 25)),
            size_with_padding: i64::from_le_bytes(le(b, 33)),
            created_at: i64::from_le_bytes(le(b, 41)),
            modified_at: i64::from_le_bytes(le(b, 49)),
            uid: i64::from_le_bytes(le(b, 57)),
            gid: i64::from_le_bytes(le(b, 65)),
            name: le(b, 73),
            extra: le(b, 201),
        }
    }

    pub fn to_bytes(&self) -> [u8; DESCRIPTOR_LEN] {
        let mut b = [0u8; DESCRIPTOR_LEN];
        b[0..4].copy_from_slice(&self.data_type.code().to_le_bytes());
        b[4] = self.used as u8;
        b[5..9].copy_from_slice(&self.id.to_le_bytes());
        b[9..13].copy_from_slice(&self.group_raw.to_le_bytes());
        b[13..17].copy_from_slice(&self.link_raw.to_le_bytes());
        let fields = [
            self.offset,
            self.size,
            self.size_with_padding,
            self.created_at,
            self.modified_at,
            self.uid,
            self.gid,
        ];
        for (i, v) in fields.iter().enumerate() {
            let off = 17 + 8 * i;
            b[off..off + 8].copy_from_slice(&v.to_le_bytes());
        }
        b[73..201].copy_from_slice(&self.name);
        b[201..585].copy_from_slice(&self.extra);
        b
    }

    /// The public group ID (0 = no group).
    pub fn group(&self) -> u32 {
        self.group_raw & !GROUP_MASK
    }

    pub fn link(&self) -> Link {
        Link::from_raw(self.link_raw)
    }

    pub fn name_str(&self) -> String {
        cstr(&self.name)
    }

    /// The object's byte range `[offset, offset + size)`.
    pub fn range(&self) -> (u64, u64) {
        (self.offset as u64, self.offset as u64 + self.size as u64)
    }

    /// The Extra field decoded for the descriptor's data type.
    pub fn extra(&self) -> Extra {
        let e = &self.extra;
        let i32_at = |off: usize| i32::from_le_bytes(le(e, off));
        match self.data_type {
            DataType::Partition => Extra::Partition {
                fs: FsType::from_code(i32_at(0)),
                part: PartType::from_code(i32_at(4)),
                arch: Arch(le(e, 8)),
            },
            DataType::Signature => {
                let fingerprint: [u8; FINGERPRINT_LEN] = le(e, 4);
                Extra::Signature {
                    hash: HashType::from_code(i32_at(0)),
                    fingerprint: (fingerprint != [0; FINGERPRINT_LEN]).then_some(fingerprint),
                }
            }
            DataType::CryptoMessage => Extra::CryptoMessage {
                format: FormatType::from_code(i32_at(0)),
                message: MessageType::from_code(i32_at(4)),
            },
            DataType::Sbom => Extra::Sbom {
                format: SbomFormat::from_code(i32_at(0)),
            },
            DataType::OciRootIndex | DataType::OciBlob => Extra::OciDigest(cstr(e)),
            _ => Extra::None,
        }
    }
}

/// Type-specific metadata held in a descriptor's Extra field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Extra {
    None,
    Partition {
        fs: FsType,
        part: PartType,
        arch: Arch,
    },
    Signature {
        hash: HashType,
        /// The signer's OpenPGP v4 primary-key fingerprint; `None` when all zero (DSSE).
        fingerprint: Option<[u8; FINGERPRINT_LEN]>,
    },
    CryptoMessage {
        format: FormatType,
        message: MessageType,
    },
    Sbom {
        format: SbomFormat,
    },
    /// `sha256:<hex>` of an OCI object's data.
    OciDigest(String),
}

impl Extra {
    /// The 384-byte Extra field for this metadata.
    pub fn encode(&self) -> [u8; EXTRA_LEN] {
        let mut e = [0u8; EXTRA_LEN];
        match self {
            Extra::None => {}
            Extra::Partition { fs, part, arch } => {
                e[0..4].copy_from_slice(&fs.code().to_le_bytes());
                e[4..8].copy_from_slice(&part.code().to_le_bytes());
                e[8..11].copy_from_slice(&arch.0);
            }
            Extra::Signature { hash, fingerprint } => {
                e[0..4].copy_from_slice(&hash.code().to_le_bytes());
                if let Some(fp) = fingerprint {
                    e[4..4 + FINGERPRINT_LEN].copy_from_slice(fp);
                }
            }
            Extra::CryptoMessage { format, message } => {
                e[0..4].copy_from_slice(&format.code().to_le_bytes());
                e[4..8].copy_from_slice(&message.code().to_le_bytes());
            }
            Extra::Sbom { format } => e[0..4].copy_from_slice(&format.code().to_le_bytes()),
            Extra::OciDigest(d) => {
                let n = d.len().min(EXTRA_LEN - 1);
                e[..n].copy_from_slice(&d.as_bytes()[..n]);
            }
        }
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_and_groups() {
        assert_eq!(Link::from_raw(0), Link::None);
        assert_eq!(Link::from_raw(3), Link::Object(3));
        assert_eq!(Link::from_raw(0xF000_0002), Link::Group(2));
        assert_eq!(Link::Group(2).to_raw(), 0xF000_0002);
    }

    #[test]
    fn descriptor_round_trip() {
        let mut name = [0u8; NAME_LEN];
        name[..4].copy_from_slice(b"root");
        let d = Descriptor {
            data_type: DataType::Partition,
            used: true,
            id: 2,
            group_raw: 1 | GROUP_MASK,
            link_raw: 0,
            offset: 36864,
            size: 4096,
            size_with_padding: 8188,
            created_at: 5,
            modified_at: 6,
            uid: 0,
            gid: 0,
            name,
            extra: Extra::Partition {
                fs: FsType::EncryptedSquashfs,
                part: PartType::PrimSys,
                arch: Arch(*b"02\0"),
            }
            .encode(),
        };
        let b = d.to_bytes();
        assert_eq!(Descriptor::parse(&b), d);
        assert_eq!(d.group(), 1);
        assert_eq!(d.name_str(), "root");
        assert_eq!(
            d.extra(),
            Extra::Partition {
                fs: FsType::EncryptedSquashfs,
                part: PartType::PrimSys,
                arch: Arch(*b"02\0")
            }
        );
        assert_eq!(&b[201..212], &[5, 0, 0, 0, 2, 0, 0, 0, b'0', b'2', 0]);
    }
}
