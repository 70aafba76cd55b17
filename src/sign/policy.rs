//! Run-time signature policy: may this image run? It is veil's form of the peers'
//! Execution Control List (spec/sif.md §13), applied by `run/exec/shell --verify` and by
//! a policy file, plus the check `build` makes for a definition file's `Fingerprints:`.
//!
//! Policy file format (one setting per line, `#` starts a comment, blank lines ignored):
//!
//! ```text
//! mode = whitelist            # signed | whitelist | whitestrict | blacklist
//! fingerprint = 12045C8C0B1004D058DE4BEDA20C27EE7FF7BA84   # repeatable
//! legacy-insecure = false     # verify legacy signatures (primary partition only)
//! keyring = /etc/veil/trusted.asc   # repeatable: keys that may verify signatures
//! user-keyrings = true        # also use the caller's keyrings (~/.veil/keys, peers')
//! ```

#![forbid(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use sequoia_openpgp::Cert;

use super::error::{Result, SignError};
use super::keyring::{KeyStore, read_key_file};
use super::verify::{Outcome, VerifyOptions, verify};
use crate::sif::Sif;

/// How the signers are judged once the signatures have verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Any valid signature, from a key we have, is enough (`--verify`).
    Signed,
    /// At least one listed fingerprint signed every group.
    Whitelist,
    /// Every listed fingerprint signed every group.
    Whitestrict,
    /// No listed fingerprint signed any group (the image must still verify).
    Blacklist,
}

impl Mode {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "signed" => Some(Mode::Signed),
            "whitelist" => Some(Mode::Whitelist),
            "whitestrict" => Some(Mode::Whitestrict),
            "blacklist" => Some(Mode::Blacklist),
            _ => None,
        }
    }
}

/// A signature policy and the certificates it verifies with.
#[derive(Debug, Clone)]
pub struct Policy {
    pub mode: Mode,
    /// Uppercase hex primary-key fingerprints.
    pub fingerprints: Vec<String>,
    pub legacy_insecure: bool,
    /// Key files named by the policy.
    pub keyrings: Vec<PathBuf>,
    /// Whether the caller's own keyrings are used too.
    pub user_keyrings: bool,
    /// The certificates signatures are checked against (filled by [`Policy::load_keys`]).
    pub certs: Vec<Cert>,
}

/// The decision on one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// May run; the fingerprints of the signers whose signatures verified.
    Allowed { signers: Vec<String> },
    /// Must not run, and why (one line).
    Refused { reason: String },
}

impl Verdict {
    pub fn is_allowed(&self) -> bool {
        matches!(self, Verdict::Allowed { .. })
    }
}

impl Policy {
    /// `--verify` without a policy file: any valid signature from a key in `certs`.
    pub fn signed_by_known_key(certs: Vec<Cert>) -> Self {
        Policy {
            mode: Mode::Signed,
            fingerprints: Vec::new(),
            legacy_insecure: false,
            keyrings: Vec::new(),
            user_keyrings: true,
            certs,
        }
    }

    /// Parses a policy file's text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let mut p = Policy::signed_by_known_key(Vec::new());
        let mut mode_set = false;
        for (i, raw) in text.lines().enumerate() {
            let err = |reason: String| SignError::PolicySyntax {
                path: origin.to_string(),
                line: i + 1,
                reason,
            };
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let (k, v) = line
                .split_once('=')
                .ok_or_else(|| err(format!("expected `key = value`, found {line:?}")))?;
            let (k, v) = (k.trim(), v.trim().trim_matches('"'));
            let boolean = |v: &str| match v {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(err(format!("{k} must be true or false, not {v:?}"))),
            };
            match k {
                "mode" => {
                    p.mode = Mode::parse(v).ok_or_else(|| {
                        err(format!(
                            "unknown mode {v:?} (signed, whitelist, whitestrict or blacklist)"
                        ))
                    })?;
                    mode_set = true;
                }
                "fingerprint" => {
                    let fp: String = v.chars().filter(|c| !c.is_whitespace()).collect();
                    if fp.len() != 40 || !fp.chars().all(|c| c.is_ascii_hexdigit()) {
                        return Err(err(format!("fingerprint {v:?} is not 40 hex digits")));
                    }
                    p.fingerprints.push(fp.to_ascii_uppercase());
                }
                "legacy-insecure" => p.legacy_insecure = boolean(v)?,
                "user-keyrings" => p.user_keyrings = boolean(v)?,
                "keyring" => p.keyrings.push(PathBuf::from(v)),
                _ => return Err(err(format!("unknown setting {k:?}"))),
            }
        }
        if !mode_set && !p.fingerprints.is_empty() {
            p.mode = Mode::Whitelist;
        }
        if p.mode != Mode::Signed && p.fingerprints.is_empty() {
            return Err(SignError::PolicySyntax {
                path: origin.to_string(),
                line: 0,
                reason: "this mode needs at least one fingerprint".into(),
            });
        }
        Ok(p)
    }

    /// Reads a policy file and loads the keys it names, plus the user's keyrings when
    /// `user-keyrings` is on (from `store`).
    pub fn load(path: &Path, store: Option<&KeyStore>) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|err| SignError::ReadPolicy {
            path: path.to_path_buf(),
            err,
        })?;
        let mut p = Self::parse(&text, &path.display().to_string())?;
        p.load_keys(store)?;
        Ok(p)
    }

    /// Fills [`Policy::certs`] from the policy's key files and, if allowed, `store`.
    pub fn load_keys(&mut self, store: Option<&KeyStore>) -> Result<()> {
        for k in &self.keyrings {
            self.certs.extend(read_key_file(k)?);
        }
        if self.user_keyrings
            && let Some(s) = store
        {
            self.certs.extend(s.verification_certs()?);
        }
        Ok(())
    }
}

/// Decides whether the image at `image` may run under `policy`. `Err` is for an image
/// that cannot be read at all; everything about signatures is a [`Verdict`].
pub fn check(image: &Path, policy: &Policy) -> Result<Verdict> {
    check_sif(&Sif::open_path(image)?, policy)
}

/// As [`check`], for an image file already opened: the bytes verified are the ones
/// read through `file` (a duplicate of it, sharing the open file), whatever the path
/// names by now. `run --verify` serves the image from the same descriptor.
pub fn check_file(file: &std::fs::File, policy: &Policy) -> Result<Verdict> {
    let dup = file.try_clone().map_err(SignError::ReadImage)?;
    let src = veil_fusefs::source::FileSource::new(dup).map_err(SignError::ReadImage)?;
    check_sif(&Sif::open(std::sync::Arc::new(src))?, policy)
}

fn check_sif<R: veil_fusefs::source::ReadAt>(sif: &Sif<R>, policy: &Policy) -> Result<Verdict> {
    let opts = VerifyOptions {
        legacy: policy.legacy_insecure,
        ..Default::default()
    };
    let outcome = verify(sif, &policy.certs, &opts);
    Ok(judge(&outcome, policy))
}

/// Applies the policy's mode to a verification outcome.
pub fn judge(outcome: &Outcome, policy: &Policy) -> Verdict {
    if let Some(e) = &outcome.error {
        // A signer whose key is not here: trust checks never ask a keyserver (they run
        // at every start, on nodes that may have no network), so say how to get it.
        let unknown = outcome.results.iter().find_map(|r| {
            (r.fingerprint.is_none()
                && r.error
                    .as_deref()
                    .is_some_and(|m| m.contains("unknown entity")))
            .then_some(r.descriptor_fingerprint.as_deref())
            .flatten()
        });
        let hint = match unknown {
            Some(f) => format!(
                " (the key of {f} is not in the keyrings: if you trust it, `veil key pull {f}` fetches it from a keyserver)"
            ),
            None => String::new(),
        };
        return Verdict::Refused {
            reason: format!("image signature not valid: {e}{hint}"),
        };
    }
    // Per target (group or object): who signed it. "All" = signed every target.
    let mut per_target: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for r in &outcome.results {
        let set = per_target.entry(r.target.as_str()).or_default();
        if let Some(f) = &r.fingerprint {
            set.insert(f.as_str());
        }
    }
    let any: BTreeSet<&str> = per_target.values().flatten().copied().collect();
    let all: BTreeSet<&str> = any
        .iter()
        .copied()
        .filter(|f| per_target.values().all(|s| s.contains(f)))
        .collect();
    let allowed = match policy.mode {
        Mode::Signed => !any.is_empty(),
        Mode::Whitelist => policy.fingerprints.iter().any(|f| all.contains(f.as_str())),
        Mode::Whitestrict => policy.fingerprints.iter().all(|f| all.contains(f.as_str())),
        Mode::Blacklist => {
            if policy.fingerprints.iter().any(|f| any.contains(f.as_str())) {
                return Verdict::Refused {
                    reason: "image signed by a forbidden entity".into(),
                };
            }
            !any.is_empty()
        }
    };
    if allowed {
        Verdict::Allowed {
            signers: outcome.verified_signers(),
        }
    } else {
        Verdict::Refused {
            reason: "image not signed by required entities".into(),
        }
    }
}

/// The check `build` makes for a definition file's `Fingerprints:` header: the bootstrap
/// image must verify with `certs`, and at least one of `fingerprints` (40 hex digits,
/// any case) must have signed every group.
pub fn check_fingerprints(
    image: &std::fs::File,
    fingerprints: &[String],
    certs: &[Cert],
) -> Result<Verdict> {
    let mut fps = Vec::new();
    for f in fingerprints {
        let fp: String = f.chars().filter(|c| !c.is_whitespace()).collect();
        if fp.len() != 40 || !fp.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(SignError::BadFingerprint { value: f.clone() });
        }
        fps.push(fp.to_ascii_uppercase());
    }
    if fps.is_empty() {
        return Err(SignError::NoFingerprints);
    }
    let policy = Policy {
        mode: Mode::Whitelist,
        fingerprints: fps,
        legacy_insecure: false,
        keyrings: Vec::new(),
        user_keyrings: false,
        certs: certs.to_vec(),
    };
    check_file(image, &policy)
}
