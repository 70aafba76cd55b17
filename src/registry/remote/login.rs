//! `veil registry login`'s check of credentials.

#![forbid(unsafe_code)]

use crate::registry::Options;
use crate::registry::error::{RegistryError, Result};

use super::client;

/// Checks `creds` against `registry` without changing anything there: a request for
/// a manifest that most likely does not exist is answered "not found" only to a
/// client the registry accepts.
pub fn check_login(registry: &str, opts: &Options) -> Result<()> {
    let refused = |why: String| RegistryError::Content {
        reference: format!("logging in to {registry}"),
        why,
    };
    let Some(creds) = &opts.credentials else {
        return Err(refused("no credentials given".into()));
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
    let s = client::Session::open(&reference, opts, oci_client::RegistryOperation::Pull).map_err(
        |e| match e {
            RegistryError::Request { why, .. } => refused(why),
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
