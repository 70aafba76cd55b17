//! The build layer's error type.

#![forbid(unsafe_code)]

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A definition file problem, with its 1-based line number.
    #[error("{file}:{line}: {msg}")]
    Recipe {
        file: String,
        line: usize,
        msg: String,
    },
    /// A source (directory, file, definition file) the build cannot use as it is.
    #[error("{path}: {why}")]
    Source { path: String, why: String },
    /// A source image (SIF or squashfs) that cannot be opened, unlocked or read.
    #[error("{path}: {why}")]
    SourceImage { path: String, why: String },
    /// A tarball, docker-archive or oci-archive that cannot be unpacked.
    #[error("{path}: {why}")]
    Archive { path: String, why: String },
    /// A path of the staged tree that cannot be written as asked (shown as in the
    /// image, or as on the host for the tree's top).
    #[error("{path}: {why}")]
    Staged { path: String, why: String },
    /// Where the output or a temporary goes.
    #[error("{path}: {why}")]
    Output { path: String, why: String },
    /// Options that cannot go together.
    #[error("{0}")]
    Unsupported(&'static str),
    #[error("{path}: {err}")]
    Io { path: String, err: std::io::Error },
    /// A libsquashfs step of writing the squashfs `path`.
    #[error("{path}: squashfs: {err}")]
    Squashfs {
        path: String,
        err: super::sqfs::Error,
    },
    #[error("{0}")]
    Sif(#[from] crate::sif::SifError),
    /// Opening or unlocking a source image (the image layer's errors name it).
    #[error("{0}")]
    Image(#[from] crate::image::ImageError),
    /// Pulling a source from a registry.
    #[error("{0}")]
    Registry(#[from] crate::registry::RegistryError),
    /// The OS gave no random bytes for an image's secret.
    #[error("encryption: random: {0}")]
    Random(#[source] getrandom::Error),
    /// Making the LUKS2 volume `path` (a temporary beside the output).
    #[error("encryption: {path}: {err}")]
    Encrypt {
        path: String,
        #[source]
        err: veil_fusefs::luks2::Error,
    },
    /// Making the gocryptfs volume of an image (`path`: the temporary it goes to).
    #[error("encryption: {path}: {}", crate::image::kdf::gocryptfs_text(.err))]
    EncryptGocryptfs {
        path: String,
        #[source]
        err: veil_fusefs::gocryptfs::Error,
    },
    /// Wrapping an image's random secret for the recipient's public key.
    #[error("encryption: {0}")]
    WrapSecret(#[source] crate::crypt::CryptError),
    /// Re-keying the encrypted image `path` (its LUKS2 header or crypto messages).
    #[error("encryption: {path}: {err}")]
    Rekey {
        path: String,
        #[source]
        err: ImageFault,
    },
    /// A definition file's section that could not run, or failed: where it is in
    /// the file, and what happened.
    #[error("{file}:{line}: %{section} {why}")]
    Script {
        file: String,
        line: usize,
        section: String,
        why: String,
    },
    #[error("{0} exists (use --force to overwrite)")]
    Exists(String),
    /// Reading back the squashfs or SIF `path` just written (a temporary beside the
    /// output) found it not to be what was written.
    #[error("verification of the built image failed: {path}: {err}")]
    Verify {
        path: String,
        #[source]
        err: ImageFault,
    },
}

/// What is wrong with an image veil wrote or is re-keying, as read back.
#[derive(Debug, thiserror::Error)]
pub enum ImageFault {
    #[error("{0}")]
    Sif(#[from] crate::sif::SifError),
    #[error("{0}")]
    Squashfs(#[from] veil_fusefs::squashfs::Error),
    /// The LUKS2 header or an unlock; a KDF cost refused says how to allow it.
    #[error("{}", crate::image::kdf::luks_text(.0))]
    Luks2(#[from] veil_fusefs::luks2::Error),
    /// The gocryptfs volume of an fstype-6 image, or its unlock.
    #[error("{}", crate::image::kdf::gocryptfs_text(.0))]
    Gocryptfs(#[from] veil_fusefs::gocryptfs::Error),
    /// Opening an encrypted image (the image layer's own words).
    #[error("{0}")]
    Image(String),
    #[error("no primary partition")]
    NoPrimaryPartition,
    /// The primary partition's type, when another was written.
    #[error("unexpected partition {0:?}")]
    UnexpectedPartition(crate::sif::Extra),
    #[error("the image is not encrypted")]
    NotEncrypted,
    #[error(
        "the image is in the gocryptfs layout, which has one password and no keyslots: replace it with `veil keyslot change`"
    )]
    GocryptfsHasNoKeyslots,
    /// The LUKS2 data segment starts at 0 or beyond the partition.
    #[error("unexpected LUKS2 data offset")]
    BadDataOffset,
    #[error("{read} inodes read back, {written} written")]
    InodeCount { read: u32, written: u32 },
}

impl BuildError {
    pub fn verify(path: &Path, err: impl Into<ImageFault>) -> BuildError {
        BuildError::Verify {
            path: path.display().to_string(),
            err: err.into(),
        }
    }

    pub fn rekey(path: &Path, err: impl Into<ImageFault>) -> BuildError {
        BuildError::Rekey {
            path: path.display().to_string(),
            err: err.into(),
        }
    }

    pub fn io(path: &Path, err: std::io::Error) -> BuildError {
        BuildError::Io {
            path: path.display().to_string(),
            err,
        }
    }

    pub fn source(path: &Path, why: impl std::fmt::Display) -> BuildError {
        BuildError::Source {
            path: path.display().to_string(),
            why: why.to_string(),
        }
    }

    pub fn source_image(path: &Path, why: impl std::fmt::Display) -> BuildError {
        BuildError::SourceImage {
            path: path.display().to_string(),
            why: why.to_string(),
        }
    }

    pub fn archive(path: &Path, why: impl std::fmt::Display) -> BuildError {
        BuildError::Archive {
            path: path.display().to_string(),
            why: why.to_string(),
        }
    }

    pub fn staged(path: &Path, why: impl std::fmt::Display) -> BuildError {
        BuildError::Staged {
            path: path.display().to_string(),
            why: why.to_string(),
        }
    }

    pub fn output(path: &Path, why: impl std::fmt::Display) -> BuildError {
        BuildError::Output {
            path: path.display().to_string(),
            why: why.to_string(),
        }
    }
}

pub type Result<T, E = BuildError> = std::result::Result<T, E>;
