//! The registry layer's one error type: which registry or file, what was being done.

#![forbid(unsafe_code)]

use std::path::PathBuf;

/// Everything that can go wrong talking to a registry or keeping its images.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A URI that is not `oras://…` or `docker://…`, or whose reference does not parse.
    #[error("{uri}: {why}")]
    Uri { uri: String, why: String },
    /// The client could not be set up (TLS roots, runtime).
    #[error("setting up the registry client: {0}")]
    Setup(String),
    /// A request to the registry failed; `what` says which. The client's error is
    /// kept but not chained: `describe` already says what of it a user can act on.
    #[error("{what} {reference}: {}", describe(err))]
    Request {
        what: &'static str,
        reference: String,
        err: oci_client::errors::OciDistributionError,
    },
    /// The registry answered with something the format does not allow.
    #[error("{reference}: {why}")]
    Content { reference: String, why: String },
    /// A downloaded blob is not what its descriptor says.
    #[error("{reference}: blob {digest}: {why}")]
    Blob {
        reference: String,
        digest: String,
        why: String,
    },
    /// A local file or directory.
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A credentials file that cannot be read.
    #[error("{}: {why}", path.display())]
    Credentials { path: PathBuf, why: String },
    /// The pulled file is not a SIF image.
    #[error("{reference}: the artifact is not a SIF image: {source}")]
    NotSif {
        reference: String,
        #[source]
        source: crate::sif::SifError,
    },
    /// A cache directory that cannot be trusted.
    #[error("{}: {why}", path.display())]
    Cache { path: PathBuf, why: String },
    /// A local file operation whose error already names the path.
    #[error("{0}")]
    Local(std::io::Error),
    /// The destination exists and --force was not given.
    #[error("{} exists (use --force to overwrite)", .0.display())]
    Exists(PathBuf),
}

pub type Result<T> = std::result::Result<T, RegistryError>;

impl RegistryError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        RegistryError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// The client's errors in one line, saying what a user can act on: a refused login, a
/// missing image, an unreachable registry.
pub(crate) fn describe_request(e: &oci_client::errors::OciDistributionError) -> String {
    describe(e)
}

fn describe(e: &oci_client::errors::OciDistributionError) -> String {
    use oci_client::errors::OciDistributionError as E;
    match e {
        E::AuthenticationFailure(m) => format!("authentication failed: {}", one_line(m)),
        E::UnauthorizedError { .. } => "not authorized (wrong or missing credentials)".into(),
        E::ImageManifestNotFoundError(_) => "not found in the registry".into(),
        E::RequestError(r) if r.status().is_some_and(|s| s.as_u16() == 401) => {
            "not authorized (wrong or missing credentials)".into()
        }
        E::RequestError(r) if r.status().is_some_and(|s| s.as_u16() == 403) => {
            "access denied (the credentials do not allow this)".into()
        }
        E::RequestError(r) => request_text(r),
        E::ServerError { code, message, .. } => {
            format!("the registry answered {code}: {}", one_line(message))
        }
        E::RegistryError { envelope, .. } => {
            use oci_client::errors::OciErrorCode as C;
            let errs: Vec<String> = envelope
                .errors
                .iter()
                .map(|e| match e.code {
                    C::ManifestUnknown | C::NameUnknown => "not found in the registry".into(),
                    C::BlobUnknown => "a blob the manifest names is not in the registry".into(),
                    C::Unauthorized => "not authorized (wrong or missing credentials)".into(),
                    C::Denied => "access denied (the credentials do not allow this)".into(),
                    ref c => one_line(&format!("{c:?}: {}", e.message)),
                })
                .collect();
            errs.join("; ")
        }
        other => one_line(&other.to_string()),
    }
}

/// The first line of a message, without trailing space, control characters escaped.
fn one_line(s: &str) -> String {
    printable(s.lines().next().unwrap_or("").trim_end())
}

/// `s` with control characters (a registry's text could hold terminal escapes)
/// written as escapes.
pub(crate) fn printable(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

/// A request error and its causes on one line, with a hint where the cause is
/// common: TLS spoken to a plain-HTTP registry, nothing listening.
pub(crate) fn request_text(r: &reqwest::Error) -> String {
    let mut msg = r.to_string();
    let mut src = std::error::Error::source(r);
    while let Some(s) = src {
        let t = s.to_string();
        if !msg.contains(&t) {
            msg = format!("{msg}: {t}");
        }
        src = s.source();
    }
    if msg.contains("InvalidContentType") || msg.contains("corrupt message") {
        msg.push_str(" (a registry without TLS? then use --no-https)");
    } else if msg.contains("Connection refused") {
        msg.push_str(" (is the registry running, and the port right?)");
    }
    one_line(&msg)
}
