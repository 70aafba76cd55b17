//! `veil keyslot`: re-key an encrypted SIF in place, without rebuilding it.
//!
//! - `add`: a passphrase keyslot, or an RSA recipient (a keyslot for a fresh random
//!   secret plus the crypto message wrapping it for the public key);
//! - `remove`: the keyslot a given key opens (and, for an RSA key, its crypto message),
//!   or a keyslot by number.
//!
//! Decrypting to a plain image and re-encrypting with a new volume key are builds:
//! `veil build plain.sif enc.sif --source-pem-path key.pem`.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};

use super::encryption::EncryptionArgs;
use crate::builder::encrypt::{self, KdfCost};
use crate::builder::rekey;
use crate::crypt::source::{
    BuildKey, HOW_TO_GIVE_A_KEY, KeyFlags, KeySource, select_for_build, select_from_env,
};

#[derive(Debug, Args)]
pub struct KeyslotArgs {
    #[command(subcommand)]
    command: KeyslotCommand,
}

#[derive(Debug, Subcommand)]
enum KeyslotCommand {
    /// Add a passphrase or an RSA recipient; the current key (--pem-path PRIVATE.pem or a passphrase) unlocks the image
    Add(AddArgs),
    /// Remove the keyslot the given key opens (or --slot N)
    Remove(RemoveArgs),
}

#[derive(Debug, Args)]
struct AddArgs {
    /// The encrypted SIF image (edited in place)
    image: PathBuf,
    #[command(flatten)]
    current: EncryptionArgs,
    /// New RSA recipient: a public key (PKCS#1, SPKI or OpenSSH)
    #[arg(long, value_name = "FILE")]
    new_pem_path: Option<PathBuf>,
    /// With --new-pem-path: replace the image's current RSA recipient (its keyslot is removed when the current key is that recipient's private key)
    #[arg(long)]
    replace: bool,
    /// New passphrase, asked twice on the terminal
    #[arg(long)]
    new_passphrase: bool,
    /// New passphrase from a file (one trailing newline is dropped)
    #[arg(long, value_name = "FILE")]
    new_passphrase_file: Option<PathBuf>,
    /// Upper bound of the argon2id memory cost of a passphrase keyslot, MiB
    #[arg(long, value_name = "MIB", default_value_t = 256)]
    kdf_memory: u32,
    /// Target unlock time of a passphrase keyslot, milliseconds
    #[arg(long, value_name = "MS", default_value_t = 2000)]
    kdf_time: u32,
}

#[derive(Debug, Args)]
struct RemoveArgs {
    /// The encrypted SIF image (edited in place)
    image: PathBuf,
    /// The key whose keyslot goes (--pem-path PRIVATE.pem or a passphrase)
    #[command(flatten)]
    key: EncryptionArgs,
    /// Remove this keyslot number instead
    #[arg(long, value_name = "N")]
    slot: Option<u32>,
}

pub fn run(a: KeyslotArgs) -> Result<ExitCode> {
    match a.command {
        KeyslotCommand::Add(a) => add(a),
        KeyslotCommand::Remove(a) => remove(a),
    }
}

/// The key the user gave, turned into the LUKS2 passphrase, with the message it
/// decrypted (PEM keys try each crypto message of the image). The key is read once.
fn unlock_key(
    src: &KeySource,
    p: &rekey::Partition,
) -> Result<(veil_fusefs::luks2::Passphrase, Option<u32>)> {
    // No core dump or ptrace of a process holding the key.
    let _ = nix::sys::prctl::set_dumpable(false);
    if !src.is_pem() {
        return Ok((src.for_run(None)?, None));
    }
    if p.messages.is_empty() {
        bail!("the image has no RSA recipient (crypto message); give its passphrase instead");
    }
    let key = src.read_for_run()?;
    let mut last = None;
    for (id, msg) in &p.messages {
        match key.passphrase_for(Some(msg)) {
            Ok(k) => return Ok((k, Some(*id))),
            Err(e) => last = Some(e),
        }
    }
    Err(last
        .map(anyhow::Error::from)
        .unwrap_or_else(|| anyhow::anyhow!("no message")))
    .context("the RSA key decrypts none of the image's crypto messages")
}

fn add(a: AddArgs) -> Result<ExitCode> {
    a.current.apply_kdf_limit();
    let img = &a.image;
    let p = rekey::partition(img)?;
    let current = select_from_env(&a.current.flags())
        .with_context(|| format!("the current key is needed: {HOW_TO_GIVE_A_KEY}"))?;
    let new_flags = KeyFlags {
        pem_path: a.new_pem_path.clone(),
        passphrase: a.new_passphrase,
        passphrase_file: a.new_passphrase_file.clone(),
        ..Default::default()
    };
    let given = [
        a.new_pem_path.is_some(),
        a.new_passphrase,
        a.new_passphrase_file.is_some(),
    ];
    if given.iter().filter(|g| **g).count() != 1 {
        bail!("give exactly one of --new-pem-path, --new-passphrase, --new-passphrase-file");
    }
    if a.replace && a.new_pem_path.is_none() {
        bail!("--replace goes with --new-pem-path");
    }
    let (existing, opened_msg) = unlock_key(&current, &p)?;
    let old_slot = rekey::slot_of(img, &p, &existing)?;
    match select_for_build(&new_flags, true)?.context("no new key")? {
        BuildKey::Passphrase(new) => {
            let cost = KdfCost {
                max_memory_kib: a.kdf_memory.max(1).saturating_mul(1024),
                target_ms: a.kdf_time.max(1),
            };
            let slot =
                rekey::add_keyslot(img, &p, &existing, &new, &encrypt::passphrase_keyslot(cost))?;
            eprintln!("veil keyslot: added passphrase keyslot {slot}");
        }
        BuildKey::Recipient(key) => {
            if !p.messages.is_empty() && !a.replace {
                bail!(
                    "the image already has an RSA recipient, and Apptainer and SingularityCE read only the first crypto message; use --replace to switch recipients"
                );
            }
            let secret = encrypt::random_secret()?;
            let msg = crate::crypt::message::wrap_secret(&key, &secret)?;
            let new = veil_fusefs::luks2::Passphrase::from_slice(&secret);
            let slot = rekey::add_keyslot(img, &p, &existing, &new, &encrypt::secret_keyslot())?;
            for (id, _) in &p.messages {
                rekey::delete_message(img, *id)?;
            }
            rekey::add_message(img, &p, &msg)?;
            eprintln!("veil keyslot: added RSA recipient keyslot {slot}");
            if a.replace && opened_msg.is_some() && old_slot != slot {
                let p = rekey::partition(img)?;
                rekey::remove_keyslot(img, &p, old_slot)?;
                eprintln!("veil keyslot: removed the previous recipient's keyslot {old_slot}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn remove(a: RemoveArgs) -> Result<ExitCode> {
    a.key.apply_kdf_limit();
    let img = &a.image;
    let p = rekey::partition(img)?;
    let (slot, msg) = match a.slot {
        Some(s) => (s, None),
        None => {
            let src = select_from_env(&a.key.flags()).with_context(|| {
                format!("say which keyslot to remove: --slot N, or its key ({HOW_TO_GIVE_A_KEY})")
            })?;
            let (k, msg) = unlock_key(&src, &p)?;
            (rekey::slot_of(img, &p, &k)?, msg)
        }
    };
    rekey::remove_keyslot(img, &p, slot)?;
    if let Some(id) = msg {
        rekey::delete_message(img, id)?;
    }
    eprintln!("veil keyslot: removed keyslot {slot}");
    Ok(ExitCode::SUCCESS)
}
