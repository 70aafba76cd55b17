//! Runs definition-file scripts: `%setup` on the host, `%post` and `%test` inside the
//! image being built, rootless. For `%post` a child process enters a mount and PID
//! namespace of its own inside the build's user namespace (made at the start of an
//! unprivileged build, see `subids`, with the caller as root as `apptainer build
//! --fakeroot` does) — or, for real root, just those two — and [`super::isolate`]
//! makes the staging tree its root with `pivot_root`, the host's root detached; the
//! script runs with `sh -e -x`, with stdin, stdout and stderr as its only
//! descriptors and an environment of its own. Nothing is mounted outside the child's
//! namespace, so nothing is left behind.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;

use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, fork};

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
    Err(script_error(ctx, script, format!("failed ({why})")))
}

fn script_error(ctx: &Context<'_>, script: &Script, why: String) -> BuildError {
    BuildError::Script {
        file: ctx.file.to_string(),
        line: script.line,
        section: ctx.section.to_string(),
        why,
    }
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
    for v in secret_variables() {
        cmd.env_remove(v);
    }
    // SAFETY: the closure runs in the forked child before exec and only makes system
    // calls (close_range; on kernels before 5.11 fcntl over a /proc/self/fd listing,
    // which allocates: the only other thread then, the cleanup thread, holds no lock
    // while it waits for a signal).
    unsafe {
        cmd.pre_exec(|| {
            super::isolate::close_on_exec_above_stderr().map_err(std::io::Error::other)
        });
    }
    let st = cmd
        .status()
        .map_err(|e| script_error(ctx, script, format!("could not start: {e}")))?;
    if st.success() {
        return Ok(());
    }
    Err(script_error(ctx, script, format!("failed ({st})")))
}

/// The variables that carry a key's secret (a passphrase, a private key's text):
/// never passed to a script. (The peers' `*_ENCRYPTION_PEM_PATH` only names a file.)
fn secret_variables() -> Vec<String> {
    crate::crypt::source::ENV_PREFIXES
        .iter()
        .flat_map(|p| {
            [
                format!("{p}ENCRYPTION_PASSPHRASE"),
                format!("{p}ENCRYPTION_PEM_DATA"),
            ]
        })
        .collect()
}

/// Kills this process when its parent dies.
fn die_with_parent() {
    // It cannot fail for a valid signal; the result was never used.
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
}

/// Makes the mount namespace the script's root will live in: only that, for real root
/// and in the build's own user namespace; a user namespace of its own for a caller of
/// `build` that did not make one first (possible only while the process is dumpable,
/// that is, holds no key).
fn namespaces() -> Result<(), String> {
    use nix::sched::{CloneFlags, unshare};
    if super::rootcaps::real_root() {
        return unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS)
            .map_err(|e| format!("cannot make mount and UTS namespaces: {e}"));
    }
    if nix::unistd::getuid().is_root() {
        return unshare(CloneFlags::CLONE_NEWNS)
            .map_err(|e| format!("cannot make a mount namespace: {e}"));
    }
    if let Some(e) = super::subids::entry_error() {
        return Err(format!("cannot enter a user namespace: {e}"));
    }
    if !nix::sys::prctl::get_dumpable().unwrap_or(false) {
        return Err(
            "no user namespace was made before the build read its key, and a process holding one cannot make it (subids::enter_single)"
                .into(),
        );
    }
    let uid = nix::unistd::getuid().as_raw();
    let gid = nix::unistd::getgid().as_raw();
    crate::support::userns::enter(uid, gid, 0, 0)
        .map_err(|e| format!("cannot enter a user namespace: {e}"))
}

/// The child's side: mount and PID namespaces; the script runs as PID 1 of the new PID
/// namespace in a grandchild, so when it ends (or veil dies) every process it started
/// ends too. Returns only on error.
fn child(root: &Path, argv: &[CString], envp: &[CString]) -> String {
    die_with_parent();
    if let Err(e) = namespaces() {
        return e;
    }
    // Required: a /proc of the host's PID namespace would show the build process.
    if let Err(e) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWPID) {
        return format!("cannot make a PID namespace: {e}");
    }
    // SAFETY: this process is single-threaded (a fresh fork); the grandchild only
    // makes syscalls and execs or exits.
    match unsafe { fork() } {
        Err(e) => return format!("fork: {e}"),
        Ok(ForkResult::Child) => {}
        Ok(ForkResult::Parent { child }) => {
            super::isolate::close_above_stderr();
            loop {
                let code = match waitpid(child, None) {
                    Ok(WaitStatus::Exited(_, c)) => c,
                    Ok(WaitStatus::Signaled(_, s, _)) => 128 + s as i32,
                    Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => return format!("waitpid: {e}"),
                };
                // SAFETY: _exit ends this intermediate process with the script's
                // status, running no destructors of the forked parent's state.
                unsafe { libc::_exit(code) }
            }
        }
    }
    die_with_parent();
    let real_root = super::rootcaps::real_root();
    if let Err(e) = super::isolate::enter_root(&crate::support::sys::RealSys, root, real_root) {
        return e;
    }
    if let Err(e) = super::isolate::close_on_exec_above_stderr() {
        return e;
    }
    if super::rootcaps::real_root()
        && let Err(e) = super::rootcaps::drop_to_build_set()
    {
        return e;
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
        Err(e) => Err(script_error(
            ctx,
            script,
            format!("could not start: fork: {e}"),
        )),
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
                    return Err(script_error(
                        ctx,
                        script,
                        format!("could not be waited for: waitpid: {e}"),
                    ));
                }
            }
        },
    }
}
