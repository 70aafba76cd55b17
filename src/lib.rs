//! veil: a rootless runtime for SIF container images, including LUKS2-encrypted ones.
//!
//! Layers, dependencies pointing down: `cli` uses `runner` (which uses `launch`) and
//! `builder`; those use `{image, sign, registry}`, which use `{sif, crypt}`, which use
//! the leaves `{support, fsutil}`; `veil_fusefs` is below them all. docs/architecture.md has the table that `tests/architecture.rs` checks
//! the imports against.

// No function longer than clippy.toml's threshold (100 lines) outside tests.
#![warn(clippy::too_many_lines)]

pub mod builder;
pub mod cli;
pub mod crypt;
pub mod fsutil;
pub mod image;
pub mod launch;
pub mod registry;
pub mod runner;
pub mod sif;
pub mod sign;
pub mod support;
pub mod trust;
