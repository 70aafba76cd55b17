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
    /// A system call: the step it made, and the path it was made on if any (as the
    /// container sees it where it is inside the image).
    #[error("{step}{}: {err}", on.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default())]
    Sys {
        step: &'static str,
        on: Option<PathBuf>,
        err: nix::Error,
    },
    /// A bind of the mount plan: from the host's `src` to `dst` in the container, and
    /// why the plan has it.
    #[error("binding {} to {} ({why}): {err}", src.display(), dst.display())]
    Bind {
        src: PathBuf,
        dst: PathBuf,
        why: String,
        err: nix::Error,
    },
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
    #[error("invalid --mount {0:?}: {1}")]
    MountSpec(String, &'static str),
    #[error("unpacking the image into memory: {0}")]
    Unpack(String),
    #[error(
        "the image needs {need_mib} MiB of memory unpacked, and {available_mib} MiB are available: give veil /dev/fuse (podman/docker run --device /dev/fuse) to serve it without unpacking"
    )]
    UnpackMemory { need_mib: u64, available_mib: u64 },
    #[error(
        "/dev/fuse cannot be used, and the memory available cannot be read (/proc/meminfo) to unpack the image instead: --unsquash unpacks it all the same"
    )]
    UnpackMemoryUnknown,
    #[error("interrupted ({0}) while the image was unpacked; the container was not started")]
    Interrupted(nix::sys::signal::Signal),
    #[error(
        "--no-mount {0:?}: not one of proc, sys, dev, devpts, tmp, home, cwd, hostfs, bind-paths, /etc/hosts, /etc/localtime, /etc/resolv.conf"
    )]
    NoMount(String),
    #[error("--workdir {}: {err}", path.display())]
    Workdir { path: PathBuf, err: std::io::Error },
    /// A mount point that could not be made in the image; `path` as the container sees it.
    #[error("cannot create the mount point {} in the image: {err}", path.display())]
    MountPoint { path: PathBuf, err: io::Error },
    #[error("too many symbolic links under {}", .0.display())]
    TooManyLinks(PathBuf),
    #[error("{step} {}: {err}", path.display())]
    LoopDevice {
        step: &'static str,
        path: PathBuf,
        err: io::Error,
    },
    #[error("no free loop device after several tries")]
    NoFreeLoopDevice,
    /// A device-mapper request (on /dev/mapper/control) for the image's mapping.
    #[error("dm-crypt: {step}: {err}")]
    DmCrypt { step: &'static str, err: io::Error },
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
    /// Joining a running container (`instance://`, `--sharens`): `op` failed.
    #[error("joining the container: {op}: {err}")]
    Join {
        op: &'static str,
        err: std::io::Error,
    },
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

/// Attaches the step, and the path it was made on, to a failed system call.
pub(crate) trait SysContext<T> {
    fn ctx(self, step: &'static str) -> Result<T>;
    fn ctx_at(self, step: &'static str, on: impl Into<PathBuf>) -> Result<T>;
}

impl<T> SysContext<T> for nix::Result<T> {
    fn ctx(self, step: &'static str) -> Result<T> {
        self.map_err(|err| LaunchError::Sys {
            step,
            on: None,
            err,
        })
    }
    fn ctx_at(self, step: &'static str, on: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|err| LaunchError::Sys {
            step,
            on: Some(on.into()),
            err,
        })
    }
}
