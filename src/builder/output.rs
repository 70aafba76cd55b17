//! The last step of a build: a sandbox directory renamed into place, or the image's
//! tree scanned, its metadata completed from it, and the SIF written.

#![forbid(unsafe_code)]

use std::path::Path;

use super::assemble;
use super::error::{BuildError, Result};
use super::layout::{self, Entry, Metadata};
use super::source::{Definition, Input};
use super::stage::{StageDir, Staged};
use super::tree::{IdRange, Owners, ScanOptions, Tree};
use super::{BuildOptions, Summary};

/// Renames the staged tree to `out`, replacing what is there with `force`; without
/// it, something that appeared at `out` since the build started is kept.
pub fn sandbox(staged: Staged, out: &Path, out_dir: &Path, force: bool) -> Result<()> {
    let Staged { dir, root, .. } = staged;
    drop(root);
    if !force {
        crate::fsutil::rename_noreplace(&dir.root(), out).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => BuildError::Exists(out.display().to_string()),
            _ => BuildError::io(out, e),
        })?;
    } else if std::fs::symlink_metadata(out).is_ok() {
        let old = StageDir::new(out_dir, "old")?;
        std::fs::remove_dir(old.root()).map_err(|e| BuildError::io(&old.root(), e))?;
        std::fs::rename(out, old.root()).map_err(|e| BuildError::io(out, e))?;
        // `old` is removed when dropped.
        std::fs::rename(dir.root(), out).map_err(|e| BuildError::io(out, e))?;
        drop(old);
    } else {
        std::fs::rename(dir.root(), out).map_err(|e| BuildError::io(out, e))?;
    }
    // The emptied staging directory goes with `dir`.
    Ok(())
}

/// Who owns the files in the image: as on disk for real root; otherwise the caller's
/// ids are root's in the image, as inside the user namespace the build ran in.
fn owners() -> Owners {
    if nix::unistd::geteuid().is_root() {
        return Owners::Keep;
    }
    let uid = nix::unistd::getuid().as_raw();
    let gid = nix::unistd::getgid().as_raw();
    Owners::Map {
        uids: vec![IdRange {
            inside: 0,
            outside: uid,
            count: 1,
        }],
        gids: vec![IdRange {
            inside: 0,
            outside: gid,
            count: 1,
        }],
    }
}

/// The image's tree: the staged copy as it is, or a source directory read in place
/// with the layout `entries` (the base layout, then the recipe's) laid over it.
pub fn scan(
    staged: Option<&Staged>,
    input: &Input,
    entries: [&[Entry]; 2],
    max_mtime: Option<u32>,
    mtime: u32,
) -> Result<Tree> {
    let scan = ScanOptions {
        owners: owners(),
        max_mtime,
        xattrs: true,
    };
    match (staged, input) {
        (Some(s), _) => Tree::scan(&s.dir.root(), &scan),
        (None, Input::Dir(d)) => {
            let mut t = Tree::scan(d, &scan)?;
            for e in entries {
                layout::apply_to_tree(&mut t, e, mtime);
            }
            Ok(t)
        }
        (None, _) => unreachable!("non-directory sources are staged"),
    }
}

/// Writes the SIF of `tree`, with the metadata the recipe did not set taken from the
/// image (a base image's runscript, say).
pub fn image(
    opts: &BuildOptions,
    tree: &Tree,
    mut metadata: Metadata,
    def: Option<&Definition>,
    (build_time, mtime): (i64, u32),
    arch: crate::sif::Arch,
) -> Result<Summary> {
    let from_tree = |p: &str| {
        tree.read_file(p)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    };
    for (field, path) in [
        (&mut metadata.runscript, "/.singularity.d/runscript"),
        (&mut metadata.startscript, "/.singularity.d/startscript"),
        (&mut metadata.test, "/.singularity.d/test"),
        (&mut metadata.help, "/.singularity.d/runscript.help"),
        (
            &mut metadata.environment,
            "/.singularity.d/env/90-environment.sh",
        ),
    ] {
        if field.is_none() {
            *field = from_tree(path);
        }
    }
    let deffile = def.map(|(r, _)| r.text.clone());
    let inspect = layout::inspect_json(&metadata, deffile.as_deref());
    let mut sq = opts.squash.clone();
    sq.mkfs_time = mtime;
    assemble::write_sif(
        opts,
        tree,
        &sq,
        assemble::Objects {
            deffile: deffile.as_deref(),
            inspect: Some(&inspect),
            arch,
            time: build_time,
        },
    )
}
