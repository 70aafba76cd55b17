//! An encrypted SIF partition (fstype 5: LUKS2 around squashfs) before and after its
//! key is known. Everything a user may want to know without a key — cipher, sector
//! size, each keyslot's KDF and cost, whether an RSA key or a passphrase is expected —
//! is read here; unlocking turns it into an ordinary squashfs [`Root`] whose bytes
//! are decrypted on every read and never stored.

#![forbid(unsafe_code)]

use std::sync::Arc;

use veil_fusefs::luks2::{self, HeaderSummary, KernelMapping, Passphrase, UnlockOptions};
use veil_fusefs::squashfs::Squashfs;

use super::{FileRegion, ImageError, Root, Source};
use crate::sif::{DataType, Descriptor, Extra, FormatType, Link, MessageType, Sif, SifError};

/// An encrypted image whose header has been read but whose key is not yet known.
pub struct Encrypted {
    name: String,
    volume: Source,
    region: FileRegion,
    message: Option<Vec<u8>>,
    summary: HeaderSummary,
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
            volume,
            region,
            message,
            summary,
        })
    }

    /// The image as the user named it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The LUKS2 header's public facts.
    pub fn summary(&self) -> &HeaderSummary {
        &self.summary
    }

    /// The RSA-OAEP crypto message linked to the partition (PEM mode), if any.
    pub fn message(&self) -> Option<&[u8]> {
        self.message.as_deref()
    }

    /// Where the LUKS2 volume lies in the file.
    pub fn region(&self) -> &FileRegion {
        &self.region
    }

    /// Unlocks the volume and opens the squashfs inside it.
    pub fn unlock(
        self,
        passphrase: &Passphrase,
        opts: &UnlockOptions,
    ) -> Result<Unlocked, ImageError> {
        let name = self.name;
        let region = self.region;
        let mut volume = luks2::unlock(self.volume, passphrase, opts).map_err(|e| match e {
            luks2::Error::WrongPassphrase => ImageError::WrongKey {
                name: name.clone(),
                for_rsa: self.message.is_some(),
            },
            e => ImageError::Luks(name.clone(), e),
        })?;
        let mapping = volume.take_kernel_mapping();
        let source: Source = Arc::new(volume);
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
}

/// An unlocked image: its root served from user-space decryption, and what the
/// privileged path needs to let dm-crypt and the kernel's squashfs do it instead.
pub struct Unlocked {
    pub root: Root,
    /// Where the LUKS2 volume lies in the file.
    pub volume: FileRegion,
    pub mapping: KernelMapping,
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
