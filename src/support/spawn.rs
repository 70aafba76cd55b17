//! Starting a process that shares the caller's memory until it execs (a leaf: the
//! launcher's container process and the user-namespace helper both use it).

use nix::unistd::Pid;

/// Starts `f` in a new process that shares this one's memory until it calls exec or
/// exits, while the calling thread waits (`CLONE_VM | CLONE_VFORK`, as posix_spawn does).
/// `flags` are further clone flags: new namespaces for the child (`CLONE_NEWPID` makes
/// it PID 1 of a new PID namespace, `CLONE_NEWUSER`), or `CLONE_FILES`.
///
/// A fork copies the launcher's page tables, and until the child execs every page the
/// FUSE workers or the warmer write to is copied once more on its first write: a fork
/// of the serving launcher cost about 0.3 ms, and the copies came on top. Sharing the
/// memory costs neither. `f` must end in exec or `_exit`, never return.
///
/// # Safety
/// The child runs on its own stack but with the calling thread's thread-local state
/// (errno, malloc's per-thread cache): that thread is suspended until the child execs
/// or exits, so nothing else uses them meanwhile. Other threads keep running beside the
/// child and must not depend on the calling thread's progress to do so.
pub unsafe fn spawn_shared(
    flags: libc::c_int,
    f: Box<dyn FnOnce() -> std::convert::Infallible + '_>,
) -> nix::Result<Pid> {
    // Room for the child's setup code (mount steps, error formatting); only the pages it
    // touches are ever allocated.
    const STACK: usize = 8 << 20;
    const GUARD: usize = 64 << 10;
    // The call below returns an uninhabited type, which the lint takes for dead code.
    #[allow(unreachable_code)]
    extern "C" fn trampoline(arg: *mut libc::c_void) -> libc::c_int {
        // SAFETY: `arg` is the `Box` leaked below, read once, by this child only; the
        // parent does not touch it until the child has exec'd or exited.
        let f =
            unsafe { Box::from_raw(arg.cast::<Box<dyn FnOnce() -> std::convert::Infallible>>()) };
        match f() {}
    }
    // SAFETY: an anonymous private mapping, checked for failure; unmapped below once the
    // child no longer runs on it.
    let stack = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            STACK,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_STACK,
            -1,
            0,
        )
    };
    if stack == libc::MAP_FAILED {
        return Err(nix::errno::Errno::last());
    }
    // A guard page at the bottom: an overflow faults instead of writing into whatever
    // mapping lies below.
    // SAFETY: the first page of the mapping just made, which nothing uses yet.
    if unsafe { libc::mprotect(stack, GUARD, libc::PROT_NONE) } != 0 {
        let err = nix::errno::Errno::last();
        // SAFETY: the mapping made above, unused.
        unsafe { libc::munmap(stack, STACK) };
        return Err(err);
    }
    // SAFETY: only the lifetime bound of the trait object changes (same layout). The
    // child runs `f` only while this function waits (CLONE_VFORK), so whatever `f`
    // borrows outlives every use of it.
    let f: Box<dyn FnOnce() -> std::convert::Infallible> = unsafe { std::mem::transmute(f) };
    let arg = Box::into_raw(Box::new(f));
    // SAFETY: the stack is a fresh mapping of STACK bytes, its top 16-byte aligned; with
    // CLONE_VFORK this thread resumes only after the child has exec'd or exited, so the
    // stack and `arg` are unused by then.
    let pid = unsafe {
        let top = (stack as usize + STACK) & !15;
        libc::clone(
            trampoline,
            top as *mut libc::c_void,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD | flags,
            arg.cast(),
        )
    };
    let err = nix::errno::Errno::last();
    // SAFETY: the child is past exec or gone (or was never started): nothing runs on the
    // stack any more.
    unsafe { libc::munmap(stack, STACK) };
    if pid < 0 {
        // SAFETY: the child never ran, so the box is still ours.
        drop(unsafe { Box::from_raw(arg) });
        return Err(err);
    }
    Ok(Pid::from_raw(pid))
}

/// The number of threads of this process, from /proc.
pub fn thread_count() -> Option<usize> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    after.split(' ').nth(17)?.parse().ok()
}

/// Proof that this process had a single thread when it was made: a fork copies only
/// the calling thread, and another's locks would stay held in the child forever.
/// Whoever holds one starts no thread before [`SingleThreaded::fork`] (it is not Send,
/// so it stays on the thread that checked).
pub struct SingleThreaded(std::marker::PhantomData<*const ()>);

impl SingleThreaded {
    /// Checks, from /proc (so before any change of mount namespace hides it).
    pub fn check() -> std::io::Result<SingleThreaded> {
        if thread_count() == Some(1) {
            Ok(SingleThreaded(std::marker::PhantomData))
        } else {
            Err(std::io::Error::other(
                "this process has more than one thread and cannot fork",
            ))
        }
    }

    /// Forks: `None` in the child, the child's pid in the parent.
    pub fn fork(&self) -> std::io::Result<Option<Pid>> {
        // SAFETY: the process has a single thread (`check`, and the holder starts none),
        // so the child's copy of the memory is consistent (no lock is held by a thread
        // that does not exist in it) and it may run any code.
        match unsafe { nix::unistd::fork() }.map_err(std::io::Error::from)? {
            nix::unistd::ForkResult::Child => Ok(None),
            nix::unistd::ForkResult::Parent { child } => Ok(Some(child)),
        }
    }
}

/// Forks this process, which must have a single thread (checked).
pub fn fork_single_threaded() -> std::io::Result<Option<Pid>> {
    SingleThreaded::check()?.fork()
}

/// Makes the program `cmd` starts die (SIGKILL) when the process that started it does,
/// so that no helper outlives veil however veil ends.
pub fn die_with_parent(cmd: &mut std::process::Command) {
    end_with_parent(cmd, nix::sys::signal::Signal::SIGKILL);
}

/// Sends the program `cmd` starts `sig` when the thread that started it ends (the
/// kernel ties the signal to that thread; veil starts helpers from its main thread).
/// A parent already gone by the time the child is set up is not waited for: the start
/// fails instead. (Only within one PID namespace: across one, getppid says 0.)
pub fn end_with_parent(cmd: &mut std::process::Command, sig: nix::sys::signal::Signal) {
    use std::os::unix::process::CommandExt;
    let parent = nix::unistd::getpid();
    // SAFETY: the closure runs in the forked child before exec and only makes the
    // prctl and getppid system calls, which are async-signal-safe and touch no memory
    // of the parent's.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(sig).map_err(std::io::Error::from)?;
            if nix::unistd::getppid() != parent {
                // (ESRCH: no message, as nothing may allocate here.)
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::wait::{WaitStatus, waitpid};
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn shared_spawn_runs_in_this_memory_and_passes_the_exit_status_on() {
        // A value the child writes is seen by the parent: the memory is shared, not
        // copied (a fork would leave it unchanged here).
        let seen = AtomicU32::new(0);
        // SAFETY: the child touches only `seen` and leaves through _exit.
        let pid = unsafe {
            spawn_shared(
                0,
                Box::new(|| {
                    seen.store(std::process::id(), Ordering::SeqCst);
                    libc::_exit(42)
                }),
            )
        }
        .expect("spawn");
        // The parent resumed only after the child was gone (CLONE_VFORK), so the store
        // happened before this load.
        assert_eq!(seen.load(Ordering::SeqCst), pid.as_raw() as u32);
        assert_eq!(waitpid(pid, None).unwrap(), WaitStatus::Exited(pid, 42));
    }

    #[test]
    fn shared_spawn_child_can_exec() {
        let prog = std::ffi::CString::new("/bin/sh").unwrap();
        let args = [
            prog.clone(),
            std::ffi::CString::new("-c").unwrap(),
            std::ffi::CString::new("exit 3").unwrap(),
        ];
        // SAFETY: the child only execs, or leaves through _exit if it cannot.
        let pid = unsafe {
            spawn_shared(
                0,
                Box::new(|| {
                    let _ = nix::unistd::execv(&prog, &args);
                    libc::_exit(99)
                }),
            )
        }
        .expect("spawn");
        assert_eq!(waitpid(pid, None).unwrap(), WaitStatus::Exited(pid, 3));
    }
}
