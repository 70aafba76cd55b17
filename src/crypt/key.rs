//! RSA keys for encrypted images, loaded from the forms people actually have.
//!
//! The peers accept only PKCS#1 (`RSA PUBLIC KEY` / unencrypted `RSA PRIVATE KEY`).
//! veil takes those and also SPKI (`PUBLIC KEY`), PKCS#8 (`PRIVATE KEY`, and
//! `ENCRYPTED PRIVATE KEY` with a password), password-protected PKCS#1, and
//! OpenSSH keys (`ssh-rsa …` lines and `OPENSSH PRIVATE KEY` files, with or without
//! a passphrase).
//! The images are the same whichever form the key was in.
//!
//! The DER structures are read with the RustCrypto `pkcs1`/`pkcs8`/`spki` crates and
//! the keys built here, rather than through `rsa`'s own decoders, so that the error
//! messages stay veil's and keys up to 16384 bits load (`rsa` refuses public keys
//! over 4096 bits by default).

#![forbid(unsafe_code)]

use rsa::pkcs1::der::Decode as _;
use rsa::traits::PublicKeyParts as _;
use rsa::{BigUint, RsaPrivateKey, RsaPublicKey};
use zeroize::Zeroizing;

use super::error::{CryptError, Result};
use super::{pem, pem_legacy, ssh};

/// The largest modulus accepted: OpenSSL's limit too, so every key the peers can use
/// loads here.
const MAX_BITS: usize = 16384;

/// `rsaEncryption` (PKCS#1): the one algorithm an SPKI or PKCS#8 key may carry here.
const RSA_ENCRYPTION: rsa::pkcs8::ObjectIdentifier =
    rsa::pkcs8::ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

/// An RSA public key (a recipient of an encrypted image).
pub struct PublicKey {
    pub(crate) key: RsaPublicKey,
}

/// An RSA private key. `rsa` wipes its numbers when it is dropped.
pub struct PrivateKey {
    pub(crate) key: RsaPrivateKey,
}

impl PublicKey {
    /// Modulus size in bits.
    pub fn bits(&self) -> u32 {
        self.key.n().bits() as u32
    }
}

impl PrivateKey {
    pub fn bits(&self) -> u32 {
        self.key.n().bits() as u32
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
    let key = if ssh::is_public_line(data) {
        let nums = ssh::parse_public_line(data)?;
        public_from(&nums.n, &nums.e).map_err(|e| CryptError::crypto("OpenSSH public key", e))?
    } else {
        let block = pem::first_block(data).ok_or_else(|| {
            CryptError::bad_key(format!("no PEM data found; expected {PUBLIC_FORMS}"))
        })?;
        match block.label.as_str() {
            "RSA PUBLIC KEY" => public_from_pkcs1(&block.der)
                .map_err(|e| CryptError::bad_key(format!("invalid PKCS#1 public key: {e}")))?,
            "PUBLIC KEY" => public_from_spki(&block.der).map_err(|e| {
                CryptError::bad_key(format!("invalid or non-RSA SPKI public key: {e}"))
            })?,
            "RSA PRIVATE KEY" | "PRIVATE KEY" | "OPENSSH PRIVATE KEY"
                if block.header("Proc-Type").is_none() =>
            {
                let private = load_private_key(data, &|| {
                    Err(CryptError::bad_key("a public key is needed here"))
                })?;
                private.key.to_public_key()
            }
            other => {
                return Err(CryptError::bad_key(format!(
                    "PEM block '{other}' is not an RSA public key; expected {PUBLIC_FORMS}"
                )));
            }
        }
    };
    check_size(key.size())?;
    Ok(PublicKey { key })
}

/// The RSA key of a PKCS#12 file.
fn private_from_pkcs12(
    data: &[u8],
    password: &dyn Fn() -> Result<Zeroizing<String>>,
) -> Result<PrivateKey> {
    let der = super::pkcs12::private_key_info(data, password)?;
    let info = rsa::pkcs8::PrivateKeyInfo::try_from(&der[..])
        .map_err(|_| CryptError::bad_key("cannot open the PKCS#12 file: wrong password?"))?;
    if info.algorithm.oid != RSA_ENCRYPTION {
        let kind = match info.algorithm.oid.to_string().as_str() {
            "1.2.840.10045.2.1" => "an EC key".to_string(),
            "1.3.101.112" => "an Ed25519 key".to_string(),
            "1.3.101.110" => "an X25519 key".to_string(),
            "1.2.840.10040.4.1" => "a DSA key".to_string(),
            other => format!("a key of algorithm {other}"),
        };
        return Err(CryptError::bad_key(format!(
            "the PKCS#12 file holds {kind}, not an RSA key; encrypted images use RSA keys"
        )));
    }
    let key = private_from_pkcs1(info.private_key).map_err(|e| match e {
        Parse::Der(e) => CryptError::bad_key(format!("invalid PKCS#12 private key: {e}")),
        Parse::Inconsistent => inconsistent(),
    })?;
    check_size(key.size())?;
    Ok(PrivateKey { key })
}

/// Loads an RSA private key. `password` is asked only for a password-protected key.
pub fn load_private_key(
    data: &[u8],
    password: &dyn Fn() -> Result<Zeroizing<String>>,
) -> Result<PrivateKey> {
    // Binary DER that is not PEM: a PKCS#12 file (or one that says why it is not).
    if pem::first_block(data).is_none() && data.first() == Some(&0x30) {
        return private_from_pkcs12(data, password);
    }
    let block = pem::first_block(data).ok_or_else(|| {
        CryptError::bad_key(format!("no PEM data found; expected {PRIVATE_FORMS}"))
    })?;
    let invalid =
        |what: &str, e: String| CryptError::bad_key(format!("invalid {what} private key: {e}"));
    let wrong_password =
        || CryptError::bad_key("cannot decrypt the private key: wrong password?".to_string());
    let not_rsa = || CryptError::bad_key("the PKCS#8 private key is not an RSA key");
    let key = match block.label.as_str() {
        "RSA PRIVATE KEY" => {
            let encrypted = block
                .header("Proc-Type")
                .is_some_and(|v| v.contains("ENCRYPTED"));
            if encrypted {
                let pw = password()?;
                let der = pem_legacy::decrypt(&block, pw.as_bytes())?;
                // A wrong password that happens to leave valid padding yields garbage,
                // which is a wrong password too (as OpenSSL reports it).
                private_from_pkcs1(&der).map_err(|e| match e {
                    Parse::Der(_) => wrong_password(),
                    Parse::Inconsistent => inconsistent(),
                })?
            } else {
                private_from_pkcs1(&block.der).map_err(|e| match e {
                    Parse::Der(e) => invalid("PKCS#1", e),
                    Parse::Inconsistent => inconsistent(),
                })?
            }
        }
        "PRIVATE KEY" => {
            let info = rsa::pkcs8::PrivateKeyInfo::try_from(&block.der[..])
                .map_err(|e| invalid("PKCS#8", e.to_string()))?;
            if info.algorithm.oid != RSA_ENCRYPTION {
                return Err(not_rsa());
            }
            private_from_pkcs1(info.private_key).map_err(|e| match e {
                Parse::Der(e) => invalid("PKCS#8", e),
                Parse::Inconsistent => inconsistent(),
            })?
        }
        "ENCRYPTED PRIVATE KEY" => {
            use rsa::pkcs8::pkcs5;
            // The structure and its scheme are checked before asking for a password
            // nobody could use.
            let info = rsa::pkcs8::EncryptedPrivateKeyInfo::try_from(&block.der[..])
                .map_err(|e| {
                    CryptError::bad_key(format!(
                        "unsupported or damaged encrypted PKCS#8 private key ({e}); veil reads the \
                         PBES2 scheme: re-encrypt it: openssl pkcs8 -topk8 -v2 aes-256-cbc -in KEY -out new.pem"
                    ))
                })?;
            let reencrypt =
                "re-encrypt it: openssl pkcs8 -topk8 -v2 aes-256-cbc -in KEY -out new.pem";
            super::pkcs12::check_pbes2_cost(&info.encryption_algorithm)?;
            if let pkcs5::EncryptionScheme::Pbes1(_) = info.encryption_algorithm {
                return Err(CryptError::bad_key(format!(
                    "the private key is encrypted with the legacy PBES1 scheme, which veil cannot read; {reencrypt}"
                )));
            }
            let pw = password()?;
            // SecretDocument wipes the decrypted DER when dropped.
            let doc = info.decrypt(pw.as_bytes()).map_err(|e| match e {
                // A wrong password shows as bad padding, which pkcs5 reports as a
                // failure to decrypt or (in some versions) to "encrypt".
                rsa::pkcs8::Error::EncryptedPrivateKey(
                    pkcs5::Error::DecryptFailed | pkcs5::Error::EncryptFailed,
                ) => wrong_password(),
                // The structure parsed above, so a DER error now is in the plaintext: a
                // wrong password that left valid padding (about one time in 256 with
                // a 64-bit block cipher such as 3DES) yields garbage.
                rsa::pkcs8::Error::Asn1(_) => wrong_password(),
                other => CryptError::bad_key(format!(
                    "cannot decrypt the private key ({other}); {reencrypt}"
                )),
            })?;
            let info = rsa::pkcs8::PrivateKeyInfo::try_from(doc.as_bytes())
                .map_err(|_| wrong_password())?;
            if info.algorithm.oid != RSA_ENCRYPTION {
                return Err(not_rsa());
            }
            private_from_pkcs1(info.private_key).map_err(|e| match e {
                Parse::Der(_) => wrong_password(),
                Parse::Inconsistent => inconsistent(),
            })?
        }
        "OPENSSH PRIVATE KEY" => {
            let nums = ssh::parse_private(&block.der, password).map_err(|e| match e {
                ssh::Unlock::WrongPassphrase => wrong_password(),
                ssh::Unlock::Other(e) => e,
            })?;
            from_ssh(&nums)?
        }
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
    check_size(key.size())?;
    Ok(PrivateKey { key })
}

fn inconsistent() -> CryptError {
    CryptError::bad_key("the RSA private key is inconsistent (corrupted file)")
}

/// Why a PKCS#1 private key did not load: its DER, or its numbers.
enum Parse {
    Der(String),
    Inconsistent,
}

/// A two-prime PKCS#1 `RSAPrivateKey`, checked for consistency (Πprimes = n and
/// d·e ≡ 1 mod p−1, q−1). The CRT values in the file are recomputed, not trusted.
fn private_from_pkcs1(der: &[u8]) -> std::result::Result<RsaPrivateKey, Parse> {
    let k = rsa::pkcs1::RsaPrivateKey::from_der(der).map_err(|e| Parse::Der(e.to_string()))?;
    if k.version() != rsa::pkcs1::Version::TwoPrime {
        return Err(Parse::Der("multi-prime RSA keys are not supported".into()));
    }
    let num = |u: rsa::pkcs1::UintRef<'_>| BigUint::from_bytes_be(u.as_bytes());
    private_from(
        num(k.modulus),
        num(k.public_exponent),
        num(k.private_exponent),
        num(k.prime1),
        num(k.prime2),
    )
    .ok_or(Parse::Inconsistent)
}

/// Builds a private key from its numbers; `None` when they do not form a key.
fn private_from(
    n: BigUint,
    e: BigUint,
    d: BigUint,
    p: BigUint,
    q: BigUint,
) -> Option<RsaPrivateKey> {
    if n.bits() > MAX_BITS {
        return None;
    }
    // from_components validates the key and derives the CRT parameters.
    RsaPrivateKey::from_components(n, e, d, vec![p, q]).ok()
}

fn public_from(n: &[u8], e: &[u8]) -> rsa::Result<RsaPublicKey> {
    RsaPublicKey::new_with_max_size(
        BigUint::from_bytes_be(n),
        BigUint::from_bytes_be(e),
        MAX_BITS,
    )
}

fn public_from_pkcs1(der: &[u8]) -> std::result::Result<RsaPublicKey, String> {
    let k = rsa::pkcs1::RsaPublicKey::from_der(der).map_err(|e| e.to_string())?;
    public_from(k.modulus.as_bytes(), k.public_exponent.as_bytes()).map_err(|e| e.to_string())
}

fn public_from_spki(der: &[u8]) -> std::result::Result<RsaPublicKey, String> {
    let spki = rsa::pkcs8::SubjectPublicKeyInfoRef::try_from(der).map_err(|e| e.to_string())?;
    if spki.algorithm.oid != RSA_ENCRYPTION {
        return Err(format!("the key's algorithm is {}", spki.algorithm.oid));
    }
    let bits = spki
        .subject_public_key
        .as_bytes()
        .ok_or_else(|| "the key's bit string is not whole bytes".to_string())?;
    public_from_pkcs1(bits)
}

/// RSA-OAEP with SHA-256 carries at most k − 66 bytes per block; a key must carry one.
fn check_size(bytes: usize) -> Result<()> {
    if bytes <= 66 {
        return Err(CryptError::bad_key(format!(
            "RSA key of {} bits is too small for RSA-OAEP with SHA-256 (use 2048 bits or more)",
            bytes * 8
        )));
    }
    Ok(())
}

/// Builds a key from OpenSSH's numbers (n, e, d, p, q; the CRT parameters are derived).
fn from_ssh(nums: &ssh::RsaNumbers) -> Result<RsaPrivateKey> {
    let Some(p) = &nums.private else {
        return Err(CryptError::bad_key("OpenSSH key has no private part"));
    };
    private_from(
        BigUint::from_bytes_be(&nums.n),
        BigUint::from_bytes_be(&nums.e),
        BigUint::from_bytes_be(&p.d),
        BigUint::from_bytes_be(&p.p),
        BigUint::from_bytes_be(&p.q),
    )
    .ok_or_else(inconsistent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::pkcs1::{EncodeRsaPrivateKey as _, EncodeRsaPublicKey as _};
    use rsa::pkcs8::{EncodePrivateKey as _, EncodePublicKey as _};

    fn no_pw() -> Result<Zeroizing<String>> {
        panic!("no password should be asked")
    }

    fn key(bits: usize) -> RsaPrivateKey {
        RsaPrivateKey::new(&mut rsa::rand_core::OsRng, bits).unwrap()
    }

    #[test]
    fn every_unprotected_form_loads_the_same_key() {
        let k = key(1024);
        let n = k.n().clone();
        let pkcs1 = pem::encode("RSA PRIVATE KEY", k.to_pkcs1_der().unwrap().as_bytes());
        let pkcs8 = pem::encode("PRIVATE KEY", k.to_pkcs8_der().unwrap().as_bytes());
        for text in [&pkcs1, &pkcs8] {
            assert_eq!(*load_private_key(text, &no_pw).unwrap().key.n(), n);
            assert_eq!(*load_public_key(text).unwrap().key.n(), n);
        }
        let public = k.to_public_key();
        let spki = pem::encode("PUBLIC KEY", public.to_public_key_der().unwrap().as_bytes());
        let pkcs1_pub = pem::encode("RSA PUBLIC KEY", public.to_pkcs1_der().unwrap().as_bytes());
        for text in [&spki, &pkcs1_pub] {
            assert_eq!(*load_public_key(text).unwrap().key.n(), n);
            let err = load_private_key(text, &no_pw).unwrap_err().to_string();
            assert!(err.contains("this is a public key"), "{err}");
        }
    }

    #[test]
    fn encrypted_pkcs8_asks_for_the_password() {
        let k = key(1024);
        let der = k
            .to_pkcs8_encrypted_der(&mut rsa::rand_core::OsRng, "pw")
            .unwrap();
        let text = pem::encode("ENCRYPTED PRIVATE KEY", der.as_bytes());
        let pw = |s: &'static str| move || Ok(Zeroizing::new(s.to_string()));
        assert_eq!(*load_private_key(&text, &pw("pw")).unwrap().key.n(), *k.n());
        let err = load_private_key(&text, &pw("nope"))
            .unwrap_err()
            .to_string();
        assert_eq!(err, "cannot decrypt the private key: wrong password?");
        // A public key cannot be had from it without the password.
        assert!(load_public_key(&text).is_err());
    }

    #[test]
    fn bad_keys_give_the_documented_errors() {
        let k = key(1024);
        // Swap in a different modulus: parses, but the numbers no longer agree.
        let other = key(1024);
        let (n, der) = (other.n().to_bytes_be(), k.to_pkcs1_der().unwrap());
        let doc = rsa::pkcs1::RsaPrivateKey {
            modulus: rsa::pkcs1::UintRef::new(&n).unwrap(),
            ..rsa::pkcs1::RsaPrivateKey::from_der(der.as_bytes()).unwrap()
        };
        let der = rsa::pkcs1::der::Encode::to_der(&doc).unwrap();
        let text = pem::encode("RSA PRIVATE KEY", &der);
        let err = load_private_key(&text, &no_pw).unwrap_err().to_string();
        assert_eq!(err, "the RSA private key is inconsistent (corrupted file)");

        let err = load_private_key(&pem::encode("RSA PRIVATE KEY", b"\x30\x03\x02\x01"), &no_pw)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("invalid PKCS#1 private key: "), "{err}");
        let err = load_public_key(&pem::encode("PUBLIC KEY", b"\x30\x00"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("invalid or non-RSA SPKI public key: "),
            "{err}"
        );
        let err = load_public_key(b"nothing").unwrap_err().to_string();
        assert!(err.starts_with("no PEM data found"), "{err}");

        let small = key(512);
        let text = pem::encode("RSA PRIVATE KEY", small.to_pkcs1_der().unwrap().as_bytes());
        let err = load_private_key(&text, &no_pw).unwrap_err().to_string();
        assert!(err.contains("512 bits is too small"), "{err}");
    }

    /// Runs `openssl ARGS` in `dir`; false when it is not installed or fails.
    fn openssl(dir: &std::path::Path, args: &str) -> bool {
        std::process::Command::new("openssl")
            .args(args.split_whitespace())
            .current_dir(dir)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Every form OpenSSL writes, read back to the same key.
    #[test]
    fn openssl_written_keys_load() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        if !openssl(d, "genrsa -traditional -out k.pem 1024") {
            eprintln!("SKIP: the openssl command is not installed");
            return;
        }
        let n = load_private_key(&std::fs::read(d.join("k.pem")).unwrap(), &no_pw)
            .unwrap()
            .key
            .n()
            .clone();
        let public = [
            "rsa -in k.pem -RSAPublicKey_out -out pub1.pem",
            "rsa -in k.pem -pubout -out spki.pem",
        ];
        let plain = ["pkey -in k.pem -out p8.pem"];
        let protected = [
            "rsa -in k.pem -traditional -aes128 -passout pass:pw -out t-aes128.pem",
            "rsa -in k.pem -traditional -aes192 -passout pass:pw -out t-aes192.pem",
            "rsa -in k.pem -traditional -aes256 -passout pass:pw -out t-aes256.pem",
            "rsa -in k.pem -traditional -des3 -passout pass:pw -out t-des3.pem",
            "pkcs8 -topk8 -in k.pem -v2 aes-256-cbc -passout pass:pw -out e-aes256.pem",
            "pkcs8 -topk8 -in k.pem -v2 aes-128-cbc -v2prf hmacWithSHA1 -passout pass:pw -out e-sha1.pem",
            "pkcs8 -topk8 -in k.pem -v2 des3 -passout pass:pw -out e-des3.pem",
            "pkcs8 -topk8 -in k.pem -scrypt -passout pass:pw -out e-scrypt.pem",
        ];
        let file = |cmd: &str| {
            assert!(openssl(d, cmd), "openssl {cmd}");
            std::fs::read(d.join(cmd.rsplit(' ').next().unwrap())).unwrap()
        };
        for cmd in public {
            assert_eq!(*load_public_key(&file(cmd)).unwrap().key.n(), n, "{cmd}");
        }
        for cmd in plain {
            let text = file(cmd);
            assert_eq!(
                *load_private_key(&text, &no_pw).unwrap().key.n(),
                n,
                "{cmd}"
            );
        }
        let pw = |s: &'static str| move || Ok(Zeroizing::new(s.to_string()));
        for cmd in protected {
            let text = file(cmd);
            let key = load_private_key(&text, &pw("pw")).unwrap_or_else(|e| panic!("{cmd}: {e}"));
            assert_eq!(*key.key.n(), n, "{cmd}");
            let err = load_private_key(&text, &pw("wrong"))
                .unwrap_err()
                .to_string();
            assert_eq!(
                err, "cannot decrypt the private key: wrong password?",
                "{cmd}"
            );
        }
        // Schemes veil cannot read, and a damaged structure, are named as such before
        // any password is asked, not taken for a wrong password.
        let mut cut = String::from_utf8(file(
            "pkcs8 -topk8 -in k.pem -v2 aes-256-cbc -passout pass:pw -out e-cut.pem",
        ))
        .unwrap();
        let at = cut.find('\n').unwrap() + 1;
        cut.replace_range(at..at + 8, "");
        let mut cases = vec![
            (cut.into_bytes(), "unsupported or damaged encrypted PKCS#8"),
            (
                // PKCS#12's scheme, what `-v1` gives by default.
                file("pkcs8 -topk8 -in k.pem -v1 PBE-SHA1-3DES -passout pass:pw -out e-p12.pem"),
                "unsupported or damaged encrypted PKCS#8",
            ),
        ];
        // PBES1 proper needs OpenSSL's legacy provider to be written at all.
        if openssl(
            d,
            "pkcs8 -topk8 -in k.pem -v1 PBE-SHA1-DES -provider legacy -provider default -passout pass:pw -out e-pbes1.pem",
        ) {
            cases.push((
                std::fs::read(d.join("e-pbes1.pem")).unwrap(),
                "legacy PBES1 scheme",
            ));
        } else {
            eprintln!("SKIP PBES1 key: this openssl has no legacy provider");
        }
        for (text, want) in cases {
            let asked = std::cell::Cell::new(false);
            let err = load_private_key(&text, &|| {
                asked.set(true);
                Ok(Zeroizing::new("pw".to_string()))
            })
            .unwrap_err()
            .to_string();
            assert!(err.contains(want), "{err}");
            assert!(
                !asked.get(),
                "a password was asked for a key that cannot be read: {err}"
            );
        }
    }

    /// ssh-keygen's own files: a protected key loads, with the password asked once,
    /// as the same key as its unprotected copy, for each cipher veil reads; a wrong
    /// password says so; a cipher veil cannot read fails before any password is asked.
    #[test]
    fn protected_openssh_keys_load_with_their_passphrase() {
        let Some(_) = std::env::var_os("PATH")
            .and_then(|p| std::env::split_paths(&p).find(|d| d.join("ssh-keygen").is_file()))
        else {
            eprintln!("SKIP: ssh-keygen is not installed (openssh-client)");
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let keygen = |args: &[&str]| {
            let o = std::process::Command::new("ssh-keygen")
                .args(args)
                .output()
                .unwrap();
            assert!(o.status.success(), "ssh-keygen {args:?}: {o:?}");
        };
        let plain = dir.path().join("plain");
        let p = plain.to_str().unwrap();
        keygen(&["-q", "-t", "rsa", "-b", "1024", "-N", "", "-f", p]);
        let want = load_private_key(&std::fs::read(&plain).unwrap(), &no_pw)
            .unwrap()
            .key;
        for cipher in ["aes256-ctr", "aes128-ctr", "aes192-cbc", "aes256-cbc"] {
            let k = dir.path().join(cipher);
            std::fs::copy(&plain, &k).unwrap();
            let k = k.to_str().unwrap();
            // Few rounds: the test is about the format, not the cost.
            keygen(&[
                "-q", "-p", "-P", "", "-N", "sshpw", "-a", "2", "-Z", cipher, "-f", k,
            ]);
            let data = std::fs::read(k).unwrap();
            let asked = std::cell::Cell::new(0);
            let pw = |s: &'static str| {
                asked.set(asked.get() + 1);
                Ok(Zeroizing::new(s.to_string()))
            };
            let got = load_private_key(&data, &|| pw("sshpw")).unwrap().key;
            assert_eq!(got, want, "{cipher}");
            assert_eq!(asked.get(), 1, "{cipher}");
            let err = load_private_key(&data, &|| pw("not it"))
                .unwrap_err()
                .to_string();
            assert_eq!(
                err, "cannot decrypt the private key: wrong password?",
                "{cipher}"
            );
            let err = load_private_key(&data, &|| pw("")).unwrap_err().to_string();
            assert_eq!(
                err, "cannot decrypt the private key: wrong password?",
                "{cipher}"
            );
        }
        let k = dir.path().join("gcm");
        std::fs::copy(&plain, &k).unwrap();
        let k = k.to_str().unwrap();
        keygen(&[
            "-q",
            "-p",
            "-P",
            "",
            "-N",
            "sshpw",
            "-a",
            "2",
            "-Z",
            "aes256-gcm@openssh.com",
            "-f",
            k,
        ]);
        let err = load_private_key(&std::fs::read(k).unwrap(), &no_pw)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"aes256-gcm@openssh.com\"") && err.contains("ssh-keygen -p"),
            "{err}"
        );
    }

    /// Hostile bcrypt parameters are refused before any password is asked.
    #[test]
    fn protected_openssh_key_limits() {
        fn string(v: &mut Vec<u8>, s: &[u8]) {
            v.extend_from_slice(&(s.len() as u32).to_be_bytes());
            v.extend_from_slice(s);
        }
        for (rounds, salt, section) in [
            (0u32, &b"salt"[..], 16usize),
            (u32::MAX, b"salt", 16),
            (16, b"", 16),
            (16, b"salt", 15),
            (16, b"salt", 0),
        ] {
            let mut opts = Vec::new();
            string(&mut opts, salt);
            opts.extend_from_slice(&rounds.to_be_bytes());
            let mut body = b"openssh-key-v1\0".to_vec();
            string(&mut body, b"aes256-ctr");
            string(&mut body, b"bcrypt");
            string(&mut body, &opts);
            body.extend_from_slice(&1u32.to_be_bytes());
            string(&mut body, b"public");
            string(&mut body, &vec![0u8; section]);
            let text = pem::encode("OPENSSH PRIVATE KEY", &body);
            let err = load_private_key(&text, &no_pw).unwrap_err().to_string();
            assert!(
                err.contains("OpenSSH private key"),
                "{rounds} {salt:?} {section}: {err}"
            );
        }
    }
}
