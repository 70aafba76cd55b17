//! veil: a rootless runtime for SIF container images, including LUKS2-encrypted ones.
//!
//! Layers, dependencies pointing down: `cli -> {runner, builder, sign}`, `runner -> {launch,
//! sign}`, and below them `{image, crypt} -> {sif, veil_fusefs}`. `fsutil` and `support`
//! are leaves any layer may use.

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
