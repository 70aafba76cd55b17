//! Snapshot tests of `--help`: one file per command under tests/snapshots/help, so
//! that a change to a flag or its text shows as a diff in review. `VEIL_BLESS=1`
//! rewrites the files from the current output.

mod common;

use std::path::Path;

use common::*;

/// Every command and subcommand, as typed.
const COMMANDS: &[&str] = &[
    "",
    "run",
    "exec",
    "shell",
    "test",
    "instance start",
    "instance run",
    "instance stop",
    "instance list",
    "instance stats",
    "build",
    "keyslot",
    "inspect",
    "run-help",
    "sif",
    "key",
    "key newpair",
    "key list",
    "key import",
    "key export",
    "key search",
    "key pull",
    "key push",
    "key remove",
    "keyserver",
    "keyserver add",
    "keyserver remove",
    "keyserver list",
    "sign",
    "verify",
    "push",
    "pull",
    "registry",
    "cache",
    "version",
    "completion",
];

/// Compares `text` with the snapshot `dir/NAME.txt`, noting a difference in
/// `differ`; with `VEIL_BLESS` set, writes it instead.
fn check_snapshot(dir: &Path, name: &str, text: &str, differ: &mut Vec<String>) {
    let file = dir.join(format!("{name}.txt"));
    if std::env::var_os("VEIL_BLESS").is_some() {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(&file, text).unwrap();
        return;
    }
    match std::fs::read_to_string(&file) {
        Ok(want) if want == text => {}
        Ok(want) => differ.push(format!("{name}: differs:\n--- want\n{want}--- got\n{text}")),
        Err(_) => differ.push(format!("{name}: no snapshot ({})", file.display())),
    }
}

#[test]
fn help_texts_match_their_snapshots() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots/help");
    let mut differ = Vec::new();
    for cmd in COMMANDS {
        let mut c = veil();
        c.args(cmd.split_whitespace())
            .arg("--help")
            .env("COLUMNS", "100");
        let out = run_ok(&mut c);
        let text = String::from_utf8(out.stdout).unwrap();
        let name = if cmd.is_empty() {
            "veil".to_string()
        } else {
            format!("veil-{}", cmd.replace(' ', "-"))
        };
        check_snapshot(&dir, &name, &text, &mut differ);
    }
    assert!(
        differ.is_empty(),
        "help texts changed; check them and rerun with VEIL_BLESS=1:\n  {}",
        differ.join("\n  ")
    );
}

/// The errors of compatibility flags, one file per case under tests/snapshots/errors
/// (its exit status, then what veil printed on stderr), so that a change to a reason
/// shows as a diff. `VEIL_BLESS=1` rewrites them.
const ERROR_CASES: &[(&str, &[&str])] = &[
    ("run-nv", &["run", "--nv", "/nonexistent/x.sif"]),
    (
        "run-network-bridge",
        &["run", "--net", "--network", "bridge", "/nonexistent/x.sif"],
    ),
    (
        "run-network-args",
        &[
            "run",
            "--net",
            "--network-args",
            "portmap=80:80/tcp",
            "/nonexistent/x.sif",
        ],
    ),
    (
        "run-overlay",
        &["run", "--overlay", "o.img", "/nonexistent/x.sif"],
    ),
    (
        "run-memory",
        &["run", "--memory", "1G", "/nonexistent/x.sif"],
    ),
    (
        "exec-no-mount-bogus",
        &["exec", "--no-mount", "bogus", "/nonexistent/x.sif", "true"],
    ),
    (
        "exec-mount-volume",
        &[
            "exec",
            "--mount",
            "type=volume,src=/tmp,dst=/d",
            "/nonexistent/x.sif",
            "true",
        ],
    ),
    (
        "exec-scratch-proc",
        &["exec", "-S", "/proc/x", "/nonexistent/x.sif", "true"],
    ),
    (
        "exec-no-privs-fakeroot",
        &[
            "exec",
            "--no-privs",
            "--fakeroot",
            "/nonexistent/x.sif",
            "true",
        ],
    ),
    (
        "run-global-flag-after",
        &["run", "-q", "/nonexistent/x.sif"],
    ),
    ("global-quiet-silent", &["-q", "-s", "version"]),
    ("global-config", &["-c", "apptainer.conf", "version"]),
    (
        "build-section",
        &[
            "build",
            "--section",
            "post",
            "/nonexistent/out.sif",
            "x.def",
        ],
    ),
    (
        "verify-certificate",
        &["verify", "--certificate", "c.pem", "/nonexistent/x.sif"],
    ),
    ("key-list-global", &["key", "list", "-g"]),
    (
        "inspect-app",
        &["inspect", "--app", "a", "/nonexistent/x.sif"],
    ),
];

#[test]
fn compat_flag_errors_match_their_snapshots() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots/errors");
    let home = tempfile::tempdir().unwrap();
    let mut differ = Vec::new();
    for (name, args) in ERROR_CASES {
        let o = veil()
            .env_clear()
            .env("HOME", home.path())
            .env("PATH", "/usr/bin:/bin")
            .env("COLUMNS", "100")
            .args(*args)
            .output()
            .unwrap();
        assert_ne!(o.status.code(), Some(0), "{name}");
        let text = format!(
            "status: {}\n{}",
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stderr)
        );
        check_snapshot(&dir, name, &text, &mut differ);
    }
    assert!(
        differ.is_empty(),
        "error output changed; check it and rerun with VEIL_BLESS=1:\n{}",
        differ.join("\n")
    );
}
