//! Key material for encrypted images: RSA keys in the formats people have
//! (PKCS#1, PKCS#8, SPKI, OpenSSH), the RSA-OAEP "crypto message" that Apptainer
//! and SingularityCE store next to an encrypted partition, and the choice of key
//! source from flags and environment variables with the peers' precedence.
//!
//! Nothing here touches LUKS2 itself: the output is the byte string that unlocks a
//! keyslot (a passphrase, or the 64-byte secret unwrapped from the message), handed
//! to `veil_fusefs::luks2` as a zeroizing `Passphrase`.

pub mod environ;
pub mod error;
pub mod key;
pub mod message;
pub(crate) mod pem;
mod pem_legacy;
pub mod pkcs12;
pub mod source;
mod ssh;
pub(crate) mod tty;

pub use error::{CryptError, Result};
pub use key::{PrivateKey, PublicKey, load_private_key, load_public_key};
pub use message::{unwrap_secret, wrap_secret};

/// Fuzzing entry point: every parser here (PEM, PKCS#1/PKCS#8/SPKI, PKCS#12,
/// OpenSSH wire formats, the crypto message's DER) on arbitrary bytes. Shared by the
/// cargo-fuzz target and the corpus replay test.
#[doc(hidden)]
pub fn fuzz_one(data: &[u8]) {
    use std::sync::OnceLock;
    static KEY: OnceLock<Option<PrivateKey>> = OnceLock::new();
    let no_password = || Err(CryptError::bad_key("no password in fuzzing"));
    let _ = load_public_key(data);
    let _ = load_private_key(data, &no_password);
    // The corpus's PKCS#12 files are protected with this password: with it, the MAC,
    // the KDFs and the decryption are reached too.
    let _ = load_private_key(data, &|| Ok(zeroize::Zeroizing::new("p12pw".to_string())));
    if let Some(key) = KEY.get_or_init(|| {
        use rsa::pkcs1::EncodeRsaPrivateKey as _;
        let rsa = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 1024).ok()?;
        let pem = pem::encode("RSA PRIVATE KEY", rsa.to_pkcs1_der().ok()?.as_bytes());
        load_private_key(&pem, &no_password).ok()
    }) {
        let _ = unwrap_secret(key, data);
    }
}
