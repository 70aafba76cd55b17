//! The helper's memory bound. The network client reads some answers whole (a token
//! endpoint's, a registry's error bodies) with no size limit of its own, so a hostile
//! or broken server could make it allocate without end. The helper's data segment is
//! therefore limited ([`limit`]), and an allocation that the limit refuses ends the
//! helper with an error reply ([`Capped`]) instead of Rust's abort and its stray line
//! on the user's terminal.
//!
//! The helper reads its request before the limit matters and writes its reply only at
//! the end, so standard output is empty whenever an allocation can fail.

use std::alloc::{GlobalAlloc, Layout, System};

/// The helper's whole data segment: transfers stream through buffers of a few MiB,
/// manifests are capped at 4 MiB.
pub const LIMIT: u64 = 512 << 20;

const REPLY: &[u8] = br#"{"error":"veil-registry: a registry's answer took more than the helper's memory limit (512 MiB at most; a broken or hostile server?)"}"#;

/// The data-segment limit the helper was started with, for the programs it starts.
static BEFORE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();

/// Limits the data segment (heap and private mappings) to [`LIMIT`].
pub fn limit() -> std::io::Result<()> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_DATA)?;
    let want = LIMIT.min(hard);
    if soft > want {
        setrlimit(Resource::RLIMIT_DATA, want, hard)?;
        let _ = BEFORE.set(soft);
    }
    Ok(())
}

/// Gives a program the helper starts (a Docker credential helper) the limit the
/// helper was started with, not the helper's own.
pub fn unlimited_child(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    let Some(&soft) = BEFORE.get() else {
        return;
    };
    // SAFETY: the closure runs in the forked child before exec and makes only the
    // getrlimit and setrlimit system calls, async-signal-safe, on its own limits.
    unsafe {
        cmd.pre_exec(move || {
            use nix::sys::resource::{Resource, getrlimit, setrlimit};
            let (_, hard) = getrlimit(Resource::RLIMIT_DATA)?;
            setrlimit(Resource::RLIMIT_DATA, soft.min(hard), hard)?;
            Ok(())
        });
    }
}

/// The system allocator, ending the process with the error reply where it fails.
pub struct Capped;

fn out_of_memory() -> ! {
    // A download's partial file goes first, as on a signal.
    super::interrupt::unlink_pending();
    // SAFETY: write and _exit are async-signal-safe, allocate nothing and touch only
    // the static reply.
    unsafe {
        libc::write(1, REPLY.as_ptr().cast(), REPLY.len());
        libc::_exit(1)
    }
}

// SAFETY: every call is passed to the system allocator unchanged; a null result ends
// the process instead of being returned, which callers may rely on less than on a
// pointer they may use.
unsafe impl GlobalAlloc for Capped {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's promises about `layout` hold for System as well.
        let p = unsafe { System.alloc(layout) };
        if p.is_null() {
            out_of_memory();
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for alloc.
        let p = unsafe { System.alloc_zeroed(layout) };
        if p.is_null() {
            out_of_memory();
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator, which is System's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from System (through this allocator); the caller's
        // promises about the sizes hold for System as well.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if p.is_null() {
            out_of_memory();
        }
        p
    }
}
