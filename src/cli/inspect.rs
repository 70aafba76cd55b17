//! `veil inspect`: what an image is, readable without any key. For an encrypted
//! image that is the LUKS2 layout — cipher, sector size and each keyslot's KDF with
//! its memory and time cost — so a user can tell before a job starts whether the
//! image will open on a node with little memory.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use serde_json::{Value, json};
use veil_fusefs::luks2::{HeaderSummary, KdfParams};

use super::encryption::EncryptionArgs;
use crate::builder::inspect::{self, Attributes};
use crate::crypt::source::select_from_env;
use crate::image::{self, Image, Root};

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Print JSON instead of text
    #[arg(short = 'j', long)]
    json: bool,
    /// Show only the encryption parameters
    #[arg(long)]
    encryption: bool,
    /// Show the labels
    #[arg(short = 'l', long)]
    labels: bool,
    /// Show the definition file the image was built from
    #[arg(short = 'd', long)]
    deffile: bool,
    /// Show the runscript
    #[arg(short = 'r', long)]
    runscript: bool,
    /// Show the startscript
    #[arg(short = 's', long)]
    startscript: bool,
    /// Show the environment scripts
    #[arg(short = 'e', long)]
    environment: bool,
    /// Show the test script
    #[arg(short = 't', long)]
    test: bool,
    /// Show the help text
    #[arg(short = 'H', long)]
    helpfile: bool,
    /// Show everything
    #[arg(short = 'a', long)]
    all: bool,
    /// Key of an encrypted image whose SIF holds no metadata objects (the image itself is read)
    #[command(flatten)]
    key: EncryptionArgs,
    #[command(flatten)]
    registry: super::registry::ContainerRegistryArgs,
    /// The image: a SIF file, a squashfs file, a sandbox directory, or oras://REGISTRY/REPOSITORY:TAG
    image: PathBuf,
}

/// Which metadata sections to show.
fn wanted(a: &InspectArgs) -> [bool; 7] {
    let any = a.labels
        || a.deffile
        || a.runscript
        || a.startscript
        || a.environment
        || a.test
        || a.helpfile;
    if a.all {
        return [true; 7];
    }
    if !any {
        // As Apptainer: the labels by default.
        return [!a.encryption, false, false, false, false, false, false];
    }
    [
        a.labels,
        a.deffile,
        a.runscript,
        a.startscript,
        a.environment,
        a.test,
        a.helpfile,
    ]
}

/// The image's build metadata: the SIF's objects first, then the image itself (with
/// the key for an encrypted one, when given).
fn metadata(a: &InspectArgs, opened: Image) -> Result<(Attributes, Option<String>)> {
    let mut attrs = inspect::from_sif_objects(&a.image).unwrap_or_default();
    let mut note = None;
    let from_image = match opened {
        Image::Plain(Root::Directory(d)) => Some(inspect::from_dir(&d)),
        Image::Plain(Root::Squashfs { fs, .. }) => Some(inspect::from_squashfs(&fs)),
        Image::Encrypted(e) => match a
            .key
            .flags()
            .any()
            .then(|| select_from_env(&a.key.flags()))
            .flatten()
        {
            Some(src) => {
                // No core dump or ptrace of a process holding the key.
                let _ = nix::sys::prctl::set_dumpable(false);
                let pass = src.for_run(e.message())?;
                crate::crypt::environ::scrub();
                match e.unlock(&pass, &crate::image::kdf::unlock_options())?.root {
                    Root::Squashfs { fs, .. } => Some(inspect::from_squashfs(&fs)),
                    Root::Directory(d) => Some(inspect::from_dir(&d)),
                }
            }
            None => {
                note = Some(
                    "the image is encrypted: what its SIF metadata objects lack can be read from the image with its key (--pem-path or --passphrase)"
                        .to_string(),
                );
                None
            }
        },
    };
    if let Some(i) = from_image {
        attrs.fill_from(i);
    }
    Ok((attrs, note))
}

fn section_json(attrs: &Attributes, w: [bool; 7]) -> Value {
    let mut v = serde_json::to_value(attrs).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        for (i, k) in [
            "labels",
            "deffile",
            "runscript",
            "startscript",
            "environment",
            "test",
            "helpfile",
        ]
        .iter()
        .enumerate()
        {
            if !w[i] {
                m.remove(*k);
            }
        }
    }
    v
}

fn print_sections(attrs: &Attributes, w: [bool; 7]) {
    let block = |title: &str, v: &Option<String>| match v {
        Some(t) => println!("== {title} ==\n{}", t.trim_end()),
        None => println!("== {title} ==\n(none)"),
    };
    if w[0] {
        println!("== labels ==");
        if attrs.labels.is_empty() {
            println!("(none)");
        }
        for (k, v) in &attrs.labels {
            println!("{k}: {v}");
        }
    }
    if w[1] {
        block("deffile", &attrs.deffile);
    }
    if w[2] {
        block("runscript", &attrs.runscript);
    }
    if w[3] {
        block("startscript", &attrs.startscript);
    }
    if w[4] {
        println!("== environment ==");
        if attrs.environment.is_empty() {
            println!("(none)");
        }
        for (k, v) in &attrs.environment {
            println!("=== /.singularity.d/env/{k} ===\n{}", v.trim_end());
        }
    }
    if w[5] {
        block("test", &attrs.test);
    }
    if w[6] {
        block("helpfile", &attrs.helpfile);
    }
}

/// `veil run-help`: the image's help text (its definition's `%help`), as
/// `apptainer run-help` prints it.
#[derive(Debug, Args)]
pub struct RunHelpArgs {
    /// Key of an encrypted image whose SIF holds no metadata objects (the image itself is read)
    #[command(flatten)]
    key: EncryptionArgs,
    #[command(flatten)]
    registry: super::registry::ContainerRegistryArgs,
    /// The image: a SIF file, a squashfs file, a sandbox directory, or oras://REGISTRY/REPOSITORY:TAG
    image: PathBuf,
}

pub fn run_help(a: RunHelpArgs) -> Result<ExitCode> {
    let mut ia = InspectArgs {
        json: false,
        encryption: false,
        labels: false,
        deffile: false,
        runscript: false,
        startscript: false,
        environment: false,
        test: false,
        helpfile: true,
        all: false,
        key: a.key,
        registry: a.registry,
        image: a.image,
    };
    ia.key.apply_key_settings();
    ia.image = ia.registry.local(&ia.image)?;
    let (attrs, note) = metadata(&ia, image::open(&ia.image)?)?;
    match attrs.helpfile.as_deref().map(str::trim_end) {
        Some(h) if !h.trim().is_empty() => println!("{h}"),
        _ => {
            if let Some(n) = note {
                crate::say_info!("veil run-help: {n}");
            }
            println!("No help sections were defined for this image");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn run(mut a: InspectArgs) -> Result<ExitCode> {
    a.key.apply_key_settings();
    a.image = a.registry.local(&a.image)?;
    let w = wanted(&a);
    let meta = if w.iter().any(|x| *x) {
        Some(metadata(&a, image::open(&a.image)?)?)
    } else {
        None
    };
    let opened = image::open(&a.image)?;
    let kind = match &opened {
        Image::Plain(Root::Directory(_)) => "sandbox directory",
        Image::Plain(Root::Squashfs {
            region: Some(r), ..
        }) if r.offset == 0 => "squashfs file",
        _ => "SIF",
    };
    let enc = match &opened {
        Image::Encrypted(e) => Some(encryption_json(e)),
        Image::Plain(_) => None,
    };
    if a.json {
        let mut v = json!({ "image": a.image.display().to_string(), "kind": kind });
        v["encryption"] = enc.clone().unwrap_or(Value::Null);
        if let Some((attrs, note)) = &meta {
            v["attributes"] = section_json(attrs, w);
            if let Some(n) = note {
                v["note"] = json!(n);
            }
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    if !a.encryption {
        println!("Image: {} ({kind})", a.image.display());
    }
    let any_section = a.labels
        || a.deffile
        || a.runscript
        || a.startscript
        || a.environment
        || a.test
        || a.helpfile;
    if a.all || a.encryption || !any_section {
        match &opened {
            Image::Encrypted(e) => print_encryption(e),
            Image::Plain(_) => println!("Encryption: none"),
        }
    }
    if let Some((attrs, note)) = &meta {
        print_sections(attrs, w);
        if let Some(n) = note {
            crate::say_info!("veil inspect: {n}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_gocryptfs(e: &image::Encrypted, config: &veil_fusefs::gocryptfs::Config) {
    println!("Encryption: gocryptfs (Apptainer's unprivileged encrypted squashfs)");
    match e.message() {
        Some(_) => println!(
            "  Key:         RSA private key (the image holds an RSA-OAEP encrypted password)"
        ),
        None => println!("  Key:         passphrase"),
    }
    println!(
        "  Cipher:      AES-256-GCM, {}-byte blocks",
        veil_fusefs::gocryptfs::BLOCK
    );
    println!("  Features:    {}", config.feature_flags.join(", "));
    let c = config.scrypt;
    println!(
        "  KDF:         scrypt, N = {}, r = {}, p = {} ({} MiB of memory)",
        1u64 << c.log_n,
        c.r,
        c.p,
        c.memory_bytes().div_ceil(1 << 20)
    );
    if !config.creator.is_empty() {
        println!("  Created by:  {}", config.creator.escape_debug());
    }
}

fn key_kind(e: &image::Encrypted) -> &'static str {
    if e.message().is_some() {
        "rsa"
    } else {
        "passphrase"
    }
}

fn encryption_json(e: &image::Encrypted) -> Value {
    let s = match e.format() {
        image::Format::Luks2 { summary, .. } => summary,
        image::Format::Gocryptfs {
            config, inner_name, ..
        } => {
            let c = config.scrypt;
            return json!({
                "format": "gocryptfs",
                "key": key_kind(e),
                "cipher": "aes-256-gcm",
                "block_size": veil_fusefs::gocryptfs::BLOCK,
                "feature_flags": config.feature_flags,
                "kdf": "scrypt",
                "scrypt_n": 1u64 << c.log_n,
                "scrypt_r": c.r,
                "scrypt_p": c.p,
                "memory_kib": c.memory_bytes().div_ceil(1024),
                "creator": config.creator,
                "encrypted_image": inner_name,
            });
        }
    };
    json!({
        "format": "luks2",
        "key": key_kind(e),
        "cipher": s.cipher,
        "key_bits": s.key_size * 8,
        "sector_size": s.sector_size,
        "data_offset": s.segment_offset,
        "uuid": s.uuid,
        "keyslots": s.keyslots.iter().map(|k| {
            let mut v = json!({ "id": k.id, "priority": k.priority, "af_hash": k.af_hash });
            match &k.kdf {
                Some(KdfParams::Pbkdf2 { hash, iterations }) => {
                    v["kdf"] = json!("pbkdf2");
                    v["hash"] = json!(hash);
                    v["iterations"] = json!(iterations);
                }
                Some(KdfParams::Argon2 { variant, time, memory_kib, cpus }) => {
                    v["kdf"] = json!(variant.name());
                    v["time_cost"] = json!(time);
                    v["memory_kib"] = json!(memory_kib);
                    v["threads"] = json!(cpus);
                }
                None => v["kdf"] = json!(k.kind),
            }
            v
        }).collect::<Vec<_>>(),
        "warnings": s.warnings,
    })
}

fn print_encryption(e: &image::Encrypted) {
    let s: &HeaderSummary = match e.format() {
        image::Format::Luks2 { summary, .. } => summary,
        image::Format::Gocryptfs { config, .. } => return print_gocryptfs(e, config),
    };
    println!("Encryption: LUKS2 (Apptainer/SingularityCE encrypted squashfs)");
    match e.message() {
        Some(_) => println!(
            "  Key:         RSA private key (the image holds an RSA-OAEP encrypted secret)"
        ),
        None => println!("  Key:         passphrase"),
    }
    println!("  Cipher:      {}, {}-bit key", s.cipher, s.key_size * 8);
    println!("  Sector size: {} bytes", s.sector_size);
    for k in &s.keyslots {
        let cost = match &k.kdf {
            Some(KdfParams::Pbkdf2 { hash, iterations }) => {
                format!("pbkdf2-{hash}, {iterations} iterations")
            }
            Some(KdfParams::Argon2 {
                variant,
                time,
                memory_kib,
                cpus,
            }) => format!(
                "{}, {} MiB of memory, {time} passes, {cpus} thread{}",
                variant.name(),
                memory_kib.div_ceil(1024),
                if *cpus == 1 { "" } else { "s" }
            ),
            None => format!("{} (not a password keyslot)", k.kind),
        };
        println!("  {:<13}{cost}", format!("Keyslot {}:", k.id));
    }
    for w in &s.warnings {
        println!("  Warning:     {w}");
    }
}
