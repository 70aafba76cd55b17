//! veil-fusefs: bytes in, mounted tree out.
//!
//! This crate knows nothing about SIF, the command line or namespaces. It stacks
//! positional-read sources ([`source::ReadAt`]): a slice of a file, a LUKS2
//! decrypting view ([`luks2`]), and a squashfs reader ([`squashfs`]) on top.

pub mod fs;
pub mod luks2;
pub mod source;
pub mod squashfs;
mod warm;
