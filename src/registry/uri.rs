//! Image URIs: `oras://REGISTRY/REPOSITORY[:TAG|@DIGEST]` for SIF artifacts and
//! `docker://[REGISTRY/]REPOSITORY[:TAG|@DIGEST]` for OCI and Docker images.
//!
//! Here a URI is split only as far as `veil` needs it (its transport, the default file
//! name of a pull); the registry helper checks the whole reference grammar
//! (`registry/remote/target.rs`), so `veil` links no parser for it.

#![forbid(unsafe_code)]

use std::path::PathBuf;

use super::error::{RegistryError, Result};

/// What a URI names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A SIF pushed as an ORAS artifact (Apptainer's `oras://`).
    Oras,
    /// An OCI or Docker image (`docker://`).
    Docker,
}

/// An image URI.
#[derive(Debug, Clone)]
pub struct ImageUri {
    pub transport: Transport,
    /// What follows the scheme: `[REGISTRY/]REPOSITORY[:TAG][@DIGEST]`.
    pub name: String,
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
        if rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(err(
                "an image reference has no spaces or control characters",
            ));
        }
        if transport == Transport::Oras && !has_registry(rest) {
            // Docker Hub's default does not apply to ORAS artifacts: the registry must
            // be named, as Apptainer requires.
            return Err(err(
                "an oras:// URI must name its registry (oras://REGISTRY/REPOSITORY:TAG)",
            ));
        }
        Ok(ImageUri {
            transport,
            name: rest.to_string(),
            text: s.to_string(),
        })
    }

    /// The repository (with its registry, if named), the tag if any, and the digest if
    /// any.
    fn parts(&self) -> (&str, Option<&str>, Option<&str>) {
        let (rest, digest) = match self.name.split_once('@') {
            Some((r, d)) => (r, Some(d)),
            None => (self.name.as_str(), None),
        };
        // A tag follows the last component; a colon before the last slash is a port.
        let last = rest.rfind('/').map_or(0, |i| i + 1);
        match rest[last..].rfind(':') {
            Some(i) => (&rest[..last + i], Some(&rest[last + i + 1..]), digest),
            None => (rest, None, digest),
        }
    }

    /// The default file name for a pull: the repository's last component and `.sif`,
    /// with the tag (`latest` when neither a tag nor a digest is given), as Apptainer
    /// names it (`oras://host/a/app:v1` → `app_v1.sif`).
    pub fn default_file_name(&self) -> PathBuf {
        let (repo, tag, digest) = self.parts();
        let base = repo.rsplit('/').next().unwrap_or(repo);
        match (tag, digest) {
            (Some(t), _) => PathBuf::from(format!("{base}_{t}.sif")),
            (None, None) => PathBuf::from(format!("{base}_latest.sif")),
            (None, Some(_)) => PathBuf::from(format!("{base}.sif")),
        }
    }

    /// This URI pinned to `digest`: the same repository, the manifest by digest.
    pub fn with_digest(&self, digest: &str) -> String {
        let scheme = match self.transport {
            Transport::Oras => "oras",
            Transport::Docker => "docker",
        };
        format!("{scheme}://{}@{digest}", self.parts().0)
    }
}

/// Whether the first component of `name` is a registry (has a dot or a port, or is
/// `localhost`), as the distribution reference grammar decides.
pub(crate) fn has_registry(name: &str) -> bool {
    match name.split_once('/') {
        Some((first, _)) => first.contains('.') || first.contains(':') || first == "localhost",
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_split_into_transport_and_name() {
        let u = ImageUri::parse("oras://127.0.0.1:5000/veil/app:v1").unwrap();
        assert_eq!(u.transport, Transport::Oras);
        assert_eq!(u.name, "127.0.0.1:5000/veil/app:v1");
        let u = ImageUri::parse("docker:///alpine").unwrap();
        assert_eq!(u.transport, Transport::Docker);
        assert_eq!(u.name, "alpine");
    }

    #[test]
    fn bad_uris_are_refused_with_the_reason() {
        for (uri, why) in [
            ("oras://app:v1", "must name its registry"),
            ("oras://", "no image"),
            ("docker://", "no image"),
            ("http://x/y", "not an image URI"),
            ("docker://a b", "no spaces"),
        ] {
            let e = ImageUri::parse(uri).unwrap_err().to_string();
            assert!(e.starts_with(uri) && e.contains(why), "{uri}: {e}");
        }
    }

    #[test]
    fn pulls_are_named_for_the_repository_and_tag() {
        let d = format!("sha256:{}", "a".repeat(64));
        for (uri, name) in [
            ("oras://127.0.0.1:5000/veil/app:v1", "app_v1.sif"),
            ("oras://127.0.0.1:5000/app", "app_latest.sif"),
            (&format!("oras://reg.example/app@{d}"), "app.sif"),
            (&format!("oras://reg.example/app:v2@{d}"), "app_v2.sif"),
            ("docker://alpine", "alpine_latest.sif"),
        ] {
            let u = ImageUri::parse(uri).unwrap();
            assert_eq!(u.default_file_name(), PathBuf::from(name), "{uri}");
        }
    }

    #[test]
    fn pinning_keeps_the_repository_and_drops_the_tag() {
        let d = format!("sha256:{}", "b".repeat(64));
        let u = ImageUri::parse("docker://localhost:5000/a/b:1").unwrap();
        assert_eq!(
            u.with_digest(&d),
            format!("docker://localhost:5000/a/b@{d}")
        );
        let u = ImageUri::parse("docker://alpine").unwrap();
        assert_eq!(u.with_digest(&d), format!("docker://alpine@{d}"));
    }
}
