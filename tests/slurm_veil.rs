//! veil under a real single-node Slurm (tests/common/slurm.rs), jobs run by an
//! unprivileged user: `srun -n 4 veil exec --sharens` with one unlock and one mount
//! namespace for all ranks; a batch script with `instance start`, `instance://` and
//! `instance stop`; `scancel` of a job that started an instance or a shared session
//! leaves no process; the key is a file only the user can read, never in the job's
//! environment, Slurm's records or the container.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Output;

use common::slurm::Slurm;
use common::*;

const PASSPHRASE: &str = "slurm job passphrase 42";

struct Env {
    slurm: Slurm,
    user: Unprivileged,
    enc: PathBuf,
    /// The key, 0600, the user's.
    key: PathBuf,
}

fn setup() -> Option<Env> {
    let slurm = Slurm::start()?;
    let user = Unprivileged::new()?;
    let root = busybox_rootfs(user.dir.path())?;
    user.own(&root);
    let key = user.home.join("key.txt");
    std::fs::write(&key, PASSPHRASE).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    user.own(&key);
    run_ok(
        user.veil()
            .args([
                "build",
                "-q",
                "--kdf-time",
                "300",
                "--kdf-memory",
                "64",
                "--passphrase-file",
            ])
            .arg(&key)
            .arg("enc.sif")
            .arg(&root),
    );
    let enc = user.home.join("enc.sif");
    Some(Env {
        slurm,
        user,
        enc,
        key,
    })
}

macro_rules! env_or_skip {
    () => {
        match setup() {
            Some(e) => e,
            None => {
                eprintln!(
                    "SKIP {}: no Slurm node (it needs root, slurm-wlm and munge) or no user namespaces",
                    module_path!()
                );
                return;
            }
        }
    };
}

fn assert_ok(e: &Env, what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        e.slurm.logs()
    );
}

/// The instance records of the user (hidden sessions included).
fn records(u: &Unprivileged) -> Vec<String> {
    std::fs::read_dir(instance_dir(u))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect()
}

/// Every live process that runs the veil binary of this test's user.
fn veil_processes(u: &Unprivileged) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|d| d.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| {
            std::fs::read_link(format!("/proc/{p}/exe")).is_ok_and(|x| x == u.bin)
                && pid_alive(i64::from(*p))
        })
        .collect()
}

/// A batch script running as the user, with the veil binary as `$VEIL`.
fn batch(e: &Env, name: &str, body: &str) -> PathBuf {
    let p = e.user.home.join(name);
    std::fs::write(
        &p,
        format!(
            "#!/bin/sh\nset -e\nVEIL={}\nKEY={}\nIMG={}\ncd \"$HOME\"\n{body}",
            e.user.bin.display(),
            e.key.display(),
            e.enc.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    e.user.own(&p);
    p
}

#[test]
fn the_ranks_of_one_step_share_one_unlock_and_one_mount_namespace() {
    let e = env_or_skip!();
    let bin = e.user.bin.to_str().unwrap();
    let out = e
        .slurm
        .command_as(&e.user, "srun")
        .args([
            "-n",
            "4",
            "--oversubscribe",
            "--export=ALL,VEIL_DEBUG=1",
            bin,
        ])
        .args(["exec", "--sharens", "--passphrase-file"])
        .arg(&e.key)
        .arg(&e.enc)
        .args([
            "sh",
            "-c",
            "readlink /proc/self/ns/mnt; cat /data/hello.txt",
        ])
        .output()
        .unwrap();
    assert_ok(&e, "srun veil exec --sharens", &out);
    let text = String::from_utf8_lossy(&out.stdout);
    let ns: Vec<&str> = text.lines().filter(|l| l.starts_with("mnt:")).collect();
    assert_eq!(ns.len(), 4, "{text}");
    assert!(ns.iter().all(|n| *n == ns[0]), "{text}");
    assert_eq!(text.matches("hello from the image").count(), 4, "{text}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("sharens: starting session").count(), 1, "{err}");
    assert_eq!(err.matches("sharens: joining session").count(), 3, "{err}");
    // The last rank to leave ended the session.
    wait_until("the session's end", || {
        records(&e.user).is_empty() && veil_processes(&e.user).is_empty()
    });
}

#[test]
fn a_batch_script_starts_joins_and_stops_an_encrypted_instance() {
    let e = env_or_skip!();
    let script = batch(
        &e,
        "job.sh",
        "$VEIL instance start --passphrase-file \"$KEY\" \"$IMG\" db\n\
         $VEIL exec instance://db cat /data/hello.txt > out.txt\n\
         $VEIL exec instance://db env > env.txt\n\
         $VEIL instance list > list.txt\n\
         $VEIL instance stop db\n",
    );
    let out = e
        .slurm
        .command_as(&e.user, "sbatch")
        .args(["--wait", "--output", "/dev/null"])
        .arg(&script)
        .output()
        .unwrap();
    assert_ok(&e, "sbatch --wait", &out);
    let home = &e.user.home;
    assert_eq!(
        std::fs::read_to_string(home.join("out.txt")).unwrap(),
        "hello from the image\n"
    );
    let list = std::fs::read_to_string(home.join("list.txt")).unwrap();
    assert!(list.lines().any(|l| l.starts_with("db ")), "{list}");
    // The key is a file: not in the container, not in the job's record.
    let env = std::fs::read_to_string(home.join("env.txt")).unwrap();
    assert!(!env.contains(PASSPHRASE), "{env}");
    assert!(
        env.contains("SLURM_JOB_ID="),
        "the job's environment reaches the container"
    );
    let jobid = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .last()
        .unwrap()
        .to_string();
    let show = e
        .slurm
        .command("scontrol")
        .args(["show", "job", "-d", &jobid])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&show.stdout).contains(PASSPHRASE));
    assert!(records(&e.user).is_empty());
    assert!(veil_processes(&e.user).is_empty());
}

#[test]
fn scancel_leaves_no_instance_and_no_session_behind() {
    let e = env_or_skip!();
    let script = batch(
        &e,
        "svc.sh",
        "$VEIL instance start --passphrase-file \"$KEY\" \"$IMG\" svc\n\
         $VEIL exec --sharens --passphrase-file \"$KEY\" \"$IMG\" sh -c 'touch ready; sleep 300' &\n\
         sleep 300\n",
    );
    let out = e
        .slurm
        .command_as(&e.user, "sbatch")
        .args(["--output", "/dev/null", "--parsable"])
        .arg(&script)
        .output()
        .unwrap();
    assert_ok(&e, "sbatch", &out);
    let jobid = String::from_utf8_lossy(&out.stdout).trim().to_string();
    wait_until("the instance and the session", || {
        e.user.home.join("ready").exists() && records(&e.user).len() == 2
    });
    assert!(veil_processes(&e.user).len() >= 3);
    let st = e.slurm.command("scancel").arg(&jobid).status().unwrap();
    assert!(st.success());
    wait_until("every veil process's end", || {
        veil_processes(&e.user).is_empty()
    });
    wait_until("the records' removal", || records(&e.user).is_empty());
    let out = run_ok(e.user.veil().args(["instance", "list"]));
    assert_eq!(stdout(&out).lines().count(), 1, "{}", stdout(&out));
}
