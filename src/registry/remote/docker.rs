//! Container images (`docker://`): the manifest for the wanted platform (from an image
//! index or a Docker manifest list), the image configuration, and the layers, each
//! downloaded once into the cache (`blob/sha256:HEX`) and checked against its digest.
//! Turning the layers into a root file system is the builder's work.

#![forbid(unsafe_code)]

use std::path::PathBuf;

use oci_client::RegistryOperation;
use oci_client::manifest::{OciDescriptor, OciImageManifest, OciManifest};

use super::client::Session;
use super::target::Target;
use super::transfer;
use crate::registry::Options;
use crate::registry::cache;
use crate::registry::docker::{MAX_CONFIG, host_arch};
use crate::registry::error::{RegistryError, Result};
use crate::registry::protocol::DockerParts;
use crate::registry::uri::Transport;

/// Layer media types: OCI's and Docker's, uncompressed, gzip or zstd.
const LAYER_TYPES: [&str; 5] = [
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar",
];

/// The session and the image manifest `uri` names for the wanted platform, with the
/// manifest's digest.
fn resolve(uri: &Target, opts: &Options) -> Result<(Session, OciImageManifest, String)> {
    if uri.transport != Transport::Docker {
        return Err(RegistryError::Uri {
            uri: uri.text.clone(),
            why: "not a docker:// image".into(),
        });
    }
    let arch = opts.arch.clone().unwrap_or_else(|| host_arch().to_string());
    if arch.is_empty()
        || !arch
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        return Err(RegistryError::Uri {
            uri: uri.text.clone(),
            why: format!(
                "--arch {:?}: an architecture is a name like amd64 or arm64",
                crate::registry::error::printable(&arch)
            ),
        });
    }
    let mut s = Session::open(&uri.reference, opts, RegistryOperation::Pull)?;
    let content = |why: String| RegistryError::Content {
        reference: uri.text.clone(),
        why,
    };
    let (top, top_digest) = s.manifest(&s.reference)?;
    let (manifest, manifest_digest) = match top {
        OciManifest::Image(m) => (m, top_digest),
        OciManifest::ImageIndex(index) => {
            let entry = index.manifests.iter().find(|e| {
                e.platform.as_ref().is_some_and(|p| {
                    p.os.to_string() == "linux" && p.architecture.to_string() == arch
                })
            });
            let Some(entry) = entry else {
                let have: Vec<String> = index
                    .manifests
                    .iter()
                    .filter_map(|e| e.platform.as_ref())
                    .map(|p| format!("{}/{}", p.os, p.architecture))
                    .map(|t| crate::registry::error::printable(&t))
                    .collect();
                return Err(content(format!(
                    "no linux/{arch} image in the index (it has {}); `veil pull` and `veil build` take --arch",
                    if have.is_empty() {
                        "none".into()
                    } else {
                        have.join(", ")
                    }
                )));
            };
            let digest = entry.digest.clone();
            s.reference = uri.reference.clone_with_digest(digest.clone());
            let (m, _) = s.manifest(&s.reference)?;
            match m {
                OciManifest::Image(m) => (m, digest),
                OciManifest::ImageIndex(_) => {
                    return Err(content("an image index inside an image index".into()));
                }
            }
        }
    };
    Ok((s, manifest, manifest_digest))
}

/// The digest of the image manifest `uri` names for the wanted platform: what a SIF
/// built from it is cached under.
pub fn manifest_digest(uri: &Target, opts: &Options) -> Result<String> {
    Ok(resolve(uri, opts)?.2)
}

/// Downloads what `uri` names (layers found in the cache are not downloaded again).
pub fn fetch(uri: &Target, opts: &Options) -> Result<DockerParts> {
    let (s, manifest, manifest_digest) = resolve(uri, opts)?;
    let content = |why: String| RegistryError::Content {
        reference: uri.text.clone(),
        why,
    };
    if manifest.layers.is_empty() {
        return Err(content("the image has no layers".into()));
    }
    let (config_path, config) = fetch_config(&s, &manifest.config, uri)?;
    if let Some(want) = &opts.arch {
        let have = serde_json::from_slice::<serde_json::Value>(&config)
            .ok()
            .and_then(|c| c.get("architecture")?.as_str().map(str::to_string));
        if let Some(have) = have.filter(|h| h != want) {
            return Err(content(format!(
                "the image is for {}, not {want} (--arch)",
                crate::registry::error::printable(&have)
            )));
        }
    }
    let dir = cache::kind_dir("blob")?;
    let mut layers = Vec::with_capacity(manifest.layers.len());
    for layer in &manifest.layers {
        if !LAYER_TYPES.contains(&layer.media_type.as_str()) {
            return Err(content(format!(
                "layer {} is of type {:?}, which is not a file-system layer veil can unpack",
                layer.digest, layer.media_type
            )));
        }
        layers.push(fetch_blob(&s, layer, &dir)?);
    }
    Ok(DockerParts {
        manifest_digest,
        config: config_path,
        layers,
    })
}

/// The image configuration, small and checked by digest.
fn fetch_config(s: &Session, desc: &OciDescriptor, uri: &Target) -> Result<(PathBuf, Vec<u8>)> {
    if !(0..=MAX_CONFIG).contains(&desc.size) {
        return Err(RegistryError::Content {
            reference: uri.text.clone(),
            why: format!("an image configuration of {} bytes", desc.size),
        });
    }
    // Through the cache like a layer: streamed, never past its declared size,
    // checked by digest.
    let path = fetch_blob(s, desc, &cache::kind_dir("blob")?)?;
    let config = std::fs::read(&path).map_err(|e| RegistryError::io("reading", &path, e))?;
    Ok((path, config))
}

/// A blob in the cache under its digest, downloaded when it is not there yet.
fn fetch_blob(s: &Session, desc: &OciDescriptor, dir: &std::path::Path) -> Result<PathBuf> {
    let hex = crate::registry::sha256_hex(&desc.digest).ok_or_else(|| RegistryError::Blob {
        reference: s.reference.whole(),
        digest: desc.digest.clone(),
        why: "only sha256 digests are supported".into(),
    })?;
    let entry = dir.join(format!("sha256:{hex}"));
    if cache::open_entry(&entry, Some(desc.size)).is_some() {
        return Ok(entry);
    }
    let tmp = transfer::download(s, desc, dir, &entry, 0o600)?;
    tmp.persist(&entry)
        .map_err(|e| RegistryError::io("renaming into", &entry, e))?;
    Ok(entry)
}
