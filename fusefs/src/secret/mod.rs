//! Memory for secrets and the secret types the encrypted formats share: guarded
//! mappings ([`SecretBytes`], [`SecretBox`]: out of core dumps, locked where allowed,
//! wiped on fork and on drop), the stack scrub after key handling ([`scrubbed`]),
//! [`Passphrase`], and the OS random source. Below `luks2` and `gocryptfs`, which
//! both keep their keys here.

mod guarded;
mod passphrase;

pub use guarded::{SecretBox, SecretBytes};
pub(crate) use guarded::{scrub_stack, scrubbed};
pub use passphrase::Passphrase;

/// Fills `buf` from the OS CSPRNG.
pub(crate) fn fill_random(buf: &mut [u8]) -> Result<(), getrandom::Error> {
    getrandom::fill(buf)
}
