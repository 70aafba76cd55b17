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

#[test]
fn help_texts_match_their_snapshots() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots/help");
    let bless = std::env::var_os("VEIL_BLESS").is_some();
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
        let file = dir.join(format!("{name}.txt"));
        if bless {
            std::fs::write(&file, &text).unwrap();
            continue;
        }
        match std::fs::read_to_string(&file) {
            Ok(want) if want == text => {}
            Ok(_) => differ.push(format!(
                "{name}: differs (diff it with `veil {cmd} --help`)"
            )),
            Err(_) => differ.push(format!("{name}: no snapshot ({})", file.display())),
        }
    }
    assert!(
        differ.is_empty(),
        "help texts changed; check them and rerun with VEIL_BLESS=1:\n  {}",
        differ.join("\n  ")
    );
}
