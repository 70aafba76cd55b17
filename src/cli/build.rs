//! `veil build`: SIF images (or sandbox directories) from a definition file, a sandbox
//! directory, or an existing image, plain or encrypted, without root.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Args;

use super::encryption::EncryptionArgs;
use crate::builder::encrypt::{Encryption, KdfCost};
use crate::builder::squash::{Compression, SquashOptions};
use crate::builder::{self, BuildOptions};
use crate::crypt::source::{BuildKey, KeyFlags, KeySource, select_for_build};

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The image to write: a SIF file, or a directory with --sandbox
    pub output: PathBuf,
    /// What to build from: a definition file, a sandbox directory, a SIF/squashfs image, a rootfs tarball, docker-archive:FILE, oci-archive:FILE, docker://IMAGE or oras://REGISTRY/REPOSITORY:TAG
    pub source: String,
    #[command(flatten)]
    pub registry: super::registry::RegistryArgs,
    /// Architecture to pick from a multi-platform docker:// image (amd64, arm64, …; default: this machine's)
    #[arg(long, value_name = "ARCH")]
    pub arch: Option<String>,
    /// Build a sandbox directory instead of a SIF
    #[arg(short = 's', long)]
    pub sandbox: bool,
    /// Overwrite the output if it exists
    #[arg(short = 'F', long)]
    pub force: bool,
    /// Accepted for Apptainer scripts: veil builds without root anyway (%post runs as uid 0 in a user namespace)
    #[arg(short = 'f', long)]
    pub fakeroot: bool,
    /// Do not run the definition file's %test section after the build
    #[arg(short = 'T', long)]
    pub notest: bool,
    /// Set a definition file argument ({{ NAME }}), overriding %arguments
    #[arg(long = "build-arg", value_name = "NAME=VALUE")]
    pub build_arg: Vec<String>,
    /// Read NAME=VALUE build arguments from a file, one per line
    #[arg(long, value_name = "FILE")]
    pub build_arg_file: Option<PathBuf>,
    /// Warn about build arguments the definition file does not use, instead of failing
    #[arg(long)]
    pub warn_unused_build_args: bool,
    /// Encrypt the image (needed when the key comes only from environment variables)
    #[arg(short = 'e', long)]
    pub encrypt: bool,
    #[command(flatten)]
    pub key: EncryptionArgs,
    /// Encrypted layout: luks2 (what the peers make as root; both peers run it) or gocryptfs (what Apptainer makes without root; Apptainer alone runs it)
    #[arg(long, value_enum, value_name = "FORMAT", default_value = "luks2")]
    pub encryption_format: FormatArg,
    /// gocryptfs layout: the scrypt cost as log2(N), as gocryptfs -scryptn (10 to 20; 16, the default, takes 64 MiB; 20 takes 1 GiB, the most veil opens without --max-kdf-cost)
    #[arg(long, value_name = "N")]
    pub scryptn: Option<u8>,
    /// Private key of an encrypted source image
    #[arg(long, value_name = "FILE")]
    pub source_pem_path: Option<PathBuf>,
    /// Ask for the passphrase of an encrypted source image
    #[arg(long)]
    pub source_passphrase: bool,
    /// Read the passphrase of an encrypted source image from a file
    #[arg(long, value_name = "FILE")]
    pub source_passphrase_file: Option<PathBuf>,
    /// Squashfs compressor
    #[arg(long, value_enum, default_value = "gzip")]
    pub compression: CompressionArg,
    /// Compressor level (default: the compressor's, as mksquashfs)
    #[arg(long, value_name = "N")]
    pub compression_level: Option<u32>,
    /// Squashfs block size in KiB (4 to 1024, a power of two)
    #[arg(long, value_name = "KIB", default_value_t = 128)]
    pub block_size: u32,
    /// Compression threads (default: all cores)
    #[arg(long, value_name = "N")]
    pub threads: Option<u32>,
    /// Upper bound of the argon2id memory cost of a passphrase keyslot, MiB
    #[arg(long, value_name = "MIB", default_value_t = 256)]
    pub kdf_memory: u32,
    /// Target unlock time of a passphrase keyslot, milliseconds
    #[arg(long, value_name = "MS", default_value_t = 2000)]
    pub kdf_time: u32,
    /// Leave out the definition file and the inspect metadata, which the peers store unencrypted
    #[arg(long)]
    pub no_plaintext_metadata: bool,
    /// Directory for temporary files and the staging tree (default: beside the output)
    #[arg(long, value_name = "DIR")]
    pub tmpdir: Option<PathBuf>,
    /// No progress bar and no report of what was written
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Run %post with the caller as the only id even when /etc/subuid and /etc/subgid give it ranges
    #[arg(long)]
    pub ignore_subuid: bool,
    /// Keep the source's device nodes (real root only; by default they are left out)
    #[arg(long)]
    pub devices: bool,
}

/// The `--encryption-format` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FormatArg {
    Luks2,
    Gocryptfs,
}

/// The `--compression` values: the builder's compressors under mksquashfs's names (the
/// builder's own type stays free of the argument parser).
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum CompressionArg {
    Gzip,
    Zstd,
    Xz,
    Lz4,
}

impl From<CompressionArg> for Compression {
    fn from(c: CompressionArg) -> Self {
        match c {
            CompressionArg::Gzip => Compression::Gzip,
            CompressionArg::Zstd => Compression::Zstd,
            CompressionArg::Xz => Compression::Xz,
            CompressionArg::Lz4 => Compression::Lz4,
        }
    }
}

fn parse_args(list: &[String], file: Option<&PathBuf>) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    if let Some(f) = file {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("reading build arguments from {}", f.display()))?;
        for l in text.lines() {
            let l = l.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            let Some((k, v)) = l.split_once('=') else {
                bail!("{}: expected NAME=VALUE, got {l:?}", f.display());
            };
            out.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    for a in list {
        let Some((k, v)) = a.split_once('=') else {
            bail!("--build-arg {a:?}: expected NAME=VALUE");
        };
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

fn source_key(a: &BuildArgs) -> Option<KeySource> {
    if let Some(p) = &a.source_pem_path {
        return Some(KeySource::PemPath(p.clone()));
    }
    if a.source_passphrase {
        return Some(KeySource::PassphrasePrompt);
    }
    a.source_passphrase_file
        .as_ref()
        .map(|p| KeySource::PassphraseFile(p.clone()))
}

/// The build's encryption from the key flags and variables.
pub fn encryption(flags: &KeyFlags, encrypt: bool) -> Result<Option<Encryption>> {
    Ok(match select_for_build(flags, encrypt)? {
        None => None,
        Some(BuildKey::Passphrase(p)) => Some(Encryption::Passphrase(p)),
        Some(BuildKey::Recipient(key)) => Some(Encryption::Recipient(Box::new(move |secret| {
            crate::crypt::message::wrap_secret(&key, secret)
                .map_err(builder::BuildError::WrapSecret)
        }))),
    })
}

/// The encrypted layout from `--encryption-format` and `--scryptn`.
fn format(a: &BuildArgs) -> Result<builder::encrypt::Format> {
    Ok(match (a.encryption_format, a.scryptn) {
        (FormatArg::Luks2, None) => builder::encrypt::Format::Luks2,
        (FormatArg::Luks2, Some(_)) => bail!("--scryptn goes with --encryption-format gocryptfs"),
        (FormatArg::Gocryptfs, n) => {
            let n = n.unwrap_or(veil_fusefs::gocryptfs::DEFAULT_SCRYPT.log_n);
            let (lo, hi) = (
                veil_fusefs::gocryptfs::MIN_LOG_N,
                veil_fusefs::gocryptfs::MAX_LOG_N,
            );
            if !(lo..=hi).contains(&n) {
                bail!("--scryptn {n}: from {lo} to {hi}");
            }
            let cost = veil_fusefs::gocryptfs::ScryptCost {
                log_n: n,
                ..veil_fusefs::gocryptfs::DEFAULT_SCRYPT
            };
            // Refused now, before anything is built, if veil could not open it.
            veil_fusefs::gocryptfs::check_cost(cost, &crate::image::kdf::gocryptfs_limits())
                .map_err(|e| {
                    anyhow::anyhow!("--scryptn {n}: {}", crate::image::kdf::gocryptfs_text(&e))
                })?;
            builder::encrypt::Format::Gocryptfs(cost)
        }
    })
}

pub fn run(a: BuildArgs) -> Result<ExitCode> {
    let build_args = parse_args(&a.build_arg, a.build_arg_file.as_ref())?;
    builder::subids::enter_for_build(&a.source, &build_args, a.notest, a.ignore_subuid);
    // Before any key is read: neither a build script nor another process of the user
    // may read this process's memory.
    builder::isolate::protect_process()?;
    builder::cleanup::install();
    let block = a.block_size;
    if !(4..=1024).contains(&block) || !block.is_power_of_two() {
        bail!("--block-size {block}: must be a power of two from 4 to 1024 (KiB)");
    }
    let sde = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.trim().is_empty() => Some(
            v.trim()
                .parse::<i64>()
                .ok()
                .filter(|t| *t >= 0)
                .with_context(|| format!("SOURCE_DATE_EPOCH={v:?} is not a unix time"))?,
        ),
        _ => None,
    };
    if a.sandbox && (a.encrypt || a.key.flags().any()) {
        bail!("a sandbox directory cannot be encrypted");
    }
    a.key.apply_key_settings();
    let format = format(&a)?;
    let encryption = if a.sandbox {
        None
    } else {
        encryption(&a.key.flags(), a.encrypt)?
    };
    if encryption.is_none() && a.encryption_format == FormatArg::Gocryptfs {
        bail!(
            "--encryption-format gocryptfs: the image is not encrypted (give --passphrase, --passphrase-file or --pem-path, or -e with a key variable)"
        );
    }
    // Registry credentials from the environment are taken before the scrub below.
    let mut registry = a.registry.options(a.quiet)?;
    registry.arch = a.arch.clone();
    // Read or not, secrets given in the environment go before anything runs
    // (%setup inherits the build's environment).
    crate::crypt::environ::scrub();
    let mut squash = SquashOptions {
        compression: a.compression.into(),
        level: a.compression_level,
        block_size: block * 1024,
        progress: !a.quiet,
        ..Default::default()
    };
    if let Some(t) = a.threads {
        squash.threads = t.max(1);
    }
    let opts = BuildOptions {
        output: a.output.clone(),
        source: a.source.clone(),
        sandbox: a.sandbox,
        force: a.force,
        squash,
        build_args,
        warn_unused_build_args: a.warn_unused_build_args,
        no_metadata: a.no_plaintext_metadata,
        notest: a.notest,
        encryption,
        format,
        kdf: KdfCost {
            max_memory_kib: a.kdf_memory.max(1).saturating_mul(1024),
            target_ms: a.kdf_time.max(1),
        },
        tmpdir: a.tmpdir.clone(),
        source_date_epoch: sde,
        source_key: source_key(&a),
        devices: a.devices,
        registry,
    };
    let s = builder::build(&opts)?;
    if s.skipped_devices > 0 {
        crate::say_warn!(
            "veil build: warning: {} device node(s) or socket(s) of the source were left out (keeping device nodes needs real root and --devices)",
            s.skipped_devices
        );
    }
    if a.quiet {
        // build's own -q: no progress bar and no report.
    } else if a.sandbox {
        crate::say_info!("veil build: wrote sandbox {}", s.output.display());
    } else {
        crate::say_info!(
            "veil build: wrote {} ({:.1} MiB squashfs, {} inodes{})",
            s.output.display(),
            s.squashfs_bytes as f64 / (1u64 << 20) as f64,
            s.inodes,
            if s.encrypted { ", encrypted" } else { "" }
        );
    }
    Ok(ExitCode::SUCCESS)
}
