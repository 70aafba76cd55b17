//! Where instances are recorded, and what is recorded: one JSON file per instance,
//! 0600 in a 0700 directory of the user's, written whole (temporary file + rename).
//! No key material is ever recorded: the key lives only in the instance's launcher.
//!
//! The directory is `~/.veil/instances/HOST` (a home shared between nodes keeps each
//! node's instances apart), whatever the environment says: `XDG_RUNTIME_DIR` comes and
//! goes with logins (and is copied into Slurm jobs from another machine), and an
//! instance must be found by whoever stops it later.
//!
//! A container that binds the home can write here: a record is never trusted alone
//! (`control::verify` checks the processes it names before anything is signalled or
//! joined), and it is read without following links, blocking or reading without bound.
//!
//! It is used through a descriptor ([`Dir`]): an instance's launcher mounts its staging
//! tmpfs over `/tmp` in its own mount namespace, and a directory under it must stay
//! reachable.

#![forbid(unsafe_code)]

use std::fs;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;

use serde::{Deserialize, Serialize};

use super::error::{InstanceError, Result};

/// What a running instance is, as `instance list` and joins read it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct State {
    pub name: String,
    /// The image as it was named at start.
    pub image: String,
    /// The launcher: FUSE server, signal forwarding; the instance ends with it.
    pub launcher: i32,
    pub launcher_start: u64,
    /// The container's init, in the host's PID namespace.
    pub init: i32,
    pub init_start: u64,
    /// Seconds since the epoch.
    pub started: u64,
    /// The options a join takes from the instance rather than from its caller.
    pub fakeroot: bool,
    pub no_home: bool,
    pub contain: bool,
    pub home: Option<(PathBuf, PathBuf)>,
    pub out_log: PathBuf,
    pub err_log: PathBuf,
}

/// A name reserved by a starting instance: its process, until the state is written.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Reservation {
    starting: i32,
    starting_start: u64,
}

/// An instance directory, open.
pub struct Dir {
    pub path: PathBuf,
    fd: fs::File,
}

impl Dir {
    /// The instance directory of the user running this process, made if missing.
    pub fn own() -> Result<Dir> {
        let uid = nix::unistd::geteuid().as_raw();
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let dir = dir_for(home.as_deref()).ok_or(InstanceError::NoDir)?;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|err| InstanceError::io(&dir, "creating the instance directory", err))?;
        let d = Dir::open(&dir)?;
        let meta =
            d.fd.metadata()
                .map_err(|err| InstanceError::io(&dir, "reading its owner", err))?;
        if meta.uid() != uid || meta.mode() & 0o022 != 0 {
            return Err(InstanceError::io(
                &dir,
                "checking the instance directory",
                std::io::Error::other("it must be yours and writable by you alone"),
            ));
        }
        Ok(d)
    }

    pub fn open(path: &Path) -> Result<Dir> {
        let fd = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
            .open(path)
            .map_err(|err| InstanceError::io(path, "opening the instance directory", err))?;
        Ok(Dir {
            path: path.to_path_buf(),
            fd,
        })
    }

    /// Its descriptor, which the instance's launcher keeps.
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.fd.as_raw_fd()
    }

    /// Opens `file` in the directory (never through a link).
    pub fn open_file(&self, file: &str, flags: OFlag, mode: u32) -> std::io::Result<fs::File> {
        let fd = nix::fcntl::openat(
            self.fd.as_fd(),
            file,
            flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::from_bits_truncate(mode),
        )?;
        Ok(fs::File::from(fd))
    }

    pub fn remove_file(&self, file: &str) {
        let _ = nix::unistd::unlinkat(
            self.fd.as_fd(),
            file,
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        );
    }

    /// Reads a record: a regular file (not a FIFO someone planted, which would block)
    /// of at most [`MAX_RECORD`] bytes.
    fn read_file(&self, file: &str) -> std::io::Result<String> {
        let f = self.open_file(file, OFlag::O_RDONLY | OFlag::O_NONBLOCK, 0)?;
        let m = f.metadata()?;
        if !m.is_file() || m.len() > MAX_RECORD {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "not an instance record (not a regular file, or too large)",
            ));
        }
        let mut s = String::new();
        f.take(MAX_RECORD)
            .read_to_string(&mut s)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        Ok(s)
    }

    /// Holds the directory's lock while `f` runs: a record is read, removed and made
    /// again as one step, so two starters never both take one name.
    fn locked<T>(&self, f: impl FnOnce() -> T) -> T {
        // A regular file (a directory cannot be locked on NFS, where flock is made of
        // POSIX locks and wants a writable descriptor), opened afresh: a flock
        // belongs to one open file description.
        let held = match self.open_file(".lock", OFlag::O_RDWR | OFlag::O_CREAT, 0o600) {
            Ok(f) => match nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive) {
                Ok(l) => Some(l),
                Err((_, e)) => {
                    crate::say_warn!(
                        "veil: warning: {}: cannot lock: {e}",
                        self.path.join(".lock").display()
                    );
                    None
                }
            },
            Err(e) => {
                crate::say_warn!(
                    "veil: warning: {}: cannot lock: {e}",
                    self.path.join(".lock").display()
                );
                None
            }
        };
        let out = f();
        drop(held);
        out
    }

    /// Writes `file` whole: a temporary file renamed over it.
    fn write_file(&self, file: &str, data: &[u8]) -> std::io::Result<()> {
        // A name no one can plant in advance (a container may write this directory).
        let mut salt = [0u8; 8];
        getrandom::fill(&mut salt).map_err(|e| std::io::Error::other(e.to_string()))?;
        let salt: String = salt.iter().map(|b| format!("{b:02x}")).collect();
        let tmp = format!(".{file}.{salt}.tmp");
        let mut f = self.open_file(
            &tmp,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL,
            0o600,
        )?;
        let done = f.write_all(data).and_then(|()| {
            nix::fcntl::renameat(self.fd.as_fd(), tmp.as_str(), self.fd.as_fd(), file)
                .map_err(std::io::Error::from)
        });
        if done.is_err() {
            self.remove_file(&tmp);
        }
        done
    }

    fn error(&self, file: &str, op: &'static str, err: std::io::Error) -> InstanceError {
        InstanceError::io(&self.path.join(file), op, err)
    }
}

/// The instance directory of the user with home `home`: for `-u USER` as well as for
/// oneself.
pub fn dir_for(home: Option<&Path>) -> Option<PathBuf> {
    let host = nix::unistd::gethostname().ok()?.into_string().ok()?;
    Some(
        home.filter(|h| h.is_absolute())?
            .join(".veil/instances")
            .join(host),
    )
}

/// The largest record read.
const MAX_RECORD: u64 = 64 * 1024;

/// The prefix of a `--sharens` session's name: one a user cannot give
/// ([`check_name`]), followed by 24 hex digits.
pub const SESSION_PREFIX: &str = ".sharens-";

/// Whether `name` is a `--sharens` session's.
pub fn is_session(name: &str) -> bool {
    name.strip_prefix(SESSION_PREFIX)
        .is_some_and(|h| h.len() == 24 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Checks a name that `stop`, `stats` or `list` may be given: an instance's, or a
/// session's.
pub fn check_listed_name(name: &str) -> Result<()> {
    if is_session(name) {
        Ok(())
    } else {
        check_name(name)
    }
}

/// Checks an instance name: it becomes a file name, and a URI part.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(InstanceError::BadName(name.to_string()))
    }
}

pub fn state_file(name: &str) -> String {
    format!("{name}.json")
}

/// The instance's standard output and error logs.
pub fn log_files(name: &str) -> (String, String) {
    (format!("{name}.out"), format!("{name}.err"))
}

/// When process `pid` started (clock ticks since boot), from /proc: with the pid it
/// names one process, whatever reuses the number later.
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    after.split(' ').nth(19)?.parse().ok()
}

/// The parent of process `pid`, from /proc.
pub fn parent_of(pid: i32) -> Option<i32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    after.split(' ').nth(1)?.parse().ok()
}

/// Whether the process `pid` started at `start` still runs (a zombie does not).
pub fn alive(pid: i32, start: u64) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let Some(after) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
        return false;
    };
    !after.starts_with(['Z', 'X']) && start_time(pid) == Some(start)
}

impl State {
    pub fn running(&self) -> bool {
        alive(self.launcher, self.launcher_start)
    }
}

/// What a state file holds.
pub enum Entry {
    Running(State),
    /// Being started by a live process.
    Starting,
    /// Its processes are gone (or the file is unreadable): to be cleaned.
    Dead,
}

pub fn read(dir: &Dir, name: &str) -> Result<Option<Entry>> {
    let file = state_file(name);
    let text = match dir.read_file(&file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        // Not a record veil wrote (a FIFO, a huge file, a link): nothing runs there.
        Err(e)
            if e.kind() == std::io::ErrorKind::InvalidData
                || e.raw_os_error() == Some(libc::ELOOP) =>
        {
            return Ok(Some(Entry::Dead));
        }
        Err(err) => return Err(dir.error(&file, "reading", err)),
    };
    if let Ok(mut s) = serde_json::from_str::<State>(&text) {
        // The name is the file's, whatever the record says.
        s.name = name.to_string();
        return Ok(Some(if s.running() {
            Entry::Running(s)
        } else {
            Entry::Dead
        }));
    }
    Ok(Some(match serde_json::from_str::<Reservation>(&text) {
        Ok(r) if alive(r.starting, r.starting_start) => Entry::Starting,
        _ => Entry::Dead,
    }))
}

/// Reserves `name` for this process: the state file made exclusively, or taken over
/// from an instance that is gone.
pub fn reserve(dir: &Dir, name: &str) -> Result<()> {
    dir.locked(|| reserve_locked(dir, name))
}

fn reserve_locked(dir: &Dir, name: &str) -> Result<()> {
    let file = state_file(name);
    let me = std::process::id() as i32;
    let r = Reservation {
        starting: me,
        starting_start: start_time(me).unwrap_or(0),
    };
    for _ in 0..2 {
        match dir.open_file(
            &file,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL,
            0o600,
        ) {
            Ok(mut f) => {
                let text = serde_json::to_vec(&r).expect("plain data");
                return f
                    .write_all(&text)
                    .map_err(|err| dir.error(&file, "writing", err));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => match read(dir, name)? {
                Some(Entry::Running(_) | Entry::Starting) => {
                    return Err(InstanceError::Exists(name.to_string()));
                }
                _ => remove(dir, name),
            },
            Err(err) => return Err(dir.error(&file, "creating", err)),
        }
    }
    Err(InstanceError::Exists(name.to_string()))
}

/// Records a started instance over its reservation.
pub fn write(dir: &Dir, s: &State) -> Result<()> {
    let file = state_file(&s.name);
    let text = serde_json::to_vec_pretty(s).expect("plain data");
    dir.write_file(&file, &text)
        .map_err(|err| dir.error(&file, "writing", err))
}

pub fn remove(dir: &Dir, name: &str) {
    dir.remove_file(&state_file(name));
}

/// Removes the record of `name` if it names processes that are gone.
pub fn remove_if_dead(dir: &Dir, name: &str) {
    dir.locked(|| {
        if matches!(read(dir, name), Ok(Some(Entry::Dead))) {
            remove(dir, name);
        }
    });
}

/// Removes the record of `name` if it is still that of the launcher `pid` started at
/// `start` (or that process's reservation): a newer instance of the same name keeps
/// its record.
pub fn remove_if_of(dir: &Dir, name: &str, pid: i32, start: u64) {
    dir.locked(|| {
        let Ok(text) = dir.read_file(&state_file(name)) else {
            return;
        };
        let ours = match serde_json::from_str::<State>(&text) {
            Ok(s) => s.launcher == pid && s.launcher_start == start,
            Err(_) => serde_json::from_str::<Reservation>(&text)
                .is_ok_and(|r| r.starting == pid && r.starting_start == start),
        };
        if ours {
            remove(dir, name);
        }
    });
}

/// The names of the instances recorded in `dir`, sorted.
pub fn names(dir: &Dir) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(format!("/proc/self/fd/{}", dir.raw_fd()))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().into_string().ok()?;
            let name = n.strip_suffix(".json")?.to_string();
            check_listed_name(&name).ok().map(|()| name)
        })
        .collect();
    v.sort();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_leave_the_directory_are_refused() {
        for bad in ["", ".", "..", "../x", "a/b", "-x", ".hidden", "a b", "a\nb"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_name(&"x".repeat(65)).is_err());
        for good in ["db", "web-1", "a.b_c", &"x".repeat(64)] {
            assert!(check_name(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn this_process_is_alive_and_a_wrong_start_time_is_not() {
        let me = std::process::id() as i32;
        let t = start_time(me).unwrap();
        assert!(alive(me, t));
        assert!(!alive(me, t + 1));
        assert!(!alive(i32::MAX, t));
    }

    #[test]
    fn a_second_reservation_of_a_live_name_is_refused_and_a_dead_one_is_taken_over() {
        let t = tempfile::tempdir().unwrap();
        let d = Dir::open(t.path()).unwrap();
        reserve(&d, "a").unwrap();
        assert!(matches!(reserve(&d, "a"), Err(InstanceError::Exists(_))));
        fs::write(
            t.path().join("a.json"),
            r#"{"starting": 2147483646, "starting_start": 1}"#,
        )
        .unwrap();
        reserve(&d, "a").unwrap();
        fs::write(t.path().join("b.json"), "garbage").unwrap();
        reserve(&d, "b").unwrap();
        assert_eq!(names(&d), ["a", "b"]);
    }
}
