//! Image URIs: `oras://REGISTRY/REPOSITORY[:TAG|@DIGEST]` for SIF artifacts and
//! `docker://[REGISTRY/]REPOSITORY[:TAG|@DIGEST]` for OCI and Docker images.

#![forbid(unsafe_code)]

use oci_client::Reference;

use super::error::{RegistryError, Result};

/// What a URI names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A SIF pushed as an ORAS artifact (Apptainer's `oras://`).
    Oras,
    /// An OCI or Docker image (`docker://`).
    Docker,
}

/// A parsed image URI.
#[derive(Debug, Clone)]
pub struct ImageUri {
    pub transport: Transport,
    pub reference: Reference,
    /// The URI as the user wrote it, for messages.
    pub text: String,
}

impl ImageUri {
    /// Whether `s` is a URI this module handles (rather than a local path).
    pub fn is_uri(s: &str) -> bool {
        s.starts_with("oras://") || s.starts_with("docker://")
    }

    pub fn parse(s: &str) -> Result<ImageUri> {
        let err = |why: &str| RegistryError::Uri {
            uri: s.to_string(),
            why: why.to_string(),
        };
        let (transport, rest) = if let Some(r) = s.strip_prefix("oras://") {
            (Transport::Oras, r)
        } else if let Some(r) = s.strip_prefix("docker://") {
            (Transport::Docker, r)
        } else {
            return Err(err("not an image URI (oras://… or docker://…)"));
        };
        // `docker://` URIs of Apptainer's may start with `//` after the scheme.
        let rest = rest.trim_start_matches('/');
        if rest.is_empty() {
            return Err(err("no image named after the scheme"));
        }
        if transport == Transport::Oras && !has_registry(rest) {
            // Docker Hub's default does not apply to ORAS artifacts: the registry must
            // be named, as Apptainer requires.
            return Err(err(
                "an oras:// URI must name its registry (oras://REGISTRY/REPOSITORY:TAG)",
            ));
        }
        let reference: Reference = rest.parse().map_err(|e| err(&format!("{e}")))?;
        Ok(ImageUri {
            transport,
            reference,
            text: s.to_string(),
        })
    }
}

/// Whether the first component of `name` is a registry (has a dot or a port, or is
/// `localhost`), as the distribution reference grammar decides.
fn has_registry(name: &str) -> bool {
    match name.split_once('/') {
        Some((first, _)) => first.contains('.') || first.contains(':') || first == "localhost",
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oras_uris_name_their_registry_tag_or_digest() {
        let u = ImageUri::parse("oras://127.0.0.1:5000/veil/app:v1").unwrap();
        assert_eq!(u.transport, Transport::Oras);
        assert_eq!(u.reference.registry(), "127.0.0.1:5000");
        assert_eq!(u.reference.repository(), "veil/app");
        assert_eq!(u.reference.tag(), Some("v1"));
        let d = format!("oras://reg.example/app@sha256:{}", "a".repeat(64));
        let u = ImageUri::parse(&d).unwrap();
        assert_eq!(u.reference.digest().map(|d| d.len()), Some(71));
        // No tag: latest.
        let u = ImageUri::parse("oras://reg.example/app").unwrap();
        assert_eq!(u.reference.tag(), Some("latest"));
    }

    #[test]
    fn bad_uris_are_refused_with_the_reason() {
        for (uri, why) in [
            ("oras://app:v1", "must name its registry"),
            ("oras://", "no image"),
            ("docker://", "no image"),
            ("http://x/y", "not an image URI"),
            ("oras://reg.example/App:v1", ""),
            ("oras://reg.example/app@sha256:abc", ""),
        ] {
            let e = ImageUri::parse(uri).unwrap_err().to_string();
            assert!(e.starts_with(uri) && e.contains(why), "{uri}: {e}");
        }
    }

    #[test]
    fn docker_uris_default_to_the_hub_and_latest() {
        let u = ImageUri::parse("docker://alpine").unwrap();
        assert_eq!(u.transport, Transport::Docker);
        assert_eq!(u.reference.repository(), "library/alpine");
        assert_eq!(u.reference.tag(), Some("latest"));
        let u = ImageUri::parse("docker://localhost:5000/a/b:1").unwrap();
        assert_eq!(u.reference.registry(), "localhost:5000");
    }
}
