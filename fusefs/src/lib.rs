//! veil-fusefs: bytes in, mounted tree out.
//!
//! This crate knows nothing about SIF, the command line or namespaces. It stacks
//! positional-read sources ([`source::ReadAt`]): a slice of a file, a LUKS2
//! decrypting view ([`luks2`]) or gocryptfs one ([`gocryptfs`]), and a squashfs
//! reader ([`squashfs`]) on top, served to the kernel by the FUSE server
//! ([`fuse`]). The AES kernels both encrypted formats share are in [`cipher`], and
//! the guarded memory their keys live in, with passphrases, in [`secret`].

// No function longer than clippy.toml's threshold (100 lines) outside tests.
#![warn(clippy::too_many_lines)]

// Faster small copies than musl's for the static build (see the module).
pub mod cipher;
#[cfg(all(target_env = "musl", target_arch = "x86_64"))]
mod fastmem;
pub mod fuse;
pub mod gocryptfs;
pub mod luks2;
mod memory;
pub mod secret;
pub mod source;
pub mod squashfs;

// The file mapping kept at its own path, which other crates and docs name.
pub use memory::mapping;

/// The number of cores this process may use (its CPU affinity and cgroup quota), asked
/// once: the preloader and the FUSE server both size their threads by it, and asking costs
/// a handful of system calls on the way to a container's start.
pub fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}
