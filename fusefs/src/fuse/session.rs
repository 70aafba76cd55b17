//! Putting a server on a mount: the mount options and the worker threads.

#![forbid(unsafe_code)]

use std::os::fd::OwnedFd;

use super::server::ImageFs;
use crate::source::ReadAt;

/// Mount options for `mount(2)` of a FUSE filesystem on an open `/dev/fuse` descriptor.
/// `uid`/`gid` are the mounting user's ids as seen in its user namespace.
pub fn mount_data(fd: i32, uid: u32, gid: u32) -> String {
    format!("fd={fd},rootmode=40000,user_id={uid},group_id={gid},default_permissions")
}

/// Serves `fs` on an already-mounted `/dev/fuse` descriptor with `threads` workers, each
/// on its own cloned descriptor. Returns once the kernel handshake is done; the workers
/// run until the mount goes away.
pub fn serve<R: ReadAt + 'static>(
    fs: ImageFs<R>,
    fuse_fd: OwnedFd,
    threads: usize,
) -> std::io::Result<fuser::BackgroundSession> {
    let mut config = fuser::Config::default();
    config.n_threads = Some(threads.max(1));
    config.clone_fd = true;
    // The kernel already lets only the mounting user in (no allow_other).
    config.acl = fuser::SessionACL::All;
    let slot = fs.notifier();
    let session = fuser::Session::from_fd(fs, fuse_fd, fuser::SessionACL::All, config)?;
    let _ = slot.set(session.notifier());
    session.spawn()
}
