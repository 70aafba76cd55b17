//! SIF images as ORAS artifacts, in the layout Apptainer writes and reads: an OCI image
//! manifest whose config is `{}` of type `application/vnd.sylabs.sif.config.v1+json`
//! and whose one layer is the SIF, of type `application/vnd.sylabs.sif.layer.v1.sif`,
//! titled with the file's name. Encrypted and signed SIFs travel as they are.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use oci_client::RegistryOperation;
use oci_client::manifest::{OCI_IMAGE_MEDIA_TYPE, OciDescriptor, OciImageManifest, OciManifest};

use super::client::Session;
use super::target::Target;
use super::transfer;
use crate::registry::Options;
use crate::registry::cache;
use crate::registry::error::{RegistryError, Result};
use crate::registry::protocol::Transferred;
use crate::registry::uri::Transport;

pub const SIF_CONFIG_MEDIA_TYPE: &str = "application/vnd.sylabs.sif.config.v1+json";
pub const SIF_LAYER_MEDIA_TYPE: &str = "application/vnd.sylabs.sif.layer.v1.sif";
/// The layer type of images pushed by early SingularityCE releases (sic).
const SIF_LAYER_MEDIA_TYPE_OLD: &str = "appliciation/vnd.sylabs.sif.layer.tar";
const TITLE: &str = "org.opencontainers.image.title";
const EMPTY_CONFIG: &[u8] = b"{}";

fn oras_uri(uri: &Target) -> Result<()> {
    if uri.transport != Transport::Oras {
        return Err(RegistryError::Uri {
            uri: uri.text.clone(),
            why: "only oras:// URIs carry SIF images for push".into(),
        });
    }
    Ok(())
}

/// Pushes the SIF at `path` to `uri`.
pub fn push(path: &Path, uri: &Target, opts: &Options) -> Result<Transferred> {
    oras_uri(uri)?;
    // Opened once, without blocking on a FIFO; hashed and sent from that descriptor.
    let mut file =
        crate::fsutil::open_nonblocking(path).map_err(|e| RegistryError::io("opening", path, e))?;
    if !file.metadata().is_ok_and(|m| m.is_file()) {
        return Err(RegistryError::Content {
            reference: path.display().to_string(),
            why: "not a regular file".into(),
        });
    }
    // Only SIF files: what Apptainer pulls from here it will run as one.
    let clone = file
        .try_clone()
        .map_err(|e| RegistryError::io("reading", path, e))?;
    let src = veil_fusefs::source::FileSource::new(clone)
        .map_err(|e| RegistryError::io("reading", path, e))?;
    crate::sif::Sif::open(std::sync::Arc::new(src)).map_err(|source| RegistryError::NotSif {
        reference: path.display().to_string(),
        source,
    })?;
    let (digest, size) = transfer::file_digest_of(&mut file, path)?;
    let s = Session::open(&uri.reference, opts, RegistryOperation::Push)?;
    let moved = transfer::upload_file(&s, &file, path, &digest, size)?;
    let config_digest = format!("sha256:{}", transfer::hex(&sha256(EMPTY_CONFIG)));
    transfer::upload_bytes(&s, EMPTY_CONFIG, &config_digest)?;
    let title = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image.sif".into());
    let manifest = OciImageManifest {
        schema_version: 2,
        media_type: Some(OCI_IMAGE_MEDIA_TYPE.to_string()),
        config: OciDescriptor {
            media_type: SIF_CONFIG_MEDIA_TYPE.to_string(),
            digest: config_digest,
            size: EMPTY_CONFIG.len() as i64,
            ..Default::default()
        },
        layers: vec![OciDescriptor {
            media_type: SIF_LAYER_MEDIA_TYPE.to_string(),
            digest: digest.clone(),
            size: size as i64,
            annotations: Some(BTreeMap::from([(TITLE.to_string(), title)])),
            ..Default::default()
        }],
        ..Default::default()
    };
    let manifest = OciManifest::Image(manifest);
    s.retry("pushing the manifest of", || {
        s.client.push_manifest(&s.reference, &manifest)
    })?;
    let manifest_digest = s
        .retry("checking", || {
            s.client.fetch_manifest_digest(&s.reference, &s.auth)
        })
        .unwrap_or_default();
    Ok(Transferred {
        manifest_digest,
        digest,
        size,
        moved,
    })
}

/// The SIF layer of the artifact at `uri`, and the manifest's digest.
pub(crate) fn resolve(s: &Session, uri: &Target) -> Result<(OciDescriptor, String)> {
    let content = |why: String| RegistryError::Content {
        reference: uri.text.clone(),
        why,
    };
    let (manifest, manifest_digest) = match s.manifest(&s.reference)? {
        (OciManifest::Image(m), d) => (m, d),
        (OciManifest::ImageIndex(_), _) => {
            return Err(content(
                "not a SIF artifact but an image index (use docker:// for container images)".into(),
            ));
        }
    };
    let [layer] = manifest.layers.as_slice() else {
        return Err(content(format!(
            "not a SIF artifact: the manifest has {} layers, a SIF artifact has one",
            manifest.layers.len()
        )));
    };
    if layer.media_type != SIF_LAYER_MEDIA_TYPE && layer.media_type != SIF_LAYER_MEDIA_TYPE_OLD {
        return Err(content(format!(
            "not a SIF artifact: its layer is of type {:?} (use docker:// for container images)",
            layer.media_type
        )));
    }
    Ok((layer.clone(), manifest_digest))
}

/// Pulls the SIF at `uri` to `dest` (refused when it exists, unless `force`).
pub fn pull(uri: &Target, dest: &Path, force: bool, opts: &Options) -> Result<Transferred> {
    oras_uri(uri)?;
    crate::registry::destination::check(dest, force)?;
    let s = Session::open(&uri.reference, opts, RegistryOperation::Pull)?;
    let (layer, manifest_digest) = resolve(&s, uri)?;
    let tmp = transfer::download(&s, &layer, crate::fsutil::parent_dir(dest), dest, 0o644)?;
    check_sif(tmp.path(), uri)?;
    if force {
        tmp.persist(dest)
    } else {
        // A file that appeared at the destination meanwhile is not replaced either.
        tmp.persist_new(dest)
    }
    .map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => RegistryError::Exists(dest.to_path_buf()),
        _ => RegistryError::io("renaming into", dest, e),
    })?;
    Ok(Transferred {
        manifest_digest,
        digest: layer.digest.clone(),
        size: layer.size as u64,
        moved: true,
    })
}

/// A downloaded artifact must be a SIF before anything uses it as one.
pub(crate) fn check_sif(path: &Path, uri: &Target) -> Result<()> {
    let file = std::fs::File::open(path).map_err(|e| RegistryError::io("opening", path, e))?;
    let src = veil_fusefs::source::FileSource::new(file)
        .map_err(|e| RegistryError::io("reading", path, e))?;
    crate::sif::Sif::open(std::sync::Arc::new(src)).map_err(|source| RegistryError::NotSif {
        reference: uri.text.clone(),
        source,
    })?;
    Ok(())
}

fn sha256(data: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(data).to_vec()
}

/// The SIF at `uri` in the cache: found there when it holds the
/// image the registry names now, else downloaded into it.
pub fn fetch_to_cache(uri: &Target, opts: &Options) -> Result<PathBuf> {
    if uri.transport != Transport::Oras {
        return Err(RegistryError::Uri {
            uri: uri.text.clone(),
            why: "docker:// images are run with run, exec, shell or test, or made into a SIF with `veil pull`".into(),
        });
    }
    let s = Session::open(&uri.reference, opts, RegistryOperation::Pull)?;
    let (layer, _) = resolve(&s, uri)?;
    let hex = crate::registry::sha256_hex(&layer.digest).ok_or_else(|| RegistryError::Content {
        reference: uri.text.clone(),
        why: format!("unsupported digest {:?}", layer.digest),
    })?;
    let dir = cache::kind_dir("oras")?;
    let entry = dir.join(format!("sha256:{hex}"));
    if let Some(f) = cache::open_entry(&entry, Some(layer.size)) {
        drop(f);
        crate::support::diag::debug_note(&format!("registry: {} from the cache", uri.text));
        return Ok(entry);
    }
    let tmp = transfer::download(&s, &layer, &dir, &entry, 0o600)?;
    check_sif(tmp.path(), uri)?;
    tmp.persist(&entry)
        .map_err(|e| RegistryError::io("renaming into", &entry, e))?;
    Ok(entry)
}
