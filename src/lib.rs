//! veil: a rootless runtime for SIF container images, including LUKS2-encrypted ones.
//!
//! Layers, dependencies pointing down: `cli -> {build, sign, launch} -> {image, crypt}
//! -> {sif, veil_fusefs}`.

pub mod sif;
