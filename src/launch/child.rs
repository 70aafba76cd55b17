//! The container process: its namespaces and mounts (through the seam, `steps`), the
//! container's init, and the action's process, which execs what the user asked for.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use nix::fcntl::{OFlag, open};
use nix::sys::signal::{SigmaskHow, Signal, sigprocmask};
use nix::sys::stat::Mode as FileMode;

use super::error::{LaunchError, Result, SysContext};
use super::steps::{self, ContainerNamespaces};
use super::sys::RealSys;
use super::{action, debug_note, debug_time, env, init, plan, process};
use crate::support::fds;

/// What the container process needs from the launcher.
pub(super) struct ChildSetup<'a> {
    /// Where setup errors go (the action's, too, until it execs).
    pub err: &'a mut Option<OwnedFd>,
    /// The launcher's pid, to notice that it died before the death signal was armed.
    pub launcher: nix::unistd::Pid,
    /// A pidfd of the launcher, for the same from inside a PID namespace.
    pub launcher_pidfd: Option<BorrowedFd<'a>>,
    /// The launcher's executable (O_PATH), which the container process execs to become
    /// the container's init.
    pub exe: Option<BorrowedFd<'a>>,
    pub old_mask: nix::sys::signal::SigSet,
    pub ns: ContainerNamespaces,
    pub steps: &'a [plan::Step],
    pub root: &'a Path,
    pub start_dirs: &'a [CString],
    pub argv: &'a action::ActionArgv,
    /// Start `exec`'s program directly, without the action shell (which would source
    /// nothing and only pass the environment on).
    pub direct_first: bool,
    pub lifetime: init::Lifetime,
}

/// The container process: returns only on failure.
pub(super) fn child(s: ChildSetup<'_>) -> LaunchError {
    match child_setup(s) {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

fn child_setup(s: ChildSetup<'_>) -> Result<std::convert::Infallible> {
    let role = if s.ns.pid {
        init::Role::PidOne
    } else {
        init::Role::Subreaper
    };
    // Die with the launcher, whatever kills it. As PID 1 that ends the whole PID
    // namespace; a subreaper is told instead (the signal stays pending until its init
    // loop takes it), and ends what the container started before it goes.
    let mut gone = nix::sys::signal::SigSet::empty();
    gone.add(init::LAUNCHER_GONE);
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&gone), None).ctx("blocking signals")?;
    let death_signal = match role {
        init::Role::PidOne => Signal::SIGKILL,
        init::Role::Subreaper => init::LAUNCHER_GONE,
    };
    nix::sys::prctl::set_pdeathsig(death_signal).ctx("prctl(PR_SET_PDEATHSIG)")?;
    if !launcher_alive(&s) {
        // The launcher died before the death signal was armed: nobody waits for us.
        // SAFETY: _exit ends this process only, without the launcher's destructors.
        unsafe { libc::_exit(1) }
    }
    // A subreaper finds the orphans it must end in the host's /proc.
    let proc_dir = match role {
        init::Role::Subreaper => {
            nix::sys::prctl::set_child_subreaper(true).ctx("prctl(PR_SET_CHILD_SUBREAPER)")?;
            Some(
                open(
                    "/proc",
                    OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
                    FileMode::empty(),
                )
                .ctx("opening /proc")?,
            )
        }
        init::Role::PidOne => None,
    };
    // Once in the staging area, the host's /proc is under `.host`.
    steps::enter_container(
        &RealSys::with_proc(steps::HOST_PROC),
        &s.ns,
        s.steps,
        s.root,
    )?;
    for d in s.start_dirs {
        if nix::unistd::chdir(d.as_c_str()).is_ok() {
            break;
        }
    }
    // The action runs in a child, so that this process can stay as the container's init.
    let me = nix::unistd::getpid();
    let err_fd = s.err.as_ref().map_or(-1, |f| f.as_raw_fd());
    let setup = &s;
    // SAFETY: this process waits until the action has exec'd or exited; the action only
    // prepares and execs (or reports its failure on the error pipe and _exits).
    let action = unsafe {
        process::spawn_shared(
            0,
            Box::new(move || {
                let e = action_child(setup, me);
                let msg = e.to_string();
                libc::write(err_fd, msg.as_ptr().cast(), msg.len());
                libc::_exit(255)
            }),
        )
    }
    .ctx("starting the action")?;
    debug_time("child: action started");
    // The init sees the launcher as its parent, except from inside a PID namespace.
    let launcher = match role {
        init::Role::PidOne => nix::unistd::Pid::from_raw(0),
        init::Role::Subreaper => nix::unistd::getppid(),
    };
    let e = exec_init(
        s.exe,
        role,
        launcher,
        action,
        proc_dir.as_ref().map(|f| f.as_fd()),
        s.lifetime,
    );
    debug_note(&format!(
        "the container's init runs in the container process ({e}); signals sent to the launcher are not passed on"
    ));
    // Without the exec the launcher's thread stays suspended (it shares this memory)
    // until the container ends: the init runs here instead, and only the forwarding
    // of signals sent to the launcher is lost.
    s.err.take();
    let code = init::run(
        role,
        launcher,
        action,
        proc_dir.as_ref().map(|f| f.as_raw_fd()),
        s.lifetime,
    );
    // SAFETY: leave without running destructors that belong to the launcher.
    unsafe { libc::_exit(code) }
}

/// Whether the launcher still lives (the death signal may have been armed too late).
fn launcher_alive(s: &ChildSetup<'_>) -> bool {
    if let Some(fd) = s.launcher_pidfd {
        return !fds::has_exited(fd);
    }
    s.ns.pid || nix::unistd::getppid() == s.launcher
}

/// Execs the launcher's executable as the container's init ([`init::ARGV0`]), with no
/// descriptor but /proc for a subreaper. Returns only on failure.
fn exec_init(
    exe: Option<BorrowedFd<'_>>,
    role: init::Role,
    launcher: nix::unistd::Pid,
    action: nix::unistd::Pid,
    proc_dir: Option<BorrowedFd<'_>>,
    lifetime: init::Lifetime,
) -> nix::errno::Errno {
    use nix::fcntl::{FcntlArg, FdFlag, fcntl};
    let Some(exe) = exe else {
        return nix::errno::Errno::ENOENT;
    };
    fds::cloexec_from(3);
    if let Some(p) = proc_dir {
        let _ = fcntl(p, FcntlArg::F_SETFD(FdFlag::empty()));
    }
    let argv = init::argv(
        role,
        launcher,
        action,
        proc_dir.map(|p| p.as_raw_fd()),
        lifetime,
    );
    let envp: [&std::ffi::CStr; 0] = [];
    // By descriptor (AT_EMPTY_PATH): the file /proc/self/exe named when the launch
    // began, whatever has been put at its path since.
    let e = match nix::unistd::execveat(exe, c"", &argv, &envp, nix::fcntl::AtFlags::AT_EMPTY_PATH)
    {
        Err(e) => e,
        Ok(never) => match never {},
    };
    if let Some(p) = proc_dir {
        let _ = fcntl(p, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
    }
    e
}

/// The action's process: what is left to prepare, then the exec. Returns the error
/// when it could not exec.
fn action_child(s: &ChildSetup<'_>, parent: nix::unistd::Pid) -> LaunchError {
    match action_setup(s, parent) {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

fn action_setup(s: &ChildSetup<'_>, parent: nix::unistd::Pid) -> Result<std::convert::Infallible> {
    // Die with the init (in a PID namespace that is the kernel's doing anyway).
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).ctx("prctl(PR_SET_PDEATHSIG)")?;
    if nix::unistd::getppid() != parent {
        // SAFETY: the init is gone; so is the container.
        unsafe { libc::_exit(1) }
    }
    exec_action(s.argv, s.direct_first, &s.old_mask)
}

/// The last steps of an action's process, wherever it was started (a launch, or a
/// join of a running instance): the signal state and descriptors a program expects,
/// no_new_privs, and the exec. Returns only on failure.
pub(super) fn exec_action(
    argv: &action::ActionArgv,
    direct_first: bool,
    old_mask: &nix::sys::signal::SigSet,
) -> Result<std::convert::Infallible> {
    if argv.with_shell.0.is_empty() {
        // `Action::Hold`: nothing of the image's runs.
        // SAFETY: _exit ends this process only.
        unsafe { libc::_exit(0) }
    }
    // The launcher ignores SIGPIPE (Rust's runtime does), and an ignored signal stays
    // ignored across exec: the action gets the default, as from a shell.
    // SAFETY: this process has its own signal dispositions (no CLONE_SIGHAND).
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    nix::sys::prctl::set_no_new_privs().ctx("prctl(PR_SET_NO_NEW_PRIVS)")?;
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(old_mask), None).ctx("restoring the signal mask")?;
    // Nothing the launcher holds (the FUSE device, the image, key descriptors, pipes)
    // nor anything its caller left open reaches the container.
    fds::cloexec_from(3);
    debug_time("child: exec");
    let sh = CString::new("/bin/sh").expect("no NUL");
    let has_shell = nix::unistd::access(sh.as_c_str(), nix::unistd::AccessFlags::X_OK).is_ok();
    if let Some((argv, envp)) = &argv.direct
        && (direct_first || !has_shell)
    {
        let e = exec_on_path(argv, envp);
        if !has_shell {
            return Err(LaunchError::Exec {
                program: argv[0].to_string_lossy().into_owned(),
                err: e,
            });
        }
        // Not found, not executable, a script without `#!`: the action shell tries
        // again and reports it as Apptainer's would (exit status 127 or 126).
    } else if !has_shell {
        return Err(LaunchError::NoShell);
    }
    let (argv, envp) = &argv.with_shell;
    let e = nix::unistd::execve(&argv[0], argv, envp).unwrap_err();
    Err(LaunchError::Exec {
        program: "/bin/sh in the image".into(),
        err: e,
    })
}

/// execve of `argv[0]`, searched on the PATH of `envp` (the container's, not the
/// launcher's, which execvpe would use) when it has no slash. Returns only on failure.
fn exec_on_path(argv: &[CString], envp: &[CString]) -> nix::errno::Errno {
    use nix::errno::Errno;
    let name = argv[0].as_bytes();
    if name.contains(&b'/') {
        return nix::unistd::execve(&argv[0], argv, envp).unwrap_err();
    }
    let path = path_of(envp);
    let mut failure = Errno::ENOENT;
    for dir in path.split(|&b| b == b':') {
        let dir: &[u8] = if dir.is_empty() { b"." } else { dir };
        let Ok(full) = CString::new([dir, b"/", name].concat()) else {
            continue;
        };
        match nix::unistd::execve(&full, argv, envp).unwrap_err() {
            // As the shell does: keep looking, and report "permission denied" if a
            // candidate existed but could not be run.
            Errno::EACCES => failure = Errno::EACCES,
            Errno::ENOENT | Errno::ENOTDIR => {}
            other => return other,
        }
    }
    failure
}

/// The PATH of a container environment block (the default when it has none).
pub(super) fn path_of(envp: &[CString]) -> &[u8] {
    envp.iter()
        .find_map(|kv| kv.as_bytes().strip_prefix(b"PATH="))
        .unwrap_or(env::DEFAULT_PATH.as_bytes())
}
