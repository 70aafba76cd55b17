//! Key material for encrypted images: RSA keys in the formats people have
//! (PKCS#1, PKCS#8, SPKI, OpenSSH), the RSA-OAEP "crypto message" that Apptainer
//! and SingularityCE store next to an encrypted partition, and the choice of key
//! source from flags and environment variables with the peers' precedence.
//!
//! Nothing here touches LUKS2 itself: the output is the byte string that unlocks a
//! keyslot (a passphrase, or the 64-byte secret unwrapped from the message), handed
//! to `veil_fusefs::luks2` as a zeroizing `Passphrase`.

pub mod error;
pub mod key;
pub mod message;
mod pem;
pub mod source;
mod ssh;

pub use error::{CryptError, Result};
pub use key::{PrivateKey, PublicKey, load_private_key, load_public_key};
pub use message::{unwrap_secret, wrap_secret};
