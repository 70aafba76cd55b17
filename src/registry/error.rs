//! The registry layer's one error type: which registry or file, what was being done.
//! It holds text, not the network client's error types, so that the `veil` binary,
//! which only reports these errors, links none of the client.

#![forbid(unsafe_code)]

use std::path::PathBuf;

/// Everything that can go wrong talking to a registry or keeping its images.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A URI that is not `oras://…` or `docker://…`, or whose reference does not parse.
    #[error("{uri}: {why}")]
    Uri { uri: String, why: String },
    /// The client could not be set up (TLS roots, runtime).
    #[error("setting up the registry client: {0}")]
    Setup(String),
    /// A request to the registry failed; `what` says which, `why` what of the
    /// client's error a user can act on.
    #[error("{what} {reference}: {why}")]
    Request {
        what: &'static str,
        reference: String,
        why: String,
    },
    /// The registry answered with something the format does not allow.
    #[error("{reference}: {why}")]
    Content { reference: String, why: String },
    /// A downloaded blob is not what its descriptor says.
    #[error("{reference}: blob {digest}: {why}")]
    Blob {
        reference: String,
        digest: String,
        why: String,
    },
    /// A local file or directory.
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A configuration file (the keyserver list) that cannot be used.
    #[error("{}: {why}", path.display())]
    Config { path: PathBuf, why: String },
    /// A keyserver request that failed, or an answer that cannot be used.
    #[error("keyserver {url}: {why}")]
    Keyserver { url: String, why: String },
    /// A credentials file that cannot be read.
    #[error("{}: {why}", path.display())]
    Credentials { path: PathBuf, why: String },
    /// The pulled file is not a SIF image.
    #[error("{reference}: the artifact is not a SIF image: {source}")]
    NotSif {
        reference: String,
        #[source]
        source: crate::sif::SifError,
    },
    /// A cache directory that cannot be trusted.
    #[error("{}: {why}", path.display())]
    Cache { path: PathBuf, why: String },
    /// A local file operation whose error already names the path.
    #[error("{0}")]
    Local(std::io::Error),
    /// The destination exists and --force was not given.
    #[error("{} exists (use --force to overwrite)", .0.display())]
    Exists(PathBuf),
    /// The registry helper's own error, one line as it wrote it.
    #[error("{0}")]
    Remote(String),
    /// The registry helper could not be run, or ended without an answer.
    #[error("{}: {why}", path.display())]
    Helper { path: PathBuf, why: String },
}

pub type Result<T> = std::result::Result<T, RegistryError>;

impl RegistryError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        RegistryError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// `s` with control characters (a registry's text could hold terminal escapes)
/// written as escapes.
pub fn printable(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}
