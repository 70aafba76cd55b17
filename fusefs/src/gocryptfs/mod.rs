//! gocryptfs (on-disk format version 2), as Apptainer's unprivileged encrypted images
//! use it: one encrypted file (the image's squashfs) and its `gocryptfs.conf`, names in
//! plaintext.
//!
//! * [`Config::parse`] reads `gocryptfs.conf` without a key (feature flags, scrypt
//!   cost) and refuses what this implementation does not read.
//! * [`unlock`] derives the content key from a [`Passphrase`](crate::secret::Passphrase):
//!   scrypt, HKDF-SHA256, and AES-256-GCM unwrapping the master key.
//! * [`DecryptedFile`] is a [`ReadAt`](crate::source::ReadAt) over an encrypted file:
//!   only the 4096-byte blocks a read touches are decrypted and authenticated (each is
//!   bound to its number and the file's ID), and a block that fails is an error,
//!   never data.
//!
//! * [`create`] makes a volume (a new `gocryptfs.conf` and its key), [`seal_stream`]
//!   writes a file into it, and [`rewrap`] changes the password of an existing one
//!   (the content is not touched).
//!
//! Modules: `config` (the file, its checks and its writer), `create`, `keys` (the KDF and the keys, in
//! guarded memory), `content` (the file format and the decrypting reader), `error`.

mod config;
mod content;
mod create;
mod error;
mod fuzz;
mod keys;

pub use config::{Config, MAX_LEN as MAX_CONFIG_LEN, ScryptCost};
pub use content::{BLOCK, DecryptedFile, HEADER_LEN, plain_size};
pub use create::{
    DEFAULT_SCRYPT, MAX_LOG_N, MAX_PASSWORD, MIN_LOG_N, NewVolume, check_password, create, rewrap,
    seal_stream,
};
pub use error::{Error, Result};
#[doc(hidden)]
pub use fuzz::fuzz_one;
pub use keys::{ContentKey, UnlockLimits, check_cost, unlock};

/// The HKDF info string of AES-GCM content keys: used for the master key's wrapping
/// key and for the file content key alike.
pub(crate) const HKDF_INFO_GCM: &[u8] = b"AES-GCM file content encryption";
