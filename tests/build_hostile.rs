//! Hostile build inputs: archives and base images that plant symlinks, dot-names,
//! whiteouts and modes meant to make `veil build` write, chmod, delete or read outside
//! its staging tree. Each class comes in several variants and runs as root and as an
//! unprivileged user (whose host directories are the ones at stake then); the host
//! tree around the build must come out byte-for-byte and mode-for-mode unchanged, and
//! no host file may end up in the image.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

/// Who runs the build: the test process (root in CI) or an unprivileged user.
enum Who {
    Root,
    User(Unprivileged),
}

impl Who {
    fn all() -> Vec<Who> {
        let mut v = Vec::new();
        if nix::unistd::geteuid().as_raw() == 0 {
            v.push(Who::Root);
        }
        match Unprivileged::new() {
            Some(u) => v.push(Who::User(u)),
            None => eprintln!(
                "SKIP build_hostile (unprivileged): no user namespaces for an unprivileged uid"
            ),
        }
        v
    }

    fn name(&self) -> &'static str {
        match self {
            Who::Root => "root",
            Who::User(_) => "unprivileged",
        }
    }

    fn veil(&self, dir: &Path) -> Command {
        let mut c = match self {
            Who::Root => veil(),
            Who::User(u) => u.veil(),
        };
        c.current_dir(dir);
        c
    }

    fn own(&self, p: &Path) {
        if let Who::User(u) = self {
            u.own(p);
        }
    }
}

/// A work directory with a host tree to protect (`host/`: a file, a JSON file, a
/// subdirectory with a file) and an output directory holding a marker file.
struct Scene {
    _t: tempfile::TempDir,
    dir: PathBuf,
    host: PathBuf,
    out: PathBuf,
}

impl Scene {
    fn new(who: &Who) -> Scene {
        let t = tempfile::Builder::new()
            .prefix("veil-hostile-")
            .tempdir_in("/tmp")
            .unwrap();
        std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let dir = t.path().to_path_buf();
        let host = dir.join("host");
        std::fs::create_dir_all(host.join("sub")).unwrap();
        std::fs::write(host.join("secret"), b"HOST-SECRET-7f3a\n").unwrap();
        std::fs::write(host.join("labels.json"), br#"{"HOST-SECRET-LABEL":"7f3a"}"#).unwrap();
        std::fs::write(host.join("sub/file"), b"host sub file\n").unwrap();
        std::fs::set_permissions(host.join("secret"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        let out = dir.join("out");
        std::fs::create_dir(&out).unwrap();
        std::fs::write(out.join("marker"), b"keep me\n").unwrap();
        who.own(&dir);
        Scene {
            _t: t,
            dir,
            host,
            out,
        }
    }

    /// Everything under `host/` and `out/marker`: path, kind, mode, owner, content.
    fn snapshot(&self) -> Vec<String> {
        let mut v = snapshot_tree(&self.host);
        v.extend(snapshot_tree(&self.out.join("marker")));
        v.push(format!(
            "out mode {:o}",
            std::fs::metadata(&self.out).unwrap().mode()
        ));
        v
    }

    fn write(&self, name: &str, data: &[u8]) -> PathBuf {
        let p = self.dir.join(name);
        std::fs::write(&p, data).unwrap();
        p
    }
}

fn snapshot_tree(p: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![p.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(md) = std::fs::symlink_metadata(&d) else {
            out.push(format!("{} missing", d.display()));
            continue;
        };
        let content = if md.is_file() {
            String::from_utf8_lossy(&std::fs::read(&d).unwrap()).into_owned()
        } else if md.file_type().is_symlink() {
            std::fs::read_link(&d).unwrap().display().to_string()
        } else {
            String::new()
        };
        out.push(format!(
            "{} {:o} {}:{} {} {content:?}",
            d.display(),
            md.mode(),
            md.uid(),
            md.gid(),
            md.nlink()
        ));
        if md.is_dir() {
            for e in std::fs::read_dir(&d).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
    out.sort();
    out
}

/// A `docker save`-style archive of the given layers (no configuration to speak of).
fn docker_archive(layers: &[Vec<u8>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut names = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let n = format!("l{i}/layer.tar");
        tar_file(&mut b, &n, l, 0o644);
        names.push(format!("{n:?}"));
    }
    tar_file(&mut b, "cfg.json", br#"{"config":{}}"#, 0o644);
    let manifest = format!(
        r#"[{{"Config":"cfg.json","RepoTags":["x:y"],"Layers":[{}]}}]"#,
        names.join(",")
    );
    tar_file(&mut b, "manifest.json", manifest.as_bytes(), 0o644);
    b.into_inner().unwrap()
}

fn layer(f: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    f(&mut b);
    b.into_inner().unwrap()
}

/// Builds `src` into a sandbox `out/sb` (or a SIF when `sif`), returning the output.
fn build(who: &Who, s: &Scene, src: &str, extra: &[&str], sif: bool) -> Output {
    let dst = if sif { "out/x.sif" } else { "out/sb" };
    let mut c = who.veil(&s.dir);
    c.args(["build", "-q", "--force"]);
    if !sif {
        c.arg("--sandbox");
    }
    c.args(extra).arg(dst).arg(src);
    c.output().unwrap()
}

/// Runs `case` for each user and checks the host tree did not change, and that no
/// host secret is in the output.
fn each(name: &str, case: impl Fn(&Who, &Scene) -> Output) {
    for who in Who::all() {
        let s = Scene::new(&who);
        let before = s.snapshot();
        let out = case(&who, &s);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("panicked"),
            "{name} ({}): veil panicked: {stderr}",
            who.name()
        );
        assert_eq!(
            s.snapshot(),
            before,
            "{name} ({}): the host tree changed; veil said: {stderr}",
            who.name()
        );
        assert_no_secret(&s.out, name, who.name());
        // A failed build leaves nothing behind in the output directory.
        if !out.status.success() {
            assert_eq!(
                stderr.trim().lines().count(),
                1,
                "{name} ({}): not a one-line error: {stderr}",
                who.name()
            );
            let left: Vec<_> = std::fs::read_dir(&s.out)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .filter(|n| n != "marker" && n != "sb" && n != "x.sif")
                .collect();
            assert!(left.is_empty(), "{name}: temporaries left: {left:?}");
        }
    }
}

/// No file in the output (sandbox files, or the bytes of a SIF) holds a host secret.
fn assert_no_secret(out: &Path, name: &str, who: &str) {
    for e in walk(out) {
        let md = std::fs::symlink_metadata(&e).unwrap();
        if md.is_file() {
            let b = std::fs::read(&e).unwrap_or_default();
            let hit = b.windows(9).any(|w| w == b"HOST-SECR");
            assert!(!hit, "{name} ({who}): host secret in {}", e.display());
        }
    }
}

fn walk(p: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![p.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(md) = std::fs::symlink_metadata(&d) else {
            continue;
        };
        if md.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&d) {
                for e in rd {
                    stack.push(e.unwrap().path());
                }
            }
        } else {
            out.push(d);
        }
    }
    out
}

/// Ways a planted link can name the host directory: absolute, and relative with more
/// `..` than the tree is deep.
fn host_links(s: &Scene) -> Vec<String> {
    vec![
        s.host.display().to_string(),
        format!("../../../../../../../../..{}", s.host.display()),
    ]
}

#[test]
fn whiteouts_naming_dot_entries_are_refused() {
    // `.wh...` names `..`: the old code removed the staging tree's parent, the output
    // directory. `.wh..` names `.`, `.wh.` the empty name.
    for wh in ["a/.wh...", "a/.wh..", "a/.wh.", ".wh...", "a/b/.wh..."] {
        each(wh, |who, s| {
            let l1 = layer(|b| {
                tar_dir(b, "a/");
                tar_dir(b, "a/b/");
                tar_file(b, "a/b/f", b"x", 0o644);
            });
            let l2 = layer(|b| tar_file(b, wh, b"", 0o644));
            s.write("evil.tar", &docker_archive(&[l1, l2]));
            let out = build(who, s, "docker-archive:evil.tar", &[], false);
            assert!(!out.status.success(), "{wh}: the build should fail");
            let e = String::from_utf8_lossy(&out.stderr);
            assert!(e.contains("invalid file name"), "{wh}: {e}");
            out
        });
    }
}

#[test]
fn opaque_whiteouts_and_whiteouts_under_planted_links_stay_inside() {
    each("opaque/whiteout under a link", |who, s| {
        let mut layers = Vec::new();
        for (i, t) in host_links(s).iter().enumerate() {
            layers.push(layer(|b| tar_symlink(b, &format!("d{i}"), t)));
        }
        layers.push(layer(|b| {
            tar_file(b, "d0/.wh..wh..opq", b"", 0o644);
            tar_file(b, "d1/.wh.secret", b"", 0o644);
            tar_file(b, "d1/sub/.wh..wh..opq", b"", 0o644);
            tar_file(b, "d0/.wh.sub", b"", 0o644);
        }));
        s.write("evil.tar", &docker_archive(&layers));
        build(who, s, "docker-archive:evil.tar", &[], false)
    });
}

#[test]
fn directory_metadata_is_never_applied_through_a_later_symlink() {
    // A directory entry with mode 4777, then a symlink of the same name to a host
    // file: the old code chmodded the host file when it fixed directory modes.
    each("dir then symlink", |who, s| {
        let t = s.host.join("secret").display().to_string();
        let t2 = s.host.join("sub").display().to_string();
        let l1 = layer(|b| {
            tar_entry(b, "x/", tar::EntryType::Directory, 0o4777, None);
            tar_symlink(b, "x", &t);
            tar_entry(b, "y/", tar::EntryType::Directory, 0o777, None);
            tar_symlink(b, "y", &t2);
        });
        s.write("evil.tar", &l1);
        let out = build(who, s, "evil.tar", &[], false);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    });
}

#[test]
fn hard_links_cannot_reach_host_files() {
    each("hard link through a symlinked parent", |who, s| {
        let links = host_links(s);
        let l1 = layer(|b| {
            tar_symlink(b, "l0", &links[0]);
            tar_symlink(b, "l1", &links[1]);
            tar_entry(b, "stolen0", tar::EntryType::Link, 0o644, Some("l0/secret"));
            tar_entry(b, "stolen1", tar::EntryType::Link, 0o644, Some("l1/secret"));
        });
        s.write("evil.tar", &l1);
        let out = build(who, s, "evil.tar", &[], true);
        assert!(!out.status.success(), "the links name no file in the image");
        out
    });
}

#[test]
fn files_under_planted_links_are_written_inside_the_tree() {
    each("file below a link", |who, s| {
        let links = host_links(s);
        let l1 = layer(|b| {
            tar_dir(b, "real/");
            tar_symlink(b, "a", "/real");
            tar_symlink(b, "b", "../../../../real");
        });
        let l2 = layer(|b| {
            tar_file(b, "a/planted", b"planted\n", 0o644);
            tar_file(b, "b/planted2", b"planted2\n", 0o644);
        });
        let l3 = layer(|b| {
            tar_symlink(b, "h0", &links[0]);
            tar_file(b, "h0/planted3", b"x", 0o644);
        });
        s.write("ok.tar", &docker_archive(&[l1.clone(), l2]));
        let out = build(who, s, "docker-archive:ok.tar", &[], false);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Resolved as the container would: inside the tree.
        assert_eq!(
            std::fs::read(s.out.join("sb/real/planted")).unwrap(),
            b"planted\n"
        );
        assert_eq!(
            std::fs::read(s.out.join("sb/real/planted2")).unwrap(),
            b"planted2\n"
        );
        // Through a link to a directory the tree does not have: refused.
        s.write("evil.tar", &docker_archive(&[l1, l3]));
        build(who, s, "docker-archive:evil.tar", &[], false)
    });
}

#[test]
fn layout_files_and_labels_are_not_written_or_read_through_base_links() {
    each("layout through links", |who, s| {
        let host = s.host.display().to_string();
        let l1 = layer(|b| {
            tar_dir(b, ".singularity.d/");
            tar_symlink(b, ".singularity.d/env", &host);
            tar_symlink(b, ".singularity.d/runscript", &format!("{host}/secret"));
            tar_symlink(
                b,
                ".singularity.d/labels.json",
                &format!("{host}/labels.json"),
            );
            tar_symlink(b, "environment", &format!("{host}/secret"));
        });
        s.write("evil.tar", &docker_archive(&[l1]));
        build(who, s, "docker-archive:evil.tar", &[], true)
    });
}

#[test]
fn files_destinations_resolve_inside_the_image() {
    each("%files through a base link", |who, s| {
        let host = s.host.display().to_string();
        let l1 = layer(|b| {
            tar_symlink(b, "opt", &host);
            tar_dir(b, "etc/");
            tar_symlink(b, "etc/sub", &format!("{host}/sub"));
        });
        s.write("base.tar", &docker_archive(&[l1]));
        s.write("payload", b"payload\n");
        let def = format!(
            "Bootstrap: docker-archive\nFrom: {}/base.tar\n\n%files\n    {}/payload /opt/payload\n    {}/payload /etc/sub/file\n",
            s.dir.display(),
            s.dir.display(),
            s.dir.display()
        );
        s.write("evil.def", def.as_bytes());
        who.own(&s.dir);
        build(who, s, "evil.def", &[], false)
    });
}

#[test]
fn setuid_bits_and_owners_survive_a_root_build() {
    if nix::unistd::geteuid().as_raw() != 0 {
        eprintln!("SKIP build_hostile::setuid: giving files other owners needs root");
        return;
    }
    let s = Scene::new(&Who::Root);
    let l1 = layer(|b| {
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o4755);
        h.set_uid(1000);
        h.set_gid(1000);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, "su", &b"#!\n"[..]).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        h.set_mode(0o2775);
        h.set_uid(1001);
        h.set_gid(1002);
        h.set_entry_type(tar::EntryType::Directory);
        b.append_data(&mut h, "sgid/", &b""[..]).unwrap();
    });
    s.write("suid.tar", &l1);
    let out = build(&Who::Root, &s, "suid.tar", &[], false);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let md = std::fs::symlink_metadata(s.out.join("sb/su")).unwrap();
    assert_eq!(
        (md.mode() & 0o7777, md.uid(), md.gid()),
        (0o4755, 1000, 1000)
    );
    let md = std::fs::symlink_metadata(s.out.join("sb/sgid")).unwrap();
    assert_eq!(
        (md.mode() & 0o7777, md.uid(), md.gid()),
        (0o2775, 1001, 1002)
    );
}

#[test]
fn device_nodes_only_for_real_root_that_asks() {
    if nix::unistd::geteuid().as_raw() != 0 {
        eprintln!("SKIP build_hostile::devices: device nodes need real root");
        return;
    }
    let s = Scene::new(&Who::Root);
    let l1 = layer(|b| {
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        h.set_mode(0o666);
        h.set_entry_type(tar::EntryType::Char);
        h.set_device_major(1).unwrap();
        h.set_device_minor(3).unwrap();
        b.append_data(&mut h, "mynull", &b""[..]).unwrap();
    });
    s.write("dev.tar", &l1);
    let out = build(&Who::Root, &s, "dev.tar", &[], false);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        std::fs::symlink_metadata(s.out.join("sb/mynull")).is_err(),
        "a device node was made without --devices"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("--devices"));
    let out = build(&Who::Root, &s, "dev.tar", &["--devices"], false);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let md = std::fs::symlink_metadata(s.out.join("sb/mynull")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(
        &md.file_type()
    ));
    assert_eq!(md.mode() & 0o7777, 0o666);
}

#[test]
fn archive_members_that_are_links_are_not_followed() {
    // A docker-archive whose layer member is a symlink to a host tarball: the host
    // tarball must not become a layer.
    each("member link", |who, s| {
        let host_tar = layer(|b| tar_file(b, "HOST-SECRET", b"HOST-SECRET-7f3a\n", 0o644));
        let host_tar = s.write("backup.tar", &host_tar);
        let mut b = tar::Builder::new(Vec::new());
        tar_symlink(&mut b, "l0/layer.tar", &host_tar.display().to_string());
        tar_file(&mut b, "cfg.json", br#"{"config":{}}"#, 0o644);
        tar_file(
            &mut b,
            "manifest.json",
            br#"[{"Config":"cfg.json","Layers":["l0/layer.tar"]}]"#,
            0o644,
        );
        s.write("evil.tar", &b.into_inner().unwrap());
        build(who, s, "docker-archive:evil.tar", &[], false)
    });
}

#[test]
fn squashfs_sources_with_a_name_twice_are_refused() {
    // A squashfs whose directory lists `zzqa` twice: first a symlink to a host file,
    // then a regular file. Writing the second through the first overwrote the host
    // file. mksquashfs never writes this; the image is made with uncompressed
    // metadata and the second name patched.
    let Some(mksquashfs) = which("mksquashfs") else {
        panic!("mksquashfs is not installed (packaging/install-deps.sh installs it)");
    };
    each("duplicate squashfs names", |who, s| {
        let tree = s.dir.join("tree");
        std::fs::create_dir(&tree).unwrap();
        std::os::unix::fs::symlink(s.host.join("secret"), tree.join("zzqa")).unwrap();
        std::fs::write(tree.join("zzqb"), b"OVERWRITTEN\n").unwrap();
        let img = s.dir.join("dup.sqfs");
        run_ok(Command::new(&mksquashfs).arg(&tree).arg(&img).args([
            "-noI",
            "-noD",
            "-noF",
            "-noX",
            "-no-xattrs",
            "-quiet",
        ]));
        let mut b = std::fs::read(&img).unwrap();
        let at: Vec<usize> = (0..b.len() - 4)
            .filter(|&i| &b[i..i + 4] == b"zzqb")
            .collect();
        assert_eq!(at.len(), 1, "the name should be stored once, uncompressed");
        b[at[0] + 3] = b'a';
        std::fs::write(&img, &b).unwrap();
        std::fs::remove_dir_all(&tree).unwrap();
        who.own(&s.dir);
        let out = build(who, s, "dup.sqfs", &[], false);
        assert!(!out.status.success(), "the build should refuse the image");
        let e = String::from_utf8_lossy(&out.stderr);
        assert!(e.contains("out of order or twice"), "{e}");
        out
    });
}
