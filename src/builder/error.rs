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
    #[error("encryption: {0}")]
    Encrypt(String),
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
    #[error("verification of the built image failed: {0}")]
    Verify(String),
}

impl BuildError {
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
