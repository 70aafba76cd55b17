//! The container's init: the process between the launcher and the container's action,
//! which makes sure that nothing the container starts outlives the launcher.
//!
//! It is the container process that set up the namespaces and mounts, turned — once the
//! action has been started — into the veil binary again (an `exec` of the launcher's
//! own executable, named [`ARGV0`]), so that it holds none of the launcher's memory
//! (an encrypted image's key) or descriptors, and the launcher's thread that shares its
//! memory until then goes on. It has one of two jobs:
//!
//! - With `--pid` it is PID 1 of the container's PID namespace. When PID 1 ends, the
//!   kernel kills every other process of the namespace, daemons that left the session
//!   included; it ends with the action, and its parent-death signal (SIGKILL) ends it
//!   with the launcher, however the launcher dies.
//! - Without `--pid` the container shares the host's PID namespace (`ps` and `kill`
//!   inside see the host's processes and numbers, as in Apptainer). The init is then a
//!   child subreaper: whatever the container leaves orphaned (a double fork, a setsid
//!   daemon) becomes its child instead of the host init's. When the action ends, or the
//!   launcher dies (its parent-death signal is [`LAUNCHER_GONE`]), it kills its
//!   children until it has none left, and ends.
//!
//! Either way it reaps orphans and passes the signals that other processes send it (the
//! launcher forwards what it receives) on to the action, and exits with the action's
//! status in the shell's convention.
//!
//! An instance's init ([`Lifetime::Instance`]) outlives its action (the startscript):
//! the instance runs until a process sends it one of [`STOP`] (`veil instance stop`,
//! or the launcher passing one on). It then passes that signal to every process of
//! the container it can find, those it adopts later included, and ends once none is
//! left (`veil instance stop` sends SIGKILL after its timeout). Other signals sent to
//! it are passed on to the container's processes and end nothing.

use std::ffi::OsString;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::process::ExitCode;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::process::{FORWARDED, exit_code, wait_set};

/// The name the init runs under (its `argv[0]`), by which `main` recognises it.
pub const ARGV0: &str = "veil-init";

/// The parent-death signal of a subreaper init: outside the forwarded set, blocked from
/// the container process's start, and so waited for like the others.
pub const LAUNCHER_GONE: Signal = Signal::SIGPWR;

/// The signals that end an instance (passed on to its processes first).
pub const STOP: [Signal; 4] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
];

/// How long the init lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifetime {
    /// As long as the action.
    Action,
    /// Until stopped: an instance.
    Instance,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// PID 1 of the container's PID namespace.
    PidOne,
    /// A child subreaper in the host's PID namespace, with the host's /proc open.
    Subreaper,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::PidOne => "pid1",
            Role::Subreaper => "subreaper",
        }
    }
}

/// The command line the container process execs itself into: role, the launcher's
/// pid (as the init sees it; 0 in a PID namespace, where it is not visible), the
/// action's pid, the descriptor of the host's /proc for a subreaper ("-" without), and
/// the lifetime.
pub fn argv(
    role: Role,
    launcher: Pid,
    action: Pid,
    proc_fd: Option<RawFd>,
    lifetime: Lifetime,
) -> [std::ffi::CString; 6] {
    let c = |s: String| std::ffi::CString::new(s).expect("no NUL");
    [
        c(ARGV0.into()),
        c(role.as_str().into()),
        c(launcher.to_string()),
        c(action.to_string()),
        c(proc_fd.map_or_else(|| "-".into(), |fd| fd.to_string())),
        c(match lifetime {
            Lifetime::Action => "action".into(),
            Lifetime::Instance => "instance".into(),
        }),
    ]
}

/// In `main`, before anything else: when this process is a container's init, runs it
/// and returns its exit status.
pub fn main_if_init() -> Option<ExitCode> {
    let mut args = std::env::args_os();
    if args.next()?.as_bytes() != ARGV0.as_bytes() {
        return None;
    }
    let rest: Vec<OsString> = args.collect();
    let parsed = (|| {
        let role = match rest.first()?.to_str()? {
            "pid1" => Role::PidOne,
            "subreaper" => Role::Subreaper,
            _ => return None,
        };
        let pid = |i: usize| {
            rest.get(i)?
                .to_str()?
                .parse::<i32>()
                .ok()
                .map(Pid::from_raw)
        };
        let proc_fd = match rest.get(3)?.to_str()? {
            "-" => None,
            n => Some(n.parse::<RawFd>().ok()?),
        };
        let lifetime = match rest.get(4)?.to_str()? {
            "action" => Lifetime::Action,
            "instance" => Lifetime::Instance,
            _ => return None,
        };
        Some((role, pid(1)?, pid(2)?, proc_fd, lifetime))
    })();
    let Some((role, launcher, action, proc_fd, lifetime)) = parsed else {
        eprintln!("veil: {ARGV0} is started by veil for a container, not by hand");
        return Some(ExitCode::from(2));
    };
    let code = run(role, launcher, action, proc_fd, lifetime);
    Some(ExitCode::from(code.clamp(0, 255) as u8))
}

/// The init's whole life: reap, forward, and end with the action (or, for an
/// instance, when stopped). Returns its status.
pub fn run(
    role: Role,
    launcher: Pid,
    action: Pid,
    proc_fd: Option<RawFd>,
    lifetime: Lifetime,
) -> i32 {
    let mut set = wait_set();
    set.add(LAUNCHER_GONE);
    let _ = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None);
    let launcher_gone = || role == Role::Subreaper && nix::unistd::getppid() != launcher;
    // For an instance: the signal it was stopped with, passed on to every process of
    // the container, those adopted later included.
    let mut stopping: Option<Signal> = None;
    let mut signalled: Vec<Pid> = Vec::new();
    loop {
        let ended = reap(action);
        match (lifetime, ended) {
            (Lifetime::Action, Some(code)) => {
                if role == Role::Subreaper {
                    kill_children(proc_fd);
                }
                // PID 1's exit takes the rest of its namespace with it.
                return code;
            }
            // Stopped, and every process it was passed on to has gone.
            (Lifetime::Instance, Some(_)) if stopping.is_some() && no_children() => return 0,
            _ => {}
        }
        if launcher_gone() {
            kill_children(proc_fd);
            return 128 + libc::SIGKILL;
        }
        if let Some(sig) = stopping {
            signal_all(role, proc_fd, sig, &mut signalled);
        }
        match wait_signal(&set) {
            // Its only job is to wake this loop, which looks at the parent itself.
            Some((sig, _)) if sig == LAUNCHER_GONE => {}
            // An instance's action (the startscript) may be long gone: what a process
            // sends it (`instance stop`, the launcher forwarding) is for the whole
            // container. A stop signal ends the instance once its processes have gone;
            // others (SIGCONT after a Slurm suspend, SIGUSR1) are only passed on.
            Some((sig, true)) if lifetime == Lifetime::Instance && STOP.contains(&sig) => {
                stopping = Some(sig);
                signalled.clear();
                signal_all(role, proc_fd, sig, &mut signalled);
            }
            Some((sig, true)) if lifetime == Lifetime::Instance && sig != Signal::SIGCHLD => {
                signal_all(role, proc_fd, sig, &mut Vec::new());
            }
            Some((sig, from_process)) if from_process && FORWARDED.contains(&sig) => {
                let _ = kill(action, sig);
            }
            _ => {}
        }
    }
}

fn no_children() -> bool {
    matches!(
        waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)),
        Err(Errno::ECHILD)
    )
}

/// Sends `sig` to every process of the container not in `done` yet: as PID 1, the
/// whole PID namespace (once); as a subreaper, its children, and on later calls those
/// it has adopted since (what a signalled process leaves behind).
fn signal_all(role: Role, proc_fd: Option<RawFd>, sig: Signal, done: &mut Vec<Pid>) {
    match role {
        Role::PidOne => {
            if done.is_empty() {
                let _ = kill(Pid::from_raw(-1), sig);
                done.push(Pid::from_raw(-1));
            }
        }
        Role::Subreaper => {
            if let Some(fd) = proc_fd {
                // SAFETY: the descriptor stays open for the init's whole life.
                let _ = nix::unistd::fchdir(unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) });
            }
            for k in children(nix::unistd::getpid()) {
                if !done.contains(&k) {
                    let _ = kill(k, sig);
                    done.push(k);
                }
            }
        }
    }
}

/// Reaps every child that has ended; the action's status once it is among them.
fn reap(action: Pid) -> Option<i32> {
    let mut status = None;
    loop {
        match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => return status,
            Ok(st) if st.pid() == Some(action) => {
                if let Some(code) = exit_code(st) {
                    status = Some(code);
                }
            }
            Ok(_) | Err(Errno::EINTR) => {}
            // No child at all: the action is gone, whatever became of its status.
            Err(_) => return Some(status.unwrap_or(255)),
        }
    }
}

/// The next signal of `set`, and whether a process sent it (rather than the kernel,
/// as for a terminal's Ctrl-C, which reaches the action directly).
fn wait_signal(set: &SigSet) -> Option<(Signal, bool)> {
    // SAFETY: siginfo_t is a plain C struct for which all-zero bytes are valid.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: a valid, initialised set and a writable siginfo_t.
    let sig = unsafe { libc::sigwaitinfo(set.as_ref(), &mut info) };
    let sig = Signal::try_from(sig).ok()?;
    let from_process = matches!(
        info.si_code,
        libc::SI_USER | libc::SI_QUEUE | libc::SI_TKILL
    );
    Some((sig, from_process))
}

/// Kills this process's children until none is left. Each child that dies hands its
/// own children to this subreaper, so repeating until `waitpid` finds none ends the
/// whole tree, however it was forked. `proc_fd` is the host's /proc (this process
/// works in it from here on); without it, the /proc in view.
pub fn kill_children(proc_fd: Option<RawFd>) {
    let none_left = no_children;
    if none_left() {
        return;
    }
    let _ = match proc_fd {
        // SAFETY: the descriptor stays open for the init's whole life.
        Some(fd) => nix::unistd::fchdir(unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }),
        None => nix::unistd::chdir("/proc"),
    };
    let me = nix::unistd::getpid();
    let mut unlisted = 0;
    loop {
        let kids = children(me);
        if kids.is_empty() {
            // A child /proc does not list yet (just adopted), or a zombie just reaped:
            // look again shortly. Children that stay unlisted (no /proc to read) cannot
            // be found: after two seconds they are left, as they would be without veil.
            unlisted += 1;
            if unlisted > 2000 {
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        } else {
            unlisted = 0;
            for k in kids {
                let _ = kill(k, Signal::SIGKILL);
            }
            // At least one of them ends; its children are ours by the time it is reaped.
            let _ = waitpid(None::<Pid>, None);
        }
        if none_left() {
            return;
        }
    }
}

/// The children of `me`, from the /proc that is the working directory: the kernel's
/// list where it keeps one, else every process whose parent is `me`.
fn children(me: Pid) -> Vec<Pid> {
    if let Ok(list) = std::fs::read_to_string(format!("{me}/task/{me}/children")) {
        return list
            .split_whitespace()
            .filter_map(|p| p.parse().ok().map(Pid::from_raw))
            .collect();
    }
    let Ok(dir) = std::fs::read_dir(".") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| parent_of(".", pid) == Some(me.as_raw()))
        .map(Pid::from_raw)
        .collect()
}

/// The parent pid in /proc/PID/stat (the field after the state, which follows the
/// command name in parentheses).
fn parent_of(base: &str, pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("{base}/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    after.split(' ').nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_round_trips() {
        let a = argv(
            Role::Subreaper,
            Pid::from_raw(41),
            Pid::from_raw(42),
            Some(5),
            Lifetime::Action,
        );
        let s: Vec<&str> = a.iter().map(|c| c.to_str().unwrap()).collect();
        assert_eq!(s, [ARGV0, "subreaper", "41", "42", "5", "action"]);
        let a = argv(
            Role::PidOne,
            Pid::from_raw(0),
            Pid::from_raw(2),
            None,
            Lifetime::Instance,
        );
        assert_eq!(a[1].to_str(), Ok("pid1"));
        assert_eq!(a[4].to_str(), Ok("-"));
        assert_eq!(a[5].to_str(), Ok("instance"));
    }

    #[test]
    fn the_parent_is_read_from_stat() {
        let me = std::process::id() as i32;
        let parent = nix::unistd::getppid().as_raw();
        assert_eq!(parent_of("/proc", me), Some(parent));
    }
}
