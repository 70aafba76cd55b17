//! `veil sif …`: the siftool-compatible commands. Argument order, flag names and
//! output columns follow siftool, so `veil sif` can stand in for it in scripts.

#![forbid(unsafe_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};

use crate::sif::{
    Arch, CreateOptions, DataType, DeleteOptions, Editor, Extra, FINGERPRINT_LEN, FormatType,
    FsType, HashType, Link, MessageType, NewObject, ObjectData, PartType, SbomFormat, Sif, report,
};

#[derive(Debug, Args)]
pub struct SifArgs {
    #[command(subcommand)]
    command: SifCommand,
}

#[derive(Debug, Subcommand)]
enum SifCommand {
    /// List the data objects of an image
    List {
        sif: PathBuf,
        /// Print JSON instead of the table
        #[arg(long)]
        json: bool,
    },
    /// Show one data object's descriptor
    Info {
        id: u32,
        sif: PathBuf,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Show the global header
    Header {
        sif: PathBuf,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Write a data object's raw bytes to stdout (or --output)
    Dump {
        id: u32,
        sif: PathBuf,
        /// Write to this file instead of stdout (atomically)
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Create an empty image
    New {
        sif: PathBuf,
        /// Launch script stored in the header (e.g. "#!/usr/bin/env run-singularity\n")
        #[arg(long, default_value = "")]
        launch_script: String,
        /// Nil ID and zero timestamps, for reproducible images
        #[arg(long)]
        deterministic: bool,
        /// Image ID (a UUID) instead of a random one
        #[arg(long, conflicts_with = "deterministic")]
        id: Option<String>,
        /// Number of descriptor slots
        #[arg(long, default_value_t = crate::sif::DEFAULT_DESCRIPTORS)]
        descriptors: i64,
        /// Overwrite an existing file
        #[arg(long)]
        force: bool,
    },
    /// Add a data object
    Add(AddArgs),
    /// Delete a data object
    Del {
        id: u32,
        sif: PathBuf,
        /// Overwrite the object's bytes with zeros
        #[arg(long)]
        zero: bool,
        /// Shrink the file when the deleted object was at the end
        #[arg(long)]
        compact: bool,
    },
    /// Make a system partition the primary one
    Setprim { id: u32, sif: PathBuf },
}

#[derive(Debug, Args)]
#[command(
    after_help = "Data types: 1 Deffile, 2 EnvVar, 3 Labels, 4 Partition, 5 Signature, \
6 GenericJSON, 7 Generic, 8 CryptoMessage, 9 SBOM, 10 OCI root index, 11 OCI blob.
Partition filesystems: 1 Squash, 2 Ext3, 3 ImmuObj, 4 Raw, 5 Encrypted squashfs, 6 Gocryptfs squashfs.
Partition types: 1 System, 2 PrimSys, 3 Data, 4 Overlay.
Architectures: 1 386, 2 amd64, 3 arm, 4 arm64, 5 ppc64, 6 ppc64le, 7 mips, 8 mipsle, \
9 mips64, 10 mips64le, 11 s390x, 12 riscv64, 13 loong64.
Signature hashes: 1 SHA256, 2 SHA384, 3 SHA512, 4 BLAKE2s_256, 5 BLAKE2b_256."
)]
struct AddArgs {
    sif: PathBuf,
    /// File holding the object's bytes ("-" for stdin)
    object: PathBuf,
    /// The type of data to add (1-11, see below)
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=11))]
    datatype: u32,
    /// Group ID (0 = no group)
    #[arg(long, default_value_t = 0)]
    groupid: u32,
    /// ID of the object this one is linked to (0 = none)
    #[arg(long, default_value_t = 0)]
    link: u32,
    /// Group this object is linked to (instead of --link)
    #[arg(long, conflicts_with = "link")]
    linkgroup: Option<u32>,
    /// Alignment of the data [default: 4096 for partitions, none otherwise]
    #[arg(long)]
    alignment: Option<u64>,
    /// Object name
    #[arg(long, default_value = "")]
    filename: String,
    /// Partition filesystem (with --datatype 4)
    #[arg(long)]
    partfs: Option<i32>,
    /// Partition type (with --datatype 4)
    #[arg(long)]
    parttype: Option<i32>,
    /// Partition architecture (with --datatype 4)
    #[arg(long)]
    partarch: Option<u32>,
    /// Signature hash (with --datatype 5)
    #[arg(long)]
    signhash: Option<i32>,
    /// Signing entity: 40 hex digits of an OpenPGP fingerprint (with --datatype 5)
    #[arg(long)]
    signentity: Option<String>,
    /// Message format: 1 OpenPGP, 2 PEM (with --datatype 8)
    #[arg(long)]
    msgformat: Option<i32>,
    /// Message type: 256 clear signature, 512 RSA-OAEP (with --datatype 8)
    #[arg(long)]
    msgtype: Option<i32>,
    /// SBOM format name, e.g. cyclonedx-json (with --datatype 9)
    #[arg(long)]
    sbomformat: Option<String>,
}

pub fn run(args: SifArgs) -> Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    match args.command {
        SifCommand::List { sif, json } => {
            let img = open(&sif)?;
            if json {
                let v: Vec<_> = img.objects().map(report::object_json).collect();
                writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
            } else {
                out.write_all(report::list_text(img.objects()).as_bytes())?;
            }
        }
        SifCommand::Info { id, sif, json } => {
            let img = open(&sif)?;
            let d = img.object(id).with_context(|| sif.display().to_string())?;
            if json {
                writeln!(
                    out,
                    "{}",
                    serde_json::to_string_pretty(&report::object_json(d))?
                )?;
            } else {
                out.write_all(report::info_text(d).as_bytes())?;
            }
        }
        SifCommand::Header { sif, json } => {
            let img = open(&sif)?;
            if json {
                let v = report::header_json(img.header());
                writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
            } else {
                out.write_all(report::header_text(img.header()).as_bytes())?;
            }
        }
        SifCommand::Dump { id, sif, output } => {
            let img = open(&sif)?;
            let d = img
                .object(id)
                .with_context(|| sif.display().to_string())?
                .clone();
            let src = img.object_source(&d)?;
            match output {
                Some(path) => crate::fsutil::write_atomic(&path, |w| copy_source(&src, w))?,
                None => copy_source(&src, &mut out)?,
            }
        }
        SifCommand::New {
            sif,
            launch_script,
            deterministic,
            id,
            descriptors,
            force,
        } => {
            if !force && sif.exists() {
                bail!(
                    "{} already exists (use --force to overwrite)",
                    sif.display()
                );
            }
            let id = id
                .map(|s| {
                    uuid::Uuid::parse_str(&s)
                        .map(|u| *u.as_bytes())
                        .with_context(|| format!("--id {s:?} is not a UUID"))
                })
                .transpose()?;
            let opts = CreateOptions {
                launch_script: launch_script.replace("\\n", "\n"),
                id,
                deterministic,
                time: None,
                descriptors,
            };
            crate::sif::create(&sif, &opts, Vec::new())
                .with_context(|| format!("creating {}", sif.display()))?;
        }
        SifCommand::Add(a) => add(a)?,
        SifCommand::Del {
            id,
            sif,
            zero,
            compact,
        } => {
            let mut ed = edit(&sif)?;
            ed.delete(id, DeleteOptions { zero, compact })
                .with_context(|| sif.display().to_string())?;
        }
        SifCommand::Setprim { id, sif } => {
            let mut ed = edit(&sif)?;
            ed.set_primary(id)
                .with_context(|| sif.display().to_string())?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn open(path: &Path) -> Result<Sif<std::sync::Arc<veil_fusefs::source::FileSource>>> {
    Sif::open_path(path).with_context(|| path.display().to_string())
}

fn edit(path: &Path) -> Result<Editor> {
    Editor::open(path).with_context(|| path.display().to_string())
}

fn copy_source(src: &impl veil_fusefs::source::ReadAt, w: &mut dyn Write) -> std::io::Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0u64;
    while off < src.len() {
        let n = (src.len() - off).min(buf.len() as u64) as usize;
        src.read_exact_at(&mut buf[..n], off)?;
        w.write_all(&buf[..n])?;
        off += n as u64;
    }
    Ok(())
}

fn add(a: AddArgs) -> Result<()> {
    let data_type = DataType::from_cli_number(a.datatype)
        .with_context(|| format!("unknown --datatype {}", a.datatype))?;
    let need = |what: &str| anyhow::anyhow!("--{what} is required with --datatype {}", a.datatype);
    let extra = match data_type {
        DataType::Partition => {
            let fs = FsType::from_code(a.partfs.ok_or_else(|| need("partfs"))?);
            let part = PartType::from_code(a.parttype.ok_or_else(|| need("parttype"))?);
            let n = a.partarch.ok_or_else(|| need("partarch"))?;
            if !fs.is_known() {
                bail!("unknown --partfs {} (1-6)", fs.code());
            }
            if !part.is_known() {
                bail!("unknown --parttype {} (1-4)", part.code());
            }
            let arch = Arch::from_cli_number(n)
                .with_context(|| format!("unknown --partarch {n} (1-13)"))?;
            Extra::Partition { fs, part, arch }
        }
        DataType::Signature => {
            let hash = HashType::from_code(a.signhash.ok_or_else(|| need("signhash"))?);
            if !hash.is_known() {
                bail!("unknown --signhash {} (1-5)", hash.code());
            }
            let entity = a.signentity.as_deref().ok_or_else(|| need("signentity"))?;
            Extra::Signature {
                hash,
                fingerprint: Some(parse_fingerprint(entity)?),
            }
        }
        // siftool has no flags for these and leaves the fields zero; veil does the same
        // unless they are given.
        DataType::CryptoMessage if a.msgformat.is_none() && a.msgtype.is_none() => Extra::None,
        DataType::CryptoMessage => {
            let format = FormatType::from_code(a.msgformat.unwrap_or(0));
            let message = MessageType::from_code(a.msgtype.unwrap_or(0));
            if !format.is_known() || !message.is_known() {
                bail!(
                    "--msgformat must be 1 (OpenPGP) or 2 (PEM) and --msgtype 256 (clear signature) or 512 (RSA-OAEP)"
                );
            }
            Extra::CryptoMessage { format, message }
        }
        DataType::Sbom => {
            let name = a.sbomformat.as_deref().ok_or_else(|| need("sbomformat"))?;
            let format = SbomFormat::from_name(name)
                .with_context(|| format!("unknown --sbomformat {name:?}"))?;
            Extra::Sbom { format }
        }
        _ => Extra::None,
    };
    let link = match a.linkgroup {
        Some(g) => Link::Group(g),
        None if a.link == 0 => Link::None,
        None => Link::Object(a.link),
    };
    let mut stdin;
    let data = if a.object.as_os_str() == "-" {
        stdin = std::io::stdin().lock();
        ObjectData::Reader(&mut stdin)
    } else {
        if !a.object.is_file() {
            bail!("{}: no such file", a.object.display());
        }
        ObjectData::Path(&a.object)
    };
    let mut obj = NewObject::new(data_type, data);
    obj.group = a.groupid;
    obj.link = link;
    obj.name = a.filename;
    obj.extra = extra;
    obj.alignment = a.alignment;
    let mut ed = edit(&a.sif)?;
    ed.add(obj).with_context(|| a.sif.display().to_string())?;
    Ok(())
}

fn parse_fingerprint(s: &str) -> Result<[u8; FINGERPRINT_LEN]> {
    let bytes: Option<Vec<u8>> = (s.len() == 2 * FINGERPRINT_LEN)
        .then(|| {
            (0..FINGERPRINT_LEN)
                .map(|i| u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok())
                .collect()
        })
        .flatten();
    match bytes {
        Some(b) => Ok(b.try_into().expect("length checked above")),
        None => bail!("--signentity must be 40 hexadecimal digits, got {s:?}"),
    }
}
