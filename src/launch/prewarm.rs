//! The files a container starts first — the action shell or the program itself, and
//! its ELF interpreter — found in the image before the container exists, so the FUSE
//! server can decompress them on an idle core while the namespaces and mounts are
//! being set up, instead of one block per page fault afterwards.

#![forbid(unsafe_code)]

use std::path::Path;

use veil_fusefs::squashfs::{FileKind, InodeId, Squashfs};

use crate::image::{Source, resolve};

/// ELF program header types: a loadable segment, the interpreter path.
const PT_LOAD: u32 = 1;
const PT_INTERP: u32 = 3;
/// Segment flag: writable.
const PF_W: u32 = 2;
/// At most this many offsets to warm first, per file.
const HOT_MAX: usize = 128;

/// A file a container starts first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartFile {
    /// Where in the image it was found (before symlinks).
    pub path: String,
    pub id: InodeId,
    /// File offsets it touches first, to be decompressed first (see [`elf_start`]).
    pub hot: Vec<u64>,
}

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

/// What the headers of a 64-bit little-endian ELF file say about how it starts: its
/// interpreter (PT_INTERP), and the file offsets a process running it touches first —
/// the entry point, then its writable segment, which the C library's start-up code
/// fills and relocates before `main` (in a static executable that segment is at the
/// end of the file, the last place a front-to-back warmer would reach), then the start
/// of each loadable segment (read-only data: tables, strings).
fn elf_start(fs: &Squashfs<Source>, id: InodeId) -> Option<(Option<String>, Vec<u64>)> {
    let size = fs.getattr(id).ok()?.size;
    elf_start_in(|offset, len| read_at(fs, id, offset, len), size)
}

/// [`elf_start`] over any reader of `len` bytes at `offset` (the whole range or none)
/// of a file of `size` bytes. Every offset it gives is below `size`, whatever the
/// headers claim.
fn elf_start_in(
    read_at: impl Fn(u64, usize) -> Option<Vec<u8>>,
    size: u64,
) -> Option<(Option<String>, Vec<u64>)> {
    let h = read_at(0, 64)?;
    if h[..4] != *b"\x7fELF" || h[4] != 2 || h[5] != 1 {
        return None;
    }
    let u16_at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    let u32_at = |b: &[u8], o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or([0; 8]));
    let entry = u64_at(&h, 0x18);
    let phoff = u64_at(&h, 0x20);
    let phentsize = usize::from(u16_at(&h, 0x36));
    let phnum = usize::from(u16_at(&h, 0x38)).min(64);
    if phentsize < 56 {
        return None;
    }
    let ph = read_at(phoff, phentsize * phnum)?;
    let mut interp = None;
    let mut hot = Vec::new();
    let mut writable = Vec::new();
    let mut starts = Vec::new();
    for p in ph.chunks(phentsize) {
        let (kind, flags) = (u32_at(p, 0), u32_at(p, 4));
        let (offset, vaddr, filesz) = (u64_at(p, 8), u64_at(p, 16), u64_at(p, 32));
        match kind {
            PT_INTERP if (1..=4096).contains(&filesz) => {
                interp = read_at(offset, filesz as usize).and_then(|raw| {
                    let s = raw.split(|&b| b == 0).next()?;
                    String::from_utf8(s.to_vec()).ok()
                });
            }
            PT_LOAD => {
                if (vaddr..vaddr.saturating_add(filesz)).contains(&entry) {
                    hot.push(offset.saturating_add(entry - vaddr));
                }
                starts.push(offset);
                if flags & PF_W != 0 && filesz > 0 {
                    // Every 64 KiB of it (the warmer takes each block once), at most 4 MiB.
                    let end = offset.saturating_add(filesz.min(4 << 20));
                    writable.extend((offset..end).step_by(64 << 10));
                    writable.push(end - 1);
                }
            }
            _ => {}
        }
    }
    hot.extend(writable);
    hot.extend(starts);
    hot.retain(|&o| o < size);
    // A hint, not a map: a hostile header gets no longer a list than a real one needs.
    hot.truncate(HOT_MAX);
    Some((interp, hot))
}

/// The files to warm for starting `programs` (each a path or a name on `path`): the
/// programs and their interpreters, each once, with the path each was found at and
/// the offsets to warm first.
pub fn start_files(fs: &Squashfs<Source>, programs: &[&str], path: &str) -> Vec<StartFile> {
    let mut out: Vec<StartFile> = Vec::new();
    let add = |out: &mut Vec<StartFile>, path: String, id: InodeId| -> Option<String> {
        let (interp, hot) = elf_start(fs, id).unwrap_or_default();
        if !out.iter().any(|f| f.id == id) {
            out.push(StartFile { path, id, hot });
        }
        interp
    };
    for p in programs {
        let Some((at, id)) = find(fs, p, path) else {
            continue;
        };
        if let Some((at, id)) = add(&mut out, at, id).and_then(|i| find(fs, &i, "")) {
            add(&mut out, at, id);
        }
    }
    out
}

/// Looks `files` (paths in the image) up through the image's mount at `root`, symlinks
/// resolved inside it, so that the kernel holds their inodes and the warmer can fill
/// their page cache before the container runs them (`stored` is told of each found).
pub fn look_up(root: &Path, files: &[StartFile], mut stored: impl FnMut(InodeId)) {
    use nix::fcntl::{OFlag, OpenHow, ResolveFlag, open, openat2};
    use nix::sys::stat::Mode;
    let Ok(dir) = open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) else {
        return;
    };
    for f in files {
        let how = OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT);
        // Without openat2 (before Linux 5.6) the container's own lookups come first.
        if openat2(&dir, f.path.trim_start_matches('/'), how).is_ok() {
            stored(f.id);
        }
    }
}

/// Fuzzing entry point: arbitrary bytes as a program file. Never panics on its own;
/// panics when an answer breaks its bounds: an offset at or past the end of the file,
/// a longer list than [`HOT_MAX`], an interpreter path that is not in the file.
#[doc(hidden)]
pub fn fuzz_elf(data: &[u8]) {
    let read = |offset: u64, n: usize| {
        let start = usize::try_from(offset).ok()?;
        data.get(start..start.checked_add(n)?).map(<[u8]>::to_vec)
    };
    let Some((interp, hot)) = elf_start_in(read, data.len() as u64) else {
        return;
    };
    assert!(hot.len() <= HOT_MAX, "{} offsets", hot.len());
    assert!(
        hot.iter().all(|&o| o < data.len() as u64),
        "an offset past the end of {} bytes: {hot:?}",
        data.len()
    );
    if let Some(i) = interp {
        assert!(i.len() <= 4096 && !i.contains('\0'), "{i:?}");
        assert!(
            i.is_empty() || data.windows(i.len()).any(|w| w == i.as_bytes()),
            "interpreter {i:?} is not in the file"
        );
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
        let (interp, hot) = elf_start(&fs, dash).expect("an ELF file");
        let interp = interp.expect("an interpreter");
        let ld = id(&interp);
        let ids = |v: &[StartFile]| v.iter().map(|f| f.id).collect::<Vec<_>>();
        // By path through a symlink, and by name on PATH (relative link), each once.
        let found = start_files(&fs, &["/bin/sh"], "");
        assert_eq!(found[0].path, "/bin/sh");
        assert_eq!(found[0].hot, hot);
        assert_eq!(found[1].path, interp);
        assert_eq!(ids(&found), vec![dash, ld]);
        let found = start_files(&fs, &["/bin/sh", "tool"], "/nowhere:/usr/bin");
        assert_eq!(ids(&found), vec![dash, ld]);
        // A script has no interpreter entry; a missing name or relative path is skipped.
        let script = id("/usr/bin/script");
        let found = start_files(&fs, &["script", "missing", "bin/sh"], "/usr/bin");
        assert_eq!(
            found,
            vec![StartFile {
                path: "/usr/bin/script".into(),
                id: script,
                hot: vec![]
            }]
        );
        // The offsets to warm first: the entry point's, then the writable segment's,
        // as readelf computes them from the same file.
        let sh = std::fs::canonicalize("/bin/sh").unwrap();
        match readelf_start(&sh) {
            Some((entry, rw_offset, rw_end)) => {
                assert_eq!(hot[0], entry, "{hot:x?}");
                assert!(hot[1..].contains(&rw_offset), "{hot:x?}");
                assert!(hot[1..].contains(&(rw_end - 1)), "{hot:x?}");
                assert!(
                    hot.iter()
                        .all(|&o| o < std::fs::metadata(&sh).unwrap().len())
                );
            }
            None => eprintln!("SKIP the offsets part: no readelf here"),
        }
    }

    /// Hostile headers (any field, any size, reads past the end) give an answer or
    /// none, never a panic.
    #[test]
    fn hostile_elf_headers_do_not_panic() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..20_000 {
            let len = (next() % 4096) as usize + 64;
            let mut file: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            file[..6].copy_from_slice(b"\x7fELF\x02\x01");
            // Half the time, plausible program headers right after the ELF header.
            if round % 2 == 0 {
                file[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
                file[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
                let phnum = (next() % 8) as usize;
                file[0x38..0x3a].copy_from_slice(&(phnum as u16).to_le_bytes());
                // Loadable (sometimes writable) segments and interpreter paths.
                for k in 0..phnum {
                    let at = 64 + 56 * k;
                    if at + 56 <= file.len() {
                        let kind = [PT_LOAD, PT_INTERP][(next() % 2) as usize];
                        file[at..at + 4].copy_from_slice(&kind.to_le_bytes());
                    }
                }
            }
            let read = |offset: u64, n: usize| {
                let start = usize::try_from(offset).ok()?;
                file.get(start..start.checked_add(n)?).map(<[u8]>::to_vec)
            };
            if let Some((_, hot)) = elf_start_in(read, file.len() as u64) {
                assert!(hot.len() <= HOT_MAX, "{hot:?}");
            }
        }
    }

    /// readelf's view of `elf`: the entry point's file offset and the first writable
    /// loadable segment's file range.
    fn readelf_start(elf: &Path) -> Option<(u64, u64, u64)> {
        let o = std::process::Command::new("readelf")
            .args(["-hlW"])
            .arg(elf)
            .output()
            .ok()?;
        let text = String::from_utf8(o.stdout).ok()?;
        let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok();
        let entry = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("Entry point address:"))
            .and_then(|v| hex(v.trim()))?;
        let loads: Vec<Vec<&str>> = text
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .filter(|f| f.first() == Some(&"LOAD"))
            .collect();
        // LOAD Offset VirtAddr PhysAddr FileSiz MemSiz Flags... Align
        let num = |f: &Vec<&str>, i: usize| f.get(i).and_then(|v| hex(v));
        let entry_off = loads.iter().find_map(|f| {
            let (off, va, sz) = (num(f, 1)?, num(f, 2)?, num(f, 4)?);
            (va..va + sz).contains(&entry).then(|| off + entry - va)
        })?;
        let rw = loads
            .iter()
            .find(|f| f[6..f.len() - 1].concat().contains('W'))?;
        let (off, sz) = (num(rw, 1)?, num(rw, 4)?);
        Some((entry_off, off, off + sz))
    }
}
