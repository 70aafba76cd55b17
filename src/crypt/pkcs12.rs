//! RSA private keys in PKCS#12 (PFX) files, as `openssl pkcs12 -export` writes them
//! and as Batch Shipyard ships the decryption key: the key is found in a shrouded key
//! bag (or a plain key bag) of the file's unencrypted safes, the file's MAC checked
//! with the password first (so a wrong password is named as one), and the key
//! decrypted with PBES2 (PBKDF2 and AES or 3DES: OpenSSL 3's default) or the legacy
//! PKCS#12 schemes (SHA-1 with 3DES or RC2: OpenSSL 1.x's, `-legacy`). Certificates,
//! which OpenSSL puts in an encrypted safe, are not needed and not read.

#![forbid(unsafe_code)]

use der::{Decode, Encode};
use pkcs12::kdf::{Pkcs12KeyType, derive_key};
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

/// A key entry found in a file, not yet decrypted.
enum KeyBag {
    /// `keyBag`: a plain `PrivateKeyInfo`.
    Plain(Zeroizing<Vec<u8>>),
    /// `pkcs8ShroudedKeyBag`: an `EncryptedPrivateKeyInfo`.
    Shrouded(Vec<u8>),
}

/// The one private key in the PKCS#12 file `data`, as PKCS#8 `PrivateKeyInfo` DER.
/// The file is walked first: `password` is asked only once it is known to hold one
/// key veil can decrypt, and only if the file needs one (a MAC, an encrypted key).
pub fn private_key_info(
    data: &[u8],
    password: &dyn Fn() -> Result<Zeroizing<String>>,
) -> Result<Zeroizing<Vec<u8>>> {
    let unreadable = |e: der::Error| bad(format!("not readable ({e})"));
    let pfx = pkcs12::pfx::Pfx::from_der(data).map_err(unreadable)?;
    if pfx.auth_safe.content_type != ID_DATA {
        return Err(bad(
            "its contents are signed with a public key, which veil does not read (export it with a password instead)",
        ));
    }
    let auth_safe =
        der::asn1::OctetString::from_der(&pfx.auth_safe.content.to_der().map_err(unreadable)?)
            .map_err(unreadable)?;
    let auth_safe = auth_safe.as_bytes();
    let mut keys = key_bags(auth_safe)?;
    let key = match keys.len() {
        0 => {
            return Err(bad(
                "holds no private key (or only in an encrypted safe, which veil does not read)",
            ));
        }
        1 => keys.remove(0),
        n => {
            return Err(bad(format!(
                "holds {n} private keys; give a file with the one key (openssl pkcs12 -in F -nodes, then pick it)"
            )));
        }
    };
    if let KeyBag::Shrouded(der_bytes) = &key {
        check_key_scheme(der_bytes)?;
    }
    let needs_password = pfx.mac_data.is_some() || matches!(key, KeyBag::Shrouded(_));
    if !needs_password {
        let KeyBag::Plain(k) = key else {
            unreachable!("a shrouded key needs a password")
        };
        return Ok(k);
    }
    let pw = password()?;
    let bmp = bmp_password(&pw);
    let mac_ok = match &pfx.mac_data {
        Some(mac) => {
            check_mac(mac, &bmp, auth_safe)?;
            true
        }
        None => false,
    };
    match key {
        KeyBag::Plain(k) => Ok(k),
        KeyBag::Shrouded(der_bytes) => decrypt_key(&der_bytes, &pw, &bmp, mac_ok),
    }
}

/// The key entries of the file's unencrypted safes (encrypted safes hold the
/// certificates, which are not needed).
fn key_bags(auth_safe: &[u8]) -> Result<Vec<KeyBag>> {
    let unreadable = |e: der::Error| bad(format!("not readable ({e})"));
    let safes: Vec<cms::content_info::ContentInfo> =
        Vec::from_der(auth_safe).map_err(unreadable)?;
    let mut keys = Vec::new();
    let mut bags = 0usize;
    for safe in safes {
        if safe.content_type != ID_DATA {
            continue;
        }
        let octets = der::asn1::OctetString::from_der(&safe.content.to_der().map_err(unreadable)?)
            .map_err(unreadable)?;
        let contents: pkcs12::safe_bag::SafeContents =
            Vec::from_der(octets.as_bytes()).map_err(unreadable)?;
        for bag in contents {
            bags += 1;
            if bags > MAX_BAGS {
                return Err(bad(format!("more than {MAX_BAGS} entries")));
            }
            // The value is the bag's explicit [0]: its contents are the bag.
            let inner = der::asn1::AnyRef::from_der(&bag.bag_value).map_err(unreadable)?;
            if bag.bag_id == pkcs12::PKCS_12_PKCS8_KEY_BAG_OID {
                keys.push(KeyBag::Shrouded(inner.value().to_vec()));
            } else if bag.bag_id == pkcs12::PKCS_12_KEY_BAG_OID {
                keys.push(KeyBag::Plain(Zeroizing::new(inner.value().to_vec())));
            }
        }
    }
    Ok(keys)
}

/// The password as the PKCS#12 KDF takes it: UTF-16 big-endian with two zero bytes
/// at the end, in memory of its final size that is wiped when dropped.
fn bmp_password(pw: &str) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(2 * pw.encode_utf16().count() + 2));
    for u in pw.encode_utf16() {
        out.extend_from_slice(&u.to_be_bytes());
    }
    out.extend_from_slice(&[0, 0]);
    out
}

fn check_iterations(n: u64) -> Result<()> {
    if n == 0 || n > MAX_ITERATIONS {
        return Err(bad(format!(
            "asks for {n} KDF iterations (veil allows 1 to {MAX_ITERATIONS})"
        )));
    }
    Ok(())
}

/// Refuses a PBES2 scheme whose KDF would cost more than a key is worth to unlock:
/// PBKDF2 above [`MAX_ITERATIONS`], scrypt above 1 GiB or 2^24 block mixes. Shared
/// with encrypted PKCS#8 PEM keys.
pub(crate) fn check_pbes2_cost(scheme: &rsa::pkcs8::pkcs5::EncryptionScheme<'_>) -> Result<()> {
    use rsa::pkcs8::pkcs5::{EncryptionScheme, pbes2::Kdf};
    let EncryptionScheme::Pbes2(p) = scheme else {
        return Ok(());
    };
    match &p.kdf {
        Kdf::Pbkdf2(k) => check_iterations(u64::from(k.iteration_count)),
        Kdf::Scrypt(sc) => {
            let (n, r, par) = (
                sc.cost_parameter,
                u64::from(sc.block_size),
                u64::from(sc.parallelization),
            );
            let memory = n.saturating_mul(r).saturating_mul(128);
            let work = n.saturating_mul(r).saturating_mul(par);
            if memory > 1 << 30 || work > 1 << 24 {
                return Err(CryptError::bad_key(format!(
                    "the key's scrypt parameters (N={n}, r={r}, p={par}) cost more than veil allows (1 GiB, 2^24 block mixes)"
                )));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The file's MAC, keyed by the PKCS#12 KDF from the password: a mismatch is a wrong
/// password (or a damaged file).
fn check_mac(mac: &pkcs12::mac_data::MacData, bmp: &[u8], data: &[u8]) -> Result<()> {
    use hmac::{Hmac, Mac};
    let rounds = mac.iterations;
    check_iterations(u64::try_from(rounds).unwrap_or(0))?;
    let salt = mac.mac_salt.as_bytes();
    let want = mac.mac.digest.as_bytes();
    macro_rules! verify {
        ($d:ty) => {{
            let key = Zeroizing::new(derive_key::<$d>(
                bmp,
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

/// Checks, before any password is asked, that a shrouded key's scheme is one veil
/// decrypts, at a cost it accepts.
fn check_key_scheme(der_bytes: &[u8]) -> Result<()> {
    let info = pkcs12::pbe_params::EncryptedPrivateKeyInfo::from_der(der_bytes)
        .map_err(|e| bad(format!("a key entry is not readable ({e})")))?;
    let alg = &info.encryption_algorithm;
    if alg.oid == PBES2 {
        let epki = rsa::pkcs8::EncryptedPrivateKeyInfo::try_from(der_bytes).map_err(|e| {
            bad(format!(
                "its key's PBES2 parameters are not ones veil reads ({e}); re-export it: openssl pkcs12 -export"
            ))
        })?;
        return check_pbes2_cost(&epki.encryption_algorithm);
    }
    let legacy = [
        pkcs12::PKCS_12_PBE_WITH_SHAAND3_KEY_TRIPLE_DES_CBC,
        pkcs12::PKCS_12_PBE_WITH_SHAAND128_BIT_RC2_CBC,
        pkcs12::PKCS_12_PBEWITH_SHAAND40_BIT_RC2_CBC,
    ];
    if !legacy.contains(&alg.oid) {
        return Err(bad(format!(
            "its key is encrypted with {}, which veil does not read; re-export it: openssl pkcs12 -export (OpenSSL 3's default, AES-256)",
            alg.oid
        )));
    }
    let params = alg
        .parameters
        .as_ref()
        .ok_or_else(|| bad("a key entry has no encryption parameters"))?
        .decode_as::<pkcs12::pbe_params::Pkcs12PbeParams>()
        .map_err(|e| bad(format!("a key entry's parameters are not readable ({e})")))?;
    check_iterations(u64::try_from(params.iterations).unwrap_or(0))
}

/// A shrouded key bag's `EncryptedPrivateKeyInfo`, decrypted (its scheme checked by
/// [`check_key_scheme`]). Once the MAC has shown the password right (`mac_ok`), a
/// failure is a damaged file, not a wrong password.
fn decrypt_key(der_bytes: &[u8], pw: &str, bmp: &[u8], mac_ok: bool) -> Result<Zeroizing<Vec<u8>>> {
    let failed = || {
        if mac_ok {
            bad("its key does not decrypt although the password is right: the file is damaged")
        } else {
            wrong_password()
        }
    };
    let info = pkcs12::pbe_params::EncryptedPrivateKeyInfo::from_der(der_bytes)
        .map_err(|e| bad(format!("a key entry is not readable ({e})")))?;
    let alg = &info.encryption_algorithm;
    if alg.oid == PBES2 {
        let epki = rsa::pkcs8::EncryptedPrivateKeyInfo::try_from(der_bytes)
            .map_err(|e| bad(format!("a key entry is not readable ({e})")))?;
        let doc = epki.decrypt(pw.as_bytes()).map_err(|_| failed())?;
        return Ok(Zeroizing::new(doc.as_bytes().to_vec()));
    }
    let params = alg
        .parameters
        .as_ref()
        .ok_or_else(|| bad("a key entry has no encryption parameters"))?
        .decode_as::<pkcs12::pbe_params::Pkcs12PbeParams>()
        .map_err(|e| bad(format!("a key entry's parameters are not readable ({e})")))?;
    let rounds = params.iterations;
    let salt = params.salt.as_bytes();
    let derive = |kind, len| Zeroizing::new(derive_key::<Sha1>(bmp, salt, kind, rounds, len));
    let mut buf = Zeroizing::new(info.encrypted_data.as_bytes().to_vec());
    let plain_len = if alg.oid == pkcs12::PKCS_12_PBE_WITH_SHAAND3_KEY_TRIPLE_DES_CBC {
        let key = derive(Pkcs12KeyType::EncryptionKey, 24);
        let iv = derive(Pkcs12KeyType::Iv, 8);
        cbc_decrypt::<des::TdesEde3>(&key, &iv, &mut buf).map_err(|_| failed())?
    } else {
        let bits = if alg.oid == pkcs12::PKCS_12_PBEWITH_SHAAND40_BIT_RC2_CBC {
            40
        } else {
            128
        };
        let key = derive(Pkcs12KeyType::EncryptionKey, bits / 8);
        let iv = derive(Pkcs12KeyType::Iv, 8);
        let rc2 = rc2::Rc2::new_with_eff_key_len(&key, bits);
        cbc_decrypt_with(rc2, &iv, &mut buf).map_err(|_| failed())?
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
