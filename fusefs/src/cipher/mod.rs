//! Block-cipher building blocks shared by the encrypted formats above: AES key
//! expansion with AES-NI for the kernels that run the AES rounds themselves
//! (`aes_ni`, used by LUKS2's AES-XTS and by the AES-GCM kernel), and AES-256-GCM
//! with 128-bit nonces as gocryptfs uses it ([`gcm`]), which also decrypts straight
//! from a file mapping (`memory`'s [`MappedBytes`](crate::memory::mapping::MappedBytes)). It
//! depends on nothing else in the crate: keys are the caller's to keep in guarded
//! memory.

#[cfg(target_arch = "x86_64")]
pub(crate) mod aes_ni;
pub mod gcm;

pub use gcm::{Aes256Gcm, GcmError};
