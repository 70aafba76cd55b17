//! `--sharens`: the processes of one job on one node that run the same image with the
//! same options share one session — one unlock, one FUSE server, one mount namespace,
//! one page cache. The session is an instance of its own (a hidden name derived from
//! the scope); the first process to arrive starts it, every process (the first
//! included) joins it, and it ends when the last has left.
//!
//! The scope is: the same user (the state directory is the user's), the same image
//! file (device, inode, size and modification time), the same `--verify`/`--policy`
//! and launch options, and the same job: `SLURM_JOB_ID`.`SLURM_STEP_ID` under Slurm,
//! else the same parent process (its pid and start time).
//!
//! Two lock files order it: whoever starts or joins holds `create` meanwhile; every
//! member holds `members` shared while it runs. The session's launcher waits for
//! `members` exclusively and then `create` (`watch`), so it ends only when no member
//! is left and none is arriving.

#![forbid(unsafe_code)]

use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

use super::error::{InstanceError, Result};
use super::{daemon, state, watch};
use crate::launch::Action;
use crate::runner::RunRequest;

/// Runs `req` in the session of its scope, starting it if it is not there.
pub fn run(req: RunRequest) -> crate::runner::Result<i32> {
    // The key descriptors the caller gave, if open now (before veil opens any): only
    // those are closed once the session runs, as the join does not need them.
    let key_fds: Vec<i32> = [req.keys.pem_fd, req.keys.passphrase_fd]
        .into_iter()
        .flatten()
        .filter(|&fd| crate::support::fds::is_open(fd))
        .collect();
    let dir = std::sync::Arc::new(state::Dir::own()?);
    let name = format!("{}{}", state::SESSION_PREFIX, scope_key(&req)?);
    let (create_file, members_file) = (format!("{name}.create"), format!("{name}.members"));
    let create = lock(&dir, &create_file, FlockArg::LockExclusive)?;
    let members = lock(&dir, &members_file, FlockArg::LockShared)?;
    if wait_while_starting(&dir, &name)? {
        crate::support::diag::debug_note(&format!("sharens: joining session {name}"));
    } else {
        crate::support::diag::debug_note(&format!("sharens: starting session {name}"));
        state::remove_if_dead(&dir, &name);
        let mut session = req.clone();
        // The session only holds the container: no %startscript, no runscript.
        session.action = Action::Hold;
        session.args = Vec::new();
        let (out, err) = state::log_files(&name);
        let w = watch::Watch {
            slurm_step: watch::slurm_step(),
            members: Some(watch::Members {
                dir: dir.clone(),
                members: members_file.clone(),
                create: create_file.clone(),
                remove: vec![out, err, members_file.clone(), create_file.clone()],
            }),
        };
        daemon::start(session, &name, &dir, w).map_err(|e| match e {
            InstanceError::NotStarted { why, kind, .. } => {
                InstanceError::SessionNotStarted { why, kind }
            }
            other => other,
        })?;
    }
    crate::support::fds::close_open(&key_fds);
    crate::crypt::environ::scrub();
    let found = super::find(&name);
    drop(create);
    let code = super::join(req, found?);
    drop(members);
    code
}

/// Waits while the session is being started by a process whose starter is gone (it
/// held `create` until it died); true once it runs, false if there is none.
fn wait_while_starting(dir: &state::Dir, name: &str) -> Result<bool> {
    let t = std::time::Instant::now();
    loop {
        match state::read(dir, name)? {
            Some(state::Entry::Running(_)) => return Ok(true),
            Some(state::Entry::Starting) if t.elapsed() < std::time::Duration::from_secs(300) => {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            _ => return Ok(false),
        }
    }
}

/// Takes `arg` on the lock file `file` in `dir`, made if missing. The session's end
/// unlinks its lock files while holding them: a lock won on a file no longer there is
/// retried.
pub(super) fn lock(dir: &state::Dir, file: &str, arg: FlockArg) -> Result<Flock<File>> {
    use nix::fcntl::OFlag;
    loop {
        let f = dir
            .open_file(file, OFlag::O_RDWR | OFlag::O_CREAT, 0o600)
            .map_err(|e| InstanceError::io(&dir.path.join(file), "opening the session lock", e))?;
        let held = Flock::lock(f, arg).map_err(|(_, e)| {
            InstanceError::io(
                &dir.path.join(file),
                "locking the session",
                std::io::Error::from(e),
            )
        })?;
        let now = dir
            .open_file(file, OFlag::O_RDONLY, 0)
            .and_then(|f| f.metadata());
        let same = match (held.metadata(), now) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        };
        if same {
            return Ok(held);
        }
    }
}

/// The scope of a session, as a name: what must be equal for two processes to share.
fn scope_key(req: &RunRequest) -> Result<String> {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(format!("uid {}\n", nix::unistd::geteuid()));
    if crate::registry::ImageUri::is_uri(&req.image) {
        h.update(format!("uri {}\n", req.image));
    } else {
        let m = fs::metadata(&req.image)
            .map_err(|e| InstanceError::io(Path::new(&req.image), "reading", e))?;
        h.update(format!(
            "file {} {} {} {}.{}\n",
            m.dev(),
            m.ino(),
            m.size(),
            m.mtime(),
            m.mtime_nsec()
        ));
    }
    h.update(format!("verify {} policy {:?}\n", req.verify, req.policy));
    // What makes the container: mounts, namespaces, identity. Not what each member
    // sets for itself (environment, working directory, shell).
    let o = &req.options;
    h.update(format!(
        "binds {:?} contain {} no_home {} home {:?} writable_tmpfs {} pid {} ipc {} uts {} hostname {:?} fakeroot {} fuse {}\n",
        o.binds,
        o.contain,
        o.no_home,
        o.home,
        o.writable_tmpfs,
        o.pid,
        o.ipc,
        o.uts,
        o.hostname,
        o.fakeroot,
        o.fuse
    ));
    h.update(format!(
        "no_mount {:?} workdir {:?} scratch {:?} no_umask {} unsquash {} net {} no_unpack {}\n",
        o.no_mount, o.workdir, o.scratch, o.no_umask, o.unsquash, o.net, o.no_unpack
    ));
    // The working directory is bound into the container unless --contain.
    if !o.contain {
        let cwd = std::env::current_dir()
            .ok()
            .and_then(|d| d.canonicalize().ok());
        h.update(format!("cwd {cwd:?}\n"));
    }
    h.update(format!("scope {}\n", job_scope()));
    Ok(h.finalize()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// The job: the Slurm job step, else the parent process.
fn job_scope() -> String {
    let var = |n: &str| std::env::var(n).ok().filter(|v| !v.is_empty());
    if let Some(job) = var("SLURM_JOB_ID") {
        let step = var("SLURM_STEP_ID").unwrap_or_else(|| "batch".into());
        return format!("slurm {job}.{step}");
    }
    let parent = nix::unistd::getppid().as_raw();
    format!("parent {parent} {}", state::start_time(parent).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_file_unlinked_while_waited_for_is_made_again() {
        let t = tempfile::tempdir().unwrap();
        let d = state::Dir::open(t.path()).unwrap();
        let first = lock(&d, "l", FlockArg::LockExclusive).unwrap();
        fs::remove_file(t.path().join("l")).unwrap();
        // The old file is still locked; a new one at the path is not.
        let second = lock(&d, "l", FlockArg::LockExclusiveNonblock).unwrap();
        assert_ne!(
            first.metadata().unwrap().ino(),
            second.metadata().unwrap().ino()
        );
    }
}
