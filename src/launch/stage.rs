//! The devices behind the staging area: the sandbox directory's descriptor, the loop
//! device, the dm-crypt mapping, and the FUSE server. They are made here, in the
//! launcher's namespace; the mounts on them go through the seam
//! (`steps::stage_and_serve`).

#![forbid(unsafe_code)]

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use nix::fcntl::{OFlag, open};
use nix::sys::stat::Mode as FileMode;
use veil_fusefs::fuse::{Owner, Synthetic};

use super::dmcrypt::DmDevice;
use super::error::{Result, SysContext};
use super::fuse::{self, Warmer};
use super::loopdev::{self, LoopDevice};
use super::spec::Mode;
use super::steps::{Devices, StagedImage};
use super::{dmcrypt, steps};

/// An image served with FUSE: its `/dev/fuse` descriptor and what its server needs.
pub(super) struct FuseServer {
    pub fd: OwnedFd,
    pub warmer: Warmer,
    pub synth: Synthetic,
    pub owner: Owner,
}

/// The real devices for a launch in `mode`.
pub(super) struct RealDevices<'a> {
    mode: &'a Mode,
    dir: Option<OwnedFd>,
    loop_dev: Option<LoopDevice>,
    mapping: Option<DmDevice>,
    fuse: Option<FuseServer>,
}

impl<'a> RealDevices<'a> {
    pub fn new(mode: &'a Mode, fuse: Option<FuseServer>) -> Self {
        RealDevices {
            mode,
            dir: None,
            loop_dev: None,
            mapping: None,
            fuse,
        }
    }
}

impl Devices for RealDevices<'_> {
    fn image(&mut self) -> Result<StagedImage<'_>> {
        Ok(match self.mode {
            Mode::Directory(dir) => {
                let fd: OwnedFd = open(
                    dir.as_path(),
                    OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                    FileMode::empty(),
                )
                .ctx_at("opening", dir)?;
                StagedImage::Directory(self.dir.insert(fd).as_raw_fd())
            }
            Mode::Kernel(region) => {
                let dev = loopdev::attach(&region.file, region.offset, region.size)?;
                StagedImage::Block(&self.loop_dev.insert(dev).path)
            }
            Mode::KernelCrypt(c) => {
                let dev = loopdev::attach(&c.volume.file, c.volume.offset, c.volume.size)?;
                // dm-crypt over the loop device; removed again (on drop) if the mount fails.
                let dm = dmcrypt::map(&dev.path, &c.mapping)?;
                self.loop_dev = Some(dev);
                let (major, minor) = self.mapping.insert(dm).dev();
                StagedImage::Mapped { major, minor }
            }
            // Mounted once the staging area exists (`steps::stage_and_serve`).
            Mode::Fuse(_) => StagedImage::Fuse,
            Mode::Unpacked(_) => StagedImage::Unpacked,
        })
    }

    fn unpack(&mut self) -> Result<()> {
        let Mode::Unpacked(u) = self.mode else {
            return Ok(());
        };
        (u.unpacker)(&u.fs, &steps::image_dir()).map_err(super::error::LaunchError::Unpack)?;
        // Signals are blocked while the launch is set up, to be forwarded to the
        // container later: a Ctrl-C during a long unpacking must not start it.
        match crate::support::signals::pending_termination() {
            Some(sig) => Err(super::error::LaunchError::Interrupted(sig)),
            None => Ok(()),
        }
    }

    fn staged(&mut self) {
        // The mount holds the loop device now; autoclear detaches it with the mount.
        self.loop_dev = None;
        // Deferred removal: the kernel deletes the mapping when the mount goes, on
        // every exit path, like the loop device's autoclear.
        if let Some(dm) = self.mapping.take() {
            dm.remove_deferred();
        }
    }

    fn fuse(&self) -> Option<RawFd> {
        self.fuse.as_ref().map(|f| f.fd.as_raw_fd())
    }

    fn serve(&mut self) -> Result<()> {
        let Some(f) = self.fuse.take() else {
            return Ok(());
        };
        fuse::serve(f.fd, f.warmer, f.synth, f.owner, steps::image_dir())
    }
}
