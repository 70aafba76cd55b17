//! Runs definition-file scripts: `%setup` on the host, `%post` and `%test` inside the
//! image being built, rootless. For `%post` a child process enters a new user and mount
//! namespace with the caller mapped to root (as `apptainer build --fakeroot` does
//! without subordinate id ranges) — or, when the whole build already runs as root of a
//! namespace with the caller's subordinate ids (see `subids`), only a mount namespace —
//! binds the host's /dev, /proc and /sys and its DNS files into the staging tree,
//! chroots into it and runs the script with `sh -e -x`. Nothing is mounted outside the
//! child's namespace, so nothing is left behind.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::mount::{MsFlags, mount};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, chdir, chroot, fork};

use super::error::{BuildError, Result};
use super::recipe::Script;

/// The default PATH of build scripts.
pub const BUILD_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Which script is running, for messages.
pub struct Context<'a> {
    pub file: &'a str,
    pub section: &'a str,
    /// Trace commands (`sh -x`), as `%post` and `%setup` do.
    pub trace: bool,
}

fn argv(script: &Script, trace: bool) -> Vec<CString> {
    let interp = script.interpreter.as_deref().unwrap_or("/bin/sh");
    let mut v = vec![interp.to_string(), "-e".into()];
    if trace {
        v.push("-x".into());
    }
    v.push("-c".into());
    v.push(script.body.clone());
    v.into_iter().filter_map(|s| CString::new(s).ok()).collect()
}

fn envp(vars: &[(String, String)]) -> Vec<CString> {
    vars.iter()
        .filter_map(|(k, v)| CString::new(format!("{k}={v}")).ok())
        .collect()
}

fn status_error(ctx: &Context<'_>, script: &Script, st: WaitStatus) -> Result<()> {
    let why = match st {
        WaitStatus::Exited(_, 0) => return Ok(()),
        WaitStatus::Exited(_, c) => format!("exit status {c}"),
        WaitStatus::Signaled(_, s, _) => format!("signal {s}"),
        other => format!("{other:?}"),
    };
    Err(BuildError::Script(format!(
        "{}:{}: %{} failed ({why})",
        ctx.file, script.line, ctx.section
    )))
}

/// Runs `%setup` on the host, as the caller, with `$APPTAINER_ROOTFS` set to the
/// staging tree.
pub fn run_setup(ctx: &Context<'_>, script: &Script, rootfs: &Path) -> Result<()> {
    let a = argv(script, ctx.trace);
    let mut cmd = std::process::Command::new(std::ffi::OsStr::from_bytes(a[0].as_bytes()));
    for x in &a[1..] {
        cmd.arg(std::ffi::OsStr::from_bytes(x.as_bytes()));
    }
    cmd.env("APPTAINER_ROOTFS", rootfs)
        .env("SINGULARITY_ROOTFS", rootfs);
    let st = cmd
        .status()
        .map_err(|e| BuildError::Script(format!("{}:{}: %setup: {e}", ctx.file, script.line)))?;
    if st.success() {
        return Ok(());
    }
    Err(BuildError::Script(format!(
        "{}:{}: %setup failed ({st})",
        ctx.file, script.line
    )))
}

fn bind(src: &str, dst: &Path, recursive: bool) -> nix::Result<()> {
    let mut flags = MsFlags::MS_BIND;
    if recursive {
        flags |= MsFlags::MS_REC;
    }
    mount(Some(src), dst, None::<&str>, flags, None::<&str>)
}

/// Kills this process when its parent dies.
fn die_with_parent() {
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes a signal number and has no memory effects.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    }
}

/// The child's side: user, mount and PID namespaces; the script runs as PID 1 of the
/// new PID namespace in a grandchild, so when it ends (or veil dies) every process it
/// started ends too. Returns only on error.
fn child(root: &Path, argv: &[CString], envp: &[CString]) -> String {
    die_with_parent();
    let uid = nix::unistd::getuid().as_raw();
    let gid = nix::unistd::getgid().as_raw();
    if uid != 0 {
        if let Err(e) = crate::launch::userns::enter(uid, gid, 0, 0) {
            return format!("cannot enter a user namespace: {e}");
        }
    } else if let Err(e) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS) {
        return format!("cannot make a mount namespace: {e}");
    }
    let pidns = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWPID).is_ok();
    if pidns {
        // SAFETY: this process is single-threaded (a fresh fork); the grandchild only
        // makes syscalls and execs or exits.
        match unsafe { fork() } {
            Err(e) => return format!("fork: {e}"),
            Ok(ForkResult::Child) => {}
            Ok(ForkResult::Parent { child }) => loop {
                // SAFETY (both arms): _exit ends this intermediate process with the
                // script's status, running no destructors of the forked parent's state.
                match waitpid(child, None) {
                    Ok(WaitStatus::Exited(_, c)) => unsafe { libc::_exit(c) },
                    Ok(WaitStatus::Signaled(_, s, _)) => unsafe { libc::_exit(128 + s as i32) },
                    Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => return format!("waitpid: {e}"),
                }
            },
        }
        die_with_parent();
    }
    if let Err(e) = mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    ) {
        return format!("making mounts private: {e}");
    }
    for d in ["dev", "sys", "proc"] {
        let p = root.join(d);
        let _ = std::fs::create_dir_all(&p);
        // A PID namespace of our own gets its own /proc; else the host's is bound.
        if d == "proc"
            && pidns
            && mount(
                Some("proc"),
                &p,
                Some("proc"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                None::<&str>,
            )
            .is_ok()
        {
            continue;
        }
        if let Err(e) = bind(&format!("/{d}"), &p, true) {
            return format!("binding /{d}: {e}");
        }
    }
    for f in ["etc/resolv.conf", "etc/hosts"] {
        let host = Path::new("/").join(f);
        let p = root.join(f);
        if host.exists() && p.is_file() && !p.is_symlink() {
            let _ = bind(&host.to_string_lossy(), &p, false);
        }
    }
    if let Err(e) = chroot(root) {
        return format!("chroot: {e}");
    }
    if let Err(e) = chdir("/") {
        return format!("chdir: {e}");
    }
    match nix::unistd::execve(&argv[0], argv, envp) {
        Err(e) => format!("cannot run {}: {e}", argv[0].to_string_lossy()),
        Ok(never) => match never {},
    }
}

/// Runs a script inside `root` as root of a new user namespace.
pub fn run_in_root(
    ctx: &Context<'_>,
    script: &Script,
    root: &Path,
    extra_env: &[(String, String)],
) -> Result<()> {
    let a = argv(script, ctx.trace);
    let mut vars = vec![
        ("PATH".to_string(), BUILD_PATH.to_string()),
        ("HOME".into(), "/root".into()),
        ("LANG".into(), "C".into()),
        ("APPTAINER_ROOTFS".into(), "/".into()),
        (
            "APPTAINER_ENVIRONMENT".into(),
            "/.singularity.d/env/91-environment.sh".into(),
        ),
        (
            "SINGULARITY_ENVIRONMENT".into(),
            "/.singularity.d/env/91-environment.sh".into(),
        ),
    ];
    if let Ok(t) = std::env::var("TERM") {
        vars.push(("TERM".into(), t));
    }
    vars.extend(extra_env.iter().cloned());
    let e = envp(&vars);
    // SAFETY: the build is single-threaded here (the squashfs writer's workers only
    // exist while an image is being written); the child only makes syscalls, formats a
    // message and exits or execs.
    match unsafe { fork() } {
        Err(e) => Err(BuildError::Script(format!("fork: {e}"))),
        Ok(ForkResult::Child) => {
            super::cleanup::unblock_in_child();
            let msg = child(root, &a, &e);
            eprintln!("veil build: %{}: {msg}", ctx.section);
            // SAFETY: _exit ends the child without running the parent's destructors.
            unsafe { libc::_exit(127) }
        }
        Ok(ForkResult::Parent { child }) => loop {
            super::cleanup::set_child(child.as_raw());
            match waitpid(child, None) {
                Ok(st @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => {
                    super::cleanup::set_child(0);
                    while super::cleanup::interrupted() {
                        // The cleanup thread is removing the temporaries and exits.
                        std::thread::park();
                    }
                    return status_error(ctx, script, st);
                }
                Ok(_) => continue,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    while super::cleanup::interrupted() {
                        std::thread::park();
                    }
                    return Err(BuildError::Script(format!("waitpid: {e}")));
                }
            }
        },
    }
}
