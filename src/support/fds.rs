//! This process's descriptors across an exec, and pidfds: what the launcher's
//! container process and a build script's sandbox both need before they exec.

use std::os::fd::{BorrowedFd, OwnedFd};

/// A pidfd of this process (close-on-exec), where the kernel has them (Linux 5.3).
pub fn pidfd_of_self() -> Option<OwnedFd> {
    pidfd_of(nix::unistd::getpid())
}

/// A pidfd (close-on-exec) of the process `pid`, which must not have been reaped;
/// none where the kernel has no pidfds (before Linux 5.3). (nix 0.31 wraps no
/// pidfd_open.)
pub fn pidfd_of(pid: nix::unistd::Pid) -> Option<OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open with a pid and no flags returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0u32) };
    // SAFETY: a descriptor just returned to us, owned by nothing else.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

/// Marks every descriptor from `first` up close-on-exec, so that an `exec` that follows
/// passes on nothing but what is below `first` (the standard ones): neither the
/// launcher's own descriptors nor any its caller left open (a key given with
/// `--pem-fd`, a shell's spare descriptor). `close_range(CLOSE_RANGE_CLOEXEC)` does it
/// in one call since Linux 5.11; older kernels get the descriptors listed in
/// /proc/self/fd, or failing that, tried one by one up to the descriptor limit.
pub fn cloexec_from(first: u32) {
    // SAFETY: close_range only changes the flags of this process's descriptors.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if r != 0 {
        for_each_fd_from(first, |fd| {
            // SAFETY: fcntl on a descriptor number, at worst EBADF.
            unsafe {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags >= 0 && flags & libc::FD_CLOEXEC == 0 {
                    libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
                }
            }
        });
    }
}

/// [`cloexec_from`] for a child between fork and exec, where nothing may allocate:
/// close_range, or else fcntl on every number below the descriptor limit (at most
/// 65536 of them).
pub fn cloexec_from_in_child(first: u32) {
    // SAFETY: close_range only changes the flags of this process's descriptors.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if r == 0 {
        return;
    }
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given.
    let max = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        lim.rlim_cur.min(1 << 16) as libc::c_int
    } else {
        1 << 16
    };
    for fd in first as libc::c_int..max {
        // SAFETY: fcntl on a descriptor number, at worst EBADF.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 && flags & libc::FD_CLOEXEC == 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
}

/// Calls `f` on every open descriptor numbered `first` or above: those /proc/self/fd
/// lists (read completely before `f` runs, so its own descriptor is gone by then), or,
/// without /proc, every number below the descriptor limit.
fn for_each_fd_from(first: u32, mut f: impl FnMut(libc::c_int)) {
    let listed: Option<Vec<libc::c_int>> = std::fs::read_dir("/proc/self/fd").ok().map(|d| {
        d.flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect()
    });
    match listed {
        Some(fds) => fds
            .into_iter()
            .filter(|&fd| fd >= first as libc::c_int)
            .for_each(&mut f),
        None => {
            use nix::sys::resource::{Resource, getrlimit};
            let max = getrlimit(Resource::RLIMIT_NOFILE)
                .map_or(1024, |(soft, _)| soft.min(1 << 20) as libc::c_int);
            (first as libc::c_int..max).for_each(&mut f);
        }
    }
}

/// Closes every descriptor from `first` up, for a process that stays behind without
/// exec (the waiting parent of a PID namespace's first process). A kernel without
/// close_range (before 5.9) leaves them open until the process exits.
pub fn close_from(first: u32) {
    // SAFETY: close_range only closes descriptors of this process, which the caller
    // uses none of afterwards.
    unsafe {
        libc::syscall(libc::SYS_close_range, first, u32::MAX, 0u32);
    }
}

/// Closes every descriptor above 2 but those in `keep`, for a process that stays
/// behind for long without exec (an instance's launcher): whatever its caller left
/// open (a pipe a shell's `$(...)` reads to its end, a job's sockets) is not held.
pub fn close_all_but(keep: &[libc::c_int]) {
    // No allocation: a forked child of a threaded process may call this.
    let mut from = 3u32;
    loop {
        let next = keep
            .iter()
            .filter_map(|&f| u32::try_from(f).ok())
            .filter(|&f| f >= from)
            .min();
        let end = next.map_or(u32::MAX, |k| k.saturating_sub(1));
        if next != Some(from) {
            // SAFETY: close_range only closes descriptors of this process, and only
            // those the caller does not keep.
            let r = unsafe { libc::syscall(libc::SYS_close_range, from, end, 0u32) };
            if r != 0 {
                // Before Linux 5.9: one by one, up to the descriptor limit.
                let mut lim = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                // SAFETY: getrlimit writes the limit into the struct it is given.
                let got = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
                let max = if got == 0 {
                    lim.rlim_cur.min(1 << 20) as u32
                } else {
                    1024
                };
                for fd in from..=end.min(max) {
                    // SAFETY: closes a descriptor of this process the caller does not keep.
                    unsafe { libc::close(fd as libc::c_int) };
                }
            }
        }
        match next {
            Some(k) if k < u32::MAX => from = k + 1,
            _ => return,
        }
    }
}

/// Whether descriptor `fd` is open in this process.
pub fn is_open(fd: libc::c_int) -> bool {
    // SAFETY: F_GETFD only asks about a descriptor number.
    fd >= 0 && unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0
}

/// Closes the descriptors `fds` that are open, above 2.
pub fn close_open(fds: &[libc::c_int]) {
    for &fd in fds {
        if fd > 2 && is_open(fd) {
            // SAFETY: a descriptor of this process that its owner gave up (the caller
            // decided it was the user's and no longer needed).
            unsafe { libc::close(fd) };
        }
    }
}

/// Sends `sig` to the process behind `pidfd` (Linux 5.1): never to another that took
/// its pid since.
pub fn pidfd_send_signal(pidfd: BorrowedFd<'_>, sig: nix::sys::signal::Signal) -> nix::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: pidfd_send_signal with a descriptor, a signal number, no siginfo and no
    // flags only sends a signal.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig as libc::c_int,
            std::ptr::null::<libc::siginfo_t>(),
            0u32,
        )
    };
    nix::errno::Errno::result(r).map(drop)
}

/// Whether the process behind `pidfd` has ended (a pidfd is readable from then on).
pub fn has_exited(pidfd: BorrowedFd<'_>) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut p = [PollFd::new(pidfd, PollFlags::POLLIN)];
    let ready = poll(&mut p, PollTimeout::ZERO).unwrap_or(0);
    ready > 0
        && p[0]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLIN))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_but_the_kept_descriptors_are_closed() {
        use std::os::fd::{AsRawFd, FromRawFd};
        // In a child: the test harness's own descriptors must stay.
        let pipe = nix::unistd::pipe().unwrap();
        let (a, b) = (open_plain(), open_plain());
        let (keep, gone) = (pipe.1.as_raw_fd(), [a, b, pipe.0.as_raw_fd()]);
        // SAFETY: the child makes only system calls (close_range, fcntl, _exit) and
        // allocates nothing, as a fork of a threaded process must.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            close_all_but(&[keep, 1]);
            // SAFETY: fcntl F_GETFD only asks about a descriptor number.
            let open = |fd| unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0;
            let ok = open(keep) && gone.iter().all(|&fd| !open(fd));
            // SAFETY: the child leaves without the test harness's destructors.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) }
        }
        let child = nix::unistd::Pid::from_raw(pid);
        let st = nix::sys::wait::waitpid(child, None).unwrap();
        // SAFETY: descriptors this test opened and owns nothing else of.
        drop(unsafe { (OwnedFd::from_raw_fd(a), OwnedFd::from_raw_fd(b)) });
        assert_eq!(st, nix::sys::wait::WaitStatus::Exited(child, 0));
    }

    /// A descriptor open without close-on-exec, numbered at least 3.
    fn open_plain() -> libc::c_int {
        // SAFETY: open of a constant path; the flags ask for no close-on-exec.
        let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY) };
        assert!(fd >= 3);
        fd
    }

    fn is_cloexec(fd: libc::c_int) -> bool {
        // SAFETY: fcntl on a descriptor this test opened.
        unsafe { libc::fcntl(fd, libc::F_GETFD) & libc::FD_CLOEXEC != 0 }
    }

    #[test]
    fn a_pidfd_tells_when_its_process_has_ended() {
        let me = pidfd_of_self().expect("pidfd_open (Linux 5.3)");
        assert!(!has_exited(std::os::fd::AsFd::as_fd(&me)));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let child_fd = pidfd_of(nix::unistd::Pid::from_raw(child.id() as i32)).unwrap();
        child.wait().unwrap();
        assert!(has_exited(std::os::fd::AsFd::as_fd(&child_fd)));
    }

    #[test]
    fn descriptors_are_marked_close_on_exec_and_the_fallback_finds_them_too() {
        let fd = open_plain();
        assert!(!is_cloexec(fd));
        cloexec_from(fd as u32);
        assert!(is_cloexec(fd));
        // The walk that stands in for close_range on older kernels.
        let other = open_plain();
        let mut seen = vec![];
        for_each_fd_from(other as u32, |f| seen.push(f));
        assert!(
            seen.contains(&other) && !seen.contains(&(other - 1)),
            "{seen:?}"
        );
        // SAFETY: closing descriptors this test opened.
        unsafe {
            libc::close(fd);
            libc::close(other);
        }
    }
}
