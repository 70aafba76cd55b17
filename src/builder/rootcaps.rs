//! What a real-root build's scripts keep of root's power. Without a user namespace,
//! `%post` would hold every capability over the host's kernel: it could load modules,
//! mount the host's disks, or write a sysctl such as `kernel.core_pattern` and so run
//! a command as host root. A build script needs root's power over the files of the
//! tree it builds (owners, modes, set-id bits) and little else, so it keeps the set
//! container engines give a container by default, less CAP_MKNOD (there is no device
//! cgroup here to stop a made device node from reaching a host disk); `/proc/sys` and
//! `/sys` are read-only for it, since plain uid 0 may write many of their files
//! without any capability, and it gets a UTS namespace of its own.

use nix::errno::Errno;

use super::isolate::SandboxError;

/// CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_FOWNER, CAP_FSETID, CAP_KILL, CAP_SETGID,
/// CAP_SETUID, CAP_SETPCAP, CAP_NET_BIND_SERVICE, CAP_NET_RAW, CAP_SYS_CHROOT,
/// CAP_AUDIT_WRITE, CAP_SETFCAP.
const KEEP: &[u32] = &[0, 1, 3, 4, 5, 6, 7, 8, 10, 13, 18, 29, 31];

pub use crate::support::userns::real_root;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Drops every capability but [`KEEP`] from the bounding set (so no later exec gets
/// one back), from the effective, permitted and inheritable sets, and from the ambient
/// set. Runs in the forked child that is about to exec the script.
///
/// The calls are libc's: nix (0.31) wraps neither PR_CAPBSET_DROP, PR_CAP_AMBIENT
/// nor capset.
pub fn drop_to_build_set() -> Result<(), SandboxError> {
    let last: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40);
    for cap in 0..=last {
        if KEEP.contains(&cap) {
            continue;
        }
        // SAFETY: prctl with PR_CAPBSET_DROP takes plain integers and touches no memory.
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        if rc != 0 && Errno::last() != Errno::EINVAL {
            return Err(SandboxError::DropCapability {
                cap,
                err: Errno::last(),
            });
        }
    }
    // SAFETY: prctl with PR_CAP_AMBIENT takes plain integers and touches no memory.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        );
    }
    let mut data = [CapData::default(); 2];
    for &cap in KEEP {
        let (i, bit) = ((cap / 32) as usize, 1u32 << (cap % 32));
        data[i].effective |= bit;
        data[i].permitted |= bit;
    }
    let header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    // SAFETY: capset reads one header and, for version 3, two data structs, which
    // `header` and `data` are (both #[repr(C)] as the kernel lays them out); it writes
    // nothing back.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &header as *const CapHeader, data.as_ptr()) };
    if rc != 0 {
        return Err(SandboxError::Call {
            op: "capset",
            err: Errno::last(),
        });
    }
    Ok(())
}
