//! OpenPGP keyservers: which ones to ask ([`config`]), their addresses, and the work
//! `veil-registry` does with them (its keyserver module), asked for here.
//! Two protocols: HKP/HKPS (`/pks/lookup`, `/pks/add`), which SKS, Hockeypuck and
//! most servers speak, and the verifying keyserver API of keys.openpgp.org
//! (`/vks/v1/…`). What comes back is only text here: the caller (the trust layer,
//! above this one) checks keys by fingerprint.

#![forbid(unsafe_code)]

pub mod config;
pub mod index;

use serde::{Deserialize, Serialize};

use super::error::{RegistryError, Result};
use super::helper::{call, unexpected};
use super::options::Options;
use super::protocol::{Reply, Request};

/// The largest key answer taken (a key with its certifications; poisoned keys on the
/// SKS network ran to tens of megabytes).
pub const MAX_KEY_ANSWER: u64 = 4 << 20;
/// The largest index answer taken.
pub const MAX_INDEX_ANSWER: u64 = 1 << 20;
/// Seconds a keyserver request may take at most, unless `VEIL_KEYSERVER_TIMEOUT` says.
pub const DEFAULT_TIMEOUT: u64 = 30;

/// How a keyserver is spoken to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyProtocol {
    /// HKP (`/pks/lookup?op=get|index`, `/pks/add`), over HTTP or HTTPS.
    Hkp,
    /// The verifying keyserver API (`/vks/v1/by-fingerprint/…`, `/vks/v1/upload`).
    Vks,
}

impl std::fmt::Display for KeyProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KeyProtocol::Hkp => "hkp",
            KeyProtocol::Vks => "vks",
        })
    }
}

/// One keyserver: its base URL (`http[s]://host[:port][/path]`, no trailing slash)
/// and protocol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Keyserver {
    pub url: String,
    pub protocol: KeyProtocol,
}

/// The keyserver that speaks VKS when named by a plain URL.
const VKS_HOSTS: &[&str] = &["keys.openpgp.org"];

impl Keyserver {
    /// A keyserver from how a user writes it: `hkp://host[:port]` (HTTP, port 11371
    /// unless given), `hkps://host[:port]` (HTTPS), `http://…`, `https://…`, a bare
    /// host name (HTTPS), or `vks+https://…` / `vks+http://…` for the VKS API. Plain
    /// URLs speak HKP, except to keys.openpgp.org, which speaks VKS. `protocol`
    /// overrides what the URL implies.
    pub fn parse(text: &str, protocol: Option<KeyProtocol>) -> Result<Keyserver> {
        let bad = |why: &str| RegistryError::Uri {
            uri: super::error::printable(text),
            why: why.to_string(),
        };
        let t = text.trim();
        let (scheme, rest) = match t.split_once("://") {
            Some((s, r)) => (s.to_ascii_lowercase(), r),
            None => ("hkps".to_string(), t),
        };
        let (http, default_port, implied) = match scheme.as_str() {
            "hkp" => ("http", Some(11371), None),
            "hkps" => ("https", None, None),
            "http" => ("http", None, None),
            "https" => ("https", None, None),
            "vks+http" => ("http", None, Some(KeyProtocol::Vks)),
            "vks+https" => ("https", None, Some(KeyProtocol::Vks)),
            _ => {
                return Err(bad(
                    "not a keyserver URL (hkp://, hkps://, http://, https://, vks+https://, or a host name)",
                ));
            }
        };
        let (authority, path) = match rest.find(['/', '?', '#']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if path.contains(['?', '#']) {
            return Err(bad("a keyserver URL has no query or fragment"));
        }
        let path = path.trim_end_matches('/');
        if !path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/-._~%".contains(&b))
        {
            return Err(bad("the path holds characters a URL cannot"));
        }
        if authority.is_empty()
            || authority.contains('@')
            || !authority
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        {
            return Err(bad(
                "no host name (or one with characters a host cannot have)",
            ));
        }
        let (host, port) =
            split_port(authority).ok_or_else(|| bad("a port that is not a number"))?;
        let port = port.or(default_port);
        let protocol = protocol.or(implied).unwrap_or_else(|| {
            if VKS_HOSTS.contains(&host.to_ascii_lowercase().as_str()) {
                KeyProtocol::Vks
            } else {
                KeyProtocol::Hkp
            }
        });
        let url = match port {
            Some(p) => format!("{http}://{host}:{p}{path}"),
            None => format!("{http}://{host}{path}"),
        };
        Ok(Keyserver { url, protocol })
    }
}

/// `host[:port]` (an IPv6 literal in brackets) split; `None` for a bad port.
fn split_port(authority: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if let Some(end) = authority
        .strip_prefix('[')
        .and_then(|_| authority.find(']'))
    {
        let host = &authority[..=end];
        match &authority[end + 1..] {
            "" => (host, None),
            p => (host, Some(p.strip_prefix(':')?)),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() || host.matches(':').count() > 0 && !host.starts_with('[') {
        return None;
    }
    match port {
        None => Some((host, None)),
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .map(|p| (host, Some(p))),
    }
}

impl std::fmt::Display for Keyserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.protocol {
            KeyProtocol::Hkp => f.write_str(&self.url),
            KeyProtocol::Vks => write!(f, "{} (VKS)", self.url),
        }
    }
}

fn helper_options() -> Options {
    Options {
        no_https: false,
        credentials: None,
        quiet: true,
        arch: None,
    }
}

/// The key `fingerprint` (40 upper-case hex digits) as `server` gives it, or `None`
/// when it has none. Nothing here checks that it is that key.
pub fn get(server: &Keyserver, fingerprint: &str) -> Result<Option<String>> {
    let request = Request::KeyGet {
        server: server.clone(),
        fingerprint: fingerprint.to_string(),
    };
    match call(request, &helper_options())? {
        Reply::Found(text) => Ok(text),
        r => Err(unexpected(&r)),
    }
}

/// What `server` finds for `text`: an HKP machine-readable index, or for a VKS
/// server the key itself; `None` when nothing.
pub fn search(server: &Keyserver, text: &str) -> Result<Option<String>> {
    let request = Request::KeySearch {
        server: server.clone(),
        text: text.to_string(),
    };
    match call(request, &helper_options())? {
        Reply::Found(text) => Ok(text),
        r => Err(unexpected(&r)),
    }
}

/// Publishes the ASCII-armored public key `armored` on `server`; the server's own
/// words about it.
pub fn push(server: &Keyserver, armored: &str) -> Result<String> {
    let request = Request::KeyPush {
        server: server.clone(),
        armored: armored.to_string(),
    };
    match call(request, &helper_options())? {
        Reply::Pushed(text) => Ok(text),
        r => Err(unexpected(&r)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(t: &str) -> (String, KeyProtocol) {
        let k = Keyserver::parse(t, None).unwrap();
        (k.url, k.protocol)
    }

    #[test]
    fn keyserver_addresses_are_written_as_users_write_them() {
        use KeyProtocol::*;
        assert_eq!(
            url("hkp://keys.example.org"),
            ("http://keys.example.org:11371".into(), Hkp)
        );
        assert_eq!(
            url("hkp://127.0.0.1:8080/"),
            ("http://127.0.0.1:8080".into(), Hkp)
        );
        assert_eq!(
            url("hkps://keys.example.org"),
            ("https://keys.example.org".into(), Hkp)
        );
        assert_eq!(
            url("keys.example.org"),
            ("https://keys.example.org".into(), Hkp)
        );
        assert_eq!(
            url("https://keys.openpgp.org/"),
            ("https://keys.openpgp.org".into(), Vks)
        );
        assert_eq!(
            url("vks+http://[::1]:3000/x"),
            ("http://[::1]:3000/x".into(), Vks)
        );
        assert_eq!(url("HTTP://h:1/pks"), ("http://h:1/pks".into(), Hkp));
        let forced = Keyserver::parse("https://keys.openpgp.org", Some(Hkp)).unwrap();
        assert_eq!(forced.protocol, Hkp);
        for bad in [
            "ftp://h",
            "http://",
            "http://u:p@h",
            "http://h:99999",
            "http://h:0",
            "http://h:x",
            "http://h/?op=x",
            "http://h/a b",
            "http://h\n/",
            "http://a:b:c",
            "",
        ] {
            assert!(Keyserver::parse(bad, None).is_err(), "{bad:?} was taken");
        }
    }
}
