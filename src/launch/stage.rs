//! The devices behind the staging area: the sandbox directory's descriptor, the loop
//! device, the dm-crypt mapping. They are made here, in the launcher's namespace, and
//! the mounts on them go through the seam (`steps::stage_image`).

#![forbid(unsafe_code)]

use std::os::fd::{AsRawFd, OwnedFd};

use nix::fcntl::{OFlag, open};
use nix::sys::stat::Mode as FileMode;

use super::error::{Result, SysContext};
use super::spec::Mode;
use super::steps::{self, StagedImage};
use super::sys::Sys;
use super::{dmcrypt, loopdev};

/// Makes the launcher's mount namespace private and stages the image's root.
pub(super) fn stage<S: Sys>(sys: &S, mode: &Mode) -> Result<()> {
    steps::make_private(sys)?;
    match mode {
        Mode::Directory(dir) => {
            // Opened in the new namespace (a bind source must belong to it) and before
            // the staging tmpfs covers /tmp, where it may live.
            let fd: OwnedFd = open(
                dir.as_path(),
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                FileMode::empty(),
            )
            .ctx(|| format!("opening {}", dir.display()))?;
            steps::stage_image(sys, &StagedImage::Directory(fd.as_raw_fd()))
        }
        Mode::Kernel(region) => {
            // Likewise the loop device is attached while the image's path is visible.
            let dev = loopdev::attach(&region.file, region.offset, region.size)?;
            steps::stage_image(sys, &StagedImage::Block(&dev.path))
            // The mount holds the device now; autoclear detaches it with the mount.
        }
        Mode::KernelCrypt(c) => {
            let dev = loopdev::attach(&c.volume.file, c.volume.offset, c.volume.size)?;
            // dm-crypt over the loop device; removed again (on drop) if the mount fails.
            let dm = dmcrypt::map(&dev.path, &c.mapping)?;
            let (major, minor) = dm.dev();
            steps::stage_image(sys, &StagedImage::Mapped { major, minor })?;
            // Deferred removal: the kernel deletes the mapping when the mount goes,
            // on every exit path, like the loop device's autoclear.
            dm.remove_deferred();
            Ok(())
        }
        // Mounted by the launcher once the server is ready (`fuse::mount_and_serve`).
        Mode::Fuse(_) => steps::stage_image(sys, &StagedImage::Fuse),
    }
}
