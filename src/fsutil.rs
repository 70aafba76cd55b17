//! File helpers shared by the layers that write outputs: nothing half-written is ever
//! left at a destination path.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Renames `from` to `to` unless something is at `to` (then `AlreadyExists`, and
/// nothing moved): renameat2's RENAME_NOREPLACE; where the file system lacks it, a
/// hard link and the removal of `from`; where it has neither (vfat, some FUSE and
/// network file systems), a check and a plain rename, which leaves a moment's race.
pub fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    use nix::errno::Errno;
    use std::os::unix::ffi::OsStrExt;
    let unsupported = |e: Errno| {
        matches!(
            e,
            Errno::EINVAL | Errno::ENOSYS | Errno::EOPNOTSUPP | Errno::EPERM
        )
    };
    let c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
    };
    let (cfrom, cto) = (c(from)?, c(to)?);
    // (The system call itself: the C library's wrapper is not in every libc veil is
    // built with.)
    // SAFETY: two NUL-terminated paths that outlive the call, and AT_FDCWD.
    let r = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            cfrom.as_ptr(),
            libc::AT_FDCWD,
            cto.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    match if r == 0 { Ok(()) } else { Err(Errno::last()) } {
        Ok(()) => return Ok(()),
        Err(Errno::EEXIST) => return Err(io::ErrorKind::AlreadyExists.into()),
        Err(e) if unsupported(e) => {}
        Err(e) => return Err(e.into()),
    }
    if !from.symlink_metadata()?.is_dir() {
        match std::fs::hard_link(from, to) {
            Ok(()) => return std::fs::remove_file(from),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(e),
            Err(e)
                if e.raw_os_error()
                    .is_some_and(|n| unsupported(Errno::from_raw(n))) => {}
            Err(e) => return Err(e),
        }
    }
    if to.symlink_metadata().is_ok() {
        return Err(io::ErrorKind::AlreadyExists.into());
    }
    std::fs::rename(from, to)
}

/// The directory a path lives in (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// A temporary file beside its destination, removed on drop unless persisted.
pub struct TempFile {
    path: PathBuf,
    file: File,
    keep: bool,
}

impl TempFile {
    /// Creates `.<name>.veil-XXXXXXXX` in `dir` (mode 0644 before umask) for `target`.
    pub fn new_in(dir: &Path, target: &Path) -> io::Result<TempFile> {
        Self::new_in_mode(dir, target, 0o644)
    }

    /// As [`TempFile::new_in`], created with `mode` (before umask): a file for secrets
    /// is private from its first byte.
    pub fn new_in_mode(dir: &Path, target: &Path, mode: u32) -> io::Result<TempFile> {
        let base = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "out".into());
        loop {
            let suffix = uuid::Uuid::new_v4().as_u128() as u32;
            let path = dir.join(format!(".{base}.veil-{suffix:08x}"));
            match OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&path)
            {
                Ok(file) => {
                    return Ok(TempFile {
                        path,
                        file,
                        keep: false,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("cannot create a file in {}: {e}", dir.display()),
                    ));
                }
            }
        }
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Flushes the file to disk and renames it to `dest`.
    pub fn persist(mut self, dest: &Path) -> io::Result<()> {
        self.file.sync_all()?;
        std::fs::rename(&self.path, dest)?;
        self.keep = true;
        Ok(())
    }
}

impl TempFile {
    /// As [`TempFile::persist`], but fails with `AlreadyExists` instead of replacing
    /// a file that is at `dest` ([`rename_noreplace`]).
    pub fn persist_new(mut self, dest: &Path) -> io::Result<()> {
        self.file.sync_all()?;
        rename_noreplace(&self.path, dest)?;
        self.keep = true;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Writes `dest` atomically: `fill` writes into a temporary file, which replaces `dest`
/// only if `fill` succeeds.
pub fn write_atomic<E>(
    dest: &Path,
    fill: impl FnOnce(&mut dyn Write) -> Result<(), E>,
) -> Result<(), E>
where
    E: From<io::Error>,
{
    write_atomic_mode(dest, 0o644, fill)
}

/// As [`write_atomic`], the file created with `mode` (before umask).
pub fn write_atomic_mode<E>(
    dest: &Path,
    mode: u32,
    fill: impl FnOnce(&mut dyn Write) -> Result<(), E>,
) -> Result<(), E>
where
    E: From<io::Error>,
{
    let tmp = TempFile::new_in_mode(parent_dir(dest), dest, mode)?;
    let mut w = io::BufWriter::new(tmp.file().try_clone()?);
    fill(&mut w)?;
    w.flush()?;
    drop(w);
    tmp.persist(dest)?;
    Ok(())
}

/// Opens `path` for reading without blocking on what is not a regular file: a FIFO
/// swapped in for an image opens at once instead of waiting for a writer, and the
/// caller's `fstat` of the descriptor then says what it is.
pub fn open_nonblocking(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rename_without_replacing_keeps_what_is_there() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        std::fs::write(&a, "new").unwrap();
        std::fs::write(&b, "theirs").unwrap();
        let e = rename_noreplace(&a, &b).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read_to_string(&a).unwrap(), "new");
        assert_eq!(std::fs::read_to_string(&b).unwrap(), "theirs");
        std::fs::remove_file(&b).unwrap();
        rename_noreplace(&a, &b).unwrap();
        assert!(!a.exists());
        assert_eq!(std::fs::read_to_string(&b).unwrap(), "new");
        // Directories too (a sandbox).
        let (d, e2) = (t.path().join("d"), t.path().join("e"));
        std::fs::create_dir(&d).unwrap();
        std::fs::create_dir(&e2).unwrap();
        assert!(rename_noreplace(&d, &e2).is_err());
        std::fs::remove_dir(&e2).unwrap();
        rename_noreplace(&d, &e2).unwrap();
        assert!(e2.is_dir() && !d.exists());
    }
}
