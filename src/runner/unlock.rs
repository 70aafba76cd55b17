//! The root the launcher mounts: a plain image's as it is, an encrypted image's once
//! unlocked with the user's key.

#![forbid(unsafe_code)]

use super::RunRequest;
use super::error::{Result, RunnerError};
use crate::crypt::source::{self, KeySource};
use crate::image::{self, Encrypted, Image, ImageError};
use crate::launch::{KernelCrypt, RootSource};

/// For an encrypted image, unlocks it with the key the user gave. Every key error
/// surfaces here, before any mount exists. Secrets given in the environment leave it
/// (and the launcher's /proc/PID/environ) whether or not they were used.
pub fn root_source(req: &RunRequest, image: Image) -> Result<RootSource> {
    let key = source::select_from_env(&req.keys);
    let root = match image {
        Image::Plain(root) => {
            if req.require_encrypted {
                return Err(RunnerError::NotEncrypted(req.image.clone()));
            }
            // A key flag for a plain image is probably a mistake worth a word; the
            // environment variables may be set for other images, so they stay quiet.
            if req.keys.any()
                && let Some(k) = &key
            {
                crate::say_warn!(
                    "WARNING: {}: the image is not encrypted; ignoring {}",
                    req.image,
                    k.describe()
                );
            }
            root.into()
        }
        Image::Encrypted(enc) => {
            let Some(key) = key else {
                let kind = if enc.message().is_some() {
                    "for an RSA key"
                } else {
                    "with a passphrase"
                };
                return Err(RunnerError::NoKey {
                    name: req.image.clone(),
                    kind,
                });
            };
            unlock(req, *enc, &key)?
        }
    };
    crate::crypt::environ::scrub();
    Ok(root)
}

fn unlock(req: &RunRequest, enc: Encrypted, key: &KeySource) -> Result<RootSource> {
    // Key material is about to enter this process: it enters its user namespace
    // first (writing id maps needs a dumpable process) and is non-dumpable from then on.
    crate::support::userns::enter_before_secrets(req.options.fakeroot)?;
    let pass = key.for_run(enc.message()).map_err(|err| RunnerError::Key {
        name: req.image.clone(),
        err,
    })?;
    crate::support::diag::debug_time("key material read");
    let unlocked = match enc.unlock(&pass, &image::kdf::unlock_options()) {
        Ok(u) => u,
        // Say which source the failed key came from, and when a passphrase was given
        // for an image made for an RSA key, what it needs instead.
        Err(ImageError::WrongKey {
            name,
            for_rsa,
            gocryptfs,
        }) if !key.is_pem() => {
            let key = key.describe();
            return Err(if for_rsa {
                RunnerError::PassphraseForRsa {
                    name,
                    key,
                    gocryptfs,
                }
            } else {
                RunnerError::WrongPassphrase {
                    name,
                    key,
                    gocryptfs,
                }
            });
        }
        Err(e) => return Err(e.into()),
    };
    crate::support::diag::debug_time("image unlocked");
    let image::Root::Squashfs { fs, .. } = unlocked.root else {
        return Err(RunnerError::EncryptedDirectory(req.image.clone()));
    };
    // Only real root can hand the decryption to dm-crypt: otherwise the second copy
    // of the volume key (for its table) goes now.
    let crypt = unlocked
        .mapping
        .filter(|_| crate::support::userns::real_root())
        .map(|mapping| KernelCrypt {
            volume: unlocked.volume,
            mapping,
        });
    Ok(RootSource::Squashfs {
        fs,
        region: None,
        crypt,
    })
}
