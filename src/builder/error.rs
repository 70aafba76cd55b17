//! The build layer's error type.

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
    #[error("{0}")]
    Source(String),
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
    #[error("encryption: {0}")]
    Encrypt(String),
    #[error("{0}")]
    Script(String),
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
}

impl From<std::io::Error> for BuildError {
    fn from(err: std::io::Error) -> Self {
        BuildError::Io {
            path: "I/O".into(),
            err,
        }
    }
}

pub type Result<T, E = BuildError> = std::result::Result<T, E>;
