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

/// What the unpacked tree takes in a ramfs: each file's data in whole pages (each
/// inode once, hard links share it), and a page for every directory and symlink.
pub fn size_in_memory(fs: &Squashfs<Source>) -> Result<u64> {
    const PAGE: u64 = 4096;
    let mut seen = std::collections::HashSet::new();
    let mut bytes = PAGE;
    fs.walk(|_, a| {
        if a.kind == FileKind::File {
            if a.nlink <= 1 || seen.insert(a.ino) {
                bytes = bytes.saturating_add(a.size.div_ceil(PAGE) * PAGE);
            }
        } else {
            bytes = bytes.saturating_add(PAGE);
        }
        Ok(())
    })
    .map_err(|e| LaunchError::Unpack(format!("reading the image: {e}")))?;
    Ok(bytes)
}

/// Refuses a tree that would not fit in the memory available, with a margin for the
/// container itself (a quarter of what is available, at least 256 MiB).
pub fn check_memory(bytes: u64) -> Result<()> {
    let Some(avail) = veil_fusefs::luks2::available_bytes() else {
        return Ok(());
    };
    let margin = (avail / 4).max(256 << 20);
    if bytes.saturating_add(margin) > avail {
        return Err(LaunchError::UnpackMemory {
            need_mib: bytes >> 20,
            available_mib: avail >> 20,
        });
    }
    Ok(())
}
