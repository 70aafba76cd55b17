//! `veil-registry`: veil's registry helper. `veil` runs it for everything that talks
//! to a registry (push, pull, the pulls of run and build, login); it is not a command
//! of its own. See `veil::registry::remote`.

// No function longer than clippy.toml's threshold (100 lines) outside tests.
#![warn(clippy::too_many_lines)]

// A server's answer that outgrows the helper's memory limit ends it with an error
// reply (veil::registry::remote::memory).
#[global_allocator]
static ALLOCATOR: veil::registry::remote::memory::Capped = veil::registry::remote::memory::Capped;

fn main() -> std::process::ExitCode {
    veil::registry::remote::main()
}
