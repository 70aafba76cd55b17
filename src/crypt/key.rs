//! RSA keys for encrypted images, loaded from the forms people actually have.
//!
//! The peers accept only PKCS#1 (`RSA PUBLIC KEY` / unencrypted `RSA PRIVATE KEY`).
//! veil takes those and also SPKI (`PUBLIC KEY`), PKCS#8 (`PRIVATE KEY`, and
//! `ENCRYPTED PRIVATE KEY` with a password), password-protected PKCS#1, and
//! OpenSSH keys (`ssh-rsa …` lines and unprotected `OPENSSH PRIVATE KEY` files).
//! The images are the same whichever form the key was in.

use openssl::bn::{BigNum, BigNumContext};
use openssl::pkey::{PKey, Private, Public};
use openssl::rsa::Rsa;
use zeroize::Zeroizing;

use super::error::{CryptError, Result};
use super::{pem, ssh};

/// An RSA public key (a recipient of an encrypted image).
pub struct PublicKey {
    pub(crate) key: PKey<Public>,
}

/// An RSA private key. OpenSSL clears its numbers when it is freed.
pub struct PrivateKey {
    pub(crate) key: PKey<Private>,
}

impl PublicKey {
    /// Modulus size in bits.
    pub fn bits(&self) -> u32 {
        self.key.bits()
    }
}

impl PrivateKey {
    pub fn bits(&self) -> u32 {
        self.key.bits()
    }
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey(RSA-{})", self.bits())
    }
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PrivateKey(RSA-{})", self.bits())
    }
}

const PUBLIC_FORMS: &str =
    "PEM 'RSA PUBLIC KEY' (PKCS#1), PEM 'PUBLIC KEY' (SPKI) or an OpenSSH 'ssh-rsa' line";
const PRIVATE_FORMS: &str = "PEM 'RSA PRIVATE KEY' (PKCS#1), 'PRIVATE KEY' or 'ENCRYPTED PRIVATE KEY' (PKCS#8) or 'OPENSSH PRIVATE KEY'";

/// Loads an RSA public key. An unprotected private key is accepted too (its public
/// half is used), so one key file can serve both build and run.
pub fn load_public_key(data: &[u8]) -> Result<PublicKey> {
    let rsa = if ssh::is_public_line(data) {
        let nums = ssh::parse_public_line(data)?;
        Rsa::from_public_components(bn(&nums.n)?, bn(&nums.e)?)
            .map_err(|e| CryptError::crypto("OpenSSH public key", e))?
    } else {
        let block = pem::first_block(data).ok_or_else(|| {
            CryptError::bad_key(format!("no PEM data found; expected {PUBLIC_FORMS}"))
        })?;
        match block.label.as_str() {
            "RSA PUBLIC KEY" => Rsa::public_key_from_der_pkcs1(&block.der)
                .map_err(|e| CryptError::bad_key(format!("invalid PKCS#1 public key: {e}")))?,
            "PUBLIC KEY" => Rsa::public_key_from_der(&block.der).map_err(|e| {
                CryptError::bad_key(format!("invalid or non-RSA SPKI public key: {e}"))
            })?,
            "RSA PRIVATE KEY" | "PRIVATE KEY" | "OPENSSH PRIVATE KEY"
                if block.header("Proc-Type").is_none() =>
            {
                let private = load_private_key(data, &|| {
                    Err(CryptError::bad_key("a public key is needed here"))
                })?;
                let rsa = private
                    .key
                    .rsa()
                    .map_err(|e| CryptError::crypto("private key", e))?;
                Rsa::from_public_components(
                    rsa.n()
                        .to_owned()
                        .map_err(|e| CryptError::crypto("key", e))?,
                    rsa.e()
                        .to_owned()
                        .map_err(|e| CryptError::crypto("key", e))?,
                )
                .map_err(|e| CryptError::crypto("key", e))?
            }
            other => {
                return Err(CryptError::bad_key(format!(
                    "PEM block '{other}' is not an RSA public key; expected {PUBLIC_FORMS}"
                )));
            }
        }
    };
    check_size(rsa.size())?;
    let key = PKey::from_rsa(rsa).map_err(|e| CryptError::crypto("public key", e))?;
    Ok(PublicKey { key })
}

/// Loads an RSA private key. `password` is asked only for a password-protected key.
pub fn load_private_key(
    data: &[u8],
    password: &dyn Fn() -> Result<Zeroizing<String>>,
) -> Result<PrivateKey> {
    let block = pem::first_block(data).ok_or_else(|| {
        CryptError::bad_key(format!("no PEM data found; expected {PRIVATE_FORMS}"))
    })?;
    let invalid = |what: &str, e: openssl::error::ErrorStack| {
        CryptError::bad_key(format!("invalid {what} private key: {e}"))
    };
    let wrong_password =
        |_| CryptError::bad_key("cannot decrypt the private key: wrong password?".to_string());
    let key = match block.label.as_str() {
        "RSA PRIVATE KEY" => {
            let encrypted = block
                .header("Proc-Type")
                .is_some_and(|v| v.contains("ENCRYPTED"));
            if encrypted {
                let pw = password()?;
                Rsa::private_key_from_pem_passphrase(data, pw.as_bytes()).map_err(wrong_password)?
            } else {
                Rsa::private_key_from_der(&block.der).map_err(|e| invalid("PKCS#1", e))?
            }
        }
        "PRIVATE KEY" => PKey::private_key_from_pkcs8(&block.der)
            .map_err(|e| invalid("PKCS#8", e))?
            .rsa()
            .map_err(|_| CryptError::bad_key("the PKCS#8 private key is not an RSA key"))?,
        "ENCRYPTED PRIVATE KEY" => {
            let pw = password()?;
            PKey::private_key_from_pkcs8_passphrase(&block.der, pw.as_bytes())
                .map_err(wrong_password)?
                .rsa()
                .map_err(|_| CryptError::bad_key("the PKCS#8 private key is not an RSA key"))?
        }
        "OPENSSH PRIVATE KEY" => from_ssh(&ssh::parse_private(&block.der)?)?,
        "RSA PUBLIC KEY" | "PUBLIC KEY" => {
            return Err(CryptError::bad_key(
                "this is a public key; running an encrypted image needs the matching private key",
            ));
        }
        other => {
            return Err(CryptError::bad_key(format!(
                "PEM block '{other}' is not an RSA private key; expected {PRIVATE_FORMS}"
            )));
        }
    };
    if !rsa_ok(&key) {
        return Err(CryptError::bad_key(
            "the RSA private key is inconsistent (corrupted file)",
        ));
    }
    check_size(key.size())?;
    let key = PKey::from_rsa(key).map_err(|e| CryptError::crypto("private key", e))?;
    Ok(PrivateKey { key })
}

fn rsa_ok(k: &Rsa<Private>) -> bool {
    k.check_key().unwrap_or(false)
}

/// RSA-OAEP with SHA-256 carries at most k − 66 bytes per block; a key must carry one.
fn check_size(bytes: u32) -> Result<()> {
    if bytes <= 66 {
        return Err(CryptError::bad_key(format!(
            "RSA key of {} bits is too small for RSA-OAEP with SHA-256 (use 2048 bits or more)",
            bytes * 8
        )));
    }
    Ok(())
}

fn bn(b: &[u8]) -> Result<BigNum> {
    BigNum::from_slice(b).map_err(|e| CryptError::crypto("key number", e))
}

/// Builds an OpenSSL key from OpenSSH's numbers, deriving the CRT parameters.
fn from_ssh(nums: &ssh::RsaNumbers) -> Result<Rsa<Private>> {
    let Some(p) = &nums.private else {
        return Err(CryptError::bad_key("OpenSSH key has no private part"));
    };
    let err = |e| CryptError::crypto("OpenSSH private key", e);
    let mut ctx = BigNumContext::new_secure().map_err(err)?;
    let d = BigNum::from_slice(&p.d).map_err(err)?;
    let pp = BigNum::from_slice(&p.p).map_err(err)?;
    let q = BigNum::from_slice(&p.q).map_err(err)?;
    let one = BigNum::from_u32(1).map_err(err)?;
    let mut pm1 = BigNum::new().map_err(err)?;
    pm1.checked_sub(&pp, &one).map_err(err)?;
    let mut qm1 = BigNum::new().map_err(err)?;
    qm1.checked_sub(&q, &one).map_err(err)?;
    let mut dmp1 = BigNum::new_secure().map_err(err)?;
    dmp1.nnmod(&d, &pm1, &mut ctx).map_err(err)?;
    let mut dmq1 = BigNum::new_secure().map_err(err)?;
    dmq1.nnmod(&d, &qm1, &mut ctx).map_err(err)?;
    let mut iqmp = BigNum::new_secure().map_err(err)?;
    iqmp.mod_inverse(&q, &pp, &mut ctx)
        .map_err(|_| CryptError::bad_key("OpenSSH private key: p and q are not coprime"))?;
    Rsa::from_private_components(bn(&nums.n)?, bn(&nums.e)?, d, pp, q, dmp1, dmq1, iqmp)
        .map_err(err)
}
