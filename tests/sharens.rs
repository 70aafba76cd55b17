//! `--sharens`: processes of one job that run the same image share one session (one
//! unlock, one mount namespace), joiners need no key, a different job or image never
//! joins, and nothing is left once the last has gone.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

use common::*;

const PASSPHRASE: &str = "shared session passphrase";

struct Env {
    user: Unprivileged,
    enc: PathBuf,
    pass: PathBuf,
    wrong: PathBuf,
}

fn setup() -> Option<Env> {
    let user = Unprivileged::new()?;
    let root = busybox_rootfs(user.dir.path())?;
    squash_and_sif(&root, user.dir.path())?;
    user.own(&root);
    let pass = user.dir.path().join("pass");
    std::fs::write(&pass, PASSPHRASE).unwrap();
    let wrong = user.dir.path().join("wrong");
    std::fs::write(&wrong, "not the passphrase").unwrap();
    for p in [&pass, &wrong] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    // An unlock that takes a moment (argon2id, about half a second), so that a second
    // one would show.
    run_ok(
        user.veil()
            .args([
                "build",
                "-q",
                "--kdf-time",
                "500",
                "--kdf-memory",
                "64",
                "--passphrase-file",
            ])
            .arg(&pass)
            .arg("enc.sif")
            .arg(&root),
    );
    let enc = user.home.join("enc.sif");
    Some(Env {
        user,
        enc,
        pass,
        wrong,
    })
}

macro_rules! env_or_skip {
    () => {
        match setup() {
            Some(e) => e,
            None => {
                eprintln!(
                    "SKIP {}: no user namespaces, FUSE or mksquashfs",
                    module_path!()
                );
                return;
            }
        }
    };
}

/// The session records (`.sharens-*.json`) in the user's instance directory.
fn sessions(u: &Unprivileged) -> Vec<PathBuf> {
    std::fs::read_dir(instance_dir(u))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with(".sharens-") && n.ends_with(".json")
        })
        .collect()
}

/// `veil exec --sharens --passphrase-file KEY IMAGE sh -c SCRIPT`, started.
fn member(e: &Env, key: &Path, image: &Path, script: &str) -> Child {
    e.user
        .veil()
        .args(["exec", "--sharens", "--passphrase-file"])
        .arg(key)
        .arg(image)
        .args(["sh", "-c", script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn finish(c: Child) -> String {
    let out = c.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_processes_of_one_job_share_one_unlock_and_one_mount_namespace() {
    let e = env_or_skip!();
    // The first to arrive starts the session with the right key.
    let script = "readlink /proc/self/ns/mnt; cat /data/hello.txt; sleep 2";
    let first = member(&e, &e.pass, &e.enc, script);
    wait_until("the session", || !sessions(&e.user).is_empty());
    // The others join it: with a wrong key they could not unlock the image, so they
    // run only because they make no second unlock.
    let rest: Vec<Child> = (0..3)
        .map(|_| member(&e, &e.wrong, &e.enc, script))
        .collect();
    let mut outs = vec![finish(first)];
    outs.extend(rest.into_iter().map(finish));
    let ns: Vec<&str> = outs.iter().map(|o| o.lines().next().unwrap()).collect();
    assert!(ns.iter().all(|n| *n == ns[0]), "{ns:?}");
    assert!(outs.iter().all(|o| o.contains("hello from the image")));
    // The last to leave ended it: no record, no lock file, no process in its namespace.
    wait_until("the session's end", || {
        std::fs::read_dir(instance_dir(&e.user))
            .unwrap()
            .flatten()
            .all(|f| !f.file_name().to_string_lossy().starts_with(".sharens-"))
    });
    wait_until("the session's processes", || {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|d| d.file_name().to_str()?.parse::<i32>().ok())
            .all(|p| {
                std::fs::read_link(format!("/proc/{p}/ns/mnt"))
                    .map_or(true, |l| l.to_string_lossy() != ns[0])
            })
    });
    // Without the first, a wrong key is a wrong key again.
    let err = run_err(
        e.user
            .veil()
            .args(["exec", "--sharens", "--passphrase-file"])
            .arg(&e.wrong)
            .arg(&e.enc)
            .arg("true"),
    );
    assert!(err.contains("wrong passphrase"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn another_job_or_another_image_never_joins() {
    let e = env_or_skip!();
    let other_image = e.user.home.join("copy.sif");
    std::fs::copy(&e.enc, &other_image).unwrap();
    e.user.own(&other_image);
    let script = "readlink /proc/self/ns/mnt; sleep 2";
    let first = member(&e, &e.pass, &e.enc, script);
    wait_until("the session", || !sessions(&e.user).is_empty());
    // Another image (a copy: same bytes, another file) gets its own session.
    let copy = member(&e, &e.pass, &other_image, script);
    // Another parent process is another job: started from a shell, not from this test.
    // Another parent process is another job: a shell that stays (no exec) between.
    let bin = &e.user.bin;
    let other_job = std::process::Command::new("sh")
        .arg("-c")
        .arg("\"$0\" exec --sharens --passphrase-file \"$1\" \"$2\" sh -c \"$3\"; exit $?")
        .arg(bin)
        .arg(&e.pass)
        .arg(&e.enc)
        .arg(script)
        .uid(e.user.uid)
        .gid(e.user.gid)
        .current_dir(&e.user.home)
        .env_clear()
        .env("HOME", &e.user.home)
        .env("PATH", "/usr/bin:/bin")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let a = finish(first);
    let b = finish(copy);
    let c = finish(other_job);
    let ns = |s: &str| s.lines().next().unwrap().to_string();
    assert_ne!(ns(&a), ns(&b), "another image joined");
    assert_ne!(ns(&a), ns(&c), "another job joined");
}

#[test]
fn a_session_ends_when_its_first_member_is_killed() {
    let e = env_or_skip!();
    let mut first = member(
        &e,
        &e.pass,
        &e.enc,
        "readlink /proc/self/ns/mnt; sleep 1000",
    );
    // The record once the session runs (before, it is a reservation).
    let mut launcher = None;
    wait_until("the session", || {
        launcher = sessions(&e.user).first().and_then(|p| {
            let text = std::fs::read_to_string(p).ok()?;
            serde_json::from_str::<serde_json::Value>(&text).ok()?["launcher"].as_i64()
        });
        launcher.is_some()
    });
    let launcher = launcher.unwrap();
    first.kill().unwrap();
    first.wait().unwrap();
    // Its action (the sleep) is in the session: it goes with it, and so does the
    // session's server.
    wait_until("the session's end", || {
        std::fs::read_to_string(format!("/proc/{launcher}/stat"))
            .map_or(true, |s| s[s.rfind(')').unwrap() + 2..].starts_with('Z'))
    });
    wait_until("the session's records", || sessions(&e.user).is_empty());
}
