//! What `veil` and its registry helper, `veil-registry`, say to each other: one request
//! as JSON on the helper's standard input, one reply as JSON on its standard output.
//! Standard error stays the user's (progress bars, warnings).
//!
//! The request carries the registry password when one was given; both sides keep
//! its text in memory that is wiped when dropped.

#![forbid(unsafe_code)]

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use super::credentials::Credentials;
use super::keyserver::Keyserver;
use super::options::Options;

/// This build's version and the protocol's, as [`Envelope::version`] carries them
/// (two development builds of one version may speak differently).
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "/protocol-2");

/// The largest request read (they are a few hundred bytes, a pushed public key more).
pub const MAX_MESSAGE: u64 = 1 << 20;
/// The largest reply read: a keyserver's answer (at most
/// [`super::keyserver::MAX_KEY_ANSWER`]) as JSON text.
pub const MAX_REPLY: u64 = 16 << 20;

/// One piece of registry work.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    /// Push the SIF at `image` to an `oras://` URI.
    Push { image: PathBuf, uri: String },
    /// Pull an `oras://` SIF to `dest`.
    Pull {
        uri: String,
        dest: PathBuf,
        force: bool,
    },
    /// The `oras://` SIF in the cache, downloaded there when missing or stale.
    FetchSif { uri: String },
    /// The digest of the platform manifest a `docker://` URI names.
    DockerDigest { uri: String },
    /// A `docker://` image's configuration and layers, in the cache.
    DockerFetch { uri: String },
    /// Check credentials with a registry.
    Login { registry: String },
    /// The key with this fingerprint (40 hex digits) from a keyserver, as it answered.
    KeyGet {
        server: Keyserver,
        fingerprint: String,
    },
    /// A keyserver's index of the keys `text` finds (for a VKS server: the key itself).
    KeySearch { server: Keyserver, text: String },
    /// Publish an ASCII-armored public key on a keyserver.
    KeyPush { server: Keyserver, armored: String },
}

impl Request {
    /// The operation's name, for the helper's command line (what `ps` shows).
    pub fn name(&self) -> &'static str {
        match self {
            Request::Push { .. } => "push",
            Request::Pull { .. } => "pull",
            Request::FetchSif { .. } => "fetch-sif",
            Request::DockerDigest { .. } => "docker-digest",
            Request::DockerFetch { .. } => "docker-fetch",
            Request::Login { .. } => "login",
            Request::KeyGet { .. } => "key-get",
            Request::KeySearch { .. } => "key-search",
            Request::KeyPush { .. } => "key-push",
        }
    }
}

/// A request with the options it runs under.
#[derive(Serialize, Deserialize)]
pub struct Envelope {
    /// The sender's version: the two programs come from one build and must match.
    pub version: String,
    pub request: Request,
    pub options: WireOptions,
}

/// [`Options`] as they travel. The password is wiped when this is dropped.
#[derive(Default, Serialize, Deserialize)]
pub struct WireOptions {
    pub no_https: bool,
    pub quiet: bool,
    pub arch: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
}

impl Envelope {
    /// The request as JSON, in memory wiped when dropped. Its length is measured
    /// first, so the buffer is allocated once and never moved by growing: no copy of
    /// the password is left behind in freed memory.
    pub fn to_message(&self) -> serde_json::Result<Zeroizing<Vec<u8>>> {
        struct Count(usize);
        impl std::io::Write for Count {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0 += b.len();
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut n = Count(0);
        serde_json::to_writer(&mut n, self)?;
        let mut out = Zeroizing::new(Vec::with_capacity(n.0));
        serde_json::to_writer(&mut *out, self)?;
        Ok(out)
    }
}

impl std::fmt::Debug for Envelope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Envelope")
            .field("version", &self.version)
            .field("request", &self.request)
            .field("options", &self.options)
            .finish()
    }
}

impl std::fmt::Debug for WireOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WireOptions")
            .field("no_https", &self.no_https)
            .field("quiet", &self.quiet)
            .field("arch", &self.arch)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "(hidden)"))
            .finish()
    }
}

impl Drop for WireOptions {
    fn drop(&mut self) {
        if let Some(p) = &mut self.password {
            p.zeroize();
        }
    }
}

impl From<&Options> for WireOptions {
    fn from(o: &Options) -> Self {
        WireOptions {
            no_https: o.no_https,
            quiet: o.quiet,
            arch: o.arch.clone(),
            username: o.credentials.as_ref().map(|c| c.username.clone()),
            password: o.credentials.as_ref().map(|c| c.password.to_string()),
        }
    }
}

impl WireOptions {
    pub fn options(&self) -> Options {
        let credentials = match (&self.username, &self.password) {
            (Some(u), Some(p)) => Some(Credentials {
                username: u.clone(),
                password: Zeroizing::new(p.clone()),
            }),
            _ => None,
        };
        Options {
            no_https: self.no_https,
            credentials,
            quiet: self.quiet,
            arch: self.arch.clone(),
        }
    }
}

/// What a push or pull did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Transferred {
    /// The manifest's digest (the image as the registry knows it).
    pub manifest_digest: String,
    /// The SIF's digest and size.
    pub digest: String,
    pub size: u64,
    /// False when the registry had the SIF already (push).
    pub moved: bool,
}

/// A `docker://` image's parts, in the cache.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DockerParts {
    /// The manifest's digest (for an index, the chosen platform's manifest).
    pub manifest_digest: String,
    /// The image configuration's blob.
    pub config: PathBuf,
    /// The layers' blobs in order, bottom first.
    pub layers: Vec<PathBuf>,
}

/// The helper's answer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reply {
    Transferred(Transferred),
    Path(PathBuf),
    Digest(String),
    Docker(DockerParts),
    Done,
    /// A keyserver's answer (a key or an index), or `None` when it has nothing.
    Found(Option<String>),
    /// A keyserver's own words about a push, on one line.
    Pushed(String),
    /// The error, on one line.
    Error(String),
}
