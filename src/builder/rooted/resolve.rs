//! Resolution of a path inside the root: openat2 with `RESOLVE_IN_ROOT`, or the same
//! done one component at a time where openat2 is missing or refused.

#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat, openat2, readlinkat};
use nix::sys::stat::{Mode, fstat};

use super::{NodeKind, Rooted, kind_of};

/// How many symlinks one resolution may follow (the kernel's own limit).
const MAX_LINKS: usize = 40;

impl Rooted {
    /// Opens the directory named by `parts` inside the root (O_PATH).
    pub(super) fn resolve_dir(&self, parts: &[OsString]) -> nix::Result<OwnedFd> {
        if parts.iter().all(|p| p == ".") {
            return self.root_dup();
        }
        if !self.emulate {
            let mut joined = Vec::new();
            for (i, p) in parts.iter().enumerate() {
                if i > 0 {
                    joined.push(b'/');
                }
                joined.extend_from_slice(p.as_bytes());
            }
            let how = OpenHow::new()
                .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
                .resolve(
                    ResolveFlag::RESOLVE_IN_ROOT
                        | ResolveFlag::RESOLVE_NO_MAGICLINKS
                        | ResolveFlag::RESOLVE_NO_XDEV,
                );
            let path = OsStr::from_bytes(&joined);
            for _ in 0..16 {
                match openat2(&self.dir, path, how) {
                    // A concurrent rename somewhere on the system: the kernel asks to retry.
                    Err(Errno::EAGAIN) => continue,
                    Err(Errno::ENOSYS) | Err(Errno::EPERM) => break,
                    r => return r,
                }
            }
        }
        self.resolve_emulated(parts)
    }

    /// RESOLVE_IN_ROOT done by hand: each component opened with O_NOFOLLOW; a symlink's
    /// target is spliced into the remaining components, an absolute one restarting at
    /// the root; `..` never climbs above the root.
    fn resolve_emulated(&self, parts: &[OsString]) -> nix::Result<OwnedFd> {
        let mut queue: VecDeque<OsString> = parts.iter().cloned().collect();
        let mut stack: Vec<OwnedFd> = Vec::new();
        let mut cur = self.root_dup()?;
        let mut links = 0;
        while let Some(c) = queue.pop_front() {
            if c.is_empty() || c == "." {
                continue;
            }
            if c == ".." {
                if let Some(up) = stack.pop() {
                    cur = up;
                }
                continue;
            }
            let fd = openat(
                &cur,
                c.as_os_str(),
                OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )?;
            match kind_of(&fstat(&fd)?) {
                NodeKind::Dir => {
                    stack.push(std::mem::replace(&mut cur, fd));
                }
                NodeKind::Symlink => {
                    links += 1;
                    if links > MAX_LINKS {
                        return Err(Errno::ELOOP);
                    }
                    let target = readlinkat(&fd, "")?;
                    let tb = target.as_bytes();
                    if tb.first() == Some(&b'/') {
                        stack.clear();
                        cur = self.root_dup()?;
                    }
                    for part in tb.split(|&b| b == b'/').rev() {
                        queue.push_front(OsString::from_vec(part.to_vec()));
                    }
                }
                _ => return Err(Errno::ENOTDIR),
            }
        }
        Ok(cur)
    }
}
