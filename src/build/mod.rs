//! `veil build`: definition files, bootstrap sources, the Apptainer runtime layout,
//! squashfs creation (libsquashfs), encryption and SIF assembly.

pub mod error;
pub mod progress;
mod sqfs_ffi;
pub mod squash;
pub mod tree;

pub use error::{BuildError, Result};
