//! The fuzzing entry point: open an image from memory, walk everything, read
//! every file and every xattr, with limits so one input cannot run for long.

#![forbid(unsafe_code)]

use super::blocks::CacheSizes;
use super::inode::FileKind;
use super::reader::{Options, Squashfs};

const MAX_NODES: usize = 20_000;
const MAX_LOOKUPS: usize = 64;
const MAX_READ_PER_FILE: u64 = 1 << 20;
const MAX_READ_TOTAL: u64 = 32 << 20;

/// Opens `data` as a squashfs image and exercises every read path. Errors are
/// expected; panics, hangs and runaway allocations are the bugs it looks for.
#[doc(hidden)]
pub fn fuzz_one(data: &[u8]) {
    let opts = Options {
        caches: CacheSizes {
            metadata: 1 << 20,
            data: 1 << 20,
            fragments: 1 << 20,
            inodes: 1 << 20,
        },
        max_file_blocks: 1 << 14,
    };
    let Ok(fs) = Squashfs::open_with(data, opts) else {
        return;
    };
    let _ = fs.statfs();
    let _ = fs.xattrs(fs.root());
    let mut nodes = 0usize;
    let mut total = 0u64;
    let mut buf = vec![0u8; 64 << 10];
    let _ = fs.walk(|path, a| {
        nodes += 1;
        if nodes > MAX_NODES {
            return Err(super::Error::Limit("fuzz node budget"));
        }
        // Path lookups rescan directories; a few per input keep runs fast.
        if nodes <= MAX_LOOKUPS {
            let _ = fs.lookup_path(path);
        }
        let _ = fs.xattrs(a.id);
        match a.kind {
            FileKind::Symlink => {
                let _ = fs.readlink(a.id);
            }
            FileKind::File => {
                let mut off = 0u64;
                while off < a.size.min(MAX_READ_PER_FILE) && total < MAX_READ_TOTAL {
                    match fs.read(a.id, off, &mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            off += n as u64;
                            total += n as u64;
                        }
                    }
                }
                // And the very end, which for a huge sparse file is far away.
                let _ = fs.read(a.id, a.size.saturating_sub(100), &mut buf[..200]);
            }
            FileKind::Directory => {
                // Resume from the middle, as the FUSE server will.
                if let Ok(mut rd) = fs.readdir(a.id, 0)
                    && let Some(Ok(e)) = rd.nth(1)
                {
                    let _ = fs.readdir(a.id, e.cookie).map(|r| r.take(3).count());
                }
            }
            _ => {}
        }
        Ok(())
    });
}
