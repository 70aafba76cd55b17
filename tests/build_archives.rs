//! `veil build` from tarballs: a root filesystem tarball, a docker-archive (`docker
//! save` layout) and an oci-archive (OCI image layout), with layers applied in order and
//! whiteouts honoured; the image configuration becomes the environment, runscript and
//! labels. Checked with the real unsquashfs and by running the images unprivileged.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use sha2::Digest;

/// Layer 1: busybox and a few files; layer 2 deletes and replaces some of them.
fn layers(rootfs: &Path) -> (Vec<u8>, Vec<u8>) {
    let mut l1 = tar::Builder::new(Vec::new());
    tar_dir(&mut l1, "bin/");
    tar_file(
        &mut l1,
        "bin/busybox",
        &std::fs::read(rootfs.join("bin/busybox")).unwrap(),
        0o755,
    );
    for t in ["sh", "echo", "cat", "ls", "test"] {
        tar_symlink(&mut l1, &format!("bin/{t}"), "busybox");
    }
    tar_dir(&mut l1, "data/");
    tar_file(&mut l1, "data/old.txt", b"old\n", 0o644);
    tar_file(&mut l1, "data/keep.txt", b"keep\n", 0o644);
    tar_dir(&mut l1, "opq/");
    tar_file(&mut l1, "opq/a.txt", b"a\n", 0o644);
    let l1 = l1.into_inner().unwrap();
    let mut l2 = tar::Builder::new(Vec::new());
    tar_file(&mut l2, "data/.wh.old.txt", b"", 0o644);
    tar_file(&mut l2, "data/new.txt", b"new\n", 0o644);
    tar_file(&mut l2, "opq/b.txt", b"b\n", 0o644);
    tar_file(&mut l2, "opq/.wh..wh..opq", b"", 0o644);
    let l2 = l2.into_inner().unwrap();
    (l1, l2)
}

const CONFIG: &str = r#"{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin","FOO=bar baz"],"Entrypoint":["/bin/echo","ep"],"Cmd":["default"],"Labels":{"org.example.label":"from-config"}},"rootfs":{"type":"layers","diff_ids":[]}}"#;

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn docker_archive(dir: &Path, rootfs: &Path) -> PathBuf {
    let (l1, l2) = layers(rootfs);
    let mut b = tar::Builder::new(Vec::new());
    tar_file(&mut b, "aaa/layer.tar", &l1, 0o644);
    tar_file(&mut b, "bbb/layer.tar", &gzip(&l2), 0o644);
    tar_file(&mut b, "cfg.json", CONFIG.as_bytes(), 0o644);
    let manifest = r#"[{"Config":"cfg.json","RepoTags":["veil/test:latest"],"Layers":["aaa/layer.tar","bbb/layer.tar"]}]"#;
    tar_file(&mut b, "manifest.json", manifest.as_bytes(), 0o644);
    let p = dir.join("docker.tar");
    std::fs::write(&p, b.into_inner().unwrap()).unwrap();
    p
}

fn oci_archive(dir: &Path, rootfs: &Path) -> PathBuf {
    let (l1, l2) = layers(rootfs);
    let l2 = gzip(&l2);
    let mut b = tar::Builder::new(Vec::new());
    let blob = |b: &mut tar::Builder<Vec<u8>>, data: &[u8]| {
        let hex: String = sha2::Sha256::digest(data)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        tar_file(b, &format!("blobs/sha256/{hex}"), data, 0o644);
        (format!("sha256:{hex}"), data.len())
    };
    let (cd, cs) = blob(&mut b, CONFIG.as_bytes());
    let (d1, s1) = blob(&mut b, &l1);
    let (d2, s2) = blob(&mut b, &l2);
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cd}","size":{cs}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{d1}","size":{s1}}},{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{d2}","size":{s2}}}]}}"#
    );
    let (md, ms) = blob(&mut b, manifest.as_bytes());
    tar_file(
        &mut b,
        "oci-layout",
        br#"{"imageLayoutVersion":"1.0.0"}"#,
        0o644,
    );
    let index = format!(
        r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{md}","size":{ms}}}]}}"#
    );
    tar_file(&mut b, "index.json", index.as_bytes(), 0o644);
    let p = dir.join("oci.tar");
    std::fs::write(&p, b.into_inner().unwrap()).unwrap();
    p
}

fn paths_in(sif: &Path, dir: &Path) -> String {
    let list = stdout(&run_ok(Command::new("siftool").arg("list").arg(sif)));
    let id = list
        .lines()
        .find(|l| l.contains("*System"))
        .and_then(|l| l.split('|').next())
        .unwrap()
        .trim()
        .to_string();
    let part = dir.join("part.sqfs");
    let o = run_ok(Command::new("siftool").arg("dump").arg(id).arg(sif));
    std::fs::write(&part, &o.stdout).unwrap();
    stdout(&run_ok(
        Command::new("unsquashfs").args(["-l", "-d", ""]).arg(&part),
    ))
}

#[test]
fn docker_and_oci_archives_apply_layers_whiteouts_and_config() {
    require!(
        which("siftool").and(which("unsquashfs")),
        "siftool or squashfs-tools missing"
    );
    let user = require!(Unprivileged::new(), "user namespaces unavailable");
    let work = user.dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let rootfs = require!(busybox_rootfs(&work), "busybox missing");
    let archives = [
        (
            "docker.sif",
            docker_archive(&work, &rootfs).display().to_string(),
        ),
        (
            "oci.sif",
            format!("oci-archive:{}", oci_archive(&work, &rootfs).display()),
        ),
        ("oci-auto.sif", work.join("oci.tar").display().to_string()),
    ];
    std::fs::write(
        work.join("layered.def"),
        "Bootstrap: docker-archive\nFrom: docker.tar\n%post\n    echo post > /data/post.txt\n",
    )
    .unwrap();
    user.own(&work);
    for (out, src) in &archives {
        let o = user
            .veil()
            .current_dir(&work)
            .args(["build", "-q", out, src])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{src}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let sif = work.join(out);
        let l = paths_in(&sif, &work);
        assert!(
            l.contains("/data/new.txt") && l.contains("/data/keep.txt"),
            "{l}"
        );
        assert!(!l.contains("/data/old.txt"), "whiteout ignored: {l}");
        assert!(
            l.contains("/opq/b.txt") && !l.contains("/opq/a.txt"),
            "opaque dir: {l}"
        );
        assert!(
            l.contains("/.singularity.d/env/10-docker2singularity.sh"),
            "{l}"
        );
        let run = |args: &[&str]| {
            let o = user
                .veil()
                .arg("run")
                .arg(&sif)
                .args(args)
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            stdout(&o)
        };
        assert_eq!(run(&[]), "ep default\n");
        assert_eq!(run(&["given"]), "ep given\n");
        let o = user
            .veil()
            .arg("exec")
            .arg(&sif)
            .args(["sh", "-c", "echo $FOO"])
            .output()
            .unwrap();
        assert_eq!(stdout(&o), "bar baz\n");
        let o = user
            .veil()
            .arg("exec")
            .arg(&sif)
            .args(["cat", "/.singularity.d/labels.json"])
            .output()
            .unwrap();
        assert!(stdout(&o).contains("from-config"), "{}", stdout(&o));
    }
    let o = user
        .veil()
        .current_dir(&work)
        .args(["build", "-q", "layered.sif", "layered.def"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = user
        .veil()
        .arg("exec")
        .arg(work.join("layered.sif"))
        .args(["cat", "/data/post.txt", "/data/new.txt"])
        .output()
        .unwrap();
    assert_eq!(stdout(&o), "post\nnew\n");
}

#[test]
fn rootfs_tarball_and_hostile_paths() {
    require!(
        which("siftool").and(which("unsquashfs")).and(which("tar")),
        "siftool, squashfs-tools or tar missing"
    );
    let user = require!(Unprivileged::new(), "user namespaces unavailable");
    let work = user.dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let rootfs = require!(busybox_rootfs(&work), "busybox missing");
    run_ok(
        Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .args(["-czf"])
            .arg(work.join("rootfs.tar.gz"))
            .arg("."),
    );
    // A layer that tries to escape the root.
    let mut evil = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(4);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    {
        let name = b"../escape.txt";
        let gnu = h.as_gnu_mut().unwrap();
        gnu.name[..name.len()].copy_from_slice(name);
    }
    h.set_cksum();
    evil.append(&h, &b"evil"[..]).unwrap();
    std::fs::write(work.join("evil.tar"), evil.into_inner().unwrap()).unwrap();
    user.own(&work);
    let o = user
        .veil()
        .current_dir(&work)
        .args(["build", "-q", "tar.sif", "rootfs.tar.gz"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = user
        .veil()
        .arg("run")
        .arg(work.join("tar.sif"))
        .arg("t")
        .output()
        .unwrap();
    assert_eq!(
        stdout(&o),
        "runscript: t\n",
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = user
        .veil()
        .current_dir(&work)
        .args(["build", "-q", "evil.sif", "evil.tar"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("leaves the root filesystem"), "{err}");
    assert!(!work.join("evil.sif").exists() && !user.dir.path().join("escape.txt").exists());
}
