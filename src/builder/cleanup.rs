//! Interrupted builds leave nothing behind: temporary files and staging trees are
//! registered here while they exist, and SIGINT, SIGTERM or SIGHUP removes them before
//! the process exits. The signals are blocked in every thread and taken by one waiting
//! thread ([`install`]), so removal never runs inside a signal handler.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};

static TEMPS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
/// The running build-script process (0: none), killed on interruption.
static CHILD: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// True once a termination signal arrived (the cleanup thread is ending the process).
pub fn interrupted() -> bool {
    INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst)
}

pub fn set_child(pid: i32) {
    CHILD.store(pid, std::sync::atomic::Ordering::SeqCst);
}

fn signals() -> SigSet {
    let mut s = SigSet::empty();
    s.add(Signal::SIGINT);
    s.add(Signal::SIGTERM);
    s.add(Signal::SIGHUP);
    s
}

/// Blocks the termination signals in this thread (and the threads it starts later)
/// and starts the thread that cleans up when one arrives. Call before other threads
/// exist.
pub fn install() {
    install_for("veil build");
}

/// What the interruption message names.
static WHAT: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();

/// As [`install`], for the command `what` (`veil keyslot`).
pub fn install_for(what: &'static str) {
    let _ = WHAT.set(what);
    let set = signals();
    if pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None).is_err() {
        return;
    }
    std::thread::spawn(move || {
        if let Ok(sig) = set.wait() {
            INTERRUPTED.store(true, std::sync::atomic::Ordering::SeqCst);
            // A passphrase prompt may have echo off right now.
            crate::crypt::tty::restore_terminal();
            let child = CHILD.load(std::sync::atomic::Ordering::SeqCst);
            if child > 0 {
                // Its PID namespace, and every process of the script, goes with it.
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child), Signal::SIGKILL);
                let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(child), None);
            }
            // A registry helper downloading a source removes its own partial file.
            crate::registry::helper::stop_running(sig);
            remove_all();
            let what = WHAT.get().copied().unwrap_or("veil build");
            eprintln!("{what}: interrupted ({sig}); temporary files removed");
            std::process::exit(128 + sig as i32);
        }
    });
}

/// Lets a child process about to exec receive the signals again.
pub fn unblock_in_child() {
    let _ = pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&signals()), None);
}

pub fn register(p: &Path) {
    if let Ok(mut v) = TEMPS.lock() {
        v.push(p.to_path_buf());
    }
}

pub fn unregister(p: &Path) {
    if let Ok(mut v) = TEMPS.lock() {
        v.retain(|x| x != p);
    }
}

fn remove_all() {
    let list = TEMPS.lock().map(|v| v.clone()).unwrap_or_default();
    for p in list.iter().rev() {
        match std::fs::symlink_metadata(p) {
            Ok(md) if md.is_dir() => super::fsops::remove_tree(p),
            Ok(_) => {
                let _ = std::fs::remove_file(p);
            }
            Err(_) => {}
        }
    }
}
