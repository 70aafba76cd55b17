//! Shared helpers for the LUKS2 integration tests: finding `shared/interop`,
//! running make-luks2 / check-luks2 / cryptsetup, deterministic payloads.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `shared/interop`, or `None` (with the reason printed) when the interop tools
/// are not installed: the caller prints SKIP and returns.
pub fn interop() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/interop");
    if !dir.join("make-luks2").is_file() {
        eprintln!(
            "SKIP: {} not found (shared/ must sit beside the repo)",
            dir.display()
        );
        return None;
    }
    if !Path::new("/usr/bin/python3").is_file() {
        eprintln!("SKIP: /usr/bin/python3 missing");
        return None;
    }
    match Command::new("cryptsetup").arg("--version").output() {
        Ok(o) if o.status.success() => Some(dir),
        _ => {
            eprintln!("SKIP: cryptsetup not installed (apt-get install cryptsetup-bin)");
            None
        }
    }
}

/// A deterministic, incompressible-looking payload.
pub fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("spawn")
}

/// make-luks2 with the given extra arguments; panics with its output on failure.
pub fn make(
    interop: &Path,
    dir: &Path,
    name: &str,
    payload: &[u8],
    pass: &str,
    args: &[&str],
) -> PathBuf {
    let p = dir.join(format!("{name}.payload"));
    std::fs::write(&p, payload).unwrap();
    let img = dir.join(format!("{name}.img"));
    let out = run(Command::new("/usr/bin/python3")
        .arg(interop.join("make-luks2"))
        .args(["-q", "-p", pass])
        .args(args)
        .arg(&p)
        .arg(&img));
    assert!(
        out.status.success(),
        "make-luks2 {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    img
}

/// check-luks2 on an image; returns (success, combined output).
pub fn check(
    interop: &Path,
    img: &Path,
    pass: &[u8],
    payload: Option<&Path>,
    args: &[&str],
) -> (bool, String) {
    let kf = img.with_extension("checkkey");
    std::fs::write(&kf, pass).unwrap();
    let mut c = Command::new("/usr/bin/python3");
    c.arg(interop.join("check-luks2"))
        .arg("-k")
        .arg(&kf)
        .args(args);
    if let Some(p) = payload {
        c.arg("--payload").arg(p);
    }
    c.arg(img);
    let out = run(&mut c);
    let _ = std::fs::remove_file(&kf);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Runs cryptsetup (never modifying headers behind our back: --disable-locks).
pub fn cryptsetup(args: &[&str]) -> (bool, String) {
    let out = run(Command::new("cryptsetup").arg("--disable-locks").args(args));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}
