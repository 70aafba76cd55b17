//! Opening an image — a SIF file, a plain squashfs file, or a sandbox directory — and
//! handing out its root filesystem as a byte source for the squashfs reader.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use veil_fusefs::source::{FileSource, ReadAt, Slice};
use veil_fusefs::squashfs::Squashfs;

use crate::sif::{Extra, FsType, Sif, SifError};

mod encrypted;
pub mod kdf;
pub use encrypted::{Encrypted, Format, Unlocked, crypto_message};

/// A positional-read source shared by the FUSE threads.
pub type Source = Arc<dyn ReadAt>;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{path}: {err}")]
    Open { path: String, err: std::io::Error },
    #[error("{0}: not a SIF file, a squashfs image or a directory")]
    Unknown(String),
    #[error("{0}: {1}")]
    Sif(String, SifError),
    #[error("{0}: the image has no primary system partition")]
    NoPrimary(String),
    #[error("{0}: the primary partition is {1}, which veil cannot run (it runs squashfs)")]
    UnsupportedFs(String, String),
    #[error("{name}: {text}", name = .0, text = kdf::luks_text(.1))]
    Luks(String, veil_fusefs::luks2::Error),
    #[error(
        "{0}: refusing to run as root an image file that another user can change ({1}); make it root's and not group- or world-writable (chown root, chmod go-w), or copy it where only root writes"
    )]
    Untrusted(String, String),
    #[error("{0}: {1}")]
    Crypto(String, String),
    /// The key material opened no keyslot. `for_rsa`: the image carries an
    /// RSA-encrypted key (so the key was the secret it holds, or a passphrase).
    #[error("{name}: {}", wrong_key_text(*.for_rsa, *.gocryptfs))]
    WrongKey {
        name: String,
        for_rsa: bool,
        /// The image is in the gocryptfs layout (one password, no keyslots).
        gocryptfs: bool,
    },
    #[error("{0}: {1}")]
    Squashfs(String, veil_fusefs::squashfs::Error),
}

fn wrong_key_text(for_rsa: bool, gocryptfs: bool) -> String {
    let opens = wrong_key_opens(gocryptfs);
    if for_rsa {
        format!(
            "the key {opens} (wrong passphrase, or the crypto message does not belong to this partition)"
        )
    } else {
        format!("wrong passphrase: it {opens}")
    }
}

/// What a wrong key fails to do, in the words of the image's layout.
pub fn wrong_key_opens(gocryptfs: bool) -> &'static str {
    if gocryptfs {
        "does not decrypt the image's gocryptfs master key"
    } else {
        "opens no keyslot of the image"
    }
}

/// An opened image: ready to serve, or encrypted and waiting for its key.
pub enum Image {
    Plain(Root),
    Encrypted(Box<Encrypted>),
}

/// An image's root filesystem, ready to serve.
pub enum Root {
    /// A sandbox directory.
    Directory(PathBuf),
    /// A squashfs, from a plain file or a SIF partition.
    Squashfs {
        fs: Arc<Squashfs<Source>>,
        /// Where its bytes lie in a file, when they are stored in the clear (the
        /// privileged path can then hand them to the kernel through a loop device).
        region: Option<FileRegion>,
    },
}

/// A byte range of an opened image file: the same descriptor that was verified and
/// read, never the path again (which may name another file by then).
#[derive(Debug, Clone)]
pub struct FileRegion {
    pub file: Arc<File>,
    pub offset: u64,
    pub size: u64,
}

const SQUASHFS_MAGIC: &[u8; 4] = b"hsqs";
const SIF_MAGIC_AT: u64 = 0x20;

/// Opens `path` and finds the filesystem to run. Nothing is decrypted here: an
/// encrypted image comes back with what can be read without a key.
pub fn open(path: &Path) -> Result<Image, ImageError> {
    let name = path.display().to_string();
    let io = |err| ImageError::Open {
        path: name.clone(),
        err,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.is_dir() {
        return Ok(Image::Plain(Root::Directory(path.to_path_buf())));
    }
    open_file(File::open(path).map_err(io)?, &name)
}

/// As [`open`], for an image file already opened: everything read from the image
/// from now on (its header, its partitions, the loop device of the privileged path)
/// comes through this descriptor, whatever happens to the path. `name` is for
/// messages.
pub fn open_file(file: File, name: &str) -> Result<Image, ImageError> {
    let name = name.to_string();
    let io = |err| ImageError::Open {
        path: name.clone(),
        err,
    };
    let mut head = [0u8; 42];
    let n = file.read_at(&mut head, 0).map_err(io)?;
    let shared = Arc::new(file.try_clone().map_err(io)?);
    let src = Arc::new(FileSource::new(file).map_err(io)?);
    let (source, offset): (Source, u64) =
        if n >= 42 && &head[SIF_MAGIC_AT as usize..SIF_MAGIC_AT as usize + 9] == b"SIF_MAGIC" {
            match sif_partition(&name, src)? {
                Partition::Squashfs(source, offset) => (source, offset),
                Partition::Encrypted {
                    volume,
                    offset,
                    message,
                    gocryptfs,
                } => {
                    let region = FileRegion {
                        file: shared,
                        offset,
                        size: volume.len(),
                    };
                    let e = if gocryptfs {
                        Encrypted::gocryptfs(name, volume, region, message)?
                    } else {
                        Encrypted::new(name, volume, region, message)?
                    };
                    return Ok(Image::Encrypted(Box::new(e)));
                }
            }
        } else if n >= 4 && &head[..4] == SQUASHFS_MAGIC {
            (src, 0)
        } else {
            return Err(ImageError::Unknown(name));
        };
    let region = FileRegion {
        file: shared,
        offset,
        size: source.len(),
    };
    let fs = Squashfs::open(source).map_err(|e| ImageError::Squashfs(name, e))?;
    Ok(Image::Plain(Root::Squashfs {
        fs: Arc::new(fs),
        region: Some(region),
    }))
}

/// For real root: refuses an image file that a user other than root could change
/// while it runs (the kernel's squashfs would read the new bytes, verified or not):
/// one owned by another user, or writable by its group or by others.
pub fn check_root_may_trust(file: &File, name: &str) -> Result<(), ImageError> {
    use std::os::unix::fs::MetadataExt;
    let meta = file.metadata().map_err(|err| ImageError::Open {
        path: name.to_string(),
        err,
    })?;
    let why = if meta.uid() != 0 {
        format!("it belongs to uid {}", meta.uid())
    } else if meta.mode() & 0o022 != 0 {
        format!(
            "its mode {:04o} lets its group or others write it",
            meta.mode() & 0o7777
        )
    } else {
        return Ok(());
    };
    Err(ImageError::Untrusted(name.to_string(), why))
}

enum Partition {
    /// A plain squashfs and its offset in the file.
    Squashfs(Source, u64),
    /// A LUKS2 volume (or, with `gocryptfs`, the outer squashfs of Apptainer's
    /// gocryptfs layout), its offset in the file, and its linked RSA-OAEP crypto
    /// message.
    Encrypted {
        volume: Source,
        offset: u64,
        message: Option<Vec<u8>>,
        gocryptfs: bool,
    },
}

fn sif_partition(name: &str, src: Arc<FileSource>) -> Result<Partition, ImageError> {
    let sif = Sif::open(src).map_err(|e| ImageError::Sif(name.into(), e))?;
    let prim = sif
        .primary_partition()
        .ok_or_else(|| ImageError::NoPrimary(name.into()))?;
    let mut encrypted = false;
    let mut gocryptfs = false;
    match prim.extra() {
        Extra::Partition {
            fs: FsType::Squash, ..
        } => {}
        Extra::Partition {
            fs: FsType::EncryptedSquashfs,
            ..
        } => encrypted = true,
        Extra::Partition {
            fs: FsType::GocryptfsSquashfs,
            ..
        } => {
            encrypted = true;
            gocryptfs = true;
        }
        Extra::Partition { fs, .. } => {
            return Err(ImageError::UnsupportedFs(name.into(), fs.to_string()));
        }
        _ => return Err(ImageError::NoPrimary(name.into())),
    }
    let slice: Slice<Arc<FileSource>> = sif
        .object_source(prim)
        .map_err(|e| ImageError::Sif(name.into(), e))?;
    let offset = slice.offset();
    if encrypted {
        let message =
            encrypted::crypto_message(&sif, prim).map_err(|e| ImageError::Sif(name.into(), e))?;
        // The volume reads through a mapping of the file as well: decryption then
        // reads the ciphertext where the page cache holds it (see
        // veil_fusefs::mapping). Without one (a file that cannot be mapped), it reads
        // with pread as the plain partition does.
        let io = |err| ImageError::Open {
            path: name.into(),
            err,
        };
        let file = slice.inner().file().try_clone().map_err(io)?;
        // SAFETY: veil never writes an image it runs or reads; a truncation by
        // another process is handled by the mapping.
        let mapped =
            Arc::new(unsafe { FileSource::mapped(file, offset, slice.len()) }.map_err(io)?);
        let volume = Slice::new(mapped, offset, slice.len()).map_err(io)?;
        return Ok(Partition::Encrypted {
            volume: Arc::new(volume),
            offset,
            message,
            gocryptfs,
        });
    }
    Ok(Partition::Squashfs(Arc::new(slice), offset))
}

/// The attributes of what `path` names in the image, following symbolic links inside
/// the image (at most 8, each relative to the link's directory or absolute); `None`
/// when it does not resolve. The final component may be of any kind but a link.
pub fn resolve(fs: &Squashfs<Source>, path: &str) -> Option<veil_fusefs::squashfs::Attr> {
    let mut p = path.to_string();
    for _ in 0..8 {
        let a = fs.lookup_path(p.as_bytes()).ok()?;
        if a.kind != veil_fusefs::squashfs::FileKind::Symlink {
            return Some(a);
        }
        let t = String::from_utf8(fs.readlink(a.id).ok()?).ok()?;
        p = if t.starts_with('/') {
            t
        } else {
            let parent = Path::new(&p).parent().unwrap_or(Path::new("/"));
            parent.join(t).to_string_lossy().into_owned()
        };
    }
    None
}

/// Reads a small file from the image (following symlinks inside it); `None` when absent.
pub fn read_small_file(fs: &Squashfs<Source>, path: &str) -> Option<String> {
    const LIMIT: u64 = 4 << 20;
    let a = resolve(fs, path)?;
    if a.kind != veil_fusefs::squashfs::FileKind::File || a.size > LIMIT {
        return None;
    }
    let mut buf = vec![0u8; a.size as usize];
    let n = fs.read(a.id, 0, &mut buf).ok()?;
    buf.truncate(n);
    String::from_utf8(buf).ok()
}
