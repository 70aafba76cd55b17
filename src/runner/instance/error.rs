//! The instance service's error type: names the instance, or the file and the
//! operation.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    #[error(
        "instance name {0:?}: use at most 64 letters, digits, '.', '_' and '-', not starting with '.' or '-'"
    )]
    BadName(String),
    #[error("an instance named {0} is already running (veil instance list shows it)")]
    Exists(String),
    #[error("no instance named {0} is running (veil instance list shows yours)")]
    NotFound(String),
    #[error("instances need Linux 5.3 or newer (pidfd_open)")]
    NoPidfd,
    #[error("instance {0}: this command runs inside it; run it outside the instance")]
    Inside(String),
    #[error("instance {0} is still starting")]
    Starting(String),
    #[error("{}: {op}: {err}", .path.display())]
    Io {
        path: PathBuf,
        op: &'static str,
        err: std::io::Error,
    },
    #[error("no place for instance state: neither XDG_RUNTIME_DIR nor HOME names a directory")]
    NoDir,
    #[error("instance {name} did not start: {why}")]
    NotStarted {
        name: String,
        why: String,
        /// The kind of the launch's failure, when its process said.
        kind: Option<crate::support::failure::Failure>,
    },
    /// Starting the instance's process (the pipe to it, the forks).
    #[error("instance {name}: {op}: {err}")]
    Spawn {
        name: String,
        op: &'static str,
        err: std::io::Error,
    },
    #[error("{0}: an instance cannot be started from another instance")]
    FromInstance(String),
    /// A `--sharens` session (whose name the user never gave).
    #[error("the shared session (--sharens) did not start: {why}")]
    SessionNotStarted {
        why: String,
        kind: Option<crate::support::failure::Failure>,
    },
    #[error("no user named {0}")]
    NoUser(String),
    #[error("only root may look at another user's instances")]
    NotRoot,
}

impl InstanceError {
    pub fn io(path: &Path, op: &'static str, err: std::io::Error) -> Self {
        InstanceError::Io {
            path: path.to_path_buf(),
            op,
            err,
        }
    }
}

pub type Result<T> = std::result::Result<T, InstanceError>;
