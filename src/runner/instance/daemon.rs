//! Starting an instance: the launch runs in a process of its own, which leaves the
//! caller's session and outlives it. The caller waits on a pipe until the container
//! runs (or the start failed, with the error line), so `instance start` returns with
//! the instance ready and the key already used.
//!
//! The instance's process is a grandchild of the caller (a double fork): nothing the
//! caller does to its own children (a joining process ends them as a subreaper) can
//! reach it.

#![forbid(unsafe_code)]

use std::cell::RefCell;
use std::fs;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

use super::error::{InstanceError, Result};
use super::state::{self, Dir, State};
use super::watch::Watch;
use crate::launch::Started;
use crate::runner::RunRequest;

/// Starts `req` as instance `name`, recorded in `dir`; returns once it runs.
pub fn start(req: RunRequest, name: &str, dir: &Arc<Dir>, watch: Watch) -> Result<State> {
    let (r, w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| InstanceError::Spawn {
            name: name.into(),
            op: "making the pipe to its process",
            err: e.into(),
        })?;
    let fork = || {
        crate::support::spawn::fork_single_threaded().map_err(|err| InstanceError::Spawn {
            name: name.into(),
            op: "starting its process",
            err,
        })
    };
    match fork()? {
        Some(middle) => {
            drop(w);
            let _ = nix::sys::wait::waitpid(middle, None);
            let mut reply = String::new();
            let _ = fs::File::from(r).read_to_string(&mut reply);
            match reply.strip_prefix("ok\n") {
                Some(_) => match state::read(dir, name)? {
                    Some(state::Entry::Running(s)) => Ok(s),
                    _ => Err(InstanceError::NotStarted {
                        name: name.into(),
                        why: format!(
                            "it ended at once (see {})",
                            dir.path.join(state::log_files(name).1).display()
                        ),
                        kind: None,
                    }),
                },
                None => Err(match reply.strip_prefix("error ") {
                    // "error KIND\nMESSAGE": the launch's failure and its kind.
                    Some(rest) => {
                        let (kind, why) = rest.split_once('\n').unwrap_or(("other", rest));
                        InstanceError::NotStarted {
                            name: name.into(),
                            why: why.trim().to_string(),
                            kind: Some(crate::support::failure::Failure::from_word(kind)),
                        }
                    }
                    None => InstanceError::NotStarted {
                        name: name.into(),
                        why: format!(
                            "its process ended before it was ready (see {})",
                            dir.path.join(state::log_files(name).1).display()
                        ),
                        kind: None,
                    },
                }),
            }
        }
        None => {
            drop(r);
            // The middle process only starts the instance's and leaves.
            match fork() {
                Ok(None) => {}
                Ok(Some(_)) => std::process::exit(0),
                Err(e) => {
                    let _ = fs::File::from(w).write_all(format!("error other\n{e}").as_bytes());
                    std::process::exit(1)
                }
            }
            let code = instance_process(req, name, dir, w, watch);
            std::process::exit(code)
        }
    }
}

/// Reports to the waiting caller, once.
type Ready = Rc<RefCell<Option<fs::File>>>;

fn report(ready: &Ready, msg: &str) {
    if let Some(mut f) = ready.borrow_mut().take() {
        let _ = f.write_all(msg.as_bytes());
    }
}

/// The instance's process: reserve the name, the logs as output, the launch.
fn instance_process(req: RunRequest, name: &str, dir: &Arc<Dir>, w: OwnedFd, watch: Watch) -> i32 {
    let ready: Ready = Rc::new(RefCell::new(Some(fs::File::from(w))));
    if let Err(e) = state::reserve(dir, name) {
        report(&ready, &format!("error other\n{e}"));
        return 1;
    }
    let me = std::process::id() as i32;
    let my_start = state::start_time(me).unwrap_or(0);
    let (out, err) = state::log_files(name);
    // A key on standard input (--pem-fd 0) is read by the launch: keep it.
    let key_on_stdin = [req.keys.pem_fd, req.keys.passphrase_fd].contains(&Some(0));
    if let Err(e) = redirect(dir, &out, &err, key_on_stdin) {
        state::remove_if_of(dir, name, me, my_start);
        report(&ready, &format!("error other\n{e}"));
        return 1;
    }
    // What the caller left open is not held for the instance's life: only the pipe
    // to the caller, the instance directory, the watch's and the key's descriptors.
    {
        use std::os::fd::AsRawFd;
        let ready_fd = ready.borrow().as_ref().map(|f| f.as_raw_fd());
        let mut keep: Vec<i32> = [
            ready_fd,
            Some(dir.raw_fd()),
            req.keys.pem_fd,
            req.keys.passphrase_fd,
        ]
        .into_iter()
        .flatten()
        .collect();
        keep.extend(watch.raw_fds());
        crate::support::fds::close_all_but(&keep);
    }
    // The container's namespaces, for what joined it and outlives its init.
    let namespaces = Rc::new(std::cell::Cell::new(None));
    let hook = {
        let (ready, dir, name) = (ready.clone(), dir.clone(), name.to_string());
        let namespaces = namespaces.clone();
        let (out_log, err_log) = (dir.path.join(&out), dir.path.join(&err));
        let image = req.image.clone();
        let o = req.options.clone();
        Box::new(move |started: Started| {
            let (launcher, init) = (started.launcher.as_raw(), started.init.as_raw());
            namespaces.set(super::control::Namespaces::of(init));
            let (Some(launcher_start), Some(init_start)) =
                (state::start_time(launcher), state::start_time(init))
            else {
                report(
                    &ready,
                    "error other
the instance's processes cannot be read in /proc",
                );
                let _ = nix::sys::signal::kill(started.init, nix::sys::signal::SIGKILL);
                return;
            };
            let s = State {
                name: name.clone(),
                image,
                launcher,
                launcher_start,
                init,
                init_start,
                started: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
                fakeroot: o.fakeroot,
                no_home: o.no_home,
                contain: o.contain,
                home: o.home.clone(),
                out_log,
                err_log,
            };
            match state::write(&dir, &s) {
                Ok(()) => {
                    report(&ready, "ok\n");
                    watch.start(&name, started.init);
                }
                Err(e) => {
                    report(&ready, &format!("error other\n{e}"));
                    let _ = nix::sys::signal::kill(started.init, nix::sys::signal::SIGKILL);
                }
            }
        }) as Box<dyn FnOnce(Started)>
    };
    let result = crate::runner::run_with(req, Some(hook));
    // Processes joined to the instance are not the init's: they go with it however
    // it ended (a stop sweeps them too, but the init may have been killed).
    if let Some(ns) = namespaces.get() {
        super::control::sweep(ns);
    }
    state::remove_if_of(dir, name, me, my_start);
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("veil: error: {e}");
            let kind = crate::runner::error::failure_in_chain(&e)
                .unwrap_or(crate::support::failure::Failure::Other);
            report(&ready, &format!("error {}\n{e}", kind.word()));
            1
        }
    }
}

/// The instance's output: stdin from /dev/null, stdout and stderr to its logs (0600,
/// never through a link someone put in their place).
fn redirect(dir: &Dir, out: &str, err: &str, keep_stdin: bool) -> Result<()> {
    use nix::fcntl::OFlag;
    let open = |f: &str| {
        dir.open_file(f, OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_TRUNC, 0o600)
            .map_err(|e| InstanceError::io(&dir.path.join(f), "opening the log", e))
    };
    let (o, e) = (open(out)?, open(err)?);
    let null = fs::File::open("/dev/null")
        .map_err(|e| InstanceError::io(Path::new("/dev/null"), "opening", e))?;
    let failed = |f: &str, e: nix::errno::Errno| {
        InstanceError::io(&dir.path.join(f), "redirecting output", e.into())
    };
    if !keep_stdin {
        nix::unistd::dup2_stdin(null.as_fd()).map_err(|e| {
            InstanceError::io(Path::new("/dev/null"), "redirecting input", e.into())
        })?;
    }
    nix::unistd::dup2_stdout(o.as_fd()).map_err(|e| failed(out, e))?;
    nix::unistd::dup2_stderr(e.as_fd()).map_err(|e| failed(err, e))?;
    Ok(())
}
