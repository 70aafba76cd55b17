//! A passphrase prompt on a real pseudo-terminal (util-linux `script`) gives the
//! terminal back with echo on however it ends: the interrupt key ends it at once with
//! a one-line error, and a termination signal sent from elsewhere, during a build
//! (whose cleanup thread takes the signal) or a run (a signal handler), restores the
//! terminal before veil dies of it. `stty -a` run on the same terminal afterwards
//! tells.

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;

const PROMPT: &str = "Enter encryption passphrase:";

/// A shell line run under `script`: its terminal output as it comes, and its stdin.
struct Terminal {
    child: std::process::Child,
    rx: mpsc::Receiver<Vec<u8>>,
    seen: Vec<u8>,
}

impl Terminal {
    fn start(line: &str, dir: &Path) -> Terminal {
        let mut child = Command::new("script")
            .args(["-qec", line, "/dev/null"])
            .current_dir(dir)
            .env_remove("VEIL_ENCRYPTION_PASSPHRASE")
            .env_remove("APPTAINER_ENCRYPTION_PASSPHRASE")
            .env_remove("SINGULARITY_ENCRYPTION_PASSPHRASE")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = out.read(&mut chunk) {
                if n == 0 || tx.send(chunk[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        Terminal {
            child,
            rx,
            seen: Vec::new(),
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.seen).into_owned()
    }

    /// Waits until the output contains `what`; gives up (killing the child) after
    /// `secs` seconds.
    fn wait_for(&mut self, what: &str, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !self.text().contains(what) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(c) => self.seen.extend_from_slice(&c),
                Err(_) => {
                    let _ = self.child.kill();
                    panic!(
                        "no {what:?} within {secs} s; the terminal showed:\n{}",
                        self.text()
                    );
                }
            }
        }
    }

    fn type_keys(&mut self, keys: &[u8]) {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(keys).unwrap();
        stdin.flush().unwrap();
    }

    /// The `stty -a` flags line with echo in it, printed after veil ended.
    fn echo_after(&mut self) -> String {
        self.wait_for("stty-done", 30);
        let _ = self.child.wait();
        let text = self.text();
        let after = text.split("veil-exit=").nth(1).unwrap_or("").to_string();
        after
            .split_whitespace()
            .find(|w| w.trim_start_matches('-') == "echo")
            .unwrap_or_else(|| panic!("no echo flag in:\n{text}"))
            .to_string()
    }
}

/// The veil process id a shell line printed as `pid=N`. The shell prints it after
/// starting veil, so it may come after veil's prompt: waits for the whole line.
fn pid_in(t: &mut Terminal) -> i32 {
    t.wait_for("pid=", 30);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = t.text();
        let after = text.split("pid=").nth(1).unwrap_or("");
        if let Some(end) = after.find(|c: char| !c.is_ascii_digit())
            && end > 0
        {
            return after[..end].parse().unwrap();
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match t.rx.recv_timeout(left) {
            Ok(c) => t.seen.extend_from_slice(&c),
            Err(_) => panic!("no whole pid line; the terminal showed:\n{text}"),
        }
    }
}

fn setup() -> Option<(tempfile::TempDir, String)> {
    which("script")?;
    let t = tempfile::tempdir().unwrap();
    std::fs::create_dir(t.path().join("src")).unwrap();
    std::fs::write(t.path().join("src/hello"), b"hi\n").unwrap();
    let veil = env!("CARGO_BIN_EXE_veil").to_string();
    Some((t, veil))
}

#[test]
fn the_interrupt_key_ends_the_prompt_at_once_and_restores_echo() {
    // Ctrl-C and Ctrl-\ alone, without Enter: the prompt must not wait for a newline.
    interrupted_by(b"secret\x03");
    interrupted_by(b"secret\x1c");
}

/// Ctrl-Z cannot suspend a prompt with echo off: the line it is in is refused.
#[test]
fn the_suspend_key_makes_the_line_refused_not_part_of_the_passphrase() {
    interrupted_by(b"sec\x1aret\n");
}

fn interrupted_by(keys: &[u8]) {
    let (t, veil) = require!(setup(), "script (util-linux) is not installed");
    let mut term = Terminal::start(
        &format!(
            "{veil} build --passphrase out.sif src; echo veil-exit=$?; stty -a; echo stty-done"
        ),
        t.path(),
    );
    term.wait_for(PROMPT, 60);
    std::thread::sleep(Duration::from_millis(300));
    term.type_keys(keys);
    term.wait_for("veil-exit=", 20);
    let text = term.text();
    assert!(
        text.contains("interrupted at the passphrase prompt"),
        "{text}"
    );
    assert!(!text.contains("veil-exit=0"), "{text}");
    assert!(
        !text.contains("secret") && !text.contains("ret\r") && !text.contains("ret\n"),
        "the typed text was echoed: {text}"
    );
    assert_eq!(term.echo_after(), "echo", "{}", term.text());
    assert!(!t.path().join("out.sif").exists());
}

/// SIGTERM from another process while the prompt waits, for `build` (signals taken
/// by its cleanup thread) and `exec` (signal handler during the prompt).
#[test]
fn a_termination_signal_at_the_prompt_restores_echo() {
    let (t, veil) = require!(setup(), "script (util-linux) is not installed");
    // An encrypted image for `exec` to ask about; the key is never given.
    std::fs::write(t.path().join("pass"), b"never typed").unwrap();
    run_ok(
        common::veil()
            .current_dir(t.path())
            .args(["build", "--passphrase-file", "pass", "enc.sif", "src"])
            .stdin(Stdio::null()),
    );
    for cmd in [
        "build --passphrase out.sif src",
        "exec --passphrase enc.sif true",
    ] {
        let mut term = Terminal::start(
            &format!(
                "{veil} {cmd} & echo pid=$!; wait $!; echo veil-exit=$?; stty -a; echo stty-done"
            ),
            t.path(),
        );
        term.wait_for(PROMPT, 60);
        std::thread::sleep(Duration::from_millis(300));
        let pid = nix::unistd::Pid::from_raw(pid_in(&mut term));
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        term.wait_for("veil-exit=", 20);
        assert!(
            term.text().contains("veil-exit=143"),
            "{cmd}: {}",
            term.text()
        );
        assert_eq!(term.echo_after(), "echo", "{cmd}: {}", term.text());
    }
    assert!(!t.path().join("out.sif").exists());
}
