//! Tarball sources: a root filesystem tarball, `docker save` archives (docker-archive)
//! and OCI image layout archives (oci-archive). Layers are applied in order onto the
//! staging tree with the OCI whiteout rules (`.wh.NAME` deletes NAME from lower layers,
//! `.wh..wh..opq` empties a directory of lower-layer content). Every write goes through
//! the rooted writer (`rooted`): absolute names are taken relative to the tree, `..`
//! in a name is refused, symlinks a layer planted resolve inside the tree as they would
//! in the container, and a whiteout can only name one entry of its own directory.
//!
//! The image configuration's Env becomes `/.singularity.d/env/10-docker2singularity.sh`,
//! Entrypoint/Cmd the runscript, Labels the labels, as Apptainer converts them.

#![forbid(unsafe_code)]

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

use super::error::{BuildError, Result};
use super::rooted::{self, Meta, Rooted};
use crate::support::shell::sh_quote;

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
    /// The architecture the image is for, in Go's names (amd64, arm64, …).
    pub architecture: Option<String>,
    pub env: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub labels: Vec<(String, String)>,
}

fn src_err(path: &Path, msg: impl std::fmt::Display) -> BuildError {
    BuildError::archive(path, msg)
}

/// A reader over an opened file that may be gzip-compressed (by its magic); `path`
/// names it in errors.
fn open_maybe_gz(mut f: File, path: &Path) -> Result<Box<dyn Read>> {
    let mut magic = [0u8; 4];
    let n = read_up_to(&mut f, &mut magic).map_err(|e| BuildError::io(path, e))?;
    f.seek(SeekFrom::Start(0))
        .map_err(|e| BuildError::io(path, e))?;
    let r = BufReader::with_capacity(1 << 20, f);
    if n >= 2 && magic[..2] == [0x1f, 0x8b] {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(r)))
    } else if n == 4 && magic == ZSTD_MAGIC {
        let d = zstd::stream::read::Decoder::with_buffer(r).map_err(|e| BuildError::io(path, e))?;
        Ok(Box::new(d))
    } else {
        Ok(Box::new(r))
    }
}

/// The first bytes of a zstd frame (layers of type `tar+zstd`).
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Reads until `buf` is full or the file ends.
fn read_up_to(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn open_path_maybe_gz(path: &Path) -> Result<Box<dyn Read>> {
    open_maybe_gz(File::open(path).map_err(|e| BuildError::io(path, e))?, path)
}

/// True when the file looks like a tar (possibly gzip-compressed).
pub fn is_tar(path: &Path) -> bool {
    let Ok(mut r) = open_path_maybe_gz(path) else {
        return false;
    };
    let mut block = vec![0u8; 512];
    r.read_exact(&mut block).is_ok() && &block[257..262] == b"ustar"
}

/// Tells the three kinds apart by the archive's top-level names.
pub fn detect(path: &Path) -> Result<Kind> {
    let r = open_path_maybe_gz(path)?;
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
fn clean(p: &Path) -> std::result::Result<Option<PathBuf>, String> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(format!(
                    "archive entry {} leaves the root filesystem",
                    p.display()
                ));
            }
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

/// How layers are applied.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApplyOptions {
    /// Give entries the archive's owners (real root, or root of a namespace with
    /// subordinate ids).
    pub owners: bool,
    /// Create the archive's device nodes (real root, and asked for).
    pub devices: bool,
}

impl ApplyOptions {
    /// What the running process may and was asked to do.
    pub fn for_process(devices: bool) -> ApplyOptions {
        let root = nix::unistd::geteuid().is_root();
        ApplyOptions {
            owners: root,
            devices: devices && root && !super::subids::active(),
        }
    }
}

/// What applying layers has done so far, and how many bytes of file data it may still
/// write: a layer can unpack to far more than it weighs (a decompression bomb), and a
/// build must not fill the file system others share.
#[derive(Debug)]
pub struct Tally {
    /// Device nodes and sockets left out.
    pub skipped: u64,
    /// Bytes still allowed: file data rounded up to blocks, and a block for every
    /// entry.
    pub room: u64,
    /// Entries (inodes) still allowed.
    pub entries: u64,
    /// The file system's block size.
    block: u64,
    /// The limit as a user is told it.
    limit: String,
}

/// The most a build keeps free for others: a twentieth of the file system, at most
/// this much, and at most half of what is free (a nearly full disk still takes a small
/// image, and a bomb still leaves half of what was left).
const RESERVE: u64 = 1 << 30;

impl Tally {
    /// For a tree staged on the file system of `root` (inside the build's staging
    /// directory): its free space and inodes now, less what is kept for others (see
    /// [`RESERVE`]).
    pub fn for_tree(root: &Rooted) -> Tally {
        let Ok(st) = nix::sys::statvfs::statvfs(root.path()) else {
            return Tally::with_room(u64::MAX, String::new());
        };
        let unit = st.fragment_size().max(1);
        let free = st.blocks_available().saturating_mul(unit);
        let reserve = (st.blocks().saturating_mul(unit) / 20)
            .min(RESERVE)
            .min(free / 2);
        let room = free.saturating_sub(reserve);
        let files = st.files();
        // (A file system that does not count inodes says 0 of them.)
        let entries = if files == 0 {
            u64::MAX
        } else {
            let avail = st.files_available();
            avail.saturating_sub((files / 20).min(avail / 2))
        };
        // The staging directory's parent: the output's directory, or --tmpdir.
        let place = root.path().ancestors().nth(2).unwrap_or(root.path());
        Tally {
            skipped: 0,
            room,
            entries,
            block: st.block_size().max(512),
            limit: format!(
                "the {} MiB and {entries} files free in {} (less what is kept for others)",
                room >> 20,
                place.display()
            ),
        }
    }

    /// At most `room` bytes; `limit` says what that is in messages.
    pub fn with_room(room: u64, limit: String) -> Tally {
        Tally {
            skipped: 0,
            room,
            entries: u64::MAX,
            block: 4096,
            limit,
        }
    }

    /// Charges one entry (a block and an inode).
    fn entry(&mut self, rel: &Path, what: &Path) -> Result<()> {
        if self.entries == 0 || self.room < self.block {
            return Err(self.over(rel, what));
        }
        self.entries -= 1;
        self.room -= self.block;
        Ok(())
    }

    /// Charges what rounding `written` bytes up to whole blocks takes beyond them.
    fn round_up(&mut self, written: u64) {
        let extra = written.div_ceil(self.block) * self.block - written;
        self.room = self.room.saturating_sub(extra);
    }

    fn over(&self, rel: &Path, what: &Path) -> BuildError {
        src_err(
            what,
            format!(
                "{}: the image unpacks to more than {}",
                rel.display(),
                self.limit
            ),
        )
    }
}

/// A writer that refuses data past the tally's room.
struct Bounded<'a, W> {
    inner: W,
    room: &'a mut u64,
    over: bool,
}

impl<W: Write> Write for Bounded<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.len() as u64 > *self.room {
            self.over = true;
            return Err(std::io::Error::other("no room left"));
        }
        let n = self.inner.write(buf)?;
        *self.room -= n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Directories whose metadata is set once everything below them is in (an archive may
/// make a directory read-only before filling it), and what it becomes.
pub type DirFixups = HashMap<PathBuf, Meta>;

/// Applies one layer (a tar stream) onto the tree at `root`. Every write goes through
/// the rooted writer: nothing the layer (or a lower one) names, links or plants can
/// make a write land outside the tree.
pub fn apply_layer(
    root: &Rooted,
    layer: impl Read,
    what: &Path,
    dirs: &mut DirFixups,
    tally: &mut Tally,
    opts: ApplyOptions,
) -> Result<()> {
    let mut a = tar::Archive::new(layer);
    let mut this_layer: HashSet<PathBuf> = HashSet::new();
    let mut made = Vec::new();
    for e in a.entries().map_err(|e| src_err(what, e))? {
        let mut e = e.map_err(|e| src_err(what, e))?;
        let raw = e.path().map_err(|e| src_err(what, e))?.into_owned();
        let Some(rel) = clean(&raw).map_err(|m| src_err(what, m))? else {
            continue;
        };
        let name = rel.file_name().unwrap_or_default().to_owned();
        let parent_rel = rel.parent().map(Path::to_path_buf).unwrap_or_default();
        implicit_dirs(&mut made, dirs);
        let name_bytes = name.as_bytes();
        if name_bytes == b".wh..wh..opq" {
            root.clear_dir(&parent_rel, |c| this_layer.contains(&parent_rel.join(c)))?;
            continue;
        }
        if let Some(target) = name_bytes.strip_prefix(b".wh.") {
            let target = std::ffi::OsStr::from_bytes(target);
            rooted::check_name(target)
                .map_err(|m| src_err(what, format!("whiteout {}: {m}", rel.display())))?;
            root.remove(&parent_rel.join(target))?;
            continue;
        }
        this_layer.insert(rel.clone());
        tally.entry(&rel, what)?;
        let h = e.header();
        let mode = h.mode().unwrap_or(0o644) & 0o7777;
        let mtime = h.mtime().unwrap_or(0) as i64;
        let (uid, gid) = (h.uid().unwrap_or(0) as u32, h.gid().unwrap_or(0) as u32);
        let owner = opts.owners.then_some((uid, gid));
        let meta = Meta {
            owner,
            mode: Some(mode),
            mtime: Some(mtime),
        };
        let et = h.entry_type();
        if et.is_dir() {
            root.mkdir(&rel, &mut made)?;
            // Writable while filling; the real owner, mode and time come at the end.
            dirs.insert(rel.clone(), meta);
            continue;
        }
        if !create_entry(root, &mut e, &rel, what, &mut made, tally, opts.devices)? {
            continue;
        }
        let meta = if et.is_symlink() {
            Meta { mode: None, ..meta }
        } else {
            meta
        };
        root.set_meta(&rel, meta)?;
    }
    implicit_dirs(&mut made, dirs);
    Ok(())
}

/// Directories made implicitly (an entry whose parent the archive never named) get
/// 0755 and the layer's time of 0, as docker gives them.
fn implicit_dirs(made: &mut Vec<PathBuf>, dirs: &mut DirFixups) {
    for m in made.drain(..) {
        dirs.entry(m).or_insert(Meta {
            owner: None,
            mode: Some(0o755),
            mtime: Some(0),
        });
    }
}

/// Creates an entry that is not a directory. Returns whether its metadata is still
/// to be set: not for a hard link (it shares its target's), nor for what is left out.
fn create_entry<R: Read>(
    root: &Rooted,
    e: &mut tar::Entry<'_, R>,
    rel: &Path,
    what: &Path,
    made: &mut Vec<PathBuf>,
    tally: &mut Tally,
    devices: bool,
) -> Result<bool> {
    let et = e.header().entry_type();
    if et.is_file() || et == tar::EntryType::Continuous {
        let f = root.create_file(rel, true, made)?;
        let mut out = Bounded {
            inner: f,
            room: &mut tally.room,
            over: false,
        };
        match std::io::copy(e, &mut out) {
            Ok(n) => tally.round_up(n),
            Err(_) if out.over => return Err(tally.over(rel, what)),
            Err(err) => return Err(src_err(what, err)),
        }
    } else if et.is_symlink() {
        let t = e
            .link_name()
            .map_err(|e| src_err(what, e))?
            .ok_or_else(|| src_err(what, "symlink without a target"))?;
        root.symlink(rel, t.as_os_str(), made)?;
    } else if et.is_hard_link() {
        let t = e
            .link_name()
            .map_err(|e| src_err(what, e))?
            .ok_or_else(|| src_err(what, "hard link without a target"))?;
        let Some(trel) = clean(&t).map_err(|m| src_err(what, m))? else {
            return Err(src_err(what, "hard link to the root"));
        };
        if root.kind(&trel)?.is_none() {
            return Err(src_err(
                what,
                format!(
                    "hard link {} to a missing file {}",
                    rel.display(),
                    t.display()
                ),
            ));
        }
        root.hard_link(&trel, rel, made)?;
        return Ok(false);
    } else if et == tar::EntryType::Fifo {
        root.mkfifo(rel, made)?;
    } else if et.is_character_special() || et.is_block_special() {
        if !devices {
            tally.skipped += 1;
            return Ok(false);
        }
        let (maj, min) = (
            e.header().device_major().ok().flatten().unwrap_or(0),
            e.header().device_minor().ok().flatten().unwrap_or(0),
        );
        root.mknod(
            rel,
            et.is_block_special(),
            nix::sys::stat::makedev(maj.into(), min.into()),
            made,
        )?;
    } else {
        // pax/GNU metadata entries are consumed by the reader; others are ignored.
        return Ok(false);
    }
    Ok(true)
}

/// Gives the directories their final metadata, deepest first; those removed by a
/// later layer are passed over.
pub fn finish_dirs(root: &Rooted, dirs: DirFixups) -> Result<()> {
    let mut v: Vec<_> = dirs.into_iter().collect();
    v.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
    for (p, meta) in v {
        if root.kind(&p)? == Some(rooted::NodeKind::Dir) {
            root.set_meta(&p, meta)?;
        }
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
    architecture: Option<String>,
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

/// The member name of a blob in an OCI layout.
fn blob_path(digest: &str) -> std::result::Result<String, String> {
    let (algo, hex) = digest
        .split_once(':')
        .ok_or_else(|| format!("bad digest {digest:?}"))?;
    if hex.is_empty()
        || !hex.chars().all(|c| c.is_ascii_hexdigit())
        || algo.is_empty()
        || !algo.chars().all(|c| c.is_ascii_alphanumeric())
    {
        return Err(format!("bad digest {digest:?}"));
    }
    Ok(format!("blobs/{algo}/{hex}"))
}

fn config_of(c: ConfigFile) -> ImageConfig {
    let architecture = c.architecture;
    let c = c.config.unwrap_or_default();
    ImageConfig {
        architecture,
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
    root: &Rooted,
    scratch: &Path,
    opts: ApplyOptions,
) -> Result<(Option<ImageConfig>, u64)> {
    let mut dirs = DirFixups::new();
    let mut tally = Tally::for_tree(root);
    if kind == Kind::Rootfs {
        apply_layer(
            root,
            open_maybe_gz(
                File::open(archive).map_err(|e| BuildError::io(archive, e))?,
                archive,
            )?,
            archive,
            &mut dirs,
            &mut tally,
            opts,
        )?;
        finish_dirs(root, dirs)?;
        return Ok((None, tally.skipped));
    }
    // The outer archive holds only blobs and JSON. Its members are read back through
    // a rooted view of the scratch directory, so a member that is a symlink (to a host
    // tarball, say) is never followed out of it.
    let mut outer = tar::Archive::new(open_maybe_gz(
        File::open(archive).map_err(|e| BuildError::io(archive, e))?,
        archive,
    )?);
    outer
        .unpack(scratch)
        .map_err(|e| src_err(archive, format!("unpacking: {e}")))?;
    let sc = Rooted::open(scratch)?;
    let member = |name: &str| -> Result<(PathBuf, File)> {
        let rel = clean(Path::new(name))
            .map_err(|m| src_err(archive, m))?
            .ok_or_else(|| src_err(archive, format!("bad archive member {name:?}")))?;
        let f = sc
            .open_read(&rel)?
            .ok_or_else(|| src_err(archive, format!("{name}: no such file in the archive")))?;
        Ok((scratch.join(&rel), f))
    };
    let json = |name: &str| -> Result<ConfigOrAny> {
        let (p, mut f) = member(name)?;
        let mut b = Vec::new();
        f.read_to_end(&mut b).map_err(|e| BuildError::io(&p, e))?;
        Ok(ConfigOrAny(p, b))
    };
    let (config, layers): (ConfigFile, Vec<String>) = match kind {
        Kind::DockerArchive => {
            let m: Vec<DockerManifest> = json("manifest.json")?.parse()?;
            let m = m
                .into_iter()
                .next()
                .ok_or_else(|| src_err(archive, "manifest.json lists no image"))?;
            (json(&m.config)?.parse()?, m.layers)
        }
        Kind::OciArchive => {
            let idx: OciIndex = json("index.json")?.parse()?;
            let d = idx
                .manifests
                .first()
                .ok_or_else(|| src_err(archive, "index.json lists no manifest"))?;
            let blob = |digest: &str| blob_path(digest).map_err(|m| src_err(archive, m));
            let m: OciManifest = json(&blob(&d.digest)?)?.parse()?;
            let config = json(&blob(&m.config.digest)?)?.parse()?;
            let layers = m
                .layers
                .iter()
                .map(|l| blob(&l.digest))
                .collect::<Result<Vec<_>>>()?;
            (config, layers)
        }
        Kind::Rootfs => unreachable!(),
    };
    for l in &layers {
        let (p, f) = member(l)?;
        apply_layer(root, open_maybe_gz(f, &p)?, &p, &mut dirs, &mut tally, opts)?;
    }
    finish_dirs(root, dirs)?;
    Ok((Some(config_of(config)), tally.skipped))
}

/// Applies the layers of an image pulled from a registry (files, bottom first; plain,
/// gzip or zstd tar) to the staging tree `root`, and reads its configuration. Returns
/// the configuration and the number of device nodes left out.
pub fn unpack_layers(
    layers: &[PathBuf],
    config: &[u8],
    what: &Path,
    root: &Rooted,
    opts: ApplyOptions,
) -> Result<(ImageConfig, u64)> {
    let config: ConfigFile = serde_json::from_slice(config)
        .map_err(|e| src_err(what, format!("the image configuration: {e}")))?;
    let mut dirs = DirFixups::new();
    let mut tally = Tally::for_tree(root);
    for l in layers {
        // A cache entry (in the user's private cache): no link followed.
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(l)
            .map_err(|e| BuildError::io(l, e))?;
        apply_layer(root, open_maybe_gz(f, l)?, l, &mut dirs, &mut tally, opts)?;
    }
    finish_dirs(root, dirs)?;
    Ok((config_of(config), tally.skipped))
}

/// A JSON member's path and bytes.
struct ConfigOrAny(PathBuf, Vec<u8>);

impl ConfigOrAny {
    fn parse<T: for<'de> Deserialize<'de>>(self) -> Result<T> {
        serde_json::from_slice(&self.1).map_err(|e| src_err(&self.0, e))
    }
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
