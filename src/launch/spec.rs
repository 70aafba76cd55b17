//! What a launch is asked to do: the image's root, the user's options, and how the
//! root will be mounted.

#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;

use veil_fusefs::squashfs::Squashfs;

use super::action::Action;
use super::binds;
use super::error::Result;

/// Where the image's root filesystem comes from.
pub enum RootSource {
    /// A sandbox directory on the host, used read-only.
    Directory(PathBuf),
    /// A squashfs: served by the launcher's FUSE threads, or — with real root privileges
    /// and a region of a file to hand over — mounted by the kernel from a loop device.
    Squashfs {
        fs: Arc<Squashfs<crate::image::Source>>,
        region: Option<crate::image::FileRegion>,
        /// For an encrypted image: what dm-crypt needs to do the decryption instead.
        crypt: Option<KernelCrypt>,
    },
}

/// An encrypted image's LUKS2 volume in its file, and its dm-crypt mapping.
pub struct KernelCrypt {
    pub volume: crate::image::FileRegion,
    pub mapping: veil_fusefs::luks2::KernelMapping,
}

impl From<crate::image::Root> for RootSource {
    fn from(r: crate::image::Root) -> Self {
        match r {
            crate::image::Root::Directory(d) => RootSource::Directory(d),
            crate::image::Root::Squashfs { fs, region } => RootSource::Squashfs {
                fs,
                region,
                crypt: None,
            },
        }
    }
}

/// Everything `run`, `exec`, `shell` and `test` take.
#[derive(Debug, Default, Clone)]
pub struct Options {
    pub binds: Vec<binds::BindSpec>,
    pub contain: bool,
    pub cleanenv: bool,
    pub no_home: bool,
    /// `--home src[:dst]`.
    pub home: Option<(PathBuf, PathBuf)>,
    pub pwd: Option<PathBuf>,
    pub env: Vec<(String, String)>,
    pub writable_tmpfs: bool,
    pub pid: bool,
    /// A new IPC namespace (System V IPC, POSIX message queues).
    pub ipc: bool,
    pub uts: bool,
    pub hostname: Option<String>,
    pub fakeroot: bool,
    pub shell: Option<String>,
    /// Use FUSE even with real root privileges.
    pub fuse: bool,
    /// `--no-mount`: default mounts left out.
    pub no_mount: binds::NoMount,
    /// `--workdir`: host directory (canonical) for /tmp, /var/tmp, scratch
    /// directories, and the home when contained.
    pub workdir: Option<PathBuf>,
    /// `--scratch`: empty writable directories inside the container.
    pub scratch: Vec<PathBuf>,
    /// `--no-umask`: the container starts with umask 0022, not the caller's.
    pub no_umask: bool,
    /// `--unsquash`: unpack a squashfs root into memory instead of serving it with FUSE.
    pub unsquash: bool,
    /// `--net` (`--network none`): a network namespace with loopback alone.
    pub net: bool,
    /// `--no-tmp-sandbox`: never unpack the image instead of serving it with FUSE.
    pub no_unpack: bool,
}

pub struct LaunchSpec {
    pub action: Action,
    /// The image as the user named it (for APPTAINER_CONTAINER).
    pub image_name: String,
    pub root: RootSource,
    pub args: Vec<OsString>,
    pub options: Options,
    /// Set for an instance: the container's init outlives the action until it is
    /// stopped, the launcher leaves the caller's session before the container starts,
    /// and this is called with the processes' ids once the container runs.
    pub instance: Option<Box<dyn FnOnce(Started)>>,
    /// How to unpack a squashfs root where FUSE cannot serve it (`unpack`); without
    /// one, such a launch fails.
    pub unpacker: Option<super::unpack::Unpacker>,
}

/// The processes of a container that has started.
#[derive(Debug, Clone, Copy)]
pub struct Started {
    /// The launcher (this process): FUSE server and signal forwarding.
    pub launcher: nix::unistd::Pid,
    /// The container's init, in this PID namespace.
    pub init: nix::unistd::Pid,
}

/// How the image's root is mounted.
pub(super) enum Mode {
    /// A sandbox directory, bound read-only, with an overlay for mount points.
    Directory(PathBuf),
    /// FUSE served by the launcher, in a user namespace.
    Fuse(Arc<Squashfs<crate::image::Source>>),
    /// A squashfs unpacked into a ramfs, then used as a read-only directory.
    Unpacked(super::unpack::Unpacked),
    /// Real root: the kernel's squashfs over a loop device, no user namespace.
    Kernel(crate::image::FileRegion),
    /// Real root, encrypted image: the kernel's squashfs over dm-crypt over a loop device.
    KernelCrypt(KernelCrypt),
}

/// [`Mode`] without its payload: what decides the mount and namespace steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RootKind {
    Directory,
    Unpacked,
    Fuse,
    Kernel,
    KernelCrypt,
}

impl RootKind {
    /// Mounted by the kernel as real root: no user namespace (the kernel's squashfs
    /// refuses to mount in one), no nested one to lock the mounts.
    pub fn by_kernel(self) -> bool {
        matches!(self, RootKind::Kernel | RootKind::KernelCrypt)
    }
}

impl Mode {
    pub fn kind(&self) -> RootKind {
        match self {
            Mode::Directory(_) => RootKind::Directory,
            Mode::Unpacked(_) => RootKind::Unpacked,
            Mode::Fuse(_) => RootKind::Fuse,
            Mode::Kernel(_) => RootKind::Kernel,
            Mode::KernelCrypt(_) => RootKind::KernelCrypt,
        }
    }

    /// A squashfs root is served read-only by FUSE, with the mount points it lacks
    /// presented as empty synthetic nodes; a directory root gets an overlay instead.
    /// See [`squashfs_kind`] for when the kernel mounts a squashfs.
    pub fn choose(
        root: RootSource,
        real_root: impl Fn() -> bool,
        fuse: bool,
        dm_available: impl FnOnce() -> Result<()>,
    ) -> Mode {
        match root {
            RootSource::Directory(d) => Mode::Directory(d),
            RootSource::Squashfs { fs, region, crypt } => {
                let kind = squashfs_kind(
                    region.is_some(),
                    crypt.is_some(),
                    real_root,
                    fuse,
                    dm_available,
                );
                match (kind, region, crypt) {
                    (RootKind::Kernel, Some(r), _) => Mode::Kernel(r),
                    (RootKind::KernelCrypt, _, Some(c)) => Mode::KernelCrypt(c),
                    _ => Mode::Fuse(fs),
                }
            }
        }
    }
}

/// How a squashfs root is mounted: by the kernel from a loop device (`region`: a part
/// of a file to hand over) or through dm-crypt (`crypt`: an encrypted image) when the
/// launcher is real root (asked lazily: it reads /proc) and FUSE was not asked for
/// (`fuse`), dm-crypt only where device-mapper answers; else with FUSE.
pub(super) fn squashfs_kind(
    region: bool,
    crypt: bool,
    real_root: impl Fn() -> bool,
    fuse: bool,
    dm_available: impl FnOnce() -> Result<()>,
) -> RootKind {
    if fuse {
        return RootKind::Fuse;
    }
    match (region, crypt) {
        (true, false) if real_root() => RootKind::Kernel,
        (_, true) if real_root() => match dm_available() {
            Ok(()) => RootKind::KernelCrypt,
            Err(why) => {
                super::debug_note(&format!(
                    "dm-crypt path not used ({why}); serving with FUSE"
                ));
                RootKind::Fuse
            }
        },
        _ => RootKind::Fuse,
    }
}
