//! Secrets given in environment variables (`*_ENCRYPTION_PASSPHRASE`,
//! `*_ENCRYPTION_PEM_DATA`): read once into guarded memory, then removed from this
//! process's environment.
//!
//! Removing a variable (`unsetenv`) only drops its pointer from `environ`: the text
//! stays where the kernel put it at `execve`, on the initial stack, and that area is
//! what `/proc/PID/environ` shows for as long as the process lives (a launcher lives
//! as long as its container). So the value is first overwritten in place with NUL
//! bytes: `/proc/PID/environ` then shows the variable's name followed by empty
//! entries, never its value. Only the names below are touched, never a path such as
//! `*_ENCRYPTION_PEM_PATH`.

use std::ffi::CString;

use veil_fusefs::luks2::SecretBytes;
use zeroize::Zeroizing;

use super::source::ENV_PREFIXES;

/// The suffixes of the variables whose value is a secret: encryption keys, and the
/// password of a registry a run pulls its image from.
const SECRET_SUFFIXES: [&str; 4] = [
    "ENCRYPTION_PASSPHRASE",
    "ENCRYPTION_PEM_DATA",
    "DOCKER_PASSWORD",
    "PEM_PASSWORD",
];

/// Whether `var` is set to something non-empty, without leaving a copy of its value.
pub fn is_set(var: &str) -> bool {
    use std::os::unix::ffi::OsStringExt;
    std::env::var_os(var)
        .map(|v| Zeroizing::new(v.into_vec()))
        .is_some_and(|v| !v.is_empty())
}

/// The value of `var` in guarded memory (`None` when unset or empty); every secret
/// variable is then removed from the environment ([`scrub`]).
pub fn take(var: &str) -> Option<SecretBytes> {
    use std::os::unix::ffi::OsStringExt;
    // var_os copies the value into a vector of its exact size (no growth), which
    // Zeroizing wipes once it is copied into guarded memory.
    let value = std::env::var_os(var).map(|v| Zeroizing::new(v.into_vec()));
    let secret = value
        .filter(|v| !v.is_empty())
        .map(|v| SecretBytes::from_slice(&v));
    scrub();
    secret
}

/// The names of the secret variables, for a child process's environment to leave out.
pub fn secret_names() -> impl Iterator<Item = String> {
    ENV_PREFIXES
        .iter()
        .flat_map(|p| SECRET_SUFFIXES.iter().map(move |s| format!("{p}{s}")))
}

/// Overwrites the values of the secret variables in place and removes them from the
/// environment.
///
/// Call it only while no other thread reads or changes the environment (the CLI's
/// main thread, before the KDF or the launcher start any): the value is overwritten
/// through the C library's pointer, outside std's environment lock.
pub fn scrub() {
    // The key password is read later, when a protected key turns up: kept first.
    keep_key_password();
    for name in secret_names() {
        scrub_one(&name);
    }
}

/// The variable a protected private key's password may come from.
pub const KEY_PASSWORD_VAR: &str = "VEIL_PEM_PASSWORD";

/// `VEIL_PEM_PASSWORD`'s value, moved into guarded memory by the first [`scrub`] or
/// [`key_password`], whichever comes first (a scrub for another secret must not
/// lose it).
static KEY_PASSWORD: std::sync::Mutex<Option<Option<SecretBytes>>> = std::sync::Mutex::new(None);

fn keep_key_password() {
    let Ok(mut kept) = KEY_PASSWORD.lock() else {
        return;
    };
    if kept.is_none() {
        *kept = Some(take_one(KEY_PASSWORD_VAR));
    }
}

/// A copy of `VEIL_PEM_PASSWORD`'s value (`None` when unset or empty); the
/// variable itself is gone from the environment from the first call on.
pub fn key_password() -> Option<SecretBytes> {
    keep_key_password();
    let kept = KEY_PASSWORD.lock().ok()?;
    kept.as_ref()?
        .as_ref()
        .map(|s| SecretBytes::from_slice(s.as_slice()))
}

/// The value of `var` in guarded memory (`None` when unset or empty); `var` alone is
/// then overwritten and removed, the other secret variables are left for their own
/// readers. Same threading rule as [`scrub`].
pub fn take_one(var: &str) -> Option<SecretBytes> {
    use std::os::unix::ffi::OsStringExt;
    let value = std::env::var_os(var).map(|v| Zeroizing::new(v.into_vec()));
    let secret = value
        .filter(|v| !v.is_empty())
        .map(|v| SecretBytes::from_slice(&v));
    scrub_one(var);
    secret
}

/// Overwrites `name`'s value in place and removes it (see [`scrub`]).
fn scrub_one(name: &str) {
    {
        let Ok(c) = CString::new(name) else {
            return;
        };
        // SAFETY: getenv returns NULL or a pointer to the NUL-terminated value of
        // a live environment entry; nothing else changes the environment now (see
        // above), so the bytes up to the NUL are ours to overwrite. Strings from
        // execve lie on the writable initial stack; ones set later by setenv are
        // heap copies, writable too.
        unsafe {
            let p = libc::getenv(c.as_ptr());
            if !p.is_null() {
                let len = libc::strlen(p);
                let value = std::slice::from_raw_parts_mut(p.cast::<u8>(), len);
                zeroize::Zeroize::zeroize(value);
            }
            // SAFETY: as above, no other thread uses the environment.
            std::env::remove_var(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One test for everything that touches the process environment, so that no two
    /// run at once.
    #[test]
    fn secret_variables_are_taken_and_removed() {
        // (That the value is gone from /proc/PID/environ as well is checked from
        // outside a running launcher, in tests/run_encrypted.rs.)
        let name = "SINGULARITY_ENCRYPTION_PEM_DATA";
        // SAFETY: the only test of this binary that changes the environment.
        unsafe { std::env::set_var(name, "hunter2-secret") };
        assert!(is_set(name));
        let got = take(name).unwrap();
        assert_eq!(got.as_slice(), b"hunter2-secret");
        assert!(std::env::var_os(name).is_none());
        assert!(!is_set(name));
        assert!(take(name).is_none());
    }
}
