//! Registries: SIF images pushed to and pulled from OCI registries as ORAS artifacts
//! (`oras://`), container images (`docker://`), credentials, and the cache that `run`
//! and friends pull URIs into.
//!
//! The network work is done by the registry helper, `veil-registry` ([`remote`], run
//! through [`helper`]), with the ORAS project's client (`oci-client`). What `veil`
//! itself keeps is what needs no network: URIs, options and credentials, the cache's
//! layout, and the errors. Every download lands in a temporary file beside its
//! destination, checked against its digest before it is renamed into place.

pub mod cache;
pub mod credentials;
pub mod destination;
pub mod docker;
mod error;
pub mod helper;
pub mod keyserver;
mod options;
pub mod protocol;
pub mod remote;
mod uri;

use std::fs::File;
use std::path::{Path, PathBuf};

pub use credentials::Credentials;
pub use error::{RegistryError, Result, printable};
pub use options::Options;
pub use protocol::Transferred;
pub use uri::{ImageUri, Transport};

// (The helper runs in this process's working directory: relative paths stay as the
// user wrote them, in its messages too.)
use helper::{call, unexpected};
use protocol::{Reply, Request};

/// The hex of a `sha256:` digest; other algorithms are refused.
pub(crate) fn sha256_hex(digest: &str) -> Option<&str> {
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
    .then_some(hex)
}

/// Pushes the SIF at `path` to the `oras://` URI `uri`.
pub fn push(path: &Path, uri: &ImageUri, opts: &Options) -> Result<Transferred> {
    let request = Request::Push {
        image: path.to_path_buf(),
        uri: uri.text.clone(),
    };
    match call(request, opts)? {
        Reply::Transferred(t) => Ok(t),
        r => Err(unexpected(&r)),
    }
}

/// Pulls the `oras://` SIF `uri` to `dest` (refused when it exists, unless `force`).
pub fn pull(uri: &ImageUri, dest: &Path, force: bool, opts: &Options) -> Result<Transferred> {
    destination::check(dest, force)?;
    let request = Request::Pull {
        uri: uri.text.clone(),
        dest: dest.to_path_buf(),
        force,
    };
    match call(request, opts)? {
        Reply::Transferred(t) => Ok(t),
        r => Err(unexpected(&r)),
    }
}

/// The `oras://` SIF `uri` as an open file of the cache: found there when it holds the
/// image the registry names now, else downloaded into it. The descriptor is what the
/// caller reads; the path is for messages.
pub fn fetch_sif(uri: &ImageUri, opts: &Options) -> Result<(PathBuf, File)> {
    let path = match call(
        Request::FetchSif {
            uri: uri.text.clone(),
        },
        opts,
    )? {
        Reply::Path(p) => p,
        r => return Err(unexpected(&r)),
    };
    let file = cache::entry_of("oras", &path)?;
    Ok((path, file))
}

/// The digest of the platform manifest the `docker://` URI `uri` names.
pub fn docker_digest(uri: &ImageUri, opts: &Options) -> Result<String> {
    let request = Request::DockerDigest {
        uri: uri.text.clone(),
    };
    match call(request, opts)? {
        Reply::Digest(d) if sha256_hex(&d).is_some() => Ok(d),
        r => Err(unexpected(&r)),
    }
}

/// Downloads what the `docker://` URI `uri` names (layers found in the cache are not
/// downloaded again).
pub fn docker_fetch(uri: &ImageUri, opts: &Options) -> Result<docker::Image> {
    let request = Request::DockerFetch {
        uri: uri.text.clone(),
    };
    let parts = match call(request, opts)? {
        Reply::Docker(p) => p,
        r => return Err(unexpected(&r)),
    };
    docker::Image::from_parts(parts)
}

/// Checks `creds` against `registry` without changing anything there.
pub fn check_login(registry: &str, creds: &Credentials, no_https: bool) -> Result<()> {
    let opts = Options {
        no_https,
        credentials: Some(creds.clone()),
        quiet: true,
        arch: None,
    };
    let request = Request::Login {
        registry: registry.to_string(),
    };
    match call(request, &opts)? {
        Reply::Done => Ok(()),
        r => Err(unexpected(&r)),
    }
}
