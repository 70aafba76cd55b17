//! The FUSE server: a read-only [`fuser::Filesystem`] over a squashfs reader.
//!
//! A container needs mount points that the image may lack (its user's home directory,
//! `/etc/resolv.conf`, …). The server can present such *synthetic* empty directories and
//! files on top of the image, so the root stays read-only and the image unchanged.
//!
//! Modules, one job each, each using only those listed before it: `errno` (reader
//! errors as errno values, in exactly one place), `synthetic` (the mount points on
//! top), `attr` (what the kernel is told about a node), `listing` (a directory's
//! entries and their offsets), `preload` (decompressing ahead of the reader), `server`
//! (the [`fuser::Filesystem`]), `session` (mount options and worker threads).

mod attr;
mod errno;
mod listing;
mod preload;
mod server;
mod session;
mod synthetic;

pub use attr::Owner;
pub use errno::errno;
pub use preload::Warm;
pub use server::ImageFs;
pub use session::{mount_data, serve};
pub use synthetic::Synthetic;
