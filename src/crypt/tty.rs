//! Asking for a secret on the terminal: the line is read from /dev/tty with echo
//! off straight into guarded memory of a fixed size, so no growing string leaves
//! copies of it behind.
//!
//! The terminal stays in canonical mode, so its own line editing (erase, kill) works
//! as for any line; signals from the keyboard are off while it reads, so that Ctrl-C
//! cannot end veil with echo still off: it arrives as a character, and the prompt
//! gives up, with the terminal restored.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};

use nix::sys::termios::{self, LocalFlags, SetArg, Termios};
use veil_fusefs::luks2::SecretBytes;

/// The longest line a terminal in canonical mode delivers (Linux's N_TTY buffer).
const MAX_LINE: usize = 4096;

/// Restores the terminal's settings when dropped.
struct Restore<'a> {
    tty: &'a File,
    saved: Option<Termios>,
}

impl Drop for Restore<'_> {
    fn drop(&mut self) {
        if let Some(t) = &self.saved {
            let _ = termios::tcsetattr(self.tty, SetArg::TCSANOW, t);
        }
    }
}

/// Prints `prompt` on the terminal and reads one line without echo; the newline is
/// not part of the result.
pub fn read_secret_line(prompt: &str) -> io::Result<SecretBytes> {
    let tty = OpenOptions::new().read(true).write(true).open("/dev/tty")?;
    (&tty).write_all(prompt.as_bytes())?;
    let saved = termios::tcgetattr(&tty).ok();
    let _restore = Restore {
        tty: &tty,
        saved: saved.clone(),
    };
    if let Some(mut quiet) = saved {
        quiet
            .local_flags
            .remove(LocalFlags::ECHO | LocalFlags::ECHONL | LocalFlags::ISIG);
        quiet.local_flags.insert(LocalFlags::ICANON);
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
                if line.as_slice().ends_with(b"\n") {
                    break Ok(());
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    drop(_restore);
    // The newline typed was not echoed.
    let _ = (&tty).write_all(b"\n");
    ended?;
    if line.as_slice().contains(&0x03) {
        return Err(io::Error::new(io::ErrorKind::Interrupted, "interrupted"));
    }
    let mut n = line.len();
    while n > 0 && matches!(line.as_slice()[n - 1], b'\n' | b'\r') {
        n -= 1;
    }
    line.truncate(n);
    Ok(SecretBytes::from_slice(line.as_slice()))
}
