//! Verifying a SIF's signatures with the reference verifier's rules (spec/sif.md §11):
//! which signatures each task needs, that every one of them must pass, and in what order
//! the header, descriptors and objects are checked, so failures read the same.

#![forbid(unsafe_code)]

use std::collections::BTreeSet;

use sequoia_openpgp::Cert;
use serde::Serialize;
use veil_fusefs::source::ReadAt;

use super::dsse::{self, DsseKey};
use super::error::{Rejection, Result, SignError};
use super::legacy;
use super::metadata::{
    ImageMetadata, descriptor_stream, digest_matches, group_min_id, hash_object, header_stream,
};
use super::pgp::{self, MAX_SIGNATURE_OBJECT, SignerInfo};
use crate::sif::{DataType, Descriptor, Extra, Link, Sif, report::hex_upper};

/// What to verify. The default is every group, current-format signatures only.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Verify these groups (all their objects).
    pub groups: Vec<u32>,
    /// Verify these objects (a subset of their group's signed objects is fine).
    pub objects: Vec<u32>,
    /// Accept legacy (`SIFHASH`) signatures instead of current ones. With neither groups
    /// nor objects given, only the primary system partition is checked, as the peers'
    /// `verify --legacy-insecure` does.
    pub legacy: bool,
    /// Legacy mode, checking every grouped non-signature object on its own.
    pub legacy_all: bool,
    /// PEM public keys for DSSE signatures (OpenPGP keys are passed separately).
    pub dsse_keys: Vec<DsseKey>,
}

/// The result of checking one signature object.
#[derive(Debug, Clone, Serialize)]
pub struct SignatureResult {
    /// The signature object's ID.
    pub signature: u32,
    /// `pgp`, `legacy` or `dsse`.
    pub format: &'static str,
    /// What it is linked to: `group N` or `object N`.
    pub target: String,
    /// The signer's user ID (from the keyring), when the signature checked out.
    pub signer: Option<String>,
    /// The signer's primary-key fingerprint (from the keyring), when known.
    pub fingerprint: Option<String>,
    /// Where the signer's key came from: `local` (keyrings or key files) or `remote`
    /// (a keyserver), when the caller says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_source: Option<&'static str>,
    /// The fingerprint recorded in the signature descriptor.
    pub descriptor_fingerprint: Option<String>,
    /// The objects whose integrity this signature confirmed.
    pub verified: Vec<u32>,
    pub error: Option<String>,
}

/// Everything a verification found: one result per signature examined, in order, and
/// the error that stopped it (verification stops at the first failure, like the peers).
#[derive(Debug)]
pub struct Outcome {
    pub results: Vec<SignatureResult>,
    pub error: Option<SignError>,
}

impl Outcome {
    pub fn is_ok(&self) -> bool {
        self.error.is_none()
    }

    /// Primary-key fingerprints of the signers whose signatures verified, sorted.
    pub fn verified_signers(&self) -> Vec<String> {
        let set: BTreeSet<String> = self
            .results
            .iter()
            .filter(|r| r.error.is_none())
            .filter_map(|r| r.fingerprint.clone())
            .collect();
        set.into_iter().collect()
    }
}

/// One unit of work, as in the reference verifier.
enum Task<'a> {
    /// Current-format signatures linked to `group`; `subset` when only some of its
    /// objects were asked for.
    Group {
        group: u32,
        objects: Vec<&'a Descriptor>,
        subset: bool,
    },
    LegacyGroup {
        group: u32,
        objects: Vec<&'a Descriptor>,
    },
    LegacyObject {
        object: &'a Descriptor,
    },
}

/// Verifies `sif` against the certificates in `certs`.
pub fn verify<R: ReadAt>(sif: &Sif<R>, certs: &[Cert], opts: &VerifyOptions) -> Outcome {
    let mut results = Vec::new();
    let error = run(sif, certs, opts, &mut results).err();
    Outcome { results, error }
}

fn run<R: ReadAt>(
    sif: &Sif<R>,
    certs: &[Cert],
    opts: &VerifyOptions,
    results: &mut Vec<SignatureResult>,
) -> Result<()> {
    let tasks = tasks(sif, opts)?;
    // Every object outside a group must be a signature: otherwise it would ride along
    // unsigned in an image that "verifies".
    if sif
        .objects()
        .any(|d| d.group() == 0 && d.data_type != DataType::Signature)
    {
        return Err(SignError::NonGroupedObject);
    }
    for task in &tasks {
        run_task(sif, certs, &opts.dsse_keys, task, results)?;
    }
    Ok(())
}

fn group_members<R: ReadAt>(sif: &Sif<R>, group: u32) -> Result<Vec<&Descriptor>> {
    let v: Vec<&Descriptor> = sif.objects().filter(|d| d.group() == group).collect();
    if v.is_empty() {
        return Err(SignError::GroupNotFound(group));
    }
    Ok(v)
}

fn tasks<'a, R: ReadAt>(sif: &'a Sif<R>, opts: &VerifyOptions) -> Result<Vec<Task<'a>>> {
    let legacy = opts.legacy || opts.legacy_all;
    let mut groups: BTreeSet<u32> = opts.groups.iter().copied().collect();
    let mut objects: BTreeSet<u32> = opts.objects.iter().copied().collect();
    if groups.contains(&0) {
        return Err(SignError::GroupIdZero);
    }
    if objects.contains(&0) {
        return Err(SignError::ObjectIdZero);
    }
    if opts.legacy_all {
        objects.extend(
            sif.objects()
                .filter(|d| d.data_type != DataType::Signature && d.group() != 0)
                .map(|d| d.id),
        );
    }
    if groups.is_empty() && objects.is_empty() {
        if legacy {
            // Legacy default: the primary system partition only.
            let p = sif
                .primary_partition()
                .ok_or(SignError::NoPrimaryPartition)?;
            objects.insert(p.id);
        } else {
            groups = sif
                .objects()
                .map(|d| d.group())
                .filter(|&g| g != 0)
                .collect();
            if groups.is_empty() {
                return Err(SignError::NoGroups);
            }
        }
    }
    let mut out = Vec::new();
    for g in groups {
        let members = group_members(sif, g)?;
        out.push(if legacy {
            Task::LegacyGroup {
                group: g,
                objects: members,
            }
        } else {
            Task::Group {
                group: g,
                objects: members,
                subset: false,
            }
        });
    }
    for id in objects {
        let d = sif.object(id).map_err(|_| SignError::ObjectNotFound(id))?;
        out.push(if legacy {
            Task::LegacyObject { object: d }
        } else {
            Task::Group {
                group: d.group(),
                objects: vec![d],
                subset: true,
            }
        });
    }
    Ok(out)
}

/// A signature object's bytes, bounded: signatures are small, a huge one is hostile.
fn signature_bytes<R: ReadAt>(sif: &Sif<R>, sig: &Descriptor) -> Result<Vec<u8>> {
    if sig.size as u64 > MAX_SIGNATURE_OBJECT {
        return Err(SignError::SignatureNotValid {
            id: sig.id,
            reason: Rejection::TooLarge {
                size: sig.size,
                limit: MAX_SIGNATURE_OBJECT,
            },
        });
    }
    Ok(sif.read_object(sig, MAX_SIGNATURE_OBJECT)?)
}

/// True if the signature object holds a legacy payload (decided without any key).
fn is_legacy<R: ReadAt>(sif: &Sif<R>, sig: &Descriptor) -> bool {
    match signature_bytes(sif, sig) {
        Ok(b) => pgp::check_cleartext(&b, &[])
            .map(|c| legacy::is_legacy_plaintext(&c.plaintext))
            .unwrap_or(false),
        Err(_) => false,
    }
}

fn descriptor_fpr(sig: &Descriptor) -> [u8; 20] {
    match sig.extra() {
        Extra::Signature {
            fingerprint: Some(f),
            ..
        } => f,
        _ => [0; 20],
    }
}

fn run_task<R: ReadAt>(
    sif: &Sif<R>,
    certs: &[Cert],
    dsse_keys: &[DsseKey],
    task: &Task<'_>,
    results: &mut Vec<SignatureResult>,
) -> Result<()> {
    let (sigs, target): (Vec<&Descriptor>, String) = match task {
        Task::Group { group, .. } | Task::LegacyGroup { group, .. } => {
            let want_legacy = matches!(task, Task::LegacyGroup { .. });
            let sigs: Vec<&Descriptor> = sif
                .objects_of_type(DataType::Signature)
                .filter(|s| s.link() == Link::Group(*group))
                .filter(|s| is_legacy(sif, s) == want_legacy)
                .collect();
            if sigs.is_empty() {
                return Err(SignError::GroupSignatureNotFound(*group));
            }
            (sigs, format!("group {group}"))
        }
        Task::LegacyObject { object } => {
            let sigs: Vec<&Descriptor> = sif
                .objects_of_type(DataType::Signature)
                .filter(|s| s.link() == Link::Object(object.id))
                .collect();
            if sigs.is_empty() {
                return Err(SignError::ObjectSignatureNotFound(object.id));
            }
            (sigs, format!("object {}", object.id))
        }
    };
    for sig in sigs {
        let mut r = SignatureResult {
            signature: sig.id,
            format: if matches!(task, Task::Group { .. }) {
                "pgp"
            } else {
                "legacy"
            },
            target: target.clone(),
            signer: None,
            fingerprint: None,
            key_source: None,
            descriptor_fingerprint: Some(descriptor_fpr(sig))
                .filter(|f| *f != [0; 20])
                .map(|f| hex_upper(&f)),
            verified: Vec::new(),
            error: None,
        };
        let res = check_signature(sif, certs, dsse_keys, task, sig, &mut r);
        if let Err(e) = &res {
            r.error = Some(e.to_string());
        }
        results.push(r);
        res?;
    }
    Ok(())
}

/// Checks one signature for one task, filling in `r` as facts become known.
fn check_signature<R: ReadAt>(
    sif: &Sif<R>,
    certs: &[Cert],
    dsse_keys: &[DsseKey],
    task: &Task<'_>,
    sig: &Descriptor,
    r: &mut SignatureResult,
) -> Result<()> {
    let data = signature_bytes(sif, sig)?;
    let (plaintext, signer_fpr) = signed_plaintext(&data, certs, dsse_keys, task, sig, r)?;
    // For OpenPGP, the descriptor must name the key that signed.
    let fpr_ok = signer_fpr.is_none_or(|f| f == descriptor_fpr(sig));
    match task {
        Task::Group {
            group,
            objects,
            subset,
        } => {
            let meta = parse_metadata(&plaintext, sig)?;
            let min_id = group_min_id(sif, *group).ok_or(SignError::GroupNotFound(*group))?;
            if !fpr_ok {
                return Err(SignError::FingerprintMismatch);
            }
            check_group(sif, &meta, min_id, objects, *subset, &mut r.verified)?;
        }
        Task::LegacyGroup { objects, .. } => {
            if !fpr_ok {
                return Err(SignError::FingerprintMismatch);
            }
            legacy::check(sif, sig, &plaintext, objects, None)?;
            r.verified = objects.iter().map(|d| d.id).collect();
        }
        Task::LegacyObject { object } => {
            if !fpr_ok {
                return Err(SignError::FingerprintMismatch);
            }
            legacy::check(sif, sig, &plaintext, &[object], Some(object.id))?;
            r.verified = vec![object.id];
        }
    }
    Ok(())
}

/// The plaintext a signature covers, once the signature itself checks out, and the
/// OpenPGP signer's primary fingerprint (DSSE signatures have none: their descriptor
/// Entity is empty).
fn signed_plaintext(
    data: &[u8],
    certs: &[Cert],
    dsse_keys: &[DsseKey],
    task: &Task<'_>,
    sig: &Descriptor,
    r: &mut SignatureResult,
) -> Result<(Vec<u8>, Option<[u8; 20]>)> {
    if dsse::is_envelope(data) {
        r.format = "dsse";
        if !matches!(task, Task::Group { .. }) {
            return Err(SignError::FormatNotRecognized(sig.id));
        }
        if dsse_keys.is_empty() {
            return Err(SignError::DsseNoKey(sig.id));
        }
        let hash = match sig.extra() {
            Extra::Signature {
                hash: crate::sif::HashType::Sha384,
                ..
            } => super::metadata::DigestAlg::Sha384,
            Extra::Signature {
                hash: crate::sif::HashType::Sha512,
                ..
            } => super::metadata::DigestAlg::Sha512,
            _ => super::metadata::DigestAlg::Sha256,
        };
        let (payload, keyid) = dsse::verify_envelope(data, dsse_keys, hash)
            .map_err(|reason| SignError::SignatureNotValid { id: sig.id, reason })?;
        r.signer = Some(format!("DSSE key {keyid}"));
        return Ok((payload, None));
    }
    let checked = pgp::check_cleartext(data, certs).map_err(|reason| {
        if pgp::is_clearsigned(data) {
            SignError::SignatureNotValid { id: sig.id, reason }
        } else {
            SignError::FormatNotRecognized(sig.id)
        }
    })?;
    let signer: SignerInfo = checked
        .outcome
        .map_err(|reason| SignError::SignatureNotValid { id: sig.id, reason })?;
    r.signer = signer.user_id.clone();
    r.fingerprint = Some(hex_upper(&signer.fingerprint));
    Ok((checked.plaintext, Some(signer.fingerprint)))
}

fn parse_metadata(plaintext: &[u8], sig: &Descriptor) -> Result<ImageMetadata> {
    serde_json::from_slice(plaintext).map_err(|e| SignError::SignatureNotValid {
        id: sig.id,
        reason: Rejection::Metadata(e),
    })
}

/// Checks a group's signed metadata against the image: the set of objects (unless
/// only a `subset` was asked for), the header and each object's descriptor and data.
/// Adds each object to `verified` once it checks out.
fn check_group<R: ReadAt>(
    sif: &Sif<R>,
    meta: &ImageMetadata,
    min_id: u32,
    objects: &[&Descriptor],
    subset: bool,
    verified: &mut Vec<u32>,
) -> Result<()> {
    let entries = meta.objects.as_deref().unwrap_or(&[]);
    let abs = |rel: u32| min_id.checked_add(rel);
    if !subset {
        let signed: BTreeSet<Option<u32>> = entries.iter().map(|o| abs(o.relative_id)).collect();
        for d in objects {
            if !signed.contains(&Some(d.id)) {
                return Err(SignError::ObjectNotSigned(d.id));
            }
        }
        for id in &signed {
            if !objects.iter().any(|d| Some(d.id) == *id) {
                let id = id.unwrap_or(u32::MAX);
                return Err(SignError::SignedObjectNotFound(id));
            }
        }
    }
    let hstream = header_stream(sif.header());
    if !digest_matches(&meta.header.digest, |alg| Ok(alg.hash(&hstream)))? {
        return Err(SignError::HeaderIntegrity);
    }
    for d in objects {
        let om = entries
            .iter()
            .find(|o| abs(o.relative_id) == Some(d.id))
            .ok_or(SignError::ObjectNotSigned(d.id))?;
        let dstream = descriptor_stream(d, om.relative_id);
        if !digest_matches(&om.descriptor_digest, |alg| Ok(alg.hash(&dstream)))? {
            return Err(SignError::DescriptorIntegrity(d.id));
        }
        if !digest_matches(&om.object_digest, |alg| hash_object(sif, d, alg))? {
            return Err(SignError::ObjectIntegrity(Some(d.id)));
        }
        verified.push(d.id);
    }
    Ok(())
}
