//! An encrypted SIF partition before and after its key is known: LUKS2 around squashfs
//! (fstype 5, what root builds make), or Apptainer's unprivileged layout (fstype 6: an
//! outer squashfs holding `gocryptfs.conf` and the image's squashfs encrypted by
//! gocryptfs). Everything a user may want to know without a key — cipher, sector
//! size, each keyslot's or the scrypt KDF's cost, whether an RSA key or a passphrase
//! is expected — is read here; unlocking turns it into an ordinary squashfs [`Root`]
//! whose bytes are decrypted on every read and never stored.

#![forbid(unsafe_code)]

use std::sync::Arc;

use veil_fusefs::gocryptfs;
use veil_fusefs::luks2::{self, HeaderSummary, KernelMapping, Passphrase, UnlockOptions};
use veil_fusefs::squashfs::{InodeId, Squashfs};

use super::{FileRegion, ImageError, Root, Source};
use crate::sif::{DataType, Descriptor, Extra, FormatType, Link, MessageType, Sif, SifError};

/// An encrypted image whose header has been read but whose key is not yet known.
pub struct Encrypted {
    name: String,
    region: FileRegion,
    message: Option<Vec<u8>>,
    format: Format,
}

/// The two encrypted layouts.
pub enum Format {
    /// LUKS2 around the squashfs (fstype 5).
    Luks2 {
        volume: Source,
        summary: HeaderSummary,
    },
    /// gocryptfs (fstype 6): the outer squashfs, the encrypted inner image in it, and
    /// the volume's configuration.
    Gocryptfs {
        outer: Arc<Squashfs<Source>>,
        inner: InodeId,
        inner_name: String,
        config: gocryptfs::Config,
    },
}

impl Encrypted {
    pub(super) fn new(
        name: String,
        volume: Source,
        region: FileRegion,
        message: Option<Vec<u8>>,
    ) -> Result<Self, ImageError> {
        let summary = luks2::inspect(&*volume).map_err(|e| ImageError::Luks(name.clone(), e))?;
        Ok(Encrypted {
            name,
            region,
            message,
            format: Format::Luks2 { volume, summary },
        })
    }

    /// The fstype-6 layout in `outer`: its `gocryptfs.conf`, and the first entry of its
    /// root whose name starts with `squashfs-` (the one Apptainer mounts).
    pub(super) fn gocryptfs(
        name: String,
        outer: Source,
        region: FileRegion,
        message: Option<Vec<u8>>,
    ) -> Result<Self, ImageError> {
        let bad = |why: String| ImageError::Crypto(name.clone(), why);
        let fs = Squashfs::open(outer).map_err(|e| {
            bad(format!(
                "the gocryptfs partition is not a squashfs holding the encrypted image ({e})"
            ))
        })?;
        let fs = Arc::new(fs);
        let mut conf = None;
        let mut inner = None;
        let entries = fs
            .readdir(fs.root(), 0)
            .map_err(|e| bad(format!("listing the gocryptfs partition: {e}")))?;
        for e in entries {
            let e = e.map_err(|e| bad(format!("listing the gocryptfs partition: {e}")))?;
            if e.name == b"gocryptfs.conf" {
                conf = Some(e.id);
            } else if inner.is_none() && e.name.starts_with(b"squashfs-") {
                // (Escaped: a hostile name may hold newlines or terminal codes.)
                let shown = String::from_utf8_lossy(&e.name).escape_debug().to_string();
                inner = Some((e.id, shown));
            }
        }
        let conf =
            conf.ok_or_else(|| bad("the gocryptfs partition has no gocryptfs.conf".into()))?;
        let (inner, inner_name) = inner.ok_or_else(|| {
            bad("the gocryptfs partition holds no encrypted image (no squashfs-* file)".into())
        })?;
        let attr = fs
            .getattr(conf)
            .map_err(|e| bad(format!("gocryptfs.conf: {e}")))?;
        if attr.size > gocryptfs::MAX_CONFIG_LEN {
            return Err(bad(format!(
                "gocryptfs.conf: {} bytes, too large",
                attr.size
            )));
        }
        let mut text = vec![0u8; attr.size as usize];
        let n = fs
            .read(conf, 0, &mut text)
            .map_err(|e| bad(format!("gocryptfs.conf: {e}")))?;
        text.truncate(n);
        let config = gocryptfs::Config::parse(&text).map_err(|e| bad(e.to_string()))?;
        Ok(Encrypted {
            name,
            region,
            message,
            format: Format::Gocryptfs {
                outer: fs,
                inner,
                inner_name,
                config,
            },
        })
    }

    /// Which layout, with what can be known of it without a key.
    pub fn format(&self) -> &Format {
        &self.format
    }

    /// The image as the user named it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The RSA-OAEP crypto message linked to the partition (PEM mode), if any.
    pub fn message(&self) -> Option<&[u8]> {
        self.message.as_deref()
    }

    /// Where the encrypted partition lies in the file.
    pub fn region(&self) -> &FileRegion {
        &self.region
    }

    /// Unlocks the volume and opens the squashfs inside it.
    pub fn unlock(
        self,
        passphrase: &Passphrase,
        opts: &UnlockOptions,
    ) -> Result<Unlocked, ImageError> {
        let name = self.name.clone();
        let region = self.region.clone();
        let (source, mapping) = self.decrypt(passphrase, opts)?;
        let fs = Squashfs::open(source).map_err(|e| {
            ImageError::Crypto(
                name.clone(),
                format!("the decrypted partition is not a usable squashfs ({e})"),
            )
        })?;
        Ok(Unlocked {
            root: Root::Squashfs {
                fs: Arc::new(fs),
                region: None,
            },
            volume: region,
            mapping,
        })
    }

    /// Unlocks the volume: the squashfs's bytes, decrypted on every read (and, for
    /// LUKS2, what dm-crypt needs to do it instead).
    pub fn decrypt(
        self,
        passphrase: &Passphrase,
        opts: &UnlockOptions,
    ) -> Result<(Source, Option<KernelMapping>), ImageError> {
        let name = self.name;
        let for_rsa = self.message.is_some();
        let (source, mapping): (Source, Option<KernelMapping>) = match self.format {
            Format::Luks2 { volume, .. } => {
                let mut volume = luks2::unlock(volume, passphrase, opts).map_err(|e| match e {
                    luks2::Error::WrongPassphrase => ImageError::WrongKey {
                        name: name.clone(),
                        for_rsa,
                        gocryptfs: false,
                    },
                    e => ImageError::Luks(name.clone(), e),
                })?;
                let mapping = volume.take_kernel_mapping();
                (Arc::new(volume), Some(mapping))
            }
            Format::Gocryptfs {
                outer,
                inner,
                inner_name,
                config,
            } => {
                let gerr = |e: gocryptfs::Error| match e {
                    gocryptfs::Error::WrongPassphrase => ImageError::WrongKey {
                        name: name.clone(),
                        for_rsa,
                        gocryptfs: true,
                    },
                    e => ImageError::Crypto(name.clone(), super::kdf::gocryptfs_text(&e)),
                };
                let key = gocryptfs::unlock(&config, passphrase, &super::kdf::gocryptfs_limits())
                    .map_err(gerr)?;
                let inner_err = |e: &dyn std::fmt::Display| {
                    ImageError::Crypto(name.clone(), format!("{inner_name}: {e}"))
                };
                // Apptainer stores the encrypted image uncompressed and without
                // fragments: then it is one run of the outer image, read straight from
                // it (and from its mapping); otherwise through the outer squashfs.
                let file: Source = match outer.stored_extent(inner).map_err(|e| inner_err(&e))? {
                    Some((at, len)) => Arc::new(
                        veil_fusefs::source::Slice::new(outer.source().clone(), at, len)
                            .map_err(|e| inner_err(&e))?,
                    ),
                    None => Arc::new(
                        veil_fusefs::squashfs::File::open(outer, inner)
                            .map_err(|e| inner_err(&e))?,
                    ),
                };
                let decrypted =
                    gocryptfs::DecryptedFile::open(file, Arc::new(key)).map_err(|e| match e {
                        gocryptfs::Error::Corrupt(why) => ImageError::Crypto(
                            name.clone(),
                            format!("{inner_name}, the encrypted image, is damaged: {why}"),
                        ),
                        e => gerr(e),
                    })?;
                (Arc::new(decrypted), None)
            }
        };
        Ok((source, mapping))
    }
}

/// An unlocked image: its root served from user-space decryption, and what the
/// privileged path needs to let dm-crypt and the kernel's squashfs do it instead (a
/// LUKS2 volume only: the kernel has no gocryptfs).
pub struct Unlocked {
    pub root: Root,
    /// Where the encrypted partition lies in the file.
    pub volume: FileRegion,
    pub mapping: Option<KernelMapping>,
}

/// Upper bound on a crypto message (a 16384-bit key makes 2.8 KiB).
const MAX_MESSAGE: u64 = 64 << 10;

/// The crypto message the peers use for `prim`: the first object of type
/// Cryptographic Message linked to the partition's ID whose format is PEM and whose
/// message type is RSA-OAEP.
pub fn crypto_message<R: veil_fusefs::source::ReadAt>(
    sif: &Sif<R>,
    prim: &Descriptor,
) -> Result<Option<Vec<u8>>, SifError> {
    let found = sif.objects_of_type(DataType::CryptoMessage).find(|d| {
        d.link() == Link::Object(prim.id)
            && d.extra()
                == Extra::CryptoMessage {
                    format: FormatType::Pem,
                    message: MessageType::RsaOaep,
                }
    });
    match found {
        Some(d) => Ok(Some(sif.read_object(d, MAX_MESSAGE)?)),
        None => Ok(None),
    }
}
