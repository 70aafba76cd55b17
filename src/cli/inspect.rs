//! `veil inspect`: what an image is, readable without any key. For an encrypted
//! image that is the LUKS2 layout — cipher, sector size and each keyslot's KDF with
//! its memory and time cost — so a user can tell before a job starts whether the
//! image will open on a node with little memory.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use serde_json::{Value, json};
use veil_fusefs::luks2::{HeaderSummary, KdfParams};

use crate::image::{self, Image, Root};

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Print JSON instead of text
    #[arg(long)]
    json: bool,
    /// Show only the encryption parameters
    #[arg(long)]
    encryption: bool,
    /// The image: a SIF file, a squashfs file, or a sandbox directory
    image: PathBuf,
}

pub fn run(a: InspectArgs) -> Result<ExitCode> {
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
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    if !a.encryption {
        println!("Image: {} ({kind})", a.image.display());
    }
    match &opened {
        Image::Encrypted(e) => print_encryption(e),
        Image::Plain(_) => println!("Encryption: none"),
    }
    Ok(ExitCode::SUCCESS)
}

fn key_kind(e: &image::Encrypted) -> &'static str {
    if e.message().is_some() {
        "rsa"
    } else {
        "passphrase"
    }
}

fn encryption_json(e: &image::Encrypted) -> Value {
    let s = e.summary();
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
    let s: &HeaderSummary = e.summary();
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
