//! Joining a running container (an instance, or a shared session): a process of the
//! caller's enters the namespaces of the container's init and starts the action there,
//! with the caller's environment handling, as a launch would. No image is opened and
//! no key is needed: the container's root is already mounted and served by the
//! instance's launcher.
//!
//! The joining process stays outside as the action's parent: it forwards signals,
//! waits, and ends what the action left behind (as a subreaper, or through the
//! instance's PID namespace when it has one).

use std::ffi::OsString;
use std::fs;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

use nix::fcntl::OFlag;
use nix::sched::CloneFlags;
use nix::unistd::{Pid, pipe2};

use super::error::{LaunchError, Result, SysContext};
use super::prepare::{HostPaths, argv_for};
use super::{Action, Options, child, init, process};
use crate::support::identity::Identity;

/// A container to join and what to run in it.
pub struct JoinSpec {
    pub action: Action,
    /// The image as the instance names it (for APPTAINER_CONTAINER).
    pub image_name: String,
    pub args: Vec<OsString>,
    /// The caller's options for the action (environment, working directory, shell),
    /// with the instance's identity and home (`fakeroot`, `home`, `no_home`).
    pub options: Options,
    /// The container's init.
    pub init: Pid,
    /// A pidfd of the init, opened (and its identity checked) by the caller.
    pub init_pidfd: OwnedFd,
}

/// The namespaces a process can be joined in, with their names under /proc/PID/ns.
const NAMESPACES: [(&str, CloneFlags); 6] = [
    ("user", CloneFlags::CLONE_NEWUSER),
    ("mnt", CloneFlags::CLONE_NEWNS),
    ("pid", CloneFlags::CLONE_NEWPID),
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("net", CloneFlags::CLONE_NEWNET),
];

/// The namespaces of `pid` that this process is not in.
fn differing(pid: Pid) -> Result<Vec<(&'static str, CloneFlags)>> {
    let mut out = Vec::new();
    for (name, flag) in NAMESPACES {
        let ns = |p: String| {
            fs::metadata(&p)
                .map(|m| m.ino())
                .map_err(|e| LaunchError::io("reading the namespace", p, e))
        };
        let theirs = ns(format!("/proc/{pid}/ns/{name}"))?;
        let ours = ns(format!("/proc/self/ns/{name}"))?;
        if theirs != ours {
            out.push((name, flag));
        }
    }
    Ok(out)
}

/// Enters the init's namespaces: all at once through its pidfd (Linux 5.8), else one
/// by one from /proc, the user namespace first (it gives the rights for the others).
/// The process must have a single thread (the kernel requires it for a user namespace).
fn enter(spec: &JoinSpec, which: &[(&str, CloneFlags)]) -> Result<()> {
    if which.is_empty() {
        return Ok(());
    }
    let all = which.iter().fold(CloneFlags::empty(), |a, (_, f)| a | *f);
    match nix::sched::setns(spec.init_pidfd.as_fd(), all) {
        Ok(()) => return Ok(()),
        Err(nix::errno::Errno::EINVAL) => {}
        Err(e) => return Err(e).ctx("setns(the instance's namespaces)"),
    }
    // Opened before any is entered: /proc is the caller's until the mount namespace
    // changes.
    let files = which
        .iter()
        .map(|(name, flag)| {
            let p = format!("/proc/{}/ns/{name}", spec.init);
            fs::File::open(&p)
                .map(|f| (f, *flag))
                .map_err(|e| LaunchError::io("opening the namespace", p, e))
        })
        .collect::<Result<Vec<_>>>()?;
    for (f, flag) in files {
        nix::sched::setns(f.as_fd(), flag).ctx("setns(the instance's namespaces)")?;
    }
    Ok(())
}

/// Runs the action in the running container and returns its exit status.
pub fn join(spec: JoinSpec) -> Result<i32> {
    let o = &spec.options;
    let id = Identity::current(o.fakeroot);
    let host = HostPaths::resolve(o, &id)?;
    super::apply_umask(o);
    let argv = argv_for(
        spec.action,
        &spec.image_name,
        &spec.args,
        o,
        &id,
        &host.home_dst,
    )?;
    let start_dirs = host.start_dirs(o);
    // Checked while /proc is still this process's own.
    let alone =
        crate::support::spawn::SingleThreaded::check().map_err(|err| LaunchError::Join {
            op: "checking for threads",
            err,
        })?;
    let old_mask = process::block_signals().ctx("blocking signals")?;
    // Inside, a container that is root (--fakeroot) would otherwise be allowed to read
    // this process's memory and descriptors. The action's exec makes it dumpable again.
    let _ = nix::sys::prctl::set_dumpable(false);
    let which = differing(spec.init)?;
    enter(&spec, &which)?;
    // In a PID namespace of the instance's, the action's orphans go to the instance's
    // init; otherwise to this process, which ends them with the action.
    let subreaper = which.iter().all(|(n, _)| *n != "pid");
    if subreaper {
        let _ = nix::sys::prctl::set_child_subreaper(true);
    }
    let (err_r, err_w) = pipe2(OFlag::O_CLOEXEC).ctx("pipe")?;
    // The child may be in the instance's PID namespace, where getppid says 0: it asks
    // a pidfd whether this process still lives.
    let parent = crate::support::fds::pidfd_of_self();
    let forked = alone.fork().map_err(|err| LaunchError::Join {
        op: "starting the action",
        err,
    })?;
    match forked {
        None => {
            drop(err_r);
            let e = action_child(&argv, &start_dirs, parent.as_ref(), &old_mask);
            let _ = fs::File::from(err_w).write_all(e.to_string().as_bytes());
            // SAFETY: _exit skips the destructors of the parent's state.
            unsafe { libc::_exit(255) }
        }
        Some(child) => {
            drop(err_w);
            let mut msg = String::new();
            let _ = fs::File::from(err_r).read_to_string(&mut msg);
            if !msg.is_empty() {
                let _ = nix::sys::wait::waitpid(child, None);
                return Err(LaunchError::Child(msg));
            }
            let code = process::supervise(child);
            if subreaper {
                init::kill_children(None);
            }
            Ok(code)
        }
    }
}

/// The action's process in the joined container: returns only on failure.
fn action_child(
    argv: &super::action::ActionArgv,
    start_dirs: &[std::ffi::CString],
    parent: Option<&OwnedFd>,
    old_mask: &nix::sys::signal::SigSet,
) -> LaunchError {
    let run = || -> Result<std::convert::Infallible> {
        nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
            .ctx("prctl(PR_SET_PDEATHSIG)")?;
        if parent.is_none_or(|p| crate::support::fds::has_exited(p.as_fd())) {
            // SAFETY: the joining process is gone; so is the reason to run.
            unsafe { libc::_exit(1) }
        }
        for d in start_dirs {
            if nix::unistd::chdir(d.as_c_str()).is_ok() {
                break;
            }
        }
        child::exec_action(argv, false, old_mask)
    };
    match run() {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_differs_from_itself_in_no_namespace() {
        let me = nix::unistd::getpid();
        assert!(differing(me).unwrap().is_empty());
    }
}
