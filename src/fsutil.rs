//! File helpers shared by the layers that write outputs: nothing half-written is ever
//! left at a destination path.

#![forbid(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

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
    /// a file that is at `dest`: a hard link never replaces one, and the temporary
    /// name goes once the link exists.
    pub fn persist_new(self, dest: &Path) -> io::Result<()> {
        self.file.sync_all()?;
        std::fs::hard_link(&self.path, dest)?;
        // Dropped without `keep`: the temporary name is removed.
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
