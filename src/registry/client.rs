//! One registry session: the ORAS project's OCI distribution client on a
//! current-thread runtime, with the user's credentials and transport options, and
//! retries for what a network does (dropped connections, 5xx answers).

#![forbid(unsafe_code)]

use std::future::Future;
use std::time::Duration;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};

use super::credentials::{self, Credentials};
use super::error::{RegistryError, Result};

/// How to reach registries, as the command line and the environment say.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Plain HTTP instead of HTTPS (Apptainer's `--no-https`).
    pub no_https: bool,
    /// Credentials given on the command line; otherwise the environment's or the
    /// stored ones.
    pub credentials: Option<Credentials>,
    /// No progress output.
    pub quiet: bool,
}

/// Attempts of a request that fails the way a network fails.
const ATTEMPTS: u32 = 4;

pub(crate) struct Session {
    rt: tokio::runtime::Runtime,
    pub client: Client,
    pub auth: RegistryAuth,
    pub reference: Reference,
}

impl Session {
    /// A session for `reference`, authenticated for `op` (a token exchange where the
    /// registry asks for one).
    pub fn open(reference: &Reference, opts: &Options, op: RegistryOperation) -> Result<Session> {
        // rustls needs a process-wide provider; a second install is refused, harmlessly.
        // ring's is deprecated only for lacking post-quantum key exchange; the other
        // provider (aws-lc) brings a large C build under the OpenSSL licence.
        #[allow(deprecated)]
        let _ = rustls::crypto::ring::default_provider().install_default();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| RegistryError::Setup(format!("starting the I/O runtime: {e}")))?;
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
        let creds = match &opts.credentials {
            Some(c) => Some(c.clone()),
            None => match credentials::from_environment() {
                Some(c) => Some(c),
                None => credentials::stored(reference.resolve_registry())?
                    .or(credentials::stored(reference.registry())?),
            },
        };
        let auth = match creds {
            Some(c) => RegistryAuth::Basic(c.username.clone(), c.password.to_string()),
            None => RegistryAuth::Anonymous,
        };
        let s = Session {
            rt,
            client,
            auth,
            reference: reference.clone(),
        };
        s.retry("authenticating with", || {
            s.client.auth(&s.reference, &s.auth, op)
        })?;
        Ok(s)
    }

    /// Runs one request to completion on the session's runtime.
    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// Runs a request, again after a pause when it failed the way networks fail.
    pub fn retry<T, F, Fut>(&self, what: &'static str, mut f: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<T, OciDistributionError>>,
    {
        let mut attempt = 1;
        loop {
            match self.block_on(f()) {
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
                    return Err(RegistryError::Request {
                        what,
                        reference: self.reference.whole(),
                        err,
                    });
                }
            }
        }
    }
}

/// The pause before attempt `n + 1`: 0.5 s, 1 s, 2 s.
pub(crate) fn backoff(n: u32) -> Duration {
    Duration::from_millis(500 << (n - 1).min(4))
}

/// Errors worth another attempt: the connection, a timeout, the server's 5xx.
pub(crate) fn transient(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::RequestError(r) => {
            r.is_connect()
                || r.is_timeout()
                || r.is_request()
                || r.is_body()
                || r.status().is_some_and(|s| s.is_server_error())
        }
        OciDistributionError::ServerError { code, .. } => *code >= 500,
        OciDistributionError::IoError(_) => true,
        _ => false,
    }
}
