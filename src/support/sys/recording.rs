//! A recording fake of the seam: every call is kept, with its flags, in order, and
//! succeeds. Mount points are taken as they are named (nothing is resolved or made).

#![forbid(unsafe_code)]

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;

use super::{Attrs, Sys};
use crate::support::userns;

/// One call on the seam.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Mount {
        src: Option<PathBuf>,
        dst: PathBuf,
        fstype: Option<String>,
        flags: MsFlags,
        data: Option<String>,
    },
    SetAttrs {
        path: PathBuf,
        attrs: Attrs,
        recursive: bool,
    },
    Umount {
        path: PathBuf,
        flags: MntFlags,
    },
    PivotRoot {
        new_root: PathBuf,
        put_old: PathBuf,
    },
    Chdir(PathBuf),
    Unshare(CloneFlags),
    Setns {
        fd: RawFd,
        flags: CloneFlags,
    },
    Sethostname(String),
    LoopbackUp,
    EnterUserns {
        uid: u32,
        gid: u32,
        inner_uid: u32,
        inner_gid: u32,
    },
    CreateDir(PathBuf),
    CreateDirAll {
        path: PathBuf,
        mode: u32,
    },
    RemoveDir(PathBuf),
    WriteFile {
        path: PathBuf,
        contents: Vec<u8>,
    },
    Symlink {
        target: PathBuf,
        link: PathBuf,
    },
    MknodBlock {
        path: PathBuf,
        major: u32,
        minor: u32,
    },
    /// Not a call on the seam: a step of a collaborator (the launch's devices), kept
    /// among the calls so that the order of the two can be checked.
    Note(&'static str),
}

impl Call {
    /// The record of a mount(2).
    pub fn mount(
        src: Option<&Path>,
        dst: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Call {
        Call::Mount {
            src: src.map(Path::to_path_buf),
            dst: dst.to_path_buf(),
            fstype: fstype.map(str::to_string),
            flags,
            data: data.map(str::to_string),
        }
    }

    /// The record of a bind mount of `src` on `dst`, with `flags` besides MS_BIND.
    pub fn bind(src: &Path, dst: &Path, flags: MsFlags) -> Call {
        Call::mount(Some(src), dst, None, MsFlags::MS_BIND | flags, None)
    }
}

#[derive(Debug, Default)]
pub struct RecordingSys {
    calls: RefCell<Vec<Call>>,
    /// Record `/proc/self/fd/N` as the path the descriptor names.
    resolve_descriptors: bool,
}

impl RecordingSys {
    /// A fake that records paths naming an open descriptor (`/proc/self/fd/N`, as
    /// code that opens its mount points first passes them) as the paths they name,
    /// so that the record does not depend on descriptor numbers.
    pub fn resolving_descriptors() -> Self {
        RecordingSys {
            resolve_descriptors: true,
            ..Default::default()
        }
    }

    fn path(&self, p: &Path) -> PathBuf {
        if self.resolve_descriptors
            && p.starts_with("/proc/self/fd")
            && let Ok(named) = std::fs::read_link(p)
        {
            return named;
        }
        p.to_path_buf()
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.borrow().clone()
    }

    pub fn record(&self, c: Call) {
        self.calls.borrow_mut().push(c);
    }
}

impl Sys for RecordingSys {
    fn mount(
        &self,
        src: Option<&Path>,
        dst: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> nix::Result<()> {
        self.record(Call::Mount {
            src: src.map(|p| self.path(p)),
            dst: self.path(dst),
            fstype: fstype.map(str::to_string),
            flags,
            data: data.map(str::to_string),
        });
        Ok(())
    }
    fn set_attrs(&self, path: &Path, attrs: Attrs, recursive: bool) -> nix::Result<()> {
        self.record(Call::SetAttrs {
            path: path.to_path_buf(),
            attrs,
            recursive,
        });
        Ok(())
    }
    fn umount(&self, path: &Path, flags: MntFlags) -> nix::Result<()> {
        self.record(Call::Umount {
            path: path.to_path_buf(),
            flags,
        });
        Ok(())
    }
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> nix::Result<()> {
        self.record(Call::PivotRoot {
            new_root: new_root.to_path_buf(),
            put_old: put_old.to_path_buf(),
        });
        Ok(())
    }
    fn chdir(&self, path: &Path) -> nix::Result<()> {
        self.record(Call::Chdir(self.path(path)));
        Ok(())
    }
    fn unshare(&self, flags: CloneFlags) -> nix::Result<()> {
        self.record(Call::Unshare(flags));
        Ok(())
    }
    fn setns(&self, fd: BorrowedFd<'_>, flags: CloneFlags) -> nix::Result<()> {
        self.record(Call::Setns {
            fd: fd.as_raw_fd(),
            flags,
        });
        Ok(())
    }
    fn sethostname(&self, name: &str) -> nix::Result<()> {
        self.record(Call::Sethostname(name.to_string()));
        Ok(())
    }
    fn loopback_up(&self) -> nix::Result<()> {
        self.record(Call::LoopbackUp);
        Ok(())
    }
    fn enter_userns(
        &self,
        uid: u32,
        gid: u32,
        inner_uid: u32,
        inner_gid: u32,
    ) -> userns::Result<()> {
        self.record(Call::EnterUserns {
            uid,
            gid,
            inner_uid,
            inner_gid,
        });
        Ok(())
    }
    fn create_dir(&self, path: &Path) -> io::Result<()> {
        self.record(Call::CreateDir(path.to_path_buf()));
        Ok(())
    }
    fn create_dir_all(&self, path: &Path, mode: u32) -> io::Result<()> {
        self.record(Call::CreateDirAll {
            path: path.to_path_buf(),
            mode,
        });
        Ok(())
    }
    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        self.record(Call::RemoveDir(path.to_path_buf()));
        Ok(())
    }
    fn write_file(&self, path: &Path, contents: &[u8]) -> io::Result<()> {
        self.record(Call::WriteFile {
            path: path.to_path_buf(),
            contents: contents.to_vec(),
        });
        Ok(())
    }
    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()> {
        self.record(Call::Symlink {
            target: target.to_path_buf(),
            link: link.to_path_buf(),
        });
        Ok(())
    }
    fn mknod_block(&self, path: &Path, major: u32, minor: u32) -> nix::Result<()> {
        self.record(Call::MknodBlock {
            path: path.to_path_buf(),
            major,
            minor,
        });
        Ok(())
    }
}
