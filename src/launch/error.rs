//! The launcher's error type. Messages are one line and, where the cause is a machine
//! setting, they say the fix.

#![forbid(unsafe_code)]

use std::io;
use std::path::PathBuf;

pub use crate::support::userns::UsernsError;

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// Entering the user namespace, or the kernel that refuses it.
    #[error(transparent)]
    Userns(#[from] UsernsError),
    #[error(
        "/dev/fuse does not exist: load the fuse module (modprobe fuse), or inside a container start it with --device /dev/fuse"
    )]
    NoFuse,
    #[error("cannot open /dev/fuse: {0} (an administrator can run: chmod 0666 /dev/fuse)")]
    FuseAccess(io::Error),
    #[error("starting the FUSE server: {0}")]
    FuseServer(io::Error),
    /// A system call, and what it was doing (the path is in `what`).
    #[error("{what}: {err}")]
    Sys { what: String, err: nix::Error },
    /// A file operation on `path`.
    #[error("{op} {}: {err}", path.display())]
    Path {
        op: &'static str,
        path: PathBuf,
        err: io::Error,
    },
    #[error("bind source {0} does not exist")]
    BindSource(String),
    #[error("invalid bind {0:?}: {1}")]
    BindSpec(String, &'static str),
    /// A mount point that could not be made in the image; `path` as the container sees it.
    #[error("cannot create the mount point {path} in the image: {err}")]
    MountPoint { path: String, err: io::Error },
    #[error("too many symbolic links under {}", .0.display())]
    TooManyLinks(PathBuf),
    #[error("{what}: {err}")]
    LoopDevice { what: String, err: io::Error },
    #[error("no free loop device after several tries")]
    NoFreeLoopDevice,
    #[error("dm-crypt: {what}: {err}")]
    DmCrypt { what: String, err: io::Error },
    #[error("invalid environment variable name {0:?}")]
    EnvName(String),
    #[error("--env {0:?}: expected NAME=VALUE")]
    EnvFlag(String),
    #[error("{file}:{line}: expected NAME=VALUE")]
    EnvFileLine { file: String, line: usize },
    #[error("{file}:{line}: invalid variable name {name:?}")]
    EnvFileName {
        file: String,
        line: usize,
        name: String,
    },
    #[error("an argument or variable contains a NUL byte")]
    NulByte,
    #[error("exec needs a command to run")]
    NoCommand,
    #[error("cannot run {program}: {err}")]
    Exec { program: String, err: nix::Error },
    #[error("the image has no /bin/sh, so only `exec` of a program works")]
    NoShell,
    #[error("container setup failed: {0}")]
    Child(String),
}

impl LaunchError {
    /// A failed file operation `op` ("creating", "writing", …) on `path`.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, err: io::Error) -> Self {
        LaunchError::Path {
            op,
            path: path.into(),
            err,
        }
    }
}

pub type Result<T> = std::result::Result<T, LaunchError>;

/// Attaches what was being done to a failed system call.
pub(crate) trait SysContext<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> SysContext<T> for nix::Result<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|err| LaunchError::Sys { what: what(), err })
    }
}
