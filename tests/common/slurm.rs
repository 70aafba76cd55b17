//! A real one-node Slurm cluster for the tests: Debian's slurmctld and slurmd
//! (slurm-wlm) with a munged of their own, started by the test process as root, on
//! loopback, with ports picked at run time and every file in a private directory, so
//! that several test binaries can each run one, beside any system Slurm or munge. Jobs
//! run as the unprivileged test user ([`Unprivileged`]). Dropping it stops the daemons
//! and every process of its jobs, and removes the directory.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::Unprivileged;
use super::registry::free_port;
use super::which;

/// The node's name. slurmd is told it (`-N`), and the controller's address is given
/// beside its name, so the machine's hostname, which may not resolve, plays no part.
const NODE: &str = "localhost";

/// How long the daemons get to bring the node up.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The daemons' PATH: the Slurm commands they run are in the system directories.
const SYSTEM_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

pub struct Slurm {
    dir: tempfile::TempDir,
    /// What `SLURM_CONF` names: every Slurm command of a test needs it.
    pub conf: PathBuf,
    /// munged, slurmctld and slurmd, in the order they were started.
    daemons: Vec<(&'static str, Child)>,
}

impl Drop for Slurm {
    fn drop(&mut self) {
        // slurmd and the controller before the rest, so that no job step starts while
        // the steps are being killed.
        for (_, child) in self.daemons.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.kill_the_rest();
    }
}

/// Whether a process is still there and not a zombie.
fn running(pid: u32) -> bool {
    parent_and_state(pid).is_some_and(|(_, state)| !matches!(state, 'Z' | 'X'))
}

/// A program of the slurm-wlm and munge packages: the daemons are in /usr/sbin, which
/// a non-login PATH may lack.
fn program(name: &str) -> Option<PathBuf> {
    which(name).or_else(|| Some(Path::new("/usr/sbin").join(name)).filter(|p| p.is_file()))
}

/// 1024 random bytes, readable by the owner only (root, who runs munged), as munged
/// insists.
fn write_munge_key(path: &Path) {
    let mut key = [0u8; 1024];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut key))
        .unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o400)
        .open(path)
        .and_then(|mut f| f.write_all(&key))
        .unwrap();
}

/// A process's parent and state letter, from /proc/PID/stat.
fn parent_and_state(pid: u32) -> Option<(u32, char)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The name, in parentheses, may itself hold spaces and parentheses.
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?.chars().next()?;
    let parent = fields.next()?.parse().ok()?;
    Some((parent, state))
}

/// The last lines of a file.
fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl Slurm {
    /// Starts munged, slurmctld and slurmd, and waits for the node to be idle; or says
    /// why it cannot (None: the test skips). Panics, with the daemons' logs, when the
    /// node does not come up.
    pub fn start() -> Option<Slurm> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("a Slurm node needs root: slurmd runs each job as its submitter");
            return None;
        }
        let needed = ["munged", "slurmctld", "slurmd", "sinfo", "srun", "sbatch"];
        if let Some(name) = needed.into_iter().find(|p| program(p).is_none()) {
            eprintln!(
                "{name} is not installed (packaging/install-deps.sh installs slurm-wlm and munge)"
            );
            return None;
        }
        // In /tmp, as Unprivileged's directory, for munged's socket path (at most 107
        // bytes) whatever TMPDIR is.
        let dir = tempfile::Builder::new()
            .prefix("veil-slurm-")
            .tempdir_in("/tmp")
            .unwrap();
        let d = dir.path();
        // Readable by all: the test user's Slurm commands read slurm.conf and connect
        // to munged's socket.
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        for sub in ["munge", "state", "spool", "log", "run"] {
            std::fs::create_dir(d.join(sub)).unwrap();
            std::fs::set_permissions(d.join(sub), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let mut slurm = Slurm {
            conf: d.join("slurm.conf"),
            dir,
            daemons: Vec::new(),
        };
        // From here on a panic drops `slurm`, which stops what has been started.
        slurm.start_munged();
        std::fs::write(&slurm.conf, slurm.config(free_port(), free_port())).unwrap();
        slurm.spawn(
            "slurmctld",
            Command::new(program("slurmctld").unwrap()).arg("-D"),
        );
        slurm.spawn(
            "slurmd",
            Command::new(program("slurmd").unwrap()).args(["-D", "-N", NODE]),
        );
        slurm.wait_for("the node to be idle", |s| s.node_state() == "idle");
        Some(slurm)
    }

    /// munged in the foreground, on its own key, socket and files, so that a system
    /// munged (or another test's) neither serves nor disturbs this node.
    fn start_munged(&mut self) {
        let d = self.dir.path();
        let key = d.join("munge/munge.key");
        write_munge_key(&key);
        let mut cmd = Command::new(program("munged").unwrap());
        // In the foreground it logs to standard error; the log file is named all the
        // same, so that it never opens the system's.
        cmd.arg("--foreground");
        for (option, file) in [
            ("--socket", self.munge_socket()),
            ("--key-file", key),
            ("--pid-file", d.join("run/munged.pid")),
            ("--seed-file", d.join("munge/munged.seed")),
            ("--log-file", d.join("log/munged.log")),
        ] {
            cmd.arg(format!("{option}={}", file.display()));
        }
        self.spawn("munged", &mut cmd);
        self.wait_for("munged's socket", |s| {
            UnixStream::connect(s.munge_socket()).is_ok()
        });
    }

    fn munge_socket(&self) -> PathBuf {
        self.dir.path().join("munge/munged.socket")
    }

    /// slurm.conf: one node on loopback, whose jobs run without cgroups (processes are
    /// tracked through their parents), authenticated by this node's munged.
    fn config(&self, controller_port: u16, slurmd_port: u16) -> String {
        let d = self.dir.path().display();
        let socket = self.munge_socket();
        let socket = socket.display();
        // 64 CPUs whatever the machine has (config_overrides: slurmd does not check
        // them), and no task binding, so that `srun -n 16` runs on two cores; the
        // partition lets jobs share CPUs, so that a job that sleeps blocks no other.
        // Batch jobs start when submitted, not up to 3 s later: `sbatch --wait` polls
        // 2 s after submitting, then 8 s later.
        format!(
            "ClusterName=veiltest
SlurmctldHost={NODE}(127.0.0.1)
SlurmctldPort={controller_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={socket}
CredType=cred/munge
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/run/slurmctld.pid
SlurmdPidFile={d}/run/slurmd.pid
SlurmctldLogFile={d}/log/slurmctld.log
SlurmdLogFile={d}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
ReturnToService=2
SchedulerParameters=batch_sched_delay=0
KillWait=2
InactiveLimit=0
NodeName={NODE} NodeAddr=127.0.0.1 CPUs=64 RealMemory=1000 State=UNKNOWN
PartitionName=test Nodes={NODE} Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:64
"
        )
    }

    /// Starts a daemon in the foreground, its standard error in the log directory, with
    /// none of the caller's environment: Slurm variables of an outer job would mislead
    /// it.
    fn spawn(&mut self, name: &'static str, cmd: &mut Command) {
        let stderr = File::create(self.dir.path().join(format!("log/{name}.stderr"))).unwrap();
        let child = cmd
            .current_dir(self.dir.path())
            .env_clear()
            .env("PATH", SYSTEM_PATH)
            .env("SLURM_CONF", &self.conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        self.daemons.push((name, child));
    }

    /// Polls `ready` for up to [`START_TIMEOUT`]; panics with the logs when a daemon
    /// exits first or time runs out.
    fn wait_for(&mut self, what: &str, ready: impl Fn(&Slurm) -> bool) {
        let start = Instant::now();
        while !ready(self) {
            let exited = self
                .daemons
                .iter_mut()
                .find_map(|(name, child)| Some((*name, child.try_wait().ok().flatten()?)));
            if let Some((name, status)) = exited {
                panic!(
                    "{name} exited ({status}) while waiting for {what}\n{}",
                    self.logs()
                );
            }
            assert!(
                start.elapsed() < START_TIMEOUT,
                "still waiting for {what} after {START_TIMEOUT:?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The node's state as sinfo reports it (`idle`, `down*`, ...), or nothing when
    /// the controller does not answer.
    fn node_state(&self) -> String {
        self.command("sinfo")
            .args(["--noheader", "--nodes", NODE, "--format", "%T"])
            .stderr(Stdio::null())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    }

    /// The private directory: configuration, munge key and socket, state, logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A Slurm command (scontrol, squeue, ...) as root, for this node, with none of
    /// the caller's environment.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new(program);
        c.env_clear()
            .env("PATH", SYSTEM_PATH)
            .env("SLURM_CONF", &self.conf);
        c
    }

    /// `program` as `user` runs it ([`Unprivileged::command`]), for this node.
    pub fn command_as(&self, user: &Unprivileged, program: impl AsRef<OsStr>) -> Command {
        let mut c = user.command(program);
        c.env("SLURM_CONF", &self.conf);
        c
    }

    /// `srun ARGS` as `user`, to completion.
    pub fn srun_as(&self, user: &Unprivileged, args: &[&str]) -> Output {
        self.command_as(user, "srun")
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running srun: {e}"))
    }

    /// The live processes of this node: those that carry its `SLURM_CONF` (the
    /// daemons, slurmstepd, which has slurmd's environment, the Slurm commands and,
    /// unless they clear their environment, the tasks), and their descendants.
    /// Zombies are left out.
    pub fn processes(&self) -> Vec<u32> {
        let mut marker = b"SLURM_CONF=".to_vec();
        marker.extend_from_slice(self.conf.as_os_str().as_bytes());
        let me = std::process::id();
        let live: Vec<(u32, u32)> = std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|&pid| pid != me)
            .filter_map(|pid| {
                let (parent, state) = parent_and_state(pid)?;
                (!matches!(state, 'Z' | 'X')).then_some((pid, parent))
            })
            .collect();
        let mut found: Vec<u32> = live
            .iter()
            .map(|&(pid, _)| pid)
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/environ"))
                    .is_ok_and(|env| env.split(|&b| b == 0).any(|v| v == marker))
            })
            .collect();
        let mut i = 0;
        while i < found.len() {
            let parent = found[i];
            for &(pid, ppid) in &live {
                if ppid == parent && !found.contains(&pid) {
                    found.push(pid);
                }
            }
            i += 1;
        }
        found
    }

    /// Kills what is left of the node once its daemons are stopped, and waits until it
    /// is gone: job steps (slurmstepd detaches from slurmd and outlives it), their
    /// tasks, and the test's Slurm commands still running.
    fn kill_the_rest(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut killed: Vec<u32> = Vec::new();
        loop {
            let left = self.processes();
            // A dying process no longer shows its environment, and is waited for here.
            killed.retain(|&pid| running(pid));
            if left.is_empty() && killed.is_empty() {
                return;
            }
            if Instant::now() > deadline {
                eprintln!("the Slurm test node left processes behind: {left:?} {killed:?}");
                return;
            }
            for pid in left {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
                killed.push(pid);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The last lines of every log of the node: what a failure message shows.
    pub fn logs(&self) -> String {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.path().join("log"))
            .map(|rd| rd.filter_map(|e| Some(e.ok()?.path())).collect())
            .unwrap_or_default();
        files.sort();
        files
            .iter()
            .map(|f| format!("== {}\n{}\n", f.display(), tail(f, 20)))
            .collect()
    }
}
