//! Tarball sources: a root filesystem tarball, `docker save` archives (docker-archive)
//! and OCI image layout archives (oci-archive). Layers are applied in order onto the
//! staging tree with the OCI whiteout rules (`.wh.NAME` deletes NAME from lower layers,
//! `.wh..wh..opq` empties a directory of lower-layer content). Paths are confined to the
//! staging tree: absolute names are taken relative to it, `..` is refused, and nothing
//! is written through a symlink.
//!
//! The image configuration's Env becomes `/.singularity.d/env/10-docker2singularity.sh`,
//! Entrypoint/Cmd the runscript, Labels the labels, as Apptainer converts them.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

use super::error::{BuildError, Result};
use crate::launch::env::sh_quote;

/// Which kind of tarball.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Rootfs,
    DockerArchive,
    OciArchive,
}

/// What the image configuration says, for the layout.
#[derive(Debug, Clone, Default)]
pub struct ImageConfig {
    pub env: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub labels: Vec<(String, String)>,
}

fn src_err(path: &Path, msg: impl std::fmt::Display) -> BuildError {
    BuildError::Source(format!("{}: {msg}", path.display()))
}

/// A reader over a file that may be gzip-compressed (by its magic).
fn open_maybe_gz(path: &Path) -> Result<Box<dyn Read>> {
    let mut f = File::open(path).map_err(|e| BuildError::io(path, e))?;
    let mut magic = [0u8; 2];
    let n = f.read(&mut magic).map_err(|e| BuildError::io(path, e))?;
    f.seek(SeekFrom::Start(0))
        .map_err(|e| BuildError::io(path, e))?;
    let r = BufReader::with_capacity(1 << 20, f);
    if n == 2 && magic == [0x1f, 0x8b] {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(r)))
    } else {
        Ok(Box::new(r))
    }
}

/// True when the file looks like a tar (possibly gzip-compressed).
pub fn is_tar(path: &Path) -> bool {
    let Ok(mut r) = open_maybe_gz(path) else {
        return false;
    };
    let mut block = vec![0u8; 512];
    r.read_exact(&mut block).is_ok() && &block[257..262] == b"ustar"
}

/// Tells the three kinds apart by the archive's top-level names.
pub fn detect(path: &Path) -> Result<Kind> {
    let r = open_maybe_gz(path)?;
    let mut a = tar::Archive::new(r);
    let mut manifest = false;
    for e in a.entries().map_err(|e| src_err(path, e))? {
        let e = e.map_err(|e| src_err(path, e))?;
        let p = e.path().map_err(|e| src_err(path, e))?.into_owned();
        let s = p.to_string_lossy();
        let s = s.trim_start_matches("./");
        if s == "oci-layout" {
            return Ok(Kind::OciArchive);
        }
        if s == "manifest.json" {
            manifest = true;
        }
    }
    Ok(if manifest {
        Kind::DockerArchive
    } else {
        Kind::Rootfs
    })
}

/// A relative, `..`-free path inside the tree, or `None` for the root itself.
fn clean(p: &Path) -> Result<Option<PathBuf>> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(BuildError::Source(format!(
                    "archive entry {} leaves the root filesystem",
                    p.display()
                )));
            }
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

/// Fails if any existing parent of `rel` under `root` is a symlink (no writes through
/// links planted by a layer), and creates missing parents as directories.
fn prepare_parent(root: &Path, rel: &Path, dirs: &mut HashMap<PathBuf, (u32, i64)>) -> Result<()> {
    let mut cur = root.to_path_buf();
    if let Some(parent) = rel.parent() {
        for c in parent.components() {
            cur.push(c);
            match fs::symlink_metadata(&cur) {
                Ok(md) if md.is_dir() => {}
                Ok(md) if md.file_type().is_symlink() => {
                    return Err(BuildError::Source(format!(
                        "archive entry {} is below a symlink",
                        rel.display()
                    )));
                }
                Ok(_) => {
                    fs::remove_file(&cur).map_err(|e| BuildError::io(&cur, e))?;
                    fs::create_dir(&cur).map_err(|e| BuildError::io(&cur, e))?;
                    dirs.entry(cur.clone()).or_insert((0o755, 0));
                }
                Err(_) => {
                    fs::create_dir(&cur).map_err(|e| BuildError::io(&cur, e))?;
                    dirs.entry(cur.clone()).or_insert((0o755, 0));
                }
            }
        }
    }
    Ok(())
}

fn remove_any(p: &Path) -> Result<()> {
    match fs::symlink_metadata(p) {
        Ok(md) if md.is_dir() => {
            super::fsops::remove_tree(p);
            Ok(())
        }
        Ok(_) => fs::remove_file(p).map_err(|e| BuildError::io(p, e)),
        Err(_) => Ok(()),
    }
}

/// Applies one layer (a tar stream) onto `root`.
fn apply_layer(
    root: &Path,
    layer: Box<dyn Read>,
    what: &Path,
    dirs: &mut HashMap<PathBuf, (u32, i64)>,
    skipped: &mut u64,
) -> Result<()> {
    let is_root = nix::unistd::geteuid().is_root();
    let mut a = tar::Archive::new(layer);
    let mut this_layer: HashSet<PathBuf> = HashSet::new();
    for e in a.entries().map_err(|e| src_err(what, e))? {
        let mut e = e.map_err(|e| src_err(what, e))?;
        let raw = e.path().map_err(|e| src_err(what, e))?.into_owned();
        let Some(rel) = clean(&raw)? else {
            continue;
        };
        let name = rel
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let parent_rel = rel.parent().map(Path::to_path_buf).unwrap_or_default();
        if name == ".wh..wh..opq" {
            let dir = root.join(&parent_rel);
            if let Ok(rd) = fs::read_dir(&dir) {
                for c in rd.flatten() {
                    let crel = parent_rel.join(c.file_name());
                    if !this_layer.contains(&crel) {
                        remove_any(&c.path())?;
                    }
                }
            }
            continue;
        }
        if let Some(target) = name.strip_prefix(".wh.") {
            prepare_parent(root, &rel, dirs)?;
            remove_any(&root.join(&parent_rel).join(target))?;
            continue;
        }
        prepare_parent(root, &rel, dirs)?;
        let dst = root.join(&rel);
        this_layer.insert(rel.clone());
        let h = e.header();
        let mode = h.mode().unwrap_or(0o644) & 0o7777;
        let mtime = h.mtime().unwrap_or(0) as i64;
        let (uid, gid) = (h.uid().unwrap_or(0) as u32, h.gid().unwrap_or(0) as u32);
        let et = h.entry_type();
        if et.is_dir() {
            match fs::symlink_metadata(&dst) {
                Ok(md) if md.is_dir() => {}
                Ok(_) => {
                    remove_any(&dst)?;
                    fs::create_dir(&dst).map_err(|e| BuildError::io(&dst, e))?;
                }
                Err(_) => fs::create_dir(&dst).map_err(|e| BuildError::io(&dst, e))?,
            }
            fs::set_permissions(&dst, fs::Permissions::from_mode(0o700))
                .map_err(|e| BuildError::io(&dst, e))?;
            dirs.insert(dst.clone(), (mode, mtime));
            if is_root {
                let _ = std::os::unix::fs::lchown(&dst, Some(uid), Some(gid));
            }
            continue;
        }
        remove_any(&dst)?;
        if et.is_file() || et == tar::EntryType::Continuous {
            let mut f = File::create(&dst).map_err(|e| BuildError::io(&dst, e))?;
            std::io::copy(&mut e, &mut f).map_err(|e| src_err(what, e))?;
            fs::set_permissions(&dst, fs::Permissions::from_mode(mode))
                .map_err(|e| BuildError::io(&dst, e))?;
        } else if et.is_symlink() {
            let t = e
                .link_name()
                .map_err(|e| src_err(what, e))?
                .ok_or_else(|| src_err(what, "symlink without a target"))?;
            symlink(&*t, &dst).map_err(|e| BuildError::io(&dst, e))?;
        } else if et.is_hard_link() {
            let t = e
                .link_name()
                .map_err(|e| src_err(what, e))?
                .ok_or_else(|| src_err(what, "hard link without a target"))?;
            let Some(trel) = clean(&t)? else {
                return Err(src_err(what, "hard link to the root"));
            };
            let target = root.join(trel);
            if fs::symlink_metadata(&target).is_ok_and(|m| m.is_file()) {
                fs::hard_link(&target, &dst).map_err(|e| BuildError::io(&dst, e))?;
            } else {
                return Err(src_err(
                    what,
                    format!(
                        "hard link {} to a missing file {}",
                        rel.display(),
                        t.display()
                    ),
                ));
            }
            continue;
        } else if et == tar::EntryType::Fifo {
            nix::unistd::mkfifo(&dst, nix::sys::stat::Mode::from_bits_truncate(mode & 0o777))
                .map_err(|e| BuildError::io(&dst, e.into()))?;
        } else if et.is_character_special() || et.is_block_special() {
            if !is_root || super::subids::active() {
                *skipped += 1;
                continue;
            }
            let (maj, min) = (
                e.header().device_major().ok().flatten().unwrap_or(0),
                e.header().device_minor().ok().flatten().unwrap_or(0),
            );
            let kind = if et.is_character_special() {
                nix::sys::stat::SFlag::S_IFCHR
            } else {
                nix::sys::stat::SFlag::S_IFBLK
            };
            nix::sys::stat::mknod(
                &dst,
                kind,
                nix::sys::stat::Mode::from_bits_truncate(mode),
                nix::sys::stat::makedev(maj.into(), min.into()),
            )
            .map_err(|e| BuildError::io(&dst, e.into()))?;
        } else {
            // pax/GNU metadata entries are consumed by the reader; others are ignored.
            continue;
        }
        if is_root {
            let _ = std::os::unix::fs::lchown(&dst, Some(uid), Some(gid));
        }
        set_time(&dst, mtime);
    }
    Ok(())
}

fn set_time(p: &Path, t: i64) {
    let Ok(c) = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str()))
    else {
        return;
    };
    let ts = libc::timespec {
        tv_sec: t as _,
        tv_nsec: 0,
    };
    // SAFETY: `c` is NUL-terminated and the array holds the two timespecs utimensat reads.
    unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            [ts, ts].as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        );
    }
}

fn finish_dirs(dirs: HashMap<PathBuf, (u32, i64)>) -> Result<()> {
    let mut v: Vec<_> = dirs.into_iter().filter(|(p, _)| p.exists()).collect();
    v.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
    for (p, (mode, mtime)) in v {
        fs::set_permissions(&p, fs::Permissions::from_mode(mode))
            .map_err(|e| BuildError::io(&p, e))?;
        set_time(&p, mtime);
    }
    Ok(())
}

#[derive(Deserialize)]
struct DockerManifest {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

#[derive(Deserialize, Default)]
struct ConfigFile {
    #[serde(default)]
    config: Option<ConfigInner>,
}

#[derive(Deserialize, Default)]
struct ConfigInner {
    #[serde(rename = "Env", default)]
    env: Option<Vec<String>>,
    #[serde(rename = "Entrypoint", default)]
    entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default)]
    cmd: Option<Vec<String>>,
    #[serde(rename = "Labels", default)]
    labels: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Deserialize)]
struct OciIndex {
    manifests: Vec<OciDescriptor>,
}

#[derive(Deserialize)]
struct OciDescriptor {
    digest: String,
}

#[derive(Deserialize)]
struct OciManifest {
    config: OciDescriptor,
    layers: Vec<OciDescriptor>,
}

fn blob_path(dir: &Path, digest: &str) -> Result<PathBuf> {
    let (algo, hex) = digest
        .split_once(':')
        .ok_or_else(|| BuildError::Source(format!("bad digest {digest:?}")))?;
    if !hex.chars().all(|c| c.is_ascii_hexdigit())
        || !algo.chars().all(|c| c.is_ascii_alphanumeric())
    {
        return Err(BuildError::Source(format!("bad digest {digest:?}")));
    }
    Ok(dir.join("blobs").join(algo).join(hex))
}

fn read_json<T: for<'de> Deserialize<'de>>(p: &Path) -> Result<T> {
    let b = fs::read(p).map_err(|e| BuildError::io(p, e))?;
    serde_json::from_slice(&b).map_err(|e| src_err(p, e))
}

fn member(dir: &Path, name: &str) -> Result<PathBuf> {
    let rel = clean(Path::new(name))?
        .ok_or_else(|| BuildError::Source(format!("bad archive member {name:?}")))?;
    Ok(dir.join(rel))
}

fn config_of(c: ConfigFile) -> ImageConfig {
    let c = c.config.unwrap_or_default();
    ImageConfig {
        env: c.env.unwrap_or_default(),
        entrypoint: c.entrypoint.unwrap_or_default(),
        cmd: c.cmd.unwrap_or_default(),
        labels: c.labels.unwrap_or_default().into_iter().collect(),
    }
}

/// Unpacks `archive` into the staging tree `root`. `scratch` holds the outer archive's
/// members for docker/OCI archives. Returns the image configuration (if any) and the
/// number of device nodes left out.
pub fn unpack(
    archive: &Path,
    kind: Kind,
    root: &Path,
    scratch: &Path,
) -> Result<(Option<ImageConfig>, u64)> {
    let mut dirs = HashMap::new();
    let mut skipped = 0;
    if kind == Kind::Rootfs {
        apply_layer(
            root,
            open_maybe_gz(archive)?,
            archive,
            &mut dirs,
            &mut skipped,
        )?;
        finish_dirs(dirs)?;
        return Ok((None, skipped));
    }
    // The outer archive holds only blobs and JSON: unpack it as is.
    let mut outer = tar::Archive::new(open_maybe_gz(archive)?);
    outer
        .unpack(scratch)
        .map_err(|e| src_err(archive, format!("unpacking: {e}")))?;
    let (config, layers) = match kind {
        Kind::DockerArchive => {
            let m: Vec<DockerManifest> = read_json(&scratch.join("manifest.json"))?;
            let m = m
                .into_iter()
                .next()
                .ok_or_else(|| src_err(archive, "manifest.json lists no image"))?;
            let config: ConfigFile = read_json(&member(scratch, &m.config)?)?;
            let layers = m
                .layers
                .iter()
                .map(|l| member(scratch, l))
                .collect::<Result<Vec<_>>>()?;
            (config, layers)
        }
        Kind::OciArchive => {
            let idx: OciIndex = read_json(&scratch.join("index.json"))?;
            let d = idx
                .manifests
                .first()
                .ok_or_else(|| src_err(archive, "index.json lists no manifest"))?;
            let m: OciManifest = read_json(&blob_path(scratch, &d.digest)?)?;
            let config: ConfigFile = read_json(&blob_path(scratch, &m.config.digest)?)?;
            let layers = m
                .layers
                .iter()
                .map(|l| blob_path(scratch, &l.digest))
                .collect::<Result<Vec<_>>>()?;
            (config, layers)
        }
        Kind::Rootfs => unreachable!(),
    };
    for l in &layers {
        apply_layer(root, open_maybe_gz(l)?, l, &mut dirs, &mut skipped)?;
    }
    finish_dirs(dirs)?;
    Ok((Some(config_of(config)), skipped))
}

/// `10-docker2singularity.sh`: the image's Env as exports.
pub fn env_script(c: &ImageConfig) -> String {
    let mut s = String::from("#!/bin/sh\n# Environment of the OCI image configuration.\n");
    for kv in &c.env {
        if let Some((k, v)) = kv.split_once('=')
            && !k.is_empty()
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            s.push_str(&format!("export {k}={}\n", sh_quote(v)));
        }
    }
    s
}

/// The runscript for Entrypoint/Cmd: arguments replace Cmd, as `docker run` does.
pub fn runscript(c: &ImageConfig) -> String {
    let words = |v: &[String]| v.iter().map(|w| sh_quote(w)).collect::<Vec<_>>().join(" ");
    let ep = words(&c.entrypoint);
    let cmd = words(&c.cmd);
    let mut s = String::from(
        "#!/bin/sh\n# From the OCI image configuration: Entrypoint, then Cmd or the arguments.\n",
    );
    match (ep.is_empty(), cmd.is_empty()) {
        (true, true) => s.push_str("if [ $# -gt 0 ]; then\n    exec \"$@\"\nfi\nexec /bin/sh\n"),
        (true, false) => s.push_str(&format!(
            "if [ $# -gt 0 ]; then\n    exec \"$@\"\nfi\nexec {cmd}\n"
        )),
        (false, _) => s.push_str(&format!(
            "if [ $# -gt 0 ]; then\n    exec {ep} \"$@\"\nfi\nexec {ep} {cmd}\n"
        )),
    }
    s
}
