//! OpenPGP signing and verification of SIF images, compatible with SingularityCE and
//! Apptainer (spec/sif.md §7–§13), plus keyrings and the run-time signature policy.
//!
//! - [`metadata`]: the integrity streams and the signed metadata JSON
//! - [`pgp`]: cleartext signatures through sequoia-openpgp
//! - [`signer`]: adding signatures to an image
//! - [`verify`]: the reference verifier's rules; [`legacy`] for `SIFHASH` signatures,
//!   [`dsse`] for DSSE envelopes (PEM keys)
//! - [`keyring`]: key files and the `~/.veil/keys` rings (peers' rings read too)
//! - [`passphrase`]: where secret-key passphrases come from
//! - [`policy`]: the run-time policy (trusted fingerprints) and the build-time
//!   `Fingerprints:` check

pub mod dsse;
mod error;
pub mod keyring;
pub mod legacy;
pub mod metadata;
pub mod passphrase;
pub mod pgp;
pub mod policy;
pub mod signer;
pub mod verify;

pub use error::{Result, SignError};
pub use policy::check_fingerprints;
pub use signer::{Selection, Signed, sign_image};
pub use verify::{Outcome, SignatureResult, VerifyOptions, verify};
