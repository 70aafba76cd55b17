//! The SIF layer's error type. Each message is one line that names what is wrong.

#![forbid(unsafe_code)]

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum SifError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("not a SIF file: {0}")]
    NotSif(&'static str),
    #[error("incompatible SIF version {0:?} (only version 01 exists)")]
    Version(String),
    #[error("malformed SIF: {0}")]
    Malformed(String),
    #[error("object not found: {0}")]
    ObjectNotFound(u32),
    #[error("no objects in image")]
    NoObjects,
    #[error("no free descriptor slots (all {0} are used)")]
    NoFreeSlots(i64),
    #[error("image already contains a primary partition")]
    PrimaryExists,
    #[error("data object {0} is not a partition")]
    NotPartition(u32),
    #[error("data object {0} is not a system partition")]
    NotSystemPartition(u32),
    #[error("invalid argument: {0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, SifError>;

pub(crate) fn malformed(msg: impl Into<String>) -> SifError {
    SifError::Malformed(msg.into())
}
