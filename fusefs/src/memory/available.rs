//! How much memory this process may still use: MemAvailable, capped by the
//! cgroup (v2 or v1) limit minus the cgroup's current usage.
//!
//! argon2 keyslots can ask for gigabytes; checking first turns an OOM kill (what
//! users of the peers hit: singularity#4162, #4336, #5361) into a clear error.

#![forbid(unsafe_code)]

use std::fs;
use std::path::{Path, PathBuf};

/// Bytes available to this process now, or `None` when nothing could be read
/// (then no check is possible and the caller proceeds).
pub fn available_bytes() -> Option<u64> {
    let meminfo = fs::read_to_string("/proc/meminfo").ok();
    let sys = meminfo.as_deref().and_then(mem_available);
    let cg = fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|c| cgroup_headroom(&c, Path::new("/sys/fs/cgroup")));
    match (sys, cg) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Parses `MemAvailable:  123 kB` from /proc/meminfo.
fn mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// Limit minus usage of the tightest cgroup on the path from ours to the root.
fn cgroup_headroom(proc_cgroup: &str, root: &Path) -> Option<u64> {
    let mut best: Option<u64> = None;
    let mut consider = |limit: Option<u64>, usage: Option<u64>| {
        if let Some(l) = limit {
            let room = l.saturating_sub(usage.unwrap_or(0));
            best = Some(best.map_or(room, |b| b.min(room)));
        }
    };
    for line in proc_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (id, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
        let rel = path.trim_start_matches('/');
        if id == "0" && ctrls.is_empty() {
            // cgroup v2: memory.max / memory.current along the path.
            for dir in ancestors(&root.join(rel), root) {
                consider(
                    read_u64(&dir.join("memory.max")),
                    read_u64(&dir.join("memory.current")),
                );
            }
        } else if ctrls.split(',').any(|c| c == "memory") {
            let base = root.join("memory");
            for dir in ancestors(&base.join(rel), &base) {
                consider(
                    read_u64(&dir.join("memory.limit_in_bytes")),
                    read_u64(&dir.join("memory.usage_in_bytes")),
                );
            }
        }
    }
    best
}

/// `dir` and its parents down to (and including) `root`; inside a container the
/// path from /proc/self/cgroup may not exist, then only `root` is read.
fn ancestors(dir: &Path, root: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = dir
        .ancestors()
        .take_while(|p| p.starts_with(root))
        .map(Path::to_path_buf)
        .collect();
    if out.is_empty() {
        out.push(root.to_path_buf());
    }
    out
}

/// A number from a cgroup file; "max" (v2 unlimited) and huge v1 values read as none.
fn read_u64(p: &Path) -> Option<u64> {
    let s = fs::read_to_string(p).ok()?;
    let n: u64 = s.trim().parse().ok()?;
    // cgroup v1 reports "unlimited" as a page-rounded i64::MAX.
    (n < (1u64 << 62)).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_meminfo() {
        let m = "MemTotal: 100 kB\nMemFree: 5 kB\nMemAvailable:   24003236 kB\n";
        assert_eq!(mem_available(m), Some(24003236 * 1024));
        assert_eq!(mem_available("MemTotal: 1 kB\n"), None);
    }

    #[test]
    fn cgroup_v2_limit_minus_usage() {
        let d = tempfile::tempdir().unwrap();
        let g = d.path().join("user.slice/job");
        fs::create_dir_all(&g).unwrap();
        fs::write(g.join("memory.max"), "1073741824\n").unwrap();
        fs::write(g.join("memory.current"), "73741824\n").unwrap();
        fs::write(d.path().join("user.slice/memory.max"), "max\n").unwrap();
        let room = cgroup_headroom("0::/user.slice/job\n", d.path());
        assert_eq!(room, Some(1_000_000_000));
    }

    #[test]
    fn cgroup_v1_unlimited_is_none() {
        let d = tempfile::tempdir().unwrap();
        let g = d.path().join("memory");
        fs::create_dir_all(&g).unwrap();
        fs::write(g.join("memory.limit_in_bytes"), "9223372036854771712\n").unwrap();
        assert_eq!(cgroup_headroom("4:memory:/missing/path\n", d.path()), None);
        fs::write(g.join("memory.limit_in_bytes"), "2000\n").unwrap();
        fs::write(g.join("memory.usage_in_bytes"), "500\n").unwrap();
        assert_eq!(
            cgroup_headroom("4:memory:/missing/path\n", d.path()),
            Some(1500)
        );
    }

    #[test]
    fn this_machine_reports_something() {
        assert!(available_bytes().is_some_and(|n| n > 0));
    }
}
