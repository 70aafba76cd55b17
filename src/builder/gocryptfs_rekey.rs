//! Re-keying a gocryptfs image (fstype 6; `veil keyslot change`): a gocryptfs volume
//! has one password, so its master key is wrapped anew in a new `gocryptfs.conf`.
//! That file lives inside the outer squashfs, so the outer squashfs is written again
//! around the same encrypted file (copied, not re-encrypted), and the SIF around it,
//! beside the original; it is verified with the new password and renamed over the
//! original.

#![forbid(unsafe_code)]

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use veil_fusefs::luks2::Passphrase;
use veil_fusefs::source::{FileSource, ReadAt};

use super::assemble::TempPath;
use super::error::{BuildError, ImageFault, Result};
use super::gocryptfs::{CREATOR, inner_name, outer_squashfs, random_password};
use crate::sif::{
    CreateOptions, DataType, Descriptor, Extra, FormatType, FsType, Link, MessageType, NewObject,
    ObjectData, Sif,
};

/// What [`change_password`] did besides the new password.
#[derive(Debug, Default)]
pub struct Changed {
    /// Signature objects left out: they signed the old partition.
    pub dropped_signatures: usize,
}

/// Changes the password of the gocryptfs image `path` (fstype 6): the master key,
/// unwrapped with `current`, is wrapped for `new` in a new `gocryptfs.conf`; the
/// outer squashfs is written again around the same encrypted file (copied, not
/// re-encrypted); and the SIF is written again beside the original, with `message`
/// (PEM mode) as the partition's only crypto message, and renamed over it. Other
/// objects are kept; signatures, which covered the old partition, are not.
pub fn change_password(
    path: &Path,
    current: &Passphrase,
    new: &Passphrase,
    message: Option<&[u8]>,
) -> Result<Changed> {
    // The file itself, wherever a symbolic link leads: it is what gets replaced.
    let real = std::fs::canonicalize(path).map_err(|e| BuildError::io(path, e))?;
    let rk = |e: ImageFault| BuildError::rekey(path, e);
    let file = File::open(&real).map_err(|e| BuildError::io(path, e))?;
    let meta = file.metadata().map_err(|e| BuildError::io(path, e))?;
    let mode = meta.permissions();
    if meta.nlink() > 1 {
        crate::say_warn!(
            "veil keyslot: warning: {} has {} hard links; the others keep the old key",
            path.display(),
            meta.nlink() - 1
        );
    }
    let name = path.display().to_string();
    let img = crate::image::open_file(
        file.try_clone().map_err(|e| BuildError::io(path, e))?,
        &name,
    )
    .map_err(|e| rk(ImageFault::Image(e.to_string())))?;
    let crate::image::Image::Encrypted(enc) = img else {
        return Err(rk(ImageFault::NotEncrypted));
    };
    let crate::image::Format::Gocryptfs {
        outer,
        inner,
        config,
        ..
    } = enc.format()
    else {
        return Err(rk(ImageFault::Image("not in the gocryptfs layout".into())));
    };
    let conf = veil_fusefs::gocryptfs::rewrap(
        config,
        current,
        new,
        None,
        &crate::image::kdf::gocryptfs_limits(),
        CREATOR,
    )
    .map_err(|e| rk(e.into()))?;

    let sif = Sif::open(std::sync::Arc::new(
        FileSource::new(file).map_err(|e| BuildError::io(path, e))?,
    ))
    .map_err(|e| rk(e.into()))?;
    let prim = sif
        .primary_partition()
        .ok_or_else(|| rk(ImageFault::NoPrimaryPartition))?
        .clone();
    let (kept, changed) = kept_objects(&sif, &prim).map_err(|e| rk(e.into()))?;

    // The encrypted file, copied as it is.
    let dir = crate::fsutil::parent_dir(&real).to_path_buf();
    let cipher = TempPath::private(&dir, "gocryptfs")?;
    let src = veil_fusefs::squashfs::File::open(outer.clone(), *inner).map_err(|e| rk(e.into()))?;
    copy_out(&src, path, &cipher)?;
    drop(src);

    let time = prim.modified_at.clamp(0, i64::from(u32::MAX)) as u32;
    let outer_new = outer_squashfs(&dir, cipher.path(), &inner_name()?, conf, time)?;
    drop(cipher);

    let mut readers = kept
        .iter()
        .map(|d| {
            (d.id != prim.id)
                .then(|| sif.object_source(d).map(|src| SourceReader { src, pos: 0 }))
                .transpose()
        })
        .collect::<crate::sif::Result<Vec<_>>>()
        .map_err(|e| rk(e.into()))?;
    let objects = new_objects(&kept, &mut readers, &prim, outer_new.path(), message);
    let h = sif.header();
    let opts = CreateOptions {
        launch_script: h.launch_script_str(),
        id: Some(h.id),
        time: Some(h.created_at),
        ..Default::default()
    };
    debug_assert!(matches!(
        prim.extra(),
        Extra::Partition {
            fs: FsType::GocryptfsSquashfs,
            ..
        }
    ));
    drop(sif);
    // Written and verified beside the image (with the new password, as a run opens
    // it), then renamed over it with its permissions.
    // (Through descriptors: the directory may be one others can write to.)
    let tmp = TempPath::private(&dir, "sif")?;
    let out = tmp.open_write()?;
    crate::sif::write_new(&out, &opts, objects).map_err(|e| rk(e.into()))?;
    drop(outer_new);
    out.set_permissions(mode)
        .map_err(|e| BuildError::io(tmp.path(), e))?;
    keep_owner(&out, &meta).map_err(rk)?;
    drop(out);
    super::assemble::verify(tmp.path(), FsType::GocryptfsSquashfs, Some(new))?;
    tmp.persist(&real)?;
    Ok(changed)
}

/// The key a gocryptfs image gets from `veil keyslot change`.
pub enum NewKey {
    Passphrase(Passphrase),
    /// A new random password, wrapped for this public key.
    Recipient(crate::crypt::key::PublicKey),
}

/// How the key of a gocryptfs image was changed.
#[derive(Debug)]
pub struct KeyChange {
    pub changed: Changed,
    /// The image now opens with an RSA key (otherwise a passphrase).
    pub to_recipient: bool,
}

/// `veil keyslot change` for a gocryptfs image: `current` (a passphrase, or the
/// private key that decrypts the image's crypto message) opens it, and `new` replaces
/// it (see [`change_password`]).
pub fn change_key(
    path: &Path,
    current: &crate::crypt::source::KeySource,
    new: NewKey,
) -> Result<KeyChange> {
    let rk = |e: String| BuildError::rekey(path, ImageFault::Image(e));
    let img = crate::image::open(path).map_err(|e| rk(e.to_string()))?;
    let crate::image::Image::Encrypted(enc) = img else {
        return Err(BuildError::rekey(path, ImageFault::NotEncrypted));
    };
    let cur = current
        .for_run(enc.message())
        .map_err(|e| rk(e.to_string()))?;
    let passphrase_for_rsa = enc.message().is_some() && !current.is_pem();
    drop(enc);
    let (pw, message) = match new {
        NewKey::Passphrase(p) => {
            veil_fusefs::gocryptfs::check_password(&p).map_err(|e| rk(e.to_string()))?;
            (p, None)
        }
        NewKey::Recipient(key) => {
            let pw = random_password()?;
            let msg =
                crate::crypt::message::wrap_secret(&key, &pw).map_err(BuildError::WrapSecret)?;
            (Passphrase::from_slice(&pw), Some(msg))
        }
    };
    let to_recipient = message.is_some();
    let changed = change_password(path, &cur, &pw, message.as_deref()).map_err(|e| match e {
        BuildError::Rekey {
            err: ImageFault::Gocryptfs(veil_fusefs::gocryptfs::Error::WrongPassphrase),
            ..
        } if passphrase_for_rsa => rk(format!(
            "the image was encrypted for an RSA key, and the passphrase ({}) does not decrypt its gocryptfs master key: give the private key with --pem-path",
            current.describe()
        )),
        e => e,
    })?;
    Ok(KeyChange {
        changed,
        to_recipient,
    })
}

/// Copies all of `src` (the encrypted file inside `image`) to the file `to`.
fn copy_out(src: &impl ReadAt, image: &Path, to: &TempPath) -> Result<()> {
    let mut w = BufWriter::with_capacity(8 << 20, to.open_write()?);
    let to = to.path();
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    // The image is rewritten whole: a bar on a terminal (not with -q).
    let progress = crate::support::progress::Progress::new("re-key", src.len(), true);
    while at < src.len() {
        let n = (src.len() - at).min(buf.len() as u64) as usize;
        src.read_exact_at(&mut buf[..n], at)
            .map_err(|e| BuildError::io(image, e))?;
        w.write_all(&buf[..n]).map_err(|e| BuildError::io(to, e))?;
        at += n as u64;
        progress.add(n as u64);
    }
    progress.finish();
    w.flush().map_err(|e| BuildError::io(to, e))
}

/// Every object of `sif` to keep, in its order (the partition `prim` included):
/// crypto messages of the partition and signatures (of the old partition) are left
/// out.
fn kept_objects<R: ReadAt>(
    sif: &Sif<R>,
    prim: &Descriptor,
) -> crate::sif::Result<(Vec<Descriptor>, Changed)> {
    let mut changed = Changed::default();
    let mut kept = Vec::new();
    for d in sif.objects() {
        match d.data_type {
            _ if d.id == prim.id => {}
            DataType::Signature => {
                changed.dropped_signatures += 1;
                continue;
            }
            DataType::CryptoMessage if d.link() == Link::Object(prim.id) => continue,
            _ => {}
        }
        kept.push(d.clone());
    }
    Ok((kept, changed))
}

/// An object's bytes, streamed from the image (objects may be large: an overlay).
struct SourceReader<R> {
    src: R,
    pos: u64,
}

impl<R: ReadAt> std::io::Read for SourceReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (self.src.len() - self.pos).min(buf.len() as u64) as usize;
        self.src.read_exact_at(&mut buf[..n], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// The new image's objects: those kept, read from `readers` (the same order; `None`
/// for the partition, which comes from `outer`), with IDs given anew and links to
/// objects following them, then `message` linked to the partition.
fn new_objects<'a, R: std::io::Read>(
    kept: &[Descriptor],
    readers: &'a mut [Option<R>],
    prim: &Descriptor,
    outer: &'a Path,
    message: Option<&'a [u8]>,
) -> Vec<NewObject<'a>> {
    let ids: std::collections::HashMap<u32, u32> = kept
        .iter()
        .enumerate()
        .map(|(n, d)| (d.id, n as u32 + 1))
        .collect();
    let mut objects = Vec::new();
    for (d, reader) in kept.iter().zip(readers.iter_mut()) {
        let data = match reader {
            Some(r) => ObjectData::Reader(r),
            None => ObjectData::Path(outer),
        };
        let mut o = NewObject::new(d.data_type, data);
        o.group = d.group();
        o.name = d.name_str();
        o.extra = d.extra();
        o.time = Some(d.created_at);
        o.link = match d.link() {
            Link::Object(id) => ids.get(&id).map_or(Link::None, |&n| Link::Object(n)),
            other => other,
        };
        objects.push(o);
    }
    if let Some(m) = message {
        let mut o = NewObject::new(DataType::CryptoMessage, ObjectData::Bytes(m));
        o.group = prim.group();
        o.link = Link::Object(ids[&prim.id]);
        o.extra = Extra::CryptoMessage {
            format: FormatType::Pem,
            message: MessageType::RsaOaep,
        };
        o.time = Some(prim.created_at);
        objects.push(o);
    }
    objects
}

/// Gives the new image `tmp` the owner of the image `meta` describes, when root
/// re-keys another user's image (others cannot give files away).
fn keep_owner(tmp: &File, meta: &std::fs::Metadata) -> std::result::Result<(), ImageFault> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    std::os::unix::fs::fchown(tmp, Some(meta.uid()), Some(meta.gid())).map_err(|e| {
        ImageFault::Image(format!(
            "cannot give the rewritten image its owner back (uid {}, gid {}): {e}",
            meta.uid(),
            meta.gid()
        ))
    })
}
