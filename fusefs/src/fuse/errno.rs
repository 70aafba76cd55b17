//! The one place where reader errors become the errno values the container sees.

#![forbid(unsafe_code)]

use fuser::Errno;

use crate::squashfs::Error;

/// Maps a reader error to the errno the container sees.
pub fn errno(e: &Error) -> Errno {
    match e {
        Error::NotFound => Errno::ENOENT,
        Error::NotDir => Errno::ENOTDIR,
        Error::NotFile => Errno::EISDIR,
        Error::NotSymlink => Errno::EINVAL,
        Error::NoXattr => Errno::NO_XATTR,
        Error::BadInodeId(_) => Errno::ESTALE,
        _ => Errno::EIO,
    }
}
