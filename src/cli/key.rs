//! `veil key …`: OpenPGP key management in `~/.veil/keys`, modelled on `apptainer key`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};

use crate::sif::report::format_time;
use crate::sign::keyring::{self, KeyInfo, KeyKind, KeyStore, NewKey, Ring};
use crate::sign::passphrase::PassphraseSource;

#[derive(Debug, Args)]
pub struct KeyArgs {
    #[command(subcommand)]
    command: KeyCommand,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum KeyType {
    Rsa,
    Ed25519,
}

#[derive(Debug, Subcommand)]
enum KeyCommand {
    /// Create a new key pair and add it to the keyrings
    Newpair {
        /// Name in the user ID
        #[arg(short = 'N', long)]
        name: String,
        /// E-mail address in the user ID
        #[arg(short = 'E', long, default_value = "")]
        email: String,
        /// Comment in the user ID
        #[arg(short = 'C', long, default_value = "")]
        comment: String,
        /// Key algorithm
        #[arg(long = "type", value_enum, default_value_t = KeyType::Rsa)]
        key_type: KeyType,
        /// RSA key size in bits (2048, 3072 or 4096)
        #[arg(short = 'b', long, default_value_t = 4096)]
        bit_length: u32,
        /// Read the new key's passphrase from this file (else VEIL_PASSPHRASE, else ask)
        #[arg(long)]
        passphrase_file: Option<PathBuf>,
    },
    /// List the keys in the keyrings
    List {
        /// List secret keys (the order is the one --keyidx uses)
        #[arg(short, long)]
        secret: bool,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Import keys from a file (armored or binary; public or secret)
    Import {
        file: PathBuf,
        /// Passphrase to protect an imported unprotected secret key, from this file
        /// (else VEIL_PASSPHRASE, else ask; empty leaves it unprotected)
        #[arg(long)]
        passphrase_file: Option<PathBuf>,
    },
    /// Export a key to a file ("-" for stdout)
    Export {
        /// Fingerprint or key ID
        key: String,
        output: PathBuf,
        /// Export the secret key (as stored: still protected by its passphrase)
        #[arg(short, long)]
        secret: bool,
        /// ASCII-armor the output
        #[arg(short, long)]
        armor: bool,
    },
    /// Remove a key from veil's keyrings
    Remove {
        /// Fingerprint or key ID
        key: String,
        /// Remove from the secret keyring instead of the public one
        #[arg(short, long, conflicts_with = "both")]
        secret: bool,
        /// Remove from both keyrings
        #[arg(long)]
        both: bool,
    },
}

pub fn run(args: KeyArgs) -> Result<ExitCode> {
    let store = KeyStore::from_env()?;
    let mut out = std::io::stdout().lock();
    match args.command {
        KeyCommand::Newpair {
            name,
            email,
            comment,
            key_type,
            bit_length,
            passphrase_file,
        } => {
            let kind = match key_type {
                KeyType::Rsa => KeyKind::Rsa(bit_length),
                KeyType::Ed25519 => KeyKind::Ed25519,
            };
            let pass = PassphraseSource::standard(passphrase_file)
                .get("Enter a passphrase for the new key: ", true)?;
            if pass.is_empty() {
                eprintln!("veil: warning: the secret key is not protected by a passphrase");
            }
            let spec = NewKey {
                name,
                email,
                comment,
                kind,
            };
            let cert = keyring::generate(&spec, &pass)?;
            store.add(Ring::Secret, cert.clone())?;
            store.add(Ring::Public, cert.clone().strip_secret_key_material())?;
            writeln!(
                out,
                "Generated key pair with fingerprint {}",
                cert.fingerprint().to_hex()
            )?;
        }
        KeyCommand::List { secret, json } => {
            let (certs, path) = if secret {
                (store.signing_keys()?, store.path(Ring::Secret))
            } else {
                (store.load_all(Ring::Public)?, store.path(Ring::Public))
            };
            let infos: Vec<KeyInfo> = certs
                .iter()
                .enumerate()
                .map(|(i, c)| keyring::describe(i, c))
                .collect();
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&infos)?)?;
            } else {
                let kind = if secret { "Private" } else { "Public" };
                writeln!(out, "{kind} key listing ({}):\n", path.display())?;
                for k in &infos {
                    write_key(&mut out, k)?;
                }
            }
        }
        KeyCommand::Import {
            file,
            passphrase_file,
        } => {
            let certs = keyring::read_key_file(&file)?;
            let source = PassphraseSource::standard(passphrase_file);
            for cert in certs {
                let fpr = cert.fingerprint().to_hex();
                if cert.is_tsk() {
                    let unprotected = cert
                        .keys()
                        .secret()
                        .any(|k| k.key().has_unencrypted_secret());
                    let cert = if unprotected {
                        let pass = source.get(
                            &format!("Enter a passphrase to protect secret key {fpr}: "),
                            true,
                        )?;
                        if pass.is_empty() {
                            eprintln!(
                                "veil: warning: secret key {fpr} is stored without a passphrase"
                            );
                        }
                        keyring::protect(cert, &pass)?
                    } else {
                        cert
                    };
                    store.add(Ring::Secret, cert.clone())?;
                    store.add(Ring::Public, cert.strip_secret_key_material())?;
                    writeln!(out, "Imported secret key {fpr}")?;
                } else {
                    let new = store.add(Ring::Public, cert)?;
                    if new {
                        writeln!(out, "Imported public key {fpr}")?;
                    } else {
                        writeln!(out, "Updated public key {fpr}")?;
                    }
                }
            }
        }
        KeyCommand::Export {
            key,
            output,
            secret,
            armor,
        } => {
            let sel = keyring::Selector::parse(&key)?;
            let certs = if secret {
                store.signing_keys()?
            } else {
                store.verification_certs()?
            };
            let found: Vec<_> = certs.into_iter().filter(|c| sel.matches(c)).collect();
            match found.len() {
                0 => bail!(
                    "no {} key matches {key}",
                    if secret { "secret" } else { "public" }
                ),
                1 => {}
                n => bail!("{n} keys match {key}: give the full fingerprint"),
            }
            let bytes = keyring::export(&found, secret, armor)?;
            if output.as_os_str() == "-" {
                out.write_all(&bytes)?;
            } else {
                crate::fsutil::write_atomic(&output, |w| w.write_all(&bytes))
                    .with_context(|| format!("writing {}", output.display()))?;
                if secret {
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::set_permissions(&output, std::fs::Permissions::from_mode(0o600))?;
                }
                writeln!(
                    out,
                    "Exported {} key {} to {}",
                    if secret { "secret" } else { "public" },
                    found[0].fingerprint().to_hex(),
                    output.display()
                )?;
            }
        }
        KeyCommand::Remove { key, secret, both } => {
            let rings: &[Ring] = match (secret, both) {
                (_, true) => &[Ring::Public, Ring::Secret],
                (true, _) => &[Ring::Secret],
                _ => &[Ring::Public],
            };
            let mut removed = 0;
            for &ring in rings {
                for c in store.remove(ring, &key)? {
                    removed += 1;
                    let what = if ring == Ring::Secret {
                        "secret"
                    } else {
                        "public"
                    };
                    writeln!(out, "Removed {what} key {}", c.fingerprint().to_hex())?;
                }
            }
            if removed == 0 {
                bail!("no key matching {key} in {}", store.dir.display());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One key in `apptainer key list` style.
fn write_key(out: &mut impl Write, k: &KeyInfo) -> std::io::Result<()> {
    let uids = if k.user_ids.is_empty() {
        vec![String::new()]
    } else {
        k.user_ids.clone()
    };
    for (i, u) in uids.iter().enumerate() {
        if i == 0 {
            writeln!(out, "{}) User:              {u}", k.index)?;
        } else {
            writeln!(out, "   User:              {u}")?;
        }
    }
    writeln!(out, "   Creation time:     {}", format_time(k.created))?;
    writeln!(out, "   Fingerprint:       {}", k.fingerprint)?;
    writeln!(out, "   Type:              {}", k.algorithm)?;
    writeln!(
        out,
        "   Length (in bits):  {}",
        k.bits.map(|b| b.to_string()).unwrap_or_else(|| "-".into())
    )?;
    if k.secret {
        writeln!(
            out,
            "   Protected:         {}",
            if k.protected { "yes" } else { "no" }
        )?;
    }
    writeln!(out)
}
