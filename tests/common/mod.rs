//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository's `shared/` sibling: specs, interop scripts and reference data.
pub fn shared_dir() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared");
    p.is_dir().then(|| p.canonicalize().unwrap())
}

pub fn veil() -> Command {
    Command::new(env!("CARGO_BIN_EXE_veil"))
}

/// Full path of a program on PATH.
pub fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(tool))
            .find(|p| p.is_file())
    })
}

/// Skips the calling test, saying why, when a requirement is missing.
#[macro_export]
macro_rules! require {
    ($opt:expr, $why:expr) => {
        match $opt {
            Some(v) => v,
            None => {
                eprintln!("SKIP {}: {}", module_path!(), $why);
                return;
            }
        }
    };
}

/// Runs a command and returns its output, panicking with its stderr if it failed.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs a command expected to fail; returns its stderr.
pub fn run_err(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        !out.status.success(),
        "{cmd:?} succeeded but should have failed; stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `shared/testdata/sif`: the reference SIF images and test keys.
pub fn sif_testdata() -> Option<PathBuf> {
    shared_dir()
        .map(|d| d.join("testdata/sif"))
        .filter(|p| p.join("images").is_dir())
}

/// A `veil` command whose HOME is `home`, so keyrings under it are the only ones seen,
/// with no passphrase in the environment unless the test sets one.
pub fn veil_in(home: &Path) -> Command {
    let mut c = veil();
    c.env("HOME", home).env_remove("VEIL_PASSPHRASE");
    c
}

/// A `gpg` command on a private GNUPGHOME, batch mode, loopback pinentry.
pub fn gpg_in(gnupghome: &Path) -> Command {
    let mut c = Command::new("gpg");
    c.env("GNUPGHOME", gnupghome).args([
        "--batch",
        "--no-tty",
        "--pinentry-mode",
        "loopback",
        "--quiet",
    ]);
    c
}

/// A fresh private GNUPGHOME (mode 0700, as gpg insists).
pub fn new_gnupghome(parent: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let d = parent.join("gnupg");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
    d
}
