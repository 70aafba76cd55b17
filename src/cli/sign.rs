//! `veil sign` and `veil verify`: SIF signatures in the SingularityCE/Apptainer format.

#![forbid(unsafe_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::sif::{Sif, report::hex_upper};
use crate::sign::dsse::{DsseKey, is_pem_public_key};
use crate::sign::keyring::{self, KeyStore};
use crate::sign::passphrase::PassphraseSource;
use crate::sign::pgp::fpr20;
use crate::sign::{Selection, VerifyOptions, sign_image};

#[derive(Debug, Args)]
pub struct SignArgs {
    image: PathBuf,
    /// Sign only this object group
    #[arg(short = 'g', long, alias = "groupid", conflicts_with_all = ["sif_id", "all"])]
    group_id: Option<u32>,
    /// Sign only these objects (repeatable; one signature per group they are in)
    #[arg(short = 'i', long = "sif-id", alias = "id", conflicts_with = "all")]
    sif_id: Vec<u32>,
    /// Sign every group (the default)
    #[arg(short = 'a', long)]
    all: bool,
    /// Use the Nth secret key, as `veil key list --secret` numbers them
    #[arg(short = 'k', long)]
    keyidx: Option<usize>,
    /// Read the key's passphrase from this file (else VEIL_PASSPHRASE, else ask)
    #[arg(long)]
    passphrase_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    registry: super::registry::ContainerRegistryArgs,
    /// The SIF image, or oras://REGISTRY/REPOSITORY:TAG
    image: PathBuf,
    /// Verify this object group (repeatable)
    #[arg(short = 'g', long, alias = "groupid")]
    group_id: Vec<u32>,
    /// Verify these objects (repeatable)
    #[arg(short = 'i', long = "sif-id", alias = "id")]
    sif_id: Vec<u32>,
    /// With --legacy-insecure: verify every grouped object's own legacy signature
    #[arg(short = 'a', long, requires = "legacy_insecure")]
    all: bool,
    /// Accept legacy signatures (they do not protect the header or descriptors)
    #[arg(long)]
    legacy_insecure: bool,
    /// Verify with the keys in this file instead of the keyrings (repeatable): an OpenPGP
    /// public key (armored or binary) for PGP signatures, or a PEM public key for DSSE
    /// signatures
    #[arg(long, conflicts_with = "url")]
    key: Vec<PathBuf>,
    /// Use only the local keyrings: never fetch a missing signer's key from a keyserver
    /// (also VEIL_LOCAL_VERIFY, APPTAINER_LOCAL_VERIFY, SINGULARITY_LOCAL_VERIFY)
    #[arg(short = 'l', long, conflicts_with = "url")]
    local: bool,
    #[command(flatten)]
    url: super::keyserver::UrlArg,
    /// Print the result as JSON
    #[arg(short = 'j', long)]
    json: bool,
}

pub fn run_sign(args: SignArgs) -> Result<ExitCode> {
    let store = KeyStore::from_env()?;
    let keys = store.signing_keys()?;
    let cert = match (args.keyidx, keys.len()) {
        (_, 0) => bail!(
            "no secret keys in {}: create one with `veil key newpair` or import one",
            store.path(keyring::Ring::Secret).display()
        ),
        (Some(i), n) if i >= n => bail!(
            "--keyidx {i} is out of range: there are {n} secret keys (see `veil key list --secret`)"
        ),
        (Some(i), _) => &keys[i],
        (None, 1) => &keys[0],
        (None, n) => bail!(
            "there are {n} secret keys: choose one with --keyidx (see `veil key list --secret`)"
        ),
    };
    let fingerprint =
        fpr20(&cert.fingerprint()).context("only OpenPGP v4 keys can sign SIF images")?;
    let source = PassphraseSource::standard(args.passphrase_file);
    let fpr_hex = hex_upper(&fingerprint);
    let keypair = keyring::signing_keypair(cert, || {
        source.get(&format!("Enter the passphrase for key {fpr_hex}: "), false)
    })?;
    let sel = match (args.group_id, args.sif_id.is_empty()) {
        (Some(g), _) => Selection::Group(g),
        (None, false) => Selection::Objects(args.sif_id),
        (None, true) => Selection::AllGroups,
    };
    let signed = sign_image(&args.image, &keypair, fingerprint, &sel)
        .with_context(|| format!("signing {}", args.image.display()))?;
    let mut out = std::io::stdout().lock();
    for s in &signed {
        writeln!(
            out,
            "Signature object {} (group {}, objects {:?}) created with key {fpr_hex}",
            s.signature, s.group, s.objects
        )?;
    }
    writeln!(
        out,
        "Signature created and applied to image '{}'",
        args.image.display()
    )?;
    Ok(ExitCode::SUCCESS)
}

pub fn run_verify(mut args: VerifyArgs) -> Result<ExitCode> {
    let local_from = if args.local {
        Some("--local".to_string())
    } else {
        super::keyserver::env_switch(&[
            "VEIL_LOCAL_VERIFY",
            "APPTAINER_LOCAL_VERIFY",
            "SINGULARITY_LOCAL_VERIFY",
        ])?
    };
    args.image = args.registry.local(&args.image)?;
    // --key files replace the keyrings: OpenPGP keys (armored or binary) check PGP
    // signatures, PEM public keys check DSSE signatures.
    let mut certs = Vec::new();
    let mut dsse_keys = Vec::new();
    if args.key.is_empty() {
        certs = KeyStore::from_env()?.verification_certs()?;
    }
    for k in &args.key {
        let bytes =
            std::fs::read(k).with_context(|| format!("reading key file {}", k.display()))?;
        if is_pem_public_key(&bytes) {
            dsse_keys.push(
                DsseKey::from_pem(&bytes).with_context(|| format!("key file {}", k.display()))?,
            );
        } else {
            certs.extend(keyring::read_key_file(k)?);
        }
    }
    let sif =
        Sif::open_path(&args.image).with_context(|| format!("reading {}", args.image.display()))?;
    let opts = VerifyOptions {
        groups: args.group_id,
        objects: args.sif_id,
        legacy: args.legacy_insecure,
        legacy_all: args.all,
        dsse_keys,
    };
    // Keys named by --key replace the keyrings, and the keyservers too; and with
    // every signer's key at hand no keyserver setting is even read.
    let missing = crate::trust::missing_signers(&sif, &certs, &opts);
    let chosen = if local_from.is_some() || !args.key.is_empty() || missing.is_empty() {
        None
    } else {
        Some(args.url.chosen()?)
    };
    let verified = crate::trust::verify(&sif, certs, &opts, chosen.as_ref())
        .with_context(|| format!("verifying {}", args.image.display()))?;
    let outcome = verified.outcome;
    for w in &verified.warnings {
        crate::say_warn!("veil: warning: {w}");
    }
    if outcome.is_ok() && !verified.remote.is_empty() && !args.json {
        crate::say_warn!(
            "veil: note: {} signer key(s) came from a keyserver for this check only: a signature proves who signed, not that you trust them; compare the fingerprint with one you know, then `veil key pull` it",
            verified.remote.len()
        );
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        let v = serde_json::json!({
            "image": args.image.display().to_string(),
            "verified": outcome.is_ok(),
            "remote_keys": verified.remote,
            "signatures": outcome.results,
            "error": outcome.error.as_ref().map(|e| e.to_string()),
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
    } else {
        write_results(&mut out, &outcome.results, &sif)?;
    }
    match outcome.error {
        None => {
            if !args.json {
                writeln!(out, "Container verified: {}", args.image.display())?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(e) => {
            drop(out);
            let hint = match &local_from {
                Some(from) if args.key.is_empty() && !missing.is_empty() => format!(
                    " (without {from}, a signer's key missing from the keyrings is fetched from the keyserver)"
                ),
                _ => String::new(),
            };
            Err(anyhow::Error::new(e)
                .context(format!(
                    "failed to verify container {}{hint}",
                    args.image.display()
                ))
                .context(super::exit::Tagged(super::exit::Failure::Verification)))
        }
    }
}

/// The results as text, each signer marked [LOCAL] or [REMOTE] by its key's source.
fn write_results(
    out: &mut impl Write,
    results: &[crate::sign::SignatureResult],
    sif: &Sif<impl veil_fusefs::source::ReadAt>,
) -> Result<()> {
    for r in results {
        writeln!(
            out,
            "Signature object {} ({}, {}):",
            r.signature,
            match r.format {
                "legacy" => "legacy PGP",
                "dsse" => "DSSE",
                _ => "PGP",
            },
            r.target
        )?;
        let tag = match r.key_source {
            Some("remote") => "[REMOTE]",
            _ => "[LOCAL] ",
        };
        if let Some(s) = &r.signer {
            // A user ID is the key holder's text: no terminal control reaches the screen.
            let s = crate::registry::printable(s);
            writeln!(out, "{tag}  Signing entity: {s}")?;
        }
        if let Some(f) = r.fingerprint.as_ref().or(r.descriptor_fingerprint.as_ref()) {
            writeln!(out, "{tag}  Fingerprint: {f}")?;
        }
        if !r.verified.is_empty() {
            writeln!(out, "Objects verified:")?;
            writeln!(out, "ID  |GROUP   |LINK    |TYPE")?;
            writeln!(out, "{}", "-".repeat(48))?;
            for id in &r.verified {
                if let Ok(d) = sif.object(*id) {
                    writeln!(
                        out,
                        "{:<4}|{:<8}|{:<8}|{}",
                        d.id,
                        group_text(d.group()),
                        link_text(d.link()),
                        d.data_type
                    )?;
                }
            }
        }
    }
    Ok(())
}

fn group_text(g: u32) -> String {
    if g == 0 { "NONE".into() } else { g.to_string() }
}

fn link_text(l: crate::sif::Link) -> String {
    match l {
        crate::sif::Link::None => "NONE".into(),
        crate::sif::Link::Object(id) => id.to_string(),
        crate::sif::Link::Group(g) => format!("{g} (G)"),
    }
}
