//! Subordinate id ranges for rootless builds. A `%post` that installs packages chowns
//! files to system users (`_apt`, `messagebus`, ...), which a single-id user namespace
//! cannot represent. When the caller has ranges in /etc/subuid and /etc/subgid and the
//! setuid helpers newuidmap/newgidmap are installed, the whole build process moves into
//! a user namespace where the caller is root and its first range is ids 1..=N, as
//! `apptainer build --fakeroot` does. Staging, `%post`, squashing and cleanup then all
//! run in that namespace: files owned by subordinate ids are readable and removable
//! there (not outside), and the squashfs records the ids as `%post` saw them.

use std::fs;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use nix::sched::{CloneFlags, unshare};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, fork};

use super::isolate::SandboxError;
use super::isolate::error::Step;
use crate::support::diag::debug_note;
use crate::support::userns::UsernsError;

/// One subordinate range: host ids `start .. start + count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub start: u32,
    pub count: u32,
}

/// The caller's ranges, and the helpers that can map them.
#[derive(Debug, Clone)]
pub struct SubIds {
    pub uid: u32,
    pub gid: u32,
    pub uids: Range,
    pub gids: Range,
    newuidmap: PathBuf,
    newgidmap: PathBuf,
}

static ACTIVE: AtomicBool = AtomicBool::new(false);
/// Why no namespace could be made at the start of the build, for `%post` to report.
static ENTRY_ERROR: Mutex<Option<Arc<UsernsError>>> = Mutex::new(None);

/// Why [`enter_single`] failed, if it did.
pub fn entry_error() -> Option<Arc<UsernsError>> {
    ENTRY_ERROR.lock().ok()?.clone()
}

/// Moves this process into a new user (and mount) namespace with the caller as root
/// and no other id: what a build without subordinate ids runs its scripts in. Made at
/// the start of the build, while the process may still write its own id maps (it is
/// made non-dumpable right after, before any key is read). Must be called while the
/// process is single-threaded. A failure is kept for `%post` to report.
pub fn enter_single(uid: u32, gid: u32) -> Result<(), Arc<UsernsError>> {
    match crate::support::userns::enter(uid, gid, 0, 0) {
        Ok(()) => {
            ACTIVE.store(true, Ordering::SeqCst);
            Ok(())
        }
        Err(e) => {
            let e = Arc::new(e);
            if let Ok(mut g) = ENTRY_ERROR.lock() {
                *g = Some(e.clone());
            }
            Err(e)
        }
    }
}

/// True once this process runs in a namespace made by [`enter`] (with the ranges, or
/// the single-id fallback): it is root there, but it cannot make device nodes, and host
/// ids outside the map cannot be given to files.
pub fn active() -> bool {
    ACTIVE.load(Ordering::SeqCst)
}

/// The first range of `/etc/subuid`-format `text` for the user `name` or numeric `uid`
/// (both forms are valid there), with a non-zero count that does not wrap.
pub fn parse(text: &str, name: Option<&str>, uid: u32) -> Option<Range> {
    let uid_s = uid.to_string();
    text.lines().find_map(|line| {
        let mut f = line.trim().split(':');
        let (who, start, count) = (f.next()?, f.next()?, f.next()?);
        if f.next().is_some() || !(Some(who) == name || who == uid_s) {
            return None;
        }
        let start: u32 = start.trim().parse().ok()?;
        let count: u32 = count.trim().parse().ok()?;
        (count > 0 && start.checked_add(count).is_some()).then_some(Range { start, count })
    })
}

fn helper(name: &str) -> Option<PathBuf> {
    // The system's setuid copies only: a PATH entry of the user's could not be setuid
    // root anyway, and would only turn a clear fallback into a confusing failure.
    ["/usr/bin", "/usr/sbin", "/bin", "/sbin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// The caller's ranges, when both files have one and both helpers exist; `None` (use a
/// single-id namespace) otherwise.
pub fn lookup(uid: u32, gid: u32) -> Option<SubIds> {
    let name = crate::support::identity::user_entry(uid).map(|u| u.name);
    let read = |p: &str| fs::read_to_string(p).ok();
    let uids = parse(&read("/etc/subuid")?, name.as_deref(), uid)?;
    let gids = parse(&read("/etc/subgid")?, name.as_deref(), uid)?;
    Some(SubIds {
        uid,
        gid,
        uids,
        gids,
        newuidmap: helper("newuidmap")?,
        newgidmap: helper("newgidmap")?,
    })
}

fn pipe() -> nix::Result<(fs::File, fs::File)> {
    // Close-on-exec: the setuid id-map helpers must not inherit either end.
    let (r, w): (OwnedFd, OwnedFd) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    Ok((fs::File::from(r), fs::File::from(w)))
}

/// Runs the two helpers on `pid` once a byte arrives on `go`; the exit status says
/// whether both worked. Runs in a forked child of a single-threaded process.
fn map_from_outside(ids: &SubIds, pid: u32, mut go: fs::File) -> i32 {
    let mut b = [0u8; 1];
    if go.read(&mut b).ok() != Some(1) {
        // The parent died (or decided not to unshare) before asking.
        return 1;
    }
    let run = |tool: &Path, id: u32, r: Range| {
        std::process::Command::new(tool)
            .args([
                pid.to_string(),
                "0".into(),
                id.to_string(),
                "1".into(),
                "1".into(),
                r.start.to_string(),
                r.count.to_string(),
            ])
            .status()
            .is_ok_and(|s| s.success())
    };
    if !run(&ids.newuidmap, ids.uid, ids.uids) {
        return 2;
    }
    if !run(&ids.newgidmap, ids.gid, ids.gids) {
        return 3;
    }
    0
}

/// Moves this process into a new user namespace with the caller as root and its
/// subordinate ranges as ids 1..=N. Must be called while the process is
/// single-threaded. When a helper refuses (its own message is on stderr), the
/// namespace gets the single-id map instead and a warning says so; an error is
/// returned only when no namespace could be made at all.
pub fn enter(ids: &SubIds) -> Result<(), SandboxError> {
    let (go_r, mut go_w) = pipe().op("pipe")?;
    let pid = std::process::id();
    // SAFETY: the process is single-threaded (the caller's contract), so the child may
    // allocate and spawn the helpers; it leaves with _exit, running no destructors of
    // the parent's state.
    let child = match unsafe { fork() } {
        Err(err) => return Err(SandboxError::Call { op: "fork", err }),
        Ok(ForkResult::Child) => {
            drop(go_w);
            let code = map_from_outside(ids, pid, go_r);
            // SAFETY: see above.
            unsafe { libc::_exit(code) }
        }
        Ok(ForkResult::Parent { child }) => child,
    };
    drop(go_r);
    let unshared = unshare(CloneFlags::CLONE_NEWUSER);
    if let Err(err) = unshared {
        drop(go_w); // the helper sees EOF and exits
        let _ = waitpid(child, None);
        return Err(SandboxError::Call {
            op: "making a user namespace",
            err,
        });
    }
    let _ = go_w.write_all(b"1");
    drop(go_w);
    let status = loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, c)) => break c,
            Ok(WaitStatus::Signaled(..)) => break 1,
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => break 1,
        }
    };
    if status == 0 {
        ACTIVE.store(true, Ordering::SeqCst);
        return Ok(());
    }
    crate::say_warn!(
        "veil build: warning: {} refused the subordinate ids of /etc/sub{}id; %post runs with a single id (chown to other users will fail)",
        if status == 3 {
            "newgidmap"
        } else {
            "newuidmap"
        },
        if status == 3 { "g" } else { "u" },
    );
    single_id_fallback(ids.uid, ids.gid)?;
    ACTIVE.store(true, Ordering::SeqCst);
    Ok(())
}

/// Moves the build into the user namespace its %post or %test will run in, when it
/// will run them unprivileged: with the caller's subordinate ids (unless
/// `ignore_subuid`), else with the caller as the only id. To be called before anything
/// starts a thread, and before the process is made non-dumpable (the id maps must be
/// written first). What goes wrong is left for %post to report, with the fix.
pub fn enter_for_build(
    source: &str,
    build_args: &[(String, String)],
    notest: bool,
    ignore_subuid: bool,
) {
    let uid = nix::unistd::getuid().as_raw();
    let gid = nix::unistd::getgid().as_raw();
    if uid == 0 || !super::runs_scripts_in_image(source, build_args, notest) {
        return;
    }
    let single = || {
        if let Err(e) = enter_single(uid, gid) {
            debug_note(&format!("build: {e}"));
        }
    };
    let ids = if ignore_subuid {
        None
    } else {
        lookup(uid, gid)
    };
    let Some(ids) = ids else {
        debug_note("build: no subordinate ids used; %post gets a single id");
        return single();
    };
    match enter(&ids) {
        Ok(()) => debug_note(&format!(
            "build: in a user namespace with subordinate uids {}+{} and gids {}+{}",
            ids.uids.start, ids.uids.count, ids.gids.start, ids.gids.count
        )),
        // No namespace at all: the single-id attempt keeps the reason, with the fix,
        // for %post to report.
        Err(e) => {
            debug_note(&format!("build: {e}"));
            single()
        }
    }
}

/// Writes whatever map the helpers left unwritten: the caller as root, setgroups denied.
fn single_id_fallback(uid: u32, gid: u32) -> Result<(), SandboxError> {
    let empty =
        |f: &str| fs::read_to_string(format!("/proc/self/{f}")).is_ok_and(|s| s.trim().is_empty());
    let write = |f: &str, text: String| {
        fs::OpenOptions::new()
            .write(true)
            .open(format!("/proc/self/{f}"))
            .and_then(|mut h| h.write_all(text.as_bytes()))
            .map_err(|err| SandboxError::File {
                op: "writing",
                path: Path::new("/proc/self").join(f),
                err,
            })
    };
    if empty("gid_map") {
        write("setgroups", "deny".into())?;
    }
    if empty("uid_map") {
        write("uid_map", format!("0 {uid} 1\n"))?;
    }
    if empty("gid_map") {
        write("gid_map", format!("0 {gid} 1\n"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_by_name_or_uid_and_takes_the_first_range() {
        let t = "alice:100000:65536\n1001:200000:1000\nbob:300000:0\nbob:400000:10\n";
        assert_eq!(
            parse(t, Some("alice"), 1000),
            Some(Range {
                start: 100000,
                count: 65536
            })
        );
        assert_eq!(
            parse(t, Some("carol"), 1001),
            Some(Range {
                start: 200000,
                count: 1000
            })
        );
        // A zero count is no range; the next line for the same user is.
        assert_eq!(
            parse(t, Some("bob"), 1002),
            Some(Range {
                start: 400000,
                count: 10
            })
        );
        assert_eq!(parse(t, Some("dave"), 1003), None);
    }

    #[test]
    fn rejects_malformed_and_wrapping_lines() {
        for t in [
            "alice:100000\n",
            "alice:x:10\n",
            "alice:10:y\n",
            "alice:1:2:3\n",
            "alice:4294967295:2\n",
            "",
            "alice",
        ] {
            assert_eq!(parse(t, Some("alice"), 5), None, "{t:?}");
        }
    }
}
