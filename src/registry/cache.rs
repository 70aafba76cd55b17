//! The image cache: what `run`, `exec`, `shell`, `inspect` and `verify` pull from a
//! URI is kept, content-addressed, so that the next run of the same image starts
//! without a download. The layout is Apptainer's: `CACHE/oras/sha256:HEX` holds a
//! pulled SIF under its own digest, so a cache directory can be shared with it.
//!
//! The root is `$VEIL_CACHEDIR/cache`, else `$APPTAINER_CACHEDIR/cache`, else
//! `~/.veil/cache`. Entries are written to a temporary file in their directory and
//! renamed into place: concurrent runs of one image may both download it, and the
//! last rename wins with the same bytes; a reader never sees a partial entry.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use oci_client::RegistryOperation;

use super::client::{Options, Session};
use super::error::{RegistryError, Result};
use super::uri::{ImageUri, Transport};
use super::{oras, transfer};

/// The kinds of entry, as `veil cache list/clean --type` names them.
pub const KINDS: [&str; 1] = ["oras"];

/// The cache's root directory.
pub fn root() -> Result<PathBuf> {
    for var in [
        "VEIL_CACHEDIR",
        "APPTAINER_CACHEDIR",
        "SINGULARITY_CACHEDIR",
    ] {
        if let Some(d) = std::env::var_os(var).filter(|d| !d.is_empty()) {
            return Ok(PathBuf::from(d).join("cache"));
        }
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .ok_or_else(|| {
            RegistryError::Setup("HOME is not set and no VEIL_CACHEDIR is given".into())
        })?;
    Ok(PathBuf::from(home).join(".veil/cache"))
}

fn kind_dir(kind: &str) -> Result<PathBuf> {
    let d = root()?.join(kind);
    std::fs::DirBuilder::new()
        .recursive(true)
        .create(&d)
        .map_err(|e| RegistryError::io("creating the cache directory", &d, e))?;
    Ok(d)
}

/// A local file for the image at `uri`: from the cache when it holds the image the
/// registry names now, else downloaded into it.
pub fn fetch(uri: &ImageUri, opts: &Options) -> Result<PathBuf> {
    if uri.transport != Transport::Oras {
        return Err(RegistryError::Uri {
            uri: uri.text.clone(),
            why: "running docker:// images directly is not supported yet; build a SIF from it with a definition file or pull an oras:// image".into(),
        });
    }
    let s = Session::open(&uri.reference, opts, RegistryOperation::Pull)?;
    let (layer, _) = oras::resolve(&s, uri)?;
    let hex = transfer::sha256_hex(&layer.digest).ok_or_else(|| RegistryError::Content {
        reference: uri.text.clone(),
        why: format!("unsupported digest {:?}", layer.digest),
    })?;
    let dir = kind_dir("oras")?;
    let entry = dir.join(format!("sha256:{hex}"));
    if let Ok(m) = std::fs::metadata(&entry)
        && m.is_file()
        && i64::try_from(m.len()).is_ok_and(|l| l == layer.size)
    {
        crate::support::diag::debug_note(&format!("registry: {} from the cache", uri.text));
        return Ok(entry);
    }
    let tmp = transfer::download(&s, &layer, &dir, &entry)?;
    oras::check_sif(tmp.path(), uri)?;
    tmp.persist(&entry)
        .map_err(|e| RegistryError::io("renaming into", &entry, e))?;
    Ok(entry)
}

/// One cache entry.
#[derive(Debug, Clone)]
pub struct Entry {
    pub kind: &'static str,
    pub name: String,
    pub path: PathBuf,
    pub size: u64,
    pub modified: SystemTime,
}

/// The entries of the given kinds (all when empty).
pub fn list(kinds: &[String]) -> Result<Vec<Entry>> {
    let root = root()?;
    let mut out = Vec::new();
    for kind in KINDS {
        if !kinds.is_empty() && !kinds.iter().any(|k| k == kind || k == "all") {
            continue;
        }
        let dir = root.join(kind);
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(RegistryError::io("listing", &dir, e)),
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Ok(m) = e.metadata() else { continue };
            if !m.is_file() {
                continue;
            }
            out.push(Entry {
                kind,
                name,
                path: e.path(),
                size: m.len(),
                modified: m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            });
        }
    }
    out.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
    Ok(out)
}

/// Removes the entries of the given kinds older than `days` (all, without it); with
/// `dry_run` only says which. Temporary files of interrupted downloads go too.
pub fn clean(kinds: &[String], days: Option<u64>, dry_run: bool) -> Result<Vec<Entry>> {
    let now = SystemTime::now();
    let old = |e: &Entry| match days {
        Some(d) => now
            .duration_since(e.modified)
            .is_ok_and(|age| age >= Duration::from_secs(d * 86_400)),
        None => true,
    };
    let mut removed = Vec::new();
    for e in list(kinds)? {
        if !old(&e) {
            continue;
        }
        if !dry_run {
            remove(&e.path)?;
        }
        removed.push(e);
    }
    Ok(removed)
}

fn remove(p: &Path) -> Result<()> {
    match std::fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(RegistryError::io("removing", p, e)),
    }
}
