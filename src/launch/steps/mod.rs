//! The mount and namespace steps of a launch, in order, on the system-call seam:
//! the launcher's namespaces, the staging area with the image in it, the FUSE mount,
//! and the container process's namespaces and mount plan. Generic over [`Sys`] and
//! [`Devices`], so the tests run the very sequences a launch runs on a recording fake.

#[cfg(test)]
mod tests;

use std::os::fd::{BorrowedFd, RawFd};
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;

use super::error::{LaunchError, Result, SysContext};
use super::plan::{self, Attrs};
use super::spec::RootKind;
use super::sys::{self, LaunchSys, Sys};
use crate::support::identity::Identity;

/// Staging directory in the launcher's mount namespace: a tmpfs covers the host's /tmp
/// there (only there), and the child pivots into it. /tmp exists on every Linux system.
pub(super) const STAGE: &str = "/tmp";

/// The host's /proc, as the container process sees it once it has made the staging
/// area its root (`enter_container`), the host's root under `.host`.
pub(super) const HOST_PROC: &str = "/.host/proc";

/// Where the image's root is mounted in the staging area.
pub(super) fn image_dir() -> PathBuf {
    Path::new(STAGE).join(".image")
}

/// The launcher's namespaces. They come first, because the user namespace must be
/// entered while the launcher has a single thread. Real root needs no user namespace,
/// and the kernel's squashfs refuses to mount in one.
pub(super) fn enter_namespaces<S: Sys>(sys: &S, kind: RootKind, id: &Identity) -> Result<()> {
    if kind.by_kernel() {
        sys.unshare(CloneFlags::CLONE_NEWNS)
            .ctx("creating a mount namespace")
    } else {
        Ok(sys.enter_userns(id.uid, id.gid, id.inner_uid, id.inner_gid)?)
    }
}

/// Nothing mounted in the launcher's namespace may propagate back to the host.
fn make_private<S: Sys>(sys: &S) -> Result<()> {
    sys.mount(
        None,
        Path::new("/"),
        None,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None,
    )
    .ctx("making the mount namespace private")
}

/// The image's root as the staging area receives it, once its devices exist.
pub(super) enum StagedImage<'a> {
    /// A sandbox directory, open (O_PATH) in the launcher's namespace.
    Directory(RawFd),
    /// A squashfs on a block device (a loop device).
    Block(&'a Path),
    /// A squashfs on a dm-crypt mapping with this device number.
    Mapped { major: u32, minor: u32 },
    /// Mounted with FUSE later ([`mount_image`]).
    Fuse,
    /// A ramfs, into which the image is unpacked ([`Devices::unpack`]).
    Unpacked,
}

/// The staging tmpfs with the image root mounted at `.image` and an empty `.host`.
fn stage_image<S: Sys>(sys: &S, staged: &StagedImage<'_>) -> Result<()> {
    let stage = Path::new(STAGE);
    sys.mount(
        Some(Path::new("veil")),
        stage,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755"),
    )
    .ctx("mounting the staging tmpfs")?;
    for d in [".host", ".image"] {
        let p = stage.join(d);
        sys.create_dir(&p)
            .map_err(|err| LaunchError::io("creating", p, err))?;
    }
    let image = image_dir();
    match *staged {
        StagedImage::Directory(fd) => {
            let src = PathBuf::from(format!("/proc/self/fd/{fd}"));
            sys.mount(
                Some(&src),
                &image,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None,
            )
            .ctx("binding the image directory")?;
            // Read-only, nosuid and nodev, down to any mount inside the directory.
            sys.set_attrs(&image, Attrs::READ_ONLY, true)
                .ctx("making the image read-only")
        }
        StagedImage::Block(dev) => sys
            .mount(
                Some(dev),
                &image,
                Some("squashfs"),
                MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                None,
            )
            .ctx_at("mounting the image's squashfs from", dev),
        StagedImage::Mapped { major, minor } => {
            mount_mapped(sys, major, minor, &stage.join(".dm"), &image)
        }
        StagedImage::Fuse => Ok(()),
        StagedImage::Unpacked => sys
            .mount(
                Some(Path::new("veil")),
                &image,
                Some("ramfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                Some("mode=0755"),
            )
            .ctx("mounting a ramfs for the unpacked image"),
    }
}

/// Mounts the dm-crypt mapping's squashfs read-only at `target`, through a device node
/// made in a private tmpfs at `node_dir` (the staging area is nodev; no udev needed).
fn mount_mapped<S: Sys>(
    sys: &S,
    major: u32,
    minor: u32,
    node_dir: &Path,
    target: &Path,
) -> Result<()> {
    sys.create_dir(node_dir)
        .map_err(|err| LaunchError::io("creating", node_dir, err))?;
    sys.mount(
        Some(Path::new("veil-dev")),
        node_dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("mode=0700,size=16k"),
    )
    .ctx_at("dm-crypt: mounting the node tmpfs on", node_dir)?;
    let node = node_dir.join("crypt");
    let r = sys
        .mknod_block(&node, major, minor)
        .ctx_at("dm-crypt: making the device node", &node)
        .and_then(|()| {
            sys.mount(
                Some(&node),
                target,
                Some("squashfs"),
                MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                None,
            )
            .ctx("dm-crypt: mounting the decrypted squashfs")
        });
    // The mount keeps the block device open; the node is no longer needed.
    let _ = sys.umount(node_dir, MntFlags::MNT_DETACH);
    let _ = sys.remove_dir(node_dir);
    r
}

/// What a launch needs besides the seam: the devices behind the image's root and, for
/// an image served with FUSE, the server. The real ones are made in `stage`; the
/// tests name some.
pub(super) trait Devices {
    /// The image root's device, made once the launcher's namespace is private (in
    /// it: a bind source must belong to it) and before the staging tmpfs covers /tmp.
    fn image(&mut self) -> Result<StagedImage<'_>>;
    /// The image is mounted in the staging area: what its mount holds now (a loop
    /// device, a dm-crypt mapping) can be let go of.
    fn staged(&mut self);
    /// For an image served with FUSE: the `/dev/fuse` descriptor to mount it on.
    fn fuse(&self) -> Option<RawFd>;
    /// Starts serving the mounted FUSE image.
    fn serve(&mut self) -> Result<()>;
    /// For an unpacked image: writes its tree into the staged `.image`.
    fn unpack(&mut self) -> Result<()> {
        Ok(())
    }
}

/// The launcher's side once its namespaces exist: the mount namespace made private,
/// the staging area with the image root in it, and an image served with FUSE mounted
/// and its server started, so that the container process's copy of the namespace
/// has it and the server is up when the container first needs it.
pub(super) fn stage_and_serve<S: Sys, D: Devices>(
    sys: &S,
    devices: &mut D,
    owner: (u32, u32),
    image_name: &str,
) -> Result<()> {
    make_private(sys)?;
    let image = devices.image()?;
    let unpacked = matches!(image, StagedImage::Unpacked);
    stage_image(sys, &image)?;
    if unpacked {
        devices.unpack()?;
        // Read-only from here on, as any image; the container writes to an overlay.
        sys.mount(
            None,
            &image_dir(),
            None,
            MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            None,
        )
        .ctx("making the unpacked image read-only")?;
    }
    devices.staged();
    if let Some(fd) = devices.fuse() {
        mount_image(sys, fd, owner.0, owner.1, image_name)?;
        devices.serve()?;
    }
    Ok(())
}

/// Mounts the image with FUSE at the staging `.image`, on the launcher's `/dev/fuse`
/// descriptor `fd`. The kernel queues its INIT request; the server answers it.
fn mount_image<S: Sys>(sys: &S, fd: RawFd, uid: u32, gid: u32, image_name: &str) -> Result<()> {
    let data = veil_fusefs::fuse::mount_data(fd, uid, gid);
    let source = Path::new(image_name)
        .file_name()
        .map(|n| n.to_string_lossy().replace([' ', ',', '\\'], "_"))
        .unwrap_or_else(|| "veil".into());
    sys.mount(
        Some(Path::new(&source)),
        &image_dir(),
        Some("fuse.veil"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_RDONLY,
        Some(data.as_str()),
    )
    .ctx("mounting the image with FUSE")
}

/// The container process's namespaces, as far as its mounts are concerned.
#[derive(Debug, Clone, Default)]
pub(super) struct ContainerNamespaces {
    /// The container process is PID 1 of a PID namespace of its own (made as it is
    /// started: [`ContainerNamespaces::clone_flags`]).
    pub pid: bool,
    pub uts: bool,
    pub ipc: bool,
    /// A network namespace with loopback alone (`--net --network none`).
    pub net: bool,
    pub hostname: Option<String>,
    /// A user namespace nested in the launcher's (uid 0 inside): entered, with a new
    /// mount namespace, once the mounts are made, so that they are locked for the container.
    pub locked_userns: Option<BorrowedFd<'static>>,
}

impl ContainerNamespaces {
    /// The namespaces the container process is started in, rather than made by it:
    /// a PID namespace's first process is the one started in it.
    pub fn clone_flags(&self) -> CloneFlags {
        if self.pid {
            CloneFlags::CLONE_NEWPID
        } else {
            CloneFlags::empty()
        }
    }
}

/// In the container process: its own namespaces, the staging area as its root, the
/// mount plan, the pivot into the container's root, and the lock on the mounts.
pub(super) fn enter_container<S: LaunchSys>(
    sys: &S,
    ns: &ContainerNamespaces,
    steps: &[plan::Step],
    root: &Path,
) -> Result<()> {
    let mut flags = CloneFlags::CLONE_NEWNS;
    if ns.uts {
        flags |= CloneFlags::CLONE_NEWUTS;
    }
    if ns.ipc {
        flags |= CloneFlags::CLONE_NEWIPC;
    }
    if ns.net {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    sys.unshare(flags)
        .ctx("creating the container's namespaces")?;
    if ns.net {
        sys.loopback_up()
            .ctx("bringing up the loopback interface")?;
    }
    sys.pivot_root(Path::new(STAGE), &Path::new(STAGE).join(".host"))
        .ctx("entering the staging area")?;
    sys.chdir(Path::new("/")).ctx("chdir /")?;
    sys::apply(sys, steps, root)?;
    super::debug_time("child: mounts applied");
    sys::pivot_into(sys, root)?;
    if let Some(h) = &ns.hostname {
        sys.sethostname(h).ctx_at("setting the hostname to", h)?;
    }
    if let Some(fd) = ns.locked_userns {
        // A mount namespace copied into a less privileged user namespace has every
        // mount locked: the read-only ones cannot be made writable, none can be
        // unmounted to show what it covers, nosuid and nodev cannot be dropped — not
        // even with the capabilities the container has in its own user namespace.
        sys.setns(fd, CloneFlags::CLONE_NEWUSER)
            .ctx("entering the container's user namespace")?;
        sys.unshare(CloneFlags::CLONE_NEWNS)
            .ctx("locking the container's mounts")?;
        super::debug_time("child: mounts locked");
    }
    Ok(())
}
