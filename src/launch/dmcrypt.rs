//! The privileged fast path for encrypted images: a dm-crypt mapping over the loop
//! device that holds the LUKS2 volume, made with the device-mapper ioctls directly
//! (no cryptsetup binary, no udev), and the kernel's squashfs on top.
//!
//! The volume key goes to the kernel in the table line only, with
//! DM_SECURE_DATA_FLAG so the kernel wipes its copy of the ioctl buffer; ours is
//! zeroized. After the mount the mapping is removed with DM_DEFERRED_REMOVE: the
//! kernel deletes it when the mount (its last user) goes away, whatever way the
//! container ends, as autoclear does for the loop device below it.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::Path;

use veil_fusefs::luks2::KernelMapping;
use zeroize::Zeroizing;

use super::error::{LaunchError, Result};

const CONTROL: &str = "/dev/mapper/control";

/// `struct dm_ioctl` is 312 bytes; the ioctl numbers are _IOWR(0xfd, nr, struct dm_ioctl).
const DM_IOCTL_LEN: usize = 312;
const fn dm_ioctl_nr(nr: u32) -> libc::c_ulong {
    ((3u32 << 30) | ((DM_IOCTL_LEN as u32) << 16) | (0xfd << 8) | nr) as libc::c_ulong
}
const DM_VERSION: libc::c_ulong = dm_ioctl_nr(0);
const DM_DEV_CREATE: libc::c_ulong = dm_ioctl_nr(3);
const DM_DEV_REMOVE: libc::c_ulong = dm_ioctl_nr(4);
const DM_DEV_SUSPEND: libc::c_ulong = dm_ioctl_nr(6);
const DM_TABLE_LOAD: libc::c_ulong = dm_ioctl_nr(9);

const DM_READONLY_FLAG: u32 = 1 << 0;
const DM_SECURE_DATA_FLAG: u32 = 1 << 15;
const DM_DEFERRED_REMOVE: u32 = 1 << 17;

/// Field offsets in `struct dm_ioctl` (linux/dm-ioctl.h).
const OFF_DATA_SIZE: usize = 12;
const OFF_DATA_START: usize = 16;
const OFF_TARGET_COUNT: usize = 20;
const OFF_FLAGS: usize = 28;
const OFF_DEV: usize = 40;
const OFF_NAME: usize = 48;
const NAME_LEN: usize = 128;
const OFF_UUID: usize = 176;
const UUID_LEN: usize = 129;
/// `struct dm_target_spec`: sector_start u64, length u64, status i32, next u32, type[16].
const TARGET_SPEC_LEN: usize = 40;

fn err(step: &'static str, err: std::io::Error) -> LaunchError {
    LaunchError::DmCrypt { step, err }
}

fn control() -> std::io::Result<File> {
    OpenOptions::new().read(true).write(true).open(CONTROL)
}

/// An ioctl buffer: the header, then `extra` bytes of payload. It may carry the key.
fn buffer(name: &str, flags: u32, extra: usize) -> Zeroizing<Vec<u8>> {
    let len = (DM_IOCTL_LEN + extra).next_multiple_of(8);
    let mut b = Zeroizing::new(vec![0u8; len]);
    b[0..4].copy_from_slice(&4u32.to_ne_bytes()); // interface version 4.0.0
    b[OFF_DATA_SIZE..OFF_DATA_SIZE + 4].copy_from_slice(&(len as u32).to_ne_bytes());
    b[OFF_DATA_START..OFF_DATA_START + 4].copy_from_slice(&(DM_IOCTL_LEN as u32).to_ne_bytes());
    b[OFF_FLAGS..OFF_FLAGS + 4].copy_from_slice(&flags.to_ne_bytes());
    let n = name.len().min(NAME_LEN - 1);
    b[OFF_NAME..OFF_NAME + n].copy_from_slice(&name.as_bytes()[..n]);
    b
}

fn ioctl(ctl: &File, req: libc::c_ulong, buf: &mut [u8]) -> std::io::Result<()> {
    // SAFETY: `buf` is a dm_ioctl header followed by its payload, at least
    // DM_IOCTL_LEN bytes long and as long as its data_size field says; the kernel
    // reads and writes only within data_size.
    let r = unsafe { libc::ioctl(ctl.as_raw_fd(), req as libc::Ioctl, buf.as_mut_ptr()) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Whether device-mapper answers here (the CI machine and many containers lack it).
pub fn available() -> Result<()> {
    let ctl = control().map_err(|e| LaunchError::io("opening", CONTROL, e))?;
    let mut b = buffer("", 0, 0);
    ioctl(&ctl, DM_VERSION, &mut b).map_err(|e| err("asking for its version", e))
}

/// A live dm-crypt mapping. Dropped without [`DmDevice::remove_deferred`], it is
/// removed at once (the error paths before the mount).
pub struct DmDevice {
    ctl: File,
    name: String,
    major: u32,
    minor: u32,
    armed: bool,
}

/// Maps the LUKS2 volume on `loop_dev` read-only with dm-crypt.
pub fn map(loop_dev: &Path, m: &KernelMapping) -> Result<DmDevice> {
    let ctl = control().map_err(|e| err("opening /dev/mapper/control", e))?;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let name = format!("veil-{id}");
    let mut b = buffer(&name, 0, 0);
    let uuid = format!("VEIL-CRYPT-{id}");
    b[OFF_UUID..OFF_UUID + uuid.len().min(UUID_LEN - 1)].copy_from_slice(uuid.as_bytes());
    ioctl(&ctl, DM_DEV_CREATE, &mut b).map_err(|e| err("creating the device", e))?;
    let dev = u64::from_ne_bytes(b[OFF_DEV..OFF_DEV + 8].try_into().unwrap_or_default());
    let mut d = DmDevice {
        ctl,
        name,
        major: libc::major(dev),
        minor: libc::minor(dev),
        armed: true,
    };
    d.load_and_resume(loop_dev, m)?;
    Ok(d)
}

impl DmDevice {
    fn load_and_resume(&mut self, loop_dev: &Path, m: &KernelMapping) -> Result<()> {
        use std::os::unix::fs::MetadataExt;
        let rdev = std::fs::metadata(loop_dev)
            .map_err(|e| LaunchError::io("inspecting", loop_dev, e))?
            .rdev();
        let params = m.crypt_params(&format!("{}:{}", libc::major(rdev), libc::minor(rdev)));
        let extra = TARGET_SPEC_LEN + params.len() + 1;
        let mut b = buffer(&self.name, DM_READONLY_FLAG | DM_SECURE_DATA_FLAG, extra);
        b[OFF_TARGET_COUNT..OFF_TARGET_COUNT + 4].copy_from_slice(&1u32.to_ne_bytes());
        let spec = DM_IOCTL_LEN;
        b[spec + 8..spec + 16].copy_from_slice(&(m.len / 512).to_ne_bytes());
        let next = (TARGET_SPEC_LEN + params.len() + 1).next_multiple_of(8) as u32;
        b[spec + 20..spec + 24].copy_from_slice(&next.to_ne_bytes());
        b[spec + 24..spec + 29].copy_from_slice(b"crypt");
        let p = spec + TARGET_SPEC_LEN;
        b[p..p + params.len()].copy_from_slice(params.as_slice());
        ioctl(&self.ctl, DM_TABLE_LOAD, &mut b).map_err(|e| {
            err(
                "loading the crypt table (is the dm-crypt module available? --fuse decrypts in user space instead)",
                e,
            )
        })?;
        // Resume = DM_DEV_SUSPEND without DM_SUSPEND_FLAG: makes the table live.
        let mut b = buffer(&self.name, 0, 0);
        ioctl(&self.ctl, DM_DEV_SUSPEND, &mut b).map_err(|e| err("activating the table", e))
    }

    /// The device number of the mapping, for its node in the staging area.
    pub fn dev(&self) -> (u32, u32) {
        (self.major, self.minor)
    }

    /// Asks the kernel to remove the mapping as soon as nothing holds it open.
    pub fn remove_deferred(mut self) {
        let mut b = buffer(&self.name, DM_DEFERRED_REMOVE, 0);
        if ioctl(&self.ctl, DM_DEV_REMOVE, &mut b).is_ok() {
            self.armed = false;
        }
        // Otherwise (a kernel without deferred removal) Drop tries a plain removal,
        // which fails while mounted; the mapping then outlives the run. Rare: deferred
        // removal exists since Linux 3.13.
    }
}

impl Drop for DmDevice {
    fn drop(&mut self) {
        if self.armed {
            let mut b = buffer(&self.name, 0, 0);
            let _ = ioctl(&self.ctl, DM_DEV_REMOVE, &mut b);
        }
    }
}
