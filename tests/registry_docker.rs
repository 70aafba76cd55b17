//! `docker://` images from a real registry (Debian's docker-registry on loopback),
//! placed there by skopeo from an OCI layout with three layers (gzip, zstd, plain;
//! whiteouts and an opaque directory) and two platforms: pulled into SIFs, built
//! from with `Bootstrap: docker`, and `Bootstrap: oras` with `Fingerprints:`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::registry::{Auth, Registry, python_with};
use common::*;

struct Images {
    reg: Registry,
    dir: tempfile::TempDir,
}

/// A registry holding veil/multi:v1 (amd64 + arm64) and veil/single:v1 (amd64).
fn images() -> Option<Images> {
    let reg = Registry::start(Auth::Anonymous)?;
    which("skopeo").or_else(|| {
        eprintln!("skopeo is not installed");
        None
    })?;
    which("zstd").or_else(|| {
        eprintln!("zstd is not installed");
        None
    })?;
    let py = python_with(&["json"])?;
    let dir = tempfile::tempdir().unwrap();
    let root = busybox_rootfs(dir.path())?;
    let layout = dir.path().join("layout");
    run_ok(
        Command::new(py)
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/registry/make_layout.py"))
            .arg(&root)
            .arg(&layout),
    );
    for (name, all) in [("multi", true), ("single", false), ("bomb", false)] {
        let mut c = Command::new("skopeo");
        c.args([
            "copy",
            "-q",
            "--preserve-digests",
            "--dest-tls-verify=false",
        ]);
        if all {
            c.arg("--all");
        }
        c.arg(format!("oci:{}:{name}", layout.display()))
            .arg(format!("docker://{}/veil/{name}:v1", reg.host));
        run_ok(&mut c);
    }
    Some(Images { reg, dir })
}

/// `veil` with a private HOME and cache; no passphrase in the environment.
fn veil_at(home: &Path) -> Command {
    let mut c = common::registry::veil_at(home);
    c.env("VEIL_PASSPHRASE", "");
    c
}

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn exec_text(e: &Unprivileged, sif: &Path, script: &str) -> String {
    let o = run_ok(e.veil().arg("exec").arg(sif).args(["sh", "-c", script]));
    stdout(&o)
}

#[test]
fn pull_turns_a_docker_image_into_a_sif_with_its_layers_and_config() {
    let im = require!(images(), "docker-registry, skopeo, zstd or busybox missing");
    let e = require!(Unprivileged::new(), "no unprivileged user namespace");
    require!(
        squash_and_sif(&busybox_rootfs(e.dir.path()).unwrap(), e.dir.path()),
        "no mksquashfs or /dev/fuse"
    );
    let home = im.dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let out = e.dir.path().join("multi.sif");
    let uri = format!("docker://{}/veil/multi:v1", im.reg.host);
    run_ok(
        veil_at(&home)
            .args(["pull", "-q", "--no-https"])
            .arg(&out)
            .arg(&uri),
    );
    e.own(&out);
    // Whiteouts and the opaque directory of layer 2 (zstd), layer 3's file, the
    // platform this machine runs, the configuration's Env and Cmd.
    let text = exec_text(
        &e,
        &out,
        "test ! -e /tmp/gone && test ! -e /opt/old1 && cat /opt/new /etc/hello /etc/arch && echo $FOO",
    );
    assert_eq!(
        text,
        format!("new\nhello from a layer\n{}\nbar\n", host_arch())
    );
    let o = run_ok(e.veil().arg("run").arg(&out));
    assert_eq!(stdout(&o), format!("{}\n", host_arch()));

    // The other platform, asked for; one that is not there, refused in one line.
    let other = if host_arch() == "arm64" {
        "amd64"
    } else {
        "arm64"
    };
    let out2 = e.dir.path().join("other.sif");
    run_ok(
        veil_at(&home)
            .args(["pull", "-q", "--no-https", "--arch", other])
            .arg(&out2)
            .arg(&uri),
    );
    e.own(&out2);
    assert_eq!(exec_text(&e, &out2, "cat /etc/arch"), format!("{other}\n"));
    // Each SIF says which platform it holds: its partition and its build-arch label.
    for (sif, arch) in [(&out, host_arch()), (&out2, other)] {
        let o = run_ok(veil_at(&home).args(["sif", "list"]).arg(sif));
        assert!(
            stdout(&o).contains(&format!("FS (Squashfs/*System/{arch})")),
            "{}",
            stdout(&o)
        );
        let o = run_ok(
            veil_at(&home)
                .args(["inspect", "--labels", "--json"])
                .arg(sif),
        );
        assert!(
            stdout(&o).contains(&format!("\"org.label-schema.build-arch\": \"{arch}\"")),
            "{}",
            stdout(&o)
        );
    }
    let o = veil_at(&home)
        .args(["pull", "-q", "--no-https", "--arch", "s390x"])
        .arg(e.dir.path().join("x.sif"))
        .arg(&uri)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(veil_failed(o.status), "{err}");
    assert!(
        err.contains("no linux/s390x image") && err.contains("linux/arm64"),
        "{err}"
    );
    assert!(!e.dir.path().join("x.sif").exists());

    // Blobs are cached by digest: the platforms differ in their configuration and
    // first layer only, so six blobs in all (two configurations, four layers).
    let o = run_ok(veil_at(&home).args(["cache", "list", "--type", "blob"]));
    assert!(stdout(&o).contains("There are 6 "), "{}", stdout(&o));
}

#[test]
fn definition_files_bootstrap_from_docker_and_from_oras_with_fingerprints() {
    let im = require!(images(), "docker-registry, skopeo, zstd or busybox missing");
    let e = require!(Unprivileged::new(), "no unprivileged user namespace");
    require!(
        squash_and_sif(&busybox_rootfs(e.dir.path()).unwrap(), e.dir.path()),
        "no mksquashfs or /dev/fuse"
    );
    let home = im.dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let w = e.dir.path();
    let def = w.join("docker.def");
    std::fs::write(
        &def,
        format!(
            "Bootstrap: docker\nFrom: {}/veil/single:v1\n\n%environment\n    export GREETING=hi\n",
            im.reg.host
        ),
    )
    .unwrap();
    let built = w.join("built.sif");
    run_ok(
        veil_at(&home)
            .args(["build", "-q", "--no-https"])
            .arg(&built)
            .arg(&def),
    );
    e.own(&built);
    assert_eq!(
        exec_text(&e, &built, "echo $GREETING; cat /etc/hello"),
        "hi\nhello from a layer\n"
    );

    // That image, signed and pushed as a SIF, is the base of a Bootstrap: oras build
    // whose Fingerprints: name its signer, and refused under another fingerprint.
    run_ok(veil_at(&home).args(["key", "newpair", "--name", "Builder", "--type", "ed25519"]));
    run_ok(veil_at(&home).arg("sign").arg(&built));
    let keys = run_ok(veil_at(&home).args(["key", "list", "--json"]));
    let keys: serde_json::Value = serde_json::from_slice(&keys.stdout).unwrap();
    let fpr = keys[0]["fingerprint"].as_str().unwrap().to_string();
    run_ok(
        veil_at(&home)
            .args(["push", "-q", "--no-https"])
            .arg(&built)
            .arg(format!("oras://{}/veil/base:1", im.reg.host)),
    );
    let oras_def = |fingerprint: &str| {
        let d = w.join("oras.def");
        std::fs::write(
            &d,
            format!(
                "Bootstrap: oras\nFrom: {}/veil/base:1\nFingerprints: {fingerprint}\n\n%labels\n    Stage two\n",
                im.reg.host
            ),
        )
        .unwrap();
        d
    };
    let second = w.join("second.sif");
    run_ok(
        veil_at(&home)
            .args(["build", "-q", "--no-https"])
            .arg(&second)
            .arg(oras_def(&fpr)),
    );
    e.own(&second);
    assert_eq!(
        exec_text(&e, &second, "cat /etc/hello"),
        "hello from a layer\n"
    );
    let o = veil_at(&home)
        .args(["build", "-q", "--no-https", "-F"])
        .arg(w.join("third.sif"))
        .arg(oras_def("12045C8C0B1004D058DE4BEDA20C27EE7FF7BA84"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(veil_failed(o.status), "{err}");
    assert!(err.contains("Fingerprints"), "{err}");
    assert!(!w.join("third.sif").exists());
}

#[test]
fn a_changed_layer_is_refused_and_never_cached() {
    let im = require!(images(), "docker-registry, skopeo, zstd or busybox missing");
    let home = im.dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    // The zstd layer of the single-platform image, changed in the registry's storage.
    let manifest_of = |name: &str| -> serde_json::Value {
        let o = run_ok(Command::new("skopeo").args([
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{}/veil/{name}:v1", im.reg.host),
        ]));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let m = manifest_of("single");
    let digest = m["layers"][1]["digest"].as_str().unwrap().to_string();
    let blob = im.reg.blob_file(&digest);
    let mut bytes = std::fs::read(&blob).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0x10;
    std::fs::write(&blob, &bytes).unwrap();
    let out: PathBuf = im.dir.path().join("x.sif");
    let o = veil_at(&home)
        .args(["pull", "-q", "--no-https"])
        .arg(&out)
        .arg(format!("docker://{}/veil/single:v1", im.reg.host))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(veil_failed(o.status), "{err}");
    assert!(err.contains("digest mismatch"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(!out.exists());
    let cached = home.join("cachedir/cache/blob").join(&digest);
    assert!(!cached.exists(), "a changed layer was cached");
}

/// A run of a docker:// URI builds the SIF once, as an unprivileged user, and finds it
/// in the cache the next time.
#[test]
fn runs_of_docker_uris_build_once_into_the_cache() {
    let im = require!(images(), "docker-registry, skopeo, zstd or busybox missing");
    let e = require!(Unprivileged::new(), "no unprivileged user namespace");
    require!(
        squash_and_sif(&busybox_rootfs(e.dir.path()).unwrap(), e.dir.path()),
        "no mksquashfs or /dev/fuse"
    );
    let uri = format!("docker://{}/veil/single:v1", im.reg.host);
    let o = run_ok(
        e.veil()
            .args(["exec", "--no-https", &uri, "cat", "/etc/hello"]),
    );
    assert_eq!(stdout(&o), "hello from a layer\n");
    let o = run_ok(e.veil().args(["cache", "list", "--type", "oci-tmp"]));
    assert!(stdout(&o).contains("There are 1 "), "{}", stdout(&o));
    let o = run_ok(
        e.veil()
            .args(["exec", "--no-https", &uri, "true"])
            .env("VEIL_DEBUG", "1"),
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("from the cache"));
}

/// A layer that unpacks to more than the staging file system can spare (a
/// decompression bomb: 256 KiB of gzip, 256 MiB of zeros) stops the build in one line,
/// before the disk is full, and leaves nothing. The build runs in a mount namespace
/// of its own whose output directory is a 64 MiB tmpfs.
#[test]
fn a_layer_that_unpacks_past_the_room_is_refused() {
    let im = require!(images(), "docker-registry, skopeo, zstd or busybox missing");
    let userns = Command::new("unshare")
        .args(["-Urm", "true"])
        .status()
        .is_ok_and(|s| s.success());
    require!(
        userns.then_some(()),
        "user namespaces are not available here"
    );
    let home = im.dir.path().join("home");
    let small = im.dir.path().join("small");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&small).unwrap();
    let pull = veil_at(&home);
    let mut c = Command::new("unshare");
    c.args(["-Urm", "sh", "-c"])
        .arg("mount -t tmpfs -o size=64m veil-small \"$1\" || exit 99; d=$1; shift; \"$@\"; st=$?; ls -A \"$d\"; exit $st")
        .arg("sh")
        .arg(&small)
        .arg(pull.get_program())
        .args(["pull", "-q", "--no-https"])
        .arg(small.join("bomb.sif"))
        .arg(format!("docker://{}/veil/bomb:v1", im.reg.host));
    for (k, v) in pull.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    let o = c.output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(veil_failed(o.status), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(
        err.contains("zeros: the image unpacks to more than the") && err.contains("free in"),
        "{err}"
    );
    // What the tmpfs held once veil had ended: nothing.
    assert_eq!(String::from_utf8_lossy(&o.stdout), "", "left behind");
}
