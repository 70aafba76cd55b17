//! A FIFO where an image or a build source should be (put there by mistake, or by
//! someone swapping the path) fails at once with one line, instead of blocking the
//! open until a writer comes.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `cmd`; fails the test if it is still running after 20 s.
fn finishes(mut cmd: Command) -> (bool, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            return (status.success(), err);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} blocked on the FIFO");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_fifo_as_image_or_source_fails_at_once() {
    let t = tempfile::tempdir().unwrap();
    let fifo = t.path().join("app.sif");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let out = t.path().join("out.sif");
    for args in [
        vec!["exec", fifo.to_str().unwrap(), "true"],
        vec!["build", out.to_str().unwrap(), fifo.to_str().unwrap()],
    ] {
        let mut cmd = common::veil();
        cmd.args(&args);
        let (ok, err) = finishes(cmd);
        assert!(!ok, "{args:?} succeeded");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains("not a regular file"), "{args:?}: {err}");
    }
    assert!(!out.exists());
}
