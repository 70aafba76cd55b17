//! The SIF code tables: data types, partition filesystem/type/architecture codes,
//! signature hashes, crypto-message formats and SBOM formats, with the exact names
//! siftool prints for them.

#![forbid(unsafe_code)]

/// Declares a code table: an enum with a catch-all for codes we do not know, the code
/// each variant stands for, and its siftool name.
macro_rules! code_table {
    (
        $(#[$meta:meta])*
        $name:ident : $repr:ty, unknown = $unknown_text:literal {
            $($variant:ident = $code:literal => $text:literal),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($variant,)+
            /// A code this version of veil does not know; kept so it round-trips.
            Other($repr),
        }

        impl $name {
            pub fn from_code(code: $repr) -> Self {
                match code {
                    $($code => Self::$variant,)+
                    other => Self::Other(other),
                }
            }

            pub fn code(self) -> $repr {
                match self {
                    $(Self::$variant => $code,)+
                    Self::Other(c) => c,
                }
            }

            /// The name siftool prints.
            pub fn name(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)+
                    Self::Other(_) => $unknown_text,
                }
            }

            /// True for a code in the table.
            pub fn is_known(self) -> bool {
                !matches!(self, Self::Other(_))
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

code_table! {
    /// Descriptor DataType.
    DataType: i32, unknown = "Unknown" {
        Deffile = 0x4001 => "Def.FILE",
        EnvVar = 0x4002 => "Env.Vars",
        Labels = 0x4003 => "JSON.Labels",
        Partition = 0x4004 => "FS",
        Signature = 0x4005 => "Signature",
        GenericJson = 0x4006 => "JSON.Generic",
        Generic = 0x4007 => "Generic/Raw",
        CryptoMessage = 0x4008 => "Cryptographic Message",
        Sbom = 0x4009 => "SBOM",
        OciRootIndex = 0x400A => "OCI.RootIndex",
        OciBlob = 0x400B => "OCI.Blob",
    }
}

impl DataType {
    /// siftool's `--datatype` numbering: 1 = Deffile … 11 = OCI blob.
    pub fn from_cli_number(n: u32) -> Option<Self> {
        match n {
            1..=11 => Some(Self::from_code(0x4000 + n as i32)),
            _ => None,
        }
    }
}

code_table! {
    /// Partition filesystem type.
    FsType: i32, unknown = "Unknown" {
        Squash = 1 => "Squashfs",
        Ext3 = 2 => "Ext3",
        ImmuObj = 3 => "Archive",
        Raw = 4 => "Raw",
        EncryptedSquashfs = 5 => "Encrypted squashfs",
        GocryptfsSquashfs = 6 => "Gocryptfs squashfs",
    }
}

code_table! {
    /// Partition type.
    PartType: i32, unknown = "Unknown" {
        System = 1 => "System",
        PrimSys = 2 => "*System",
        Data = 3 => "Data",
        Overlay = 4 => "Overlay",
    }
}

code_table! {
    /// Signature hash type.
    HashType: i32, unknown = "Unknown" {
        Sha256 = 1 => "SHA-256",
        Sha384 = 2 => "SHA-384",
        Sha512 = 3 => "SHA-512",
        Blake2s256 = 4 => "BLAKE2s-256",
        Blake2b256 = 5 => "BLAKE2b-256",
    }
}

code_table! {
    /// Cryptographic message format.
    FormatType: i32, unknown = "Unknown" {
        OpenPgp = 1 => "OpenPGP",
        Pem = 2 => "PEM",
    }
}

code_table! {
    /// Cryptographic message type.
    MessageType: i32, unknown = "Unknown" {
        ClearSignature = 0x100 => "Clear Signature",
        RsaOaep = 0x200 => "RSA-OAEP",
    }
}

code_table! {
    /// SBOM format.
    SbomFormat: i32, unknown = "unknown" {
        CycloneDxJson = 1 => "cyclonedx-json",
        CycloneDxXml = 2 => "cyclonedx-xml",
        GithubJson = 3 => "github-json",
        SpdxJson = 4 => "spdx-json",
        SpdxRdf = 5 => "spdx-rdf",
        SpdxTagValue = 6 => "spdx-tag-value",
        SpdxYaml = 7 => "spdx-yaml",
        SyftJson = 8 => "syft-json",
    }
}

impl SbomFormat {
    pub fn from_name(name: &str) -> Option<Self> {
        (1..=8).map(Self::from_code).find(|f| f.name() == name)
    }
}

/// A SIF architecture: the two-digit code stored as 3 bytes (`"02\0"` = amd64).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Arch(pub [u8; 3]);

/// Code, Go architecture name. Code `00` is "unknown" (no primary partition).
const ARCHES: &[(&str, &str)] = &[
    ("01", "386"),
    ("02", "amd64"),
    ("03", "arm"),
    ("04", "arm64"),
    ("05", "ppc64"),
    ("06", "ppc64le"),
    ("07", "mips"),
    ("08", "mipsle"),
    ("09", "mips64"),
    ("10", "mips64le"),
    ("11", "s390x"),
    ("12", "riscv64"),
    ("13", "loong64"),
];

impl Arch {
    pub const UNKNOWN: Arch = Arch(*b"00\0");

    /// siftool's `--partarch` number (1 = 386 … 13 = loong64).
    pub fn from_cli_number(n: u32) -> Option<Self> {
        ARCHES
            .get((n as usize).checked_sub(1)?)
            .map(|(code, _)| Self::from_code_str(code))
    }

    /// From a Go architecture name (`amd64`, `arm64`, …).
    pub fn from_go_name(name: &str) -> Option<Self> {
        ARCHES
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(code, _)| Self::from_code_str(code))
    }

    /// The architecture of the machine veil runs on.
    pub fn host() -> Self {
        let go = match std::env::consts::ARCH {
            "x86" => "386",
            "x86_64" => "amd64",
            "arm" => "arm",
            "aarch64" => "arm64",
            "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
            "powerpc64" => "ppc64",
            "mips" if cfg!(target_endian = "little") => "mipsle",
            "mips" => "mips",
            "mips64" if cfg!(target_endian = "little") => "mips64le",
            "mips64" => "mips64",
            "s390x" => "s390x",
            "riscv64" => "riscv64",
            "loongarch64" => "loong64",
            _ => return Self::UNKNOWN,
        };
        Self::from_go_name(go).unwrap_or(Self::UNKNOWN)
    }

    fn from_code_str(code: &str) -> Self {
        let b = code.as_bytes();
        Arch([b[0], b[1], 0])
    }

    /// The Go name, or `unknown` for `00` and for codes not in the table.
    pub fn go_name(self) -> &'static str {
        ARCHES
            .iter()
            .find(|(code, _)| code.as_bytes() == &self.0[..2] && self.0[2] == 0)
            .map(|(_, name)| *name)
            .unwrap_or("unknown")
    }

    pub fn is_known(self) -> bool {
        self.go_name() != "unknown"
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.go_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_name_like_siftool() {
        assert_eq!(DataType::from_cli_number(4), Some(DataType::Partition));
        assert_eq!(DataType::from_cli_number(11), Some(DataType::OciBlob));
        assert_eq!(DataType::from_cli_number(12), None);
        assert_eq!(DataType::from_code(0x4010).name(), "Unknown");
        assert_eq!(DataType::from_code(0x4010).code(), 0x4010);
        assert_eq!(FsType::from_code(5).name(), "Encrypted squashfs");
        assert_eq!(PartType::PrimSys.name(), "*System");
        assert_eq!(
            SbomFormat::from_name("spdx-yaml"),
            Some(SbomFormat::SpdxYaml)
        );
        assert_eq!(SbomFormat::from_code(99).name(), "unknown");
    }

    #[test]
    fn arches() {
        assert_eq!(Arch::from_cli_number(2), Some(Arch(*b"02\0")));
        assert_eq!(Arch::from_cli_number(0), None);
        assert_eq!(Arch::from_cli_number(14), None);
        assert_eq!(Arch(*b"11\0").go_name(), "s390x");
        assert_eq!(Arch::UNKNOWN.go_name(), "unknown");
        assert_eq!(Arch(*b"99\0").go_name(), "unknown");
        assert!(Arch::host().is_known());
    }
}
