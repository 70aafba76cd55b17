//! SIF assembly, as Apptainer lays it out (spec: apptainer-encryption.md §2.4): in
//! group 1, Def.FILE, then the JSON.Generic `inspect-metadata.json`, then the primary
//! system partition (4096-aligned), then — PEM mode only — the crypto message linked
//! to the partition. Everything is written to temporary files beside the output,
//! verified, and renamed over the destination last.

#![forbid(unsafe_code)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use veil_fusefs::luks2::{self, Passphrase};
use veil_fusefs::source::{FileSource, ReadAt};
use veil_fusefs::squashfs::Squashfs;

use super::encrypt;
use super::error::{BuildError, ImageFault, Result};
use super::squash::{self, SquashOptions};
use super::tree::Tree;
use super::{BuildOptions, Summary};
use crate::sif::{
    Arch, DEFAULT_LAUNCH_SCRIPT, DataType, Extra, FormatType, FsType, Link, MessageType, NewObject,
    ObjectData, PartType, Sif,
};
use crate::support::diag::debug_time;

/// A temporary path, removed on drop unless kept.
pub struct TempPath {
    path: PathBuf,
    keep: bool,
}

impl TempPath {
    pub fn new(dir: &Path, tag: &str) -> TempPath {
        let path = dir.join(format!(
            ".veil-{tag}-{:08x}",
            uuid::Uuid::new_v4().as_u128() as u32
        ));
        super::cleanup::register(&path);
        TempPath { path, keep: false }
    }

    /// A temporary file that holds the image's contents in the clear (the squashfs of
    /// an image about to be encrypted, say): created here, empty, mode 0600 and never
    /// over an existing name, before anything is written to it. The writers that fill
    /// it later open it with O_TRUNC, which keeps that mode; created by them it would
    /// be 0644, readable by every user who can enter the output's directory.
    pub fn private(dir: &Path, tag: &str) -> Result<TempPath> {
        use std::os::unix::fs::OpenOptionsExt;
        for _ in 0..100 {
            let t = TempPath::new(dir, tag);
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&t.path)
            {
                Ok(_) => return Ok(t),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    // Not ours: leave it, and do not remove it on drop.
                    let mut t = t;
                    t.keep = true;
                    super::cleanup::unregister(&t.path);
                }
                Err(e) => {
                    let mut t = t;
                    t.keep = true;
                    super::cleanup::unregister(&t.path);
                    return Err(BuildError::io(&t.path, e));
                }
            }
        }
        Err(BuildError::output(dir, "cannot create a temporary file"))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file, opened again for writing without following a symbolic link (a
    /// file made by [`TempPath::private`], in a directory others may write to).
    pub fn open_write(&self) -> Result<File> {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&self.path)
            .map_err(|e| BuildError::io(&self.path, e))
    }

    /// Renames the file to `dest` (replacing a file there).
    pub fn persist(mut self, dest: &Path) -> Result<()> {
        std::fs::rename(&self.path, dest).map_err(|e| BuildError::io(dest, e))?;
        self.keep = true;
        super::cleanup::unregister(&self.path);
        Ok(())
    }

    /// Renames the file to `dest`, which must not exist: a file that appeared there
    /// since the build started is not replaced.
    pub fn persist_new(mut self, dest: &Path) -> Result<()> {
        crate::fsutil::rename_noreplace(&self.path, dest).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => BuildError::Exists(dest.display().to_string()),
            _ => BuildError::io(dest, e),
        })?;
        self.keep = true;
        super::cleanup::unregister(&self.path);
        Ok(())
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
            super::cleanup::unregister(&self.path);
        }
    }
}

/// The metadata objects of a new image.
pub struct Objects<'a> {
    pub deffile: Option<&'a str>,
    pub inspect: Option<&'a [u8]>,
    pub arch: Arch,
    pub time: i64,
}

fn group1(mut o: NewObject<'_>, time: i64) -> NewObject<'_> {
    o.group = 1;
    o.time = Some(time);
    o
}

/// Walks a squashfs fully (every directory, every inode) and returns the number of
/// distinct inodes including the root.
fn walk_count<R: ReadAt>(fs: &Squashfs<R>) -> veil_fusefs::squashfs::Result<u32> {
    let mut seen = std::collections::HashSet::new();
    fs.walk(|_, a| {
        seen.insert(a.ino);
        Ok(())
    })?;
    Ok(seen.len() as u32 + 1)
}

/// Writes `tree` as a squashfs and assembles the SIF.
pub fn write_sif(
    opts: &BuildOptions,
    tree: &Tree,
    sq: &SquashOptions,
    objs: Objects<'_>,
) -> Result<Summary> {
    let tmp_dir = opts
        .tmpdir
        .clone()
        .unwrap_or_else(|| crate::fsutil::parent_dir(&opts.output).to_path_buf());
    let sqfs = TempPath::private(&tmp_dir, "squashfs")?;
    debug_time("build: tree scanned");
    let stats = squash::write(tree, sqfs.path(), sq)?;
    debug_time("build: squashfs written");
    // Verification, part 1: the filesystem reads back whole.
    let source = FileSource::open(sqfs.path()).map_err(|e| BuildError::io(sqfs.path(), e))?;
    let fs = Squashfs::open(source).map_err(|e| BuildError::verify(sqfs.path(), e))?;
    let n = walk_count(&fs).map_err(|e| BuildError::verify(sqfs.path(), e))?;
    if n != stats.inodes {
        return Err(BuildError::verify(
            sqfs.path(),
            ImageFault::InodeCount {
                read: n,
                written: stats.inodes,
            },
        ));
    }
    drop(fs);
    debug_time("build: squashfs verified");
    finish(opts, Payload::File(sqfs), objs, stats.bytes, stats.inodes)
}

/// A finished squashfs: a file this build wrote, or the partition of a source image
/// (possibly decrypted on the fly), `len` bytes long with zeros past the source's end.
pub enum Payload {
    File(TempPath),
    /// `name`: the source image, which read errors name.
    Source {
        src: Arc<dyn ReadAt>,
        len: u64,
        name: String,
    },
}

/// Reads a [`Payload::Source`] front to back, zero-filled past the source's end.
struct SourceReader<'a> {
    src: &'a dyn ReadAt,
    pos: u64,
    len: u64,
    name: &'a str,
}

impl std::io::Read for SourceReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = ((self.len - self.pos) as usize).min(buf.len());
        let from_src = (self.src.len().saturating_sub(self.pos) as usize).min(n);
        // (A damaged source is the source's fault: say which file it is.)
        self.src
            .read_exact_at(&mut buf[..from_src], self.pos)
            .map_err(|e| std::io::Error::new(e.kind(), format!("reading {}: {e}", self.name)))?;
        buf[from_src..n].fill(0);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Payload {
    fn reader(&self) -> Result<Box<dyn std::io::Read + '_>> {
        Ok(match self {
            Payload::File(t) => {
                Box::new(File::open(t.path()).map_err(|e| BuildError::io(t.path(), e))?)
            }
            Payload::Source { src, len, name } => Box::new(SourceReader {
                src: &**src,
                pos: 0,
                len: *len,
                name,
            }),
        })
    }

    fn len(&self) -> Result<u64> {
        match self {
            Payload::File(t) => Ok(std::fs::metadata(t.path())
                .map_err(|e| BuildError::io(t.path(), e))?
                .len()),
            Payload::Source { len, .. } => Ok(*len),
        }
    }
}

/// Encrypts (when asked) and assembles the SIF from a finished squashfs.
fn finish(
    opts: &BuildOptions,
    payload: Payload,
    objs: Objects<'_>,
    bytes: u64,
    inodes: u32,
) -> Result<Summary> {
    let out = &opts.output;
    let out_dir = crate::fsutil::parent_dir(out).to_path_buf();
    let tmp_dir = opts.tmpdir.clone().unwrap_or_else(|| out_dir.clone());
    let mut luks_tmp = None;
    let mut message = None;
    let mut secret: Option<Passphrase> = None;
    let mut plain_tmp = None;
    let (part_path, fs_type) = match (&opts.encryption, &payload) {
        (None, Payload::File(t)) => (t.path().to_path_buf(), FsType::Squash),
        (None, Payload::Source { .. }) => {
            // The output is plain: its squashfs is copied into a file of its own.
            let t = TempPath::private(&tmp_dir, "squashfs")?;
            let mut f = File::create(t.path()).map_err(|e| BuildError::io(t.path(), e))?;
            std::io::copy(&mut payload.reader()?, &mut f)
                .map_err(|e| BuildError::io(t.path(), e))?;
            let p = t.path().to_path_buf();
            plain_tmp = Some(t);
            (p, FsType::Squash)
        }
        (Some(enc), _) if opts.format == encrypt::Format::Luks2 => {
            let t = TempPath::private(&tmp_dir, "luks")?;
            let r = encrypt::encrypt_stream(
                payload.reader()?,
                payload.len()?,
                t.path(),
                enc,
                opts.kdf,
                opts.squash.progress,
            )?;
            message = r.message;
            secret = r.secret;
            let p = t.path().to_path_buf();
            luks_tmp = Some(t);
            (p, FsType::EncryptedSquashfs)
        }
        (Some(enc), _) => {
            let encrypt::Format::Gocryptfs(cost) = opts.format else {
                unreachable!("LUKS2 is matched above")
            };
            let time = objs.time.clamp(0, i64::from(u32::MAX)) as u32;
            let r = super::gocryptfs::encrypt(
                out,
                payload.reader()?,
                payload.len()?,
                &tmp_dir,
                enc,
                cost,
                time,
                opts.squash.progress,
            )?;
            message = r.message;
            secret = Some(r.password);
            let p = r.outer.path().to_path_buf();
            luks_tmp = Some(r.outer);
            (p, FsType::GocryptfsSquashfs)
        }
    };
    let final_tmp = TempPath::new(&out_dir, "sif");
    let objects = sif_objects(opts, &objs, &part_path, fs_type, message.as_deref());
    let copts = crate::sif::CreateOptions {
        launch_script: DEFAULT_LAUNCH_SCRIPT.into(),
        id: opts.source_date_epoch.map(|_| [0u8; 16]),
        time: Some(objs.time),
        ..Default::default()
    };
    debug_time("build: encrypted");
    crate::sif::create(final_tmp.path(), &copts, objects)?;
    debug_time("build: SIF assembled");
    if let Some(t) = opts.source_date_epoch {
        // The writer stamps the header's "modified" field (offset 72) with the time of
        // the last object added; a reproducible build pins it to SOURCE_DATE_EPOCH too.
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(final_tmp.path())
            .map_err(|e| BuildError::io(final_tmp.path(), e))?;
        f.write_all_at(&t.to_le_bytes(), 72)
            .map_err(|e| BuildError::io(final_tmp.path(), e))?;
    }
    drop(luks_tmp);
    drop(plain_tmp);
    drop(payload);
    verify(final_tmp.path(), fs_type, secret.as_ref())?;
    debug_time("build: SIF verified");
    if out.is_dir() {
        return Err(BuildError::output(out, "is a directory; remove it first"));
    }
    if opts.force {
        final_tmp.persist(out)?;
    } else {
        final_tmp.persist_new(out)?;
    }
    Ok(Summary {
        output: out.clone(),
        squashfs_bytes: bytes,
        inodes,
        encrypted: opts.encryption.is_some(),
        skipped_devices: 0,
    })
}

/// The SIF's objects: the definition file and inspect metadata (unless left out), the
/// partition, and an encrypted partition's crypto message linked to it.
fn sif_objects<'a>(
    opts: &BuildOptions,
    objs: &Objects<'a>,
    part_path: &'a Path,
    fs_type: FsType,
    message: Option<&'a [u8]>,
) -> Vec<NewObject<'a>> {
    let mut objects = Vec::new();
    if !opts.no_metadata {
        if let Some(d) = objs.deffile {
            objects.push(group1(
                NewObject::new(DataType::Deffile, ObjectData::Bytes(d.as_bytes())),
                objs.time,
            ));
        }
        if let Some(j) = objs.inspect {
            let mut o = NewObject::new(DataType::GenericJson, ObjectData::Bytes(j));
            o.name = "inspect-metadata.json".into();
            objects.push(group1(o, objs.time));
        }
    }
    let part_id = objects.len() as u32 + 1;
    let mut part = NewObject::new(DataType::Partition, ObjectData::Path(part_path));
    part.extra = Extra::Partition {
        fs: fs_type,
        part: PartType::PrimSys,
        arch: objs.arch,
    };
    objects.push(group1(part, objs.time));
    if let Some(m) = message {
        let mut o = NewObject::new(DataType::CryptoMessage, ObjectData::Bytes(m));
        o.link = Link::Object(part_id);
        o.extra = Extra::CryptoMessage {
            format: FormatType::Pem,
            message: MessageType::RsaOaep,
        };
        objects.push(group1(o, objs.time));
    }
    objects
}

/// Verification, part 2: the SIF parses, its primary partition is what was written and
/// (plain, or with a key at hand) its filesystem reads.
pub(super) fn verify(path: &Path, fs_type: FsType, secret: Option<&Passphrase>) -> Result<()> {
    let v = |e: ImageFault| BuildError::verify(path, e);
    let sif = Sif::open_path(path).map_err(|e| v(e.into()))?;
    let prim = sif
        .primary_partition()
        .ok_or_else(|| v(ImageFault::NoPrimaryPartition))?;
    match prim.extra() {
        Extra::Partition { fs, .. } if fs == fs_type => {}
        other => return Err(v(ImageFault::UnexpectedPartition(other))),
    }
    let src = sif.object_source(prim).map_err(|e| v(e.into()))?;
    match fs_type {
        FsType::Squash => {
            let fs = Squashfs::open(src).map_err(|e| v(e.into()))?;
            walk_count(&fs).map_err(|e| v(e.into()))?;
        }
        FsType::GocryptfsSquashfs => {
            // Through the image layer, as a run opens it: the outer squashfs, its
            // configuration, the password, and the decrypted squashfs read whole.
            drop(src);
            drop(sif);
            let img = crate::image::open(path).map_err(|e| v(ImageFault::Image(e.to_string())))?;
            let crate::image::Image::Encrypted(enc) = img else {
                return Err(v(ImageFault::NotEncrypted));
            };
            if let Some(secret) = secret {
                let u = enc
                    .unlock(secret, &crate::image::kdf::unlock_options())
                    .map_err(|e| v(ImageFault::Image(e.to_string())))?;
                let crate::image::Root::Squashfs { fs, .. } = u.root else {
                    return Err(v(ImageFault::NotEncrypted));
                };
                walk_count(&fs).map_err(|e| v(e.into()))?;
            }
        }
        _ => {
            luks2::inspect(&src).map_err(|e| v(e.into()))?;
            if let Some(secret) = secret {
                let vol = luks2::unlock(src, secret, &crate::image::kdf::unlock_options())
                    .map_err(|e| v(e.into()))?;
                let fs = Squashfs::open(vol).map_err(|e| v(e.into()))?;
                walk_count(&fs).map_err(|e| v(e.into()))?;
            }
        }
    }
    Ok(())
}

/// The decrypted squashfs of the gocryptfs image `src` (opened as `file`), through
/// the image layer, as a run opens it.
fn gocryptfs_source(opts: &BuildOptions, src: &Path, file: &File) -> Result<Arc<dyn ReadAt>> {
    let Some(key) = &opts.source_key else {
        return Err(BuildError::source_image(
            src,
            format!("the source image is encrypted; {}", super::SOURCE_KEY_HINT),
        ));
    };
    let f = file.try_clone().map_err(|e| BuildError::io(src, e))?;
    let img = crate::image::open_file(f, &src.display().to_string())
        .map_err(|e| BuildError::source_image(src, e))?;
    let crate::image::Image::Encrypted(enc) = img else {
        return Err(BuildError::source_image(src, "not encrypted"));
    };
    let pass = key
        .for_run(enc.message())
        .map_err(|e| BuildError::source_image(src, e))?;
    let (source, _) = enc
        .decrypt(&pass, &crate::image::kdf::unlock_options())
        .map_err(|e| BuildError::source_image(src, e))?;
    Ok(source)
}

/// Rebuilds an image into a new SIF without unpacking it: the squashfs is copied (and
/// decrypted with the source key, or encrypted, as asked); the source's Def.FILE and
/// JSON.Generic objects are kept unless `--no-metadata`.
/// `file` is `src` opened once by the caller; only it is read.
pub fn convert(
    opts: &BuildOptions,
    src: &Path,
    file: &std::fs::File,
    time: i64,
) -> Result<Summary> {
    let mut deffile = None;
    let mut inspect = None;
    let mut arch = Arch::host();
    let file = file.try_clone().map_err(|e| BuildError::io(src, e))?;
    let file = Arc::new(FileSource::new(file).map_err(|e| BuildError::io(src, e))?);
    let payload: Arc<dyn ReadAt> = match Sif::open(file.clone()) {
        Ok(sif) => {
            for d in sif.objects() {
                match d.data_type {
                    DataType::Deffile if deffile.is_none() => {
                        deffile = sif.read_object(d, 16 << 20).ok();
                    }
                    DataType::GenericJson
                        if inspect.is_none() && d.name_str() == "inspect-metadata.json" =>
                    {
                        inspect = sif.read_object(d, 16 << 20).ok();
                    }
                    _ => {}
                }
            }
            let prim = sif
                .primary_partition()
                .ok_or_else(|| BuildError::source_image(src, "no primary partition"))?;
            let Extra::Partition { fs, arch: a, .. } = prim.extra() else {
                return Err(BuildError::source_image(src, "bad primary partition"));
            };
            arch = a;
            match fs {
                FsType::Squash => Arc::new(sif.object_source(prim)?),
                FsType::EncryptedSquashfs => {
                    let Some(key) = &opts.source_key else {
                        return Err(BuildError::source_image(
                            src,
                            format!("the source image is encrypted; {}", super::SOURCE_KEY_HINT),
                        ));
                    };
                    let message = crate::image::crypto_message(&sif, prim)?;
                    let pass = key
                        .for_run(message.as_deref())
                        .map_err(|e| BuildError::source_image(src, e))?;
                    let opts = crate::image::kdf::unlock_options();
                    let vol =
                        luks2::unlock(sif.object_source(prim)?, &pass, &opts).map_err(|e| {
                            BuildError::source_image(src, crate::image::kdf::luks_text(&e))
                        })?;
                    Arc::new(vol)
                }
                FsType::GocryptfsSquashfs => gocryptfs_source(opts, src, file.file())?,
                other => {
                    return Err(BuildError::source_image(
                        src,
                        format!("cannot rebuild a {other} partition"),
                    ));
                }
            }
        }
        Err(_) => file,
    };
    // Copy the squashfs (its bytes_used, padded to 4 KiB).
    let fs = Squashfs::open(payload.clone()).map_err(|e| BuildError::source_image(src, e))?;
    let used = fs.superblock().bytes_used;
    let inodes = walk_count(&fs).map_err(|e| BuildError::source_image(src, e))?;
    drop(fs);
    // Its bytes_used, padded to 4 KiB with zeros as mksquashfs pads.
    let len = used.div_ceil(4096) * 4096;
    let deffile = deffile.and_then(|d| String::from_utf8(d).ok());
    finish(
        opts,
        Payload::Source {
            src: payload,
            len,
            name: src.display().to_string(),
        },
        Objects {
            deffile: deffile.as_deref(),
            inspect: inspect.as_deref(),
            arch,
            time,
        },
        len,
        inodes,
    )
}
