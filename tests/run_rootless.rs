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

/// The numeric entries of /proc: every process this test can see.
fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .collect()
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s[s.rfind(')').unwrap_or(0)..].starts_with(") Z"))
        .unwrap_or(true)
}

/// Live processes whose command line is exactly `sleep N` for one of `ns`, seen from
/// outside every namespace of the container (this test's own /proc).
fn sleepers(ns: &[u64]) -> Vec<(u32, u64)> {
    let wanted: Vec<(Vec<u8>, u64)> = ns
        .iter()
        .map(|n| (format!("sleep\0{n}\0").into_bytes(), *n))
        .collect();
    all_pids()
        .into_iter()
        .filter_map(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let n = wanted.iter().find(|(w, _)| *w == cmd)?.1;
            (!is_zombie(pid)).then_some((pid, n))
        })
        .collect()
}

/// Every line of every mount table this test can read (one per mount namespace in use,
/// as seen by each process) that mentions `marker`, with the pid it was read from.
fn mounts_mentioning(marker: &str) -> Vec<String> {
    let mut v = Vec::new();
    for pid in all_pids() {
        if let Ok(table) = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")) {
            v.extend(
                table
                    .lines()
                    .filter(|l| l.contains(marker))
                    .map(|l| format!("{pid}: {l}")),
            );
        }
    }
    v
}

/// SIGKILL of the launcher ends every process started in the container — a child in
/// the background, a daemon that left the session with setsid, a double fork — on the
/// sandbox and the FUSE paths, with and without a PID namespace, and no mount of the
/// run stays in any mount namespace. Both are looked for from outside: in this test's
/// /proc, and in the mount table of every process it can see.
#[test]
fn sigkill_of_the_launcher_leaves_nothing_behind() {
    let e = require!(setup(), "no unprivileged user namespace or no busybox");
    // Every bind of the run comes from the test's private directory (home, working
    // directory, sandbox), and the SIF's FUSE mount shows the file's name as its source:
    // a copy named after the directory makes that one carry the marker as well.
    let marker = e
        .user
        .dir
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let mut images = vec![(e.image.clone(), "/rootfs ")];
    if let Some(sif) = e
        .images
        .iter()
        .find(|p| p.extension().is_some_and(|x| x == "sif"))
    {
        let named = e.user.dir.path().join(format!("{marker}.sif"));
        std::fs::copy(sif, &named).unwrap();
        images.push((named, "fuse.veil"));
    }
    let base = 7_000_000 + u64::from(std::process::id() % 10_000) * 100;
    let mut variant = 0;
    for (image, mount_kind) in &images {
        for flags in [&[][..], &["--pid"], &["--fakeroot"], &["--containall"]] {
            variant += 1;
            let n: Vec<u64> = (1..=4).map(|k| base + variant * 10 + k).collect();
            let what = format!("{} {flags:?}", image.display());
            let script = format!(
                "sleep {} & setsid sh -c 'sleep {} &'; (sleep {} &); exec sleep {}",
                n[0], n[1], n[2], n[3]
            );
            let mut launcher = e
                .user
                .veil()
                .arg("exec")
                .args(flags)
                .arg(image)
                .args(["sh", "-c", &script])
                .spawn()
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(15);
            while sleepers(&n).len() < 4 {
                assert!(
                    Instant::now() < deadline,
                    "{what}: the container's processes did not start: {:?}",
                    sleepers(&n)
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            // The scan sees the run's mounts while it runs, so finding none later means
            // they are gone, not that the scan is blind.
            let seen = mounts_mentioning(&marker);
            assert!(
                seen.iter().any(|l| l.contains(mount_kind)),
                "{what}: the image mount is not visible from outside: {seen:#?}"
            );
            launcher.kill().unwrap();
            launcher.wait().unwrap();
            check_gone(&n, &marker, &what);
        }
    }
    // The container's init killed on its own (no PID namespace: it is a subreaper in
    // the host's): the launcher ends what it leaves.
    variant += 1;
    let n: Vec<u64> = (1..=4).map(|k| base + variant * 10 + k).collect();
    let script = format!(
        "sleep {} & setsid sh -c 'sleep {} &'; (sleep {} &); exec sleep {}",
        n[0], n[1], n[2], n[3]
    );
    let mut launcher = e
        .user
        .veil()
        .arg("exec")
        .arg(&e.image)
        .args(["sh", "-c", &script])
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while sleepers(&n).len() < 4 {
        assert!(Instant::now() < deadline, "the container did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let init = children_of(launcher.id());
    assert_eq!(init.len(), 1, "{init:?}");
    let _ = Command::new("kill")
        .args(["-KILL", &init[0].to_string()])
        .status();
    launcher.wait().unwrap();
    check_gone(&n, &marker, "the init killed");
}

/// Waits until no `sleep N` of `n` lives and no mount mentions `marker`; kills what is
/// left and fails if that takes more than ten seconds.
fn check_gone(n: &[u64], marker: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (left, mounts) = (sleepers(n), mounts_mentioning(marker));
        if left.is_empty() && mounts.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            for (pid, _) in &left {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
            panic!("{what}: outlived the launcher: processes {left:?}, mounts {mounts:#?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// When the container's main process ends, whatever it left running in the background
/// ends with the run, as after a SIGKILL of the launcher.
#[test]
fn a_normal_exit_ends_the_containers_background_processes() {
    let e = require!(setup(), "no unprivileged user namespace or no busybox");
    let base = 8_000_000 + u64::from(std::process::id() % 10_000) * 100;
    let mut variant = 0;
    for image in e.images.clone() {
        for flags in [&[][..], &["--pid"]] {
            variant += 1;
            let n: Vec<u64> = (1..=2).map(|k| base + variant * 10 + k).collect();
            let script = format!("sleep {} & setsid sh -c 'sleep {} &'; exit 3", n[0], n[1]);
            // (Without output pipes, which what is left in the background would hold.)
            let st = e
                .user
                .veil()
                .arg("exec")
                .args(flags)
                .arg(&image)
                .args(["sh", "-c", &script])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .unwrap();
            assert_eq!(st.code(), Some(3));
            let deadline = Instant::now() + Duration::from_secs(5);
            while !sleepers(&n).is_empty() {
                if Instant::now() > deadline {
                    let left = sleepers(&n);
                    for (pid, _) in &left {
                        let _ = Command::new("kill")
                            .args(["-KILL", &pid.to_string()])
                            .status();
                    }
                    panic!(
                        "{} {flags:?}: background processes outlived the run: {left:?}",
                        image.display()
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// A descriptor the caller leaves open in the launcher never reaches the container:
/// `ls /proc/self/fd` shows 0, 1, 2 and the one ls itself opens, on every path (direct
/// start, PID namespace, fakeroot).
#[test]
fn no_descriptor_of_the_caller_reaches_the_container() {
    let e = require!(setup(), "no unprivileged user namespace or no busybox");
    let three = std::fs::File::create(e.user.dir.path().join("fd-three")).unwrap();
    let seven = std::fs::File::create(e.user.dir.path().join("fd-seven")).unwrap();
    for image in e.images.clone() {
        for flags in [&[][..], &["--containall"], &["--pid"], &["--fakeroot"]] {
            let mut c = e.user.veil();
            c.arg("exec")
                .args(flags)
                .arg(&image)
                .args(["ls", "/proc/self/fd"]);
            inherit_fds(&mut c, &[(&three, 3), (&seven, 7)]);
            let (code, stdout, stderr) = out(&mut c);
            assert_eq!(code, 0, "{stderr}");
            let mut fds: Vec<u32> = stdout
                .split_whitespace()
                .map(|f| f.parse().unwrap())
                .collect();
            fds.sort();
            assert_eq!(
                fds,
                [0, 1, 2, 3],
                "{} {flags:?}: the container holds descriptors it was never given",
                image.display()
            );
        }
    }
}

/// The per-mount options (the sixth field) of every line of a /proc/PID/mountinfo,
/// with the mount point.
fn mount_options(mountinfo: &str) -> Vec<(String, Vec<String>)> {
    mountinfo
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            Some((
                f.get(4)?.to_string(),
                f.get(5)?.split(',').map(str::to_string).collect(),
            ))
        })
        .collect()
}

/// Every mount of the container is nosuid, and nodev except the device ones (/dev and
/// what is under it): the defaults (home, /tmp, the working directory, /proc, /sys),
/// user binds, and the image itself.
#[test]
fn every_mount_is_nosuid_and_only_dev_keeps_devices() {
    let e = require!(setup(), "no unprivileged user namespace or no busybox");
    let extra = e.user.dir.path().join("extra");
    std::fs::create_dir_all(&extra).unwrap();
    for image in e.images.clone() {
        for flags in [&[][..], &["--contain"], &["--fakeroot", "--pid"]] {
            let (code, stdout, stderr) = out(e
                .user
                .veil()
                .arg("exec")
                .args(flags)
                .arg("--bind")
                .arg(format!("{}:/mnt/x", extra.display()))
                .arg(&image)
                .args(["cat", "/proc/self/mountinfo"]));
            assert_eq!(code, 0, "{stderr}");
            let mounts = mount_options(&stdout);
            assert!(mounts.len() > 5, "{stdout}");
            for (point, opts) in &mounts {
                let what = format!("{} {flags:?}: {point} {opts:?}", image.display());
                assert!(opts.iter().any(|o| o == "nosuid"), "not nosuid: {what}");
                if point != "/dev" && !point.starts_with("/dev/") {
                    assert!(opts.iter().any(|o| o == "nodev"), "not nodev: {what}");
                }
            }
            for point in ["/", "/mnt/x", "/tmp", "/proc"] {
                assert!(
                    mounts.iter().any(|(p, _)| p == point),
                    "{point} missing: {stdout}"
                );
            }
        }
    }
}

/// Under --fakeroot the container has CAP_SYS_ADMIN in its user namespace, yet a `:ro`
/// bind and the image stay read-only: the mounts are locked (they reach the container
/// through a mount namespace copied into a less privileged user namespace).
#[test]
fn read_only_binds_and_the_image_stay_read_only_under_fakeroot() {
    let e = require!(setup(), "no unprivileged user namespace or no busybox");
    let extra = e.user.dir.path().join("ro-extra");
    std::fs::create_dir_all(&extra).unwrap();
    e.user.own(&extra);
    let script = "mount -o remount,rw,bind /mnt/ro 2>/dev/null && echo remounted; \
                  touch /mnt/ro/new 2>/dev/null && echo wrote; \
                  umount /mnt/ro 2>/dev/null && echo unmounted; \
                  mount -o remount,rw,bind / 2>/dev/null && echo root-remounted; \
                  touch /new 2>/dev/null && echo root-wrote; \
                  id -u";
    for image in e.images.clone() {
        let (code, stdout, stderr) = out(e
            .user
            .veil()
            .args(["exec", "--fakeroot", "--bind"])
            .arg(format!("{}:/mnt/ro:ro", extra.display()))
            .arg(&image)
            .args(["sh", "-c", script]));
        assert_eq!(code, 0, "{stderr}");
        assert_eq!(stdout, "0\n", "{}: {stdout}", image.display());
        assert!(!extra.join("new").exists());
    }
}

/// A `:ro` bind of a directory that is itself a bind mount and has a mount inside it is
/// read-only all the way down. The mounts are made in a mount namespace of the test's
/// own (root only), which the launcher, run as the unprivileged user, starts in.
#[test]
fn a_read_only_bind_is_read_only_throughout() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP {}: making the submounts needs root", module_path!());
        return;
    }
    let e = require!(setup(), "no unprivileged user namespace or no busybox");
    let src = e.user.dir.path().join("tree-src");
    let tree = e.user.dir.path().join("tree");
    for d in [src.join("sub"), tree.clone()] {
        std::fs::create_dir_all(&d).unwrap();
    }
    e.user.own(&src);
    let inner = "touch /mnt/t/a 2>/dev/null && echo top-writable; \
                 touch /mnt/t/sub/a 2>/dev/null && echo sub-writable; \
                 grep ' /mnt/t' /proc/self/mountinfo";
    for image in e.images.clone() {
        let o = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(
                "mount --bind \"$1\" \"$2\" && mount -t tmpfs -o mode=1777 veil-sub \"$2/sub\" && \
                 cd \"$3\" && exec setpriv --reuid=\"$4\" --regid=\"$4\" --clear-groups \
                 \"$5\" exec --bind \"$2:/mnt/t:ro\" \"$6\" sh -c \"$7\"",
            )
            .arg("sh")
            .arg(&src)
            .arg(&tree)
            .arg(&e.user.home)
            .arg(e.user.uid.to_string())
            .arg(&e.user.bin)
            .arg(&image)
            .arg(inner)
            .env_clear()
            .env("HOME", &e.user.home)
            .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
            .output()
            .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
        );
        assert!(o.status.success(), "{stderr}");
        let mounts = mount_options(&stdout);
        assert!(
            mounts.iter().any(|(p, _)| p == "/mnt/t/sub"),
            "the submount is there: {stdout}"
        );
        for (point, opts) in &mounts {
            assert!(
                opts.iter().any(|o| o == "ro"),
                "{}: {point} is not read-only: {stdout}",
                image.display()
            );
        }
        assert!(
            !stdout.contains("writable"),
            "{}: {stdout}",
            image.display()
        );
    }
}

/// `--containall` puts the container in an IPC namespace of its own; `--contain` uses
/// the home directory `--home` names instead of an empty one.
#[test]
fn containall_has_its_own_ipc_namespace_and_contain_honours_home() {
    let e = require!(setup(), "no unprivileged user namespace or no busybox");
    let host_ipc = std::fs::read_link("/proc/self/ns/ipc").unwrap();
    let home = e.user.dir.path().join("other-home");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(home.join("marker"), "from the given home\n").unwrap();
    e.user.own(&home);
    for image in e.images.clone() {
        let ipc = |flags: &[&str]| {
            let (code, stdout, stderr) = out(e
                .user
                .veil()
                .arg("exec")
                .args(flags)
                .arg(&image)
                .args(["readlink", "/proc/self/ns/ipc"]));
            assert_eq!(code, 0, "{stderr}");
            stdout.trim().to_string()
        };
        assert_eq!(ipc(&[]), host_ipc.to_string_lossy());
        assert_ne!(ipc(&["--containall"]), host_ipc.to_string_lossy());
        for (spec, inside) in [
            (home.display().to_string(), home.display().to_string()),
            (format!("{}:/custom", home.display()), "/custom".to_string()),
        ] {
            let (code, stdout, stderr) = out(e
                .user
                .veil()
                .args(["exec", "--contain", "--home", &spec])
                .arg(&image)
                .args(["sh", "-c", "echo $HOME; cat $HOME/marker; pwd"]));
            assert_eq!(code, 0, "{stderr}");
            assert_eq!(
                stdout,
                format!("{inside}\nfrom the given home\n{inside}\n"),
                "{} --contain --home {spec}",
                image.display()
            );
        }
    }
}

/// The container's processes that are veil's own (its init, which stays behind without
/// the action's exec) must not keep the launcher's /dev/fuse descriptors: the FUSE
/// connection is the launcher's alone, with or without a PID namespace.
#[test]
fn only_the_launcher_holds_dev_fuse() {
    let e = require!(setup(), "no unprivileged user namespace or no busybox");
    let Some(sif) = e
        .images
        .iter()
        .find(|p| p.extension().is_some_and(|x| x == "sif"))
    else {
        eprintln!("SKIP only_the_launcher_holds_dev_fuse: no SIF image (mksquashfs missing)");
        return;
    };
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
    for flags in [&["--pid"][..], &[]] {
        let mut launcher = e
            .user
            .veil()
            .arg("exec")
            .args(flags)
            .arg(sif)
            .args(["sleep", "300"])
            .spawn()
            .unwrap();
        let pid = launcher.id();
        // Wait for `sleep` among the launcher's descendants.
        let deadline = Instant::now() + Duration::from_secs(10);
        let descendants = loop {
            let mut all = vec![];
            let mut level = children_of(pid);
            while !level.is_empty() {
                all.extend(&level);
                level = level.iter().flat_map(|&c| children_of(c)).collect();
            }
            let is_sleep = |p: &u32| {
                std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| c.starts_with(b"sleep"))
            };
            if all.iter().any(is_sleep) {
                break all;
            }
            assert!(
                Instant::now() < deadline,
                "the container did not start: {all:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let verdict = match fuse_fds(pid) {
            // The launcher's own descriptors are readable only with ptrace rights over
            // it (it is not dumpable): as root, or not at all.
            None => None,
            Some(n) => {
                assert!(n > 0, "the launcher holds /dev/fuse");
                Some(
                    descendants
                        .iter()
                        .map(|&p| (p, fuse_fds(p)))
                        .collect::<Vec<_>>(),
                )
            }
        };
        launcher.kill().unwrap();
        launcher.wait().unwrap();
        match verdict {
            None => eprintln!(
                "SKIP only_the_launcher_holds_dev_fuse: /proc/PID/fd of a non-dumpable process needs root"
            ),
            Some(v) => {
                assert!(v.len() >= 2, "an init and the action: {v:?}");
                for (p, n) in &v {
                    assert_eq!(
                        *n,
                        Some(0),
                        "{flags:?}: process {p} of the container holds /dev/fuse: {v:?}"
                    );
                }
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
    assert_eq!(code, 250);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("/nonexistent/image.sif"), "{stderr}");
    let (code, _, stderr) = out(e
        .user
        .veil()
        .arg("exec")
        .args(["--bind", "/nonexistent-src:/x"])
        .arg(&e.image)
        .arg("true"));
    assert_eq!(code, 249);
    assert!(
        stderr.contains("bind source /nonexistent-src does not exist"),
        "{stderr}"
    );
    let (code, _, stderr) = out(e.user.veil().arg("exec").arg(&e.image));
    assert_eq!(code, 249);
    assert!(stderr.contains("exec needs a command"), "{stderr}");
}
