//! The image cache: what `run`, `exec`, `shell`, `test`, `inspect` and `verify` pull
//! from a URI is kept, content-addressed, so that the next run of the same image
//! starts without a download. The layout is Apptainer's: `CACHE/oras/sha256:HEX`
//! holds a pulled SIF under its own digest, so a user's Apptainer cache can be used.
//!
//! The root is `$VEIL_CACHEDIR/cache`, else `$APPTAINER_CACHEDIR/cache`, else
//! `~/.veil/cache`. An entry is trusted by its name because nobody else can write
//! there: the directories are the user's own, 0700, and refused otherwise; entries
//! are opened without following links and must be the user's regular files. Entries
//! are written (0600) to a temporary file in their directory and renamed into place:
//! concurrent runs of one image may both download it, and the last rename wins with
//! the same bytes; a reader never sees a partial entry.

#![forbid(unsafe_code)]

use std::fs::File;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::error::{RegistryError, Result};

/// The kinds of entry, as `veil cache list/clean --type` names them: SIFs pulled from
/// `oras://`, layers of `docker://` images, and SIFs built from `docker://` images.
pub const KINDS: [&str; 3] = ["oras", "blob", "oci-tmp"];

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

/// The directory of one kind of entry, made private (0700) when missing. A cache
/// directory that is a symbolic link, belongs to another user or can be written by
/// others is refused: whoever can write there chooses what the next run runs.
pub fn kind_dir(kind: &str) -> Result<PathBuf> {
    let root = root()?;
    // The root first, checked before anything is made in it.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&root)
        .map_err(|e| RegistryError::io("creating the cache directory", &root, e))?;
    check_private(&root)?;
    let d = root.join(kind);
    match std::fs::DirBuilder::new().mode(0o700).create(&d) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(RegistryError::io("creating the cache directory", &d, e)),
    }
    check_private(&d)?;
    Ok(d)
}

fn check_private(dir: &Path) -> Result<()> {
    let m = std::fs::symlink_metadata(dir)
        .map_err(|e| RegistryError::io("looking up the cache directory", dir, e))?;
    let me = nix::unistd::geteuid().as_raw();
    let why = if m.file_type().is_symlink() {
        "is a symbolic link"
    } else if !m.is_dir() {
        "is not a directory"
    } else if m.uid() != me {
        "belongs to another user"
    } else if m.mode() & 0o022 != 0 {
        "can be written by other users"
    } else {
        return Ok(());
    };
    Err(RegistryError::Cache {
        path: dir.to_path_buf(),
        why: format!(
            "{why}; the cache must be private (set VEIL_CACHEDIR to a directory of your own)"
        ),
    })
}

/// Opens the entry `path` names, which the registry helper reported: it must be an
/// entry of `kind` in this cache (by its directory and name) and pass [`open_entry`].
pub fn entry_of(kind: &str, path: &Path) -> Result<File> {
    let bad = |why: &str| RegistryError::Cache {
        path: path.to_path_buf(),
        why: why.into(),
    };
    let dir = kind_dir(kind)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if path.parent() != Some(dir.as_path()) || !is_entry_name(kind, name) {
        return Err(bad("not an entry of the cache (from veil-registry)"));
    }
    open_entry(path, None).ok_or_else(|| bad("not a private file of the cache"))
}

/// Opens a cache entry if it is one: a regular file of the user's (no link
/// followed) of the expected size, if one is expected.
pub fn open_entry(path: &Path, size: Option<i64>) -> Option<File> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    let m = f.metadata().ok()?;
    let ok = m.is_file()
        && m.uid() == nix::unistd::geteuid().as_raw()
        && size.is_none_or(|size| i64::try_from(m.len()).is_ok_and(|l| l == size));
    ok.then_some(f)
}

/// Whether `name` is an entry's name (`sha256:` and 64 hex digits; for SIFs built
/// from docker:// images, 64 hex digits), not a temporary file of a download in
/// progress or anything else.
fn is_entry_name(kind: &str, name: &str) -> bool {
    if kind == "oci-tmp" {
        name.len() == 64
            && name
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    } else {
        super::sha256_hex(name).is_some()
    }
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
        if std::fs::symlink_metadata(&root).is_err() {
            break;
        }
        check_private(&root)?;
        let dir = root.join(kind);
        if std::fs::symlink_metadata(&dir).is_err() {
            continue;
        }
        check_private(&dir)?;
        let rd = std::fs::read_dir(&dir).map_err(|e| RegistryError::io("listing", &dir, e))?;
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            // Only entries: not another run's download in progress, nor anything else.
            if !is_entry_name(kind, &name) {
                continue;
            }
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
/// `dry_run` only says which.
pub fn clean(kinds: &[String], days: Option<u64>, dry_run: bool) -> Result<Vec<Entry>> {
    let now = SystemTime::now();
    let old = |e: &Entry| match days {
        Some(d) => now
            .duration_since(e.modified)
            .is_ok_and(|age| age >= Duration::from_secs(d.saturating_mul(86_400))),
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
