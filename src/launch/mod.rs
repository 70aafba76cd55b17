//! The rootless launcher: user namespace, mount namespace, session assembly, binds,
//! exec, signals.
//!
//! Process model:
//! 1. The launcher enters new user and mount namespaces while it still has a single
//!    thread (the kernel requires it), then at once starts the warmer, which decompresses
//!    what the container will start first while the rest is prepared. It mounts a staging
//!    tmpfs and the image's root in it (a sandbox directory is bound; a squashfs is
//!    mounted with FUSE on the launcher's /dev/fuse descriptor and served at once: INIT
//!    answered, worker threads started).
//! 2. It starts the container process (sharing its memory until that execs, see
//!    `process::spawn_shared`; with `--pid` as PID 1 of a new PID namespace); the other
//!    threads (warmer, prewarm, FUSE workers) are never touched by the child. The child
//!    takes a mount namespace of its own, applies the mount plan (`plan` says what,
//!    `steps` does it through the `sys` seam: nosuid, nodev, read-only recursively),
//!    pivots into the container root, enters a nested user namespace that locks those
//!    mounts when the container is uid 0 inside, and starts the action in a child of its own, which marks every
//!    descriptor above stderr close-on-exec, sets no_new_privs and `exec`s it. The
//!    container process then execs the veil binary as the container's init (`init`): PID
//!    1 of the PID namespace, or a child subreaper, which ends whatever the container
//!    started when the action ends or the launcher dies, however it dies.
//! 3. The launcher forwards signals, waits, and exits with the container's status.
//!    Everything it mounted lives only in its namespaces, so it vanishes with them; the
//!    kernel's dismantling of them is left to a helper (`process::hand_over_teardown`).
//!
//! Where it is done: [`launch`] orchestrates; `spec` holds its inputs and the choice
//! of mount, `prepare` what is computed before any namespace, `steps` every mount and
//! namespace step in order (on the `sys` seam, which the tests replace with a
//! recording fake), `stage` the devices behind the staging area, `fuse` the FUSE
//! server and warmer, `child` the container process and the action's.

pub mod action;
pub mod binds;
mod child;
mod dmcrypt;
pub mod env;
pub mod error;
mod fuse;
pub mod init;
mod join;
mod loopdev;
pub mod plan;
mod prepare;
mod prewarm;
#[doc(hidden)]
pub use prewarm::fuzz_elf;
mod process;
mod spec;
mod stage;
mod steps;
mod sys;
pub mod unpack;

use std::ffi::CString;
use std::fs;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;

use nix::fcntl::{OFlag, open};
use nix::sys::signal::SigSet;
use nix::sys::stat::Mode as FileMode;
use nix::unistd::{Pid, pipe2};
use veil_fusefs::fuse::{Owner, Synthetic};
use veil_fusefs::squashfs::Squashfs;

pub use crate::support::diag::{debug_note, debug_time};
pub use crate::support::identity;
pub use crate::support::userns::{self, real_root};
pub use action::Action;
use error::SysContext;
pub use error::{LaunchError, Result};
use identity::Identity;
pub use join::{JoinSpec, join};
use prepare::{HostEtc, HostPaths};
pub use spec::{KernelCrypt, LaunchSpec, Options, RootSource, Started};
use spec::{Mode, RootKind};
use steps::ContainerNamespaces;
use sys::RealSys;

/// What the launch computed before any namespace exists.
struct Prepared {
    options: Options,
    image_name: String,
    /// `exec`'s program, for the warmer.
    program: Option<String>,
    id: Identity,
    host: HostPaths,
    mode: Mode,
    /// The image's squashfs, however it is mounted.
    image_fs: Option<Arc<Squashfs<crate::image::Source>>>,
    argv: action::ActionArgv,
    direct_first: bool,
    lifetime: init::Lifetime,
}

/// The container's mount plan, staged and ready for the container process.
struct Assembled {
    steps: Vec<plan::Step>,
    root: PathBuf,
}

/// Runs the container and returns its exit status.
pub fn launch(mut spec: LaunchSpec) -> Result<i32> {
    let sys = RealSys::new();
    let started = spec.instance.take();
    let p = prepare(spec, started.is_some())?;
    debug_time("identity, environment and action computed");
    // Signals stay blocked in every thread from here on: the launcher takes them with
    // sigwait and forwards them to the container (`process::supervise`).
    let old_mask = process::block_signals().ctx("blocking signals")?;
    // The warmer's threads should start as early as possible: what the container runs
    // first is decompressed while the launch is prepared (plan, mounts, fork), not
    // afterwards, one page fault at a time.
    steps::enter_namespaces(&sys, p.mode.kind(), &p.id)?;
    // A container that is uid 0 inside has every capability in the launcher's user
    // namespace: its mounts are locked against it by a nested one (`userns::locked_userns`).
    let locked_userns = if p.mode.kind().by_kernel() {
        None
    } else {
        userns::locked_userns()
    };
    debug_time("namespaces entered");
    let warmer = start_warmer(&p);
    debug_time("warmer started");
    let assembled = assemble(&sys, &p, warmer)?;
    debug_time("namespaces entered, image staged and served");
    let ns = prepare::container_namespaces(&p.options, locked_userns);
    if started.is_some() {
        // An instance outlives the terminal that started it: no hangup, no job control.
        nix::unistd::setsid().ctx("setsid")?;
    }
    let child = start_container(&p, &assembled, ns, old_mask)?;
    debug_time("container set up and exec'd");
    if let Some(started) = started {
        started(Started {
            launcher: nix::unistd::getpid(),
            init: child,
        });
    }
    Ok(wait_for(child))
}

/// `--no-umask`: the container, forked from this process, starts with 0022.
pub(crate) fn apply_umask(o: &Options) {
    if o.no_umask {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    }
}

/// Everything that does not depend on the namespaces, computed before them.
fn prepare(spec: LaunchSpec, instance: bool) -> Result<Prepared> {
    userns::check_kernel()?;
    let o = &spec.options;
    let id = Identity::current(o.fakeroot);
    let host = HostPaths::resolve(o, &id)?;
    // After the work directories exist (made with the user's umask): the container
    // starts with the one asked for.
    apply_umask(o);
    let direct_first = prepare::direct_first(&spec);
    let argv = prepare::action_argv(&spec, &id, &host.home_dst)?;
    let program = spec
        .args
        .first()
        .filter(|_| spec.action == Action::Exec)
        .and_then(|a| a.to_str())
        .map(str::to_string);
    let image_fs = match &spec.root {
        RootSource::Squashfs { fs, .. } => Some(fs.clone()),
        RootSource::Directory(_) => None,
    };
    let mode = Mode::choose(spec.root, real_root, o.fuse, dmcrypt::available);
    let mode = fuse_or_unpacked(mode, o, spec.unpacker)?;
    Ok(Prepared {
        options: spec.options,
        image_name: spec.image_name,
        program,
        id,
        host,
        mode,
        image_fs,
        argv,
        direct_first,
        lifetime: if instance {
            init::Lifetime::Instance
        } else {
            init::Lifetime::Action
        },
    })
}

/// A FUSE root stays one where `/dev/fuse` can be opened; it is unpacked into memory
/// instead with `--unsquash`, or where FUSE is missing and an unpacker was given.
/// Checked now for a clear error before any namespace exists; the descriptor used for
/// the mount is opened again inside the user namespace, as the kernel requires (it
/// refuses a /dev/fuse opened in another user namespace).
fn fuse_or_unpacked(mode: Mode, o: &Options, unpacker: Option<unpack::Unpacker>) -> Result<Mode> {
    let Mode::Fuse(fs) = mode else {
        return Ok(mode);
    };
    let why = if o.unsquash && !o.no_unpack {
        // (--no-tmp-sandbox wins over --unsquash from a variable; both on the command
        // line are refused by the parser.)
        "--unsquash".to_string()
    } else {
        match fuse::open_fuse() {
            Ok(fd) => {
                drop(fd);
                return Ok(Mode::Fuse(fs));
            }
            // Only where /dev/fuse is missing or closed to this user; not for a
            // passing failure (out of descriptors, say), not when FUSE was asked for,
            // and not with --no-tmp-sandbox, which forbids unpacking.
            Err(e) if unpacker.is_some() && !o.fuse && !o.no_unpack && fuse_missing(&e) => {
                e.to_string()
            }
            Err(e) => return Err(e),
        }
    };
    let Some(unpacker) = unpacker else {
        return Err(LaunchError::Unpack("not possible for this command".into()));
    };
    let bytes = unpack::size_in_memory(&fs)?;
    unpack::check_memory(bytes, unpack::available(), o.unsquash)?;
    crate::say_info!(
        "veil: note: unpacking the image into memory ({} MiB; {why})",
        bytes.div_ceil(1 << 20)
    );
    Ok(Mode::Unpacked(unpack::Unpacked {
        fs,
        unpacker,
        bytes,
    }))
}

/// Whether opening /dev/fuse failed because there is none, or none for this user.
fn fuse_missing(e: &LaunchError) -> bool {
    match e {
        LaunchError::NoFuse => true,
        LaunchError::FuseAccess(io) => {
            matches!(io.raw_os_error(), Some(libc::EACCES | libc::EPERM))
        }
        _ => false,
    }
}

/// The warmer, for an image served with FUSE.
fn start_warmer(p: &Prepared) -> Option<fuse::Warmer> {
    let Mode::Fuse(fs) = &p.mode else {
        return None;
    };
    let envp = p
        .argv
        .direct
        .as_ref()
        .map_or(&p.argv.with_shell.1, |d| &d.1);
    let programs = fuse::first_programs(p.direct_first, p.program.clone());
    Some(fuse::start_warmer(fs, programs, fuse::start_path(envp)))
}

/// Builds the mount plan, stages the image and, for FUSE, mounts and serves it.
fn assemble<S: sys::Sys>(sys: &S, p: &Prepared, warmer: Option<fuse::Warmer>) -> Result<Assembled> {
    let identity_files = prepare::image_identity_files(&p.mode, p.image_fs.as_deref());
    let kind = p.mode.kind();
    let req = prepare::mount_request(
        &p.options,
        kind,
        &p.host,
        HostEtc::current(),
        &p.id,
        identity_files,
    );
    let steps = plan::build(&req);
    let root = PathBuf::from(plan::root_dir(&req));
    let mut synth = Synthetic::default();
    if let Mode::Fuse(fs) = &p.mode {
        use std::os::unix::ffi::OsStrExt;
        for (path, is_file) in plan::mount_points(&steps, plan::root_dir(&req)) {
            synth.add(fs, path.as_os_str().as_bytes(), is_file);
        }
    }
    if crate::support::say::debug() {
        for s in &steps {
            eprintln!("veil: plan: {s:?}");
        }
    }
    debug_time("plan, environment and action built");
    let fuse = match (kind, warmer) {
        (RootKind::Fuse, Some(warmer)) => Some(stage::FuseServer {
            fd: fuse::open_fuse()?,
            warmer,
            synth,
            owner: Owner {
                uid: p.id.inner_uid,
                gid: p.id.inner_gid,
            },
        }),
        _ => None,
    };
    let mut devices = stage::RealDevices::new(&p.mode, fuse);
    let owner = (p.id.inner_uid, p.id.inner_gid);
    steps::stage_and_serve(sys, &mut devices, owner, &p.image_name)?;
    Ok(Assembled { steps, root })
}

/// Starts the container process, which sets itself up and execs the action; returns
/// once it has, or with the error it reported.
fn start_container(
    p: &Prepared,
    a: &Assembled,
    ns: ContainerNamespaces,
    old_mask: SigSet,
) -> Result<Pid> {
    let o = &p.options;
    let start_dirs: Vec<CString> = p.host.start_dirs(o);
    let (err_r, err_w) = pipe2(OFlag::O_CLOEXEC).ctx("pipe")?;
    // The launcher may hold secrets (an encrypted image's keys): no core dumps, no ptrace
    // by other processes of the user. Set after the id maps, which need a dumpable writer.
    let _ = nix::sys::prctl::set_dumpable(false);
    let launcher_pid = nix::unistd::getpid();
    // What the container process needs to become the container's init once the action
    // runs (`init`): the launcher's own executable, and a way to tell whether the
    // launcher still lives that works from inside a PID namespace (a pidfd; Linux 5.3).
    let exe = open(
        "/proc/self/exe",
        OFlag::O_PATH | OFlag::O_CLOEXEC,
        FileMode::empty(),
    )
    .ok();
    let launcher_pidfd = crate::support::fds::pidfd_of_self();

    // The container's setup: its errors go to `err_w`; it ends in exec or `_exit`.
    let run_child = |err_w: OwnedFd| -> std::convert::Infallible {
        let mut err_slot = Some(err_w);
        let err = child::child(child::ChildSetup {
            err: &mut err_slot,
            launcher: launcher_pid,
            launcher_pidfd: launcher_pidfd.as_ref().map(|f| f.as_fd()),
            exe: exe.as_ref().map(|f| f.as_fd()),
            old_mask,
            ns: ns.clone(),
            steps: &a.steps,
            root: &a.root,
            start_dirs: &start_dirs,
            argv: &p.argv,
            direct_first: p.direct_first,
            lifetime: p.lifetime,
        });
        if let Some(fd) = err_slot {
            let _ = fs::File::from(fd).write_all(err.to_string().as_bytes());
        }
        // SAFETY: _exit is always safe; it skips destructors and atexit handlers that
        // belong to the parent's state.
        unsafe { libc::_exit(255) }
    };
    // With --pid the container process is started as PID 1 of a new PID namespace.
    let clone_flags = ns.clone_flags().bits();
    // Without one, the launcher too adopts what the container leaves orphaned, in case
    // the container's init is killed on its own (`init` ends the rest in any other case).
    if !ns.pid {
        let _ = nix::sys::prctl::set_child_subreaper(true);
    }
    let child = {
        use std::os::fd::FromRawFd;
        let (r, w) = (err_r.as_raw_fd(), err_w.as_raw_fd());
        // SAFETY: this thread waits until the child has exec'd or exited; the child
        // works on its own copy of the descriptor table (no CLONE_FILES): it closes its
        // copy of the read end and owns its copy of the write end, which the parent's
        // `err_w` (closed below) does not share. What the child touches in the shared
        // memory is what a forked child would (see `spawn_shared`).
        unsafe {
            process::spawn_shared(
                clone_flags,
                Box::new(move || {
                    libc::close(r);
                    run_child(OwnedFd::from_raw_fd(w))
                }),
            )
        }
        .ctx("starting the container process")?
    };
    drop(err_w);
    debug_time("container process started");
    let mut msg = String::new();
    let _ = fs::File::from(err_r).read_to_string(&mut msg);
    if !msg.is_empty() {
        let _ = nix::sys::wait::waitpid(child, None);
        return Err(LaunchError::Child(msg));
    }
    Ok(child)
}

/// Waits for the container and leaves its dismantling to a helper.
fn wait_for(child: Pid) -> i32 {
    // Holding the container's mount namespace keeps its dismantling out of the
    // container's exit, which the launcher (and so the caller) waits for: the
    // namespace goes with the teardown helper instead (`hand_over_teardown`).
    // If the container has already gone, there is nothing to hold.
    let _held_ns = fs::File::open(format!("/proc/{child}/ns/mnt")).ok();
    let code = process::supervise(child);
    debug_time("container exited");
    // Should the init itself have been killed, what the container left is this
    // subreaper's now: it goes too.
    init::kill_children(None);
    process::hand_over_teardown();
    code
}
