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

use nix::sys::signal::Signal;

use crate::support::signals::{Caught, die_of};

const TERMINATING: [Signal; 3] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];

/// The temporary file to unlink on a signal (null: none).
static PENDING: AtomicPtr<libc::c_char> = AtomicPtr::new(std::ptr::null_mut());

extern "C" fn on_signal(sig: libc::c_int) {
    let p = PENDING.swap(std::ptr::null_mut(), Ordering::SeqCst);
    if !p.is_null() {
        // SAFETY: unlink is async-signal-safe; `p` is the pointer of a CString that
        // `Guard` keeps alive until it has taken it back from PENDING (the swap above
        // makes this the only user).
        unsafe {
            libc::unlink(p);
        }
    }
    die_of(sig);
}

/// Removes the download in flight, if any, for a process about to end without
/// unwinding (the allocator's out-of-memory exit). Async-signal-safe.
pub(super) fn unlink_pending() {
    let p = PENDING.swap(std::ptr::null_mut(), Ordering::SeqCst);
    if !p.is_null() {
        // SAFETY: unlink is async-signal-safe; a non-null PENDING is the pointer of a
        // CString that the live Guard keeps until it has taken the pointer back, and
        // the swap made it ours alone (the process ends right after).
        unsafe {
            libc::unlink(p);
        }
    }
}

/// Removes `path` if a terminating signal arrives before the guard is dropped.
pub(crate) struct Guard {
    path: Option<CString>,
    _caught: Option<Caught>,
}

impl Guard {
    pub fn new(path: &Path) -> Guard {
        let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
            return Guard {
                path: None,
                _caught: None,
            };
        };
        PENDING.store(c.as_ptr().cast_mut(), Ordering::SeqCst);
        // Where the terminal prompt or the launcher handles a signal, their choice stays.
        // SAFETY: on_signal only does async-signal-safe work and ends in die_of.
        let caught = unsafe { Caught::new(&TERMINATING, on_signal) };
        Guard {
            path: Some(c),
            _caught: Some(caught),
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        // (The signals get their default action back after this, as `_caught` goes.)
        // The string may go only if nobody took its pointer: a handler or the
        // out-of-memory exit that swapped it out may still be using it (and ends the
        // process right after), so then it is left alone.
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
                // Taken (by a handler, which may be using it and ends the process)
                // or replaced: never freed under a user.
                std::mem::forget(c);
            }
        }
    }
}
