//! How to reach registries, as the command line and the environment say.

#![forbid(unsafe_code)]

use super::credentials::Credentials;

/// How to reach registries.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Plain HTTP instead of HTTPS (Apptainer's `--no-https`).
    pub no_https: bool,
    /// Credentials given on the command line or in the environment; otherwise the
    /// stored ones.
    pub credentials: Option<Credentials>,
    /// No progress output.
    pub quiet: bool,
    /// The architecture to pick from an image index (`docker://`), in its names
    /// (amd64, arm64, …); this machine's when not given.
    pub arch: Option<String>,
}
