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
pub mod docker;
mod error;
mod interrupt;
pub mod oras;
mod transfer;
mod uri;

pub use client::Options;
pub use credentials::Credentials;
pub use error::{RegistryError, Result};
pub use interrupt::remove_pending as remove_pending_download;
pub use uri::{ImageUri, Transport};

/// Checks `creds` against `registry` without changing anything there: a request for
/// a manifest that most likely does not exist is answered "not found" only to a
/// client the registry accepts.
pub fn check_login(registry: &str, creds: &Credentials, no_https: bool) -> Result<()> {
    let refused = |why: String| RegistryError::Content {
        reference: format!("logging in to {registry}"),
        why,
    };
    if creds.password.is_empty() {
        return Err(refused("the password is empty".into()));
    }
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
        arch: None,
    };
    let s = client::Session::open(&reference, &opts, oci_client::RegistryOperation::Pull).map_err(
        |e| match e {
            RegistryError::Request { err, .. } => refused(error::describe_request(&err)),
            e => e,
        },
    )?;
    if !s.asks_for_credentials()? {
        return Err(refused(
            "the registry answers without credentials; there is nothing to log in to".into(),
        ));
    }
    match s.manifest(&reference) {
        Ok(_) => Ok(()),
        Err(RegistryError::Content { why, .. }) if why == "not found in the registry" => Ok(()),
        Err(RegistryError::Content { why, .. }) => Err(refused(why)),
        Err(e) => Err(e),
    }
}
