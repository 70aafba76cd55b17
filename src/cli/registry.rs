//! `veil push`, `veil pull`, `veil registry login|logout` and `veil cache list|clean`:
//! SIF images to and from OCI registries (ORAS), and the cache runs pull into.

#![forbid(unsafe_code)]

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use zeroize::Zeroizing;

use crate::registry::{self, Credentials, ImageUri, Options, cache};

// How to reach the registry; shared by push, pull and build. (No doc comment: clap
// would take it for the help text of the commands it is flattened into.)
#[derive(Debug, Clone, Args)]
pub struct RegistryArgs {
    /// Use plain HTTP, not HTTPS, to talk to the registry
    #[arg(long = "no-https", alias = "nohttps")]
    pub no_https: bool,
    /// User name for the registry (else VEIL_/APPTAINER_/SINGULARITY_DOCKER_USERNAME, the login file, Docker's config)
    #[arg(long = "docker-username", value_name = "USER")]
    pub docker_username: Option<String>,
    /// Password or token for the registry (else *_DOCKER_PASSWORD; prefer `veil registry login`: a command line is visible to other users)
    #[arg(
        long = "docker-password",
        value_name = "PASSWORD",
        requires = "docker_username"
    )]
    pub docker_password: Option<String>,
}

impl RegistryArgs {
    /// The options, with credentials from the flags or else the environment (read now:
    /// the commands scrub secret variables before they run anything).
    pub fn options(&self, quiet: bool) -> Result<Options> {
        let credentials = match (&self.docker_username, &self.docker_password) {
            (Some(u), Some(p)) => Some(Credentials {
                username: u.clone(),
                password: Zeroizing::new(p.clone()),
            }),
            (Some(u), None) => {
                let Some(c) = registry::credentials::password_from_environment(u) else {
                    bail!(
                        "--docker-username {u}: give the password in VEIL_DOCKER_PASSWORD (or APPTAINER_DOCKER_PASSWORD), with --docker-password, or log in with `veil registry login`"
                    );
                };
                Some(c)
            }
            _ => registry::credentials::from_environment(),
        };
        Ok(Options {
            no_https: self.no_https,
            credentials,
            quiet,
            arch: None,
        })
    }
}

// The registry flag of the container commands and of inspect and verify. No password
// flag: a container can read its launcher's command line. (No doc comment, as above.)
#[derive(Debug, Clone, Args)]
pub struct ContainerRegistryArgs {
    /// Use plain HTTP, not HTTPS, to pull an oras:// or docker:// image (credentials: the environment, `veil registry login`, Docker's config)
    #[arg(long = "no-https", alias = "nohttps")]
    pub no_https: bool,
}

impl ContainerRegistryArgs {
    pub fn options(&self) -> Options {
        Options {
            no_https: self.no_https,
            credentials: registry::credentials::from_environment(),
            quiet: true,
            arch: None,
        }
    }

    /// A local file for `image`: itself, or, for an oras:// URI, the image in the cache.
    pub fn local(&self, image: &std::path::Path) -> Result<PathBuf> {
        match image.to_str() {
            Some(s) if ImageUri::is_uri(s) => {
                let uri = ImageUri::parse(s)?;
                Ok(registry::fetch_sif(&uri, &self.options())?.0)
            }
            _ => Ok(image.to_path_buf()),
        }
    }
}

#[derive(Debug, Args)]
pub struct PushArgs {
    #[command(flatten)]
    registry: RegistryArgs,
    /// Print nothing but errors
    #[arg(short, long)]
    quiet: bool,
    /// The SIF image to push (encrypted and signed images are pushed as they are)
    image: PathBuf,
    /// Where: oras://REGISTRY/REPOSITORY:TAG
    uri: String,
}

pub fn push(a: PushArgs) -> Result<ExitCode> {
    let uri = ImageUri::parse(&a.uri)?;
    let t = registry::push(&a.image, &uri, &a.registry.options(a.quiet)?)?;
    if !a.quiet {
        let how = if t.moved {
            "uploaded"
        } else {
            "already in the registry"
        };
        let manifest = if t.manifest_digest.is_empty() {
            String::new()
        } else {
            format!("; manifest {}", t.manifest_digest)
        };
        crate::say_info!(
            "veil: pushed {} to {} ({} bytes, {how}{manifest})",
            a.image.display(),
            uri.text,
            t.size,
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
#[command(override_usage = "veil pull [OPTIONS] [DEST] <URI>")]
pub struct PullArgs {
    #[command(flatten)]
    registry: RegistryArgs,
    /// Architecture to pick from a multi-platform docker:// image (amd64, arm64, …; default: this machine's)
    #[arg(long, value_name = "ARCH")]
    arch: Option<String>,
    /// Overwrite the destination if it exists
    #[arg(short = 'F', long)]
    force: bool,
    /// Print nothing but errors
    #[arg(short, long)]
    quiet: bool,
    /// The file to write (default: the repository's name and tag, e.g. app_v1.sif)
    #[arg(value_name = "DEST")]
    first: String,
    /// The image: oras://REGISTRY/REPOSITORY:TAG (or @sha256:DIGEST), or docker://[REGISTRY/]REPOSITORY[:TAG] (built into a SIF)
    #[arg(value_name = "URI")]
    second: Option<String>,
}

pub fn pull(a: PullArgs) -> Result<ExitCode> {
    let (dest, uri) = match &a.second {
        Some(u) => (Some(PathBuf::from(&a.first)), u.as_str()),
        None => (None, a.first.as_str()),
    };
    let uri = ImageUri::parse(uri)?;
    let dest = dest.unwrap_or_else(|| uri.default_file_name());
    let mut opts = a.registry.options(a.quiet)?;
    opts.arch = a.arch.clone();
    if uri.transport == registry::Transport::Docker {
        // A container image becomes a SIF as `veil build` makes one from it.
        registry::destination::check(&dest, a.force)?;
        crate::builder::cleanup::install();
        let mut b = crate::builder::BuildOptions::new(uri.text.clone(), dest.clone(), opts);
        b.force = a.force;
        b.squash.progress = !a.quiet;
        let s = crate::builder::build(&b)?;
        if !a.quiet {
            crate::say_info!(
                "veil: pulled {} to {} ({:.1} MiB squashfs)",
                uri.text,
                s.output.display(),
                s.squashfs_bytes as f64 / (1u64 << 20) as f64
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let t = registry::pull(&uri, &dest, a.force, &opts)?;
    if !a.quiet {
        crate::say_info!(
            "veil: pulled {} to {} ({} bytes, {})",
            uri.text,
            dest.display(),
            t.size,
            t.digest
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub struct RegistryCmd {
    #[command(subcommand)]
    command: RegistryCommand,
}

#[derive(Debug, Subcommand)]
enum RegistryCommand {
    /// Check credentials with a registry and store them (in ~/.veil/docker-config.json or $VEIL_CONFIGDIR/docker-config.json, mode 0600)
    Login(LoginArgs),
    /// Forget the stored credentials for a registry
    Logout(LogoutArgs),
}

#[derive(Debug, Args)]
struct LoginArgs {
    /// User name
    #[arg(short = 'u', long)]
    username: String,
    /// Read the password (or token) from standard input (else it is asked for on the terminal)
    #[arg(long = "password-stdin")]
    password_stdin: bool,
    /// Use plain HTTP, not HTTPS
    #[arg(long = "no-https", alias = "nohttps")]
    no_https: bool,
    /// The registry: HOST[:PORT], or an oras:// or docker:// URI naming it
    registry: String,
}

#[derive(Debug, Args)]
struct LogoutArgs {
    /// The registry: HOST[:PORT], or an oras:// or docker:// URI naming it
    registry: String,
}

/// The registry's host (and port) from what the user typed.
fn registry_host(s: &str) -> String {
    let s = s
        .strip_prefix("oras://")
        .or_else(|| s.strip_prefix("docker://"))
        .or_else(|| s.strip_prefix("https://"))
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    s.split('/').next().unwrap_or(s).to_string()
}

pub fn registry_cmd(a: RegistryCmd) -> Result<ExitCode> {
    match a.command {
        RegistryCommand::Login(l) => {
            let host = registry_host(&l.registry);
            if host.is_empty() {
                bail!("no registry named");
            }
            let password = if l.password_stdin {
                let mut s = Zeroizing::new(String::new());
                std::io::stdin()
                    .read_to_string(&mut s)
                    .context("reading the password from standard input")?;
                Zeroizing::new(s.trim_end_matches(['\n', '\r']).to_string())
            } else {
                let line = crate::crypt::tty::read_secret_line(&format!(
                    "Password for {}@{host}: ",
                    l.username
                ))
                .context("reading the password (use --password-stdin without a terminal)")?;
                Zeroizing::new(
                    String::from_utf8(line.as_slice().to_vec())
                        .map_err(|_| anyhow::anyhow!("the password is not UTF-8"))?,
                )
            };
            let creds = Credentials {
                username: l.username,
                password,
            };
            registry::check_login(&host, &creds, l.no_https)?;
            let file = registry::credentials::save(&host, &creds)?;
            crate::say_info!(
                "veil: logged in to {host} (credentials in {})",
                file.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        RegistryCommand::Logout(l) => {
            let host = registry_host(&l.registry);
            if registry::credentials::forget(&host)? {
                crate::say_info!("veil: logged out of {host}");
                Ok(ExitCode::SUCCESS)
            } else {
                bail!("not logged in to {host} (veil's login file has no entry for it)")
            }
        }
    }
}

#[derive(Debug, Args)]
pub struct CacheCmd {
    #[command(subcommand)]
    command: CacheCommand,
}

#[derive(Debug, Subcommand)]
enum CacheCommand {
    /// List what the cache holds ($VEIL_CACHEDIR/cache, else $APPTAINER_CACHEDIR/cache, else ~/.veil/cache)
    List(CacheListArgs),
    /// Remove cached images and layers
    Clean(CacheCleanArgs),
}

#[derive(Debug, Args)]
struct CacheListArgs {
    /// Only these kinds of entry (oras, blob, oci-tmp, all)
    #[arg(short = 'T', long = "type", value_delimiter = ',')]
    kinds: Vec<String>,
    /// One line per entry
    #[arg(short, long)]
    verbose: bool,
}

#[derive(Debug, Args)]
struct CacheCleanArgs {
    /// Only these kinds of entry (oras, blob, oci-tmp, all)
    #[arg(short = 'T', long = "type", value_delimiter = ',')]
    kinds: Vec<String>,
    /// Only entries older than this many days
    #[arg(short = 'D', long)]
    days: Option<u64>,
    /// Say what would be removed, remove nothing
    #[arg(short = 'n', long = "dry-run")]
    dry_run: bool,
    /// Accepted for Apptainer's command lines (veil never asks)
    #[arg(short = 'f', long)]
    force: bool,
}

fn check_kinds(kinds: &[String]) -> Result<()> {
    for k in kinds {
        if k != "all" && !cache::KINDS.contains(&k.as_str()) {
            bail!(
                "unknown cache type {k:?} (known: {}, all)",
                cache::KINDS.join(", ")
            );
        }
    }
    Ok(())
}

pub fn cache_cmd(a: CacheCmd) -> Result<ExitCode> {
    match a.command {
        CacheCommand::List(l) => {
            check_kinds(&l.kinds)?;
            let entries = cache::list(&l.kinds)?;
            if l.verbose {
                for e in &entries {
                    println!("{:<6} {:>12}  {}", e.kind, e.size, e.name);
                }
            }
            let total: u64 = entries.iter().map(|e| e.size).sum();
            println!(
                "There are {} container file(s) using {total} bytes in {}",
                entries.len(),
                cache::root()?.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        CacheCommand::Clean(c) => {
            check_kinds(&c.kinds)?;
            let _ = c.force;
            let removed = cache::clean(&c.kinds, c.days, c.dry_run)?;
            let verb = if c.dry_run { "would remove" } else { "removed" };
            for e in &removed {
                println!("{verb} {} {}", e.kind, e.name);
            }
            println!(
                "{} {} entr{}",
                verb,
                removed.len(),
                if removed.len() == 1 { "y" } else { "ies" }
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
