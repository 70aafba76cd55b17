//! Registries: SIF images pushed to and pulled from OCI registries as ORAS artifacts
//! (`oras://`), credentials, and the cache that `run` and friends pull URIs into.
//!
//! The network is the ORAS project's client (`oci-client`), driven on a current-thread
//! runtime that exists only while a registry is used: a local run never starts it.
//! Every download lands in a temporary file beside its destination, checked against
//! its digest before it is renamed into place.

pub mod cache;
mod client;
pub mod credentials;
mod error;
mod interrupt;
pub mod oras;
mod transfer;
mod uri;

pub use client::Options;
pub use credentials::Credentials;
pub use error::{RegistryError, Result};
pub use uri::{ImageUri, Transport};

/// Checks `creds` against `registry` without changing anything there: a request for
/// a manifest that most likely does not exist is answered "not found" only to a
/// client the registry accepts.
pub fn check_login(registry: &str, creds: &Credentials, no_https: bool) -> Result<()> {
    let reference: oci_client::Reference = format!("{registry}/veil-login-check/probe:latest")
        .parse()
        .map_err(|e| RegistryError::Uri {
            uri: registry.to_string(),
            why: format!("not a registry name: {e}"),
        })?;
    let opts = Options {
        no_https,
        credentials: Some(creds.clone()),
        quiet: true,
    };
    let s = client::Session::open(&reference, &opts, oci_client::RegistryOperation::Pull)?;
    match s.retry("logging in to", || {
        s.client.fetch_manifest_digest(&s.reference, &s.auth)
    }) {
        Ok(_) => Ok(()),
        Err(RegistryError::Request { err, .. }) if not_found(&err) => Ok(()),
        Err(e) => Err(e),
    }
}

fn not_found(e: &oci_client::errors::OciDistributionError) -> bool {
    use oci_client::errors::{OciDistributionError as E, OciErrorCode};
    match e {
        E::ImageManifestNotFoundError(_) => true,
        E::RegistryError { envelope, .. } => envelope.errors.iter().all(|x| {
            matches!(
                x.code,
                OciErrorCode::ManifestUnknown | OciErrorCode::NameUnknown
            )
        }),
        E::ServerError { code, .. } => *code == 404,
        _ => false,
    }
}
