//! veil: a rootless runtime for SIF container images, including LUKS2-encrypted ones.
//!
//! Layers, dependencies pointing down: `cli -> {builder, sign, launch} -> {image, crypt}
//! -> {sif, veil_fusefs}`. `fsutil` and `support` are leaf helpers any layer may use.

pub mod builder;
pub mod cli;
pub mod crypt;
pub mod fsutil;
pub mod image;
pub mod launch;
pub mod sif;
pub mod sign;
pub mod support;
