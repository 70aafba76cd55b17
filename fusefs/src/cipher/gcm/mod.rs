//! AES-256-GCM with 128-bit nonces (gocryptfs's content encryption), the
//! implementation chosen once per key: the single-pass VAES + VPCLMULQDQ kernel
//! of [`vaes`] where the CPU has AVX-512, VAES and VPCLMULQDQ, the `aes-gcm`
//! crate elsewhere. Both compute the same function (the tests hold the kernel to
//! the crate); the kernel is several times faster, which is what a gocryptfs
//! image's reads cost.
//!
//! A [`Aes256Gcm`] holds the expanded key (and the kernel's hash-key powers):
//! the caller keeps it in guarded memory, as gocryptfs's `ContentKey` does. It
//! has no `Clone`, and its `Debug` prints nothing of the key.

use aes_gcm::aead::consts::U16;
use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::aes::Aes256;
use aes_gcm::{AesGcm, Nonce, Tag};

#[cfg(test)]
mod tests;
#[cfg(target_arch = "x86_64")]
mod vaes;

/// The longest message GCM allows (NIST SP 800-38D §5.2.1.1: 2³⁹ − 256 bits).
pub const MAX_LEN: u64 = (1 << 36) - 32;

/// Why an AES-GCM call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GcmError {
    /// The tag does not match: the data, the nonce, the associated data or the
    /// tag were changed, or the key is another. No plaintext is returned.
    #[error("authentication failed")]
    Auth,
    /// The message or buffers do not fit GCM's limits or each other.
    #[error("message of {0} bytes: too long for GCM, or not its buffer's length")]
    Length(u64),
}

/// AES-256-GCM with 16-byte nonces and tags.
pub struct Aes256Gcm(Imp);

/// The two implementations; one per key, so the size difference does not matter.
#[allow(clippy::large_enum_variant)]
enum Imp {
    #[cfg(target_arch = "x86_64")]
    Vaes(vaes::Keys),
    Crate(AesGcm<Aes256, U16>),
}

impl std::fmt::Debug for Aes256Gcm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Aes256Gcm({}, key redacted)", self.implementation())
    }
}

/// Whether this CPU runs the VAES kernel (asked once).
#[cfg(target_arch = "x86_64")]
fn has_vaes() -> bool {
    use std::arch::is_x86_feature_detected as has;
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        has!("avx512f")
            && has!("avx512bw")
            && has!("avx512vl")
            && has!("vaes")
            && has!("vpclmulqdq")
            && has!("aes")
            && has!("pclmulqdq")
            && has!("ssse3")
    })
}

impl Aes256Gcm {
    /// The fastest implementation this CPU runs, with `key`.
    pub fn new(key: &[u8; 32]) -> Self {
        #[cfg(target_arch = "x86_64")]
        if has_vaes() {
            // SAFETY: the CPU reported every feature `Keys::new` needs.
            return Aes256Gcm(Imp::Vaes(unsafe { vaes::Keys::new(key) }));
        }
        Self::portable(key)
    }

    /// The `aes-gcm` crate, whatever the CPU runs.
    pub fn portable(key: &[u8; 32]) -> Self {
        Aes256Gcm(Imp::Crate(AesGcm::new(key.into())))
    }

    /// Which implementation this key runs: "vaes" or "aes-gcm crate".
    pub fn implementation(&self) -> &'static str {
        match self.0 {
            #[cfg(target_arch = "x86_64")]
            Imp::Vaes(_) => "vaes",
            Imp::Crate(_) => "aes-gcm crate",
        }
    }

    /// Encrypts `buf` in place; returns the tag.
    pub fn encrypt_in_place(
        &self,
        nonce: &[u8; 16],
        aad: &[u8],
        buf: &mut [u8],
    ) -> Result<[u8; 16], GcmError> {
        check_len(buf.len())?;
        match &self.0 {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Imp::Vaes` is only made after the CPU reported every
            // feature the kernel is compiled with; the source is `buf` itself.
            Imp::Vaes(k) => Ok(unsafe { vaes::crypt::<true>(k, nonce, aad, buf.as_ptr(), buf) }),
            Imp::Crate(g) => g
                .encrypt_inout_detached(&Nonce::<U16>::from(*nonce), aad, buf.into())
                .map(Into::into)
                .map_err(|_| GcmError::Length(buf.len() as u64)),
        }
    }

    /// Decrypts `ct` into `out` (as long) if `tag` authenticates it with `nonce`
    /// and `aad`. On failure `out` holds no plaintext (it is zeroed, or left as
    /// it was).
    pub fn decrypt(
        &self,
        nonce: &[u8; 16],
        aad: &[u8],
        ct: &[u8],
        out: &mut [u8],
        tag: &[u8; 16],
    ) -> Result<(), GcmError> {
        if ct.len() != out.len() {
            return Err(GcmError::Length(ct.len() as u64));
        }
        check_len(ct.len())?;
        match &self.0 {
            #[cfg(target_arch = "x86_64")]
            Imp::Vaes(k) => {
                // SAFETY: as in `encrypt_in_place`; `ct` is as long as `out`,
                // and a shared slice cannot overlap the exclusive `out`.
                let want = unsafe { vaes::crypt::<false>(k, nonce, aad, ct.as_ptr(), out) };
                verify(&want, tag, out)
            }
            Imp::Crate(g) => {
                let buf = aes_gcm::aead::inout::InOutBuf::new(ct, out)
                    .map_err(|_| GcmError::Length(ct.len() as u64))?;
                g.decrypt_inout_detached(&Nonce::<U16>::from(*nonce), aad, buf, &Tag::from(*tag))
                    .map_err(|_| GcmError::Auth)
            }
        }
    }

    /// As [`Aes256Gcm::decrypt`], from a file mapping: each byte of `ct` is read
    /// once, so what is authenticated is what is decrypted, even should the file
    /// change meanwhile.
    pub fn decrypt_mapped(
        &self,
        nonce: &[u8; 16],
        aad: &[u8],
        ct: crate::memory::mapping::MappedBytes<'_>,
        out: &mut [u8],
        tag: &[u8; 16],
    ) -> Result<(), GcmError> {
        if ct.len() != out.len() {
            return Err(GcmError::Length(ct.len() as u64));
        }
        check_len(ct.len())?;
        match &self.0 {
            #[cfg(target_arch = "x86_64")]
            Imp::Vaes(k) => {
                // SAFETY: the CPU features as in `encrypt_in_place`; `ct` is valid
                // for reads of its length while it lives (MappedBytes' invariant),
                // as long as `out`, and mapped file memory cannot overlap a Rust
                // buffer.
                let want = unsafe { vaes::crypt::<false>(k, nonce, aad, ct.as_ptr(), out) };
                verify(&want, tag, out)
            }
            // One copy, then the bytes copied are the ones authenticated.
            Imp::Crate(_) => {
                ct.copy_to(out);
                self.decrypt_in_place(nonce, aad, out, tag)
            }
        }
    }

    /// Decrypts `buf` in place (see [`Aes256Gcm::decrypt`]).
    pub fn decrypt_in_place(
        &self,
        nonce: &[u8; 16],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; 16],
    ) -> Result<(), GcmError> {
        check_len(buf.len())?;
        match &self.0 {
            #[cfg(target_arch = "x86_64")]
            Imp::Vaes(k) => {
                // SAFETY: as in `encrypt_in_place`.
                let want = unsafe { vaes::crypt::<false>(k, nonce, aad, buf.as_ptr(), buf) };
                verify(&want, tag, buf)
            }
            Imp::Crate(g) => g
                .decrypt_inout_detached(
                    &Nonce::<U16>::from(*nonce),
                    aad,
                    buf.into(),
                    &Tag::from(*tag),
                )
                .map_err(|_| GcmError::Auth),
        }
    }
}

/// GCM's limit on the message (that on the associated data, 2⁶¹ bytes, is
/// beyond any slice).
fn check_len(len: usize) -> Result<(), GcmError> {
    if len as u64 > MAX_LEN {
        return Err(GcmError::Length(len as u64));
    }
    Ok(())
}

/// Compares the tags in constant time; on a mismatch, wipes the plaintext the
/// kernel already wrote.
#[cfg(target_arch = "x86_64")]
fn verify(want: &[u8; 16], got: &[u8; 16], out: &mut [u8]) -> Result<(), GcmError> {
    use subtle::ConstantTimeEq;
    if bool::from(want.ct_eq(got)) {
        Ok(())
    } else {
        zeroize::Zeroize::zeroize(out);
        Err(GcmError::Auth)
    }
}
