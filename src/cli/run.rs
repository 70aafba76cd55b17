//! `veil run | exec | shell | test`: the container actions, with Apptainer's flags.

#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::launch::{Action, Options, binds, env};
use crate::runner::{self, RunRequest};

// The flags of every command that starts a container (`instance start` too). (A
// plain comment: clap would take a doc comment for the command's about text.)
#[derive(Debug, Args)]
pub struct RunFlags {
    /// Bind a host path: src[:dst[:ro|rw]], comma-separated or repeated (also from VEIL_, APPTAINER_ or SINGULARITY_ BIND and BINDPATH, added first)
    #[arg(short = 'B', long = "bind", value_name = "SPEC")]
    bind: Vec<String>,
    /// Use minimal /dev and empty /tmp, /var/tmp and home instead of the host's
    #[arg(short = 'c', long)]
    contain: bool,
    /// --contain plus --cleanenv, a PID namespace and an IPC namespace
    #[arg(short = 'C', long)]
    containall: bool,
    /// Do not mount the home directory
    #[arg(long)]
    no_home: bool,
    /// Home directory: src[:dst] (default: your home, at the same path)
    #[arg(short = 'H', long, value_name = "SPEC")]
    home: Option<String>,
    /// Initial working directory inside the container (--cwd: SingularityCE's name)
    #[arg(long, visible_alias = "cwd", value_name = "DIR")]
    pwd: Option<PathBuf>,
    /// Do not pass the host environment (except TERM, LANG, LC_*, TZ, DISPLAY)
    #[arg(short = 'e', long)]
    cleanenv: bool,
    /// Set variables: NAME=VALUE, comma-separated or repeated
    #[arg(long = "env", value_name = "NAME=VALUE")]
    env: Vec<String>,
    /// Read NAME=VALUE lines from a file
    #[arg(long, value_name = "FILE")]
    env_file: Vec<PathBuf>,
    /// Bind in Docker's form: type=bind,source=SRC,destination=DST[,readonly] (repeatable)
    #[arg(long, value_name = "SPEC")]
    mount: Vec<String>,
    /// Leave out default mounts: proc, sys, dev, devpts, tmp, home, cwd, bind-paths (/etc/hosts, /etc/localtime, /etc/resolv.conf) or one of those paths; comma-separated
    #[arg(long, value_name = "LIST")]
    no_mount: Vec<String>,
    /// Host directory for --scratch directories, and with --contain for /tmp, /var/tmp and the home (DIR/tmp, DIR/var_tmp, DIR/home), instead of memory
    #[arg(short = 'W', long, value_name = "DIR")]
    workdir: Option<PathBuf>,
    /// An empty writable directory at this path inside the container: in memory, or in --workdir; comma-separated or repeated
    #[arg(short = 'S', long, value_name = "DIR")]
    scratch: Vec<String>,
    /// Accepted for Apptainer scripts: veil never shell-evaluates variables' values (they are set literally)
    #[arg(long)]
    no_eval: bool,
    /// Accepted for Apptainer scripts: without --fakeroot the container has no privileges to drop (refused with --fakeroot)
    #[arg(long)]
    no_privs: bool,
    /// Start the container with umask 0022 instead of yours
    #[arg(long)]
    no_umask: bool,
    /// Unpack the image into memory instead of serving it with FUSE (what veil does by itself where /dev/fuse is missing; --tmp-sandbox: SingularityCE's name)
    #[arg(long, alias = "tmp-sandbox", conflicts_with = "no_tmp_sandbox")]
    unsquash: bool,
    /// Never unpack the image: where /dev/fuse is missing, fail instead (SingularityCE's name)
    #[arg(long)]
    no_tmp_sandbox: bool,
    /// A network namespace of the container's own, with loopback alone (what --network none makes; other networks need root)
    #[arg(short = 'n', long)]
    net: bool,
    /// The network: only "none" (it makes the namespace by itself; the peers' bridge and CNI networks need root)
    #[arg(long, value_name = "TYPE")]
    network: Option<String>,
    /// No PID namespace, even with --containall or --compat
    #[arg(long)]
    no_pid: bool,
    /// As the peers' --compat: --containall, --writable-tmpfs and --no-umask (and --no-eval, which is how veil runs anyway)
    #[arg(long)]
    compat: bool,
    /// Let the container write to its root, into memory that vanishes at exit
    #[arg(long)]
    writable_tmpfs: bool,
    /// Run in a new PID namespace (a private /proc)
    #[arg(short = 'p', long)]
    pid: bool,
    /// Run in a new IPC namespace
    #[arg(short = 'i', long)]
    ipc: bool,
    /// Run in a new UTS namespace (own hostname)
    #[arg(long)]
    uts: bool,
    /// Hostname inside the container (implies --uts)
    #[arg(long)]
    hostname: Option<String>,
    /// Be root inside the container (uid 0, mapped to you)
    #[arg(short = 'f', long)]
    fakeroot: bool,
    /// Accepted for Apptainer scripts: veil always runs in a user namespace
    #[arg(short = 'u', long)]
    userns: bool,
    /// Serve the image with FUSE even when running as root (instead of a loop device); never unpack it instead
    #[arg(long)]
    fuse: bool,
    /// Refuse to run a SIF that is unsigned, tampered with, or signed by a key not in your keyrings
    #[arg(long)]
    verify: bool,
    /// Refuse to run a SIF unless its signatures satisfy this policy file (see docs/sign.md; also VEIL_POLICY)
    #[arg(long, value_name = "FILE", env = "VEIL_POLICY")]
    policy: Option<PathBuf>,
    #[command(flatten)]
    keys: super::encryption::EncryptionArgs,
    /// Refuse to run an image that is not encrypted
    #[arg(long)]
    require_encrypted: bool,
    #[command(flatten)]
    registry: super::registry::ContainerRegistryArgs,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    flags: RunFlags,
    /// Share one session (one unlock, one FUSE server, one mount namespace) with the other processes of this job on this node that run the same image with the same flags (see docs/instances.md)
    #[arg(long)]
    sharens: bool,
    /// The image: a SIF file, a squashfs file, a sandbox directory, oras://REGISTRY/REPOSITORY:TAG, docker://IMAGE, or instance://NAME (a running instance)
    image: String,
    /// Arguments
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<OsString>,
}

#[derive(Debug, Args)]
pub struct ShellArgs {
    /// The shell to start (default: /bin/bash if present, else /bin/sh)
    #[arg(short = 's', long)]
    shell: Option<String>,
    #[command(flatten)]
    run: RunArgs,
}

fn env_var(names: &[&str]) -> Option<String> {
    names
        .iter()
        .find_map(|n| std::env::var(n).ok().filter(|v| !v.trim().is_empty()))
}

/// Whether the container gets a network namespace: `--net` or `--network`, with no
/// network but `none` (loopback alone); the others need root.
fn network(a: &RunFlags) -> Result<bool> {
    match a.network.as_deref().map(str::trim) {
        None => Ok(a.net),
        Some("none") => Ok(true),
        Some(other) => Err(anyhow::anyhow!(
            "--network {other:?}: veil makes only --network none (a network namespace with loopback alone); the peers' bridge and CNI networks need root"
        )
        .context(super::exit::Tagged(super::exit::Failure::Usage))),
    }
}

/// The `--scratch` destinations, cleaned; refused where they would cover the root,
/// /proc, /sys or /dev.
fn scratch_dirs(lists: &[String]) -> Result<Vec<PathBuf>> {
    let mut scratch = Vec::new();
    for list in lists {
        for d in list.split(',').map(str::trim).filter(|d| !d.is_empty()) {
            let clean = binds::clean(std::path::Path::new(d));
            let why = if !d.starts_with('/') {
                Some("not an absolute path")
            } else if clean == std::path::Path::new("/")
                || ["/proc", "/sys", "/dev"]
                    .iter()
                    .any(|p| clean.starts_with(p))
            {
                Some("would cover the container's root, /proc, /sys or /dev")
            } else {
                None
            };
            if let Some(why) = why {
                return Err(anyhow::anyhow!("--scratch {d:?}: {why}")
                    .context(super::exit::Tagged(super::exit::Failure::Usage)));
            }
            scratch.push(clean);
        }
    }
    Ok(scratch)
}

fn options(a: &RunFlags, shell: Option<String>) -> Result<Options> {
    let mut bind_specs = Vec::new();
    // Environment binds first, as the peers: they apply before the command line's.
    // For each of the two names the peers read, the first prefix set; both add up,
    // as with the peers (a site's SINGULARITY_BINDPATH and a user's APPTAINER_BIND).
    for name in ["BIND", "BINDPATH"] {
        let vars: Vec<String> = ["VEIL_", "APPTAINER_", "SINGULARITY_"]
            .iter()
            .map(|p| format!("{p}{name}"))
            .collect();
        let vars: Vec<&str> = vars.iter().map(String::as_str).collect();
        if let Some(list) = env_var(&vars) {
            bind_specs.extend(binds::parse_list(&list)?);
        }
    }
    for b in &a.bind {
        bind_specs.extend(binds::parse_list(b)?);
    }
    // One mount per value, or per line of one (as the peers' MOUNT variables).
    for m in a.mount.iter().flat_map(|m| m.lines()) {
        if !m.trim().is_empty() {
            bind_specs.push(binds::parse_mount(m)?);
        }
    }
    if a.no_privs && a.fakeroot {
        return Err(anyhow::anyhow!(
            "--no-privs with --fakeroot: veil cannot take the capabilities of --fakeroot's root in its user namespace; leave out one of them"
        )
        .context(super::exit::Tagged(super::exit::Failure::Usage)));
    }
    let mut no_mount = binds::NoMount::default();
    for list in &a.no_mount {
        no_mount.add(list)?;
    }
    let workdir = match &a.workdir {
        None => None,
        Some(w) => Some(
            w.canonicalize()
                .with_context(|| format!("--workdir {}", w.display()))
                .context(super::exit::Tagged(super::exit::Failure::Usage))?,
        ),
    };
    let scratch = scratch_dirs(&a.scratch)?;
    let containall = a.containall || a.compat;
    let mut env_pairs = Vec::new();
    for f in &a.env_file {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("--env-file {}", f.display()))?;
        env_pairs.extend(env::parse_env_file(&text, &f.display().to_string())?);
    }
    for e in &a.env {
        env_pairs.extend(env::parse_env_flag(e)?);
    }
    let home = match &a.home {
        None => None,
        Some(spec) => {
            let (src, dst) = spec
                .split_once(':')
                .unwrap_or((spec.as_str(), spec.as_str()));
            if !dst.starts_with('/') {
                bail!("--home {spec:?}: the destination must be an absolute path");
            }
            Some((PathBuf::from(src), PathBuf::from(dst)))
        }
    };
    Ok(Options {
        binds: bind_specs,
        contain: a.contain || containall,
        cleanenv: a.cleanenv || containall,
        no_home: a.no_home,
        home,
        pwd: a.pwd.clone(),
        env: env_pairs,
        writable_tmpfs: a.writable_tmpfs || a.compat,
        pid: (a.pid || containall) && !a.no_pid,
        ipc: a.ipc || containall,
        uts: a.uts || a.hostname.is_some(),
        hostname: a.hostname.clone(),
        fakeroot: a.fakeroot,
        shell,
        fuse: a.fuse,
        no_mount,
        workdir,
        scratch,
        no_umask: a.no_umask || a.compat,
        unsquash: a.unsquash,
        net: network(a)?,
        no_unpack: a.no_tmp_sandbox,
    })
}

/// The run service's request for flags `f` and image `image`.
pub fn request(
    action: Action,
    f: RunFlags,
    shell: Option<String>,
    image: String,
    args: Vec<OsString>,
) -> Result<RunRequest> {
    let options = options(&f, shell)?;
    f.keys.apply_key_settings();
    Ok(RunRequest {
        action,
        image,
        args,
        options,
        verify: f.verify,
        policy: f.policy,
        keys: f.keys.flags(),
        require_encrypted: f.require_encrypted,
        registry: f.registry.options(),
        sharens: false,
    })
}

pub fn run(action: Action, a: RunArgs, shell: Option<String>) -> Result<ExitCode> {
    crate::support::diag::debug_time("arguments parsed");
    let mut req = request(action, a.flags, shell, a.image, a.args)?;
    req.sharens = a.sharens;
    let code = runner::run(req)?;
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

pub fn shell(a: ShellArgs) -> Result<ExitCode> {
    run(Action::Shell, a.run, a.shell)
}
