//! Synthetic mount points: empty directories and files presented on top of the image.
//!
//! A container needs mount points that the image may lack (its user's home directory,
//! `/etc/resolv.conf`, …). Adding them here keeps the root read-only and the image
//! unchanged. The set is built before mounting and immutable afterwards, so the server
//! reads it without locks.

#![forbid(unsafe_code)]

use std::collections::HashMap;

use crate::source::ReadAt;
use crate::squashfs::{Error, FileKind, InodeId, Squashfs};

/// Synthetic node ids live far above any squashfs id (those stay below 2^48 + 2).
const SYNTH_BASE: u64 = 1 << 62;
/// Most symbolic links followed while placing one synthetic mount point.
const MAX_LINKS: usize = 40;

/// Whether node `id` is a synthetic one (and not the image's).
pub(super) fn is_synthetic(id: u64) -> bool {
    id >= SYNTH_BASE
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SynthKind {
    Dir,
    File,
}

#[derive(Debug)]
struct SynthNode {
    kind: SynthKind,
    parent: u64,
}

/// Empty directories and files added on top of the image.
#[derive(Debug, Default)]
pub struct Synthetic {
    nodes: HashMap<u64, SynthNode>,
    /// parent id -> children (name, id), in insertion order.
    children: HashMap<u64, Vec<(Vec<u8>, u64)>>,
}

/// The components of a path to walk, last first (to be popped in order); "." and empty
/// components name nothing and are dropped.
fn components_reversed(path: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
    path.split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .rev()
        .map(<[u8]>::to_vec)
}

impl Synthetic {
    /// The synthetic child `name` of `parent` (an image directory or a synthetic one).
    pub(super) fn child(&self, parent: u64, name: &[u8]) -> Option<u64> {
        self.children
            .get(&parent)?
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, id)| *id)
    }

    /// What synthetic node `id` is, if there is one.
    pub(super) fn kind(&self, id: u64) -> Option<SynthKind> {
        self.nodes.get(&id).map(|n| n.kind)
    }

    /// The directory synthetic node `id` is in, if there is such a node.
    pub(super) fn parent(&self, id: u64) -> Option<u64> {
        self.nodes.get(&id).map(|n| n.parent)
    }

    /// The synthetic children of `dir` (name, id), in insertion order.
    pub(super) fn children(&self, dir: u64) -> &[(Vec<u8>, u64)] {
        self.children.get(&dir).map_or(&[], Vec::as_slice)
    }

    fn create(&mut self, parent: u64, name: &[u8], kind: SynthKind) -> u64 {
        let id = SYNTH_BASE + self.nodes.len() as u64 + 1;
        self.nodes.insert(id, SynthNode { kind, parent });
        self.children
            .entry(parent)
            .or_default()
            .push((name.to_vec(), id));
        id
    }

    /// Adds `path` (absolute, inside the image) as a directory or an empty file unless
    /// it exists. Symbolic links in the image are followed inside the image, as the
    /// container will follow them when it mounts on the path. Paths that cannot be
    /// placed (a regular file in the middle, a link loop) are left alone: mounting on
    /// them will then fail and be reported by the launcher.
    pub fn add<R: ReadAt>(&mut self, fs: &Squashfs<R>, path: &[u8], is_file: bool) {
        let mut pending: Vec<Vec<u8>> = components_reversed(path).collect();
        let mut stack: Vec<u64> = vec![InodeId::ROOT.0];
        let mut links = 0;
        while let Some(c) = pending.pop() {
            let cur = *stack.last().unwrap_or(&InodeId::ROOT.0);
            if c == b".." {
                if stack.len() > 1 {
                    stack.pop();
                }
                continue;
            }
            let kind = if pending.is_empty() && is_file {
                SynthKind::File
            } else {
                SynthKind::Dir
            };
            if let Some(id) = self.child(cur, &c) {
                stack.push(id);
                continue;
            }
            if is_synthetic(cur) {
                if self.kind(cur) != Some(SynthKind::Dir) {
                    return;
                }
                stack.push(self.create(cur, &c, kind));
                continue;
            }
            match fs.lookup(InodeId(cur), &c) {
                Ok(a) if a.kind == FileKind::Directory => stack.push(a.id.0),
                Ok(a) if a.kind == FileKind::Symlink => {
                    links += 1;
                    let Ok(target) = fs.readlink(a.id) else {
                        return;
                    };
                    if links > MAX_LINKS {
                        return;
                    }
                    if target.first() == Some(&b'/') {
                        stack.truncate(1);
                    }
                    pending.extend(components_reversed(&target));
                }
                Ok(_) => return, // exists (a file): fine if last, unplaceable otherwise
                Err(Error::NotFound) => stack.push(self.create(cur, &c, kind)),
                Err(_) => return,
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}
