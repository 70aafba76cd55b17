//! What ends an instance besides `instance stop`, watched by threads of its launcher:
//! the Slurm job step that started it, and — for a shared session (`--sharens`) — the
//! last member leaving. Either way the instance is stopped as `instance stop` would:
//! SIGTERM to its init, SIGKILL after a grace period.

#![forbid(unsafe_code)]

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::state::{self, Dir};

/// How long an instance ended this way has between SIGTERM and SIGKILL.
const GRACE: Duration = Duration::from_secs(10);

#[derive(Default)]
pub struct Watch {
    /// A pidfd of the `slurmstepd` the instance was started under.
    pub slurm_step: Option<OwnedFd>,
    pub members: Option<Members>,
}

/// A shared session's members: they hold `members` shared while they run; whoever
/// starts or joins holds `create` while doing so (lock files in `dir`).
pub struct Members {
    pub dir: Arc<Dir>,
    pub members: String,
    pub create: String,
    /// Removed once the session ends, before any later arrival can look: its logs and
    /// the lock files (still held; arrivals that waited on them see that they were
    /// replaced). Its record goes too, if it is still this session's.
    pub remove: Vec<String>,
}

/// Under Slurm, the job step that started this process: an instance started in a
/// batch script or an `srun` ends with it, as it would in the step's cgroup.
pub fn slurm_step() -> Option<OwnedFd> {
    std::env::var_os("SLURM_JOB_ID")?;
    let mut pid = nix::unistd::getppid().as_raw();
    for _ in 0..64 {
        if pid <= 1 {
            break;
        }
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim_end() == "slurmstepd" {
            return crate::support::fds::pidfd_of(Pid::from_raw(pid));
        }
        pid = state::parent_of(pid)?;
    }
    None
}

impl Watch {
    /// The descriptors the watch needs kept open.
    pub fn raw_fds(&self) -> Vec<RawFd> {
        let mut v = Vec::new();
        if let Some(fd) = &self.slurm_step {
            v.push(fd.as_raw_fd());
        }
        if let Some(m) = &self.members {
            v.push(m.dir.raw_fd());
        }
        v
    }

    /// Starts the watching threads, which stop instance `name` whose init is `init`.
    /// A thread that cannot be started is reported in the instance's error log.
    pub fn start(self, name: &str, init: Pid) {
        let spawn = |f: Box<dyn FnOnce() + Send>| {
            if let Err(e) = std::thread::Builder::new()
                .name("veil-watch".into())
                .spawn(f)
            {
                crate::say_warn!("veil: warning: cannot watch the instance: {e}");
            }
        };
        if let Some(pidfd) = self.slurm_step {
            spawn(Box::new(move || {
                use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
                let mut p = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
                loop {
                    match poll(&mut p, PollTimeout::NONE) {
                        Err(nix::errno::Errno::EINTR) => {}
                        Err(_) => return,
                        Ok(_) => break,
                    }
                }
                stop(init);
            }));
        }
        if let Some(m) = self.members {
            let name = name.to_string();
            spawn(Box::new(move || {
                let _held = last_member_gone(&m.dir, &m.members, &m.create);
                let me = std::process::id() as i32;
                let start = state::start_time(me).unwrap_or(0);
                state::remove_if_of(&m.dir, &name, me, start);
                for f in &m.remove {
                    m.dir.remove_file(f);
                }
                stop(init);
                // `_held` (the creation lock) goes with this process: no one joins a
                // session that is ending.
                std::thread::sleep(GRACE * 2);
            }));
        }
    }
}

/// Waits until no member holds `members` and no one is starting or joining (holding
/// `create`); returns both locks, held.
fn last_member_gone(dir: &Dir, members: &str, create: &str) -> (Flock<File>, Flock<File>) {
    loop {
        let Ok(held) = super::sharens::lock(dir, members, FlockArg::LockExclusive) else {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        };
        // Members arrive only through `create`: once it is held too, none can.
        if let Ok(c) = super::sharens::lock(dir, create, FlockArg::LockExclusiveNonblock) {
            return (held, c);
        }
        // Someone is arriving: let them take their share.
        drop(held);
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Stops the instance as `instance stop` does, through a pidfd where there is one (the
/// init may have been reaped, and its pid taken, by the time the grace has passed).
fn stop(init: Pid) {
    use crate::support::fds::{pidfd_of, pidfd_send_signal};
    let fd = pidfd_of(init);
    let send = |sig| match &fd {
        Some(fd) => drop(pidfd_send_signal(fd.as_fd(), sig)),
        None => drop(kill(init, sig)),
    };
    send(Signal::SIGTERM);
    std::thread::sleep(GRACE);
    send(Signal::SIGKILL);
}
