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

/// Takes the end of the launcher's namespaces off the caller's wait.
///
/// When the last process of a mount namespace exits, the kernel dismantles its mounts
/// (the FUSE connection, the staging tmpfs) and the address space before the parent
/// learns the exit status: about 1.5 ms of a container's start-to-finish time. This
/// starts a helper that shares the launcher's memory and namespaces and does nothing
/// but die with the launcher (its death signal), so the launcher's own exit only drops
/// references and the dismantling happens in the helper's exit, after the caller has
/// its status. The helper holds no file descriptors (a caller reading the launcher's
/// output sees end-of-file when the launcher exits) and lives for as long as the
/// kernel takes to deliver the signal. Without it, nothing changes but the timing.
pub fn hand_over_teardown() {
    const STACK: usize = 64 * 1024;
    // The helper runs on this stack after the launcher has gone: it is never freed (the
    // memory goes with the helper's address space).
    let stack: &'static mut [u8] = Box::leak(vec![0u8; STACK].into_boxed_slice());
    let parent = std::process::id() as libc::c_int;
    // SAFETY: `stack` is valid, writable, 16-byte aligned at its top (rounded down
    // below) and outlives the helper (leaked). With CLONE_VM the helper shares the
    // launcher's memory, so it runs only `holder`, which makes raw system calls on its
    // own stack and touches no shared state. SIGCHLD as its exit signal lets whoever
    // adopts it reap it normally.
    unsafe {
        let top = stack.as_mut_ptr().add(STACK) as usize & !15;
        let _ = libc::clone(
            holder,
            top as *mut libc::c_void,
            libc::CLONE_VM | libc::SIGCHLD,
            parent as usize as *mut libc::c_void,
        );
    }
}

/// The teardown helper's whole life: die with the launcher.
extern "C" fn holder(parent: *mut libc::c_void) -> libc::c_int {
    // SAFETY: plain system calls with constant arguments; no memory is touched but this
    // stack frame.
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        );
        // No descriptor of the launcher's may outlive it here: not its output (a
        // reader would wait for end-of-file) and not /dev/fuse (the connection must end).
        libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32);
        if libc::getppid() != parent as usize as libc::c_int {
            libc::_exit(0);
        }
        loop {
            libc::pause();
        }
    }
}

pub use crate::support::spawn::spawn_shared;
