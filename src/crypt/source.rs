//! Which key the user gave, with the peers' precedence:
//! `--pem-path` > `--passphrase` (prompt) > `*_ENCRYPTION_PEM_PATH` >
//! `*_ENCRYPTION_PEM_DATA` > `*_ENCRYPTION_PASSPHRASE`, each variable looked up
//! with the `VEIL_`, `APPTAINER_` and `SINGULARITY_` prefixes in that order.
//! veil's batch-friendly flags slot in next to their kind: `--pem-fd` right after
//! `--pem-path`, `--passphrase-file` and `--passphrase-fd` right after `--passphrase`.
//!
//! Choosing a source ([`select`]) reads nothing: an image that turns out not to be
//! encrypted never triggers a prompt. Reading happens in [`KeySource::for_run`] /
//! [`select_for_build`].

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use veil_fusefs::luks2::{Passphrase, SecretBytes};
use zeroize::Zeroizing;

use super::environ;
use super::error::{CryptError, Result};
use super::key::{self, PrivateKey, PublicKey};
use super::message;
use super::tty;

/// The key-related flags of `run`/`exec`/`shell`/`test` and `build`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct KeyFlags {
    pub pem_path: Option<PathBuf>,
    pub pem_fd: Option<i32>,
    /// `--passphrase`: ask on the terminal.
    pub passphrase: bool,
    pub passphrase_file: Option<PathBuf>,
    pub passphrase_fd: Option<i32>,
}

impl KeyFlags {
    /// True when any key flag was given (for build: these imply `--encrypt`).
    pub fn any(&self) -> bool {
        self.pem_path.is_some()
            || self.pem_fd.is_some()
            || self.passphrase
            || self.passphrase_file.is_some()
            || self.passphrase_fd.is_some()
    }
}

/// Environment variable prefixes, in lookup order.
pub const ENV_PREFIXES: [&str; 3] = ["VEIL_", "APPTAINER_", "SINGULARITY_"];

/// Where the key comes from. Holds no secret itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    PemPath(PathBuf),
    PemFd(i32),
    PassphrasePrompt,
    PassphraseFile(PathBuf),
    PassphraseFd(i32),
    /// `*_ENCRYPTION_PEM_PATH`: the variable's name and its value.
    PemPathEnv(String, PathBuf),
    /// `*_ENCRYPTION_PEM_DATA`: the variable's name (the value is read later).
    PemDataEnv(String),
    /// `*_ENCRYPTION_PASSPHRASE`: the variable's name.
    PassphraseEnv(String),
}

impl KeySource {
    /// How to name the source in a message (never its value).
    pub fn describe(&self) -> String {
        match self {
            KeySource::PemPath(p) => format!("--pem-path {}", p.display()),
            KeySource::PemFd(fd) => format!("--pem-fd {fd}"),
            KeySource::PassphrasePrompt => "--passphrase".into(),
            KeySource::PassphraseFile(p) => format!("--passphrase-file {}", p.display()),
            KeySource::PassphraseFd(fd) => format!("--passphrase-fd {fd}"),
            KeySource::PemPathEnv(var, p) => format!("{var}={}", p.display()),
            KeySource::PemDataEnv(var) | KeySource::PassphraseEnv(var) => var.clone(),
        }
    }

    /// True for an RSA private/public key source, false for a passphrase.
    pub fn is_pem(&self) -> bool {
        matches!(
            self,
            KeySource::PemPath(_)
                | KeySource::PemFd(_)
                | KeySource::PemPathEnv(..)
                | KeySource::PemDataEnv(_)
        )
    }

    fn read_pem(&self) -> Result<SecretBytes> {
        match self {
            KeySource::PemPath(p) | KeySource::PemPathEnv(_, p) => {
                read_file(p, "key file", MAX_KEY_FILE)
            }
            KeySource::PemFd(fd) => read_fd(*fd, "--pem-fd", MAX_KEY_FILE),
            KeySource::PemDataEnv(var) => {
                environ::take(var).ok_or_else(|| CryptError::bad_key(format!("{var} is empty")))
            }
            _ => Err(CryptError::bad_key("not a key source")),
        }
    }

    /// Reads the key for unlocking an image: the private key, or the passphrase. A
    /// descriptor is read (and closed) here, once, however many crypto messages or
    /// images the key is then tried on.
    pub fn read_for_run(&self) -> Result<RunKey> {
        if self.is_pem() {
            let pem = self.read_pem()?;
            let what = self.describe();
            let key = key::load_private_key(pem.as_slice(), &|| key_password(&what))
                .map_err(|e| CryptError::BadKey(format!("invalid private key ({what}): {e}")))?;
            return Ok(RunKey::Private(Box::new(key)));
        }
        Ok(RunKey::Passphrase(
            self.read_passphrase("Enter encryption passphrase: ", false)?,
        ))
    }

    /// The bytes that unlock the image's LUKS2 keyslot. `message` is the
    /// image's crypto message, if it has one (used only for a PEM source).
    pub fn for_run(&self, message: Option<&[u8]>) -> Result<Passphrase> {
        self.read_for_run()?.passphrase_for(message)
    }

    fn read_passphrase(&self, prompt: &str, confirm: bool) -> Result<Passphrase> {
        let bytes = match self {
            KeySource::PassphrasePrompt => prompt_tty(prompt, confirm)?,
            KeySource::PassphraseFile(p) => {
                strip_newline(read_file(p, "passphrase file", MAX_PASSPHRASE)?)
            }
            KeySource::PassphraseFd(fd) => {
                strip_newline(read_fd(*fd, "--passphrase-fd", MAX_PASSPHRASE)?)
            }
            KeySource::PassphraseEnv(var) => {
                environ::take(var).unwrap_or_else(|| SecretBytes::with_capacity(0))
            }
            _ => return Err(CryptError::bad_key("not a passphrase source")),
        };
        if bytes.is_empty() {
            return Err(CryptError::NoPassphrase(format!(
                "{}: the passphrase is empty",
                self.describe()
            )));
        }
        Ok(Passphrase::from_secret(bytes))
    }
}

/// Key material read for unlocking images.
pub enum RunKey {
    /// An RSA private key: it unwraps the secret in an image's crypto message.
    Private(Box<PrivateKey>),
    Passphrase(Passphrase),
}

impl RunKey {
    /// The bytes that unlock a keyslot of an image whose crypto message (PEM mode)
    /// is `message`.
    pub fn passphrase_for(&self, message: Option<&[u8]>) -> Result<Passphrase> {
        match self {
            RunKey::Passphrase(p) => Ok(p.duplicate()),
            RunKey::Private(key) => {
                let msg = message.ok_or_else(|| {
                    CryptError::BadKey(
                        "the image has no RSA-encrypted key (crypto message): it was encrypted with a passphrase, so use --passphrase"
                            .into(),
                    )
                })?;
                let secret = message::unwrap_secret(key, msg)?;
                Ok(Passphrase::from_slice(&secret))
            }
        }
    }
}

/// The chosen key source, or `None` when the user gave none. `env` looks up a
/// variable (the process environment in real use); empty values count as unset.
pub fn select(flags: &KeyFlags, env: &dyn Fn(&str) -> Option<String>) -> Option<KeySource> {
    if let Some(p) = &flags.pem_path {
        return Some(KeySource::PemPath(p.clone()));
    }
    if let Some(fd) = flags.pem_fd {
        return Some(KeySource::PemFd(fd));
    }
    if flags.passphrase {
        return Some(KeySource::PassphrasePrompt);
    }
    if let Some(p) = &flags.passphrase_file {
        return Some(KeySource::PassphraseFile(p.clone()));
    }
    if let Some(fd) = flags.passphrase_fd {
        return Some(KeySource::PassphraseFd(fd));
    }
    let var = |suffix: &str| {
        ENV_PREFIXES.iter().find_map(|p| {
            let name = format!("{p}{suffix}");
            env(&name).filter(|v| !v.is_empty()).map(|v| (name, v))
        })
    };
    if let Some((name, v)) = var("ENCRYPTION_PEM_PATH") {
        return Some(KeySource::PemPathEnv(name, PathBuf::from(v)));
    }
    if let Some((name, _)) = var("ENCRYPTION_PEM_DATA") {
        return Some(KeySource::PemDataEnv(name));
    }
    if let Some((name, _)) = var("ENCRYPTION_PASSPHRASE") {
        return Some(KeySource::PassphraseEnv(name));
    }
    None
}

/// [`select`] over the process environment. Only a key file's path is copied out of
/// it here: of the secret variables (key data, passphrase) only their presence
/// matters, and their values are read later into memory that is wiped.
pub fn select_from_env(flags: &KeyFlags) -> Option<KeySource> {
    select(flags, &|k| {
        if k.ends_with("ENCRYPTION_PEM_PATH") {
            std::env::var(k).ok()
        } else {
            environ::is_set(k).then(|| "set".to_string())
        }
    })
}

/// What the message for an encrypted image without a key lists.
pub const HOW_TO_GIVE_A_KEY: &str = "give the key with --pem-path PRIVATE.pem or --passphrase (also --pem-fd, --passphrase-file, --passphrase-fd, or VEIL_ENCRYPTION_PEM_PATH, VEIL_ENCRYPTION_PEM_DATA, VEIL_ENCRYPTION_PASSPHRASE; APPTAINER_ and SINGULARITY_ prefixes work too)";

/// Key material for encrypting a new image.
pub enum BuildKey {
    Passphrase(Passphrase),
    Recipient(PublicKey),
}

/// The key for `build`. Flags imply encryption; environment variables alone do not
/// (a warning says so, as the peers do) unless `encrypt` is set. A prompted
/// passphrase is asked twice; an empty one is refused.
pub fn select_for_build(flags: &KeyFlags, encrypt: bool) -> Result<Option<BuildKey>> {
    let Some(src) = select_from_env(flags) else {
        if encrypt {
            return Err(CryptError::NoPassphrase(
                "--encrypt needs a key: --pem-path PUBLIC.pem or --passphrase (or --passphrase-file, --pem-fd, --passphrase-fd, or the VEIL_/APPTAINER_/SINGULARITY_ENCRYPTION_PEM_PATH, _PEM_DATA, _PASSPHRASE variables)"
                    .into(),
            ));
        }
        return Ok(None);
    };
    if !flags.any() && !encrypt {
        crate::say_warn!(
            "WARNING: encryption related environment variables found ({}), but --encrypt was not specified: NOT encrypting the image",
            src.describe()
        );
        return Ok(None);
    }
    if src.is_pem() {
        let pem = src.read_pem()?;
        let key = key::load_public_key(pem.as_slice()).map_err(|e| {
            CryptError::BadKey(format!(
                "invalid encryption public key ({}): {e}",
                src.describe()
            ))
        })?;
        return Ok(Some(BuildKey::Recipient(key)));
    }
    Ok(Some(BuildKey::Passphrase(
        src.read_passphrase("Enter encryption passphrase: ", true)?,
    )))
}

/// Key files are small; refuse to slurp a device or a huge file by mistake.
const MAX_KEY_FILE: usize = 1 << 20;
/// cryptsetup's own cap on key files.
const MAX_PASSPHRASE: usize = 8 << 20;

/// Reads all of `file` into guarded memory, in place: a regular file into a buffer
/// of its size (from fstat), anything else (a pipe, a terminal) into one of `limit`
/// bytes, of which only what is written is ever touched. Nothing is reallocated, so
/// no copy is left behind unwiped. More than `limit` bytes is an error.
fn read_secret(file: &File, limit: usize, what: &str) -> Result<SecretBytes> {
    let io = |err| CryptError::Io {
        what: what.to_string(),
        err,
    };
    let too_big = || {
        CryptError::bad_key(format!(
            "{what} is larger than {limit} bytes; it is not a key"
        ))
    };
    let meta = file.metadata().map_err(io)?;
    // One byte more than expected, to see the end (or a file that grew).
    let want = if meta.is_file() {
        let size = usize::try_from(meta.len()).map_err(|_| too_big())?;
        if size > limit {
            return Err(too_big());
        }
        size + 1
    } else {
        limit + 1
    };
    let mut buf = SecretBytes::with_capacity(want);
    loop {
        let len = buf.len();
        if len == want {
            break;
        }
        match (&*file).read(&mut buf.spare()[..want - len]) {
            Ok(0) => break,
            Ok(n) => buf.set_len(len + n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io(e)),
        }
    }
    if buf.len() == want {
        if buf.len() > limit {
            return Err(too_big());
        }
        return Err(CryptError::bad_key(format!(
            "{what} grew while it was read"
        )));
    }
    // A pipe's worst-case buffer is mostly untouched: keep a copy of the right size
    // (which can then be locked in memory); the big one is wiped as it goes.
    if buf.capacity() > 2 * buf.len().max(4096) {
        return Ok(SecretBytes::from_slice(buf.as_slice()));
    }
    Ok(buf)
}

fn read_file(p: &Path, kind: &str, limit: usize) -> Result<SecretBytes> {
    let what = format!("{kind} {}", p.display());
    let f = File::open(p).map_err(|err| CryptError::Io {
        what: what.clone(),
        err,
    })?;
    read_secret(&f, limit, &what)
}

/// Reads a descriptor the caller passed open (`--pem-fd 3 3<key.pem`, or a pipe),
/// and closes it at once, so that nothing started later (a container, a build's
/// scripts) inherits it. A standard descriptor (0-2) is left open on /dev/null
/// instead, so that the next file opened does not take its number.
fn read_fd(fd: i32, flag: &str, limit: usize) -> Result<SecretBytes> {
    use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
    let what = format!("{flag} {fd}");
    // Raw, not nix's fcntl: that takes a borrowed descriptor, which must be open,
    // and whether this number is open is what is being asked.
    // SAFETY: F_GETFD only reads the descriptor's flags; an invalid one is EBADF.
    if fd < 0 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(CryptError::Io {
            what: format!("{what} (is the descriptor open?)"),
            err: std::io::Error::last_os_error(),
        });
    }
    // SAFETY: the descriptor is open (checked above) and was handed to veil for this
    // one use: nothing else in the process reads or closes it.
    let file = unsafe { File::from_raw_fd(fd) };
    let read = read_secret(&file, limit, &what);
    if fd <= 2 {
        let mut own = OwnedFd::from(file);
        if let Ok(null) = File::open("/dev/null") {
            // Closes the secret's file; the number stays open, on /dev/null.
            let _ = nix::unistd::dup2(&null, &mut own);
        }
        let _ = own.into_raw_fd();
    } else {
        drop(file);
    }
    read
}

/// One trailing newline (LF or CRLF) is dropped, as `echo secret > file` adds it.
fn strip_newline(mut v: SecretBytes) -> SecretBytes {
    let mut n = v.len();
    if v.as_slice().last() == Some(&b'\n') {
        n -= 1;
        if n > 0 && v.as_slice()[n - 1] == b'\r' {
            n -= 1;
        }
    }
    v.truncate(n);
    v
}

fn prompt_tty(prompt: &str, confirm: bool) -> Result<SecretBytes> {
    let no_tty = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::Interrupted {
            return CryptError::Interrupted;
        }
        CryptError::NoPassphrase(format!(
            "--passphrase asks on a terminal, and there is none ({e}); use --passphrase-file, --passphrase-fd or VEIL_ENCRYPTION_PASSPHRASE"
        ))
    };
    let first = tty::read_secret_line(prompt).map_err(no_tty)?;
    if confirm {
        if first.is_empty() {
            return Err(CryptError::NoPassphrase(
                "cannot encrypt an image with an empty passphrase".into(),
            ));
        }
        let again = tty::read_secret_line("Retype encryption passphrase: ").map_err(no_tty)?;
        if again.as_slice() != first.as_slice() {
            return Err(CryptError::NoPassphrase(
                "the passphrases do not match".into(),
            ));
        }
    }
    Ok(first)
}

/// `--pem-password-file`: where a protected private key's password is read from.
/// A property of the whole invocation (like the terminal it is otherwise asked on),
/// set once by the command line before any key is read.
static KEY_PASSWORD_FILE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Sets `--pem-password-file` (the first call wins).
pub fn set_key_password_file(path: PathBuf) {
    let _ = KEY_PASSWORD_FILE.set(path);
}

/// A protected private key's password: `--pem-password-file`, else
/// `VEIL_PEM_PASSWORD`, else asked on the terminal.
fn key_password(what: &str) -> Result<Zeroizing<String>> {
    let bytes = if let Some(f) = KEY_PASSWORD_FILE.get() {
        Some(strip_newline(read_file(
            f,
            "password file",
            MAX_PASSPHRASE,
        )?))
    } else {
        environ::key_password()
    };
    match bytes {
        Some(b) => {
            let mut s = Zeroizing::new(String::with_capacity(b.len()));
            s.push_str(std::str::from_utf8(b.as_slice()).map_err(|_| {
                CryptError::bad_key("the private key's password is not UTF-8 text")
            })?);
            Ok(s)
        }
        None => prompt_key_password(what),
    }
}

fn prompt_key_password(what: &str) -> Result<Zeroizing<String>> {
    tty::read_secret_line(&format!("Enter the password of the private key ({what}): "))
        .map(|pw| {
            // A string of its exact size (no growth), wiped when dropped.
            let mut s = Zeroizing::new(String::with_capacity(pw.len()));
            s.push_str(&String::from_utf8_lossy(pw.as_slice()));
            s
        })
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::Interrupted {
                return CryptError::Interrupted;
            }
            CryptError::NoPassphrase(format!(
                "the private key is password-protected and there is no terminal to ask on ({e}); give the password with --pem-password-file or VEIL_PEM_PASSWORD"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn precedence() {
        let all_env = env_of(&[
            ("SINGULARITY_ENCRYPTION_PEM_PATH", "/s.pem"),
            ("APPTAINER_ENCRYPTION_PEM_PATH", "/a.pem"),
            ("VEIL_ENCRYPTION_PEM_DATA", "x"),
            ("APPTAINER_ENCRYPTION_PASSPHRASE", "p"),
        ]);
        // Every flag at once, then each taken away in turn: each source wins over
        // all of those after it, and every flag over every variable.
        let mut f = KeyFlags {
            pem_path: Some("/k.pem".into()),
            pem_fd: Some(7),
            passphrase: true,
            passphrase_file: Some("/pw".into()),
            passphrase_fd: Some(9),
        };
        assert_eq!(
            select(&f, &all_env),
            Some(KeySource::PemPath("/k.pem".into()))
        );
        f.pem_path = None;
        assert_eq!(select(&f, &all_env), Some(KeySource::PemFd(7)));
        f.pem_fd = None;
        assert_eq!(select(&f, &all_env), Some(KeySource::PassphrasePrompt));
        f.passphrase = false;
        assert_eq!(
            select(&f, &all_env),
            Some(KeySource::PassphraseFile("/pw".into()))
        );
        f.passphrase_file = None;
        assert_eq!(select(&f, &all_env), Some(KeySource::PassphraseFd(9)));
        f.passphrase_fd = None;
        assert_eq!(f, KeyFlags::default());
        let none = KeyFlags::default();
        assert_eq!(
            select(&none, &all_env),
            Some(KeySource::PemPathEnv(
                "APPTAINER_ENCRYPTION_PEM_PATH".into(),
                "/a.pem".into()
            ))
        );
        let data_over_pass = env_of(&[
            ("SINGULARITY_ENCRYPTION_PEM_DATA", "x"),
            ("VEIL_ENCRYPTION_PASSPHRASE", "p"),
        ]);
        assert_eq!(
            select(&none, &data_over_pass),
            Some(KeySource::PemDataEnv(
                "SINGULARITY_ENCRYPTION_PEM_DATA".into()
            ))
        );
        let empty_is_unset = env_of(&[
            ("VEIL_ENCRYPTION_PEM_PATH", ""),
            ("SINGULARITY_ENCRYPTION_PASSPHRASE", "p"),
        ]);
        assert_eq!(
            select(&none, &empty_is_unset),
            Some(KeySource::PassphraseEnv(
                "SINGULARITY_ENCRYPTION_PASSPHRASE".into()
            ))
        );
        assert_eq!(select(&none, &env_of(&[])), None);
    }

    #[test]
    fn newline_stripping() {
        let s = |b: &[u8]| {
            strip_newline(SecretBytes::from_slice(b))
                .as_slice()
                .to_vec()
        };
        assert_eq!(s(b"pw\n"), b"pw");
        assert_eq!(s(b"pw\r\n"), b"pw");
        assert_eq!(s(b"pw\n\n"), b"pw\n");
        assert_eq!(s(b"pw"), b"pw");
    }
}
