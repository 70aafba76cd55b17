//! Staging: a private copy of the source's root filesystem for what must change on
//! disk (a definition file's sections, a sandbox output, a source that is not a
//! directory), and `%files`, which copies host files into it.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

use super::archive;
use super::cleanup;
use super::error::{BuildError, Result};
use super::fsops;
use super::rooted::{self, Rooted};
use super::source::{Definition, Input, open_image};
use super::{BuildOptions, layout};
use crate::builder::recipe::Recipe;
use crate::support::diag::debug_time;

/// A temporary directory removed (even when read-only inside) on drop. It is made
/// 0700, so that what is staged inside (device nodes and setuid files of a root build,
/// say) is out of other users' reach; the tree itself is its `rootfs` entry, whose
/// mode is the image's.
pub struct StageDir(PathBuf);

impl StageDir {
    pub fn new(parent: &Path, tag: &str) -> Result<StageDir> {
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
        Err(BuildError::output(
            parent,
            "cannot create a staging directory",
        ))
    }

    pub fn root(&self) -> PathBuf {
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

/// A staged root filesystem.
pub struct Staged {
    pub dir: StageDir,
    pub root: Rooted,
    /// Device nodes and sockets of the source left out.
    pub skipped: u64,
    /// An OCI archive's image configuration.
    pub oci_config: Option<archive::ImageConfig>,
}

/// Whether the build needs a staged copy: for a sandbox output, a source that is not
/// a directory, or a definition file with something to do on disk.
pub fn needed(opts: &BuildOptions, input: &Input, def: Option<&Definition>) -> bool {
    opts.sandbox
        || !matches!(input, Input::Dir(_))
        || def.is_some_and(|(r, _)| {
            r.setup.is_some()
                || !r.files.is_empty()
                || r.post.is_some()
                || (r.test.is_some() && !opts.notest)
        })
}

/// Where staging directories go: beside a sandbox output (it is renamed into place),
/// else in `--tmpdir` or beside the output.
pub fn parent(opts: &BuildOptions, out_dir: &Path) -> PathBuf {
    if opts.sandbox {
        out_dir.to_path_buf()
    } else {
        opts.tmpdir.clone().unwrap_or_else(|| out_dir.to_path_buf())
    }
}

/// Stages a copy of the source's root filesystem under `parent`.
pub fn populate(opts: &BuildOptions, input: &Input, parent: &Path) -> Result<Staged> {
    if let Input::Dir(d) = input
        && let (Ok(src), Ok(par)) = (d.canonicalize(), parent.canonicalize())
        && par.starts_with(&src)
    {
        return Err(BuildError::source(
            d,
            "the staging directory would be inside this source; put the output (or --tmpdir) elsewhere",
        ));
    }
    let dir = StageDir::new(parent, "build")?;
    let root = Rooted::open(&dir.root())?;
    let mut skipped = 0;
    let mut oci_config = None;
    match input {
        Input::Dir(d) => {
            skipped += fsops::copy_tree(d, &root, Path::new(""), opts.devices)?.devices
        }
        Input::Image(p, file) => {
            let fs = open_image(p, file, opts.source_key.as_ref())?;
            skipped += fsops::extract_squashfs(&fs, p, &root, opts.devices)?.devices;
        }
        Input::Archive(p, kind) => {
            let scratch = StageDir::new(parent, "unpack")?;
            let apply = archive::ApplyOptions::for_process(opts.devices);
            let (config, n) = archive::unpack(p, *kind, &root, &scratch.root(), apply)?;
            skipped += n;
            oci_config = config;
        }
        Input::Registry(uri) => {
            let image = crate::registry::docker_fetch(uri, &opts.registry)?;
            debug_time("build: image layers pulled");
            let apply = archive::ApplyOptions::for_process(opts.devices);
            let what = Path::new(&uri.text);
            let (config, n) =
                archive::unpack_layers(&image.layers, &image.config, what, &root, apply)?;
            skipped += n;
            oci_config = Some(config);
        }
        Input::Scratch => {}
    }
    // An archive's or an empty root gets the usual mode (the staging root was made
    // with the build's umask).
    if matches!(
        input,
        Input::Archive(..) | Input::Registry(..) | Input::Scratch
    ) {
        root.set_meta(
            Path::new(""),
            rooted::Meta {
                owner: None,
                mode: Some(0o755),
                mtime: None,
            },
        )?;
    }
    Ok(Staged {
        dir,
        root,
        skipped,
        oci_config,
    })
}

/// `%files`: copies host files into the staged tree. Returns how many device nodes
/// were left out.
pub fn copy_files(r: &Recipe, file: &str, root: &Rooted, devices: bool) -> Result<u64> {
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

/// The layout entries an OCI image configuration gives (environment, runscript,
/// labels merged into the image's).
pub fn oci_entries(c: &archive::ImageConfig, root: &Rooted) -> Result<Vec<layout::Entry>> {
    let mut labels: std::collections::BTreeMap<String, serde_json::Value> = root
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
