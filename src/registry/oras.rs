//! SIF images as ORAS artifacts, in the layout Apptainer writes and reads: an OCI image
//! manifest whose config is `{}` of type `application/vnd.sylabs.sif.config.v1+json`
//! and whose one layer is the SIF, of type `application/vnd.sylabs.sif.layer.v1.sif`,
//! titled with the file's name. Encrypted and signed SIFs travel as they are.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use oci_client::RegistryOperation;
use oci_client::manifest::{OCI_IMAGE_MEDIA_TYPE, OciDescriptor, OciImageManifest, OciManifest};

use super::client::{Options, Session};
use super::error::{RegistryError, Result};
use super::transfer;
use super::uri::{ImageUri, Transport};

pub const SIF_CONFIG_MEDIA_TYPE: &str = "application/vnd.sylabs.sif.config.v1+json";
pub const SIF_LAYER_MEDIA_TYPE: &str = "application/vnd.sylabs.sif.layer.v1.sif";
/// The layer type of images pushed by early SingularityCE releases (sic).
const SIF_LAYER_MEDIA_TYPE_OLD: &str = "appliciation/vnd.sylabs.sif.layer.tar";
const TITLE: &str = "org.opencontainers.image.title";
const EMPTY_CONFIG: &[u8] = b"{}";

/// What a push or pull did.
#[derive(Debug, Clone)]
pub struct Transferred {
    /// The manifest's digest (the image as the registry knows it).
    pub manifest_digest: String,
    /// The SIF's digest and size.
    pub digest: String,
    pub size: u64,
    /// False when the registry had the SIF already (push) or the cache did (fetch).
    pub moved: bool,
}

fn oras_uri(uri: &ImageUri) -> Result<()> {
    if uri.transport != Transport::Oras {
        return Err(RegistryError::Uri {
            uri: uri.text.clone(),
            why: "only oras:// URIs carry SIF images for push".into(),
        });
    }
    Ok(())
}

/// Pushes the SIF at `path` to `uri`.
pub fn push(path: &Path, uri: &ImageUri, opts: &Options) -> Result<Transferred> {
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
pub(crate) fn resolve(s: &Session, uri: &ImageUri) -> Result<(OciDescriptor, String)> {
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
pub fn pull(uri: &ImageUri, dest: &Path, force: bool, opts: &Options) -> Result<Transferred> {
    oras_uri(uri)?;
    check_destination(dest, force)?;
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

/// A destination a download can end in: a file name in an existing directory, not a
/// directory, and not an existing file unless `force`.
pub(crate) fn check_destination(dest: &Path, force: bool) -> Result<()> {
    let bad = |why: &str| RegistryError::Content {
        reference: dest.display().to_string(),
        why: why.into(),
    };
    if dest.as_os_str().is_empty() || dest.file_name().is_none() {
        return Err(bad("not a file name"));
    }
    match dest.symlink_metadata() {
        Ok(m) if m.is_dir() => return Err(bad("is a directory")),
        Ok(_) if !force => return Err(RegistryError::Exists(dest.to_path_buf())),
        _ => {}
    }
    let dir = crate::fsutil::parent_dir(dest);
    if !dir.is_dir() {
        return Err(RegistryError::Content {
            reference: dir.display().to_string(),
            why: "no such directory".into(),
        });
    }
    Ok(())
}

/// A downloaded artifact must be a SIF before anything uses it as one.
pub(crate) fn check_sif(path: &Path, uri: &ImageUri) -> Result<()> {
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

/// The default file name for a pull: the repository's last component and `.sif`, as
/// Apptainer names it (`oras://host/a/app:v1` → `app_v1.sif`).
pub fn default_name(uri: &ImageUri) -> PathBuf {
    let repo = uri.reference.repository();
    let base = repo.rsplit('/').next().unwrap_or(repo);
    match uri.reference.tag() {
        Some(t) => PathBuf::from(format!("{base}_{t}.sif")),
        None => PathBuf::from(format!("{base}.sif")),
    }
}
