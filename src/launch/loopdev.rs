//! Loop devices for the privileged fast path: a read-only, auto-clearing loop device
//! over a region of the image file, set up with ioctls (no losetup binary).

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use super::error::{LaunchError, Result};

const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;

#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// An attached loop device. With autoclear, the kernel detaches it when the last user
/// (the mount) goes away, so dropping this handle after mounting is enough.
pub struct LoopDevice {
    pub path: PathBuf,
    _file: File,
}

fn io_err(step: &'static str, path: &Path, err: std::io::Error) -> LaunchError {
    LaunchError::LoopDevice {
        step,
        path: path.to_path_buf(),
        err,
    }
}

/// Attaches `[offset, offset + size)` of the opened image file `backing` to a free
/// loop device, read-only. The descriptor is the one the image was verified and
/// read through: the path is not opened again.
pub fn attach(backing: &File, offset: u64, size: u64) -> Result<LoopDevice> {
    let ctl = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/loop-control")
        .map_err(|e| io_err("opening", Path::new("/dev/loop-control"), e))?;
    // Another process may take the device we were offered: try a few times.
    for _ in 0..8 {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number.
        let n = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE as libc::Ioctl) };
        if n < 0 {
            return Err(io_err(
                "asking for a free device on",
                Path::new("/dev/loop-control"),
                std::io::Error::last_os_error(),
            ));
        }
        let path = PathBuf::from(format!("/dev/loop{n}"));
        let dev = OpenOptions::new()
            .read(true)
            .open(&path)
            .map_err(|e| io_err("opening", &path, e))?;
        let cfg = LoopConfig {
            fd: backing.as_raw_fd() as u32,
            block_size: 0,
            info: LoopInfo64 {
                lo_device: 0,
                lo_inode: 0,
                lo_rdevice: 0,
                lo_offset: offset,
                lo_sizelimit: size,
                lo_number: 0,
                lo_encrypt_type: 0,
                lo_encrypt_key_size: 0,
                lo_flags: LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR,
                lo_file_name: [0; 64],
                lo_crypt_name: [0; 64],
                lo_encrypt_key: [0; 32],
                lo_init: [0; 2],
            },
            reserved: [0; 8],
        };
        // SAFETY: `cfg` is a fully initialised loop_config that outlives the call; the
        // kernel only reads it.
        let r = unsafe {
            libc::ioctl(
                dev.as_raw_fd(),
                LOOP_CONFIGURE as libc::Ioctl,
                &cfg as *const LoopConfig,
            )
        };
        if r == 0 {
            return Ok(LoopDevice { path, _file: dev });
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EBUSY) {
            return Err(io_err("configuring", &path, e));
        }
    }
    Err(LaunchError::NoFreeLoopDevice)
}
