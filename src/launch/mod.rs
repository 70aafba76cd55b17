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
//!    takes a mount namespace of its own, applies the mount plan (`plan` says what, `sys`
//!    does it: nosuid, nodev, read-only recursively), pivots into the container root,
//!    enters a nested user namespace that locks those mounts when the container is uid
//!    0 inside, and starts the action in a child of its own, which marks every
//!    descriptor above stderr close-on-exec, sets no_new_privs and `exec`s it. The
//!    container process then execs the veil binary as the container's init (`init`): PID
//!    1 of the PID namespace, or a child subreaper, which ends whatever the container
//!    started when the action ends or the launcher dies, however it dies.
//! 3. The launcher forwards signals, waits, and exits with the container's status.
//!    Everything it mounted lives only in its namespaces, so it vanishes with them; the
//!    kernel's dismantling of them is left to a helper (`process::hand_over_teardown`).

pub mod action;
pub mod binds;
mod dmcrypt;
pub mod env;
pub mod error;
pub mod identity;
pub mod init;
mod loopdev;
pub mod plan;
mod prewarm;
#[doc(hidden)]
pub use prewarm::fuzz_elf;
mod process;
mod sys;
pub(crate) mod userns;

use std::ffi::{CString, OsString};
use std::fs;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{OFlag, open};
use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, unshare};
use nix::sys::signal::{SigmaskHow, Signal, sigprocmask};
use nix::sys::stat::Mode as Mode_;
use nix::unistd::pipe2;
use std::sync::Arc;
use veil_fusefs::fs::{ImageFs, Owner, Synthetic, Warm};
use veil_fusefs::squashfs::Squashfs;

pub use crate::support::diag::{debug_note, debug_time};
pub use action::Action;
use error::SysContext;
pub use error::{LaunchError, Result};
use identity::Identity;

/// Where the image's root filesystem comes from.
pub enum RootSource {
    /// A sandbox directory on the host, used read-only.
    Directory(PathBuf),
    /// A squashfs: served by the launcher's FUSE threads, or — with real root privileges
    /// and a region of a file to hand over — mounted by the kernel from a loop device.
    Squashfs {
        fs: Arc<Squashfs<crate::image::Source>>,
        region: Option<crate::image::FileRegion>,
        /// For an encrypted image: what dm-crypt needs to do the decryption instead.
        crypt: Option<KernelCrypt>,
    },
}

/// An encrypted image's LUKS2 volume in its file, and its dm-crypt mapping.
pub struct KernelCrypt {
    pub volume: crate::image::FileRegion,
    pub mapping: veil_fusefs::luks2::KernelMapping,
}

impl From<crate::image::Root> for RootSource {
    fn from(r: crate::image::Root) -> Self {
        match r {
            crate::image::Root::Directory(d) => RootSource::Directory(d),
            crate::image::Root::Squashfs { fs, region } => RootSource::Squashfs {
                fs,
                region,
                crypt: None,
            },
        }
    }
}

/// Everything `run`, `exec`, `shell` and `test` take.
#[derive(Debug, Default, Clone)]
pub struct Options {
    pub binds: Vec<binds::BindSpec>,
    pub contain: bool,
    pub cleanenv: bool,
    pub no_home: bool,
    /// `--home src[:dst]`.
    pub home: Option<(PathBuf, PathBuf)>,
    pub pwd: Option<PathBuf>,
    pub env: Vec<(String, String)>,
    pub writable_tmpfs: bool,
    pub pid: bool,
    /// A new IPC namespace (System V IPC, POSIX message queues).
    pub ipc: bool,
    pub uts: bool,
    pub hostname: Option<String>,
    pub fakeroot: bool,
    pub shell: Option<String>,
    /// Use FUSE even with real root privileges.
    pub fuse: bool,
}

/// How the image's root is mounted.
enum Mode {
    /// A sandbox directory, bound read-only, with an overlay for mount points.
    Directory(PathBuf),
    /// FUSE served by the launcher, in a user namespace.
    Fuse(Arc<Squashfs<crate::image::Source>>),
    /// Real root: the kernel's squashfs over a loop device, no user namespace.
    Kernel(crate::image::FileRegion),
    /// Real root, encrypted image: the kernel's squashfs over dm-crypt over a loop device.
    KernelCrypt(KernelCrypt),
}

/// True for uid 0 in the initial user namespace (not merely root inside a container).
pub(crate) fn real_root() -> bool {
    nix::unistd::geteuid().is_root()
        && fs::read_to_string("/proc/self/uid_map")
            .map(|m| m.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"])
            .unwrap_or(false)
}

pub struct LaunchSpec {
    pub action: Action,
    /// The image as the user named it (for APPTAINER_CONTAINER).
    pub image_name: String,
    pub root: RootSource,
    pub args: Vec<OsString>,
    pub options: Options,
}

/// Staging directory in the launcher's mount namespace: a tmpfs covers the host's /tmp
/// there (only there), and the child pivots into it. /tmp exists on every Linux system.
const STAGE: &str = "/tmp";

/// Runs the container and returns its exit status.
pub fn launch(spec: LaunchSpec) -> Result<i32> {
    userns::check_kernel()?;
    let o = &spec.options;
    let id = Identity::current(o.fakeroot);

    // What the child needs is computed before the fork; what does not depend on the
    // namespaces, before them.
    let (home_src, home_dst) = match &o.home {
        Some((src, dst)) => (
            Some(
                src.canonicalize()
                    .map_err(|_| LaunchError::BindSource(src.display().to_string()))?,
            ),
            dst.clone(),
        ),
        None => {
            let host_home = PathBuf::from(&id.host_home);
            let dst = if o.fakeroot {
                PathBuf::from("/root")
            } else {
                host_home.clone()
            };
            (host_home.canonicalize().ok(), dst)
        }
    };
    let host_cwd = std::env::current_dir()
        .ok()
        .and_then(|p| p.canonicalize().ok());
    // `exec` in an image without environment scripts starts the program directly.
    let direct_first = spec.action == Action::Exec && !has_env_scripts(&spec.root);
    let image_fs = match &spec.root {
        RootSource::Squashfs { fs, .. } => Some(fs.clone()),
        RootSource::Directory(_) => None,
    };
    // A squashfs root is served read-only by FUSE, with the mount points it lacks
    // presented as empty synthetic nodes; a directory root gets an overlay instead.
    // Checked now for a clear error before any namespace exists; the descriptor used
    // for the mount is opened again inside the user namespace, as the kernel requires
    // (it refuses a /dev/fuse opened in another user namespace).
    let mode = match spec.root {
        RootSource::Directory(d) => Mode::Directory(d),
        RootSource::Squashfs {
            region: Some(r),
            crypt: None,
            ..
        } if real_root() && !o.fuse => Mode::Kernel(r),
        RootSource::Squashfs {
            crypt: Some(c), fs, ..
        } if real_root() && !o.fuse => match dmcrypt::available() {
            Ok(()) => Mode::KernelCrypt(c),
            Err(why) => {
                debug_note(&format!(
                    "dm-crypt path not used ({why}); serving with FUSE"
                ));
                Mode::Fuse(fs)
            }
        },
        RootSource::Squashfs { fs, .. } => Mode::Fuse(fs),
    };
    if let Mode::Fuse(_) = &mode {
        drop(open_fuse()?);
    }
    let home_str = home_dst.to_string_lossy().into_owned();
    let env = env::compute(&env::EnvRequest {
        host: std::env::vars_os().collect(),
        cleanenv: o.cleanenv,
        cli: o.env.clone(),
        home: home_str.clone(),
        user: if o.fakeroot {
            "root".into()
        } else {
            id.name.clone()
        },
        container: spec.image_name.clone(),
        container_name: Path::new(&spec.image_name)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    })?;
    let argv = action::build(spec.action, &spec.args, &env, o.shell.as_deref())?;

    debug_time("identity, environment and action computed");
    // Signals stay blocked in every thread from here on: the launcher takes them with
    // sigwait and forwards them to the container (`process::supervise`).
    let old_mask = process::block_signals().ctx(|| "blocking signals".into())?;
    // The namespaces come first, because the user namespace must be entered while the
    // launcher has a single thread, and the warmer's threads should start as early as
    // possible: what the container runs first is decompressed while the launch is
    // prepared (plan, mounts, fork), not afterwards, one page fault at a time.
    if let Mode::Kernel(_) | Mode::KernelCrypt(_) = &mode {
        // Real root needs no user namespace, and the kernel's squashfs refuses to mount in one.
        unshare(CloneFlags::CLONE_NEWNS).ctx(|| "creating a mount namespace".into())?;
    } else {
        userns::enter(id.uid, id.gid, id.inner_uid, id.inner_gid)?;
    }
    // A container that is uid 0 inside has every capability in the launcher's user
    // namespace: its mounts are locked against it by a nested one (`userns::LOCKED`).
    let locked_userns = match &mode {
        Mode::Kernel(_) | Mode::KernelCrypt(_) => None,
        _ => userns::locked_userns(),
    };
    debug_time("namespaces entered");
    // Told where the image is mounted once it is served (see the prewarm thread).
    let mut mounted: Option<std::sync::mpsc::Sender<PathBuf>> = None;
    let warm = match &mode {
        Mode::Fuse(fs) => {
            let warm = Warm::start(fs);
            let envp = argv.direct.as_ref().map_or(&argv.with_shell.1, |d| &d.1);
            let path = std::str::from_utf8(path_of(envp))
                .unwrap_or(env::DEFAULT_PATH)
                .to_string();
            let program = spec
                .args
                .first()
                .filter(|_| spec.action == Action::Exec)
                .and_then(|a| a.to_str())
                .map(str::to_string);
            let mut programs: Vec<String> = Vec::new();
            if !direct_first {
                programs.push("/bin/sh".into());
            }
            programs.extend(program);
            // Finding the files reads the image (an ELF header is a block to
            // decompress): done on a thread of its own, off the launch's path. Once the
            // image is mounted and served, the thread looks the files up through the
            // mount, so the warmer can put them in the page cache before they run.
            let (fs, w) = (fs.clone(), warm.clone());
            let (tx, rx) = std::sync::mpsc::channel::<PathBuf>();
            mounted = Some(tx);
            // Without the thread there is only no warming.
            let _ = std::thread::Builder::new()
                .name("veil-prewarm".into())
                .spawn(move || {
                    let names: Vec<&str> = programs.iter().map(String::as_str).collect();
                    let files = prewarm::start_files(&fs, &names, &path);
                    for f in &files {
                        w.prewarm(f.id, &f.hot);
                    }
                    if let Ok(root) = rx.recv() {
                        prewarm::look_up(&root, &files, |id| w.store_ahead(id));
                    }
                });
            Some(warm)
        }
        _ => None,
    };

    debug_time("warmer started");
    let (image_passwd, image_group) = match (&mode, &image_fs) {
        (Mode::Directory(dir), _) => (
            read_in_root(dir, "etc/passwd"),
            read_in_root(dir, "etc/group"),
        ),
        (_, Some(fs)) => (
            crate::image::read_small_file(fs, "/etc/passwd"),
            crate::image::read_small_file(fs, "/etc/group"),
        ),
        _ => (None, None),
    };
    let req = plan::MountRequest {
        direct_root: matches!(mode, Mode::Fuse(_)),
        writable_tmpfs: o.writable_tmpfs,
        contain: o.contain,
        no_home: o.no_home,
        pid_namespace: o.pid,
        home_src,
        custom_home: o.home.is_some(),
        home_dst: home_dst.clone(),
        cwd: host_cwd.clone(),
        binds: o.binds.clone(),
        passwd: identity::passwd(image_passwd.as_deref(), &id, &home_str).into_bytes(),
        group: identity::group(image_group.as_deref(), &id).into_bytes(),
        resolv_conf: host_file("/etc/resolv.conf"),
        hosts: host_file("/etc/hosts"),
        localtime: host_file("/etc/localtime"),
    };
    let steps = plan::build(&req);
    let root = PathBuf::from(plan::root_dir(&req));
    let mut synth = Synthetic::default();
    if let Mode::Fuse(fs) = &mode {
        for (p, is_file) in plan::mount_points(&steps, plan::root_dir(&req)) {
            synth.add(fs, p.as_os_str().as_bytes(), is_file);
        }
    }
    if std::env::var_os("VEIL_DEBUG").is_some() {
        for s in &steps {
            eprintln!("veil: plan: {s:?}");
        }
    }
    debug_time("plan, environment and action built");
    // The container starts in --pwd, else the working directory if it is visible inside,
    // else the home directory.
    let start_dir = o
        .pwd
        .clone()
        .or_else(|| if o.contain { None } else { host_cwd.clone() });
    let start_dirs: Vec<CString> = [start_dir, Some(home_dst), Some(PathBuf::from("/"))]
        .into_iter()
        .flatten()
        .filter_map(|p| CString::new(p.as_os_str().as_bytes()).ok())
        .collect();
    let hostname = o
        .hostname
        .clone()
        .or_else(|| o.uts.then(|| "veil".to_string()));
    let (err_r, err_w) = pipe2(OFlag::O_CLOEXEC).ctx(|| "pipe".into())?;

    let fuse_fd = match &mode {
        Mode::Fuse(_) => Some(open_fuse()?),
        _ => None,
    };
    stage(&mode)?;
    // The image is mounted and served before the fork: the child's copy of the mount
    // namespace has it, and the server is up when the child first needs it.
    if let (Some(fd), Some(warm)) = (fuse_fd, warm) {
        mount_image(&fd, id.inner_uid, id.inner_gid, &spec.image_name)?;
        let owner = Owner {
            uid: id.inner_uid,
            gid: id.inner_gid,
        };
        serve_image(warm, synth, owner, fd)?;
        if let Some(tx) = mounted.take() {
            let _ = tx.send(Path::new(STAGE).join(".image"));
        }
    }
    drop(mounted);
    debug_time("namespaces entered, image staged and served");
    // The launcher may hold secrets (issue: encrypted images): no core dumps, no ptrace
    // by other processes of the user. Set after the id maps, which need a dumpable writer.
    let _ = nix::sys::prctl::set_dumpable(false);
    let launcher_pid = nix::unistd::getpid();
    // What the container process needs to become the container's init once the action
    // runs (`init`): the launcher's own executable, and a way to tell whether the
    // launcher still lives that works from inside a PID namespace (a pidfd; Linux 5.3).
    let exe = open(
        "/proc/self/exe",
        OFlag::O_PATH | OFlag::O_CLOEXEC,
        Mode_::empty(),
    )
    .ok();
    let launcher_pidfd = process::pidfd_of_self();

    // The container's setup: its errors go to `err_w`; it ends in exec or `_exit`.
    let run_child = |err_w: OwnedFd| -> std::convert::Infallible {
        let mut err_slot = Some(err_w);
        let err = child(ChildSetup {
            err: &mut err_slot,
            launcher: launcher_pid,
            launcher_pidfd: launcher_pidfd.as_ref().map(|f| f.as_raw_fd()),
            exe: exe.as_ref().map(|f| f.as_raw_fd()),
            old_mask,
            hostname: hostname.clone(),
            uts: o.uts || o.hostname.is_some(),
            ipc: o.ipc,
            pid_ns: o.pid,
            locked_userns,
            steps: &steps,
            root: &root,
            start_dirs: &start_dirs,
            argv: &argv,
            direct_first,
        });
        if let Some(fd) = err_slot {
            let _ = fs::File::from(fd).write_all(err.to_string().as_bytes());
        }
        // SAFETY: _exit is always safe; it skips destructors and atexit handlers that
        // belong to the parent's state.
        unsafe { libc::_exit(255) }
    };
    // With --pid the container process is started as PID 1 of a new PID namespace.
    let clone_flags = if o.pid { libc::CLONE_NEWPID } else { 0 };
    // Without one, the launcher too adopts what the container leaves orphaned, in case
    // the container's init is killed on its own (`init` ends the rest in any other case).
    if !o.pid {
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
        .ctx(|| "starting the container process".into())?
    };
    drop(err_w);
    debug_time("container process started");
    let mut msg = String::new();
    let _ = fs::File::from(err_r).read_to_string(&mut msg);
    if !msg.is_empty() {
        let _ = nix::sys::wait::waitpid(child, None);
        return Err(LaunchError::Child(msg));
    }
    debug_time("container set up and exec'd");
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
    Ok(code)
}

/// The staging tmpfs with the image root mounted at `.image` and an empty `.host`.
fn stage(mode: &Mode) -> Result<()> {
    // Nothing we mount may propagate back to the host.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .ctx(|| "making the mount namespace private".into())?;
    // A directory is opened in the new namespace (a bind source must belong to it) and
    // before the staging tmpfs covers /tmp, where it may live.
    let dir_fd: Option<OwnedFd> = match mode {
        Mode::Directory(dir) => Some(
            open(
                dir.as_path(),
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode_::empty(),
            )
            .ctx(|| format!("opening {}", dir.display()))?,
        ),
        _ => None,
    };
    // Likewise the loop device is attached while the image's path is still visible.
    let loop_dev = match mode {
        Mode::Kernel(region) => Some(loopdev::attach(&region.file, region.offset, region.size)?),
        Mode::KernelCrypt(c) => Some(loopdev::attach(
            &c.volume.file,
            c.volume.offset,
            c.volume.size,
        )?),
        _ => None,
    };
    // dm-crypt over the loop device; removed again if anything below fails.
    let dm = match mode {
        Mode::KernelCrypt(c) => {
            let Some(dev) = &loop_dev else {
                return Err(LaunchError::Invalid("no loop device".into()));
            };
            Some(dmcrypt::map(&dev.path, &c.mapping)?)
        }
        _ => None,
    };
    mount(
        Some("veil"),
        STAGE,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755"),
    )
    .ctx(|| "mounting the staging tmpfs".into())?;
    for d in [".host", ".image"] {
        fs::create_dir(Path::new(STAGE).join(d))?;
    }
    let image = Path::new(STAGE).join(".image");
    match mode {
        Mode::Directory(_) => {
            let fd = dir_fd.as_ref().map(|f| f.as_raw_fd()).unwrap_or(-1);
            let src = format!("/proc/self/fd/{fd}");
            mount(
                Some(src.as_str()),
                &image,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .ctx(|| "binding the image directory".into())?;
            // Read-only, nosuid and nodev, down to any mount inside the directory.
            sys::set_attrs(&image, plan::Attrs::READ_ONLY, true)
                .ctx(|| "making the image read-only".into())?;
        }
        Mode::Kernel(_) => {
            let Some(dev) = loop_dev else { return Ok(()) };
            mount(
                Some(dev.path.as_path()),
                &image,
                Some("squashfs"),
                MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                None::<&str>,
            )
            .ctx(|| format!("mounting the image's squashfs from {}", dev.path.display()))?;
            // The mount holds the device now; autoclear detaches it with the mount.
        }
        Mode::KernelCrypt(_) => {
            let Some(dm) = dm else { return Ok(()) };
            let node = Path::new(STAGE).join(".dm");
            dm.mount_squashfs(&node, &image)?;
            // Deferred removal: the kernel deletes the mapping when the mount goes,
            // on every exit path, like the loop device's autoclear.
            dm.remove_deferred();
        }
        Mode::Fuse(_) => {} // mounted by the launcher once the child exists (`serve_image`)
    }
    Ok(())
}

struct ChildSetup<'a> {
    /// Where setup errors go (the action's, too, until it execs).
    err: &'a mut Option<OwnedFd>,
    /// The launcher's pid, to notice that it died before the death signal was armed.
    launcher: nix::unistd::Pid,
    /// A pidfd of the launcher, for the same from inside a PID namespace.
    launcher_pidfd: Option<RawFd>,
    /// The launcher's executable (O_PATH), which the container process execs to become
    /// the container's init.
    exe: Option<RawFd>,
    old_mask: nix::sys::signal::SigSet,
    hostname: Option<String>,
    uts: bool,
    ipc: bool,
    /// Started as PID 1 of a new PID namespace.
    pid_ns: bool,
    /// A user namespace nested in the launcher's (uid 0 inside): entered, with a new
    /// mount namespace, once the mounts are made, so that they are locked for the container.
    locked_userns: Option<RawFd>,
    steps: &'a [plan::Step],
    root: &'a Path,
    start_dirs: &'a [CString],
    argv: &'a action::ActionArgv,
    /// Start `exec`'s program directly, without the action shell (which would source
    /// nothing and only pass the environment on).
    direct_first: bool,
}

/// The container process: returns only on failure.
fn child(s: ChildSetup<'_>) -> LaunchError {
    match child_setup(s) {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

fn child_setup(s: ChildSetup<'_>) -> Result<std::convert::Infallible> {
    let role = if s.pid_ns {
        init::Role::PidOne
    } else {
        init::Role::Subreaper
    };
    // Die with the launcher, whatever kills it. As PID 1 that ends the whole PID
    // namespace; a subreaper is told instead (the signal stays pending until its init
    // loop takes it), and ends what the container started before it goes.
    let mut gone = nix::sys::signal::SigSet::empty();
    gone.add(init::LAUNCHER_GONE);
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&gone), None).ctx(|| "blocking signals".into())?;
    let death_signal = match role {
        init::Role::PidOne => Signal::SIGKILL,
        init::Role::Subreaper => init::LAUNCHER_GONE,
    };
    nix::sys::prctl::set_pdeathsig(death_signal).ctx(|| "prctl(PR_SET_PDEATHSIG)".into())?;
    if !launcher_alive(&s) {
        // The launcher died before the death signal was armed: nobody waits for us.
        // SAFETY: _exit ends this process only, without the launcher's destructors.
        unsafe { libc::_exit(1) }
    }
    // A subreaper finds the orphans it must end in the host's /proc.
    let proc_dir = match role {
        init::Role::Subreaper => {
            nix::sys::prctl::set_child_subreaper(true)
                .ctx(|| "prctl(PR_SET_CHILD_SUBREAPER)".into())?;
            Some(
                open(
                    "/proc",
                    OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
                    Mode_::empty(),
                )
                .ctx(|| "opening /proc".into())?,
            )
        }
        init::Role::PidOne => None,
    };
    let mut flags = CloneFlags::CLONE_NEWNS;
    if s.uts {
        flags |= CloneFlags::CLONE_NEWUTS;
    }
    if s.ipc {
        flags |= CloneFlags::CLONE_NEWIPC;
    }
    unshare(flags).ctx(|| "creating the container's namespaces".into())?;
    nix::unistd::pivot_root(STAGE, &Path::new(STAGE).join(".host"))
        .ctx(|| "entering the staging area".into())?;
    nix::unistd::chdir("/").ctx(|| "chdir /".into())?;
    sys::apply(s.steps, s.root)?;
    debug_time("child: mounts applied");
    sys::pivot_into(s.root)?;
    if let Some(h) = &s.hostname {
        nix::unistd::sethostname(h).ctx(|| format!("setting the hostname to {h}"))?;
    }
    if let Some(ns) = s.locked_userns {
        // A mount namespace copied into a less privileged user namespace has every
        // mount locked: the read-only ones cannot be made writable, none can be
        // unmounted to show what it covers, nosuid and nodev cannot be dropped — not
        // even with the capabilities the container has in its own user namespace.
        // SAFETY: the descriptor is the launcher's, open for the whole launch.
        let ns = unsafe { std::os::fd::BorrowedFd::borrow_raw(ns) };
        nix::sched::setns(ns, CloneFlags::CLONE_NEWUSER)
            .ctx(|| "entering the container's user namespace".into())?;
        unshare(CloneFlags::CLONE_NEWNS).ctx(|| "locking the container's mounts".into())?;
        debug_time("child: mounts locked");
    }
    for d in s.start_dirs {
        if nix::unistd::chdir(d.as_c_str()).is_ok() {
            break;
        }
    }
    // The action runs in a child, so that this process can stay as the container's init.
    let me = nix::unistd::getpid();
    let err_fd = s.err.as_ref().map_or(-1, |f| f.as_raw_fd());
    let setup = &s;
    // SAFETY: this process waits until the action has exec'd or exited; the action only
    // prepares and execs (or reports its failure on the error pipe and _exits).
    let action = unsafe {
        process::spawn_shared(
            0,
            Box::new(move || {
                let e = action_child(setup, me);
                let msg = e.to_string();
                libc::write(err_fd, msg.as_ptr().cast(), msg.len());
                libc::_exit(255)
            }),
        )
    }
    .ctx(|| "starting the action".into())?;
    debug_time("child: action started");
    // The init sees the launcher as its parent, except from inside a PID namespace.
    let launcher = match role {
        init::Role::PidOne => nix::unistd::Pid::from_raw(0),
        init::Role::Subreaper => nix::unistd::getppid(),
    };
    let proc_raw = proc_dir.as_ref().map(|f| f.as_raw_fd());
    let e = exec_init(s.exe, role, launcher, action, proc_raw);
    debug_note(&format!(
        "the container's init runs in the container process ({e}); signals sent to the launcher are not passed on"
    ));
    // Without the exec the launcher's thread stays suspended (it shares this memory)
    // until the container ends: the init runs here instead, and only the forwarding
    // of signals sent to the launcher is lost.
    s.err.take();
    let code = init::run(role, launcher, action, proc_raw);
    // SAFETY: leave without running destructors that belong to the launcher.
    unsafe { libc::_exit(code) }
}

/// Whether the launcher still lives (the death signal may have been armed too late).
fn launcher_alive(s: &ChildSetup<'_>) -> bool {
    if let Some(fd) = s.launcher_pidfd {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll on one valid pollfd; a pidfd is readable once the process ended.
        let ready = unsafe { libc::poll(&mut p, 1, 0) };
        return !(ready > 0 && p.revents & libc::POLLIN != 0);
    }
    s.pid_ns || nix::unistd::getppid() == s.launcher
}

/// Execs the launcher's executable as the container's init ([`init::ARGV0`]), with no
/// descriptor but /proc for a subreaper. Returns only on failure.
fn exec_init(
    exe: Option<RawFd>,
    role: init::Role,
    launcher: nix::unistd::Pid,
    action: nix::unistd::Pid,
    proc_dir: Option<RawFd>,
) -> nix::errno::Errno {
    let Some(exe) = exe else {
        return nix::errno::Errno::ENOENT;
    };
    process::cloexec_from(3);
    if let Some(p) = proc_dir {
        // SAFETY: fcntl on a descriptor this process owns.
        unsafe { libc::fcntl(p, libc::F_SETFD, 0) };
    }
    let argv = init::argv(role, launcher, action, proc_dir);
    let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    // SAFETY: NUL-terminated argv and envp arrays of valid C strings that outlive the
    // call; execveat returns only on failure.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            exe,
            c"".as_ptr(),
            ptrs.as_ptr(),
            envp.as_ptr(),
            libc::AT_EMPTY_PATH,
        );
    }
    let e = nix::errno::Errno::last();
    if let Some(p) = proc_dir {
        // SAFETY: as above.
        unsafe { libc::fcntl(p, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    e
}

/// The action's process: what is left to prepare, then the exec. Returns the error
/// when it could not exec.
fn action_child(s: &ChildSetup<'_>, parent: nix::unistd::Pid) -> LaunchError {
    match action_setup(s, parent) {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

fn action_setup(s: &ChildSetup<'_>, parent: nix::unistd::Pid) -> Result<std::convert::Infallible> {
    // Die with the init (in a PID namespace that is the kernel's doing anyway).
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).ctx(|| "prctl(PR_SET_PDEATHSIG)".into())?;
    if nix::unistd::getppid() != parent {
        // SAFETY: the init is gone; so is the container.
        unsafe { libc::_exit(1) }
    }
    // The launcher ignores SIGPIPE (Rust's runtime does), and an ignored signal stays
    // ignored across exec: the action gets the default, as from a shell.
    // SAFETY: this process has its own signal dispositions (no CLONE_SIGHAND).
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    nix::sys::prctl::set_no_new_privs().ctx(|| "prctl(PR_SET_NO_NEW_PRIVS)".into())?;
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&s.old_mask), None)
        .ctx(|| "restoring the signal mask".into())?;
    // Nothing the launcher holds (the FUSE device, the image, key descriptors, pipes)
    // nor anything its caller left open reaches the container.
    process::cloexec_from(3);
    debug_time("child: exec");
    let sh = CString::new("/bin/sh").expect("no NUL");
    let has_shell = nix::unistd::access(sh.as_c_str(), nix::unistd::AccessFlags::X_OK).is_ok();
    if let Some((argv, envp)) = &s.argv.direct
        && (s.direct_first || !has_shell)
    {
        let e = exec_on_path(argv, envp);
        if !has_shell {
            return Err(LaunchError::Invalid(format!(
                "cannot run {}: {e}",
                argv[0].to_string_lossy()
            )));
        }
        // Not found, not executable, a script without `#!`: the action shell tries
        // again and reports it as Apptainer's would (exit status 127 or 126).
    } else if !has_shell {
        return Err(LaunchError::Invalid(
            "the image has no /bin/sh, so only `exec` of a program works".into(),
        ));
    }
    let (argv, envp) = &s.argv.with_shell;
    let e = nix::unistd::execve(&argv[0], argv, envp).unwrap_err();
    Err(LaunchError::Invalid(format!(
        "cannot run /bin/sh in the image: {e}"
    )))
}

/// execve of `argv[0]`, searched on the PATH of `envp` (the container's, not the
/// launcher's, which execvpe would use) when it has no slash. Returns only on failure.
fn exec_on_path(argv: &[CString], envp: &[CString]) -> nix::errno::Errno {
    use nix::errno::Errno;
    let name = argv[0].as_bytes();
    if name.contains(&b'/') {
        return nix::unistd::execve(&argv[0], argv, envp).unwrap_err();
    }
    let path = path_of(envp);
    let mut failure = Errno::ENOENT;
    for dir in path.split(|&b| b == b':') {
        let dir: &[u8] = if dir.is_empty() { b"." } else { dir };
        let Ok(full) = CString::new([dir, b"/", name].concat()) else {
            continue;
        };
        match nix::unistd::execve(&full, argv, envp).unwrap_err() {
            // As the shell does: keep looking, and report "permission denied" if a
            // candidate existed but could not be run.
            Errno::EACCES => failure = Errno::EACCES,
            Errno::ENOENT | Errno::ENOTDIR => {}
            other => return other,
        }
    }
    failure
}

/// The PATH of a container environment block (the default when it has none).
fn path_of(envp: &[CString]) -> &[u8] {
    envp.iter()
        .find_map(|kv| kv.as_bytes().strip_prefix(b"PATH="))
        .unwrap_or(env::DEFAULT_PATH.as_bytes())
}

/// Whether the image has environment scripts (`/.singularity.d/env/*.sh`) for the
/// action shell to source. When unsure, yes.
fn has_env_scripts(root: &RootSource) -> bool {
    let is_script = |name: &[u8]| name.ends_with(b".sh") && !name.starts_with(b".");
    match root {
        RootSource::Directory(dir) => match fs::read_dir(dir.join(".singularity.d/env")) {
            Ok(entries) => entries
                .flatten()
                .any(|e| is_script(e.file_name().as_bytes())),
            Err(e) => e.kind() != std::io::ErrorKind::NotFound,
        },
        RootSource::Squashfs { fs, .. } => {
            use veil_fusefs::squashfs::{Error, FileKind};
            match fs.lookup_path(b"/.singularity.d/env") {
                Ok(a) if a.kind == FileKind::Directory => match fs.readdir(a.id, 0) {
                    Ok(mut entries) => entries.any(|e| e.map_or(true, |e| is_script(&e.name))),
                    Err(_) => true,
                },
                Err(Error::NotFound) => false,
                _ => true,
            }
        }
    }
}

/// Opens /dev/fuse, saying what to do when that is not possible.
fn open_fuse() -> Result<OwnedFd> {
    match open(
        "/dev/fuse",
        OFlag::O_RDWR | OFlag::O_CLOEXEC,
        Mode_::empty(),
    ) {
        Ok(fd) => Ok(fd),
        Err(nix::errno::Errno::ENOENT)
        | Err(nix::errno::Errno::ENODEV)
        | Err(nix::errno::Errno::ENXIO) => Err(LaunchError::NoFuse),
        Err(e) => Err(LaunchError::FuseAccess(std::io::Error::from(e))),
    }
}

/// Mounts the image with FUSE at the staging `.image`, on the launcher's `/dev/fuse`
/// descriptor. The kernel queues its INIT request; `serve_image` answers it.
fn mount_image(fd: &OwnedFd, uid: u32, gid: u32, image_name: &str) -> Result<()> {
    let target = Path::new(STAGE).join(".image");
    let data = veil_fusefs::fs::mount_data(fd.as_raw_fd(), uid, gid);
    let source = Path::new(image_name)
        .file_name()
        .map(|n| n.to_string_lossy().replace([' ', ',', '\\'], "_"))
        .unwrap_or_else(|| "veil".into());
    mount(
        Some(source.as_str()),
        &target,
        Some("fuse.veil"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_RDONLY,
        Some(data.as_str()),
    )
    .ctx(|| "mounting the image with FUSE".into())
}

/// Answers the kernel's INIT and starts the FUSE server threads for the mounted image.
fn serve_image(
    warm: Warm<crate::image::Source>,
    synth: Synthetic,
    owner: Owner,
    fd: OwnedFd,
) -> Result<()> {
    let threads = veil_fusefs::cores().clamp(2, 8);
    let image_fs = ImageFs::with_warm(warm, synth, owner);
    let session = veil_fusefs::fs::serve(image_fs, fd, threads)
        .map_err(|e| LaunchError::Invalid(format!("starting the FUSE server: {e}")))?;
    // The workers serve until the mount namespace goes away with the launcher; the
    // session handle must not be dropped (that would wait for them).
    std::mem::forget(session);
    Ok(())
}

/// A file inside a sandbox directory, read with the image's symlinks resolved inside it.
fn read_in_root(root: &Path, rel: &str) -> Option<String> {
    let p = sys::resolve_in_root(root, Path::new(rel)).ok()?;
    fs::read_to_string(p).ok()
}

/// The canonical path of a host file, if it exists (symlinks such as
/// /etc/resolv.conf -> /run/... are resolved on the host, where they mean something).
fn host_file(p: &str) -> Option<PathBuf> {
    Path::new(p).canonicalize().ok().filter(|c| c.is_file())
}
