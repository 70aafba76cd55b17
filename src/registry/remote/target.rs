//! An image URI checked against the whole reference grammar (the distribution
//! project's, as `oci-client` parses it): what the helper's requests name.

#![forbid(unsafe_code)]

use oci_client::Reference;

use crate::registry::error::{RegistryError, Result};
use crate::registry::uri::{ImageUri, Transport};

/// A URI and the reference it names.
#[derive(Debug, Clone)]
pub struct Target {
    pub transport: Transport,
    pub reference: Reference,
    /// The URI as the user wrote it, for messages.
    pub text: String,
}

impl Target {
    pub fn parse(s: &str) -> Result<Target> {
        let uri = ImageUri::parse(s)?;
        let reference: Reference = uri.name.parse().map_err(|e| RegistryError::Uri {
            uri: s.to_string(),
            why: format!("{e}"),
        })?;
        Ok(Target {
            transport: uri.transport,
            reference,
            text: uri.text,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oras_uris_name_their_registry_tag_or_digest() {
        let u = Target::parse("oras://127.0.0.1:5000/veil/app:v1").unwrap();
        assert_eq!(u.transport, Transport::Oras);
        assert_eq!(u.reference.registry(), "127.0.0.1:5000");
        assert_eq!(u.reference.repository(), "veil/app");
        assert_eq!(u.reference.tag(), Some("v1"));
        let d = format!("oras://reg.example/app@sha256:{}", "a".repeat(64));
        let u = Target::parse(&d).unwrap();
        assert_eq!(u.reference.digest().map(|d| d.len()), Some(71));
        // No tag: latest.
        let u = Target::parse("oras://reg.example/app").unwrap();
        assert_eq!(u.reference.tag(), Some("latest"));
    }

    #[test]
    fn references_outside_the_grammar_are_refused() {
        for uri in [
            "oras://reg.example/App:v1",
            "oras://reg.example/app@sha256:abc",
            "docker://alpine:bad:tag",
        ] {
            let e = Target::parse(uri).unwrap_err().to_string();
            assert!(e.starts_with(uri), "{uri}: {e}");
        }
    }

    #[test]
    fn docker_uris_default_to_the_hub_and_latest() {
        let u = Target::parse("docker://alpine").unwrap();
        assert_eq!(u.transport, Transport::Docker);
        assert_eq!(u.reference.repository(), "library/alpine");
        assert_eq!(u.reference.tag(), Some("latest"));
        let u = Target::parse("docker://localhost:5000/a/b:1").unwrap();
        assert_eq!(u.reference.registry(), "localhost:5000");
    }
}
