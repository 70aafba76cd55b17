//! Apptainer's names that scripts use, accepted: `--cwd`, `-u/--userns`,
//! `build --fakeroot`; `veil version` and `veil completion SHELL`.

mod common;

use std::io::Write;
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
