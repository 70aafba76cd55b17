//! Taking the signals that would end the process for a moment, to undo something
//! first (a terminal left without echo, a half-written download), then ending as the
//! signal would have.

use nix::sys::signal::{self, SigHandler, Signal};

/// While this lives, `handler` takes those of the given signals whose action was the
/// default one; ignored or handled signals are someone else's choice and stay so.
/// Dropping it puts the default action back.
pub struct Caught {
    signals: Vec<Signal>,
}

impl Caught {
    /// # Safety
    /// `handler` may only do async-signal-safe work, and should end in [`die_of`].
    pub unsafe fn new(signals: &[Signal], handler: extern "C" fn(libc::c_int)) -> Caught {
        let mut caught = Vec::new();
        for &sig in signals {
            // SAFETY: the caller's promise about `handler`.
            let Ok(old) = (unsafe { signal::signal(sig, SigHandler::Handler(handler)) }) else {
                continue;
            };
            if !matches!(old, SigHandler::SigDfl) {
                // SAFETY: puts the previous disposition straight back.
                let _ = unsafe { signal::signal(sig, old) };
                continue;
            }
            caught.push(sig);
        }
        Caught { signals: caught }
    }
}

impl Drop for Caught {
    fn drop(&mut self) {
        for sig in self.signals.drain(..) {
            // SAFETY: the default action, which was there before.
            let _ = unsafe { signal::signal(sig, SigHandler::SigDfl) };
        }
    }
}

/// Ends the process as `sig` would have with its default action: the last step of a
/// handler installed by [`Caught`]. Async-signal-safe (libc's calls are used directly:
/// nix does not promise that of its wrappers).
pub fn die_of(sig: libc::c_int) {
    // SAFETY: signal and raise are async-signal-safe and touch no memory of ours;
    // with the default action back, the raised signal ends the process.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

/// The first of SIGINT, SIGTERM and SIGHUP pending for this process or thread while
/// signals are blocked (a Ctrl-C during long work done before they are forwarded),
/// if any; one this process ignores (under nohup, say) does not count.
pub fn pending_termination() -> Option<Signal> {
    // SAFETY: an all-zero sigset_t is a valid (empty) set, and sigpending fills it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable sigset_t.
    if unsafe { libc::sigpending(&mut set) } != 0 {
        return None;
    }
    [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP]
        .into_iter()
        // SAFETY: `set` was filled by sigpending; sigismember only reads it.
        .find(|s| unsafe { libc::sigismember(&set, *s as libc::c_int) } == 1 && !ignored(*s))
}

/// Whether `sig`'s disposition is to be ignored.
fn ignored(sig: Signal) -> bool {
    // SAFETY: an all-zero sigaction is a valid value for the kernel to overwrite.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: a null new action only reads the current one into `old`.
    let r = unsafe { libc::sigaction(sig as libc::c_int, std::ptr::null(), &mut old) };
    r == 0 && old.sa_sigaction == libc::SIG_IGN
}
