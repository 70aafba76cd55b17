//! The Slurm test node (tests/common/slurm.rs) on its own, before veil runs under it:
//! jobs run as the unprivileged test user through srun and sbatch, scancel leaves no
//! task behind, and two nodes run side by side. Each test starts its own node, so the
//! tests running in parallel are themselves nodes side by side.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::slurm::Slurm;
use common::*;

const NO_SLURM: &str = "no Slurm node (it needs root, slurm-wlm and munge)";

/// Asserts that a Slurm command succeeded; shows its stderr and the node's logs if not.
fn assert_ok(slurm: &Slurm, what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        slurm.logs()
    );
}

/// Polls `done` for up to 30 seconds.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{what}: not after 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Live processes of `uid` running `argv` (the program by its name or any path to
/// it), found in /proc whoever started them (zombies have no arguments there).
fn processes_of(uid: u32, argv: &[&str]) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let dir = format!("/proc/{pid}");
            let Ok(cmdline) = std::fs::read(format!("{dir}/cmdline")) else {
                return false;
            };
            let Some(args) = cmdline.strip_suffix(b"\0") else {
                return false;
            };
            let args: Vec<&[u8]> = args.split(|&b| b == 0).collect();
            let program = args[0].rsplit(|&b| b == b'/').next().unwrap();
            std::fs::metadata(&dir).is_ok_and(|m| m.uid() == uid)
                && args.len() == argv.len()
                && program == argv[0].as_bytes()
                && args[1..]
                    .iter()
                    .zip(&argv[1..])
                    .all(|(a, b)| *a == b.as_bytes())
        })
        .collect()
}

/// Live processes whose environment holds `var` (NAME=VALUE); a zombie's is empty.
fn carrying(var: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|&b| b == 0).any(|v| v == var.as_bytes()))
        })
        .collect()
}

/// The processes' names, for messages.
fn names(pids: &[u32]) -> Vec<String> {
    pids.iter()
        .map(|pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            format!("{pid} {}", comm.trim())
        })
        .collect()
}

#[test]
fn srun_runs_every_task_as_the_submitting_user() {
    let user = require!(Unprivileged::new(), "no unprivileged user namespace");
    let start = Instant::now();
    let slurm = require!(Slurm::start(), NO_SLURM);
    eprintln!("the Slurm node was up in {:?}", start.elapsed());
    let out = slurm.srun_as(&user, &["-n", "4", "--oversubscribe", "id", "-u"]);
    assert_ok(&slurm, "srun -n 4 id -u", &out);
    let uid = user.uid.to_string();
    assert_eq!(
        stdout(&out).lines().collect::<Vec<_>>(),
        vec![uid.as_str(); 4]
    );
    // More tasks than the machine has cores, as MPI tests on a small CI machine start.
    let out = slurm.srun_as(&user, &["-n", "16", "true"]);
    assert_ok(&slurm, "srun -n 16 true", &out);
}

#[test]
fn sbatch_wait_runs_a_script_that_writes_into_the_users_directory() {
    let user = require!(Unprivileged::new(), "no unprivileged user namespace");
    let slurm = require!(Slurm::start(), NO_SLURM);
    let written = user.home.join("written-by-the-job");
    let script = user.home.join("job.sh");
    std::fs::write(
        &script,
        format!("#!/bin/sh\nid -u > {}\n", written.display()),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    user.own(&script);
    let out = slurm
        .command_as(&user, "sbatch")
        .arg("--wait")
        .arg(format!("--output={}/job-%j.out", user.home.display()))
        .arg(&script)
        .output()
        .unwrap();
    assert_ok(&slurm, "sbatch --wait", &out);
    assert_eq!(
        std::fs::read_to_string(&written).unwrap().trim(),
        user.uid.to_string()
    );
    assert_eq!(std::fs::metadata(&written).unwrap().uid(), user.uid);
    // sbatch --wait returns the job's status: a job that fails fails it.
    let out = slurm
        .command_as(&user, "sbatch")
        .args(["--wait", "--output=/dev/null", "--wrap", "exit 3"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", slurm.logs());
}

#[test]
fn scancel_leaves_no_task_behind() {
    let user = require!(Unprivileged::new(), "no unprivileged user namespace");
    let slurm = require!(Slurm::start(), NO_SLURM);
    // An argument no other test's sleep has, to find this task among all processes.
    let task = ["sleep", "3141"];
    let mut srun = slurm
        .command_as(&user, "srun")
        .args(["--job-name=sleeper"])
        .args(task)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the job's sleep to start", || {
        !processes_of(user.uid, &task).is_empty()
    });
    let out = slurm
        .command_as(&user, "squeue")
        .args(["--noheader", "--name=sleeper", "--format=%i"])
        .output()
        .unwrap();
    assert_ok(&slurm, "squeue", &out);
    let job = stdout(&out).trim().to_owned();
    assert!(!job.is_empty(), "squeue lists no sleeper job");
    let out = slurm
        .command_as(&user, "scancel")
        .arg(&job)
        .output()
        .unwrap();
    assert_ok(&slurm, "scancel", &out);
    wait_until("the job's sleep to go", || {
        processes_of(user.uid, &task).is_empty()
    });
    let mut status = None;
    wait_until("srun to return", || {
        status = srun.try_wait().unwrap();
        status.is_some()
    });
    assert!(!status.unwrap().success(), "a cancelled srun succeeded");
}

#[test]
fn two_nodes_run_side_by_side() {
    let user = require!(Unprivileged::new(), "no unprivileged user namespace");
    let a = require!(Slurm::start(), NO_SLURM);
    let b = require!(Slurm::start(), NO_SLURM);
    assert_ne!(a.conf, b.conf);
    for slurm in [&a, &b] {
        let out = slurm.srun_as(&user, &["-n", "2", "true"]);
        assert_ok(slurm, "srun -n 2 true", &out);
    }
    // A job held on one node is in that node's queue only.
    let out = a
        .command_as(&user, "sbatch")
        .args(["--hold", "--job-name=only-on-a", "--wrap", "true"])
        .output()
        .unwrap();
    assert_ok(&a, "sbatch --hold", &out);
    let names = |slurm: &Slurm| {
        let out = slurm
            .command_as(&user, "squeue")
            .args(["--noheader", "--format=%j"])
            .output()
            .unwrap();
        assert_ok(slurm, "squeue", &out);
        stdout(&out).trim().to_owned()
    };
    assert_eq!(names(&a), "only-on-a");
    assert_eq!(names(&b), "");
}

#[test]
fn dropping_the_node_stops_its_daemons_and_jobs() {
    let user = require!(Unprivileged::new(), "no unprivileged user namespace");
    let slurm = require!(Slurm::start(), NO_SLURM);
    let task = ["sleep", "2718"];
    // With an empty environment, the task is found as slurmstepd's descendant only.
    let mut srun = slurm
        .command_as(&user, "srun")
        .args(["env", "-i"])
        .args(task)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the job's sleep to start", || {
        !processes_of(user.uid, &task).is_empty()
    });
    let dir = slurm.dir().to_owned();
    let marker = format!("SLURM_CONF={}", slurm.conf.display());
    let before = carrying(&marker);
    // munged, slurmctld, slurmd, slurmstepd and srun at least.
    assert!(before.len() >= 5, "{:?}\n{}", names(&before), slurm.logs());
    assert!(
        slurm.processes().len() > before.len(),
        "the task is not found"
    );
    drop(slurm);
    srun.wait().unwrap();
    assert!(processes_of(user.uid, &task).is_empty());
    assert_eq!(carrying(&marker), Vec::<u32>::new());
    assert!(!dir.exists());
}
