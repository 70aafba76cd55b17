//! `veil keyslot`: re-key an encrypted SIF without rebuilding it (in place for
//! LUKS2; a gocryptfs image is written again around its rewrapped key).
//!
//! - `add`: a passphrase keyslot, or an RSA recipient (a keyslot for a fresh random
//!   secret plus the crypto message wrapping it for the public key);
//! - `remove`: the keyslot a given key opens (and, for an RSA key, its crypto message),
//!   or a keyslot by number;
//! - `change`: the given key's keyslot is replaced by one for the new key. A gocryptfs
//!   image (fstype 6) has one password and no keyslots: `change` is how it is re-keyed
//!   (its master key is wrapped anew; the encrypted content is copied, not
//!   re-encrypted).
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
use crate::builder::{gocryptfs_rekey as gocryptfs, rekey};
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
    /// Replace the current key (--pem-path PRIVATE.pem or a passphrase) with a new passphrase or RSA recipient; the only way to re-key a gocryptfs image
    Change(ChangeArgs),
}

#[derive(Debug, Args)]
struct ChangeArgs {
    /// The encrypted SIF image (edited in place, or written again beside itself and renamed over it for a gocryptfs image)
    image: PathBuf,
    #[command(flatten)]
    current: EncryptionArgs,
    #[command(flatten)]
    new: NewKeyArgs,
}

/// The new key of `add` and `change`.
#[derive(Debug, Args)]
struct NewKeyArgs {
    /// New RSA recipient: a public key (PKCS#1, SPKI or OpenSSH)
    #[arg(long, value_name = "FILE")]
    new_pem_path: Option<PathBuf>,
    /// New passphrase, asked twice on the terminal
    #[arg(long)]
    new_passphrase: bool,
    /// New passphrase from a file (one trailing newline is dropped)
    #[arg(long, value_name = "FILE")]
    new_passphrase_file: Option<PathBuf>,
    /// Upper bound of the argon2id memory cost of a LUKS2 passphrase keyslot, MiB
    #[arg(long, value_name = "MIB", default_value_t = 256)]
    kdf_memory: u32,
    /// Target unlock time of a LUKS2 passphrase keyslot, milliseconds
    #[arg(long, value_name = "MS", default_value_t = 2000)]
    kdf_time: u32,
}

impl NewKeyArgs {
    /// The new key, exactly one of the three flags.
    fn key(&self) -> Result<BuildKey> {
        let given = [
            self.new_pem_path.is_some(),
            self.new_passphrase,
            self.new_passphrase_file.is_some(),
        ];
        if given.iter().filter(|g| **g).count() != 1 {
            bail!("give exactly one of --new-pem-path, --new-passphrase, --new-passphrase-file");
        }
        let flags = KeyFlags {
            pem_path: self.new_pem_path.clone(),
            passphrase: self.new_passphrase,
            passphrase_file: self.new_passphrase_file.clone(),
            ..Default::default()
        };
        select_for_build(&flags, true)?.context("no new key")
    }

    fn cost(&self) -> KdfCost {
        KdfCost {
            max_memory_kib: self.kdf_memory.max(1).saturating_mul(1024),
            target_ms: self.kdf_time.max(1),
        }
    }
}

#[derive(Debug, Args)]
struct AddArgs {
    /// The encrypted SIF image (edited in place)
    image: PathBuf,
    #[command(flatten)]
    current: EncryptionArgs,
    #[command(flatten)]
    new: NewKeyArgs,
    /// With --new-pem-path: replace the image's current RSA recipient (its keyslot is removed when the current key is that recipient's private key)
    #[arg(long)]
    replace: bool,
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
    // Every keyslot command writes temporaries (a copy of the LUKS2 header areas, or
    // the new image): they go on SIGINT/SIGTERM/SIGHUP.
    crate::builder::cleanup::install_for("veil keyslot");
    match a.command {
        KeyslotCommand::Add(a) => add(a),
        KeyslotCommand::Remove(a) => remove(a),
        KeyslotCommand::Change(a) => change(a),
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
    a.current.apply_key_settings();
    let img = &a.image;
    let _lock = rekey::lock(img)?;
    let p = rekey::partition(img)?;
    let current = select_from_env(&a.current.flags())
        .with_context(|| format!("the current key is needed: {HOW_TO_GIVE_A_KEY}"))?;
    if a.replace && a.new.new_pem_path.is_none() {
        bail!("--replace goes with --new-pem-path");
    }
    let new_key = a.new.key()?;
    let (existing, opened_msg) = unlock_key(&current, &p)?;
    let old_slot = rekey::slot_of(img, &p, &existing)?;
    match new_key {
        BuildKey::Passphrase(new) => {
            let cost = a.new.cost();
            let slot =
                rekey::add_keyslot(img, &p, &existing, &new, &encrypt::passphrase_keyslot(cost))?;
            crate::say_info!("veil keyslot: added passphrase keyslot {slot}");
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
            crate::say_info!("veil keyslot: added RSA recipient keyslot {slot}");
            if a.replace && opened_msg.is_some() && old_slot != slot {
                let p = rekey::partition(img)?;
                rekey::remove_keyslot(img, &p, old_slot)?;
                crate::say_info!(
                    "veil keyslot: removed the previous recipient's keyslot {old_slot}"
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn remove(a: RemoveArgs) -> Result<ExitCode> {
    a.key.apply_key_settings();
    let img = &a.image;
    let _lock = rekey::lock(img)?;
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
    crate::say_info!("veil keyslot: removed keyslot {slot}");
    Ok(ExitCode::SUCCESS)
}

fn change(a: ChangeArgs) -> Result<ExitCode> {
    a.current.apply_key_settings();
    // The file itself, resolved once: a gocryptfs image is replaced by a new file,
    // which must be the one locked and read.
    let img = &std::fs::canonicalize(&a.image).with_context(|| format!("{}", a.image.display()))?;
    let current = select_from_env(&a.current.flags())
        .with_context(|| format!("the current key is needed: {HOW_TO_GIVE_A_KEY}"))?;
    let new_key = a.new.key()?;
    let _lock = rekey::lock(img)?;
    // No core dump or ptrace of a process holding the keys.
    let _ = nix::sys::prctl::set_dumpable(false);
    if rekey::is_gocryptfs(img)? {
        let new = match new_key {
            BuildKey::Passphrase(p) => gocryptfs::NewKey::Passphrase(p),
            BuildKey::Recipient(k) => gocryptfs::NewKey::Recipient(k),
        };
        let r = gocryptfs::change_key(img, &current, new)?;
        crate::say_info!(
            "veil keyslot: the gocryptfs master key is now wrapped for {}",
            if r.to_recipient {
                "the new RSA recipient"
            } else {
                "the new passphrase"
            }
        );
        if r.changed.dropped_signatures > 0 {
            crate::say_warn!(
                "veil keyslot: {} signature(s) of the old partition were removed; sign the image again",
                r.changed.dropped_signatures
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let p = rekey::partition(img)?;
    let (existing, opened_msg) = unlock_key(&current, &p)?;
    let old_slot = rekey::slot_of(img, &p, &existing)?;
    if matches!(new_key, BuildKey::Recipient(_))
        && p.messages.iter().any(|(id, _)| Some(*id) != opened_msg)
    {
        bail!(
            "the image has an RSA recipient whose keyslot the current key does not open, and Apptainer reads only one crypto message: remove that recipient first (`veil keyslot remove --pem-path ITS-PRIVATE.pem`, or `--slot N`)"
        );
    }
    let slot = match new_key {
        BuildKey::Passphrase(new) => {
            let slot = rekey::add_keyslot(
                img,
                &p,
                &existing,
                &new,
                &encrypt::passphrase_keyslot(a.new.cost()),
            )?;
            // The message the old key came through goes with its keyslot (a
            // recipient replaced by a passphrase).
            if let Some(id) = opened_msg {
                rekey::delete_message(img, id)?;
            }
            slot
        }
        BuildKey::Recipient(key) => {
            let secret = encrypt::random_secret()?;
            let msg = crate::crypt::message::wrap_secret(&key, &secret)?;
            let new = veil_fusefs::luks2::Passphrase::from_slice(&secret);
            let slot = rekey::add_keyslot(img, &p, &existing, &new, &encrypt::secret_keyslot())?;
            for (id, _) in &p.messages {
                rekey::delete_message(img, *id)?;
            }
            rekey::add_message(img, &p, &msg)?;
            slot
        }
    };
    let p = rekey::partition(img)?;
    rekey::remove_keyslot(img, &p, old_slot)?;
    crate::say_info!("veil keyslot: replaced keyslot {old_slot} with keyslot {slot}");
    Ok(ExitCode::SUCCESS)
}
