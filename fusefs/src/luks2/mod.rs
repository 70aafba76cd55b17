//! LUKS2: header parsing, keyslot unlock, data-segment decryption and volume
//! creation, interoperable with cryptsetup (format: `shared/spec/luks2.md`).
//!
//! * [`inspect`] parses a volume without a key ([`HeaderSummary`]).
//! * [`unlock()`] opens it with a [`Passphrase`] and returns an [`UnlockedVolume`],
//!   a [`ReadAt`](crate::source::ReadAt) over the decrypted data segment.
//! * [`create()`] writes a complete new volume to any `Write`; [`volume_size`] says
//!   how long it will be. [`add_keyslot`] / [`remove_keyslot`] re-key a volume file.
//!
//! Nothing here writes while reading: a damaged header copy is reported in
//! [`HeaderSummary::warnings`], never repaired.
//!
//! Modules, one job each: `header` (binary headers), `json` (metadata types and
//! validation), `kdf` (PBKDF2/Argon2, limits, calibration), `kdf_memory`
//! (argon2's working memory), `af` (anti-forensic splitter), `hash`, `xts` (batched AES-XTS),
//! `keyslot` (open/store one keyslot), `segment` (the decrypting `ReadAt`),
//! `summary` (what the header says, without a key), `unlock` (keyslot choice and
//! the unlocked volume), `create`, `rekey`, `secret` (the volume key, in
//! the crate's guarded memory), `error`, `fuzz` (the fuzzers' entry point).

mod af;
mod create;
mod error;
mod fuzz;
mod hash;
mod header;
mod json;
mod kdf;
mod kdf_memory;
mod keyslot;
mod rekey;
mod secret;
mod segment;
mod summary;
mod unlock;
mod xts;

pub use crate::memory::available_bytes;
pub use crate::secret::{SecretBox, SecretBytes};
pub use create::{CreateOptions, KeyslotOptions, create, volume_size};
pub use error::{Error, Result};
#[doc(hidden)]
pub use fuzz::fuzz_one;
pub use hash::Hash;
pub use kdf::{Argon2Variant, KdfChoice, KdfKind, KdfLimits, KdfParams};
pub use rekey::{add_keyslot, add_keyslot_with, remove_keyslot};
pub use secret::{Passphrase, VolumeKey};
pub use segment::{KernelMapping, UnlockedVolume};
pub use summary::{HeaderSummary, KeyslotSummary, inspect};
pub use unlock::{UnlockOptions, unlock};
pub use xts::Xts;

/// The only data cipher implemented.
pub const DATA_CIPHER: &str = "aes-xts-plain64";
