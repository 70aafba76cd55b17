//! Rootless `veil run / exec / shell / test` as an unprivileged user, on the same busybox
//! image as a sandbox directory, a plain squashfs file and a SIF (both served by veil's
//! FUSE server): arguments, exit codes, environment, binds, working directory, identity,
//! namespaces, signals, and clean errors.

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

struct Env {
    user: Unprivileged,
    /// The sandbox directory; `images` has it first, then the squashfs and SIF forms.
    image: PathBuf,
    images: Vec<PathBuf>,
}

fn setup() -> Option<Env> {
    let user = Unprivileged::new()?;
    let image = busybox_rootfs(user.dir.path())?;
    let mut images = vec![image.clone()];
    match squash_and_sif(&image, user.dir.path()) {
        Some((sqfs, sif)) => images.extend([sqfs, sif]),
        None => eprintln!(
            "SKIP the squashfs and SIF variants: mksquashfs is not installed or /dev/fuse is not usable"
        ),
    }
    // A sandbox the user built belongs to the user, so mount points can be added.
    user.own(&image);
    Some(Env {
        user,
        image,
        images,
    })
}

fn out(c: &mut Command) -> (i32, String, String) {
    let o = c.output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn exec_runs_as_the_caller_with_exit_codes_passed_through() {
    let e = require!(setup(), "no unprivileged user namespace or no busybox");
    for image in e.images.clone() {
        eprintln!("image: {}", image.display());
        let (code, stdout, stderr) = out(e.user.veil().arg("exec").arg(&image).args(["id", "-u"]));
        assert_eq!(code, 0, "{stderr}");
        assert_eq!(stdout.trim(), e.user.uid.to_string());
        let (code, _, _) = out(e
            .user
            .veil()
            .arg("exec")
            .arg(&image)
            .args(["sh", "-c", "exit 7"]));
        assert_eq!(code, 7);
        // Death by signal is reported as 128 + n.
        let (code, _, _) =
            out(e
                .user
                .veil()
                .arg("exec")
                .arg(&image)
                .args(["sh", "-c", "kill -TERM $$"]));
        assert_eq!(code, 128 + 15);
        let (code, _, stderr) = out(e
            .user
            .veil()
            .arg("exec")
            .arg(&image)
            .arg("/no/such/program"));
        assert_ne!(code, 0);
        assert!(stderr.contains("/no/such/program"), "{stderr}");
    }
}

#[test]
fn run_and_test_use_the_images_scripts() {
    let e = require!(setup(), "no unprivileged user namespace or no busybox");
    for image in e.images.clone() {
        eprintln!("image: {}", image.display());
        let (code, stdout, stderr) = out(e
            .user
            .veil()
            .arg("run")
            .arg(&image)
            .args(["a", "b c", "--flag"]));
        assert_eq!(code, 0, "{stderr}");
        assert_eq!(stdout, "runscript: a b c --flag\n");
        let (code, _, _) = out(e
            .user
            .veil()
            .env("APPTAINERENV_RUN_EXIT", "4")
            .arg("run")
            .arg(&image));
        assert_eq!(code, 4, "the runscript's exit code passes through");
        let (code, stdout, _) = out(e.user.veil().arg("test").arg(&image));
        assert_eq!((code, stdout.as_str()), (0, "test-ok\n"));
    }
}

#[test]
fn environment_follows_apptainer_rules() {
    let e = require!(setup(), "no unprivileged user namespace or no busybox");
    for image in e.images.clone() {
        eprintln!("image: {}", image.display());
        let script = "echo FROM_IMAGE=$FROM_IMAGE; echo OVERRIDDEN=$OVERRIDDEN; echo HOSTVAR=$HOSTVAR; \
                      echo SECRET=$APPTAINER_ENCRYPTION_PASSPHRASE; echo PATH=$PATH; echo CLI=$CLI; \
                      echo FILEVAR=$FILEVAR; echo CONTAINER=$APPTAINER_CONTAINER";
        let envfile = e.user.home.join("vars.env");
        std::fs::write(&envfile, "# comment\nexport FILEVAR='from file'\n").unwrap();
        let run = |extra: &[&str]| {
            let (code, stdout, stderr) = out(e
                .user
                .veil()
                .env("HOSTVAR", "host")
                .env("APPTAINER_ENCRYPTION_PASSPHRASE", "s3cret")
                .env("SINGULARITYENV_OVERRIDDEN", "singularity")
                .env("APPTAINERENV_OVERRIDDEN", "apptainer")
                .env("APPTAINERENV_PREPEND_PATH", "/opt/bin")
                .arg("exec")
                .args(extra)
                .arg("--env-file")
                .arg(&envfile)
                .arg(&image)
                .args(["sh", "-c", script]));
            assert_eq!(code, 0, "{stderr}");
            stdout
        };
        let s = run(&["--env", "CLI=1"]);
        assert!(s.contains("FROM_IMAGE=image-value\n"), "{s}");
        assert!(
            s.contains("OVERRIDDEN=apptainer\n"),
            "APPTAINERENV_ wins over the image and SINGULARITYENV_: {s}"
        );
        assert!(s.contains("HOSTVAR=host\n"), "{s}");
        assert!(
            s.contains("SECRET=\n"),
            "the runtime's variables never enter: {s}"
        );
        assert!(s.contains("PATH=/opt/bin:/usr/local/sbin:"), "{s}");
        assert!(
            s.contains("CLI=1\n") && s.contains("FILEVAR=from file\n"),
            "{s}"
        );
        assert!(
            s.contains(&format!("CONTAINER={}\n", image.display())),
            "{s}"
        );
        let s = run(&["--cleanenv"]);
        assert!(
            s.contains("HOSTVAR=\n") && s.contains("FROM_IMAGE=image-value\n"),
            "{s}"
        );
    }
}

#[test]
fn default_binds_identity_and_working_directory() {
    let e = require!(setup(), "no unprivileged user namespace or no busybox");
    for image in e.images.clone() {
        eprintln!("image: {}", image.display());
        let marker = e.user.home.join("marker.txt");
        std::fs::write(&marker, "in home\n").unwrap();
        let extra = e.user.dir.path().join("extra");
        std::fs::create_dir_all(&extra).unwrap();
        std::fs::write(extra.join("f"), "bound\n").unwrap();
        let script = "pwd; cat marker.txt; cat /mnt/x/f; touch /mnt/x/new 2>/dev/null && echo writable || echo read-only; \
                      grep \"^[^:]*:x:$(id -u):\" /etc/passwd | cut -d: -f6 2>/dev/null || grep \":x:$(id -u):\" /etc/passwd; \
                      test -d /proc/self && echo proc; test -c /dev/null && echo dev; \
                      touch /newfile 2>/dev/null && echo root-writable || echo root-read-only";
        let (code, stdout, stderr) = out(e
            .user
            .veil()
            .arg("exec")
            .arg("--bind")
            .arg(format!("{}:/mnt/x:ro", extra.display()))
            .arg(&image)
            .args(["sh", "-c", script]));
        assert_eq!(code, 0, "{stderr}");
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(
            lines[0],
            e.user.home.to_str().unwrap(),
            "starts in the working directory"
        );
        assert_eq!(lines[1], "in home");
        assert_eq!(lines[2], "bound");
        assert_eq!(lines[3], "read-only");
        assert!(
            stdout.contains(e.user.home.to_str().unwrap()),
            "passwd has the user: {stdout}"
        );
        assert!(stdout.contains("proc\ndev\n"), "{stdout}");
        assert!(stdout.ends_with("root-read-only\n"), "{stdout}");

        // --writable-tmpfs lets the root be written, in memory only.
        let (code, stdout, _) = out(e
            .user
            .veil()
            .arg("exec")
            .arg("--writable-tmpfs")
            .arg(&image)
            .args(["sh", "-c", "echo x > /newfile && cat /newfile"]));
        assert_eq!((code, stdout.as_str()), (0, "x\n"));
        assert!(!e.image.join("newfile").exists(), "the image is unchanged");
    }
}

#[test]
fn contain_fakeroot_pid_and_hostname() {
    let e = require!(setup(), "no unprivileged user namespace or no busybox");
    for image in e.images.clone() {
        eprintln!("image: {}", image.display());
        std::fs::write("/tmp/veil-host-tmp-marker", "x").ok();
        let (code, stdout, stderr) = out(e.user.veil().arg("exec").arg("--contain").arg(&image).args([
            "sh", "-c", "test -e /tmp/veil-host-tmp-marker && echo host-tmp || echo own-tmp; ls /dev | grep -c . ; test -c /dev/null && echo null-ok",
        ]));
        assert_eq!(code, 0, "{stderr}");
        let l: Vec<&str> = stdout.lines().collect();
        assert_eq!(l[0], "own-tmp", "contained /tmp is not the host's");
        assert!(
            l[1].trim().parse::<u32>().unwrap() < 20,
            "minimal /dev: {stdout}"
        );
        assert_eq!(l[2], "null-ok");
        let (_, stdout, _) = out(e
            .user
            .veil()
            .arg("exec")
            .arg("--fakeroot")
            .arg(&image)
            .args(["id", "-u"]));
        assert_eq!(stdout.trim(), "0");
        let (code, stdout, stderr) = out(e
            .user
            .veil()
            .arg("exec")
            .arg("--pid")
            .arg(&image)
            .args(["sh", "-c", "echo $$"]));
        assert_eq!(code, 0, "{stderr}");
        assert_eq!(
            stdout.trim(),
            "2",
            "PID 1 is veil's init, the action is PID 2"
        );
        let (_, stdout, _) = out(e
            .user
            .veil()
            .arg("exec")
            .arg("--hostname")
            .arg("box7")
            .arg(&image)
            .arg("hostname"));
        assert_eq!(stdout.trim(), "box7");
    }
}

#[test]
fn stdin_flows_into_the_container() {
    let e = require!(setup(), "no unprivileged user namespace or no busybox");
    let mut child = e
        .user
        .veil()
        .arg("exec")
        .arg(&e.image)
        .args(["sh", "-c", "wc -c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&[b'z'; 100_000])
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "100000");
}

/// PIDs of the processes whose parent is `ppid`.
fn children_of(ppid: u32) -> Vec<u32> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            let after = &stat[stat.rfind(')').unwrap() + 2..];
            if after.split(' ').nth(1).and_then(|p| p.parse::<u32>().ok()) == Some(ppid) {
                v.push(pid);
            }
        }
    }
    v
}

#[test]
fn sigkill_of_the_launcher_leaves_nothing_behind() {
    let e = require!(setup(), "no unprivileged user namespace or no busybox");
    let mut launcher = e
        .user
        .veil()
        .arg("exec")
        .arg(&e.image)
        .args(["sleep", "300"])
        .spawn()
        .unwrap();
    let pid = launcher.id();
    let deadline = Instant::now() + Duration::from_secs(10);
    let container = loop {
        if let Some(c) = children_of(pid).first() {
            let cmd = std::fs::read(format!("/proc/{c}/cmdline")).unwrap_or_default();
            if cmd.starts_with(b"sleep") {
                break *c;
            }
        }
        assert!(Instant::now() < deadline, "the container did not start");
        std::thread::sleep(Duration::from_millis(20));
    };
    // The container's mounts exist only in its namespace: the host never sees them.
    let host_mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(
        !host_mounts.contains(".session"),
        "no mount leaks to the host"
    );
    launcher.kill().unwrap();
    launcher.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::path::Path::new(&format!("/proc/{container}")).exists() {
        let zombie = std::fs::read_to_string(format!("/proc/{container}/stat"))
            .map(|s| s.contains(") Z"))
            .unwrap_or(true);
        if zombie {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "container process {container} outlived the launcher"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// With `--pid` the container's own processes that stay behind without exec (the one
/// that waits in the parent PID namespace, and PID 1 inside) must not keep the
/// launcher's /dev/fuse descriptors: the FUSE connection is the launcher's alone.
#[test]
fn with_pid_only_the_launcher_holds_dev_fuse() {
    let e = require!(setup(), "no unprivileged user namespace or no busybox");
    let Some(sif) = e
        .images
        .iter()
        .find(|p| p.extension().is_some_and(|x| x == "sif"))
    else {
        eprintln!(
            "SKIP with_pid_only_the_launcher_holds_dev_fuse: no SIF image (mksquashfs missing)"
        );
        return;
    };
    let mut launcher = e
        .user
        .veil()
        .args(["exec", "--pid"])
        .arg(sif)
        .args(["sleep", "300"])
        .spawn()
        .unwrap();
    let pid = launcher.id();
    let fuse_fds = |p: u32| -> Option<usize> {
        let fds = std::fs::read_dir(format!("/proc/{p}/fd")).ok()?;
        Some(
            fds.flatten()
                .filter(|f| {
                    std::fs::read_link(f.path())
                        .is_ok_and(|t| t == std::path::Path::new("/dev/fuse"))
                })
                .count(),
        )
    };
    // Wait for `sleep`, three generations down: launcher → waiter → PID 1 → sleep.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (waiters, sleeper) = loop {
        let mut tree = vec![];
        let mut level = children_of(pid);
        while let Some(&c) = level.first() {
            tree.push(c);
            level = children_of(c);
        }
        let is_sleep = |p: &u32| {
            std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| c.starts_with(b"sleep"))
        };
        if tree.len() >= 3 && is_sleep(&tree[2]) {
            break (tree[..2].to_vec(), tree[2]);
        }
        assert!(
            Instant::now() < deadline,
            "the container did not start: {tree:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let held = fuse_fds(pid);
    let verdict = match held {
        // The launcher's own descriptors are readable only with ptrace rights over
        // it (it is not dumpable): as root, or not at all.
        None => None,
        Some(n) => {
            assert!(n > 0, "the launcher holds /dev/fuse");
            Some(
                waiters
                    .iter()
                    .chain([&sleeper])
                    .map(|&p| (p, fuse_fds(p)))
                    .collect::<Vec<_>>(),
            )
        }
    };
    launcher.kill().unwrap();
    launcher.wait().unwrap();
    match verdict {
        None => eprintln!(
            "SKIP with_pid_only_the_launcher_holds_dev_fuse: /proc/PID/fd of a non-dumpable process needs root"
        ),
        Some(v) => {
            for (p, n) in &v {
                assert_eq!(
                    *n,
                    Some(0),
                    "process {p} of the container holds /dev/fuse: {v:?}"
                );
            }
        }
    }
}

/// After a normal exit the launcher leaves the kernel's dismantling of its namespaces
/// to a helper that must die with it: nothing of the run may stay behind. The helper is
/// a clone of the launcher, so it shows the launcher's command line, which carries a
/// marker unique to this run.
#[test]
fn a_normal_exit_leaves_nothing_behind() {
    let e = require!(setup(), "no unprivileged user namespace or no busybox");
    let marker = format!("veil-exit-marker-{}", std::process::id());
    // Several runs: whether the helper or the launcher's exit comes first varies.
    for (cmd, want) in [("true", 0), ("false", 1)].repeat(5) {
        let (code, _, stderr) = out(e.user.veil().arg("exec").arg(&e.image).args([cmd, &marker]));
        assert_eq!(code, want, "{stderr}");
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left: Vec<String> = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|p| {
                p.file_name()
                    .to_string_lossy()
                    .bytes()
                    .all(|b| b.is_ascii_digit())
            })
            .filter(|p| {
                let cmd = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
                let zombie = std::fs::read_to_string(p.path().join("stat"))
                    .map(|s| s.contains(") Z"))
                    .unwrap_or(true);
                !zombie && cmd.windows(marker.len()).any(|w| w == marker.as_bytes())
            })
            .map(|p| p.file_name().to_string_lossy().into_owned())
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "processes of the run outlived it: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn missing_image_and_bad_flags_give_one_line_errors() {
    let e = require!(setup(), "no unprivileged user namespace or no busybox");
    let (code, _, stderr) = out(e
        .user
        .veil()
        .args(["exec", "/nonexistent/image.sif", "true"]));
    assert_eq!(code, 1);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("/nonexistent/image.sif"), "{stderr}");
    let (code, _, stderr) = out(e
        .user
        .veil()
        .arg("exec")
        .args(["--bind", "/nonexistent-src:/x"])
        .arg(&e.image)
        .arg("true"));
    assert_eq!(code, 1);
    assert!(
        stderr.contains("bind source /nonexistent-src does not exist"),
        "{stderr}"
    );
    let (code, _, stderr) = out(e.user.veil().arg("exec").arg(&e.image));
    assert_eq!(code, 1);
    assert!(stderr.contains("exec needs a command"), "{stderr}");
}
