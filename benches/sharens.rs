//! `--sharens` under a real Slurm: wall time and peak memory of
//! `srun -n N veil exec --sharens IMG true` against N independent `veil exec` in the
//! same run, for an argon2id image of cryptsetup's default cost (1 GiB, about 2 s of
//! one core, 4 lanes), N = 2, 4, 8, 16 (oversubscribed on this machine's cores).
//! Anchors in the same run: one `veil exec` without Slurm, and `srun -n N true`.
//!
//! Goal: the shared session within 1.5 × (one exec + srun's own overhead for `true`),
//! and the KDF's memory paid once.
//!
//! Needs root (it starts munged, slurmctld and slurmd: tests/common/slurm.rs),
//! slurm-wlm, munge, busybox, mksquashfs and user namespaces for uid 65534:
//! `cargo bench --bench sharens` (with `--target "$VEIL_TARGET"` for the static build).
//! `SHARENS_BENCH_N=2,4` picks the sizes. Independent runs that would need more KDF
//! memory than the machine has free are not started (the table says so).

#[path = "../tests/common/mod.rs"]
mod common;

use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::slurm::Slurm;
use common::*;

const KDF_MIB: u64 = 1024;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let Some(slurm) = Slurm::start() else {
        eprintln!("sharens bench: no Slurm node (root, slurm-wlm and munge are needed)");
        return;
    };
    let Some(user) = Unprivileged::new() else {
        eprintln!("sharens bench: no user namespaces for an unprivileged user");
        return;
    };
    let root = busybox_rootfs(user.dir.path()).expect("busybox");
    user.own(&root);
    let key = user.home.join("key.txt");
    std::fs::write(&key, "sharens bench passphrase").unwrap();
    user.own(&key);
    println!("building an image with an argon2id keyslot of {KDF_MIB} MiB, 2 s ...");
    run_ok(
        user.veil()
            .args([
                "build",
                "-q",
                "--kdf-time",
                "2000",
                "--kdf-memory",
                &KDF_MIB.to_string(),
            ])
            .arg("--passphrase-file")
            .arg(&key)
            .arg("img.sif")
            .arg(&root),
    );
    let img = user.home.join("img.sif");
    let bin = user.bin.to_str().unwrap().to_string();
    let exec = |sharens: bool| {
        let mut v = vec![bin.clone(), "exec".into()];
        if sharens {
            v.push("--sharens".into());
        }
        v.extend([
            "--passphrase-file".into(),
            key.to_str().unwrap().into(),
            img.to_str().unwrap().into(),
            "true".into(),
        ]);
        v
    };
    let sizes: Vec<usize> = std::env::var("SHARENS_BENCH_N")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![2, 4, 8, 16]);

    // One exec, no Slurm: the unlock and the container.
    let single = measure(&user, || {
        let mut c = user.veil();
        c.args(&exec(false)[1..]);
        c
    });
    println!(
        "one veil exec: {:.2} s, peak {:.0} MiB",
        single.0.as_secs_f64(),
        single.1 as f64 / 1048576.0
    );
    println!();
    println!(
        "| N | srun true | sharens | independent | sharens / (exec + srun true) | peak memory sharens | peak memory independent |"
    );
    println!("|---|---|---|---|---|---|---|");
    let (slurm, user) = (&slurm, &user);
    for n in sizes {
        let srun = |args: Vec<String>| {
            let n = n.to_string();
            move || {
                let mut c = slurm.command_as(user, "srun");
                c.args(["-n", &n, "--oversubscribe"]).args(&args);
                c
            }
        };
        let (t_true, _) = measure(user, srun(vec!["true".into()]));
        let (t_shared, m_shared) = measure(user, srun(exec(true)));
        let free = available_mib();
        let independent = if (n as u64) * KDF_MIB < free * 9 / 10 {
            let (t, m) = measure(user, srun(exec(false)));
            (
                format!("{:.2} s", t.as_secs_f64()),
                format!("{:.0} MiB", m as f64 / 1048576.0),
            )
        } else {
            let why = format!(
                "not run: {} MiB of KDF memory, {free} MiB free",
                n as u64 * KDF_MIB
            );
            (why.clone(), why)
        };
        let ratio = t_shared.as_secs_f64() / (single.0 + t_true).as_secs_f64();
        println!(
            "| {n} | {:.2} s | {:.2} s | {} | {ratio:.2}× | {:.0} MiB | {} |",
            t_true.as_secs_f64(),
            t_shared.as_secs_f64(),
            independent.0,
            m_shared as f64 / 1048576.0,
            independent.1
        );
    }
}

/// Wall time of the command `make` builds, and the peak of the summed resident memory
/// of the user's processes while it ran (sampled every 5 ms).
fn measure(user: &Unprivileged, make: impl Fn() -> Command) -> (Duration, u64) {
    let uid = user.uid;
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(rss_of(uid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let t = Instant::now();
    let out = make().output().unwrap();
    let wall = t.elapsed();
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A shared session ends just after its last member: wait, so runs do not overlap.
    let t = Instant::now();
    while rss_of(uid) > 0 && t.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(20));
    }
    (wall, peak.load(Ordering::Relaxed))
}

/// The resident memory of all processes of `uid`, bytes.
fn rss_of(uid: u32) -> u64 {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.metadata().is_ok_and(|m| m.uid() == uid))
        .filter_map(|e| {
            let statm = std::fs::read_to_string(e.path().join("statm")).ok()?;
            statm.split(' ').nth(1)?.parse::<u64>().ok()
        })
        .sum::<u64>()
        * 4096
}

fn available_mib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemAvailable:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / 1024)
}
