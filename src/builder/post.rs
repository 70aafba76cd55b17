//! Runs definition-file scripts: `%setup` on the host, `%post` and `%test` inside the
//! image being built, rootless. For `%post` a child process enters a mount and PID
//! namespace of its own inside the build's user namespace (made at the start of an
//! unprivileged build, see `subids`, with the caller as root as `apptainer build
//! --fakeroot` does) — or, for real root, those two and a UTS namespace — and
//! [`super::isolate`]
//! makes the staging tree its root with `pivot_root`, the host's root detached; the
//! script runs with `sh -e -x`, with stdin, stdout and stderr as its only
//! descriptors and an environment of its own. Nothing is mounted outside the child's
//! namespace, so nothing is left behind.

use std::ffi::CString;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;

use std::sync::Arc;

use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};

use super::error::{BuildError, Result};
use super::isolate::SandboxError;
use super::isolate::error::Step;
use super::recipe::Script;
use crate::support::fds;
use crate::support::sys::{RealSys, Sys};
use crate::support::userns::UsernsError;

/// The default PATH of build scripts.
pub const BUILD_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Which script is running, for messages.
pub struct Context<'a> {
    pub file: &'a str,
    pub section: &'a str,
    /// Trace commands (`sh -x`), as `%post` and `%setup` do.
    pub trace: bool,
}

fn argv(script: &Script, trace: bool) -> Vec<CString> {
    let interp = script.interpreter.as_deref().unwrap_or("/bin/sh");
    let mut v = vec![interp.to_string(), "-e".into()];
    if trace {
        v.push("-x".into());
    }
    v.push("-c".into());
    v.push(script.body.clone());
    v.into_iter().filter_map(|s| CString::new(s).ok()).collect()
}

fn envp(vars: &[(String, String)]) -> Vec<CString> {
    vars.iter()
        .filter_map(|(k, v)| CString::new(format!("{k}={v}")).ok())
        .collect()
}

fn status_error(ctx: &Context<'_>, script: &Script, st: WaitStatus) -> Result<()> {
    let why = match st {
        WaitStatus::Exited(_, 0) => return Ok(()),
        WaitStatus::Exited(_, c) => format!("exit status {c}"),
        WaitStatus::Signaled(_, s, _) => format!("signal {s}"),
        other => format!("{other:?}"),
    };
    Err(script_error(ctx, script, format!("failed ({why})")))
}

fn script_error(ctx: &Context<'_>, script: &Script, why: String) -> BuildError {
    BuildError::Script {
        file: ctx.file.to_string(),
        line: script.line,
        section: ctx.section.to_string(),
        why,
    }
}

/// Runs `%setup` on the host, as the caller, with `$APPTAINER_ROOTFS` set to the
/// staging tree.
pub fn run_setup(ctx: &Context<'_>, script: &Script, rootfs: &Path) -> Result<()> {
    let a = argv(script, ctx.trace);
    let mut cmd = std::process::Command::new(std::ffi::OsStr::from_bytes(a[0].as_bytes()));
    for x in &a[1..] {
        cmd.arg(std::ffi::OsStr::from_bytes(x.as_bytes()));
    }
    cmd.env("APPTAINER_ROOTFS", rootfs)
        .env("SINGULARITY_ROOTFS", rootfs);
    for v in secret_variables() {
        cmd.env_remove(v);
    }
    // SAFETY: the closure runs in the forked child before exec and only makes system
    // calls (close_range; on kernels before 5.11 fcntl over a /proc/self/fd listing,
    // which allocates: the only other thread then, the cleanup thread, holds no lock
    // while it waits for a signal).
    unsafe {
        cmd.pre_exec(|| {
            fds::cloexec_from(3);
            Ok(())
        });
    }
    let st = cmd
        .status()
        .map_err(|e| script_error(ctx, script, format!("could not start: {e}")))?;
    if st.success() {
        return Ok(());
    }
    Err(script_error(ctx, script, format!("failed ({st})")))
}

/// The variables that carry a key's secret (a passphrase, a private key's text):
/// never passed to a script. (The peers' `*_ENCRYPTION_PEM_PATH` only names a file.)
fn secret_variables() -> Vec<String> {
    crate::crypt::source::ENV_PREFIXES
        .iter()
        .flat_map(|p| {
            [
                format!("{p}ENCRYPTION_PASSPHRASE"),
                format!("{p}ENCRYPTION_PEM_DATA"),
            ]
        })
        .collect()
}

/// How a forked process tells whether its parent still lives.
enum Parent<'a> {
    /// Its pid, which getppid() gives while the parent lives.
    Pid(Pid),
    /// A pidfd, for a parent outside the process's PID namespace (getppid() gives 0
    /// there, alive or not); none on kernels before 5.3.
    PidFd(Option<BorrowedFd<'a>>),
}

/// Kills this process when its parent dies, and ends it now should the parent have
/// died before the death signal was armed (this process would then be an orphan).
fn die_with(parent: Parent<'_>) {
    // It cannot fail for a valid signal.
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    if parent_gone(&parent) {
        // SAFETY: _exit ends this process without running the parent's destructors.
        unsafe { libc::_exit(1) }
    }
}

fn parent_gone(parent: &Parent<'_>) -> bool {
    match *parent {
        Parent::Pid(p) => nix::unistd::getppid() != p,
        Parent::PidFd(fd) => fd.is_some_and(fds::has_exited),
    }
}

/// Who runs the build, as far as its scripts' namespaces go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Runner {
    /// uid 0 of the initial user namespace: no user namespace, a UTS one of its own.
    RealRoot,
    /// Root of a user namespace: the build's own (made when it started), or one it
    /// was started in.
    RootInUserns,
    /// Anyone else, in no user namespace of the build's: one is made for the script,
    /// which an unprivileged process can do only while it is dumpable (holds no key).
    Unprivileged { uid: u32, gid: u32, dumpable: bool },
}

impl Runner {
    fn current() -> Self {
        if super::rootcaps::real_root() {
            return Runner::RealRoot;
        }
        let uid = nix::unistd::getuid();
        if uid.is_root() {
            return Runner::RootInUserns;
        }
        Runner::Unprivileged {
            uid: uid.as_raw(),
            gid: nix::unistd::getgid().as_raw(),
            dumpable: nix::sys::prctl::get_dumpable().unwrap_or(false),
        }
    }
}

/// The script's namespaces: a mount namespace for its root (with a UTS namespace for
/// real root, inside a user namespace for a caller that has none), then the PID
/// namespace whose first process the script becomes. `earlier` is why the build
/// could not make its user namespace when it started, if it could not.
fn enter_namespaces<S: Sys>(
    sys: &S,
    runner: Runner,
    earlier: Option<Arc<UsernsError>>,
) -> Result<(), SandboxError> {
    use nix::sched::CloneFlags;
    match runner {
        Runner::RealRoot => sys
            .unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS)
            .op("making mount and UTS namespaces")?,
        Runner::RootInUserns => sys
            .unshare(CloneFlags::CLONE_NEWNS)
            .op("making a mount namespace")?,
        Runner::Unprivileged { uid, gid, dumpable } => {
            if let Some(e) = earlier {
                return Err(SandboxError::EarlierUserns(e));
            }
            if !dumpable {
                return Err(SandboxError::NoUsernsBeforeKey);
            }
            sys.enter_userns(uid, gid, 0, 0)?;
        }
    }
    // Required: a /proc of the host's PID namespace would show the build process.
    sys.unshare(CloneFlags::CLONE_NEWPID)
        .op("making a PID namespace")
}

/// The child's side: namespaces; the script runs as PID 1 of the new PID namespace in
/// a grandchild, so when it ends (or veil dies) every process it started ends too.
/// Returns only on error.
fn child(build: Pid, root: &Path, argv: &[CString], envp: &[CString]) -> SandboxError {
    die_with(Parent::Pid(build));
    let sys = RealSys::new();
    if let Err(e) = enter_namespaces(&sys, Runner::current(), super::subids::entry_error()) {
        return e;
    }
    let me = fds::pidfd_of_self();
    // SAFETY: this process is single-threaded (a fresh fork); the grandchild only
    // makes syscalls and execs or exits.
    match unsafe { fork() } {
        Err(err) => return SandboxError::Call { op: "fork", err },
        Ok(ForkResult::Child) => {}
        Ok(ForkResult::Parent { child }) => {
            // The pidfd goes first: close_from closes every number, and an owned
            // descriptor must not be closed twice.
            drop(me);
            fds::close_from(3);
            loop {
                let code = match waitpid(child, None) {
                    Ok(WaitStatus::Exited(_, c)) => c,
                    Ok(WaitStatus::Signaled(_, s, _)) => 128 + s as i32,
                    Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
                    Err(err) => return SandboxError::Call { op: "waitpid", err },
                };
                // SAFETY: _exit ends this intermediate process with the script's
                // status, running no destructors of the forked parent's state.
                unsafe { libc::_exit(code) }
            }
        }
    }
    die_with(Parent::PidFd(me.as_ref().map(|f| f.as_fd())));
    let real_root = super::rootcaps::real_root();
    if let Err(e) = super::isolate::enter_root(&sys, root, real_root) {
        return e;
    }
    // Only stdin, stdout and stderr reach the script: the build's own descriptors,
    // and any the caller passed in (a `--passphrase-fd` or `--pem-fd` among them), do not.
    fds::cloexec_from(3);
    if real_root && let Err(e) = super::rootcaps::drop_to_build_set() {
        return e;
    }
    match nix::unistd::execve(&argv[0], argv, envp) {
        Err(err) => SandboxError::Exec {
            program: argv[0].to_string_lossy().into_owned(),
            err,
        },
        Ok(never) => match never {},
    }
}

/// Runs a script inside `root` as root of a new user namespace.
pub fn run_in_root(
    ctx: &Context<'_>,
    script: &Script,
    root: &Path,
    extra_env: &[(String, String)],
) -> Result<()> {
    let a = argv(script, ctx.trace);
    let mut vars = vec![
        ("PATH".to_string(), BUILD_PATH.to_string()),
        ("HOME".into(), "/root".into()),
        ("LANG".into(), "C".into()),
        ("APPTAINER_ROOTFS".into(), "/".into()),
        (
            "APPTAINER_ENVIRONMENT".into(),
            "/.singularity.d/env/91-environment.sh".into(),
        ),
        (
            "SINGULARITY_ENVIRONMENT".into(),
            "/.singularity.d/env/91-environment.sh".into(),
        ),
    ];
    if let Ok(t) = std::env::var("TERM") {
        vars.push(("TERM".into(), t));
    }
    vars.extend(extra_env.iter().cloned());
    let e = envp(&vars);
    let build = nix::unistd::getpid();
    // SAFETY: the only other thread of the build now is the cleanup thread, which
    // holds no lock while it waits for a signal (the squashfs writer's workers exist
    // only while an image is written); so the child may allocate and take the
    // entry-error lock; it makes system calls, formats a message and exits or execs.
    match unsafe { fork() } {
        Err(e) => Err(script_error(
            ctx,
            script,
            format!("could not start: fork: {e}"),
        )),
        Ok(ForkResult::Child) => {
            super::cleanup::unblock_in_child();
            let msg = child(build, root, &a, &e);
            eprintln!("veil build: %{}: {msg}", ctx.section);
            // SAFETY: _exit ends the child without running the parent's destructors.
            unsafe { libc::_exit(127) }
        }
        Ok(ForkResult::Parent { child }) => loop {
            super::cleanup::set_child(child.as_raw());
            match waitpid(child, None) {
                Ok(st @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => {
                    super::cleanup::set_child(0);
                    while super::cleanup::interrupted() {
                        // The cleanup thread is removing the temporaries and exits.
                        std::thread::park();
                    }
                    return status_error(ctx, script, st);
                }
                Ok(_) => continue,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    while super::cleanup::interrupted() {
                        std::thread::park();
                    }
                    return Err(script_error(
                        ctx,
                        script,
                        format!("could not be waited for: waitpid: {e}"),
                    ));
                }
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use nix::sched::CloneFlags;

    use super::*;
    use crate::support::sys::recording::{Call, RecordingSys};

    fn entered(runner: Runner, earlier: Option<Arc<UsernsError>>) -> (Vec<Call>, Option<String>) {
        let sys = RecordingSys::default();
        let r = enter_namespaces(&sys, runner, earlier);
        (sys.calls(), r.err().map(|e| e.to_string()))
    }

    const PID: Call = Call::Unshare(CloneFlags::CLONE_NEWPID);

    /// An unprivileged caller (uid 1000, gid 100), holding a key unless `dumpable`.
    fn unprivileged(dumpable: bool) -> Runner {
        Runner::Unprivileged {
            uid: 1000,
            gid: 100,
            dumpable,
        }
    }

    #[test]
    fn a_parent_that_is_gone_is_seen_by_pid_and_by_pidfd() {
        assert!(!parent_gone(&Parent::Pid(nix::unistd::getppid())));
        assert!(
            parent_gone(&Parent::Pid(Pid::from_raw(1))) || nix::unistd::getppid().as_raw() == 1
        );
        let me = fds::pidfd_of_self().expect("pidfd_open (Linux 5.3)");
        assert!(!parent_gone(&Parent::PidFd(Some(me.as_fd()))));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pidfd = fds::pidfd_of(Pid::from_raw(child.id() as i32)).unwrap();
        child.wait().unwrap();
        assert!(parent_gone(&Parent::PidFd(Some(pidfd.as_fd()))));
        // No pidfd (an old kernel): nothing to tell by.
        assert!(!parent_gone(&Parent::PidFd(None)));
    }

    #[test]
    fn real_root_gets_mount_uts_and_pid_namespaces_and_no_user_namespace() {
        let (calls, err) = entered(Runner::RealRoot, None);
        assert_eq!(err, None);
        assert_eq!(
            calls,
            [
                Call::Unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS),
                PID
            ]
        );
    }

    #[test]
    fn root_of_the_builds_user_namespace_makes_no_other() {
        let (calls, err) = entered(Runner::RootInUserns, None);
        assert_eq!(err, None);
        assert_eq!(calls, [Call::Unshare(CloneFlags::CLONE_NEWNS), PID]);
    }

    #[test]
    fn an_unprivileged_caller_is_root_of_a_user_namespace_of_its_own() {
        let runner = unprivileged(true);
        let (calls, err) = entered(runner, None);
        assert_eq!(err, None);
        assert_eq!(
            calls,
            [
                Call::EnterUserns {
                    uid: 1000,
                    gid: 100,
                    inner_uid: 0,
                    inner_gid: 0
                },
                PID
            ]
        );
    }

    #[test]
    fn a_process_holding_a_key_or_a_failed_entry_makes_no_namespace() {
        let holding_key = unprivileged(false);
        let (calls, err) = entered(holding_key, None);
        assert_eq!(calls, []);
        assert!(err.unwrap().contains("before the build read its key"));

        let dumpable = unprivileged(true);
        let (calls, err) = entered(dumpable, Some(Arc::new(UsernsError::Disabled)));
        assert_eq!(calls, []);
        assert!(err.unwrap().contains("max_user_namespaces = 0"));
    }
}
