//! Entering a user namespace as an unprivileged user, and telling why when the machine
//! does not allow it.

use std::fs;
use std::os::fd::OwnedFd;

use nix::sched::{CloneFlags, unshare};

use super::error::{LaunchError, Result};

fn read_sysctl(path: &str) -> Option<i64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Checks the kernel version: FUSE mounts in a user namespace need 4.18.
pub fn check_kernel() -> Result<()> {
    let uts =
        nix::sys::utsname::uname().map_err(|e| LaunchError::Invalid(format!("uname: {e}")))?;
    let release = uts.release().to_string_lossy().into_owned();
    let mut nums = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|s| s.parse::<u32>().ok());
    let (major, minor) = (nums.next().unwrap_or(0), nums.next().unwrap_or(0));
    if (major, minor) < (4, 18) {
        return Err(LaunchError::KernelTooOld(release));
    }
    Ok(())
}

/// The reason a failed `unshare(CLONE_NEWUSER)` failed, from the sysctls that cause it.
fn explain(err: nix::Error) -> LaunchError {
    if read_sysctl("/proc/sys/user/max_user_namespaces") == Some(0) {
        return LaunchError::UserNsDisabled;
    }
    if read_sysctl("/proc/sys/kernel/unprivileged_userns_clone") == Some(0) {
        return LaunchError::UserNsCloneDisabled;
    }
    if read_sysctl("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") == Some(1) {
        return LaunchError::UserNsAppArmor;
    }
    LaunchError::UserNs(err)
}

/// Enters new user and mount namespaces, mapping the caller's uid/gid to `inner_uid`/`inner_gid`. setgroups is denied,
/// as the kernel requires for an unprivileged single-id map.
pub fn enter(uid: u32, gid: u32, inner_uid: u32, inner_gid: u32) -> Result<()> {
    enter_nested(uid, gid, inner_uid, inner_gid, false).map(drop)
}

/// As [`enter`]; with `nested`, also makes a second user namespace inside the new one,
/// mapping `inner_uid`/`inner_gid` to themselves, and returns a descriptor of it. A
/// process that enters it and then makes a mount namespace gets a copy of its mounts
/// that are locked (mount_namespaces(7)): its capabilities there do not reach them.
pub fn enter_nested(
    uid: u32,
    gid: u32,
    inner_uid: u32,
    inner_gid: u32,
    nested: bool,
) -> Result<Option<OwnedFd>> {
    // (A PID namespace is made later, by the container process: the launcher itself
    // starts threads, which the kernel refuses after unshare(CLONE_NEWPID).)
    wait_single_threaded();
    unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS).map_err(explain)?;
    // A process holding an encrypted image's key is non-dumpable from the start,
    // which makes its /proc files root's: it may write its own id maps only while
    // dumpable. The window is these writes (and, nested, those of the helper that
    // shares this memory); no core dump can happen in it unless one of them crashes
    // the process.
    let guarded = nix::sys::prctl::get_dumpable().unwrap_or(true);
    if !guarded {
        let _ = nix::sys::prctl::set_dumpable(true);
    }
    let r = write_maps(uid, gid, inner_uid, inner_gid).and_then(|()| {
        if nested {
            nested_userns(inner_uid, inner_gid).map(Some)
        } else {
            Ok(None)
        }
    });
    if !guarded {
        let _ = nix::sys::prctl::set_dumpable(false);
    }
    r
}

/// Writes this process's id maps: `inner` inside is `outer` outside.
fn write_maps(uid: u32, gid: u32, inner_uid: u32, inner_gid: u32) -> Result<()> {
    let write = |file: &str, text: String| {
        fs::write(format!("/proc/self/{file}"), &text).map_err(|e| {
            LaunchError::Invalid(format!("writing /proc/self/{file} ({}): {e}", text.trim()))
        })
    };
    write("setgroups", "deny".into())?;
    write("uid_map", format!("{inner_uid} {uid} 1\n"))?;
    write("gid_map", format!("{inner_gid} {gid} 1\n"))
}

/// A user namespace inside the current one with the same single id mapped: made by a
/// short-lived helper that shares this process's memory and descriptor table, maps its
/// own ids and opens its namespace, whose descriptor stays here.
fn nested_userns(inner_uid: u32, inner_gid: u32) -> Result<OwnedFd> {
    use std::os::fd::{FromRawFd, IntoRawFd};
    use std::sync::atomic::{AtomicI32, Ordering};
    let fd = AtomicI32::new(-1);
    let failure = std::sync::Mutex::new(None::<LaunchError>);
    // SAFETY: the helper only writes files under /proc/self, opens one, stores into
    // `fd` or `failure`, and _exits; this thread waits for it meanwhile (CLONE_VFORK).
    // With CLONE_FILES the descriptor it opens is this process's.
    let pid = unsafe {
        super::process::spawn_shared(
            libc::CLONE_NEWUSER | libc::CLONE_FILES,
            Box::new(|| {
                let r = write_maps(inner_uid, inner_gid, inner_uid, inner_gid).and_then(|()| {
                    fs::File::open("/proc/self/ns/user")
                        .map_err(|e| LaunchError::Invalid(format!("opening a user namespace: {e}")))
                });
                match r {
                    Ok(f) => fd.store(f.into_raw_fd(), Ordering::SeqCst),
                    Err(e) => {
                        if let Ok(mut slot) = failure.lock() {
                            *slot = Some(e);
                        }
                    }
                }
                libc::_exit(0)
            }),
        )
    }
    .map_err(|e| LaunchError::Invalid(format!("creating a nested user namespace: {e}")))?;
    let _ = nix::sys::wait::waitpid(pid, None);
    let raw = fd.load(Ordering::SeqCst);
    if raw < 0 {
        return Err(failure
            .into_inner()
            .ok()
            .flatten()
            .unwrap_or_else(|| LaunchError::Invalid("creating a nested user namespace".into())));
    }
    // SAFETY: the helper opened it in this descriptor table and handed it over.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// unshare(CLONE_NEWUSER) fails with EINVAL in a multi-threaded process. Threads
/// that did work before the launch (the argon2 lanes of an encrypted image's
/// keyslot) have been told to exit; give the kernel a moment to reap them: tens of
/// microseconds after their last instruction, so the wait is polled finely (a 500 µs
/// sleep here used to cost an argon2 image's start about a millisecond). At most ~1 s.
fn wait_single_threaded() {
    for _ in 0..20_000 {
        let threads = fs::read_dir("/proc/self/task").map_or(1, |d| d.count());
        if threads <= 1 {
            return;
        }
        std::thread::sleep(std::time::Duration::from_micros(20));
    }
}
