//! Where a secret-key passphrase comes from: a file, an environment variable, or a
//! prompt on the terminal without echo. The value lives in a zeroizing buffer and has no
//! Debug or Display, so it cannot end up in a log line by accident.

#![forbid(unsafe_code)]

use std::path::PathBuf;

use zeroize::Zeroizing;

use super::error::{PassphraseOrigin, Result, SignError};

/// The environment variable read for batch use.
pub const PASSPHRASE_ENV: &str = "VEIL_PASSPHRASE";

/// A passphrase, wiped from memory when dropped.
pub struct Passphrase(Zeroizing<String>);

impl Passphrase {
    pub fn new(s: String) -> Self {
        Passphrase(Zeroizing::new(s))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The form sequoia wants (which keeps it encrypted in memory itself).
    pub fn to_password(&self) -> sequoia_openpgp::crypto::Password {
        sequoia_openpgp::crypto::Password::from(self.expose())
    }
}

/// How to obtain a passphrase when one is needed. Precedence: file, then environment,
/// then the terminal.
#[derive(Debug, Clone, Default)]
pub struct PassphraseSource {
    /// First line of this file (trailing CR/LF removed), as `gpg --passphrase-file`.
    pub file: Option<PathBuf>,
    /// Whether [`PASSPHRASE_ENV`] may be used.
    pub use_env: bool,
}

impl PassphraseSource {
    /// File, then `VEIL_PASSPHRASE`, then the terminal.
    pub fn standard(file: Option<PathBuf>) -> Self {
        PassphraseSource {
            file,
            use_env: true,
        }
    }

    /// Gets a passphrase. `confirm` asks twice on a terminal (for a new passphrase).
    pub fn get(&self, prompt: &str, confirm: bool) -> Result<Passphrase> {
        if let Some(path) = &self.file {
            let raw =
                Zeroizing::new(
                    std::fs::read(path).map_err(|err| SignError::PassphraseFile {
                        path: path.clone(),
                        err,
                    })?,
                );
            let line = raw.split(|&c| c == b'\n').next().unwrap_or(&[]);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let text = std::str::from_utf8(line).map_err(|_| SignError::PassphraseNotUtf8 {
                origin: PassphraseOrigin::File(path.clone()),
            })?;
            return Ok(Passphrase::new(text.to_string()));
        }
        if self.use_env
            && let Some(v) = std::env::var_os(PASSPHRASE_ENV)
        {
            let v = Zeroizing::new(v.into_string().map_err(|_| SignError::PassphraseNotUtf8 {
                origin: PassphraseOrigin::Env,
            })?);
            return Ok(Passphrase::new(v.to_string()));
        }
        prompt_tty(prompt, confirm)
    }
}

fn prompt_tty(prompt: &str, confirm: bool) -> Result<Passphrase> {
    let no_tty = |err: std::io::Error| {
        if err.kind() == std::io::ErrorKind::Interrupted {
            return SignError::Interrupted;
        }
        SignError::NoTerminal { err }
    };
    let read = |prompt: &str| -> Result<Passphrase> {
        let line = crate::crypt::tty::read_secret_line(prompt).map_err(no_tty)?;
        let text =
            std::str::from_utf8(line.as_slice()).map_err(|_| SignError::PassphraseNotUtf8 {
                origin: PassphraseOrigin::Terminal,
            })?;
        // A string of its exact size (no growth), wiped when dropped.
        let mut s = String::with_capacity(text.len());
        s.push_str(text);
        Ok(Passphrase::new(s))
    };
    let first = read(prompt)?;
    if confirm {
        let again = read("Retype passphrase: ")?;
        if again.expose() != first.expose() {
            return Err(SignError::PassphrasesDiffer);
        }
    }
    Ok(first)
}
