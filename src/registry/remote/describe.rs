//! The network client's errors in one line, saying what a user can act on: a refused
//! login, a missing image, an unreachable registry.

#![forbid(unsafe_code)]

use oci_client::errors::OciDistributionError;

use crate::registry::error::{RegistryError, printable};

/// A failed request as the registry layer's error.
pub(crate) fn request_error(
    what: &'static str,
    reference: String,
    e: &OciDistributionError,
) -> RegistryError {
    RegistryError::Request {
        what,
        reference,
        why: describe(e),
    }
}

/// The client's error in one line.
pub(crate) fn describe(e: &OciDistributionError) -> String {
    use OciDistributionError as E;
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
