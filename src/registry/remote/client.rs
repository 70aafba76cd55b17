//! One registry session: the ORAS project's OCI distribution client on a
//! current-thread runtime, with the user's credentials and transport options,
//! deadlines, and retries for what a network does (dropped connections, 5xx and 429
//! answers). Manifests are fetched here, with a size cap, rather than by the client,
//! which would read any answer whole.

#![forbid(unsafe_code)]

use std::future::Future;
use std::time::Duration;

use base64::Engine;
use futures_util::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::manifest::OciManifest;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use sha2::Digest;

use crate::registry::Options;
use crate::registry::credentials;
use crate::registry::error::{RegistryError, Result};

/// The realm of a `Bearer` challenge (`Bearer realm="…",service="…"`; the scheme and
/// the parameter names in any case, values quoted or not), if the header is one.
fn bearer_realm(header: &str) -> Option<String> {
    let (scheme, mut rest) = header.trim_start().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    loop {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        if rest.is_empty() {
            return None;
        }
        let (name, after) = rest.split_once('=')?;
        let after = after.trim_start();
        let (value, next) = if let Some(q) = after.strip_prefix('"') {
            // A quoted string, with backslash escapes.
            let mut v = String::new();
            let mut chars = q.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => v.extend(chars.next().map(|(_, c)| c)),
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => v.push(c),
                }
            }
            (v, &q[end?..])
        } else {
            let n = after.find([',', ' ']).unwrap_or(after.len());
            (after[..n].to_string(), &after[n..])
        };
        if name.trim().eq_ignore_ascii_case("realm") {
            return Some(value);
        }
        rest = next;
    }
}

/// Attempts of a request that fails the way a network fails.
const ATTEMPTS: u32 = 4;
/// The longest a request other than a blob transfer may take.
const REQUEST_DEADLINE: Duration = Duration::from_secs(120);
/// The largest manifest taken (distribution's own limit).
const MAX_MANIFEST: usize = 4 << 20;
const MANIFEST_TYPES: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

/// The TLS provider installed and a current-thread runtime, for one piece of work.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    // rustls needs a process-wide provider; a second install is refused, harmlessly.
    // ring's is deprecated only for lacking post-quantum key exchange; the other
    // provider (aws-lc) brings a large C build under the OpenSSL licence.
    #[allow(deprecated)]
    let _ = rustls::crypto::ring::default_provider().install_default();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| RegistryError::Setup(format!("starting the I/O runtime: {e}")))
}

pub(crate) struct Session {
    rt: tokio::runtime::Runtime,
    pub client: Client,
    pub auth: RegistryAuth,
    pub reference: Reference,
    http: reqwest::Client,
    scheme: &'static str,
    /// The bearer token the registry's token endpoint gave, if it uses one.
    bearer: Option<String>,
    /// No progress bars.
    pub quiet: bool,
}

impl Session {
    /// A session for `reference`, authenticated for `op` (a token exchange where the
    /// registry asks for one).
    pub fn open(reference: &Reference, opts: &Options, op: RegistryOperation) -> Result<Session> {
        let rt = runtime()?;
        let config = ClientConfig {
            protocol: if opts.no_https {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            connect_timeout: Some(Duration::from_secs(30)),
            // A transfer that stalls this long is retried (resumed, for a pull).
            read_timeout: Some(Duration::from_secs(60)),
            ..Default::default()
        };
        let client = Client::try_from(config).map_err(|e| RegistryError::Setup(e.to_string()))?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(30))
            .timeout(REQUEST_DEADLINE)
            .build()
            .map_err(|e| RegistryError::Setup(e.to_string()))?;
        let creds = match &opts.credentials {
            Some(c) => Some(c.clone()),
            None => match credentials::stored(
                reference.resolve_registry(),
                super::memory::unlimited_child,
            )? {
                Some(c) => Some(c),
                None if reference.resolve_registry() != reference.registry() => {
                    credentials::stored(reference.registry(), super::memory::unlimited_child)?
                }
                None => None,
            },
        };
        let auth = match &creds {
            // oci-client keeps its own (unzeroized) copy for the session's requests.
            Some(c) => RegistryAuth::Basic(c.username.clone(), c.password.to_string()),
            None => RegistryAuth::Anonymous,
        };
        let mut s = Session {
            rt,
            client,
            auth,
            reference: reference.clone(),
            http,
            scheme: if opts.no_https { "http" } else { "https" },
            bearer: None,
            quiet: opts.quiet,
        };
        if creds.is_some() {
            s.check_challenge()?;
        }
        s.bearer = s.retry("authenticating with", || {
            s.client.auth(&s.reference, &s.auth, op)
        })?;
        Ok(s)
    }

    /// Before credentials go out: a registry over HTTPS that names a plain-HTTP token
    /// endpoint would have them sent in the clear; refused.
    fn check_challenge(&self) -> Result<()> {
        let url = format!(
            "{}://{}/v2/",
            self.scheme,
            self.reference.resolve_registry()
        );
        let res = self
            .block_on(async { self.http.get(&url).send().await })
            .map_err(|e| RegistryError::Content {
                reference: self.reference.whole(),
                why: super::describe::request_text(&e),
            })?;
        for value in res.headers().get_all(reqwest::header::WWW_AUTHENTICATE) {
            let Some(realm) = value.to_str().ok().and_then(bearer_realm) else {
                continue;
            };
            if self.scheme == "https" && !realm.to_ascii_lowercase().starts_with("https://") {
                return Err(RegistryError::Content {
                    reference: self.reference.whole(),
                    why: format!(
                        "the registry's token endpoint {:?} is not HTTPS; credentials are not sent there",
                        crate::registry::error::printable(&realm)
                    ),
                });
            }
        }
        Ok(())
    }

    /// Whether the registry asks for credentials at all (its `/v2/` answers 401).
    pub fn asks_for_credentials(&self) -> Result<bool> {
        let url = format!(
            "{}://{}/v2/",
            self.scheme,
            self.reference.resolve_registry()
        );
        let res = self
            .block_on(async { self.http.get(&url).send().await })
            .map_err(|e| RegistryError::Content {
                reference: self.reference.registry().to_string(),
                why: super::describe::request_text(&e),
            })?;
        Ok(res.status().as_u16() == 401)
    }

    /// Runs one request to completion on the session's runtime.
    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// Runs a request (within the request deadline), again after a pause when it
    /// failed the way networks fail.
    pub fn retry<T, F, Fut>(&self, what: &'static str, f: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<T, OciDistributionError>>,
    {
        self.retry_within(what, Some(REQUEST_DEADLINE), f)
    }

    /// As [`Session::retry`], with the given deadline per attempt (none: a blob
    /// upload, bounded by the client's read timeout instead).
    pub fn retry_within<T, F, Fut>(
        &self,
        what: &'static str,
        deadline: Option<Duration>,
        mut f: F,
    ) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<T, OciDistributionError>>,
    {
        let mut attempt = 1;
        loop {
            let r = self.block_on(async {
                match deadline {
                    Some(d) => tokio::time::timeout(d, f()).await.unwrap_or_else(|_| {
                        Err(OciDistributionError::GenericError(Some(format!(
                            "no answer within {} s",
                            d.as_secs()
                        ))))
                    }),
                    None => f().await,
                }
            });
            match r {
                Ok(v) => return Ok(v),
                Err(e) if attempt < ATTEMPTS && transient(&e) => {
                    crate::support::diag::debug_note(&format!(
                        "registry: {what} {}: {e}; retrying",
                        self.reference
                    ));
                    std::thread::sleep(backoff(attempt));
                    attempt += 1;
                }
                Err(err) => {
                    return Err(super::describe::request_error(
                        what,
                        self.reference.whole(),
                        &err,
                    ));
                }
            }
        }
    }

    /// The manifest `reference` names (an image manifest or an index), read with a
    /// size cap, and its digest (checked against the reference's digest, if any).
    pub fn manifest(&self, reference: &Reference) -> Result<(OciManifest, String)> {
        let mut attempt = 1;
        loop {
            match self.block_on(self.manifest_once(reference)) {
                Ok(r) => return Ok(r),
                Err(Fetch::Transient(e)) if attempt < ATTEMPTS => {
                    crate::support::diag::debug_note(&format!(
                        "registry: looking up {reference}: {e}; retrying"
                    ));
                    std::thread::sleep(backoff(attempt));
                    attempt += 1;
                }
                Err(Fetch::Transient(why) | Fetch::Fatal(why)) => {
                    return Err(RegistryError::Content {
                        reference: reference.whole(),
                        why,
                    });
                }
            }
        }
    }

    async fn manifest_once(
        &self,
        reference: &Reference,
    ) -> std::result::Result<(OciManifest, String), Fetch> {
        let tag = reference.digest().or(reference.tag()).unwrap_or("latest");
        let url = format!(
            "{}://{}/v2/{}/manifests/{tag}",
            self.scheme,
            reference.resolve_registry(),
            reference.repository()
        );
        let mut req = self
            .http
            .get(&url)
            .header(reqwest::header::ACCEPT, MANIFEST_TYPES);
        req = match (&self.bearer, &self.auth) {
            (Some(t), _) => req.bearer_auth(t),
            (None, RegistryAuth::Basic(u, p)) => {
                let b = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
                req.header(reqwest::header::AUTHORIZATION, format!("Basic {b}"))
            }
            _ => req,
        };
        let res = req.send().await.map_err(|e| {
            let msg = super::describe::request_text(&e);
            if e.is_connect() || e.is_timeout() || e.is_request() {
                Fetch::Transient(msg)
            } else {
                Fetch::Fatal(msg)
            }
        })?;
        let status = res.status();
        if !status.is_success() {
            let why = match status.as_u16() {
                401 => "not authorized (wrong or missing credentials)".to_string(),
                403 => "access denied (the credentials do not allow this)".to_string(),
                404 => "not found in the registry".to_string(),
                s => format!("the registry answered {s}"),
            };
            return Err(if status.is_server_error() || status.as_u16() == 429 {
                Fetch::Transient(why)
            } else {
                Fetch::Fatal(why)
            });
        }
        let mut body = Vec::new();
        let mut stream = res.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| Fetch::Transient(super::describe::request_text(&e)))?;
            if body.len() + chunk.len() > MAX_MANIFEST {
                return Err(Fetch::Fatal(format!(
                    "the manifest is larger than {} MiB",
                    MAX_MANIFEST >> 20
                )));
            }
            body.extend_from_slice(&chunk);
        }
        let digest = format!(
            "sha256:{}",
            super::transfer::hex(&sha2::Sha256::digest(&body))
        );
        if let Some(want) = reference.digest()
            && want != digest
        {
            return Err(Fetch::Fatal(format!(
                "the manifest's digest is {digest}, not the {want} asked for"
            )));
        }
        let manifest: OciManifest = serde_json::from_slice(&body)
            .map_err(|e| Fetch::Fatal(format!("not a valid manifest: {e}")))?;
        Ok((manifest, digest))
    }
}

/// How a manifest request failed.
enum Fetch {
    Transient(String),
    Fatal(String),
}

/// The pause before attempt `n + 1`: 0.5 s, 1 s, 2 s, 4 s.
pub(crate) fn backoff(n: u32) -> Duration {
    Duration::from_millis(500 << (n - 1).min(4))
}

/// Errors worth another attempt: the connection, a timeout, the server's 5xx, 429.
pub(crate) fn transient(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::RequestError(r) => {
            r.is_connect()
                || r.is_timeout()
                || r.is_request()
                || r.is_body()
                || r.status()
                    .is_some_and(|s| s.is_server_error() || s.as_u16() == 429)
        }
        OciDistributionError::ServerError { code, .. } => *code >= 500 || *code == 429,
        OciDistributionError::IoError(_) => true,
        _ => false,
    }
}

#[cfg(test)]
mod challenge_tests {
    use super::bearer_realm;

    #[test]
    fn the_realm_of_a_bearer_challenge_is_found_however_written() {
        for (h, want) in [
            (
                r#"Bearer realm="https://auth.example/token",service="reg""#,
                Some("https://auth.example/token"),
            ),
            (
                r#"bearer service="reg", REALM="http://x/t""#,
                Some("http://x/t"),
            ),
            (
                r#"Bearer xrealm="https://a/t",realm="http://b/t""#,
                Some("http://b/t"),
            ),
            (r#"Bearer realm="http://a/\"q\"""#, Some(r#"http://a/"q""#)),
            (
                "Bearer realm=http://bare/t,service=x",
                Some("http://bare/t"),
            ),
            (r#"Basic realm="Registry""#, None),
            (r#"Bearer realm="unterminated"#, None),
            ("Bearer", None),
        ] {
            assert_eq!(bearer_realm(h).as_deref(), want, "{h}");
        }
    }
}
