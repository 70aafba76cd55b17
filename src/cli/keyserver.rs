//! `veil keyserver add|remove|list`: the user's keyserver list, and the URL options
//! the key commands and `verify` share.

#![forbid(unsafe_code)]

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Result, anyhow};
use clap::{Args, Subcommand, ValueEnum};

use crate::registry::keyserver::config::{self, Chosen};
use crate::registry::keyserver::{KeyProtocol, Keyserver};

#[derive(Debug, Args)]
pub struct KeyserverArgs {
    #[command(subcommand)]
    command: KeyserverCommand,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Protocol {
    /// HKP (/pks/lookup, /pks/add), over HTTP or HTTPS
    Hkp,
    /// The verifying keyserver API of keys.openpgp.org (/vks/v1)
    Vks,
}

#[derive(Debug, Subcommand)]
enum KeyserverCommand {
    /// Add a keyserver to your list (hkp://HOST, hkps://HOST, https://HOST, ...)
    Add {
        url: String,
        /// Its place in the list: 1 is asked first (default: last)
        #[arg(short, long)]
        order: Option<usize>,
        /// The protocol, where the URL does not say (plain URLs speak HKP, except to
        /// keys.openpgp.org)
        #[arg(long, value_enum)]
        protocol: Option<Protocol>,
    },
    /// Remove a keyserver from your list
    Remove { url: String },
    /// List the keyservers, in the order they are asked
    List,
}

/// The `--url` option of the key commands and `verify`.
#[derive(Debug, Args)]
pub struct UrlArg {
    /// The keyserver to use (else VEIL_KEYSERVER, APPTAINER_URL, SINGULARITY_URL, then
    /// `veil keyserver list`)
    #[arg(short = 'u', long = "url", value_name = "URL")]
    pub url: Option<String>,
}

impl UrlArg {
    pub fn chosen(&self) -> Result<Chosen> {
        Ok(config::chosen(self.url.as_deref())?)
    }
}

pub fn run(args: KeyserverArgs) -> Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    match args.command {
        KeyserverCommand::Add {
            url,
            order,
            protocol,
        } => {
            let protocol = protocol.map(|p| match p {
                Protocol::Hkp => KeyProtocol::Hkp,
                Protocol::Vks => KeyProtocol::Vks,
            });
            let server = Keyserver::parse(&url, protocol)?;
            let list = config::add(server.clone(), order)?;
            let at = list.iter().position(|k| k.url == server.url).unwrap_or(0) + 1;
            writeln!(
                out,
                "Added keyserver {server} as number {at} of {}",
                list.len()
            )?;
        }
        KeyserverCommand::Remove { url } => {
            let list = config::remove(&url)?;
            writeln!(out, "Removed keyserver {url}")?;
            if list.is_empty() {
                crate::say_warn!(
                    "veil: warning: no keyserver is left: key commands and verify need --url until you add one"
                );
            }
        }
        KeyserverCommand::List => {
            let (list, file) = config::configured()?;
            let overridden = config::VARIABLES
                .iter()
                .find(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty()));
            if let Some(v) = overridden {
                let chosen = config::chosen(None)?;
                writeln!(out, "In use ({v}): {}", chosen.servers[0])?;
                writeln!(out)?;
            }
            if file.exists() {
                writeln!(out, "Keyservers ({}):", file.display())?;
            } else {
                writeln!(
                    out,
                    "Keyservers (the default; `veil keyserver add` writes {}):",
                    file.display()
                )?;
            }
            for (i, k) in list.iter().enumerate() {
                writeln!(out, "{:>3}  {}  {}", i + 1, k.protocol, k.url)?;
            }
            if list.is_empty() {
                writeln!(out, "     (none)")?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A `--local`-style switch from the environment: the first of `names` set to
/// something, read as a boolean: what the peers' Go `ParseBool` takes (1, t, true,
/// 0, f, false), in any case, and yes/no, on/off. The variable and its value when on.
pub fn env_switch(names: &[&str]) -> Result<Option<String>> {
    for n in names {
        let Some(v) = std::env::var_os(n).filter(|v| !v.is_empty()) else {
            continue;
        };
        let v = v.to_string_lossy().trim().to_ascii_lowercase();
        return match v.as_str() {
            "1" | "t" | "true" | "yes" | "on" => Ok(Some(format!("{n}={v}"))),
            "0" | "f" | "false" | "no" | "off" => Ok(None),
            _ => Err(anyhow!("{n}={v:?}: give 1/true or 0/false")),
        };
    }
    Ok(None)
}
