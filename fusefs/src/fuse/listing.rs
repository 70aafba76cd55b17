//! A directory's entries as the kernel pages through them: ".", "..", the image's
//! own entries, then the synthetic ones, each with the offset to resume after it.

#![forbid(unsafe_code)]

use fuser::{Errno, FileType};

use super::attr::{file_type, synth_type};
use super::synthetic::{Synthetic, is_synthetic};
use crate::source::ReadAt;
use crate::squashfs::{Error, InodeId, Squashfs};

/// readdir offsets: "." and "..", then the image's own cookies (below 2^42), then the
/// synthetic entries.
const OFF_DOT: u64 = 1 << 60;
const OFF_DOTDOT: u64 = (1 << 60) | 1;
const OFF_SYNTH: u64 = 1 << 61;

/// Walks directory `dir` from `offset`, calling `emit(id, next_offset, kind, name)`
/// until it returns true (buffer full). Reader errors become errno values through
/// `fail`.
pub(super) fn list<R: ReadAt>(
    fs: &Squashfs<R>,
    synth: &Synthetic,
    dir: u64,
    offset: u64,
    fail: impl Fn(&Error) -> Errno,
    mut emit: impl FnMut(u64, u64, FileType, &[u8]) -> bool,
) -> Result<(), Errno> {
    let parent = if is_synthetic(dir) {
        synth.parent(dir).ok_or(Errno::ESTALE)?
    } else {
        dir // squashfs does not tell us a directory's parent; ".." is resolved by the kernel
    };
    if offset == 0 && emit(dir, OFF_DOT, FileType::Directory, b".") {
        return Ok(());
    }
    if offset < OFF_DOTDOT
        && (offset == 0 || offset == OFF_DOT)
        && emit(parent, OFF_DOTDOT, FileType::Directory, b"..")
    {
        return Ok(());
    }
    if !is_synthetic(dir) && offset < OFF_SYNTH {
        let cookie = if offset >= OFF_DOT { 0 } else { offset };
        let entries = fs.readdir(InodeId(dir), cookie).map_err(|e| fail(&e))?;
        for e in entries {
            let e = e.map_err(|e| fail(&e))?;
            if emit(e.id.0, e.cookie, file_type(e.kind), &e.name) {
                return Ok(());
            }
        }
    }
    let start = if offset >= OFF_SYNTH {
        (offset - OFF_SYNTH) as usize
    } else {
        0
    };
    for (i, (name, id)) in synth.children(dir).iter().enumerate().skip(start) {
        let kind = synth.kind(*id).map_or(FileType::Directory, synth_type);
        if emit(*id, OFF_SYNTH + i as u64 + 1, kind, name) {
            return Ok(());
        }
    }
    Ok(())
}
