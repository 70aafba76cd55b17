//! A download interrupted by a signal leaves no temporary file: while one is being
//! written, SIGINT, SIGTERM and SIGHUP (when their action is the default one) unlink
//! it and then end the process as they would have.
//!
//! The handler may only do async-signal-safe work, so the path is kept as a C string
//! built beforehand, published through an atomic pointer, and removed with unlink(2).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicPtr, Ordering};

use nix::sys::signal::{self, SigHandler, Signal};

const TERMINATING: [Signal; 3] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];

/// The temporary file to unlink on a signal (null: none).
static PENDING: AtomicPtr<libc::c_char> = AtomicPtr::new(std::ptr::null_mut());

extern "C" fn on_signal(sig: libc::c_int) {
    let p = PENDING.swap(std::ptr::null_mut(), Ordering::SeqCst);
    // SAFETY: unlink, signal and raise are async-signal-safe; `p` is null or the
    // pointer of a CString that `Guard` keeps alive until it has taken it back from
    // PENDING (the swap above makes this the only user). With the default action
    // back, raising the signal ends the process as it would have without us.
    unsafe {
        if !p.is_null() {
            libc::unlink(p);
        }
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

/// Removes the download in flight, if any: for a process that takes the terminating
/// signals itself (the builder's cleanup thread), so no handler of ours runs.
pub fn remove_pending() {
    let p = PENDING.swap(std::ptr::null_mut(), Ordering::SeqCst);
    if !p.is_null() {
        // SAFETY: a non-null PENDING is the pointer of a CString that the live Guard
        // keeps until it has taken the pointer back; the swap made it ours alone, and
        // the process is about to exit (the caller ends it right after).
        unsafe {
            libc::unlink(p);
        }
    }
}

/// Removes `path` if a terminating signal arrives before the guard is dropped.
pub(crate) struct Guard {
    path: Option<CString>,
    handled: Vec<Signal>,
}

impl Guard {
    pub fn new(path: &Path) -> Guard {
        let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
            return Guard {
                path: None,
                handled: Vec::new(),
            };
        };
        PENDING.store(c.as_ptr().cast_mut(), Ordering::SeqCst);
        let mut handled = Vec::new();
        for sig in TERMINATING {
            // SAFETY: on_signal only does async-signal-safe work.
            let Ok(old) = (unsafe { signal::signal(sig, SigHandler::Handler(on_signal)) }) else {
                continue;
            };
            if !matches!(old, SigHandler::SigDfl) {
                // Ignored or handled by someone else (the terminal prompt, the
                // launcher): their choice stays.
                // SAFETY: puts the previous disposition straight back.
                let _ = unsafe { signal::signal(sig, old) };
                continue;
            }
            handled.push(sig);
        }
        Guard {
            path: Some(c),
            handled,
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        for sig in self.handled.drain(..) {
            // SAFETY: puts back the default action, which was there before.
            let _ = unsafe { signal::signal(sig, SigHandler::SigDfl) };
        }
        // The string may go only if nobody took its pointer: a handler or the
        // builder's cleanup thread that swapped it out may still be using it (and ends
        // the process right after), so then it is left alone.
        // Only our own pointer is taken back: a later guard's is left to it.
        if let Some(c) = self.path.take() {
            let own = c.as_ptr().cast_mut();
            if PENDING
                .compare_exchange(
                    own,
                    std::ptr::null_mut(),
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                )
                .is_err()
            {
                // Taken (by a handler or the builder's cleanup, which may be using
                // it and ends the process) or replaced: never freed under a user.
                std::mem::forget(c);
            }
        }
    }
}
