//! Instances: containers that run in the background, started with a name and joined
//! by later commands (`instance://NAME`), as Apptainer's. Each is a launch whose init
//! outlives its action (`%startscript`, or the runscript for `instance run`) until it
//! is stopped; the launch runs in a process of its own (`daemon`), recorded in a state
//! file (`state`); `control` stops and measures it; `watch` ends it with the Slurm job
//! step that started it, or with the last member of a shared session (`--sharens`).

#![forbid(unsafe_code)]

mod control;
mod daemon;
mod error;
pub(super) mod sharens;
pub(super) mod state;
pub(super) mod watch;

use std::time::Duration;

pub use control::{Stats, StopOptions};
pub use error::{InstanceError, Result};
pub use state::State;

use crate::launch::{self, Action, JoinSpec};
use crate::runner::RunRequest;

/// The scheme of an instance as an image: `instance://NAME`.
pub const SCHEME: &str = "instance://";

/// Starts `req` (action `Start` or `Run`) as instance `name`; returns once it runs.
pub fn start(req: RunRequest, name: &str) -> Result<State> {
    state::check_name(name)?;
    if req.image.starts_with(SCHEME) {
        return Err(InstanceError::FromInstance(req.image));
    }
    let dir = std::sync::Arc::new(state::Dir::own()?);
    let w = watch::Watch {
        slurm_step: watch::slurm_step(),
        members: None,
    };
    daemon::start(req, name, &dir, w)
}

/// A running instance of this user, its processes checked.
pub struct Found {
    pub state: State,
    checked: control::Checked,
}

/// The running instance `name` of this user (a `--sharens` session's name too).
pub fn find(name: &str) -> Result<Found> {
    state::check_listed_name(name)?;
    let dir = state::Dir::own()?;
    match state::read(&dir, name)? {
        Some(state::Entry::Running(s)) => match control::verify(&s) {
            Ok(checked) => Ok(Found { state: s, checked }),
            // Not what the record says (a recycled pid, a forged record) or no longer
            // running: nothing is signalled or joined, and the record goes.
            Err(control::Unverified::Gone | control::Unverified::NotAnInstance) => {
                state::remove_if_of(&dir, name, s.launcher, s.launcher_start);
                Err(InstanceError::NotFound(name.into()))
            }
            Err(control::Unverified::NoPidfd) => Err(InstanceError::NoPidfd),
            Err(control::Unverified::Inside) => Err(InstanceError::Inside(name.into())),
        },
        Some(state::Entry::Starting) => Err(InstanceError::Starting(name.into())),
        Some(state::Entry::Dead) => {
            state::remove_if_dead(&dir, name);
            Err(InstanceError::NotFound(name.into()))
        }
        None => Err(InstanceError::NotFound(name.into())),
    }
}

/// Runs `req`'s action in the running instance `f` (no key needed: the instance's
/// launcher serves its root). The caller's key variables are scrubbed; its key
/// descriptors were closed before anything was opened (`runner::run`, `sharens::run`).
pub fn join(req: RunRequest, f: Found) -> crate::runner::Result<i32> {
    crate::crypt::environ::scrub();
    let s = f.state;
    let mut options = req.options;
    options.fakeroot = s.fakeroot;
    options.home = s.home.clone();
    options.no_home = s.no_home;
    options.contain = s.contain;
    Ok(launch::join(JoinSpec {
        action: req.action,
        image_name: s.image.clone(),
        args: req.args,
        options,
        init: nix::unistd::Pid::from_raw(s.init),
        init_pidfd: f.checked.init,
    })?)
}

/// Stops instance `name`; false if it had to be killed after the timeout.
pub fn stop(name: &str, o: StopOptions) -> Result<bool> {
    let f = find(name)?;
    let clean = control::stop(&f.state, &f.checked, o);
    let s = &f.state;
    state::remove_if_of(&state::Dir::own()?, name, s.launcher, s.launcher_start);
    Ok(clean)
}

/// The names of this user's running instances.
pub fn running_names() -> Result<Vec<String>> {
    Ok(list(None, None)?.into_iter().map(|s| s.name).collect())
}

/// The running instances of `user` (root only for another user's) whose names match
/// `pattern` (`*` for any run of characters). Records of instances that are gone are
/// removed.
pub fn list(user: Option<&str>, pattern: Option<&str>) -> Result<Vec<State>> {
    let dir = match user {
        None => state::Dir::own()?,
        Some(u) => match user_dir(u)? {
            Some(d) => d,
            None => return Ok(Vec::new()),
        },
    };
    let own = user.is_none();
    let mut out = Vec::new();
    for name in state::names(&dir) {
        if pattern.is_some_and(|p| !wildcard(p.as_bytes(), name.as_bytes())) {
            continue;
        }
        match state::read(&dir, &name)? {
            Some(state::Entry::Running(mut s)) => {
                // Where the logs are is not taken from the record.
                let (o, e) = state::log_files(&name);
                s.out_log = dir.path.join(o);
                s.err_log = dir.path.join(e);
                out.push(s)
            }
            Some(state::Entry::Dead) if own => state::remove_if_dead(&dir, &name),
            _ => {}
        }
    }
    Ok(out)
}

/// `user`'s instance directory, if it has one.
fn user_dir(user: &str) -> Result<Option<state::Dir>> {
    let u = nix::unistd::User::from_name(user)
        .ok()
        .flatten()
        .ok_or_else(|| InstanceError::NoUser(user.into()))?;
    if !nix::unistd::geteuid().is_root() && u.uid != nix::unistd::geteuid() {
        return Err(InstanceError::NotRoot);
    }
    let path = state::dir_for(Some(&u.dir)).ok_or(InstanceError::NoDir)?;
    if !path.is_dir() {
        return Ok(None);
    }
    state::Dir::open(&path).map(Some)
}

/// The use of instance `name`, sampled over a quarter of a second.
pub fn stats(name: &str) -> Result<Stats> {
    let f = find(name)?;
    Ok(control::stats(
        &f.state,
        &f.checked,
        Duration::from_millis(250),
    ))
}

/// `*` matches any run of bytes; everything else itself.
/// (Greedy with one point to return to: linear in practice, never exponential.)
fn wildcard(p: &[u8], s: &[u8]) -> bool {
    let (mut i, mut j) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while j < s.len() {
        if i < p.len() && p[i] == b'*' {
            star = Some((i, j));
            i += 1;
        } else if i < p.len() && p[i] == s[j] {
            i += 1;
            j += 1;
        } else if let Some((si, sj)) = star {
            i = si + 1;
            j = sj + 1;
            star = Some((si, sj + 1));
        } else {
            return false;
        }
    }
    p[i..].iter().all(|&c| c == b'*')
}

/// `Run` for `instance run`, else `Start`.
pub fn action(run: bool) -> Action {
    if run { Action::Run } else { Action::Start }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_runs_of_characters() {
        assert!(wildcard(b"*", b""));
        assert!(wildcard(b"web*", b"web-1"));
        assert!(wildcard(b"*-1", b"web-1"));
        assert!(wildcard(b"w*b*1", b"web-1"));
        assert!(!wildcard(b"web", b"web-1"));
        assert!(!wildcard(b"db*", b"web-1"));
        assert!(!wildcard(b"*a*a*a*a*a*a*a*a*a*a*a*a*b", &[b'a'; 64]));
    }
}
