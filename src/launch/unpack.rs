//! The root without FUSE: where `/dev/fuse` cannot be used (a CI runner's container
//! started without `--device /dev/fuse`), or with `--unsquash`, the image is unpacked
//! into a ramfs in the launcher's own mount namespace and used like a sandbox
//! directory. ramfs, not tmpfs: its pages are never swapped, so an encrypted image's
//! contents stay in memory only. It has no size limit of its own, so the tree's size
//! is checked against the memory available before anything is written.
//!
//! The extraction itself is the builder's (its confined writer); the run service
//! passes it in as an [`Unpacker`], as this layer does not use the builder.

#![forbid(unsafe_code)]

use std::path::Path;
use std::sync::Arc;

use veil_fusefs::squashfs::{FileKind, Squashfs};

use super::error::{LaunchError, Result};
use crate::image::Source;

/// Writes the tree of a squashfs into an empty directory; the error as text.
pub type Unpacker =
    Arc<dyn Fn(&Squashfs<Source>, &Path) -> std::result::Result<(), String> + Send + Sync>;

/// A squashfs root to unpack, and how.
pub struct Unpacked {
    pub fs: Arc<Squashfs<Source>>,
    pub unpacker: Unpacker,
    /// Its size in memory, as [`size_in_memory`] counts it.
    pub bytes: u64,
}

/// What the unpacked tree takes in a ramfs, pinned until the container ends: each
/// file's data in whole pages (each inode once: hard links share it), and for every
/// entry — a hard link or an empty file too — its inode and directory entry, which
/// the kernel keeps in memory as well (about a kilobyte, and the name).
pub fn size_in_memory(fs: &Squashfs<Source>) -> Result<u64> {
    const PAGE: u64 = 4096;
    const ENTRY: u64 = 1024;
    let mut seen = std::collections::HashSet::new();
    let mut bytes = PAGE;
    fs.walk(|rel, a| {
        let name = rel.rsplit(|&b| b == b'/').next().map_or(0, <[u8]>::len) as u64;
        bytes = bytes.saturating_add(ENTRY + name);
        match a.kind {
            FileKind::File if a.nlink <= 1 || seen.insert(a.ino) => {
                bytes = bytes.saturating_add(a.size.div_ceil(PAGE) * PAGE);
            }
            FileKind::File => {}
            _ => bytes = bytes.saturating_add(PAGE),
        }
        Ok(())
    })
    .map_err(|e| LaunchError::Unpack(format!("reading the image: {e}")))?;
    Ok(bytes)
}

/// Refuses a tree that would not fit in the memory available (`None`: unknown).
/// Where nothing says how much is available, only an unpacking asked for (`asked`,
/// `--unsquash`) goes ahead.
pub fn check_memory(bytes: u64, available: Option<u64>, asked: bool) -> Result<()> {
    match available {
        Some(avail) if !fits(bytes, avail) => Err(LaunchError::UnpackMemory {
            need_mib: bytes.div_ceil(1 << 20),
            available_mib: avail >> 20,
        }),
        Some(_) => Ok(()),
        None if asked => Ok(()),
        None => Err(LaunchError::UnpackMemoryUnknown),
    }
}

/// Whether `bytes` fit in `avail` with a margin for the container itself: a quarter
/// of what is available, at least 256 MiB.
fn fits(bytes: u64, avail: u64) -> bool {
    let margin = (avail / 4).max(256 << 20);
    bytes.checked_add(margin).is_some_and(|t| t <= avail)
}

/// The memory available to this process now (MemAvailable, capped by the cgroup).
pub fn available() -> Option<u64> {
    veil_fusefs::luks2::available_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tree_must_leave_a_quarter_and_at_least_256_mib() {
        const G: u64 = 1 << 30;
        assert!(fits(G, 2 * G));
        assert!(!fits(7 * G / 4, 2 * G));
        assert!(!fits(100 << 20, 300 << 20));
        assert!(fits(40 << 20, 300 << 20));
        assert!(!fits(u64::MAX, u64::MAX));
        assert!(check_memory(G, Some(G), true).is_err());
        assert!(check_memory(G, None, true).is_ok());
        assert!(check_memory(1, None, false).is_err());
    }
}
