//! Entering a user namespace as an unprivileged user, and telling why when the machine
//! does not allow it.

use std::fs;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::OnceLock;

use nix::sched::{CloneFlags, unshare};

/// Why the user namespace could not be entered.
#[derive(Debug, thiserror::Error)]
pub enum UsernsError {
    #[error(
        "user namespaces are disabled (user.max_user_namespaces = 0); an administrator can enable them with: sysctl -w user.max_user_namespaces=15000"
    )]
    Disabled,
    #[error(
        "unprivileged user namespaces are restricted by AppArmor (kernel.apparmor_restrict_unprivileged_userns = 1); an administrator can allow them with: sysctl -w kernel.apparmor_restrict_unprivileged_userns=0, or install an AppArmor profile granting 'userns' to veil"
    )]
    AppArmor,
    #[error(
        "unprivileged user namespaces are disabled (kernel.unprivileged_userns_clone = 0); an administrator can enable them with: sysctl -w kernel.unprivileged_userns_clone=1"
    )]
    CloneDisabled,
    #[error("cannot create a user namespace: {0}")]
    Unshare(nix::Error),
    #[error("Linux {0} is too old: veil needs 4.18 or later to mount FUSE in a user namespace")]
    KernelTooOld(String),
    #[error("uname: {0}")]
    Uname(nix::Error),
    #[error(
        "internal error: the user namespace must be entered before any key material is read (this process is no longer dumpable, so it cannot write its id maps)"
    )]
    NotDumpable,
    #[error("writing /proc/self/{file} ({}): {err}", text.trim())]
    IdMap {
        file: &'static str,
        text: String,
        err: std::io::Error,
    },
    #[error("prctl(PR_SET_DUMPABLE): {0}")]
    SetDumpable(nix::Error),
    #[error("creating a nested user namespace: {0}")]
    Nested(String),
}

pub type Result<T> = std::result::Result<T, UsernsError>;

/// True for uid 0 in the initial user namespace (not merely root inside a container).
pub fn real_root() -> bool {
    nix::unistd::geteuid().is_root()
        && fs::read_to_string("/proc/self/uid_map")
            .map(|m| m.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"])
            .unwrap_or(false)
}

fn read_sysctl(path: &str) -> Option<i64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Checks the kernel version: FUSE mounts in a user namespace need 4.18.
pub fn check_kernel() -> Result<()> {
    let uts = nix::sys::utsname::uname().map_err(UsernsError::Uname)?;
    let release = uts.release().to_string_lossy().into_owned();
    let mut nums = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|s| s.parse::<u32>().ok());
    let (major, minor) = (nums.next().unwrap_or(0), nums.next().unwrap_or(0));
    if (major, minor) < (4, 18) {
        return Err(UsernsError::KernelTooOld(release));
    }
    Ok(())
}

/// The reason a failed `unshare(CLONE_NEWUSER)` failed, from the sysctls that cause it.
fn explain(err: nix::Error) -> UsernsError {
    if read_sysctl("/proc/sys/user/max_user_namespaces") == Some(0) {
        return UsernsError::Disabled;
    }
    if read_sysctl("/proc/sys/kernel/unprivileged_userns_clone") == Some(0) {
        return UsernsError::CloneDisabled;
    }
    if read_sysctl("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") == Some(1) {
        return UsernsError::AppArmor;
    }
    UsernsError::Unshare(err)
}

/// The ids mapped when the namespace was entered: (outside uid, gid, inside uid,
/// gid). Set once; inside the namespace getuid() returns the inside uid.
static ENTERED: OnceLock<(u32, u32, u32, u32)> = OnceLock::new();

/// The caller's uid and gid outside the user namespace, once it has been entered.
pub fn outer_ids() -> Option<(u32, u32)> {
    ENTERED.get().map(|&(u, g, _, _)| (u, g))
}

/// Enters new user and mount namespaces, mapping the caller's uid/gid to
/// `inner_uid`/`inner_gid`. setgroups is denied, as the kernel requires for an
/// unprivileged single-id map. Entered already (before key material was read, see
/// [`enter_before_secrets`]), it does nothing.
///
/// A process may write its own id maps only while it is dumpable (otherwise its
/// /proc files are root's), and a process that holds a secret must never be
/// dumpable again: an unprivileged caller that is no longer dumpable is refused
/// rather than made dumpable for the writes.
pub fn enter(uid: u32, gid: u32, inner_uid: u32, inner_gid: u32) -> Result<()> {
    if ENTERED.get().is_some() {
        return Ok(());
    }
    if !nix::unistd::geteuid().is_root() && !nix::sys::prctl::get_dumpable().unwrap_or(true) {
        return Err(UsernsError::NotDumpable);
    }
    // (A PID namespace is made later, by the container process: the launcher itself
    // starts threads, which the kernel refuses after unshare(CLONE_NEWPID).)
    wait_single_threaded();
    unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS).map_err(explain)?;
    let write = |file: &'static str, text: String| {
        fs::write(format!("/proc/self/{file}"), &text).map_err(|err| UsernsError::IdMap {
            file,
            text,
            err,
        })
    };
    write("setgroups", "deny".into())?;
    write("uid_map", format!("{inner_uid} {uid} 1\n"))?;
    write("gid_map", format!("{inner_gid} {gid} 1\n"))?;
    // Made here because its helper, like the writes above, needs a dumpable process.
    make_locked_userns(inner_uid, inner_gid)?;
    let _ = ENTERED.set((uid, gid, inner_uid, inner_gid));
    Ok(())
}

/// Called before an encrypted image's key is read: the launcher's user namespace is
/// entered now, while the process holds no secret and may still write its id maps,
/// and then the process is made non-dumpable (no core dump, no ptrace or
/// /proc/PID/mem by other processes of the user) for good. Real root needs no user
/// namespace for its own ids (and may enter one later for `--fuse` without being
/// dumpable).
pub fn enter_before_secrets(fakeroot: bool) -> Result<()> {
    if !real_root() {
        check_kernel()?;
        let id = super::identity::Identity::current(fakeroot);
        enter(id.uid, id.gid, id.inner_uid, id.inner_gid)?;
    }
    nix::sys::prctl::set_dumpable(false).map_err(UsernsError::SetDumpable)
}

/// A user namespace nested in the launcher's, with the same single id mapped, for a
/// container that runs as uid 0 inside (--fakeroot, or real root on the FUSE path) and
/// so has every capability in the launcher's user namespace. The container process
/// enters it, and makes a new mount namespace, once its mounts are in place: a mount
/// namespace copied into a less privileged user namespace has all its mounts locked
/// (mount_namespaces(7)), so the container cannot make read-only ones writable, drop
/// nosuid or nodev, or unmount one to see what it covers.
static LOCKED: OnceLock<OwnedFd> = OnceLock::new();

/// The descriptor of the nested user namespace [`enter`] made, if any.
pub fn locked_userns() -> Option<BorrowedFd<'static>> {
    LOCKED.get().map(|f| f.as_fd())
}

/// Makes the nested user namespace when uid 0 is what is mapped inside. A short-lived
/// helper that shares this process's memory and descriptor table enters it, maps its
/// own ids (as this process did) and opens it; the descriptor stays here.
fn make_locked_userns(inner_uid: u32, inner_gid: u32) -> Result<()> {
    use std::os::fd::{FromRawFd, IntoRawFd};
    use std::sync::atomic::{AtomicI32, Ordering};
    if inner_uid != 0 || LOCKED.get().is_some() {
        return Ok(());
    }
    let fd = AtomicI32::new(-1);
    let failure = std::sync::Mutex::new(None::<String>);
    // SAFETY: the helper only writes files under /proc/self, opens one, stores into
    // `fd` or `failure`, and _exits; this thread waits for it meanwhile (CLONE_VFORK).
    // With CLONE_FILES the descriptor it opens is this process's.
    let pid = unsafe {
        super::spawn::spawn_shared(
            libc::CLONE_NEWUSER | libc::CLONE_FILES,
            Box::new(|| {
                let maps = [
                    ("setgroups", "deny".to_string()),
                    ("uid_map", format!("{inner_uid} {inner_uid} 1\n")),
                    ("gid_map", format!("{inner_gid} {inner_gid} 1\n")),
                ];
                let r = maps
                    .iter()
                    .try_for_each(|(f, text)| fs::write(format!("/proc/self/{f}"), text))
                    .and_then(|()| fs::File::open("/proc/self/ns/user"));
                match r {
                    Ok(f) => fd.store(f.into_raw_fd(), Ordering::SeqCst),
                    Err(e) => {
                        if let Ok(mut slot) = failure.lock() {
                            *slot = Some(e.to_string());
                        }
                    }
                }
                libc::_exit(0)
            }),
        )
    }
    .map_err(|e| UsernsError::Nested(e.to_string()))?;
    let _ = nix::sys::wait::waitpid(pid, None);
    let raw = fd.load(Ordering::SeqCst);
    if raw < 0 {
        let why = failure.into_inner().ok().flatten().unwrap_or_default();
        return Err(UsernsError::Nested(why));
    }
    // SAFETY: the helper opened it in this descriptor table and handed it over.
    let _ = LOCKED.set(unsafe { OwnedFd::from_raw_fd(raw) });
    Ok(())
}

/// unshare(CLONE_NEWUSER) fails with EINVAL in a multi-threaded process. Threads
/// that did work before the launch (the argon2 lanes of an encrypted image's
/// keyslot) have been joined, but the kernel releases a task a moment after its
/// join returns: tens of microseconds, so the wait is polled finely: a coarse
/// sleep would cost more than the reaping itself. At most ~1 s.
fn wait_single_threaded() {
    for _ in 0..20_000 {
        let threads = fs::read_dir("/proc/self/task").map_or(1, |d| d.count());
        if threads <= 1 {
            return;
        }
        std::thread::sleep(std::time::Duration::from_micros(20));
    }
}
