//! The launcher's side of the container's life: forwarding signals, reaping, and turning
//! the container's end into an exit status.

use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// Signals the launcher passes on to the container when another process sends them.
pub const FORWARDED: [Signal; 8] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGALRM,
    Signal::SIGCONT,
];

/// The set the launcher waits on: the forwarded signals and SIGCHLD.
pub fn wait_set() -> SigSet {
    let mut set = SigSet::empty();
    for s in FORWARDED {
        set.add(s);
    }
    set.add(Signal::SIGCHLD);
    set
}

/// Blocks the wait set in the calling thread (and so in every thread started later),
/// returning the previous mask for the child to restore before `exec`.
pub fn block_signals() -> nix::Result<SigSet> {
    let mut old = SigSet::empty();
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&wait_set()), Some(&mut old))?;
    Ok(old)
}

/// An exit status in the shell's convention: the code, or 128 + the signal.
pub fn exit_code(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, sig, _) => Some(128 + sig as i32),
        _ => None,
    }
}

/// Waits for `child`, forwarding signals that other processes send to the launcher.
/// Signals the terminal sends (Ctrl-C) already reach the container, which is in the same
/// foreground process group, so they are not sent twice.
pub fn supervise(child: Pid) -> i32 {
    let set = wait_set();
    loop {
        // Reap first: SIGCHLD may have arrived before we started waiting.
        match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(st) => {
                if let Some(code) = exit_code(st) {
                    return code;
                }
            }
            Err(nix::errno::Errno::ECHILD) => return 255,
            Err(_) => {}
        }
        let mut info: libc::siginfo_t = unsafe_zeroed_siginfo();
        // SAFETY: `set` is a valid, initialised signal set and `info` a writable
        // siginfo_t; sigwaitinfo only writes into `info`.
        let sig = unsafe { libc::sigwaitinfo(set.as_ref(), &mut info) };
        if sig < 0 || sig == libc::SIGCHLD {
            continue;
        }
        let from_process = info.si_code == libc::SI_USER
            || info.si_code == libc::SI_QUEUE
            || info.si_code == libc::SI_TKILL;
        if from_process && let Ok(s) = Signal::try_from(sig) {
            let _ = kill(child, s);
        }
    }
}

fn unsafe_zeroed_siginfo() -> libc::siginfo_t {
    // SAFETY: siginfo_t is a plain C struct for which all-zero bytes are a valid value.
    unsafe { std::mem::zeroed() }
}

/// PID 1 of a PID namespace: reap every orphan, forward signals to the action, and
/// return the action's status when it ends.
pub fn supervise_as_init(child: Pid) -> i32 {
    let set = wait_set();
    loop {
        loop {
            match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => break,
                Ok(st) if st.pid() == Some(child) => {
                    if let Some(code) = exit_code(st) {
                        return code;
                    }
                }
                Ok(_) => continue,
                Err(_) => return 255,
            }
        }
        let mut info: libc::siginfo_t = unsafe_zeroed_siginfo();
        // SAFETY: as in `supervise`.
        let sig = unsafe { libc::sigwaitinfo(set.as_ref(), &mut info) };
        if sig > 0
            && sig != libc::SIGCHLD
            && let Ok(s) = Signal::try_from(sig)
        {
            let _ = kill(child, s);
        }
    }
}
