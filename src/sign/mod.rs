//! OpenPGP signing and verification of SIF images, compatible with SingularityCE and
//! Apptainer (spec/sif.md §7–§13), plus keyrings and the run-time signature policy.
//!
//! - [`metadata`]: the integrity streams and the signed metadata JSON
//! - [`pgp`]: cleartext signatures through sequoia-openpgp
//! - [`signer`]: adding signatures to an image
//! - [`verify`]: the reference verifier's rules; [`legacy`] for `SIFHASH` signatures,
//!   [`dsse`] for DSSE envelopes (PEM keys)
//! - [`keyring`]: key files and the `~/.veil/keys` rings (peers' rings read too)
//! - [`keys`]: key management behind `veil key`
//! - [`passphrase`]: where secret-key passphrases come from
//! - [`policy`]: the run-time policy (trusted fingerprints) and the build-time
//!   `Fingerprints:` check

pub mod dsse;
mod error;
pub mod keyring;
pub mod keys;
pub mod legacy;
pub mod metadata;
pub mod passphrase;
pub mod pgp;
pub mod policy;
pub mod signer;
pub mod verify;

pub use error::{PassphraseOrigin, Result, SignError};
pub use policy::check_fingerprints;
pub use signer::{Selection, Signed, sign_image};
pub use verify::{Outcome, SignatureResult, VerifyOptions, verify};

/// Fuzzing entry point: arbitrary bytes as a signature object, a policy file and a SIF
/// to verify. Shared by the cargo-fuzz target and the mutation test.
#[doc(hidden)]
pub fn fuzz_one(data: &[u8]) {
    let _ = pgp::check_cleartext(data, &[]);
    let _ = dsse::is_envelope(data);
    let _ = serde_json::from_slice::<metadata::ImageMetadata>(data);
    let _ = policy::Policy::parse(&String::from_utf8_lossy(data), "fuzz");
    if let Ok(sif) = crate::sif::Sif::open(data) {
        for (legacy, legacy_all) in [(false, false), (true, false), (true, true)] {
            let opts = VerifyOptions {
                legacy,
                legacy_all,
                ..Default::default()
            };
            let _ = verify(&sif, &[], &opts);
        }
    }
}
