//! The launcher's side of the system-call seam ([`crate::support::sys`]): what a launch
//! adds to it — mount points resolved inside the image's root — and the steps that
//! apply the mount plan through it.

mod apply;
mod resolve;

use std::path::{Path, PathBuf};

pub use crate::support::sys::{RealSys, Sys};
pub use apply::{apply, pivot_into};
pub(crate) use resolve::resolve_in_root;

use super::error::Result;

/// The seam with what the launcher's mount plan needs besides the system calls.
pub trait LaunchSys: Sys {
    /// The mount point for `dst` (a path under `root`), resolved as the container will
    /// see it and created when missing: see [`resolve::mount_point`].
    fn mount_point(&self, root: &Path, dst: &Path, file: bool) -> Result<PathBuf>;
}

impl LaunchSys for RealSys {
    fn mount_point(&self, root: &Path, dst: &Path, file: bool) -> Result<PathBuf> {
        resolve::mount_point(root, dst, file)
    }
}

/// The recording fake takes mount points as they are named (nothing is resolved or made).
#[cfg(test)]
impl LaunchSys for crate::support::sys::recording::RecordingSys {
    fn mount_point(&self, _root: &Path, dst: &Path, _file: bool) -> Result<PathBuf> {
        Ok(dst.to_path_buf())
    }
}
