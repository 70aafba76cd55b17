//! Apptainer's names that scripts use, accepted: `--cwd`, `-u/--userns`,
//! `build --fakeroot`; `veil version` and `veil completion SHELL`.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::*;

#[test]
fn version_and_completion_scripts_that_the_shells_accept() {
    let out = run_ok(veil().arg("version"));
    assert_eq!(
        stdout(&out),
        format!("veil version {}\n", env!("CARGO_PKG_VERSION"))
    );
    let out = run_ok(veil().args(["completion", "bash"]));
    let script = stdout(&out);
    for word in ["instance", "--sharens", "--passphrase-file", "keyslot"] {
        assert!(script.contains(word), "{word}");
    }
    // bash parses it; so do zsh and fish where installed.
    for (shell, args) in [("bash", ["-n"]), ("zsh", ["-n"]), ("fish", ["-n"])] {
        if which(shell).is_none() {
            assert_ne!(shell, "bash", "bash is needed");
            continue;
        }
        let out = run_ok(veil().args(["completion", shell]));
        let mut c = std::process::Command::new(shell)
            .args(args)
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(&out.stdout).unwrap();
        assert!(
            c.wait().unwrap().success(),
            "{shell} rejects its completion script"
        );
    }
    let err = run_err(veil().args(["completion", "tcsh"]));
    assert!(err.contains("possible values"), "{err}");
}

#[test]
fn apptainer_flag_names_are_accepted() {
    let Some(user) = Unprivileged::new() else {
        eprintln!("SKIP {}: no user namespaces", module_path!());
        return;
    };
    let Some(root) = busybox_rootfs(user.dir.path()) else {
        eprintln!("SKIP {}: no busybox", module_path!());
        return;
    };
    user.own(&root);
    let out = run_ok(
        user.veil()
            .args(["exec", "-u", "--cwd", "/data"])
            .arg(&root)
            .arg("pwd"),
    );
    assert_eq!(stdout(&out), "/data\n");
    let out = run_ok(
        user.veil()
            .args(["exec", "--userns", "--pwd", "/etc"])
            .arg(&root)
            .arg("pwd"),
    );
    assert_eq!(stdout(&out), "/etc\n");
    run_ok(
        user.veil()
            .args(["build", "-q", "--fakeroot", "-F", "out.sif"])
            .arg(&root),
    );
    assert!(user.home.join("out.sif").is_file());
}

/// veil's own failures exit with a status of their kind (docs/compat.md), apart from
/// any a container gives.
#[test]
fn failures_exit_with_the_status_of_their_kind() {
    let t = tempfile::tempdir().unwrap();
    let code = |c: &mut std::process::Command| {
        let o = c.env("HOME", t.path()).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        (o.status.code(), err)
    };
    // Usage: an unknown flag, a missing argument, on the container commands too.
    for args in [
        &["exec", "--no-such-flag", "x.sif", "true"][..],
        &["exec"],
        &["no-such-command"],
        &["key", "pull"],
    ] {
        let (c, err) = code(veil().args(args));
        assert_eq!(c, Some(249), "{args:?}: {err}");
    }
    // Help and version succeed.
    assert_eq!(code(veil().args(["exec", "--help"])).0, Some(0));
    assert_eq!(code(veil().arg("--version")).0, Some(0));
    // The image: missing, or not an image.
    let (c, err) = code(veil().args(["exec", "/nonexistent/app.sif", "true"]));
    assert_eq!(c, Some(250), "{err}");
    let junk = t.path().join("junk.sif");
    std::fs::write(&junk, b"not an image at all").unwrap();
    let (c, err) = code(veil().arg("exec").arg(&junk).arg("true"));
    assert_eq!(c, Some(250), "{err}");
    // The key of an encrypted image: none, or a wrong one.
    let tree = t.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    std::fs::write(tree.join("f"), b"x").unwrap();
    let pw = t.path().join("pw");
    std::fs::write(&pw, "right passphrase\n").unwrap();
    let enc = t.path().join("enc.sif");
    run_ok(
        veil()
            .env("HOME", t.path())
            .args([
                "build",
                "-q",
                "--kdf-memory",
                "8",
                "--kdf-time",
                "10",
                "--passphrase-file",
            ])
            .arg(&pw)
            .arg(&enc)
            .arg(&tree),
    );
    let (c, err) = code(
        veil()
            .arg("exec")
            .arg(&enc)
            .arg("true")
            .stdin(Stdio::null()),
    );
    assert_eq!(c, Some(251), "{err}");
    std::fs::write(&pw, "wrong passphrase\n").unwrap();
    let (c, err) = code(
        veil()
            .args(["exec", "--passphrase-file"])
            .arg(&pw)
            .arg(&enc)
            .arg("true"),
    );
    assert_eq!(c, Some(251), "{err}");
    // An instance's launch reports its kind across its processes.
    let (c, err) = code(
        veil()
            .args(["instance", "start", "--passphrase-file"])
            .arg(&pw)
            .arg(&enc)
            .arg("wrongkey"),
    );
    assert_eq!(c, Some(251), "{err}");
    let (c, err) = code(veil().args(["instance", "start", "/nonexistent/app.sif", "nothere"]));
    assert_eq!(c, Some(250), "{err}");
    // A missing file given to verify, with a name that is not UTF-8 (no panic).
    let (c, err) = code(veil().arg("verify").arg("/nonexistent/app.sif"));
    assert_eq!(c, Some(250), "{err}");
    {
        use std::os::unix::ffi::OsStrExt;
        let name = std::ffi::OsStr::from_bytes(b"/nonexistent/caf\xe9.sif");
        let (c, err) = code(veil().arg("verify").arg(name));
        assert_eq!(c, Some(250), "{err}");
    }
    // A variable another command reads does not break this one.
    let (c, err) = code(veil().arg("--version").env("VEIL_VERIFY", "maybe"));
    assert_eq!(c, Some(0), "{err}");
    // Signatures: an unsigned image, verified or run with --verify.
    let (c, err) = code(veil().arg("verify").arg(&enc));
    assert_eq!(c, Some(252), "{err}");
    let (c, err) = code(veil().args(["exec", "--verify"]).arg(&enc).arg("true"));
    assert_eq!(c, Some(252), "{err}");
    // Anything else.
    let (c, err) = code(
        veil()
            .args(["key", "export", "0123456789ABCDEF"])
            .arg(t.path().join("k")),
    );
    assert_eq!(c, Some(255), "{err}");
}

/// Flag defaults from the peers' variables: the command line, then `VEIL_`, then
/// A busybox image, built by veil, at `dir/name` (`None` without busybox).
fn busybox_sif(dir: &Path, name: &str) -> Option<PathBuf> {
    let root = busybox_rootfs(dir)?;
    let sif = dir.join(name);
    run_ok(
        veil()
            .env("HOME", dir)
            .args(["build", "-q"])
            .arg(&sif)
            .arg(&root),
    );
    Some(sif)
}

/// `APPTAINER_`, then `SINGULARITY_`; binds from `*_BINDPATH` too.
#[test]
fn flag_defaults_come_from_the_peers_variables() {
    let t = tempfile::tempdir().unwrap();
    let sif = require!(busybox_sif(t.path(), "bb.sif"), "busybox is not installed");
    let exec = |vars: &[(&str, &str)], args: &[&str]| {
        let mut c = veil();
        c.env("HOME", t.path());
        for p in ["VEIL_", "APPTAINER_", "SINGULARITY_"] {
            for n in ["PWD", "CLEANENV", "BIND", "BINDPATH", "CONTAINALL"] {
                c.env_remove(format!("{p}{n}"));
            }
        }
        for (k, v) in vars {
            c.env(k, v);
        }
        c.arg("exec");
        c.args(&args[..args.len() - 1])
            .arg(&sif)
            .arg("sh")
            .arg("-c")
            .arg(args[args.len() - 1]);
        c.output().unwrap()
    };
    let text = |o: &std::process::Output| String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert_eq!(
        text(&exec(&[("SINGULARITY_PWD", "/etc")], &["pwd"])),
        "/etc"
    );
    assert_eq!(
        text(&exec(
            &[("SINGULARITY_PWD", "/etc"), ("APPTAINER_PWD", "/tmp")],
            &["pwd"]
        )),
        "/tmp"
    );
    assert_eq!(
        text(&exec(
            &[("VEIL_PWD", "/bin"), ("APPTAINER_PWD", "/tmp")],
            &["pwd"]
        )),
        "/bin"
    );
    assert_eq!(
        text(&exec(&[("VEIL_PWD", "/bin")], &["--pwd", "/", "pwd"])),
        "/"
    );
    // A boolean flag: on, and off again by the variable before it.
    let o = exec(
        &[("APPTAINER_CLEANENV", "1"), ("CANARY_VAR", "x")],
        &["echo ${CANARY_VAR:-gone}"],
    );
    assert_eq!(text(&o), "gone");
    let o = exec(
        &[
            ("VEIL_CLEANENV", "false"),
            ("APPTAINER_CLEANENV", "1"),
            ("CANARY_VAR", "x"),
        ],
        &["echo ${CANARY_VAR:-gone}"],
    );
    assert_eq!(text(&o), "x");
    // Binds from *_BINDPATH.
    let data = t.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("f"), "bound\n").unwrap();
    let spec = format!("{}:/mnt", data.display());
    let o = exec(&[("APPTAINER_BINDPATH", &spec)], &["cat /mnt/f"]);
    assert_eq!(text(&o), "bound", "{}", String::from_utf8_lossy(&o.stderr));
    // A value a boolean cannot take: a usage error naming the variable.
    let o = exec(&[("APPTAINER_CONTAINALL", "maybe")], &["true"]);
    assert_eq!(o.status.code(), Some(249));
    assert!(String::from_utf8_lossy(&o.stderr).contains("APPTAINER_CONTAINALL"));
}

/// `run-help IMAGE`: the definition's %help, or the peers' line when there is none.
#[test]
fn run_help_prints_the_images_help() {
    let t = tempfile::tempdir().unwrap();
    let base = require!(
        busybox_sif(t.path(), "base.sif"),
        "busybox is not installed"
    );
    let def = t.path().join("h.def");
    std::fs::write(
        &def,
        format!(
            "Bootstrap: localimage\nFrom: {}\n\n%help\n    Says hello.\n    No arguments.\n",
            base.display()
        ),
    )
    .unwrap();
    let helped = t.path().join("helped.sif");
    run_ok(
        veil()
            .env("HOME", t.path())
            .args(["build", "-q"])
            .arg(&helped)
            .arg(&def),
    );
    let out = stdout(&run_ok(
        veil().env("HOME", t.path()).arg("run-help").arg(&helped),
    ));
    assert!(
        out.contains("Says hello.") && out.contains("No arguments."),
        "{out}"
    );
    let out = stdout(&run_ok(
        veil().env("HOME", t.path()).arg("run-help").arg(&base),
    ));
    assert_eq!(out, "No help sections were defined for this image\n");
    let o = veil()
        .args(["run-help", "/nonexistent/app.sif"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(250));
}

/// The peers' mount flags shape the container: `--mount`, `--no-mount`, `-W`, `-S`,
/// `--no-umask`, `--compat`, `--no-pid`.
#[test]
fn mount_and_namespace_flags_of_the_peers() {
    let t = tempfile::tempdir().unwrap();
    let sif = require!(busybox_sif(t.path(), "bb.sif"), "busybox is not installed");
    let exec = |args: &[&str], script: &str| {
        let mut c = std::process::Command::new("sh");
        c.env("HOME", t.path());
        c.arg("-c")
            .arg("umask 077; exec \"$@\"")
            .arg("sh")
            .arg(env!("CARGO_BIN_EXE_veil"))
            .arg("exec")
            .args(args)
            .arg(&sif)
            .args(["sh", "-c", script]);
        c.output().unwrap()
    };
    let text = |o: &std::process::Output| {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    // --mount, read-only.
    let data = t.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("f"), "mounted\n").unwrap();
    let spec = format!(
        "type=bind,source={},destination=/mnt/d,readonly",
        data.display()
    );
    let o = exec(
        &["--mount", &spec],
        "cat /mnt/d/f; touch /mnt/d/g 2>/dev/null || echo ro",
    );
    assert_eq!(text(&o), "mounted\nro");
    // --no-mount: the home (under the host's /tmp here) and /proc disappear.
    let home = t.path().display().to_string();
    let probe = format!("test -e {home} && echo home; test -e /proc/self && echo proc; true");
    assert_eq!(text(&exec(&[], &probe)), "home\nproc");
    assert_eq!(
        text(&exec(
            &["--no-mount", "tmp,home,cwd", "--no-mount", "proc"],
            &probe
        )),
        ""
    );
    // -W and -S: with --contain, /tmp and the scratch directory are in the work
    // directory, made 0700; without it, /tmp stays the host's.
    let w = t.path().join("work");
    std::fs::create_dir(&w).unwrap();
    let ws = w.to_str().unwrap();
    let o = exec(
        &["-c", "-W", ws, "-S", "/scr"],
        "echo a > /tmp/a && echo b > /scr/b && echo ok",
    );
    assert_eq!(text(&o), "ok");
    assert_eq!(std::fs::read_to_string(w.join("tmp/a")).unwrap(), "a\n");
    assert_eq!(
        std::fs::read_to_string(w.join("scratch/scr/b")).unwrap(),
        "b\n"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(w.join("home"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
    let host_tmp = t.path().join("seen-from-the-host");
    std::fs::write(&host_tmp, "").unwrap();
    let probe = format!("test -e {} && echo host-tmp", host_tmp.display());
    assert_eq!(text(&exec(&["-W", ws], &probe)), "host-tmp");
    // A work directory whose home someone else may write to is refused.
    let w2 = t.path().join("work2");
    std::fs::create_dir_all(w2.join("home")).unwrap();
    std::fs::set_permissions(w2.join("home"), std::fs::Permissions::from_mode(0o777)).unwrap();
    let o = exec(&["-c", "-W", w2.to_str().unwrap()], "true");
    assert_eq!(o.status.code(), Some(249));
    assert!(String::from_utf8_lossy(&o.stderr).contains("writable by you alone"));
    // A work directory others may write to must be sticky; unused (no --contain or
    // --scratch), it is not even looked at.
    let w4 = t.path().join("work4");
    std::fs::create_dir(&w4).unwrap();
    std::fs::set_permissions(&w4, std::fs::Permissions::from_mode(0o777)).unwrap();
    let o = exec(&["-c", "-W", w4.to_str().unwrap()], "true");
    assert_eq!(o.status.code(), Some(249));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not sticky"));
    assert_eq!(
        text(&exec(&["-W", w4.to_str().unwrap()], "echo unused")),
        "unused"
    );
    // A symlink in its place is not followed.
    let w3 = t.path().join("work3");
    std::fs::create_dir(&w3).unwrap();
    std::os::unix::fs::symlink(&data, w3.join("tmp")).unwrap();
    let o = exec(&["-c", "-W", w3.to_str().unwrap()], "true");
    assert_eq!(o.status.code(), Some(249));
    assert!(String::from_utf8_lossy(&o.stderr).contains("symlink"));
    // -S alone: in memory.
    let o = exec(&["-S", "/scr"], "grep -c ' /scr tmpfs ' /proc/mounts");
    assert_eq!(text(&o), "1");
    // --no-umask; --compat (writable root, umask 0022, own PID namespace); --no-pid.
    assert_eq!(text(&exec(&[], "umask")), "0077");
    assert_eq!(text(&exec(&["--no-umask"], "umask")), "0022");
    let o = exec(&["--compat"], "umask; touch /new && echo writable; echo $$");
    let out = text(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..2], ["0022", "writable"]);
    assert!(lines[2].parse::<u32>().unwrap() < 10, "{out}");
    let o = exec(&["--compat", "--no-pid"], "echo $$");
    assert!(text(&o).parse::<u32>().unwrap() > 10);
    // --net --network none: a network namespace with loopback alone, up.
    let o = exec(
        &["--net", "--network", "none"],
        "grep -c : /proc/net/dev; /bin/busybox ip link show lo | grep -c ',UP'",
    );
    assert_eq!(text(&o), "1\n1");
    // The peers' MOUNT variable: one mount per line; read after a global flag too.
    let two = format!(
        "type=bind,source={d},destination=/m1\ntype=bind,source={d},destination=/m2",
        d = data.display()
    );
    let mut c = veil();
    c.env("HOME", t.path())
        .env("APPTAINER_MOUNT", &two)
        .args(["-q", "exec"])
        .arg(&sif)
        .args(["sh", "-c", "cat /m1/f /m2/f"]);
    assert_eq!(text(&c.output().unwrap()), "mounted\nmounted");
    // Bad values: usage errors naming the flag.
    for (args, needle) in [
        (&["--no-mount", "bogus"][..], "--no-mount \"bogus\""),
        (
            &["--mount", "type=volume,src=/x,dst=/y"][..],
            "only type=bind",
        ),
        (&["-S", "relative"][..], "--scratch \"relative\""),
        (&["--nv"][..], "--nv: veil has no GPU support"),
        (
            &["--network", "bridge"][..],
            "--network \"bridge\": veil makes only",
        ),
        (&["-S", "/proc/x"][..], "--scratch \"/proc/x\""),
        (
            &["--no-privs", "--fakeroot"][..],
            "--no-privs with --fakeroot",
        ),
        (
            &["--mount", "type=bind,src=/tmp,src=/etc,dst=/d"][..],
            "given twice",
        ),
    ] {
        let o = exec(args, "true");
        assert_eq!(o.status.code(), Some(249), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(needle) && err.lines().count() == 1,
            "{args:?}: {err}"
        );
    }
}

/// `build` refuses build arguments its definition does not use, unless
/// `--warn-unused-build-args`.
#[test]
fn unused_build_arguments_fail_the_build_unless_warned() {
    let t = tempfile::tempdir().unwrap();
    let base = require!(busybox_sif(t.path(), "bb.sif"), "busybox is not installed");
    let def = t.path().join("x.def");
    std::fs::write(
        &def,
        format!(
            "Bootstrap: localimage\nFrom: {}\n\n%labels\n    who {{{{ WHO }}}}\n",
            base.display()
        ),
    )
    .unwrap();
    let build = |extra: &[&str]| {
        let mut c = veil();
        c.env("HOME", t.path())
            .args([
                "build",
                "-q",
                "-F",
                "--build-arg",
                "WHO=me",
                "--build-arg",
                "EXTRA=1",
            ])
            .args(extra)
            .arg(t.path().join("x.sif"))
            .arg(&def);
        c.output().unwrap()
    };
    let o = build(&[]);
    assert_ne!(o.status.code(), Some(0));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("does not use the build argument(s) EXTRA"),
        "{err}"
    );
    assert!(!t.path().join("x.sif").exists());
    let o = build(&["--warn-unused-build-args"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("warning"));
}

/// Re-keying a gocryptfs image rewrites it: a progress bar on a terminal, none with
/// the global `-q` or off a terminal.
#[test]
fn rekeying_shows_a_progress_bar_on_a_terminal_only() {
    let script = require!(which("script"), "no script(1) (util-linux)");
    let t = tempfile::tempdir().unwrap();
    let root = require!(busybox_rootfs(t.path()), "busybox is not installed");
    let mut noise = vec![0u8; 12 << 20];
    getrandom::fill(&mut noise).unwrap();
    std::fs::write(root.join("noise"), &noise).unwrap();
    let p = |n: &str| t.path().join(n);
    std::fs::write(p("a"), "first passphrase\n").unwrap();
    std::fs::write(p("b"), "second passphrase\n").unwrap();
    let img = p("g.sif");
    run_ok(
        veil()
            .env("HOME", t.path())
            .args([
                "build",
                "-q",
                "--encryption-format",
                "gocryptfs",
                "--scryptn",
                "10",
            ])
            .arg("--passphrase-file")
            .arg(p("a"))
            .arg(&img)
            .arg(&root),
    );
    let change = |global: &[&str], from: &str, to: &str| {
        let line = format!(
            "{} {} keyslot change {} --passphrase-file {} --new-passphrase-file {}",
            env!("CARGO_BIN_EXE_veil"),
            global.join(" "),
            img.display(),
            p(from).display(),
            p(to).display()
        );
        let o = std::process::Command::new(&script)
            .env("HOME", t.path())
            .env("TERM", "xterm")
            .args(["-q", "-e", "-c", &line, "/dev/null"])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let shown = change(&[], "a", "b");
    assert!(
        shown.contains("re-key") && shown.contains("100%"),
        "{shown:?}"
    );
    let shown = change(&["-q"], "b", "a");
    assert!(!shown.contains('%'), "{shown:?}");
    // Off a terminal: no bar.
    let o = run_ok(
        veil()
            .env("HOME", t.path())
            .args(["keyslot", "change"])
            .arg(&img)
            .arg("--passphrase-file")
            .arg(p("a"))
            .arg("--new-passphrase-file")
            .arg(p("b")),
    );
    assert!(!String::from_utf8_lossy(&o.stderr).contains('%'));
}

/// `build --json`, which the peers accept and ignore: a definition file builds as without it.
#[test]
fn build_json_is_accepted_and_changes_nothing() {
    let t = tempfile::tempdir().unwrap();
    let base = require!(busybox_sif(t.path(), "bb.sif"), "busybox is not installed");
    let def = t.path().join("x.def");
    std::fs::write(
        &def,
        format!(
            "Bootstrap: localimage\nFrom: {}\n\n%runscript\n    echo from the def\n",
            base.display()
        ),
    )
    .unwrap();
    let sif = t.path().join("j.sif");
    run_ok(
        veil()
            .env("HOME", t.path())
            .args(["build", "-q", "--json"])
            .arg(&sif)
            .arg(&def),
    );
    let o = run_ok(veil().env("HOME", t.path()).arg("run").arg(&sif));
    assert_eq!(stdout(&o), "from the def\n");
}
