//! The 128-byte global header (spec/sif.md §2).

#![forbid(unsafe_code)]

use super::error::{Result, SifError};
use super::types::Arch;

pub const HEADER_LEN: usize = 128;
pub const MAGIC: &[u8; 10] = b"SIF_MAGIC\0";
pub const VERSION: &[u8; 3] = b"01\0";
pub const LAUNCH_SCRIPT_LEN: usize = 32;
/// The launch script SingularityCE and Apptainer write.
pub const DEFAULT_LAUNCH_SCRIPT: &str = "#!/usr/bin/env run-singularity\n";
/// Unix time of Go's zero `time.Time` (0001-01-01 UTC): the timestamp of deterministic images.
pub const GO_ZERO_TIME: i64 = -62_135_596_800;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub launch_script: [u8; LAUNCH_SCRIPT_LEN],
    pub arch: Arch,
    pub id: [u8; 16],
    pub created_at: i64,
    pub modified_at: i64,
    pub descriptors_free: i64,
    pub descriptors_total: i64,
    pub descriptors_offset: i64,
    pub descriptors_size: i64,
    pub data_offset: i64,
    pub data_size: i64,
}

fn i64_at(b: &[u8; HEADER_LEN], off: usize) -> i64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[off..off + 8]);
    i64::from_le_bytes(v)
}

impl Header {
    /// Decodes the header. Only the magic and version are checked here, as the reference
    /// loader does; the image reader validates the geometry against the file.
    pub fn parse(b: &[u8; HEADER_LEN]) -> Result<Self> {
        if &b[0x20..0x2A] != MAGIC {
            return Err(SifError::NotSif("invalid SIF magic"));
        }
        if &b[0x2A..0x2D] != VERSION {
            return Err(SifError::Version(
                String::from_utf8_lossy(&b[0x2A..0x2D])
                    .trim_end_matches('\0')
                    .to_string(),
            ));
        }
        let mut launch_script = [0u8; LAUNCH_SCRIPT_LEN];
        launch_script.copy_from_slice(&b[..LAUNCH_SCRIPT_LEN]);
        let mut id = [0u8; 16];
        id.copy_from_slice(&b[0x30..0x40]);
        Ok(Header {
            launch_script,
            arch: Arch([b[0x2D], b[0x2E], b[0x2F]]),
            id,
            created_at: i64_at(b, 0x40),
            modified_at: i64_at(b, 0x48),
            descriptors_free: i64_at(b, 0x50),
            descriptors_total: i64_at(b, 0x58),
            descriptors_offset: i64_at(b, 0x60),
            descriptors_size: i64_at(b, 0x68),
            data_offset: i64_at(b, 0x70),
            data_size: i64_at(b, 0x78),
        })
    }

    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[..LAUNCH_SCRIPT_LEN].copy_from_slice(&self.launch_script);
        b[0x20..0x2A].copy_from_slice(MAGIC);
        b[0x2A..0x2D].copy_from_slice(VERSION);
        b[0x2D..0x30].copy_from_slice(&self.arch.0);
        b[0x30..0x40].copy_from_slice(&self.id);
        let fields = [
            self.created_at,
            self.modified_at,
            self.descriptors_free,
            self.descriptors_total,
            self.descriptors_offset,
            self.descriptors_size,
            self.data_offset,
            self.data_size,
        ];
        for (i, v) in fields.iter().enumerate() {
            let off = 0x40 + 8 * i;
            b[off..off + 8].copy_from_slice(&v.to_le_bytes());
        }
        b
    }

    /// The launch script as text, up to its first NUL.
    pub fn launch_script_str(&self) -> String {
        cstr(&self.launch_script)
    }

    /// The launch script field for `script`, which must leave room for a NUL.
    pub fn encode_launch_script(script: &str) -> Result<[u8; LAUNCH_SCRIPT_LEN]> {
        if script.len() >= LAUNCH_SCRIPT_LEN {
            return Err(SifError::Invalid(format!(
                "launch script is {} bytes; it must be shorter than {LAUNCH_SCRIPT_LEN}",
                script.len()
            )));
        }
        let mut out = [0u8; LAUNCH_SCRIPT_LEN];
        out[..script.len()].copy_from_slice(script.as_bytes());
        Ok(out)
    }

    /// True for an image created in deterministic mode: nil ID and Go-zero timestamps.
    /// Later edits of such an image keep Go-zero timestamps too.
    pub fn is_deterministic(&self) -> bool {
        self.id == [0u8; 16] && self.created_at == GO_ZERO_TIME && self.modified_at == GO_ZERO_TIME
    }

    /// The ID in its textual form, or `None` for the nil UUID.
    pub fn id_string(&self) -> Option<String> {
        (self.id != [0u8; 16]).then(|| uuid::Uuid::from_bytes(self.id).to_string())
    }
}

/// Text of a NUL-padded field, up to the first NUL (invalid UTF-8 replaced).
pub fn cstr(field: &[u8]) -> String {
    let end = field.iter().position(|&c| c == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_checks() {
        let h = Header {
            launch_script: Header::encode_launch_script(DEFAULT_LAUNCH_SCRIPT).unwrap(),
            arch: Arch(*b"02\0"),
            id: [7; 16],
            created_at: 1,
            modified_at: GO_ZERO_TIME,
            descriptors_free: 47,
            descriptors_total: 48,
            descriptors_offset: 4096,
            descriptors_size: 28080,
            data_offset: 32176,
            data_size: 9,
        };
        let b = h.to_bytes();
        assert_eq!(Header::parse(&b).unwrap(), h);
        assert_eq!(&b[0x2D..0x30], b"02\0");
        assert_eq!(&b[0x40..0x48], &1i64.to_le_bytes());

        let mut bad = b;
        bad[0x20] = b'X';
        assert!(matches!(Header::parse(&bad), Err(SifError::NotSif(_))));
        let mut bad = b;
        bad[0x2B] = b'2';
        assert_eq!(
            Header::parse(&bad).unwrap_err().to_string(),
            "incompatible SIF version \"02\" (only version 01 exists)"
        );
        assert!(Header::encode_launch_script(&"x".repeat(32)).is_err());
        assert_eq!(GO_ZERO_TIME as u64, 0xFFFF_FFF1_886E_0900);
    }
}
