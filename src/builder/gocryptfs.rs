//! Encrypting a squashfs in Apptainer's unprivileged layout (fstype 6; spec:
//! apptainer-encryption.md §6), in-process and without the gocryptfs program or a
//! FUSE mount: a new gocryptfs volume (veil-fusefs's `gocryptfs::create`), the
//! squashfs sealed into it as one file, and an outer squashfs holding that file as
//! `squashfs-N` and `gocryptfs.conf`, its data uncompressed and without fragments
//! (`mksquashfs -noD -noF`, as Apptainer writes it).
//!
//! In PEM mode the gocryptfs password is 32 lowercase hex characters (Apptainer's
//! is the hex MD5 of 32 random bytes: the same form and 128 bits of entropy), and it
//! is what the crypto message wraps.

#![forbid(unsafe_code)]

use std::io::{BufReader, BufWriter, Read};
use std::path::Path;

use veil_fusefs::gocryptfs::{self, ScryptCost};
use veil_fusefs::luks2::Passphrase;
use zeroize::Zeroizing;

use super::assemble::TempPath;
use super::encrypt::Encryption;
use super::error::{BuildError, Result};
use super::squash::{self, SquashOptions};
use super::tree::{FileData, Kind, Meta, Tree};

/// What `gocryptfs.conf`'s `Creator` says.
pub(super) const CREATOR: &str = concat!("veil ", env!("CARGO_PKG_VERSION"));

/// The volume's configuration file, at the outer squashfs's root.
pub const CONFIG_NAME: &str = "gocryptfs.conf";

/// An encrypted partition ready to go into the SIF.
pub struct Sealed {
    /// The outer squashfs.
    pub outer: TempPath,
    /// PEM mode: the crypto message wrapping the password.
    pub message: Option<Vec<u8>>,
    /// The password (for the verification pass).
    pub password: Passphrase,
}

/// A PEM-mode password: 16 random bytes as 32 lowercase hex characters.
pub(super) fn random_password() -> Result<Zeroizing<Vec<u8>>> {
    let mut raw = Zeroizing::new([0u8; 16]);
    getrandom::fill(&mut *raw).map_err(BuildError::Random)?;
    let mut hex = Zeroizing::new(Vec::with_capacity(32));
    for b in raw.iter() {
        for nibble in [b >> 4, b & 15] {
            hex.push(b"0123456789abcdef"[usize::from(nibble)]);
        }
    }
    Ok(hex)
}

/// The name of the encrypted image in the outer squashfs: `squashfs-` and a random
/// number, as Go's `os.CreateTemp` names Apptainer's.
pub(super) fn inner_name() -> Result<String> {
    let mut r = [0u8; 4];
    getrandom::fill(&mut r).map_err(BuildError::Random)?;
    Ok(format!("squashfs-{}", u32::from_le_bytes(r)))
}

/// The password `enc` gives: the passphrase (refused when gocryptfs would read it
/// differently), or a new random one and its crypto message.
pub fn password(enc: &Encryption, out: &Path) -> Result<(Passphrase, Option<Vec<u8>>)> {
    let bad = |err| BuildError::EncryptGocryptfs {
        path: out.display().to_string(),
        err,
    };
    Ok(match enc {
        Encryption::Passphrase(p) => {
            gocryptfs::check_password(p).map_err(bad)?;
            (p.duplicate(), None)
        }
        Encryption::Recipient(wrap) => {
            let pw = random_password()?;
            let msg = wrap(&pw[..])?;
            (Passphrase::from_slice(&pw), Some(msg))
        }
    })
}

/// Seals `len` bytes of squashfs read from `input` into a new gocryptfs volume for
/// `enc`, and writes the outer squashfs (in `tmp_dir`, stamped `time`). `image` is
/// the output, for messages.
#[allow(clippy::too_many_arguments)]
pub fn encrypt(
    image: &Path,
    input: impl Read,
    len: u64,
    tmp_dir: &Path,
    enc: &Encryption,
    cost: ScryptCost,
    time: u32,
    show_progress: bool,
) -> Result<Sealed> {
    let cipher = TempPath::private(tmp_dir, "gocryptfs")?;
    let (password, message) = password(enc, image)?;
    let bad = |err| BuildError::EncryptGocryptfs {
        path: image.display().to_string(),
        err,
    };
    let vol = gocryptfs::create(
        &password,
        cost,
        &crate::image::kdf::gocryptfs_limits(),
        CREATOR,
    )
    .map_err(bad)?;
    let f = cipher.open_write()?;
    let progress = crate::support::progress::Progress::new("encrypt", len, show_progress);
    gocryptfs::seal_stream(
        &vol.key,
        BufReader::with_capacity(8 << 20, input),
        BufWriter::with_capacity(8 << 20, f),
        |n| progress.add(n),
    )
    .map_err(bad)?;
    progress.finish();
    drop(vol.key);
    let outer = outer_squashfs(tmp_dir, cipher.path(), &inner_name()?, vol.config, time)?;
    Ok(Sealed {
        outer,
        message,
        password,
    })
}

/// The outer squashfs: the encrypted file `cipher` as `name`, and `config` as
/// `gocryptfs.conf`, both root-owned, with the modes gocryptfs and Go's temporary
/// files give them (0400, 0600).
pub fn outer_squashfs(
    tmp_dir: &Path,
    cipher: &Path,
    name: &str,
    config: Vec<u8>,
    time: u32,
) -> Result<TempPath> {
    let len = std::fs::metadata(cipher)
        .map_err(|e| BuildError::io(cipher, e))?
        .len();
    let meta = |perm| Meta {
        perm,
        mtime: time,
        ..Default::default()
    };
    let mut tree = Tree::new(time);
    let conf_len = config.len() as u64;
    tree.put(
        CONFIG_NAME,
        Kind::File(FileData::Bytes(config), conf_len),
        meta(0o400),
    );
    tree.put(
        name,
        Kind::File(FileData::Path(cipher.to_path_buf()), len),
        meta(0o600),
    );
    let outer = TempPath::private(tmp_dir, "outer")?;
    let opts = SquashOptions {
        mkfs_time: time,
        stored: true,
        threads: 1,
        ..Default::default()
    };
    squash::write(&tree, outer.path(), &opts)?;
    Ok(outer)
}
