//! Stopping an instance and measuring it, from /proc: no cgroup and no D-Bus.
//!
//! An instance's processes are its launcher and every process in its container's
//! mount namespace (which only the instance and the processes joined to it are in):
//! that is what `stop` ends and `stats` counts.

#![forbid(unsafe_code)]

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::state::{self, State};

/// The mount namespace of the instance's container (its init's), while it runs.
pub fn mount_ns(s: &State) -> Option<u64> {
    let ino = fs::metadata(format!("/proc/{}/ns/mnt", s.init)).ok()?.ino();
    state::alive(s.init, s.init_start).then_some(ino)
}

/// The user's processes in mount namespace `ns`.
fn in_namespace(ns: u64) -> Vec<i32> {
    let uid = nix::unistd::geteuid().as_raw();
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let base = format!("/proc/{pid}");
            fs::metadata(&base).is_ok_and(|m| m.uid() == uid)
                && fs::metadata(format!("{base}/ns/mnt")).is_ok_and(|m| m.ino() == ns)
        })
        .collect()
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
pub fn stop(s: &State, o: StopOptions) -> bool {
    let ns = mount_ns(s);
    if state::alive(s.init, s.init_start) {
        let _ = kill(Pid::from_raw(s.init), o.signal);
    }
    let gone = wait_gone(s, o.timeout);
    if !gone {
        if state::alive(s.init, s.init_start) {
            let _ = kill(Pid::from_raw(s.init), Signal::SIGKILL);
        }
        if s.running() {
            let _ = kill(Pid::from_raw(s.launcher), Signal::SIGKILL);
        }
        wait_gone(s, Duration::from_secs(5));
    }
    // Joined processes, outside the init's tree: they go with the instance.
    if let Some(ns) = ns {
        for _ in 0..100 {
            let left = in_namespace(ns);
            if left.is_empty() {
                break;
            }
            for pid in left {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
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
pub fn stats(s: &State, interval: Duration) -> Stats {
    let procs = || {
        let mut v = mount_ns(s).map(in_namespace).unwrap_or_default();
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
    fn this_process_has_cpu_time_and_memory() {
        let (_, rss) = cpu_and_rss(std::process::id() as i32).unwrap();
        assert!(rss > 0);
        assert!(mem_total() > 0);
    }
}
