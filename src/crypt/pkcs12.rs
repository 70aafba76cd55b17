//! RSA private keys in PKCS#12 (PFX) files, as `openssl pkcs12 -export` writes them
//! and as Batch Shipyard ships the decryption key: the key is found in a shrouded key
//! bag (or a plain key bag) of the file's unencrypted safes, the file's MAC checked
//! with the password first (so a wrong password is named as one), and the key
//! decrypted with PBES2 (PBKDF2 and AES or 3DES: OpenSSL 3's default) or the legacy
//! PKCS#12 schemes (SHA-1 with 3DES or RC2: OpenSSL 1.x's, `-legacy`). Certificates,
//! which OpenSSL puts in an encrypted safe, are not needed and not read.

#![forbid(unsafe_code)]

use der::{Decode, Encode};
use pkcs12::kdf::{Pkcs12KeyType, derive_key_bmp};
use sha1::Sha1;
use sha2::{Sha256, Sha384, Sha512};
use zeroize::Zeroizing;

use super::error::{CryptError, Result};

/// The most iterations a file's KDFs may ask for: far above what tools write (2048
/// to 600 000), low enough that a hostile file cannot hold a run for minutes.
const MAX_ITERATIONS: u64 = 10_000_000;
/// The most bags looked at.
const MAX_BAGS: usize = 256;

const ID_DATA: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");
const PBES2: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.2.840.113549.1.5.13");
const SHA1_OID: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.3.14.3.2.26");
const SHA256_OID: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const SHA384_OID: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2");
const SHA512_OID: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.3");

fn bad(why: impl Into<String>) -> CryptError {
    CryptError::bad_key(format!("PKCS#12 file: {}", why.into()))
}

fn wrong_password() -> CryptError {
    CryptError::bad_key("cannot open the PKCS#12 file: wrong password?")
}

/// True if `data` looks like a PKCS#12 file (a DER `Pfx` of version 3), so that
/// the caller asks for its password only then.
pub fn is_pkcs12(data: &[u8]) -> bool {
    pkcs12::pfx::Pfx::from_der(data).is_ok()
}

/// The one private key in the PKCS#12 file `data`, as PKCS#8 `PrivateKeyInfo` DER.
/// `password` is asked once the file is known to be one.
pub fn private_key_info(
    data: &[u8],
    password: &dyn Fn() -> Result<Zeroizing<String>>,
) -> Result<Zeroizing<Vec<u8>>> {
    let pfx = pkcs12::pfx::Pfx::from_der(data).map_err(|e| bad(format!("not readable ({e})")))?;
    if pfx.auth_safe.content_type != ID_DATA {
        return Err(bad(
            "its contents are signed with a public key, which veil does not read (export it with a password instead)",
        ));
    }
    let auth_safe = der::asn1::OctetString::from_der(
        &pfx.auth_safe
            .content
            .to_der()
            .map_err(|e| bad(e.to_string()))?,
    )
    .map_err(|e| bad(format!("not readable ({e})")))?;
    let auth_safe = auth_safe.as_bytes();
    let pw = password()?;
    let bmp = der::asn1::BmpString::from_utf8(&pw)
        .map_err(|_| bad("the password cannot be written as PKCS#12 wants (BMP)"))?;
    if let Some(mac) = &pfx.mac_data {
        check_mac(mac, &bmp, auth_safe)?;
    }
    let safes: Vec<cms::content_info::ContentInfo> =
        Vec::from_der(auth_safe).map_err(|e| bad(format!("not readable ({e})")))?;
    let mut keys: Vec<Zeroizing<Vec<u8>>> = Vec::new();
    let mut bags = 0usize;
    for safe in safes {
        // Encrypted safes hold the certificates; a key is in a plain one.
        if safe.content_type != ID_DATA {
            continue;
        }
        let octets = der::asn1::OctetString::from_der(
            &safe.content.to_der().map_err(|e| bad(e.to_string()))?,
        )
        .map_err(|e| bad(format!("not readable ({e})")))?;
        let contents: pkcs12::safe_bag::SafeContents =
            Vec::from_der(octets.as_bytes()).map_err(|e| bad(format!("not readable ({e})")))?;
        for bag in contents {
            bags += 1;
            if bags > MAX_BAGS {
                return Err(bad(format!("more than {MAX_BAGS} entries")));
            }
            // The value is the bag's explicit [0]: its contents are the bag.
            let inner = der::asn1::AnyRef::from_der(&bag.bag_value)
                .map_err(|e| bad(format!("not readable ({e})")))?;
            if bag.bag_id == pkcs12::PKCS_12_PKCS8_KEY_BAG_OID {
                keys.push(decrypt_key(inner.value(), &pw, &bmp)?);
            } else if bag.bag_id == pkcs12::PKCS_12_KEY_BAG_OID {
                keys.push(Zeroizing::new(inner.value().to_vec()));
            }
        }
    }
    match keys.len() {
        0 => Err(bad(
            "holds no private key (or only in an encrypted safe, which veil does not read)",
        )),
        1 => Ok(keys.remove(0)),
        n => Err(bad(format!(
            "holds {n} private keys; give a file with the one key (openssl pkcs12 -in F -nodes, then pick it)"
        ))),
    }
}

fn check_iterations(n: u64) -> Result<()> {
    if n == 0 || n > MAX_ITERATIONS {
        return Err(bad(format!(
            "asks for {n} KDF iterations (veil allows 1 to {MAX_ITERATIONS})"
        )));
    }
    Ok(())
}

/// The file's MAC, keyed by the PKCS#12 KDF from the password: a mismatch is a wrong
/// password (or a damaged file).
fn check_mac(
    mac: &pkcs12::mac_data::MacData,
    bmp: &der::asn1::BmpString,
    data: &[u8],
) -> Result<()> {
    use hmac::{Hmac, Mac};
    let rounds = mac.iterations;
    check_iterations(u64::try_from(rounds).unwrap_or(0))?;
    let salt = mac.mac_salt.as_bytes();
    let want = mac.mac.digest.as_bytes();
    macro_rules! verify {
        ($d:ty) => {{
            let key = Zeroizing::new(derive_key_bmp::<$d>(
                bmp.clone(),
                salt,
                Pkcs12KeyType::Mac,
                rounds,
                <$d as digest::OutputSizeUser>::output_size(),
            ));
            let mut m = <Hmac<$d> as Mac>::new_from_slice(&key).map_err(|e| bad(e.to_string()))?;
            m.update(data);
            m.verify_slice(want).is_ok()
        }};
    }
    let oid = mac.mac.algorithm.oid;
    let ok = if oid == SHA1_OID {
        verify!(Sha1)
    } else if oid == SHA256_OID {
        verify!(Sha256)
    } else if oid == SHA384_OID {
        verify!(Sha384)
    } else if oid == SHA512_OID {
        verify!(Sha512)
    } else {
        return Err(bad(format!("its MAC uses {oid}, which veil does not know")));
    };
    if ok { Ok(()) } else { Err(wrong_password()) }
}

/// A shrouded key bag's `EncryptedPrivateKeyInfo`, decrypted.
fn decrypt_key(
    der_bytes: &[u8],
    pw: &str,
    bmp: &der::asn1::BmpString,
) -> Result<Zeroizing<Vec<u8>>> {
    let info = pkcs12::pbe_params::EncryptedPrivateKeyInfo::from_der(der_bytes)
        .map_err(|e| bad(format!("a key entry is not readable ({e})")))?;
    let alg = &info.encryption_algorithm;
    let ciphertext = info.encrypted_data.as_bytes();
    if alg.oid == PBES2 {
        let epki = rsa::pkcs8::EncryptedPrivateKeyInfo::try_from(der_bytes).map_err(|e| {
            bad(format!(
                "a key entry's PBES2 parameters are not readable ({e})"
            ))
        })?;
        if let rsa::pkcs8::pkcs5::EncryptionScheme::Pbes2(p) = &epki.encryption_algorithm {
            let n = match &p.kdf {
                rsa::pkcs8::pkcs5::pbes2::Kdf::Pbkdf2(k) => u64::from(k.iteration_count),
                // scrypt's cost is bounded by pkcs5 itself; PBKDF2's is what tools use.
                _ => 1,
            };
            check_iterations(n)?;
        }
        let doc = epki.decrypt(pw.as_bytes()).map_err(|_| wrong_password())?;
        return Ok(Zeroizing::new(doc.as_bytes().to_vec()));
    }
    let params = alg
        .parameters
        .as_ref()
        .ok_or_else(|| bad("a key entry has no encryption parameters"))?
        .decode_as::<pkcs12::pbe_params::Pkcs12PbeParams>()
        .map_err(|e| bad(format!("a key entry's parameters are not readable ({e})")))?;
    let rounds = params.iterations;
    check_iterations(u64::try_from(rounds).unwrap_or(0))?;
    let salt = params.salt.as_bytes();
    let derive =
        |kind, len| Zeroizing::new(derive_key_bmp::<Sha1>(bmp.clone(), salt, kind, rounds, len));
    let mut buf = Zeroizing::new(ciphertext.to_vec());
    let plain_len = if alg.oid == pkcs12::PKCS_12_PBE_WITH_SHAAND3_KEY_TRIPLE_DES_CBC {
        let key = derive(Pkcs12KeyType::EncryptionKey, 24);
        let iv = derive(Pkcs12KeyType::Iv, 8);
        cbc_decrypt::<des::TdesEde3>(&key, &iv, &mut buf)?
    } else if alg.oid == pkcs12::PKCS_12_PBE_WITH_SHAAND128_BIT_RC2_CBC
        || alg.oid == pkcs12::PKCS_12_PBEWITH_SHAAND40_BIT_RC2_CBC
    {
        let bits = if alg.oid == pkcs12::PKCS_12_PBEWITH_SHAAND40_BIT_RC2_CBC {
            40
        } else {
            128
        };
        let key = derive(Pkcs12KeyType::EncryptionKey, bits / 8);
        let iv = derive(Pkcs12KeyType::Iv, 8);
        let rc2 = rc2::Rc2::new_with_eff_key_len(&key, bits);
        cbc_decrypt_with(rc2, &iv, &mut buf)?
    } else {
        return Err(bad(format!(
            "its key is encrypted with {}, which veil does not read; re-export it: openssl pkcs12 -export (OpenSSL 3's default, AES-256)",
            alg.oid
        )));
    };
    buf.truncate(plain_len);
    Ok(buf)
}

fn cbc_decrypt<C>(key: &[u8], iv: &[u8], buf: &mut [u8]) -> Result<usize>
where
    C: cipher::BlockDecrypt + cipher::BlockCipher + cipher::KeyInit,
{
    let c = <C as cipher::KeyInit>::new_from_slice(key).map_err(|e| bad(e.to_string()))?;
    cbc_decrypt_with(c, iv, buf)
}

fn cbc_decrypt_with<C>(c: C, iv: &[u8], buf: &mut [u8]) -> Result<usize>
where
    C: cipher::BlockDecrypt + cipher::BlockCipher,
{
    use cipher::{BlockDecryptMut, InnerIvInit, block_padding::Pkcs7};
    let d = cbc::Decryptor::<C>::inner_iv_slice_init(c, iv).map_err(|e| bad(e.to_string()))?;
    // Bad padding is what a wrong password leaves.
    let plain = d
        .decrypt_padded_mut::<Pkcs7>(buf)
        .map_err(|_| wrong_password())?;
    Ok(plain.len())
}
