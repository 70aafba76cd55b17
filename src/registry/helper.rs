//! Running the registry helper, `veil-registry`: the program that holds the network
//! client (HTTP, TLS, the async runtime), installed next to `veil`.
//!
//! The client stays out of `veil` itself because every container start pays for what
//! the binary holds: its relocated data is written at each of the two executions of
//! `veil` a run makes (launcher and init), and the client tripled it.
//!
//! A terminating signal (SIGINT, SIGTERM, SIGHUP) that reaches `veil` while the
//! helper works is passed on to it, so it removes its partial download; `veil` then
//! ends as the signal would have ended it. Where the builder's cleanup thread takes
//! those signals instead, it calls [`stop_running`].

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};

use nix::sys::signal::Signal;

use super::error::{RegistryError, Result};
use super::options::Options;
use super::protocol::{Envelope, MAX_REPLY, Reply, Request, VERSION, WireOptions};
use crate::support::signals::{Caught, die_of};

/// The helper's file name.
pub const PROGRAM: &str = "veil-registry";

const TERMINATING: [Signal; 3] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];

/// The running helper's PID (0: none).
static RUNNING: AtomicI32 = AtomicI32::new(0);
/// The terminating signal that arrived while the helper ran (0: none).
static FORWARDED: AtomicI32 = AtomicI32::new(0);
/// Set by [`stop_running`]: the process is ending, and its cleanup thread says so.
static STOPPING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn forward(sig: libc::c_int) {
    FORWARDED.store(sig, Ordering::SeqCst);
    let pid = RUNNING.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe and touches no memory.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// Where the helper is: beside this executable, or in `../libexec/veil/` from it (a
/// system install that keeps helpers out of PATH).
pub fn program() -> Result<PathBuf> {
    let exe = std::env::current_exe().map_err(|e| RegistryError::Helper {
        path: PathBuf::from(PROGRAM),
        why: format!("finding veil's own executable: {e}"),
    })?;
    let dir = exe.parent().unwrap_or(Path::new("/"));
    let beside = dir.join(PROGRAM);
    let libexec = dir.join("../libexec/veil").join(PROGRAM);
    for p in [&beside, &libexec] {
        if p.metadata().is_ok_and(|m| m.is_file()) {
            return Ok(p.clone());
        }
    }
    Err(RegistryError::Helper {
        path: beside,
        why: format!(
            "not found (veil runs it to talk to registries; it is built and installed with veil, next to it or in {})",
            libexec.display()
        ),
    })
}

/// Runs `request` in the helper and returns its reply (an error reply as an error).
pub fn call(request: Request, opts: &Options) -> Result<Reply> {
    let path = program()?;
    let envelope = Envelope {
        version: VERSION.to_string(),
        request,
        options: WireOptions::from(opts),
    };
    let name = envelope.request.name();
    let message = envelope.to_message().map_err(|e| RegistryError::Helper {
        path: path.clone(),
        why: format!("writing the request: {e}"),
    })?;
    drop(envelope);
    let failed = |why: String| RegistryError::Helper {
        path: path.clone(),
        why,
    };
    let mut cmd = Command::new(&path);
    cmd.arg(name)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    // Secrets of this process's own (an encryption passphrase) are none of the
    // helper's business; the registry password travels in the request.
    for var in crate::crypt::environ::secret_names() {
        cmd.env_remove(var);
    }
    // The helper starts with the terminating signals deliverable (a build blocks them
    // in every thread, and a child inherits its mask) and with no descriptor but its
    // standard ones (a key given with --pem-fd is read later, and is not its business).
    let mut unblock = nix::sys::signal::SigSet::empty();
    for s in TERMINATING {
        unblock.add(s);
    }
    // SAFETY: the closure runs in the forked child before exec and makes only the
    // sigprocmask, close_range or fcntl system calls, async-signal-safe; the signal
    // set was built before the fork.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(move || {
            unblock.thread_unblock().map_err(std::io::Error::from)?;
            crate::support::fds::cloexec_from_in_child(3);
            Ok(())
        });
    }
    // Should veil be killed outright, the helper still removes its partial file.
    crate::support::spawn::end_with_parent(&mut cmd, Signal::SIGTERM);
    FORWARDED.store(0, Ordering::SeqCst);
    // SAFETY: `forward` only reads and writes atomics and calls kill.
    let caught = unsafe { Caught::new(&TERMINATING, forward) };
    let mut child = cmd
        .spawn()
        .map_err(|e| failed(format!("starting it: {e}")))?;
    RUNNING.store(child.id() as i32, Ordering::SeqCst);
    // A signal between the handler's installation and the line above.
    let early = FORWARDED.load(Ordering::SeqCst);
    if early != 0 {
        // SAFETY: kill touches no memory; the PID is our unreaped child's.
        unsafe {
            libc::kill(child.id() as i32, early);
        }
    }
    // A helper that ends early closes its end; the reply (or its absence) says why.
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(&message);
    }
    let mut reply = Vec::new();
    let read = match child.stdout.take() {
        Some(out) => out.take(MAX_REPLY).read_to_end(&mut reply).map(|_| ()),
        None => Ok(()),
    };
    // Until it is reaped its PID is its own: the handler may signal it until then,
    // and not after.
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    {
        use nix::sys::wait::{Id, WaitPidFlag, waitid};
        let _ = waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT);
    }
    RUNNING.store(0, Ordering::SeqCst);
    let status = child.wait();
    drop(caught);
    if STOPPING.load(Ordering::SeqCst) {
        // The cleanup thread stopped the helper and is ending the process; an error
        // line from here would only come after its own.
        loop {
            std::thread::park();
        }
    }
    let sig = FORWARDED.swap(0, Ordering::SeqCst);
    if sig != 0 {
        // The helper has removed what it was writing; end as the signal would have.
        die_of(sig);
    }
    let status = status.map_err(|e| failed(format!("waiting for it: {e}")))?;
    read.map_err(|e| failed(format!("reading its answer: {e}")))?;
    match serde_json::from_slice::<Reply>(&reply) {
        Ok(Reply::Error(why)) => Err(RegistryError::Remote(why)),
        Ok(r) => Ok(r),
        Err(_) => {
            use std::os::unix::process::ExitStatusExt;
            let how = match status.signal() {
                Some(s) => format!("it was killed by signal {s}"),
                None => format!("it ended ({status}) without an answer"),
            };
            Err(failed(format!("{name}: {how}")))
        }
    }
}

/// Passes `sig` on to the running helper, if any, and returns once it has ended (for
/// the builder's cleanup thread, which takes the terminating signals itself).
pub fn stop_running(sig: Signal) {
    STOPPING.store(true, Ordering::SeqCst);
    let pid = RUNNING.load(Ordering::SeqCst);
    if pid <= 0 {
        return;
    }
    let pid = nix::unistd::Pid::from_raw(pid);
    let _ = nix::sys::signal::kill(pid, sig);
    // Waited for without reaping it: the thread that started it does that (and if it
    // already has, this returns at once).
    use nix::sys::wait::{Id, WaitPidFlag, waitid};
    let _ = waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT);
}

/// A reply of the wrong kind: the helper is not the one this veil was built with.
pub(crate) fn unexpected(reply: &Reply) -> RegistryError {
    RegistryError::Helper {
        path: PathBuf::from(PROGRAM),
        why: format!(
            "an answer of the wrong kind ({}): is it the version built with this veil?",
            match reply {
                Reply::Transferred(_) => "transferred",
                Reply::Path(_) => "path",
                Reply::Digest(_) => "digest",
                Reply::Docker(_) => "docker",
                Reply::Done => "done",
                Reply::Found(_) => "found",
                Reply::Pushed(_) => "pushed",
                Reply::Error(_) => "error",
            }
        ),
    }
}
