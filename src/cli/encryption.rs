//! The key flags shared by the actions (`run`, `exec`, `shell`, `test`) and `build`.

#![forbid(unsafe_code)]

use std::path::PathBuf;

use clap::Args;

use crate::crypt::source::KeyFlags;

#[derive(Debug, Clone, Args)]
pub struct EncryptionArgs {
    /// RSA key for an encrypted image: the private key to run, the public key to build (PKCS#1, PKCS#8, SPKI or OpenSSH)
    #[arg(long, value_name = "FILE")]
    pub pem_path: Option<PathBuf>,
    /// Read the RSA key from this open file descriptor (e.g. --pem-fd 3 3<key.pem)
    #[arg(long, value_name = "FD")]
    pub pem_fd: Option<i32>,
    /// Ask for the encryption passphrase on the terminal
    #[arg(long)]
    pub passphrase: bool,
    /// Read the encryption passphrase from a file (one trailing newline is dropped)
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// Read the encryption passphrase from this open file descriptor
    #[arg(long, value_name = "FD")]
    pub passphrase_fd: Option<i32>,
    /// Read the password of a protected private key (PKCS#12, encrypted PEM or
    /// OpenSSH) from a file (else VEIL_PEM_PASSWORD, else a prompt)
    #[arg(long, value_name = "FILE")]
    pub pem_password_file: Option<PathBuf>,
    /// Allow keyslots whose key derivation costs up to FACTOR times veil's default cap (a guard against hostile images; also VEIL_MAX_KDF_COST)
    #[arg(long, value_name = "FACTOR", env = "VEIL_MAX_KDF_COST", value_parser = crate::image::kdf::parse_factor)]
    pub max_kdf_cost: Option<f64>,
}

impl EncryptionArgs {
    /// Puts `--max-kdf-cost` and `--pem-password-file` in force for the unlocks of
    /// this command.
    pub fn apply_key_settings(&self) {
        crate::image::kdf::set_factor(self.max_kdf_cost);
        if let Some(f) = &self.pem_password_file {
            crate::crypt::source::set_key_password_file(f.clone());
        }
    }

    pub fn flags(&self) -> KeyFlags {
        KeyFlags {
            pem_path: self.pem_path.clone(),
            pem_fd: self.pem_fd,
            passphrase: self.passphrase,
            passphrase_file: self.passphrase_file.clone(),
            passphrase_fd: self.passphrase_fd,
        }
    }
}
