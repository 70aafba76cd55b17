//! `veil build`: definition files, bootstrap sources, the Apptainer runtime layout,
//! squashfs creation (libsquashfs), encryption and SIF assembly.
//!
//! One build goes: resolve the source (`source`) → when something must change on disk,
//! stage a copy (`stage`) and run `%setup`, `%files`, `%post` in it (`scripts`) → lay
//! out `/.singularity.d` (`layout`) → scan the tree and write the squashfs in-process
//! (`output`, `squash`) → encrypt it when asked, as LUKS2 (`encrypt`) or in
//! Apptainer's gocryptfs layout (`gocryptfs`) → assemble the SIF in a temporary file
//! → verify it → rename it over the destination (`assemble`). Any failure removes every
//! temporary.

pub mod archive;
pub mod assemble;
pub mod cleanup;
pub mod encrypt;
pub mod error;
pub mod fsops;
pub mod gocryptfs;
pub mod gocryptfs_rekey;
pub mod inspect;
pub mod isolate;
#[doc(hidden)]
pub mod layer_fuzz;
pub mod layout;
mod output;
pub mod post;
pub mod recipe;
pub mod rekey;
pub mod rootcaps;
pub mod rooted;
mod scripts;
mod source;
mod sqfs;
pub mod squash;
mod stage;
pub mod subids;
pub mod tree;

use std::path::{Path, PathBuf};

pub use error::{BuildError, Result};
pub use source::{SOURCE_KEY_HINT, runs_scripts_in_image};

use self::encrypt::{Encryption, KdfCost};
use self::recipe::Recipe;
use self::rooted::Rooted;
use self::source::Input;
use self::squash::SquashOptions;
use crate::crypt::source::KeySource;
use crate::support::diag::debug_time;

/// What to build and how.
pub struct BuildOptions {
    pub output: PathBuf,
    /// A definition file, a sandbox directory, a SIF or squashfs image.
    pub source: String,
    pub sandbox: bool,
    pub force: bool,
    pub squash: SquashOptions,
    pub build_args: Vec<(String, String)>,
    /// Unused build arguments are a warning, not an error.
    pub warn_unused_build_args: bool,
    /// Leave out the plaintext Def.FILE and inspect metadata objects.
    pub no_metadata: bool,
    /// Do not run `%test` after the build.
    pub notest: bool,
    pub encryption: Option<Encryption>,
    /// The encrypted layout, when `encryption` is given.
    pub format: encrypt::Format,
    pub kdf: KdfCost,
    /// Where staging trees go (default: beside the output).
    pub tmpdir: Option<PathBuf>,
    /// SOURCE_DATE_EPOCH: fixed times and ids for reproducible output.
    pub source_date_epoch: Option<i64>,
    /// The key of an encrypted source image.
    pub source_key: Option<KeySource>,
    /// Keep the source's device nodes (real root only; otherwise they are left out).
    pub devices: bool,
    /// How to reach registries (`docker://` and `oras://` sources, `Bootstrap: docker`
    /// and `oras`).
    pub registry: crate::registry::Options,
}

/// What a build produced.
impl BuildOptions {
    /// A plain SIF from `source` to `output`, every other option at its default: what
    /// `veil pull docker://…` and runs of `docker://` URIs build.
    pub fn new(source: String, output: PathBuf, registry: crate::registry::Options) -> Self {
        BuildOptions {
            output,
            source,
            sandbox: false,
            force: false,
            squash: SquashOptions::default(),
            build_args: Vec::new(),
            warn_unused_build_args: false,
            no_metadata: false,
            notest: true,
            encryption: None,
            format: encrypt::Format::Luks2,
            kdf: KdfCost::default(),
            tmpdir: None,
            source_date_epoch: None,
            source_key: None,
            devices: false,
            registry,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Summary {
    pub output: PathBuf,
    pub squashfs_bytes: u64,
    pub inodes: u32,
    pub encrypted: bool,
    pub skipped_devices: u64,
}

/// Runs a build.
/// Build arguments the definition does not use: an error, as with Apptainer, unless
/// `--warn-unused-build-args` makes it a warning.
fn check_unused_args(r: &recipe::Recipe, file: &str, warn: bool) -> Result<()> {
    if r.unused_args.is_empty() {
        return Ok(());
    }
    let names = r.unused_args.join(", ");
    if warn {
        crate::say_warn!("veil build: warning: {file} does not use the build argument(s) {names}");
        return Ok(());
    }
    Err(BuildError::Source {
        path: file.to_string(),
        why: format!(
            "does not use the build argument(s) {names} (--warn-unused-build-args makes this a warning)"
        ),
    })
}

pub fn build(opts: &BuildOptions) -> Result<Summary> {
    let out_dir = check_output(opts)?;
    let build_time = opts.source_date_epoch.unwrap_or_else(now);
    let mtime = build_time.clamp(0, u32::MAX as i64) as u32;
    debug_time("build: start");
    let (input, def) = source::resolve(&opts.source, &opts.build_args, &opts.registry)?;
    if let Some((r, name)) = &def {
        check_unused_args(r, name, opts.warn_unused_build_args)?;
    }

    // SIF (or squashfs) to SIF with nothing to change: reuse the filesystem as is.
    if let (Input::Image(src, file), None, false) = (&input, &def, opts.sandbox) {
        return assemble::convert(opts, src, file, build_time);
    }

    let staged = if stage::needed(opts, &input, def.as_ref()) {
        Some(stage::populate(
            opts,
            &input,
            &stage::parent(opts, &out_dir),
        )?)
    } else {
        None
    };
    let mut skipped = staged.as_ref().map_or(0, |s| s.skipped);
    let base = layout::base_entries();
    if let Some(s) = &staged {
        skipped += scripts::prepare(s, def.as_ref(), &base, opts.devices)?;
    }

    // Labels and the recipe's scripts.
    let no_recipe = Recipe::default();
    let recipe = def.as_ref().map_or(&no_recipe, |(r, _)| r);
    // An image from a registry or archive is for the architecture its configuration
    // names, else the one `--arch` picked; anything else is built for this machine.
    let arch = staged
        .as_ref()
        .and_then(|s| s.oci_config.as_ref()?.architecture.as_deref())
        .or(opts.registry.arch.as_deref())
        .and_then(crate::sif::Arch::from_go_name)
        .unwrap_or_else(crate::sif::Arch::host);
    let labels = layout::labels(
        existing_labels(staged.as_ref(), &input)?.as_deref(),
        def.as_ref().map(|(r, _)| r),
        arch.go_name(),
        build_time,
    );
    let (entries, metadata) = layout::recipe_entries(recipe, &labels);
    if let Some(s) = &staged {
        layout::apply_to_dir(&s.root, &entries)?;
        scripts::run_test(s, def.as_ref(), opts.notest)?;
    }

    if opts.sandbox {
        let s = staged.expect("sandbox builds always stage");
        output::sandbox(s, &opts.output, &out_dir, opts.force)?;
        return Ok(Summary {
            output: opts.output.clone(),
            squashfs_bytes: 0,
            inodes: 0,
            encrypted: false,
            skipped_devices: skipped,
        });
    }
    let max_mtime = opts.source_date_epoch.map(|_| mtime);
    let tree = output::scan(staged.as_ref(), &input, [&base, &entries], max_mtime, mtime)?;
    let summary = output::image(
        opts,
        &tree,
        metadata,
        def.as_ref(),
        (build_time, mtime),
        arch,
    )?;
    drop(staged);
    Ok(Summary {
        skipped_devices: skipped,
        ..summary
    })
}

/// Refuses what cannot be built before anything is read; returns the output's
/// directory.
fn check_output(opts: &BuildOptions) -> Result<PathBuf> {
    let out = &opts.output;
    if std::fs::symlink_metadata(out).is_ok() && !opts.force {
        return Err(BuildError::Exists(out.display().to_string()));
    }
    if opts.sandbox && opts.encryption.is_some() {
        return Err(BuildError::Unsupported(
            "a sandbox directory cannot be encrypted",
        ));
    }
    let out_dir = crate::fsutil::parent_dir(out).to_path_buf();
    if !out_dir.is_dir() {
        return Err(BuildError::output(&out_dir, "no such directory"));
    }
    Ok(out_dir)
}

/// The labels the image has already: in the staged copy, or in a source directory.
fn existing_labels(staged: Option<&stage::Staged>, input: &Input) -> Result<Option<Vec<u8>>> {
    let labels = Path::new(".singularity.d/labels.json");
    match (staged, input) {
        (Some(s), _) => s.root.read(labels),
        (None, Input::Dir(d)) => Rooted::open(d)?.read(labels),
        (None, _) => Ok(None),
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
