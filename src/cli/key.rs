//! `veil key …`: OpenPGP key management in `~/.veil/keys`, modelled on `apptainer key`.

#![forbid(unsafe_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Subcommand, ValueEnum};

use crate::sif::report::format_time;
use crate::sign::keyring::{KeyInfo, KeyKind, KeyStore, NewKey, Ring};
use crate::sign::keys::{self, Imported};
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
        #[arg(long, conflicts_with = "password")]
        passphrase_file: Option<PathBuf>,
        /// The new key's passphrase itself (Apptainer's form: other users can see it in
        /// the process list; prefer --passphrase-file)
        #[arg(short = 'P', long)]
        password: Option<String>,
        /// Publish the public key on the keyserver once made (see `veil key push`)
        #[arg(short = 'U', long)]
        push: bool,
        #[command(flatten)]
        url: super::keyserver::UrlArg,
    },
    /// List the keys in the keyrings
    List {
        /// List secret keys (the order is the one --keyidx uses)
        #[arg(short, long, alias = "private")]
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
    /// Export a key to a file ("-" for stdout): `export [KEY] OUTPUT`; without KEY,
    /// the only key, or a choice from a numbered list on a terminal
    Export {
        /// Fingerprint or key ID, then the output; or the output alone
        #[arg(num_args = 1..=2, required = true, value_names = ["KEY", "OUTPUT"])]
        args: Vec<String>,
        /// Export the secret key (as stored: still protected by its passphrase)
        #[arg(short, long, alias = "private")]
        secret: bool,
        /// ASCII-armor the output
        #[arg(short, long)]
        armor: bool,
    },
    /// Search a keyserver for keys by name, e-mail address, key ID or fingerprint
    Search {
        /// What to look for
        text: String,
        #[command(flatten)]
        url: super::keyserver::UrlArg,
        /// Show each key's algorithm, dates and status too
        #[arg(short = 'l', long)]
        long_list: bool,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Fetch a public key from a keyserver into the public keyring (by fingerprint,
    /// checked against what comes back)
    Pull {
        /// The key's fingerprint (40 hexadecimal digits)
        fingerprint: String,
        #[command(flatten)]
        url: super::keyserver::UrlArg,
    },
    /// Publish a public key from the keyrings on a keyserver
    Push {
        /// Fingerprint or key ID
        key: String,
        #[command(flatten)]
        url: super::keyserver::UrlArg,
    },
    /// Remove a key from veil's keyrings
    Remove {
        /// Fingerprint or key ID
        key: String,
        /// Remove from the secret keyring instead of the public one
        #[arg(short, long, alias = "private", conflicts_with = "both")]
        secret: bool,
        /// The public keyring (the default; with --secret: both, as Apptainer's -p -r)
        #[arg(short, long)]
        public: bool,
        /// Remove from both keyrings
        #[arg(short, long)]
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
            password,
            push,
            url,
        } => {
            let kind = match key_type {
                KeyType::Rsa => KeyKind::Rsa(bit_length),
                KeyType::Ed25519 => KeyKind::Ed25519,
            };
            let spec = NewKey {
                name,
                email,
                comment,
                kind,
            };
            let pass = match password {
                Some(p) => {
                    crate::say_warn!(
                        "veil: warning: a passphrase on the command line is visible to other users of this machine; --passphrase-file is safer"
                    );
                    crate::sign::passphrase::Passphrase::new(p)
                }
                None => PassphraseSource::standard(passphrase_file)
                    .get("Enter a passphrase for the new key: ", true)?,
            };
            let fpr = newpair(&store, &mut out, &spec, &pass)?;
            if push {
                push_key(&store, &mut out, &url, &fpr)?;
            }
        }
        KeyCommand::List { secret, json } => list(&store, &mut out, secret, json)?,
        KeyCommand::Import {
            file,
            passphrase_file,
        } => import(&store, &mut out, &file, passphrase_file)?,
        KeyCommand::Export {
            args,
            secret,
            armor,
        } => export(&store, &mut out, &args, secret, armor)?,
        KeyCommand::Search {
            text,
            url,
            long_list,
            json,
        } => search(&mut out, &url.chosen()?, &text, long_list, json)?,
        KeyCommand::Pull { fingerprint, url } => pull(&store, &mut out, &url, &fingerprint)?,
        KeyCommand::Push { key, url } => push_key(&store, &mut out, &url, &key)?,
        KeyCommand::Remove {
            key,
            secret,
            public,
            both,
        } => {
            let both = both || (public && secret);
            let secret = secret && !both;
            let rings: &[Ring] = match (secret, both) {
                (_, true) => &[Ring::Public, Ring::Secret],
                (true, _) => &[Ring::Secret],
                _ => &[Ring::Public],
            };
            keys::remove(&store, &key, rings, |ring, c| {
                let what = if ring == Ring::Secret {
                    "secret"
                } else {
                    "public"
                };
                writeln!(out, "Removed {what} key {}", c.fingerprint().to_hex())
                    .map_err(crate::sign::SignError::Output)
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `key export [KEY] OUTPUT`.
fn export(
    store: &KeyStore,
    out: &mut impl Write,
    args: &[String],
    secret: bool,
    armor: bool,
) -> Result<()> {
    let (key, output) = match args {
        [key, output] => (key.clone(), PathBuf::from(output)),
        [output] => (choose_key(store, secret)?, PathBuf::from(output)),
        _ => unreachable!("clap takes one or two"),
    };
    let (cert, bytes) = keys::export(store, &key, secret, armor)?;
    if output.as_os_str() == "-" {
        out.write_all(&bytes)?;
    } else {
        keys::write_export(&output, &bytes, secret)?;
        writeln!(
            out,
            "Exported {} key {} to {}",
            if secret { "secret" } else { "public" },
            cert.fingerprint().to_hex(),
            output.display()
        )?;
    }
    Ok(())
}

/// Makes the pair; its fingerprint.
fn newpair(
    store: &KeyStore,
    out: &mut impl Write,
    spec: &NewKey,
    pass: &crate::sign::passphrase::Passphrase,
) -> Result<String> {
    if pass.is_empty() {
        crate::say_warn!("veil: warning: the secret key is not protected by a passphrase");
    }
    let cert = keys::new_pair(store, spec, pass)?;
    let fpr = cert.fingerprint().to_hex();
    writeln!(out, "Generated key pair with fingerprint {fpr}")?;
    Ok(fpr)
}

/// The key `key export OUTPUT` means: the only one of its ring, or the one picked
/// from a numbered list on the terminal.
fn choose_key(store: &KeyStore, secret: bool) -> Result<String> {
    let ring = if secret { Ring::Secret } else { Ring::Public };
    let (_, infos) = keys::list(store, ring)?;
    let kind = if secret { "secret" } else { "public" };
    match infos.len() {
        0 => anyhow::bail!("there is no {kind} key to export (see `veil key list`)"),
        1 => return Ok(infos[0].fingerprint.clone()),
        _ => {}
    }
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() || !std::io::stderr().is_terminal() {
        anyhow::bail!(
            "there are {} {kind} keys: give the one to export, `veil key export FINGERPRINT OUTPUT` (see `veil key list`)",
            infos.len()
        );
    }
    let mut err = std::io::stderr().lock();
    for k in &infos {
        let uid = k
            .user_ids
            .first()
            .map(|u| crate::registry::printable(u))
            .unwrap_or_default();
        writeln!(err, "{}) {}  {uid}", k.index, k.fingerprint)?;
    }
    write!(err, "Enter # of the key to export: ")?;
    err.flush()?;
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    let n: usize = line
        .trim()
        .parse()
        .map_err(|_| anyhow::anyhow!("{:?} is not a key number", line.trim()))?;
    infos
        .get(n)
        .map(|k| k.fingerprint.clone())
        .ok_or_else(|| anyhow::anyhow!("there is no key number {n}"))
}

fn list(store: &KeyStore, out: &mut impl Write, secret: bool, json: bool) -> Result<()> {
    let ring = if secret { Ring::Secret } else { Ring::Public };
    let (path, infos) = keys::list(store, ring)?;
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&infos)?)?;
    } else {
        let kind = if secret { "Private" } else { "Public" };
        writeln!(out, "{kind} key listing ({}):\n", path.display())?;
        for k in &infos {
            write_key(out, k)?;
        }
    }
    Ok(())
}

fn import(
    store: &KeyStore,
    out: &mut impl Write,
    file: &Path,
    passphrase_file: Option<PathBuf>,
) -> Result<()> {
    let source = PassphraseSource::standard(passphrase_file);
    let protect_with = |fpr: &str| {
        let pass = source.get(
            &format!("Enter a passphrase to protect secret key {fpr}: "),
            true,
        )?;
        if pass.is_empty() {
            crate::say_warn!("veil: warning: secret key {fpr} is stored without a passphrase");
        }
        Ok(pass)
    };
    keys::import(store, file, protect_with, |done| {
        match done {
            Imported::Secret { fingerprint } => writeln!(out, "Imported secret key {fingerprint}"),
            Imported::NewPublic { fingerprint } => {
                writeln!(out, "Imported public key {fingerprint}")
            }
            Imported::UpdatedPublic { fingerprint } => {
                writeln!(out, "Updated public key {fingerprint}")
            }
        }
        .map_err(crate::sign::SignError::Output)
    })?;
    Ok(())
}

/// `key push` (and `newpair --push`): publishes `key` and says what the server said.
fn push_key(
    store: &KeyStore,
    out: &mut impl Write,
    url: &super::keyserver::UrlArg,
    key: &str,
) -> Result<()> {
    let p = crate::trust::push(store, &url.chosen()?, key)?;
    writeln!(
        out,
        "Pushed public key {} to {}",
        p.fingerprint, p.server.url
    )?;
    if !p.said.is_empty() {
        writeln!(out, "The keyserver said: {}", p.said)?;
    }
    Ok(())
}

fn pull(
    store: &KeyStore,
    out: &mut impl Write,
    url: &super::keyserver::UrlArg,
    fingerprint: &str,
) -> Result<()> {
    let p = crate::trust::pull(store, &url.chosen()?, fingerprint)?;
    for w in &p.warnings {
        crate::say_warn!("veil: warning: {w}");
    }
    if p.dropped > 0 {
        crate::say_warn!(
            "veil: warning: {} sent {} other key(s) with it; only {} was taken",
            p.server.url,
            p.dropped,
            p.fingerprint
        );
    }
    writeln!(
        out,
        "{} public key {} from {} in {}",
        if p.new { "Added" } else { "Updated" },
        p.fingerprint,
        p.server.url,
        store.path(Ring::Public).display()
    )?;
    Ok(())
}

fn search(
    out: &mut impl Write,
    chosen: &crate::registry::keyserver::config::Chosen,
    text: &str,
    long: bool,
    json: bool,
) -> Result<()> {
    use crate::registry::keyserver::index::algorithm_name;
    let found = crate::trust::search(chosen, text)?;
    if found.skipped > 0 {
        crate::say_warn!(
            "veil: warning: {} line(s) of {}'s answer did not parse and were skipped",
            found.skipped,
            found.server.url
        );
    }
    if json {
        // Nothing found is an empty list here, for scripts.
        let v = serde_json::json!({ "keyserver": found.server.url, "keys": found.keys });
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    if found.keys.is_empty() {
        anyhow::bail!("no key matches {text:?} on {}", found.server.url);
    }
    writeln!(
        out,
        "Showing {} results from {}\n",
        found.keys.len(),
        found.server.url
    )?;
    let date = |t: Option<i64>| t.map(format_time).unwrap_or_else(|| "-".into());
    if !long {
        writeln!(out, "{:<40}  {:>5}  NAME/EMAIL", "FINGERPRINT", "BITS")?;
    }
    for k in &found.keys {
        let uids = if k.user_ids.is_empty() {
            vec![String::new()]
        } else {
            k.user_ids.clone()
        };
        if long {
            writeln!(out, "Fingerprint:  {}", k.key)?;
            writeln!(
                out,
                "Type:         {} {}",
                algorithm_name(k.algorithm),
                k.bits.map(|b| format!("{b} bits")).unwrap_or_default()
            )?;
            writeln!(out, "Created:      {}", date(k.created))?;
            writeln!(out, "Expires:      {}", date(k.expires))?;
            let status = if k.revoked {
                "revoked"
            } else if k.disabled {
                "disabled"
            } else if k.expired {
                "expired"
            } else {
                "valid"
            };
            writeln!(out, "Status:       {status}")?;
            for u in &uids {
                writeln!(out, "User:         {u}")?;
            }
            writeln!(out)?;
        } else {
            for (i, u) in uids.iter().enumerate() {
                let (key, bits) = if i == 0 {
                    (
                        k.key.as_str(),
                        k.bits.map(|b| b.to_string()).unwrap_or("-".into()),
                    )
                } else {
                    ("", String::new())
                };
                writeln!(out, "{key:<40}  {bits:>5}  {u}")?;
            }
        }
    }
    if found.keys.iter().any(|k| !k.is_fingerprint()) {
        crate::say_info!(
            "veil: note: the keyserver gave key IDs, not fingerprints; `veil key pull` needs a fingerprint"
        );
    }
    Ok(())
}

/// One key in `apptainer key list` style.
fn write_key(out: &mut impl Write, k: &KeyInfo) -> std::io::Result<()> {
    let uids = if k.user_ids.is_empty() {
        vec![String::new()]
    } else {
        k.user_ids.clone()
    };
    for (i, u) in uids.iter().enumerate() {
        // A key's user IDs are its maker's text (a pulled key's too): escaped.
        let u = crate::registry::printable(u);
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
