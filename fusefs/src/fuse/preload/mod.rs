//! Work ahead of the container: decompressing file blocks on idle-priority threads
//! and pushing them into the kernel's page cache (FUSE_NOTIFY_STORE) before the
//! program that needs them faults on them.
//!
//! [`Warm`] is the handle the launcher and the server share; `preloader` runs the
//! threads and decides what to queue, `stores` remembers which blocks the page cache
//! holds, `parents` which directory a small file is in (to warm its siblings).

mod parents;
mod preloader;
mod stores;

use std::sync::Arc;

pub(super) use parents::Parents;
pub(super) use preloader::{Preloader, SIBLING_MAX_FILE, WARM_MAX};

use crate::source::ReadAt;
use crate::squashfs::{FileKind, InodeId, Squashfs};

/// Where the preloader pushes data: set once the session exists.
pub(super) type NotifierSlot = Arc<std::sync::OnceLock<fuser::Notifier>>;

/// The preloader of an image, started before the image is mounted: the launcher starts
/// it as soon as it is in its user namespace, so that what the container runs first
/// is being decompressed while the rest of the launch is prepared. Cheap to clone.
pub struct Warm<R> {
    pub(super) fs: Arc<Squashfs<R>>,
    pub(super) preloader: Option<Arc<Preloader>>,
    pub(super) notifier: NotifierSlot,
}

impl<R> Clone for Warm<R> {
    fn clone(&self) -> Self {
        Warm {
            fs: self.fs.clone(),
            preloader: self.preloader.clone(),
            notifier: self.notifier.clone(),
        }
    }
}

impl<R: ReadAt + 'static> Warm<R> {
    /// Starts the preloader's threads (none on a single core).
    pub fn start(fs: &Arc<Squashfs<R>>) -> Self {
        let notifier = NotifierSlot::default();
        let preloader = Preloader::start(fs, &notifier).map(Arc::new);
        Warm {
            fs: fs.clone(),
            preloader,
            notifier,
        }
    }

    /// Decompresses file `id` on the preloader's threads before anyone reads it: for the
    /// program a container is about to start, while its namespaces are being set up.
    /// A no-op for what is not a file of the preloader's sizes, or without a preloader.
    ///
    /// The blocks holding the byte offsets `first` are decompressed first (for an
    /// executable: where its entry point and its writable data are, which it touches
    /// before anything else), the rest in file order.
    pub fn prewarm(&self, id: InodeId, first: &[u64]) {
        let (Some(w), Ok(a)) = (&self.preloader, self.fs.getattr(id)) else {
            return;
        };
        if a.kind == FileKind::File && a.size > 0 && a.size <= WARM_MAX {
            w.decompress(
                id.0,
                a.size,
                u64::from(self.fs.superblock().block_size),
                first,
            );
        }
    }

    /// The kernel has looked file `id` up (it holds the inode): its blocks, prewarmed or
    /// not, go into the page cache as the preloader decompresses them, so that the program
    /// it is about to start takes its page faults without a round trip to the server.
    pub fn store_ahead(&self, id: InodeId) {
        let (Some(w), Ok(a)) = (&self.preloader, self.fs.getattr(id)) else {
            return;
        };
        if a.kind == FileKind::File && a.size > 0 && a.size <= WARM_MAX {
            w.store_ahead(id.0, a.size, u64::from(self.fs.superblock().block_size));
        }
    }
}
