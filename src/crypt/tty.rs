//! Asking for a secret on the terminal: the line is read from /dev/tty with echo
//! off straight into guarded memory of a fixed size, so no growing string leaves
//! copies of it behind.
//!
//! The terminal stays in canonical mode, so its own line editing (erase, kill) works
//! as for any line. Signals from the keyboard are off while it reads, so that Ctrl-C
//! cannot end veil with echo still off; instead the interrupt character is made an
//! end-of-line character, so the read returns at once and the prompt gives up with
//! the terminal restored. A termination signal sent from elsewhere (SIGTERM, SIGHUP,
//! SIGQUIT) restores the terminal in its handler before veil dies of it; the build's
//! cleanup thread, which takes those signals itself, calls [`restore_terminal`].

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;

use nix::sys::signal::Signal;

use crate::support::signals::Caught;
use nix::sys::termios::{self, LocalFlags, SetArg, SpecialCharacterIndices as Cc, Termios};
use veil_fusefs::luks2::SecretBytes;

/// The longest line a terminal in canonical mode delivers (Linux's N_TTY buffer).
const MAX_LINE: usize = 4096;

/// The signals that would end veil while the prompt has echo off (SIGINT from the
/// keyboard is off with ISIG, but another process may send it).
const TERMINATING: [Signal; 4] = [
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGINT,
];

mod saved {
    //! The terminal settings to put back, where a signal handler can reach them.
    use std::cell::UnsafeCell;
    use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

    struct Slot(UnsafeCell<libc::termios>);
    // SAFETY: the termios is written only while FD is -1 and no `restore` is under
    // way (RESTORING is false), so no reader can look at it; FD is published with
    // Release after the write and taken with Acquire.
    unsafe impl Sync for Slot {}

    // SAFETY: a termios is plain integers; all zeroes is a valid (unused) value.
    static SETTINGS: Slot = Slot(UnsafeCell::new(unsafe { std::mem::zeroed() }));
    static FD: AtomicI32 = AtomicI32::new(-1);
    /// True while a `restore` (a signal handler on any thread) may read SETTINGS.
    static RESTORING: AtomicBool = AtomicBool::new(false);

    /// Remembers `t` as the settings to restore on `fd`. One prompt at a time.
    pub fn set(fd: i32, t: libc::termios) {
        FD.store(-1, Ordering::SeqCst);
        // A handler that took the previous prompt's descriptor is still reading:
        // it ends the process when done, and must not see a half-written value.
        while RESTORING.load(Ordering::SeqCst) {
            std::hint::spin_loop();
        }
        // SAFETY: FD is -1 and no restore is under way, so nobody reads SETTINGS.
        unsafe { *SETTINGS.0.get() = t };
        FD.store(fd, Ordering::Release);
    }

    pub fn clear() {
        FD.store(-1, Ordering::SeqCst);
    }

    /// Puts the settings back if a prompt is active. Async-signal-safe: two atomic
    /// operations and tcsetattr, an ioctl. Raw libc, as in [`super::on_signal`]: nix's
    /// tcsetattr wants a borrowed descriptor and its own Termios, built by copying.
    pub fn restore() {
        RESTORING.store(true, Ordering::SeqCst);
        let fd = FD.swap(-1, Ordering::SeqCst);
        if fd >= 0 {
            // SAFETY: SETTINGS was fully written before FD was published, `set`
            // waits for RESTORING before writing it again, and `fd` is the prompt's
            // open terminal, closed only after `clear`.
            unsafe { libc::tcsetattr(fd, libc::TCSANOW, SETTINGS.0.get()) };
        }
        RESTORING.store(false, Ordering::SeqCst);
    }
}

/// Restores the terminal if a prompt has echo off right now; for code that ends the
/// process on a signal it took itself.
pub fn restore_terminal() {
    saved::restore();
}

/// The handler of [`TERMINATING`]. It calls libc directly: in a handler only
/// async-signal-safe functions may run, which libc documents for these calls and nix
/// does not promise for its wrappers (the conversions around them could change).
extern "C" fn on_signal(sig: libc::c_int) {
    saved::restore();
    crate::support::signals::die_of(sig);
}

/// Restores the terminal's settings and the signal dispositions when dropped.
struct Restore<'a> {
    tty: &'a File,
    saved: Option<Termios>,
    /// The signals caught for the prompt (given back after the terminal's settings,
    /// as fields drop after `drop`).
    caught: Option<Caught>,
}

impl Drop for Restore<'_> {
    fn drop(&mut self) {
        if let Some(t) = &self.saved {
            let _ = termios::tcsetattr(self.tty, SetArg::TCSANOW, t);
        }
        saved::clear();
    }
}

/// Prints `prompt` on the terminal and reads one line without echo; the newline is
/// not part of the result. The interrupt character (Ctrl-C) gives an error of kind
/// `Interrupted`.
pub fn read_secret_line(prompt: &str) -> io::Result<SecretBytes> {
    let tty = OpenOptions::new().read(true).write(true).open("/dev/tty")?;
    (&tty).write_all(prompt.as_bytes())?;
    let saved = termios::tcgetattr(&tty).ok();
    let mut restore = Restore {
        tty: &tty,
        saved: saved.clone(),
        caught: None,
    };
    // The keys that would send a signal with ISIG on (interrupt, quit, suspend) abort
    // the prompt instead of becoming part of the passphrase.
    let mut aborts: Vec<u8> = Vec::new();
    if let Some(mut quiet) = saved.clone() {
        saved::set(tty.as_raw_fd(), libc::termios::from(quiet.clone()));
        // SAFETY: on_signal only does async-signal-safe work and ends in die_of.
        restore.caught = Some(unsafe { Caught::new(&TERMINATING, on_signal) });
        quiet
            .local_flags
            .remove(LocalFlags::ECHO | LocalFlags::ECHONL | LocalFlags::ISIG);
        quiet.local_flags.insert(LocalFlags::ICANON);
        // 0 is _POSIX_VDISABLE: no such character. Interrupt and quit end the line at
        // once (as the two extra end-of-line characters); suspend is refused once the
        // line ends.
        for (key, eol) in [
            (Cc::VINTR, Some(Cc::VEOL)),
            (Cc::VQUIT, Some(Cc::VEOL2)),
            (Cc::VSUSP, None),
        ] {
            let c = quiet.control_chars[key as usize];
            if c != 0 {
                if let Some(eol) = eol {
                    quiet.control_chars[eol as usize] = c;
                }
                aborts.push(c);
            }
        }
        termios::tcsetattr(&tty, SetArg::TCSANOW, &quiet).map_err(io::Error::from)?;
    }
    let mut line = SecretBytes::with_capacity(MAX_LINE + 1);
    let ended = loop {
        let len = line.len();
        if len > MAX_LINE {
            break Err(io::Error::other("the line is too long"));
        }
        match (&tty).read(&mut line.spare()[..MAX_LINE + 1 - len]) {
            Ok(0) => break Ok(()),
            Ok(n) => {
                line.set_len(len + n);
                let last = line.as_slice()[len + n - 1];
                if last == b'\n' || aborts.contains(&last) {
                    break Ok(());
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    drop(restore);
    // The newline typed was not echoed.
    let _ = (&tty).write_all(b"\n");
    ended?;
    if line.as_slice().iter().any(|b| aborts.contains(b)) {
        return Err(io::Error::new(io::ErrorKind::Interrupted, "interrupted"));
    }
    let mut n = line.len();
    while n > 0 && matches!(line.as_slice()[n - 1], b'\n' | b'\r') {
        n -= 1;
    }
    line.truncate(n);
    Ok(SecretBytes::from_slice(line.as_slice()))
}
