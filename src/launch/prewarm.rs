//! The files a container starts first — the action shell or the program itself, and
//! its ELF interpreter — found in the image before the container exists, so the FUSE
//! server can decompress them on an idle core while the namespaces and mounts are
//! being set up, instead of one block per page fault afterwards.

use std::path::Path;

use veil_fusefs::squashfs::{FileKind, InodeId, Squashfs};

use crate::image::{Source, resolve};

/// ELF program header type of the interpreter path.
const PT_INTERP: u32 = 3;

/// The regular file `name` names: an absolute path, or a name searched on `path`
/// (colon-separated, as the shell searches it).
/// Also says at which path it was found.
fn find(fs: &Squashfs<Source>, name: &str, path: &str) -> Option<(String, InodeId)> {
    let file = |p: String| {
        resolve(fs, &p)
            .filter(|a| a.kind == FileKind::File)
            .map(|a| (p, a.id))
    };
    if name.starts_with('/') {
        return file(name.to_string());
    }
    if name.is_empty() || name.contains('/') {
        return None;
    }
    path.split(':')
        .filter(|d| d.starts_with('/'))
        .find_map(|d| file(format!("{}/{name}", d.trim_end_matches('/'))))
}

fn read_at(fs: &Squashfs<Source>, id: InodeId, offset: u64, len: usize) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let n = fs.read(id, offset, &mut buf).ok()?;
    (n == len).then_some(buf)
}

/// The PT_INTERP path of a 64-bit little-endian ELF file, if it has one.
fn interpreter(fs: &Squashfs<Source>, id: InodeId) -> Option<String> {
    let h = read_at(fs, id, 0, 64)?;
    if h[..4] != *b"\x7fELF" || h[4] != 2 || h[5] != 1 {
        return None;
    }
    let u16_at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or([0; 8]));
    let phoff = u64_at(&h, 0x20);
    let phentsize = usize::from(u16_at(&h, 0x36));
    let phnum = usize::from(u16_at(&h, 0x38)).min(64);
    if phentsize < 56 {
        return None;
    }
    let ph = read_at(fs, id, phoff, phentsize * phnum)?;
    ph.chunks(phentsize).find_map(|p| {
        if u32::from_le_bytes([p[0], p[1], p[2], p[3]]) != PT_INTERP {
            return None;
        }
        let (off, len) = (u64_at(p, 8), u64_at(p, 32));
        if len == 0 || len > 4096 {
            return None;
        }
        let raw = read_at(fs, id, off, len as usize)?;
        let s = raw.split(|&b| b == 0).next()?;
        String::from_utf8(s.to_vec()).ok()
    })
}

/// The files to warm for starting `programs` (each a path or a name on `path`): the
/// programs and their interpreters, each once, with the path each was found at.
pub fn start_files(fs: &Squashfs<Source>, programs: &[&str], path: &str) -> Vec<(String, InodeId)> {
    let mut out: Vec<(String, InodeId)> = Vec::new();
    for p in programs {
        let Some((at, id)) = find(fs, p, path) else {
            continue;
        };
        let interp = interpreter(fs, id).and_then(|i| find(fs, &i, ""));
        for (at, f) in [Some((at, id)), interp].into_iter().flatten() {
            if !out.iter().any(|(_, o)| *o == f) {
                out.push((at, f));
            }
        }
    }
    out
}

/// Looks `files` (paths in the image) up through the image's mount at `root`, symlinks
/// resolved inside it, so that the kernel holds their inodes and the warmer can fill
/// their page cache before the container runs them (`stored` is told of each found).
pub fn look_up(root: &Path, files: &[(String, InodeId)], mut stored: impl FnMut(InodeId)) {
    use nix::fcntl::{OFlag, OpenHow, ResolveFlag, open, openat2};
    use nix::sys::stat::Mode;
    let Ok(dir) = open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) else {
        return;
    };
    for (p, id) in files {
        let how = OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT);
        // Without openat2 (before Linux 5.6) the container's own lookups come first.
        if openat2(&dir, p.trim_start_matches('/'), how).is_ok() {
            stored(*id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A squashfs (made by mksquashfs) holding the host's /bin/sh, its ELF
    /// interpreter at the same path, a symlink on PATH and a non-ELF script.
    fn image(dir: &Path) -> Option<std::sync::Arc<Squashfs<Source>>> {
        let sh = std::fs::canonicalize("/bin/sh").ok()?;
        let host = fs_interp(&std::fs::read(&sh).ok()?)?;
        let root = dir.join("root");
        let interp = root.join(host.trim_start_matches('/'));
        std::fs::create_dir_all(interp.parent()?).ok()?;
        std::fs::copy(std::fs::canonicalize(&host).ok()?, &interp).ok()?;
        std::fs::create_dir_all(root.join("bin")).ok()?;
        std::fs::create_dir_all(root.join("usr/bin")).ok()?;
        std::fs::copy(&sh, root.join("bin/dash")).ok()?;
        std::os::unix::fs::symlink("dash", root.join("bin/sh")).ok()?;
        std::os::unix::fs::symlink("../../bin/dash", root.join("usr/bin/tool")).ok()?;
        std::fs::write(root.join("usr/bin/script"), "#!/bin/sh\necho hi\n").ok()?;
        let img = dir.join("img.sqfs");
        let ok = std::process::Command::new("mksquashfs")
            .arg(&root)
            .arg(&img)
            .args(["-noappend", "-quiet", "-no-progress", "-all-root"])
            .stdout(std::process::Stdio::null())
            .status()
            .ok()?
            .success();
        if !ok {
            return None;
        }
        match crate::image::open(&img).ok()? {
            crate::image::Image::Plain(crate::image::Root::Squashfs { fs, .. }) => Some(fs),
            _ => None,
        }
    }

    /// The interpreter path found another way than the program-header walk under test:
    /// in a glibc dynamic executable it is the first string in the first page that
    /// starts with "/lib".
    fn fs_interp(elf: &[u8]) -> Option<String> {
        let head = &elf[..elf.len().min(4096)];
        let at = head
            .windows(5)
            .position(|w| w == b"/lib6" || w == b"/lib/")?;
        let end = head[at..].iter().position(|&b| b == 0)?;
        String::from_utf8(head[at..at + end].to_vec()).ok()
    }

    #[test]
    fn finds_programs_their_links_and_interpreters() {
        let dir = tempfile::tempdir().unwrap();
        let Some(fs) = image(dir.path()) else {
            eprintln!(
                "SKIP finds_programs_their_links_and_interpreters: mksquashfs missing or /bin/sh is not a dynamic ELF"
            );
            return;
        };
        let id = |p: &str| resolve(&fs, p).unwrap().id;
        let dash = id("/bin/dash");
        let interp = interpreter(&fs, dash).expect("an interpreter");
        let ld = id(&interp);
        let ids = |v: Vec<(String, InodeId)>| v.into_iter().map(|(_, i)| i).collect::<Vec<_>>();
        // By path through a symlink, and by name on PATH (relative link), each once.
        let found = start_files(&fs, &["/bin/sh"], "");
        assert_eq!(found[0].0, "/bin/sh");
        assert_eq!(found[1].0, interp);
        assert_eq!(ids(found), vec![dash, ld]);
        let found = start_files(&fs, &["/bin/sh", "tool"], "/nowhere:/usr/bin");
        assert_eq!(ids(found), vec![dash, ld]);
        // A script has no interpreter entry; a missing name or relative path is skipped.
        let script = id("/usr/bin/script");
        let found = start_files(&fs, &["script", "missing", "bin/sh"], "/usr/bin");
        assert_eq!(found, vec![("/usr/bin/script".to_string(), script)]);
    }
}
