//! What ends an instance besides `instance stop`, watched by a thread of its launcher:
//! the Slurm job step that started it, or — for a shared session (`--sharens`) — the
//! last member leaving. Either way the instance is stopped as `instance stop` would:
//! SIGTERM to its init, SIGKILL after a grace period.

#![forbid(unsafe_code)]

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use super::state::Dir;
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// How long an instance ended this way has between SIGTERM and SIGKILL.
const GRACE: Duration = Duration::from_secs(10);

pub enum Watch {
    Nothing,
    /// A pidfd of the `slurmstepd` the instance was started under.
    SlurmStep(OwnedFd),
    /// A shared session: members hold `members` shared while they run; whoever starts
    /// or joins holds `create` while doing so.
    Members {
        dir: Arc<Dir>,
        members: String,
        create: String,
        /// Removed once the session ends, before any later arrival can look: its
        /// state, its logs and the lock files (still held; arrivals that waited on
        /// them see that they were replaced).
        remove: Vec<String>,
    },
}

impl Watch {
    /// Under Slurm, the job step that started this process: an instance started in a
    /// batch script or an `srun` ends with it, as it would in the step's cgroup.
    pub fn slurm_step() -> Watch {
        if std::env::var_os("SLURM_JOB_ID").is_none() {
            return Watch::Nothing;
        }
        let mut pid = nix::unistd::getppid().as_raw();
        for _ in 0..64 {
            if pid <= 1 {
                break;
            }
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim_end() == "slurmstepd" {
                return crate::support::fds::pidfd_of(Pid::from_raw(pid))
                    .map_or(Watch::Nothing, Watch::SlurmStep);
            }
            match super::state::parent_of(pid) {
                Some(p) => pid = p,
                None => break,
            }
        }
        Watch::Nothing
    }

    /// Starts the watching thread, which stops the instance whose init is `init`.
    pub fn start(self, init: Pid) {
        let spawn = |f: Box<dyn FnOnce() + Send>| {
            let _ = std::thread::Builder::new()
                .name("veil-watch".into())
                .spawn(f);
        };
        match self {
            Watch::Nothing => {}
            Watch::SlurmStep(pidfd) => spawn(Box::new(move || {
                use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
                let mut p = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
                while poll(&mut p, PollTimeout::NONE).is_err() {}
                stop(init);
            })),
            Watch::Members {
                dir,
                members,
                create,
                remove,
            } => spawn(Box::new(move || {
                let _held = last_member_gone(&dir, &members, &create);
                for f in &remove {
                    dir.remove_file(f);
                }
                stop(init);
                // `_held` (the creation lock) goes with this process: no one joins a
                // session that is ending.
                std::thread::sleep(GRACE * 2);
            })),
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

/// Stops the instance as `instance stop` does.
fn stop(init: Pid) {
    let _ = kill(init, Signal::SIGTERM);
    std::thread::sleep(GRACE);
    let _ = kill(init, Signal::SIGKILL);
}
