//! Container images (`docker://`) as the builder takes them: the chosen platform's
//! manifest digest, the image configuration, and the layers, files of the cache. The
//! helper downloads them (`registry/remote/docker.rs`); turning the layers into a root file
//! system is the builder's work.

#![forbid(unsafe_code)]

use std::io::Read;
use std::path::PathBuf;

use super::error::{RegistryError, Result};
use super::protocol::DockerParts;

/// The largest image configuration taken (they are a few KiB).
pub const MAX_CONFIG: i64 = 16 << 20;

/// An image's parts, local.
#[derive(Debug)]
pub struct Image {
    /// The manifest's digest (for an index, the chosen platform's manifest).
    pub manifest_digest: String,
    /// The image configuration, as JSON.
    pub config: Vec<u8>,
    /// The layers in order, bottom first: files in the cache.
    pub layers: Vec<PathBuf>,
}

impl Image {
    /// The image from the helper's answer, its configuration read from the cache.
    pub fn from_parts(parts: DockerParts) -> Result<Image> {
        let f = super::cache::entry_of("blob", &parts.config)?;
        for l in &parts.layers {
            super::cache::entry_of("blob", l)?;
        }
        if super::sha256_hex(&parts.manifest_digest).is_none() {
            return Err(RegistryError::Helper {
                path: PathBuf::from(super::helper::PROGRAM),
                why: "a manifest digest that is not sha256".into(),
            });
        }
        let mut config = Vec::new();
        f.take(MAX_CONFIG as u64)
            .read_to_end(&mut config)
            .map_err(|e| RegistryError::io("reading", &parts.config, e))?;
        Ok(Image {
            manifest_digest: parts.manifest_digest,
            config,
            layers: parts.layers,
        })
    }
}

/// The architecture an image is pulled for when none is asked for: this machine's,
/// in the names of image indexes.
pub fn host_arch() -> &'static str {
    crate::sif::Arch::host().go_name()
}
