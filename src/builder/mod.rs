//! `veil build`: definition files, bootstrap sources, the Apptainer runtime layout,
//! squashfs creation (libsquashfs), encryption and SIF assembly.
//!
//! One build goes: resolve the source → (when something must change on disk) stage a
//! copy and run `%setup`, `%files`, `%post` in it → lay out `/.singularity.d` → write the
//! squashfs in-process → encrypt it when asked → assemble the SIF in a temporary file →
//! verify it → rename it over the destination. Any failure removes every temporary.

pub mod archive;
pub mod assemble;
pub mod cleanup;
pub mod encrypt;
pub mod error;
pub mod fsops;
pub mod inspect;
pub mod isolate;
#[doc(hidden)]
pub mod layer_fuzz;
pub mod layout;
pub mod post;
pub mod progress;
pub mod recipe;
pub mod rekey;
pub mod rootcaps;
pub mod rooted;
mod sqfs;
pub mod squash;
pub mod subids;
pub mod tree;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use error::{BuildError, Result};

use self::encrypt::{Encryption, KdfCost};
use self::recipe::{Bootstrap, Recipe};
use self::rooted::Rooted;
use self::squash::SquashOptions;
use self::tree::{IdRange, Owners, ScanOptions, Tree};
use crate::crypt::source::KeySource;

/// What to build and how.
pub struct BuildOptions {
    pub output: PathBuf,
    /// A definition file, a sandbox directory, a SIF or squashfs image.
    pub source: String,
    pub sandbox: bool,
    pub force: bool,
    pub squash: SquashOptions,
    pub build_args: Vec<(String, String)>,
    /// Leave out the plaintext Def.FILE and inspect metadata objects.
    pub no_metadata: bool,
    /// Do not run `%test` after the build.
    pub notest: bool,
    pub encryption: Option<Encryption>,
    pub kdf: KdfCost,
    /// Where staging trees go (default: beside the output).
    pub tmpdir: Option<PathBuf>,
    /// SOURCE_DATE_EPOCH: fixed times and ids for reproducible output.
    pub source_date_epoch: Option<i64>,
    /// The key of an encrypted source image.
    pub source_key: Option<KeySource>,
    /// Keep the source's device nodes (real root only; otherwise they are left out).
    pub devices: bool,
}

/// What a build produced.
#[derive(Debug, Clone)]
pub struct Summary {
    pub output: PathBuf,
    pub squashfs_bytes: u64,
    pub inodes: u32,
    pub encrypted: bool,
    pub skipped_devices: u64,
}

/// A resolved source.
enum Input {
    Dir(PathBuf),
    /// A SIF or plain squashfs file, opened once: the descriptor that `Fingerprints:`
    /// verified is the one the build reads, whatever the path names by then.
    Image(PathBuf, std::fs::File),
    /// A rootfs tarball, docker-archive or oci-archive.
    Archive(PathBuf, archive::Kind),
    Scratch,
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn head(path: &Path) -> Vec<u8> {
    use std::io::Read;
    let mut b = vec![0u8; 64];
    let n = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut b))
        .unwrap_or(0);
    b.truncate(n);
    b
}

fn is_image(path: &Path) -> bool {
    let h = head(path);
    (h.len() >= 41 && &h[32..41] == b"SIF_MAGIC") || h.starts_with(b"hsqs")
}

/// The squashfs reader of an image source (plain SIF, encrypted SIF with a key, or a
/// bare squashfs).
fn open_image(
    path: &Path,
    file: &std::fs::File,
    key: Option<&KeySource>,
) -> Result<std::sync::Arc<veil_fusefs::squashfs::Squashfs<crate::image::Source>>> {
    use crate::image::{Image, Root};
    let src = |e: String| BuildError::Source(e);
    let file = file.try_clone().map_err(|e| BuildError::io(path, e))?;
    match crate::image::open_file(file, &path.display().to_string())
        .map_err(|e| src(e.to_string()))?
    {
        Image::Plain(Root::Squashfs { fs, .. }) => Ok(fs),
        Image::Plain(Root::Directory(_)) => Err(src(format!("{} is a directory", path.display()))),
        Image::Encrypted(e) => {
            let Some(key) = key else {
                return Err(src(format!(
                    "{}: the source image is encrypted; {}",
                    path.display(),
                    SOURCE_KEY_HINT
                )));
            };
            let pass = key
                .for_run(e.message())
                .map_err(|err| src(format!("{}: {err}", path.display())))?;
            match e
                .unlock(&pass, &crate::image::kdf::unlock_options())
                .map_err(|err| src(err.to_string()))?
                .root
            {
                Root::Squashfs { fs, .. } => Ok(fs),
                Root::Directory(_) => Err(src("unexpected directory".into())),
            }
        }
    }
}

/// How to give the key of an encrypted source image.
pub const SOURCE_KEY_HINT: &str = "give its key with --source-pem-path PRIVATE.pem or --source-passphrase-file FILE (or --source-passphrase)";

/// A temporary directory removed (even when read-only inside) on drop. It is made
/// 0700, so that what is staged inside (device nodes and setuid files of a root build,
/// say) is out of other users' reach; the tree itself is its `rootfs` entry, whose
/// mode is the image's.
struct StageDir(PathBuf);

impl StageDir {
    fn new(parent: &Path, tag: &str) -> Result<StageDir> {
        use std::os::unix::fs::DirBuilderExt;
        for _ in 0..100 {
            let p = parent.join(format!(
                ".veil-{tag}-{:08x}",
                uuid::Uuid::new_v4().as_u128() as u32
            ));
            match std::fs::DirBuilder::new().mode(0o700).create(&p) {
                Ok(()) => {
                    cleanup::register(&p);
                    let s = StageDir(p);
                    let root = s.root();
                    std::fs::create_dir(&root).map_err(|e| BuildError::io(&root, e))?;
                    return Ok(s);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(BuildError::io(parent, e)),
            }
        }
        Err(BuildError::Source(
            "cannot create a staging directory".into(),
        ))
    }

    fn root(&self) -> PathBuf {
        self.0.join("rootfs")
    }
}

impl Drop for StageDir {
    fn drop(&mut self) {
        if std::fs::symlink_metadata(&self.0).is_ok() {
            fsops::remove_tree(&self.0);
        }
        cleanup::unregister(&self.0);
    }
}

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

/// Whether building from `source` runs a definition file's `%post` or `%test` inside
/// the image: what decides, before anything else happens, whether the build moves into
/// a user namespace with subordinate ids. A source that does not parse says no here;
/// the build itself reports why.
pub fn runs_scripts_in_image(source: &str, build_args: &[(String, String)], notest: bool) -> bool {
    let p = Path::new(source);
    let Ok(md) = std::fs::metadata(p) else {
        return false;
    };
    if !md.is_file() || md.len() > 4 << 20 || is_image(p) || archive::is_tar(p) {
        return false;
    }
    let Ok(text) = std::fs::read_to_string(p) else {
        return false;
    };
    recipe::parse(source, &text, build_args)
        .is_ok_and(|r| r.post.is_some() || (r.test.is_some() && !notest))
}

/// Resolves the source argument: a definition file is parsed, anything else is used
/// as is.
fn resolve(opts: &BuildOptions) -> Result<(Input, Option<(Recipe, String)>)> {
    for (prefix, kind) in [
        ("docker-archive:", archive::Kind::DockerArchive),
        ("oci-archive:", archive::Kind::OciArchive),
    ] {
        if let Some(rest) = opts.source.strip_prefix(prefix) {
            let p = Path::new(rest);
            std::fs::metadata(p).map_err(|e| BuildError::io(p, e))?;
            return Ok((Input::Archive(p.to_path_buf(), kind), None));
        }
    }
    let p = Path::new(&opts.source);
    let md = std::fs::metadata(p).map_err(|e| BuildError::io(p, e))?;
    if md.is_dir() {
        return Ok((Input::Dir(p.to_path_buf()), None));
    }
    if is_image(p) {
        let file = std::fs::File::open(p).map_err(|e| BuildError::io(p, e))?;
        return Ok((Input::Image(p.to_path_buf(), file), None));
    }
    if archive::is_tar(p) {
        let kind = archive::detect(p)?;
        return Ok((Input::Archive(p.to_path_buf(), kind), None));
    }
    if md.len() > 4 << 20 {
        return Err(BuildError::Source(format!(
            "{}: not a directory, an image or a definition file",
            p.display()
        )));
    }
    let text = std::fs::read(p).map_err(|e| BuildError::io(p, e))?;
    let text = String::from_utf8(text).map_err(|_| {
        BuildError::Source(format!(
            "{}: not a directory, an image or a definition file",
            p.display()
        ))
    })?;
    let name = p.display().to_string();
    let r = recipe::parse(&name, &text, &opts.build_args)?;
    let input = match r.bootstrap {
        Bootstrap::Scratch => Input::Scratch,
        Bootstrap::LocalImage => {
            let from = r.from.clone().unwrap_or_default();
            let mut fp = PathBuf::from(&from);
            if !fp.exists() && fp.is_relative() {
                // Relative to the definition file's directory as a fallback.
                let alt = crate::fsutil::parent_dir(p).join(&from);
                if alt.exists() {
                    fp = alt;
                }
            }
            let from_err = |e: std::io::Error| BuildError::Recipe {
                file: name.clone(),
                line: r.from_line,
                msg: format!("From: {from}: {e}"),
            };
            let file = std::fs::File::open(&fp).map_err(from_err)?;
            let is_dir = file.metadata().map_err(from_err)?.is_dir();
            if !r.fingerprints.is_empty() {
                let e = |msg: String| BuildError::Recipe {
                    file: name.clone(),
                    line: r.fingerprints_line,
                    msg,
                };
                if is_dir {
                    return Err(e(
                        "Fingerprints: a sandbox directory cannot be signed".into()
                    ));
                }
                let certs = crate::sign::keyring::KeyStore::from_env()
                    .and_then(|k| k.verification_certs())
                    .map_err(|err| e(format!("Fingerprints: reading the keyrings: {err}")))?;
                match crate::sign::check_fingerprints(&file, &r.fingerprints, &certs) {
                    Ok(v) if v.is_allowed() => {}
                    Ok(crate::sign::policy::Verdict::Refused { reason }) => {
                        return Err(e(format!("Fingerprints: {}: {reason}", fp.display())));
                    }
                    Ok(_) => unreachable!("allowed is handled above"),
                    Err(err) => return Err(e(format!("Fingerprints: {err}"))),
                }
            }
            if is_dir {
                Input::Dir(fp)
            } else {
                Input::Image(fp, file)
            }
        }
        Bootstrap::DockerArchive | Bootstrap::OciArchive => {
            let from = r.from.clone().unwrap_or_default();
            let from = from
                .strip_prefix(&format!("{}:", r.bootstrap.name()))
                .unwrap_or(&from)
                .to_string();
            let mut fp = PathBuf::from(&from);
            if !fp.exists() && fp.is_relative() {
                let alt = crate::fsutil::parent_dir(p).join(&from);
                if alt.exists() {
                    fp = alt;
                }
            }
            std::fs::metadata(&fp).map_err(|e| BuildError::Recipe {
                file: name.clone(),
                line: r.from_line,
                msg: format!("From: {from}: {e}"),
            })?;
            let kind = if r.bootstrap == Bootstrap::DockerArchive {
                archive::Kind::DockerArchive
            } else {
                archive::Kind::OciArchive
            };
            Input::Archive(fp, kind)
        }
    };
    Ok((input, Some((r, name))))
}

fn copy_files(r: &Recipe, file: &str, root: &Rooted, devices: bool) -> Result<u64> {
    let mut skipped = 0;
    for f in &r.files {
        let err = |msg: String| BuildError::Recipe {
            file: file.into(),
            line: f.line,
            msg,
        };
        let srcs = glob_host(&f.src).map_err(err)?;
        let multiple = srcs.len() > 1;
        for src in srcs {
            // The destination is a path in the image: resolved inside the tree, so a
            // symlink in the base image (or one %setup made) cannot send it elsewhere.
            let mut dst = PathBuf::from(f.dst.trim_start_matches('/'));
            if dst.as_os_str().is_empty() {
                dst = PathBuf::from(".");
            }
            let into_dir = multiple
                || f.dst.ends_with('/')
                || dst == Path::new(".")
                || root.kind(&dst)? == Some(rooted::NodeKind::Dir)
                || (root.kind(&dst)? == Some(rooted::NodeKind::Symlink) && root.is_dir(&dst));
            if into_dir {
                let name = src.file_name().map(|n| n.to_owned()).unwrap_or_default();
                dst = dst.join(name);
            }
            let s = fsops::copy_tree(&src, root, &dst, devices)
                .map_err(|e| err(format!("%files: {e}")))?;
            skipped += s.devices;
        }
    }
    Ok(skipped)
}

/// Expands a `%files` source: a path, or a glob in its last component.
fn glob_host(pattern: &str) -> std::result::Result<Vec<PathBuf>, String> {
    let p = Path::new(pattern);
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !name.contains(['*', '?', '[']) {
        if std::fs::symlink_metadata(p).is_err() {
            return Err(format!("%files: {pattern}: no such file or directory"));
        }
        return Ok(vec![p.to_path_buf()]);
    }
    let dir = crate::fsutil::parent_dir(p);
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("%files: {}: {e}", dir.display()))?
        .flatten()
        .filter(|e| wildcard(&name, &e.file_name().to_string_lossy()))
        .map(|e| dir.join(e.file_name()))
        .collect();
    out.sort();
    if out.is_empty() {
        return Err(format!("%files: {pattern}: no match"));
    }
    Ok(out)
}

/// `*` and `?` matching (no classes).
fn wildcard(pat: &str, s: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pat.chars().collect(), s.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// Runs a build.
pub fn build(opts: &BuildOptions) -> Result<Summary> {
    let out = &opts.output;
    if std::fs::symlink_metadata(out).is_ok() && !opts.force {
        return Err(BuildError::Exists(out.display().to_string()));
    }
    if opts.sandbox && opts.encryption.is_some() {
        return Err(BuildError::Source(
            "a sandbox directory cannot be encrypted".into(),
        ));
    }
    let out_dir = crate::fsutil::parent_dir(out).to_path_buf();
    if !out_dir.is_dir() {
        return Err(BuildError::Source(format!(
            "{}: no such directory",
            out_dir.display()
        )));
    }
    let build_time = opts.source_date_epoch.unwrap_or_else(now);
    let mtime = build_time.clamp(0, u32::MAX as i64) as u32;
    crate::support::diag::debug_time("build: start");
    let (input, recipe) = resolve(opts)?;
    let arch = crate::sif::Arch::host();

    // SIF (or squashfs) to SIF with nothing to change: reuse the filesystem as is.
    if let (Input::Image(src, file), None, false) = (&input, &recipe, opts.sandbox) {
        return assemble::convert(opts, src, file, build_time);
    }

    let needs_stage = opts.sandbox
        || !matches!(input, Input::Dir(_))
        || recipe.as_ref().is_some_and(|(r, _)| {
            r.setup.is_some()
                || !r.files.is_empty()
                || r.post.is_some()
                || (r.test.is_some() && !opts.notest)
        });
    let stage_parent = if opts.sandbox {
        out_dir.clone()
    } else {
        opts.tmpdir.clone().unwrap_or_else(|| out_dir.clone())
    };
    if let (true, Input::Dir(d)) = (needs_stage, &input)
        && let (Ok(src), Ok(parent)) = (d.canonicalize(), stage_parent.canonicalize())
        && parent.starts_with(&src)
    {
        return Err(BuildError::Source(format!(
            "the staging directory would be inside the source {}; put the output (or --tmpdir) elsewhere",
            d.display()
        )));
    }
    let mut skipped = 0;
    let mut oci_config: Option<archive::ImageConfig> = None;
    let stage = if needs_stage {
        let s = StageDir::new(&stage_parent, "build")?;
        let root = Rooted::open(&s.root())?;
        match &input {
            Input::Dir(d) => {
                skipped += fsops::copy_tree(d, &root, Path::new(""), opts.devices)?.devices
            }
            Input::Image(p, file) => {
                let fs = open_image(p, file, opts.source_key.as_ref())?;
                skipped += fsops::extract_squashfs(&fs, &root, opts.devices)?.devices;
            }
            Input::Archive(p, kind) => {
                let scratch = StageDir::new(&stage_parent, "unpack")?;
                let apply = archive::ApplyOptions::for_process(opts.devices);
                let (config, n) = archive::unpack(p, *kind, &root, &scratch.root(), apply)?;
                skipped += n;
                if let Some(c) = config {
                    oci_config = Some(c);
                }
            }
            Input::Scratch => {}
        }
        // An archive's or an empty root gets the usual mode (the staging root was
        // made with the build's umask).
        if matches!(input, Input::Archive(..) | Input::Scratch) {
            root.set_meta(
                Path::new(""),
                rooted::Meta {
                    owner: None,
                    mode: Some(0o755),
                    mtime: None,
                },
            )?;
        }
        Some((s, root))
    } else {
        None
    };

    let base = layout::base_entries();
    if let Some((s, root)) = &stage {
        layout::apply_to_dir(root, &base)?;
        if let Some(c) = &oci_config {
            let entries = oci_entries(c, root)?;
            layout::apply_to_dir(root, &entries)?;
        }
        // What %post appends to $APPTAINER_ENVIRONMENT; removed again if it stays empty.
        let env91 = Path::new(".singularity.d/env/91-environment.sh");
        let made_env91 = root.kind(env91)?.is_none();
        if made_env91 {
            root.write_file(env91, b"", 0o644)?;
        }
        if let Some((r, file)) = &recipe {
            if let Some(setup) = &r.setup {
                let ctx = post::Context {
                    file,
                    section: "setup",
                    trace: true,
                };
                post::run_setup(&ctx, setup, &s.root())?;
            }
            skipped += copy_files(r, file, root, opts.devices)?;
            if let Some(p) = &r.post {
                let ctx = post::Context {
                    file,
                    section: "post",
                    trace: true,
                };
                eprintln!("veil build: running %post");
                post::run_in_root(&ctx, p, &s.root(), &[])?;
            }
        }
        if made_env91 && root.read(env91)?.is_some_and(|b| b.is_empty()) {
            root.remove(env91)?;
        }
    }

    // Labels and the recipe's scripts.
    let existing_labels = match &stage {
        Some((_, root)) => root.read(Path::new(".singularity.d/labels.json"))?,
        None => match &input {
            Input::Dir(d) => Rooted::open(d)?.read(Path::new(".singularity.d/labels.json"))?,
            _ => None,
        },
    };
    let labels: BTreeMap<String, String> = layout::labels(
        existing_labels.as_deref(),
        recipe.as_ref().map(|(r, _)| r),
        arch.go_name(),
        build_time,
    );
    let (entries, mut metadata) = match &recipe {
        Some((r, _)) => layout::recipe_entries(r, &labels),
        None => layout::recipe_entries(&Recipe::default(), &labels),
    };

    if let Some((s, root)) = &stage {
        layout::apply_to_dir(root, &entries)?;
        if let Some((r, file)) = &recipe
            && let (Some(t), false) = (&r.test, opts.notest)
        {
            let ctx = post::Context {
                file,
                section: "test",
                trace: false,
            };
            eprintln!("veil build: running %test");
            let script = recipe::Script {
                    body: "for f in /.singularity.d/env/*.sh; do [ -f \"$f\" ] && . \"$f\"; done\nexec /.singularity.d/test\n".into(),
                    interpreter: None,
                    line: t.line,
                };
            post::run_in_root(&ctx, &script, &s.root(), &[])?;
        }
    }

    if opts.sandbox {
        let (s, root) = stage.expect("sandbox builds always stage");
        drop(root);
        if std::fs::symlink_metadata(out).is_ok() {
            let old = StageDir::new(&out_dir, "old")?;
            std::fs::remove_dir(old.root()).map_err(|e| BuildError::io(&old.root(), e))?;
            std::fs::rename(out, old.root()).map_err(|e| BuildError::io(out, e))?;
            // `old` is removed when dropped.
            std::fs::rename(s.root(), out).map_err(|e| BuildError::io(out, e))?;
            drop(old);
        } else {
            std::fs::rename(s.root(), out).map_err(|e| BuildError::io(out, e))?;
        }
        // The emptied staging directory goes with `s`.
        return Ok(Summary {
            output: out.clone(),
            squashfs_bytes: 0,
            inodes: 0,
            encrypted: false,
            skipped_devices: skipped,
        });
    }

    let scan = ScanOptions {
        owners: owners(),
        max_mtime: opts.source_date_epoch.map(|_| mtime),
        xattrs: true,
    };
    let mut tree = match (&stage, &input) {
        (Some((s, _)), _) => Tree::scan(&s.root(), &scan)?,
        (None, Input::Dir(d)) => {
            let mut t = Tree::scan(d, &scan)?;
            layout::apply_to_tree(&mut t, &base, mtime);
            t
        }
        (None, _) => unreachable!("non-directory sources are staged"),
    };
    if stage.is_none() {
        layout::apply_to_tree(&mut tree, &entries, mtime);
    }
    // What the recipe did not set comes from the image (a base image's runscript).
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
    let deffile = recipe.as_ref().map(|(r, _)| r.text.clone());
    let inspect = layout::inspect_json(&metadata, deffile.as_deref());
    let mut sq = opts.squash.clone();
    sq.mkfs_time = mtime;
    let summary = assemble::write_sif(
        opts,
        &tree,
        &sq,
        assemble::Objects {
            deffile: deffile.as_deref(),
            inspect: Some(&inspect),
            arch,
            time: build_time,
        },
    )?;
    drop(stage);
    Ok(Summary {
        skipped_devices: skipped,
        ..summary
    })
}

/// The layout entries an OCI image configuration gives (environment, runscript,
/// labels merged into the image's).
fn oci_entries(c: &archive::ImageConfig, root: &Rooted) -> Result<Vec<layout::Entry>> {
    let mut labels: BTreeMap<String, serde_json::Value> = root
        .read(Path::new(".singularity.d/labels.json"))?
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    for (k, v) in &c.labels {
        labels.insert(k.clone(), serde_json::Value::String(v.clone()));
    }
    let file = |path: &str, b: Vec<u8>, perm| layout::Entry {
        path: path.into(),
        kind: layout::EntryKind::File(b),
        perm,
        replace: true,
    };
    Ok(vec![
        file(
            "/.singularity.d/env/10-docker2singularity.sh",
            archive::env_script(c).into_bytes(),
            0o755,
        ),
        file(
            "/.singularity.d/runscript",
            archive::runscript(c).into_bytes(),
            0o755,
        ),
        file(
            "/.singularity.d/labels.json",
            serde_json::to_vec_pretty(&labels).unwrap_or_default(),
            0o644,
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::wildcard;

    #[test]
    fn wildcards() {
        assert!(wildcard("*.txt", "a.txt"));
        assert!(!wildcard("*.txt", "a.txt2"));
        assert!(wildcard("a?c*", "abcdef"));
        assert!(wildcard("*", ""));
    }
}
