//! Instances as an unprivileged user: start (with %startscript and its arguments),
//! list, join with `instance://`, stats, stop; what is left after a stop, a crash of the
//! instance's init or a SIGKILL of its server; two users' instances of one name; an
//! encrypted instance whose key stays in its server; and hostile names.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const PASSPHRASE: &str = "instance passphrase 7";

struct Env {
    user: Unprivileged,
    plain: PathBuf,
}

/// A busybox image whose startscript records its arguments and then waits.
fn image_root(dir: &Path) -> Option<PathBuf> {
    let root = busybox_rootfs(dir)?;
    let start = root.join(".singularity.d/startscript");
    std::fs::write(
        &start,
        "#!/bin/sh\necho \"started $*\" > \"$HOME/started\"\necho $$ > \"$HOME/startscript.pid\"\nexec sleep 1000\n",
    )
    .unwrap();
    std::fs::set_permissions(&start, std::fs::Permissions::from_mode(0o755)).unwrap();
    Some(root)
}

/// A test that failed half-way leaves no instance running.
impl Drop for Env {
    fn drop(&mut self) {
        let _ = self
            .user
            .veil()
            .args(["instance", "stop", "--all", "-t", "1"])
            .output();
    }
}

fn setup() -> Option<Env> {
    let user = Unprivileged::new()?;
    let root = image_root(user.dir.path())?;
    let (_, plain) = squash_and_sif(&root, user.dir.path())?;
    std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
    Some(Env { user, plain })
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

/// The instance's record, as `instance list --json` gives it.
fn listed(user: &Unprivileged) -> Vec<serde_json::Value> {
    let out = run_ok(user.veil().args(["instance", "list", "--json"]));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    v["instances"].as_array().unwrap().clone()
}

/// The state file of instance `name` of `user` (its launcher's pid is only there).
fn state_of(user: &Unprivileged, name: &str) -> serde_json::Value {
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    let p = user
        .home
        .join(".veil/instances")
        .join(host)
        .join(format!("{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

/// The startscript's pid, once it has written it whole.
fn startscript_pid(u: &Unprivileged) -> i64 {
    let mut pid = None;
    wait_until("the startscript's pid", || {
        pid = std::fs::read_to_string(u.home.join("startscript.pid"))
            .ok()
            .and_then(|t| t.trim().parse().ok());
        pid.is_some()
    });
    pid.unwrap()
}

/// The processes in the mount namespace `ns` (a `/proc/PID/ns/mnt` link's text).
fn in_mount_ns(ns: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| {
            std::fs::read_link(format!("/proc/{p}/ns/mnt")).is_ok_and(|l| l.to_string_lossy() == ns)
        })
        .collect()
}

#[test]
fn an_instance_starts_is_listed_joined_measured_and_stopped_leaving_nothing() {
    let e = env_or_skip!();
    let u = &e.user;
    let out = run_ok(
        u.veil()
            .args(["instance", "start"])
            .arg(&e.plain)
            .args(["web", "a1", "a 2"]),
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("instance web started"));
    // The startscript ran with its arguments, in the background.
    wait_until("the startscript", || {
        u.home.join("startscript.pid").exists()
    });
    assert_eq!(
        std::fs::read_to_string(u.home.join("started")).unwrap(),
        "started a1 a 2\n"
    );
    let list = listed(u);
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["instance"], "web");
    assert_eq!(list[0]["img"], e.plain.to_str().unwrap());
    let init = list[0]["pid"].as_i64().unwrap();
    assert!(pid_alive(init));
    let state = state_of(u, "web");
    let launcher = state["launcher"].as_i64().unwrap();
    assert!(pid_alive(launcher));
    let text = stdout(&run_ok(u.veil().args(["instance", "list"])));
    assert!(text.starts_with("INSTANCE NAME"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("web ") && l.contains(&init.to_string())),
        "{text}"
    );

    // Joined: the image's files and environment, the caller's --env, no key needed.
    let out = run_ok(
        u.veil()
            .args(["exec", "instance://web", "cat", "/data/hello.txt"]),
    );
    assert_eq!(stdout(&out), "hello from the image\n");
    let out = run_ok(
        u.veil()
            .args(["exec", "--env", "MINE=1", "instance://web", "sh", "-c"])
            .arg("echo $FROM_IMAGE $MINE; readlink /proc/self/ns/mnt"),
    );
    let text = stdout(&out);
    assert!(text.starts_with("image-value 1\n"), "{text}");
    let ns = std::fs::read_link(format!("/proc/{init}/ns/mnt")).unwrap();
    assert_eq!(text.lines().nth(1).unwrap(), ns.to_str().unwrap());
    let out = run_ok(u.veil().args(["run", "instance://web", "x"]));
    assert_eq!(stdout(&out), "runscript: x\n");
    // The exit status comes back.
    let st = u
        .veil()
        .args(["exec", "instance://web", "sh", "-c", "exit 7"])
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(7));

    // One name, one instance.
    let err = run_err(
        u.veil()
            .args(["instance", "start"])
            .arg(&e.plain)
            .arg("web"),
    );
    assert!(err.contains("already running"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    let out = run_ok(u.veil().args(["instance", "stats", "--json", "web"]));
    let st: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert!(st["pids"].as_u64().unwrap() >= 3, "{st}");
    assert!(st["memory_bytes"].as_u64().unwrap() > 0, "{st}");

    // A joined process that is still running goes with the instance.
    let mut joined = u
        .veil()
        .args(["exec", "instance://web", "sleep", "1000"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the joined process", || {
        in_mount_ns(ns.to_str().unwrap()).len() >= 4
    });
    let sleeper: i64 = startscript_pid(u);
    let out = run_ok(u.veil().args(["instance", "stop", "web"]));
    assert!(String::from_utf8_lossy(&out.stderr).contains("instance web stopped"));
    for pid in [init, launcher, sleeper] {
        assert!(!pid_alive(pid), "process {pid} outlived the stop");
    }
    let mut ended = None;
    wait_until("the joined process's end", || {
        ended = joined.try_wait().unwrap();
        ended.is_some()
    });
    assert!(ended.unwrap().code() != Some(0));
    assert!(in_mount_ns(ns.to_str().unwrap()).is_empty());
    assert!(listed(u).is_empty());
    let err = run_err(u.veil().args(["exec", "instance://web", "true"]));
    assert!(err.contains("no instance named web"), "{err}");
    let err = run_err(u.veil().args(["instance", "stop", "web"]));
    assert!(err.contains("no instance named web"), "{err}");
}

#[test]
fn a_killed_init_or_server_ends_the_instance_and_its_record_is_cleaned() {
    let e = env_or_skip!();
    let u = &e.user;
    for (name, victim) in [("a", "init"), ("b", "launcher")] {
        run_ok(u.veil().args(["instance", "start"]).arg(&e.plain).arg(name));
        wait_until("the startscript", || {
            u.home.join("startscript.pid").exists()
        });
        let sleeper: i64 = startscript_pid(u);
        std::fs::remove_file(u.home.join("startscript.pid")).unwrap();
        let state = state_of(u, name);
        let (init, launcher) = (
            state["init"].as_i64().unwrap(),
            state["launcher"].as_i64().unwrap(),
        );
        let pid = state[victim].as_i64().unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        wait_until("the instance's end", || {
            !pid_alive(init) && !pid_alive(launcher) && !pid_alive(sleeper)
        });
        assert!(listed(u).is_empty(), "{victim}");
        // The name is free again.
        run_ok(u.veil().args(["instance", "start"]).arg(&e.plain).arg(name));
        run_ok(u.veil().args(["instance", "stop", "-t", "2", name]));
    }
}

#[test]
fn the_same_name_for_two_users_is_two_instances_and_neither_joins_the_other() {
    let e = env_or_skip!();
    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "SKIP {}: a second user needs root to run as",
            module_path!()
        );
        return;
    }
    let other = Unprivileged::with_uid(65533).expect("a second unprivileged user");
    let img = other.dir.path().join("img.sif");
    std::fs::copy(&e.plain, &img).unwrap();
    run_ok(
        e.user
            .veil()
            .args(["instance", "start"])
            .arg(&e.plain)
            .arg("db"),
    );
    run_ok(other.veil().args(["instance", "start"]).arg(&img).arg("db"));
    let a = listed(&e.user);
    let b = listed(&other);
    assert_eq!(a.len(), 1);
    assert_eq!(b.len(), 1);
    assert_ne!(a[0]["pid"], b[0]["pid"]);
    // A record copied from the other user's directory does not let one join: the
    // kernel refuses the other user's namespaces.
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    let theirs = e
        .user
        .home
        .join(".veil/instances")
        .join(&host)
        .join("db.json");
    let mine_dir = other.home.join(".veil/instances").join(&host);
    std::fs::copy(&theirs, mine_dir.join("stolen.json")).unwrap();
    other.own(&mine_dir.join("stolen.json"));
    let err = run_err(other.veil().args(["exec", "instance://stolen", "true"]));
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    run_ok(other.veil().args(["instance", "stop", "db"]));
    assert_eq!(
        listed(&e.user).len(),
        1,
        "the other user's stop reached this one's"
    );
    run_ok(e.user.veil().args(["instance", "stop", "db"]));
}

#[test]
fn an_encrypted_instance_keeps_its_key_in_its_server_alone() {
    let e = env_or_skip!();
    let u = &e.user;
    let root = u.dir.path().join("rootfs");
    let pass = u.dir.path().join("pass");
    std::fs::write(&pass, PASSPHRASE).unwrap();
    std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o644)).unwrap();
    u.own(&root);
    run_ok(
        u.veil()
            .args([
                "build",
                "-q",
                "--kdf-time",
                "50",
                "--kdf-memory",
                "16",
                "--passphrase-file",
            ])
            .arg(&pass)
            .arg("enc.sif")
            .arg(&root),
    );
    let enc = u.home.join("enc.sif");
    // No key, no start; the error is one line and nothing is left.
    let err = run_err(u.veil().args(["instance", "start"]).arg(&enc).arg("enc"));
    assert!(err.contains("encrypted"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(listed(u).is_empty());
    run_ok(
        u.veil()
            .args(["instance", "start", "--passphrase-file"])
            .arg(&pass)
            .arg(&enc)
            .arg("enc"),
    );
    let out = run_ok(u.veil().args([
        "exec",
        "instance://enc",
        "sh",
        "-c",
        "cat /data/hello.txt; env",
    ]));
    let text = stdout(&out);
    assert!(text.starts_with("hello from the image\n"), "{text}");
    assert!(
        !text.contains(PASSPHRASE) && !text.contains("pass"),
        "{text}"
    );
    let state = state_of(u, "enc");
    let launcher = state["launcher"].as_i64().unwrap();
    // Nothing the instance wrote holds the key.
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    let dir = u.home.join(".veil/instances").join(host);
    for f in std::fs::read_dir(&dir).unwrap().flatten() {
        let data = std::fs::read(f.path()).unwrap();
        assert!(
            !data
                .windows(PASSPHRASE.len())
                .any(|w| w == PASSPHRASE.as_bytes()),
            "{}",
            f.path().display()
        );
        let mode = f.metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", f.path().display());
    }
    // The server is not dumpable: the user cannot read its memory or environment.
    let st = Command::new("cat")
        .arg(format!("/proc/{launcher}/environ"))
        .uid(u.uid)
        .gid(u.gid)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(!st.success(), "the instance's server is dumpable");
    run_ok(u.veil().args(["instance", "stop", "enc"]));
    assert!(!pid_alive(launcher));
}

#[test]
fn an_instance_with_its_own_pid_namespace_is_joined_in_it() {
    let e = env_or_skip!();
    let u = &e.user;
    run_ok(
        u.veil()
            .args(["instance", "start", "--pid"])
            .arg(&e.plain)
            .arg("p"),
    );
    wait_until("the startscript", || {
        u.home.join("startscript.pid").exists()
    });
    let out = run_ok(
        u.veil()
            .args(["exec", "instance://p", "sh", "-c", "ps -o pid,comm"]),
    );
    let text = stdout(&out);
    // The instance's init is PID 1 and the startscript's sleep is there; the host's
    // processes are not.
    assert!(
        text.lines().any(|l| l.trim_start().starts_with("1 ")),
        "{text}"
    );
    let script = startscript_pid(u);
    assert!(
        script < 10,
        "the startscript's pid in the instance: {script}"
    );
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with(&format!("{script} "))),
        "{text}"
    );
    assert!(text.lines().count() < 10, "{text}");
    run_ok(u.veil().args(["instance", "stop", "p"]));
}

#[test]
fn hostile_or_missing_names_are_refused_in_one_line() {
    let e = env_or_skip!();
    let u = &e.user;
    for bad in ["../x", "a/b", ".hidden", "-x", ""] {
        let err = run_err(
            u.veil()
                .args(["instance", "start"])
                .arg(&e.plain)
                .args(["--", bad]),
        );
        assert!(err.contains("instance name"), "{bad:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        let err = run_err(
            u.veil()
                .args(["exec", &format!("instance://{bad}"), "true"]),
        );
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    let err = run_err(
        u.veil()
            .args(["instance", "start", "/nonexistent.sif", "x"]),
    );
    assert!(err.contains("/nonexistent.sif"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(listed(u).is_empty());
    let err = run_err(u.veil().args(["instance", "stop"]));
    assert!(err.contains("--all"), "{err}");
    let err = run_err(u.veil().args(["instance", "stop", "-s", "NOPE", "x"]));
    assert!(err.contains("no such signal"), "{err}");
}

#[test]
fn an_instance_holds_none_of_its_callers_descriptors() {
    let e = env_or_skip!();
    let u = &e.user;
    let (r, w) = nix::unistd::pipe().unwrap();
    let w = std::fs::File::from(w);
    let mut cmd = u.veil();
    cmd.args(["instance", "start"]).arg(&e.plain).arg("fds");
    inherit_fds(&mut cmd, &[(&w, 3), (&w, 9)]);
    run_ok(&mut cmd);
    drop(w);
    // With every writer gone, the read end sees end-of-file at once: a shell's
    // `$(veil instance start ...)` returns.
    let mut p = [nix::poll::PollFd::new(
        std::os::fd::AsFd::as_fd(&r),
        nix::poll::PollFlags::POLLIN,
    )];
    let n = nix::poll::poll(&mut p, nix::poll::PollTimeout::from(10_000u16)).unwrap();
    assert_eq!(n, 1, "the instance holds the caller's descriptor");
    assert!(
        p[0].revents()
            .unwrap()
            .contains(nix::poll::PollFlags::POLLHUP)
    );
    run_ok(u.veil().args(["instance", "stop", "fds"]));
}

#[test]
fn a_forged_record_makes_stop_signal_nothing() {
    let e = env_or_skip!();
    let u = &e.user;
    // Two processes of the user's that are not an instance, as a container that can
    // write the home could name them.
    let spawn = || {
        Command::new("sleep")
            .arg("1000")
            .uid(u.uid)
            .gid(u.gid)
            .spawn()
            .unwrap()
    };
    /// Killed however the test ends.
    struct Reaped(std::process::Child);
    impl Drop for Reaped {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let (mut a, mut b) = (Reaped(spawn()), Reaped(spawn()));
    let (a_id, b_id) = (a.0.id(), b.0.id());
    let start = |pid: u32| -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        s[s.rfind(')').unwrap() + 2..]
            .split(' ')
            .nth(19)
            .unwrap()
            .parse()
            .unwrap()
    };
    // The directory exists once veil has looked at it.
    run_ok(u.veil().args(["instance", "list"]));
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    let dir = u.home.join(".veil/instances").join(host);
    let record = serde_json::json!({
        "name": "forged", "image": "x", "launcher": a_id, "launcher_start": start(a_id),
        "init": b_id, "init_start": start(b_id), "started": 0, "fakeroot": false,
        "no_home": false, "contain": false, "home": null,
        "out_log": "/dev/null", "err_log": "/dev/null"
    });
    let p = dir.join("forged.json");
    std::fs::write(&p, record.to_string()).unwrap();
    u.own(&p);
    let err = run_err(u.veil().args(["instance", "stop", "forged"]));
    assert!(err.contains("no instance named forged"), "{err}");
    let err = run_err(u.veil().args(["exec", "instance://forged", "true"]));
    assert!(err.contains("no instance named forged"), "{err}");
    assert!(a.0.try_wait().unwrap().is_none() && b.0.try_wait().unwrap().is_none());
    // A FIFO in a record's place blocks nothing.
    nix::unistd::mkfifo(
        &dir.join("fifo.json"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    u.own(&dir.join("fifo.json"));
    run_ok(u.veil().args(["instance", "list"]));
}

#[test]
fn only_stop_signals_end_an_instance() {
    let e = env_or_skip!();
    let u = &e.user;
    run_ok(
        u.veil()
            .args(["instance", "start"])
            .arg(&e.plain)
            .arg("sig"),
    );
    let state = state_of(u, "sig");
    let (init, launcher) = (
        state["init"].as_i64().unwrap(),
        state["launcher"].as_i64().unwrap(),
    );
    // What a Slurm suspend and resume sends, to the server (which passes it on) and to
    // the init itself.
    for pid in [launcher, init] {
        let st = Command::new("kill")
            .args(["-CONT", &pid.to_string()])
            .uid(u.uid)
            .gid(u.gid)
            .status()
            .unwrap();
        assert!(st.success());
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(pid_alive(init) && pid_alive(launcher));
    assert_eq!(listed(u).len(), 1);
    // A stop with another signal passes it on, then kills at the timeout.
    let out = run_ok(
        u.veil()
            .args(["instance", "stop", "-s", "USR2", "-t", "1", "sig"]),
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("killed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!pid_alive(init) && !pid_alive(launcher));
}
