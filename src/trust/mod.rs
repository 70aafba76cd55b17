//! Keys from keyservers, and what they are used for: `veil key search|pull|push`, and
//! `veil verify` with the keys of signers the local keyrings lack. The network work
//! is the registry helper's ([`crate::registry::keyserver`]); the keys are checked
//! here, by fingerprint, with [`crate::sign`].
//!
//! A key fetched for a verification is used for that verification only: it enters
//! the keyring only through `key pull`. Whatever its source, a key proves only that
//! its holder signed; trust (`Fingerprints:`, `--verify`, `--policy`) stays with the
//! fingerprints the user names.

#![forbid(unsafe_code)]

use std::collections::BTreeSet;

use sequoia_openpgp::Cert;
use veil_fusefs::source::ReadAt;

use crate::registry::RegistryError;
use crate::registry::keyserver::config::Chosen;
use crate::registry::keyserver::index::{self, IndexKey};
use crate::registry::keyserver::{self, Keyserver};
use crate::sif::report::hex_upper;
use crate::sif::{DataType, Extra, Link, Sif};
use crate::sign::keyring::KeyStore;
use crate::sign::{Outcome, SignError, VerifyOptions, keys, pgp::fpr20};

/// The trust layer's errors: a keyserver's, or a key's.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error(transparent)]
    Keyserver(#[from] RegistryError),
    #[error(transparent)]
    Sign(#[from] SignError),
    /// No keyserver had the key.
    #[error("no key {fingerprint} on {}", servers.join(" or "))]
    NotFound {
        fingerprint: String,
        servers: Vec<String>,
    },
    /// No keyserver in a list (cannot come from the command line, which always has one).
    #[error("no keyserver to ask")]
    NoKeyserver,
    /// The key to push is more than a keyserver request carries.
    #[error(
        "the public key {fingerprint} is {size} KiB exported, more than the {limit} KiB veil sends to a keyserver"
    )]
    TooLargeToPush {
        fingerprint: String,
        size: usize,
        limit: usize,
    },
    /// The signature descriptors name more signers than one verification fetches.
    #[error(
        "the image names {count} signers the keyrings lack; at most {limit} are fetched (pull the ones you trust with `veil key pull`)"
    )]
    TooManySigners { count: usize, limit: usize },
}

pub type Result<T> = std::result::Result<T, TrustError>;

/// The most keys one verification fetches: an image names its signers itself.
pub const MAX_FETCHED: usize = 8;

/// What a search found.
#[derive(Debug)]
pub struct Found {
    pub server: Keyserver,
    pub keys: Vec<IndexKey>,
    /// Index lines that did not parse (HKP), or keys that did not (VKS).
    pub skipped: usize,
}

/// The keys `server` (the first chosen one) finds for `text`: a name, an e-mail
/// address, a key ID or a fingerprint.
pub fn search(chosen: &Chosen, text: &str) -> Result<Found> {
    let server = first(chosen)?;
    let answer = keyserver::search(&server, text)?;
    let Some(answer) = answer else {
        return Ok(Found {
            server,
            keys: Vec::new(),
            skipped: 0,
        });
    };
    let (keys, skipped) = match server.protocol {
        keyserver::KeyProtocol::Hkp => {
            let i = index::parse(&answer);
            (i.keys, i.skipped)
        }
        keyserver::KeyProtocol::Vks => certs_as_index(answer.as_bytes()),
    };
    Ok(Found {
        server,
        keys,
        skipped,
    })
}

/// A VKS answer's certificates as index entries.
fn certs_as_index(answer: &[u8]) -> (Vec<IndexKey>, usize) {
    use sequoia_openpgp::parse::Parse;
    let Ok(parser) = sequoia_openpgp::cert::CertParser::from_bytes(answer) else {
        return (Vec::new(), 1);
    };
    let (mut keys, mut skipped) = (Vec::new(), 0);
    for c in parser.take(index::MAX_KEYS) {
        let Ok(c) = c else {
            skipped += 1;
            continue;
        };
        let info = crate::sign::keyring::describe(0, &c);
        let pk = c.primary_key().key();
        keys.push(IndexKey {
            key: info.fingerprint.to_ascii_uppercase(),
            algorithm: Some(u8::from(pk.pk_algo())),
            bits: info.bits.map(|b| b as u32),
            created: Some(info.created),
            expires: None,
            revoked: false,
            disabled: false,
            expired: false,
            user_ids: info
                .user_ids
                .iter()
                .map(|u| crate::registry::printable(u))
                .collect(),
        });
    }
    (keys, skipped)
}

fn first(chosen: &Chosen) -> Result<Keyserver> {
    chosen
        .servers
        .first()
        .cloned()
        .ok_or(TrustError::NoKeyserver)
}

/// What `pull` did.
#[derive(Debug)]
pub struct Pulled {
    pub fingerprint: String,
    pub server: Keyserver,
    /// False when the key was in the ring already (and is now updated).
    pub new: bool,
    /// Other keys the answer held, which were dropped.
    pub dropped: usize,
    /// Keyservers passed over, in words.
    pub warnings: Vec<String>,
}

/// The key with fingerprint `text` from the first chosen keyserver that has it, added
/// to the public ring.
pub fn pull(store: &KeyStore, chosen: &Chosen, text: &str) -> Result<Pulled> {
    let want = keys::parse_fingerprint(text)?;
    let mut asked = Asked::default();
    let (cert, server, dropped) = fetch(chosen, &want, &mut asked)?;
    let new = keys::add_public(store, cert)?;
    Ok(Pulled {
        fingerprint: hex_upper(&want),
        server,
        new,
        dropped,
        warnings: asked.warnings,
    })
}

/// What asking the keyservers of one command has shown so far.
#[derive(Debug, Default)]
struct Asked {
    /// Servers that could not be reached or did not answer in time: not asked again.
    dead: BTreeSet<String>,
    warnings: Vec<String>,
}

/// The key `want` from the first of `chosen` that has it: checked, with the server and
/// the number of other keys it sent. A server that fails or sends another key is
/// passed over for the next; its error is returned if none has the key.
fn fetch(chosen: &Chosen, want: &[u8; 20], asked: &mut Asked) -> Result<(Cert, Keyserver, usize)> {
    let hex = hex_upper(want);
    let mut first_error: Option<TrustError> = None;
    for server in &chosen.servers {
        if asked.dead.contains(&server.url) {
            continue;
        }
        let got = keyserver::get(server, &hex)
            .map_err(TrustError::from)
            .and_then(|a| match a {
                None => Ok(None),
                Some(a) => {
                    keys::from_keyserver(a.as_bytes(), want, &format!("keyserver {}", server.url))
                        .map(Some)
                        .map_err(TrustError::from)
                }
            });
        match got {
            Ok(Some((cert, dropped))) => return Ok((cert, server.clone(), dropped)),
            Ok(None) => {}
            Err(e) => {
                if matches!(&e, TrustError::Keyserver(RegistryError::Keyserver { .. })) {
                    asked.dead.insert(server.url.clone());
                }
                if chosen.servers.len() > 1 {
                    asked.warnings.push(e.to_string());
                }
                first_error.get_or_insert(e);
            }
        }
    }
    Err(first_error.unwrap_or_else(|| TrustError::NotFound {
        fingerprint: hex,
        servers: chosen.servers.iter().map(|s| s.url.clone()).collect(),
    }))
}

/// What `push` did: the key and the server's words.
#[derive(Debug)]
pub struct Pushed {
    pub fingerprint: String,
    pub server: Keyserver,
    pub said: String,
}

/// The most armored key text sent: the request to the helper carries it, and the
/// helper reads at most [`crate::registry::protocol::MAX_MESSAGE`].
const MAX_PUSH: usize = 768 << 10;

/// Publishes the public key `key` (fingerprint or key ID in the keyrings) on the
/// first chosen keyserver.
pub fn push(store: &KeyStore, chosen: &Chosen, key: &str) -> Result<Pushed> {
    let (cert, armored) = keys::armored_public(store, key)?;
    if armored.len() > MAX_PUSH {
        return Err(TrustError::TooLargeToPush {
            fingerprint: cert.fingerprint().to_hex(),
            size: armored.len() >> 10,
            limit: MAX_PUSH >> 10,
        });
    }
    let server = first(chosen)?;
    let said = keyserver::push(&server, &armored)?;
    Ok(Pushed {
        fingerprint: cert.fingerprint().to_hex(),
        server,
        said,
    })
}

/// A verification and where its keys came from.
#[derive(Debug)]
pub struct Verified {
    pub outcome: Outcome,
    /// Fingerprints (upper-case hex) of the keys fetched from keyservers.
    pub remote: BTreeSet<String>,
    /// Keys no keyserver had, servers passed over: for the user, in words.
    pub warnings: Vec<String>,
}

/// The signers that the signatures `opts` selects name in their descriptors and that
/// none of `certs` is.
pub fn missing_signers<R: ReadAt>(
    sif: &Sif<R>,
    certs: &[Cert],
    opts: &VerifyOptions,
) -> Vec<[u8; 20]> {
    let have: BTreeSet<[u8; 20]> = certs
        .iter()
        .filter_map(|c| fpr20(&c.fingerprint()))
        .collect();
    // The groups whose signatures a current-format verification checks; legacy
    // signatures also link to objects, so there every signature counts.
    let mut groups: BTreeSet<u32> = opts.groups.iter().copied().collect();
    for id in &opts.objects {
        if let Ok(d) = sif.object(*id) {
            groups.insert(d.group());
        }
    }
    let legacy = opts.legacy || opts.legacy_all;
    let mut out = BTreeSet::new();
    for d in sif.objects_of_type(DataType::Signature) {
        let selected = legacy
            || match d.link() {
                Link::Group(g) => groups.is_empty() || groups.contains(&g),
                _ => false,
            };
        if !selected {
            continue;
        }
        if let Extra::Signature {
            fingerprint: Some(f),
            ..
        } = d.extra()
            && f != [0; 20]
            && !have.contains(&f)
        {
            out.insert(f);
        }
    }
    out.into_iter().collect()
}

/// Verifies `sif` with `local` keys and, unless `keyservers` is `None`, the keys of
/// the signers they lack, fetched (not kept). Each result then says whether its key
/// was local or remote.
pub fn verify<R: ReadAt>(
    sif: &Sif<R>,
    local: Vec<Cert>,
    opts: &VerifyOptions,
    keyservers: Option<&Chosen>,
) -> Result<Verified> {
    let mut certs = local;
    let mut remote = BTreeSet::new();
    let mut asked = Asked::default();
    if let Some(chosen) = keyservers {
        let missing = missing_signers(sif, &certs, opts);
        if missing.len() > MAX_FETCHED {
            return Err(TrustError::TooManySigners {
                count: missing.len(),
                limit: MAX_FETCHED,
            });
        }
        for f in missing {
            match fetch(chosen, &f, &mut asked) {
                Ok((cert, _, _)) => {
                    remote.insert(hex_upper(&f));
                    certs.push(cert);
                }
                // The verification then says which signature has no key.
                Err(e @ TrustError::NotFound { .. }) => asked.warnings.push(e.to_string()),
                Err(e) => return Err(e),
            }
        }
    }
    let mut outcome = crate::sign::verify(sif, &certs, opts);
    for r in &mut outcome.results {
        r.key_source = match &r.fingerprint {
            Some(f) if remote.contains(f) => Some("remote"),
            Some(_) => Some("local"),
            None => None,
        };
    }
    Ok(Verified {
        outcome,
        remote,
        warnings: asked.warnings,
    })
}
