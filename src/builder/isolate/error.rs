//! What can go wrong while a build script's sandbox is made (its namespaces, mounts,
//! capabilities and descriptors) or while the build moves into its user namespace:
//! each variant names the step and, where there is one, the path.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::sync::Arc;

use nix::errno::Errno;

use crate::support::userns::UsernsError;

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// A system call on a path (as the script will see it, or on the host).
    #[error("{op} {}: {err}", path.display())]
    Path {
        op: &'static str,
        path: PathBuf,
        err: Errno,
    },
    /// A file of this process's own (`/proc/self/...`) that could not be written.
    #[error("{op} {}: {err}", path.display())]
    File {
        op: &'static str,
        path: PathBuf,
        err: std::io::Error,
    },
    /// A system call that takes no path.
    #[error("{op}: {err}")]
    Call { op: &'static str, err: Errno },
    /// The image has a symbolic link where the sandbox needs a directory to mount on.
    #[error("{} in the image is a symbolic link; it must be a directory", path.display())]
    LinkedMountPoint { path: PathBuf },
    #[error("cannot enter a user namespace: {0}")]
    Userns(#[from] UsernsError),
    /// The build's user namespace could not be made when the build started; kept
    /// until a script needs it.
    #[error("cannot enter a user namespace: {0}")]
    EarlierUserns(Arc<UsernsError>),
    #[error(
        "no user namespace was made before the build read its key, and a process holding one cannot make it"
    )]
    NoUsernsBeforeKey,
    #[error("cannot run {program}: {err}")]
    Exec { program: String, err: Errno },
    #[error("dropping capability {cap} from the bounding set: {err}")]
    DropCapability { cap: u32, err: Errno },
}

impl SandboxError {
    pub(crate) fn path(op: &'static str, path: impl Into<PathBuf>, err: Errno) -> Self {
        SandboxError::Path {
            op,
            path: path.into(),
            err,
        }
    }
}

pub type Result<T> = std::result::Result<T, SandboxError>;

/// Attaches the step and its path to a failed system call.
pub(crate) trait Step<T> {
    fn at(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T>;
    fn op(self, op: &'static str) -> Result<T>;
}

impl<T> Step<T> for nix::Result<T> {
    fn at(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|err| SandboxError::path(op, path, err))
    }
    fn op(self, op: &'static str) -> Result<T> {
        self.map_err(|err| SandboxError::Call { op, err })
    }
}
