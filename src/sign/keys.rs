//! Key management behind `veil key`: new pairs, listing, import, export and removal in
//! the `~/.veil/keys` rings. The caller supplies passphrases and reports what was done.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

use sequoia_openpgp::Cert;

use super::error::{Result, SignError};
use super::keyring::{self, KeyInfo, KeyStore, NewKey, Ring};
use super::passphrase::Passphrase;

/// Makes a key pair and adds it to both rings: the secret key, protected by `pass`,
/// to the secret ring, its public part to the public ring.
pub fn new_pair(store: &KeyStore, spec: &NewKey, pass: &Passphrase) -> Result<Cert> {
    let cert = keyring::generate(spec, pass)?;
    store.add(Ring::Secret, cert.clone())?;
    store.add(Ring::Public, cert.clone().strip_secret_key_material())?;
    Ok(cert)
}

/// The keys of `ring` (for the secret ring, in the order `--keyidx` uses), and the
/// file they are listed from.
pub fn list(store: &KeyStore, ring: Ring) -> Result<(PathBuf, Vec<KeyInfo>)> {
    let certs = match ring {
        Ring::Secret => store.signing_keys()?,
        Ring::Public => store.load_all(Ring::Public)?,
    };
    let infos = certs
        .iter()
        .enumerate()
        .map(|(i, c)| keyring::describe(i, c))
        .collect();
    Ok((store.path(ring), infos))
}

/// One key [`import`] took in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Imported {
    Secret { fingerprint: String },
    NewPublic { fingerprint: String },
    UpdatedPublic { fingerprint: String },
}

/// Imports every key of `file`. A secret key stored without protection is protected
/// with the passphrase `protect_with` gives for its fingerprint (an empty one leaves it
/// unprotected); each key is reported to `imported` once it is stored.
pub fn import(
    store: &KeyStore,
    file: &Path,
    mut protect_with: impl FnMut(&str) -> Result<Passphrase>,
    mut imported: impl FnMut(&Imported) -> Result<()>,
) -> Result<()> {
    for cert in keyring::read_key_file(file)? {
        let fingerprint = cert.fingerprint().to_hex();
        let done = if cert.is_tsk() {
            let unprotected = cert
                .keys()
                .secret()
                .any(|k| k.key().has_unencrypted_secret());
            let cert = if unprotected {
                keyring::protect(cert, &protect_with(&fingerprint)?)?
            } else {
                cert
            };
            store.add(Ring::Secret, cert.clone())?;
            store.add(Ring::Public, cert.strip_secret_key_material())?;
            Imported::Secret { fingerprint }
        } else if store.add(Ring::Public, cert)? {
            Imported::NewPublic { fingerprint }
        } else {
            Imported::UpdatedPublic { fingerprint }
        };
        imported(&done)?;
    }
    Ok(())
}

/// The one key `key` (a fingerprint or key ID) names, exported: a secret key as stored
/// (still protected by its passphrase), ASCII-armored with `armor`.
pub fn export(store: &KeyStore, key: &str, secret: bool, armor: bool) -> Result<(Cert, Vec<u8>)> {
    let sel = keyring::Selector::parse(key)?;
    let certs = if secret {
        store.signing_keys()?
    } else {
        store.verification_certs()?
    };
    let mut found: Vec<Cert> = certs.into_iter().filter(|c| sel.matches(c)).collect();
    match found.len() {
        0 => Err(SignError::NoMatchingKey {
            ring: if secret { "secret" } else { "public" },
            key: key.to_string(),
        }),
        1 => {
            let bytes = keyring::export(&found, secret, armor)?;
            Ok((found.remove(0), bytes))
        }
        count => Err(SignError::AmbiguousKey {
            count,
            key: key.to_string(),
        }),
    }
}

/// Writes an export to `path`, replacing the file at once; a secret key's readable by
/// its owner only.
pub fn write_export(path: &Path, bytes: &[u8], secret: bool) -> Result<()> {
    let write_err = |err| SignError::Write {
        path: path.to_path_buf(),
        err,
    };
    // A secret key's file is private before its first byte is written.
    let mode = if secret { 0o600 } else { 0o644 };
    crate::fsutil::write_atomic_mode(path, mode, |w| w.write_all(bytes)).map_err(write_err)
}

/// `text` as a v4 fingerprint: 40 hex digits, `0x` and spaces allowed, any case.
pub fn parse_fingerprint(text: &str) -> Result<[u8; 20]> {
    let t: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let t = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(&t);
    let bad = || SignError::NotFingerprint(text.chars().take(80).collect());
    if t.len() != 40 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let mut out = [0u8; 20];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&t[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

/// The most certificates read from one keyserver answer.
const MAX_ANSWER_CERTS: usize = 64;

/// The certificate with primary fingerprint `want` out of a keyserver's answer
/// (`source_name` says which, for errors), public parts only, and how many other
/// certificates came with it (dropped). Any other answer is refused: a keyserver
/// can send anything, and only the fingerprint makes a key the one asked for.
pub fn from_keyserver(answer: &[u8], want: &[u8; 20], source_name: &str) -> Result<(Cert, usize)> {
    let want_hex = crate::sif::report::hex_upper(want);
    let mut found = None;
    let mut others = Vec::new();
    use sequoia_openpgp::parse::Parse;
    if let Ok(parser) = sequoia_openpgp::cert::CertParser::from_bytes(answer) {
        // A certificate that does not parse is skipped: it is not the one asked for.
        for c in parser.take(MAX_ANSWER_CERTS).flatten() {
            if super::pgp::fpr20(&c.fingerprint()).as_ref() == Some(want) {
                found = Some(self_signed_only(c, source_name)?);
            } else {
                others.push(c.fingerprint().to_hex());
            }
        }
    }
    match found {
        Some(c) => Ok((c, others.len())),
        None => Err(SignError::KeyserverMismatch {
            source_name: source_name.to_string(),
            want: want_hex,
            got: others.into_iter().take(3).collect(),
        }),
    }
}

/// `cert`'s public parts as its holder made them: the primary key, and the user IDs
/// and subkeys it bound, each with only its verified self-signatures and
/// self-revocations. Certifications by other keys (a keyserver can attach any number,
/// or floods of them), signatures that do not verify or only claim to be the
/// holder's, user attributes, and components without a valid self-signature (anyone
/// can append a user ID to a key) are dropped, as GnuPG drops them on a keyserver
/// import. Revocations by designated revokers are dropped too.
fn self_signed_only(cert: Cert, source_name: &str) -> Result<Cert> {
    use sequoia_openpgp::Packet;
    let cert = cert.strip_secret_key_material();
    let pk = cert.primary_key();
    let mut packets: Vec<Packet> = vec![Packet::PublicKey(pk.key().clone())];
    // Sequoia verified these when it parsed the certificate.
    packets.extend(
        pk.self_signatures()
            .chain(pk.self_revocations())
            .cloned()
            .map(Packet::Signature),
    );
    for ua in cert.userids() {
        if ua.self_signatures().next().is_none() {
            continue;
        }
        packets.push(Packet::UserID(ua.userid().clone()));
        packets.extend(
            ua.self_signatures()
                .chain(ua.self_revocations())
                .cloned()
                .map(Packet::Signature),
        );
    }
    for ka in cert.keys().subkeys() {
        if ka.self_signatures().next().is_none() {
            continue;
        }
        packets.push(Packet::PublicSubkey(ka.key().clone()));
        packets.extend(
            ka.self_signatures()
                .chain(ka.self_revocations())
                .cloned()
                .map(Packet::Signature),
        );
    }
    Cert::from_packets(packets.into_iter()).map_err(|e| SignError::KeyserverMismatch {
        source_name: format!("{source_name} (its self-signed parts do not make a key: {e})"),
        want: cert.fingerprint().to_hex(),
        got: Vec::new(),
    })
}

/// Adds `cert` (public) to veil's public ring; true if it was new there.
pub fn add_public(store: &KeyStore, cert: Cert) -> Result<bool> {
    store.add(Ring::Public, cert.strip_secret_key_material())
}

/// The ASCII-armored public key `key` names (as [`export`] finds it).
pub fn armored_public(store: &KeyStore, key: &str) -> Result<(Cert, String)> {
    let (cert, bytes) = export(store, key, false, true)?;
    Ok((cert, String::from_utf8_lossy(&bytes).into_owned()))
}

/// Removes the keys `key` names from `rings`, reporting each to `removed`; none at all
/// is an error.
pub fn remove(
    store: &KeyStore,
    key: &str,
    rings: &[Ring],
    mut removed: impl FnMut(Ring, &Cert) -> Result<()>,
) -> Result<()> {
    let mut count = 0;
    for &ring in rings {
        for c in store.remove(ring, key)? {
            count += 1;
            removed(ring, &c)?;
        }
    }
    if count == 0 {
        return Err(SignError::NotInKeyrings {
            key: key.to_string(),
            dir: store.dir.clone(),
        });
    }
    Ok(())
}
