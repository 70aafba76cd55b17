//! Stopping an instance and measuring it, from /proc: no cgroup and no D-Bus.
//!
//! An instance's processes are its launcher and every process of the user in its
//! container's user and mount namespaces (which only the instance and the processes
//! joined to it are in): that is what `stop` ends and `stats` counts. Nothing is
//! signalled before the record's processes are checked ([`verify`]), and signals go
//! through pidfds.

#![forbid(unsafe_code)]

use std::fs;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::state::{self, State};

/// An instance's processes, checked: what a record names is only trusted once the
/// processes are seen to be an instance's launcher and init. (A record lives in the
/// home, which containers may write.)
pub struct Checked {
    pub init: OwnedFd,
    pub launcher: OwnedFd,
    /// The container's namespaces: what stop sweeps and stats counts.
    pub ns: Namespaces,
    /// The namespaces, held.
    _held: [fs::File; 2],
}

/// A container's user and mount namespaces (inode numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Namespaces {
    pub user: u64,
    pub mnt: u64,
}

impl Namespaces {
    pub fn of(pid: i32) -> Option<Namespaces> {
        let ino = |n: &str| {
            fs::metadata(format!("/proc/{pid}/ns/{n}"))
                .ok()
                .map(|m| m.ino())
        };
        Some(Namespaces {
            user: ino("user")?,
            mnt: ino("mnt")?,
        })
    }
}

/// Why a record's processes were not taken for an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unverified {
    /// They are gone: the record is stale.
    Gone,
    /// They run, but are not an instance's (a recycled pid, a forged record).
    NotAnInstance,
    /// This kernel has no pidfds (Linux 5.3).
    NoPidfd,
    /// The caller is inside the instance's namespaces.
    Inside,
}

/// Checks that the record's processes are what it says: the init is running
/// `veil-init` for an instance, its parent is the launcher, both are the ones the
/// record names (pidfds opened before the start times are checked, and checked again
/// once everything was read), and the init is in a mount namespace (and, unless the
/// caller is root, a user namespace) other than the caller's. The namespaces are held
/// open, so their numbers are not reused while the caller works with them.
pub fn verify(s: &State) -> Result<Checked, Unverified> {
    use crate::support::fds::{has_exited, pidfd_of};
    if !s.running() {
        return Err(Unverified::Gone);
    }
    let init = pidfd_of(Pid::from_raw(s.init));
    let launcher = pidfd_of(Pid::from_raw(s.launcher));
    let (Some(init), Some(launcher)) = (init, launcher) else {
        return Err(
            if pidfd_of(Pid::from_raw(std::process::id() as i32)).is_none() {
                Unverified::NoPidfd
            } else {
                Unverified::Gone
            },
        );
    };
    if !state::alive(s.init, s.init_start) || !state::alive(s.launcher, s.launcher_start) {
        return Err(Unverified::Gone);
    }
    let is_instance = state::parent_of(s.init) == Some(s.launcher)
        && fs::read(format!("/proc/{}/cmdline", s.init)).is_ok_and(|c| {
            let args: Vec<&[u8]> = c.split(|&b| b == 0).collect();
            args.first() == Some(&crate::launch::init::ARGV0.as_bytes())
                && args.contains(&&b"instance"[..])
        });
    if !is_instance {
        return Err(Unverified::NotAnInstance);
    }
    let held = ["user", "mnt"].map(|n| fs::File::open(format!("/proc/{}/ns/{n}", s.init)));
    let [Ok(user_ns), Ok(mnt_ns)] = held else {
        return Err(Unverified::Gone);
    };
    let ino = |f: &fs::File| f.metadata().map(|m| m.ino()).unwrap_or(0);
    let ns = Namespaces {
        user: ino(&user_ns),
        mnt: ino(&mnt_ns),
    };
    let mine = Namespaces::of(std::process::id() as i32).ok_or(Unverified::Gone)?;
    let root = nix::unistd::geteuid().is_root();
    if ns.mnt == mine.mnt || (!root && ns.user == mine.user) {
        return Err(Unverified::Inside);
    }
    // What was read above was read of the processes the pidfds name.
    if has_exited(init.as_fd()) || has_exited(launcher.as_fd()) {
        return Err(Unverified::Gone);
    }
    Ok(Checked {
        init,
        launcher,
        ns,
        _held: [user_ns, mnt_ns],
    })
}

/// The user's processes in the namespaces `ns`, this process excepted.
fn in_namespaces(ns: Namespaces) -> Vec<i32> {
    let uid = nix::unistd::geteuid().as_raw();
    let me = std::process::id() as i32;
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me && real_uid(pid) == Some(uid) && Namespaces::of(pid) == Some(ns))
        .collect()
}

/// The real uid of `pid`, from its status (its /proc directory belongs to root when it
/// is not dumpable).
fn real_uid(pid: i32) -> Option<u32> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Kills what is left in the container's namespaces: processes joined to it, which
/// are outside its init's tree.
pub fn sweep(ns: Namespaces) {
    for _ in 0..100 {
        let left = in_namespaces(ns);
        if left.is_empty() {
            return;
        }
        for pid in left {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// How a stop goes.
#[derive(Debug, Clone, Copy)]
pub struct StopOptions {
    /// Sent first (SIGTERM unless asked otherwise; SIGKILL with --force).
    pub signal: Signal,
    /// Then SIGKILL for what is left.
    pub timeout: Duration,
}

/// Whether the instance ended before the timeout (else it was killed).
pub fn stop(s: &State, c: &Checked, o: StopOptions) -> bool {
    use crate::support::fds::pidfd_send_signal;
    let _ = pidfd_send_signal(c.init.as_fd(), o.signal);
    let mut gone = wait_gone(s, o.timeout);
    if !gone {
        let _ = pidfd_send_signal(c.init.as_fd(), Signal::SIGKILL);
        // The launcher ends what its init leaves (as a subreaper) before it goes.
        if !wait_gone(s, Duration::from_secs(2)) {
            let _ = pidfd_send_signal(c.launcher.as_fd(), Signal::SIGKILL);
            wait_gone(s, Duration::from_secs(5));
        }
        gone = false;
    }
    sweep(c.ns);
    gone
}

fn wait_gone(s: &State, timeout: Duration) -> bool {
    let t = Instant::now();
    while s.running() {
        if t.elapsed() >= timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// An instance's use of the machine.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Stats {
    pub name: String,
    pub pids: usize,
    /// CPU time used since the start, all processes, seconds.
    pub cpu_seconds: f64,
    /// CPU use over the sampling interval, in percent of one CPU.
    pub cpu_percent: f64,
    /// Resident memory, all processes, bytes.
    pub memory_bytes: u64,
    /// The machine's memory, bytes.
    pub memory_limit_bytes: u64,
}

/// Samples the instance's processes twice, `interval` apart.
pub fn stats(s: &State, c: &Checked, interval: Duration) -> Stats {
    let procs = || {
        let mut v = in_namespaces(c.ns);
        if s.running() && !v.contains(&s.launcher) {
            v.push(s.launcher);
        }
        v
    };
    let tick = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .unwrap_or(4096) as u64;
    let sample = |pids: &[i32]| {
        pids.iter()
            .filter_map(|p| cpu_and_rss(*p))
            .fold((0u64, 0u64), |(c, r), (c2, r2)| (c + c2, r + r2))
    };
    let first = procs();
    let (cpu0, _) = sample(&first);
    let t = Instant::now();
    std::thread::sleep(interval);
    let now = procs();
    let (cpu1, rss) = sample(&now);
    let secs = t.elapsed().as_secs_f64();
    Stats {
        name: s.name.clone(),
        pids: now.len(),
        cpu_seconds: cpu1 as f64 / tick,
        cpu_percent: (cpu1.saturating_sub(cpu0) as f64 / tick) / secs * 100.0,
        memory_bytes: rss * page,
        memory_limit_bytes: mem_total(),
    }
}

/// utime + stime (ticks) and resident pages of `pid`.
fn cpu_and_rss(pid: i32) -> Option<(u64, u64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let f: Vec<&str> = stat[stat.rfind(')')? + 2..].split(' ').collect();
    let n = |i: usize| f.get(i)?.parse::<u64>().ok();
    Some((n(11)? + n(12)?, n(21)?))
}

fn mem_total() -> u64 {
    fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_real_uid_is_read_from_the_status() {
        let me = std::process::id() as i32;
        assert_eq!(real_uid(me), Some(nix::unistd::getuid().as_raw()));
    }

    #[test]
    fn this_process_has_cpu_time_and_memory() {
        let (_, rss) = cpu_and_rss(std::process::id() as i32).unwrap();
        assert!(rss > 0);
        assert!(mem_total() > 0);
    }
}
