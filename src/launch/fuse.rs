//! The launcher's FUSE side: /dev/fuse, the warmer that decompresses what the container
//! starts first, and the server threads for the mounted image.

#![forbid(unsafe_code)]

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::Sender;

use nix::fcntl::{OFlag, open};
use nix::sys::stat::Mode as FileMode;
use veil_fusefs::fuse::{ImageFs, Owner, Synthetic, Warm};
use veil_fusefs::squashfs::Squashfs;

use super::error::{LaunchError, Result};
use super::{env, prewarm};

type Image = Arc<Squashfs<crate::image::Source>>;

/// Opens /dev/fuse, saying what to do when that is not possible.
pub(super) fn open_fuse() -> Result<OwnedFd> {
    match open(
        "/dev/fuse",
        OFlag::O_RDWR | OFlag::O_CLOEXEC,
        FileMode::empty(),
    ) {
        Ok(fd) => Ok(fd),
        Err(nix::errno::Errno::ENOENT)
        | Err(nix::errno::Errno::ENODEV)
        | Err(nix::errno::Errno::ENXIO) => Err(LaunchError::NoFuse),
        Err(e) => Err(LaunchError::FuseAccess(std::io::Error::from(e))),
    }
}

/// The warmer, and the channel its helper thread is told the image's mount on.
pub(super) struct Warmer {
    warm: Warm<crate::image::Source>,
    mounted: Sender<PathBuf>,
}

/// Starts the warmer for `fs`. Finding the files the container runs first (`programs`,
/// looked up on `path`) reads the image (an ELF header is a block to decompress): done
/// on a thread of its own, off the launch's path. Once the image is mounted and served,
/// the thread looks the files up through the mount, so the warmer can put them in the
/// page cache before they run.
pub(super) fn start_warmer(fs: &Image, programs: Vec<String>, path: String) -> Warmer {
    let warm = Warm::start(fs);
    let (fs, w) = (fs.clone(), warm.clone());
    let (tx, rx) = std::sync::mpsc::channel::<PathBuf>();
    // Without the thread there is only no warming.
    let _ = std::thread::Builder::new()
        .name("veil-prewarm".into())
        .spawn(move || {
            let names: Vec<&str> = programs.iter().map(String::as_str).collect();
            let files = prewarm::start_files(&fs, &names, &path);
            for f in &files {
                w.prewarm(f.id, &f.hot);
            }
            if let Ok(root) = rx.recv() {
                prewarm::look_up(&root, &files, |id| w.store_ahead(id));
            }
        });
    Warmer { warm, mounted: tx }
}

/// The programs the container starts first: the action shell unless `exec` starts its
/// program directly, and `exec`'s program.
pub(super) fn first_programs(direct_first: bool, program: Option<String>) -> Vec<String> {
    let mut programs: Vec<String> = Vec::new();
    if !direct_first {
        programs.push("/bin/sh".into());
    }
    programs.extend(program);
    programs
}

/// The PATH the container starts with, for the warmer's look-ups.
pub(super) fn start_path(envp: &[std::ffi::CString]) -> String {
    std::str::from_utf8(super::child::path_of(envp))
        .unwrap_or(env::DEFAULT_PATH)
        .to_string()
}

/// Starts serving the image mounted at `mounted` on `fd`, and tells the warmer where.
pub(super) fn serve(
    fd: OwnedFd,
    warmer: Warmer,
    synth: Synthetic,
    owner: Owner,
    mounted: PathBuf,
) -> Result<()> {
    serve_image(warmer.warm, synth, owner, fd)?;
    let _ = warmer.mounted.send(mounted);
    Ok(())
}

/// Answers the kernel's INIT and starts the FUSE server threads for the mounted image.
fn serve_image(
    warm: Warm<crate::image::Source>,
    synth: Synthetic,
    owner: Owner,
    fd: OwnedFd,
) -> Result<()> {
    let threads = veil_fusefs::cores().clamp(2, 8);
    let image_fs = ImageFs::with_warm(warm, synth, owner);
    let session =
        veil_fusefs::fuse::serve(image_fs, fd, threads).map_err(LaunchError::FuseServer)?;
    // The workers serve until the mount namespace goes away with the launcher; the
    // session handle must not be dropped (that would wait for them).
    std::mem::forget(session);
    Ok(())
}
