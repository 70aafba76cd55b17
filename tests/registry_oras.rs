//! `veil push`, `veil pull`, `veil registry login` and runs of `oras://` URIs against a
//! real registry (Debian's docker-registry on loopback), with the ORAS Python SDK as the
//! independent client on the other end.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::registry::{Auth, PASSWORD, Registry, USER, program_at, python_with, veil_at};
use common::*;
use sha2::Digest;

/// A SIF with a busybox root (and /data/hello.txt).
fn fixture(dir: &Path) -> Option<PathBuf> {
    let root = busybox_rootfs(dir)?;
    let (_, sif) = squash_and_sif(&root, dir)?;
    Some(sif)
}

/// The ORAS Python SDK's command for the tests (tests/registry/oras_client.py).
fn oras_py() -> Option<Command> {
    let py = python_with(&["oras"])?;
    let mut c = Command::new(py);
    c.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/registry/oras_client.py"));
    Some(c)
}

fn sha256_file(p: &Path) -> String {
    format!(
        "sha256:{:x}",
        sha2::Sha256::digest(std::fs::read(p).unwrap())
    )
}

/// Fails with one line on stderr and one of veil's failure statuses.
fn fails_in_one_line(o: &Output, want: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(veil_failed(o.status), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(err.contains(want), "expected {want:?}: {err}");
}

/// No temporary file of veil's is left in `dir`.
fn nothing_half_written(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        assert!(!n.contains(".veil-"), "left behind: {n}");
    }
}

#[test]
fn push_and_pull_speak_apptainers_layout_with_an_independent_client() {
    let reg = require!(Registry::start(Auth::Anonymous), "no docker-registry");
    let mut py = require!(
        oras_py(),
        "the ORAS Python SDK is not installed (pip install oras)"
    );
    let t = tempfile::tempdir().unwrap();
    let sif = require!(
        fixture(t.path()),
        "busybox, mksquashfs or /dev/fuse missing"
    );
    let home = t.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let uri = reg.oras("veil/app:v1");
    run_ok(
        veil_at(&home)
            .args(["push", "--no-https"])
            .arg(&sif)
            .arg(&uri),
    );

    // What the other client sees: Apptainer's media types, the file's name, its digest.
    let m = run_ok(py.args(["manifest", &format!("{}/veil/app:v1", reg.host)]));
    let m: serde_json::Value = serde_json::from_slice(&m.stdout).unwrap();
    assert_eq!(
        m["config"]["mediaType"],
        "application/vnd.sylabs.sif.config.v1+json"
    );
    assert_eq!(m["config"]["size"], 2);
    let layers = m["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1);
    assert_eq!(
        layers[0]["mediaType"],
        "application/vnd.sylabs.sif.layer.v1.sif"
    );
    assert_eq!(
        layers[0]["annotations"]["org.opencontainers.image.title"],
        "image.sif"
    );
    assert_eq!(layers[0]["digest"], sha256_file(&sif).as_str());
    let out = t.path().join("py-out");
    let pulled = run_ok(
        oras_py()
            .unwrap()
            .args(["pull", &format!("{}/veil/app:v1", reg.host)])
            .arg(&out),
    );
    assert_eq!(
        std::fs::read(stdout(&pulled).trim()).unwrap(),
        std::fs::read(&sif).unwrap()
    );

    // veil's own pull, byte for byte; an existing file needs --force.
    let dest = t.path().join("pulled.sif");
    run_ok(
        veil_at(&home)
            .args(["pull", "--no-https"])
            .arg(&dest)
            .arg(&uri),
    );
    assert_eq!(std::fs::read(&dest).unwrap(), std::fs::read(&sif).unwrap());
    let o = veil_at(&home)
        .args(["pull", "--no-https"])
        .arg(&dest)
        .arg(&uri)
        .output()
        .unwrap();
    fails_in_one_line(&o, "exists (use --force");
    run_ok(
        veil_at(&home)
            .args(["pull", "--no-https", "--force"])
            .arg(&dest)
            .arg(&uri),
    );

    // A second push finds the blob there already.
    let o = run_ok(
        veil_at(&home)
            .args(["push", "--no-https"])
            .arg(&sif)
            .arg(reg.oras("veil/app:v2")),
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("already in the registry"));

    // What the other client pushed, veil pulls (default name: repository_tag.sif).
    let other = t.path().join("other.sif");
    std::fs::copy(&sif, &other).unwrap();
    run_ok(
        oras_py()
            .unwrap()
            .args(["push", &format!("{}/veil/other:v3", reg.host)])
            .arg(&other),
    );
    run_ok(
        veil_at(&home)
            .current_dir(t.path())
            .args(["pull", "--no-https"])
            .arg(reg.oras("veil/other:v3")),
    );
    assert_eq!(
        std::fs::read(t.path().join("other_v3.sif")).unwrap(),
        std::fs::read(&sif).unwrap()
    );
    nothing_half_written(t.path());
}

#[test]
fn runs_pull_an_oras_image_into_the_cache_once() {
    let reg = require!(Registry::start(Auth::Anonymous), "no docker-registry");
    let e = require!(Unprivileged::new(), "no unprivileged user namespace");
    let sif = require!(
        fixture(e.dir.path()),
        "busybox, mksquashfs or /dev/fuse missing"
    );
    run_ok(
        veil()
            .args(["push", "-q", "--no-https"])
            .arg(&sif)
            .arg(reg.oras("veil/run:1")),
    );
    let as_user = |args: &[&str]| {
        let mut c = e.veil();
        c.args(args);
        c
    };
    let o = run_ok(&mut as_user(&[
        "exec",
        "--no-https",
        &reg.oras("veil/run:1"),
        "cat",
        "/data/hello.txt",
    ]));
    assert_eq!(stdout(&o), "hello from the image\n");
    let list = run_ok(&mut as_user(&["cache", "list", "-v"]));
    let text = stdout(&list);
    assert!(
        text.contains(&sha256_file(&sif)) && text.contains("There are 1 "),
        "{text}"
    );
    // The second run finds it there.
    let o = run_ok(
        as_user(&["exec", "--no-https", &reg.oras("veil/run:1"), "true"]).env("VEIL_DEBUG", "1"),
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("from the cache"));
    let o = run_ok(&mut as_user(&["cache", "clean", "--type", "oras"]));
    assert!(stdout(&o).contains("removed 1 entry"), "{}", stdout(&o));
    let o = run_ok(&mut as_user(&["cache", "list"]));
    assert!(stdout(&o).contains("There are 0 "));
}

#[test]
fn basic_auth_credentials_from_flags_environment_and_login() {
    let reg = require!(
        Registry::start(Auth::Basic),
        "no docker-registry or python bcrypt"
    );
    let t = tempfile::tempdir().unwrap();
    let sif = require!(
        fixture(t.path()),
        "busybox, mksquashfs or /dev/fuse missing"
    );
    let home = t.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let uri = reg.oras("veil/auth:1");
    let push = || {
        let mut c = veil_at(&home);
        c.args(["push", "-q", "--no-https"]).arg(&sif).arg(&uri);
        c
    };
    fails_in_one_line(&push().output().unwrap(), "not authorized");
    let o = push()
        .args(["--docker-username", USER, "--docker-password", "wrong"])
        .output()
        .unwrap();
    fails_in_one_line(&o, "not authorized");
    run_ok(push().args(["--docker-username", USER, "--docker-password", PASSWORD]));
    run_ok(
        push()
            .env("APPTAINER_DOCKER_USERNAME", USER)
            .env("APPTAINER_DOCKER_PASSWORD", PASSWORD),
    );

    // A login that the registry refuses stores nothing; one it accepts, mode 0600.
    let login = |pw: &str| {
        let mut c = veil_at(&home);
        c.args([
            "registry",
            "login",
            "--no-https",
            "-u",
            USER,
            "--password-stdin",
            &reg.host,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{pw}\n").as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    fails_in_one_line(&login("wrong"), "not authorized");
    let file = home.join(".veil/docker-config.json");
    assert!(!file.exists());
    let o = login(PASSWORD);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(!std::fs::read_to_string(&file).unwrap().contains(PASSWORD));
    run_ok(&mut push());
    let dest = t.path().join("back.sif");
    run_ok(
        veil_at(&home)
            .args(["pull", "-q", "--no-https"])
            .arg(&dest)
            .arg(&uri),
    );
    assert_eq!(std::fs::read(&dest).unwrap(), std::fs::read(&sif).unwrap());
    // The other client with the same credentials sees the same image.
    let mut py = require!(oras_py(), "the ORAS Python SDK is not installed");
    let out = t.path().join("py");
    let o = run_ok(
        py.env("ORAS_USER", USER)
            .env("ORAS_PASSWORD", PASSWORD)
            .args(["pull", &format!("{}/veil/auth:1", reg.host)])
            .arg(&out),
    );
    assert_eq!(
        std::fs::read(stdout(&o).trim()).unwrap(),
        std::fs::read(&sif).unwrap()
    );
    run_ok(veil_at(&home).args(["registry", "logout", &reg.host]));
    fails_in_one_line(&push().output().unwrap(), "not authorized");
}

#[test]
fn token_auth_gives_anonymous_pulls_and_authenticated_pushes() {
    let reg = require!(
        Registry::start(Auth::Token),
        "no docker-registry or python jwt"
    );
    let t = tempfile::tempdir().unwrap();
    let sif = require!(
        fixture(t.path()),
        "busybox, mksquashfs or /dev/fuse missing"
    );
    let home = t.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let uri = reg.oras("veil/tok:1");
    let o = veil_at(&home)
        .args(["push", "-q", "--no-https"])
        .arg(&sif)
        .arg(&uri)
        .output()
        .unwrap();
    assert!(veil_failed(o.status));
    run_ok(
        veil_at(&home)
            .args([
                "push",
                "-q",
                "--no-https",
                "--docker-username",
                USER,
                "--docker-password",
                PASSWORD,
            ])
            .arg(&sif)
            .arg(&uri),
    );
    let dest = t.path().join("anon.sif");
    run_ok(
        veil_at(&home)
            .args(["pull", "-q", "--no-https"])
            .arg(&dest)
            .arg(&uri),
    );
    assert_eq!(std::fs::read(&dest).unwrap(), std::fs::read(&sif).unwrap());
    let o = veil_at(&home)
        .args([
            "pull",
            "-q",
            "--no-https",
            "--docker-username",
            USER,
            "--docker-password",
            "wrong",
        ])
        .arg(t.path().join("x.sif"))
        .arg(&uri)
        .output()
        .unwrap();
    fails_in_one_line(&o, "authentication failed");
}

/// A manifest in the SIF artifact layout for a layer of `digest` and `size`.
fn sif_manifest(digest: &str, size: i64) -> String {
    serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.sylabs.sif.config.v1+json",
            "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
            "size": 2
        },
        "layers": [{
            "mediaType": "application/vnd.sylabs.sif.layer.v1.sif",
            "digest": digest,
            "size": size
        }]
    })
    .to_string()
}

#[test]
fn hostile_registries_and_artifacts_give_one_line_and_leave_nothing() {
    let reg = require!(Registry::start(Auth::Anonymous), "no docker-registry");
    let py = require!(
        python_with(&["oras"]),
        "the ORAS Python SDK is not installed"
    );
    let t = tempfile::tempdir().unwrap();
    let sif = require!(
        fixture(t.path()),
        "busybox, mksquashfs or /dev/fuse missing"
    );
    let home = t.path().join("home");
    let out = t.path().join("out");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&out).unwrap();
    let client = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/registry/oras_client.py");
    let pull = |repo: &str| {
        veil_at(&home)
            .args(["pull", "-q", "--no-https"])
            .arg(out.join("x.sif"))
            .arg(reg.oras(repo))
            .output()
            .unwrap()
    };
    let check_clean = || {
        assert!(!out.join("x.sif").exists());
        nothing_half_written(&out);
        let cache = home.join("cachedir/cache/oras");
        if cache.exists() {
            nothing_half_written(&cache);
            assert_eq!(
                std::fs::read_dir(&cache).unwrap().count(),
                0,
                "a bad blob in the cache"
            );
        }
    };

    // A blob changed in the registry's storage: refused by its digest, by pull and run.
    run_ok(
        veil_at(&home)
            .args(["push", "-q", "--no-https"])
            .arg(&sif)
            .arg(reg.oras("bad/flip:1")),
    );
    let blob = reg.blob_file(&sha256_file(&sif));
    let mut bytes = std::fs::read(&blob).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0x40;
    std::fs::write(&blob, &bytes).unwrap();
    fails_in_one_line(&pull("bad/flip:1"), "digest mismatch");
    let o = veil_at(&home)
        .args(["exec", "--no-https", &reg.oras("bad/flip:1"), "true"])
        .output()
        .unwrap();
    fails_in_one_line(&o, "digest mismatch");
    check_clean();

    let put = |tag: &str, manifest: &str| {
        let (repo, tag) = tag.split_once(':').unwrap();
        // In the repository that holds the blob: blobs are linked per repository.
        let _ = repo;
        reg.plant_manifest("bad/base", tag, manifest.as_bytes());
    };
    // The config blob must exist for the registry to take a manifest.
    run_ok(
        veil_at(&home)
            .args(["push", "-q", "--no-https"])
            .arg(&sif)
            .arg(reg.oras("bad/base:1")),
    );
    let good = sha256_file(&sif);
    let size = std::fs::metadata(&sif).unwrap().len() as i64;
    // A manifest naming a blob that is gone from the registry's storage.
    let other = t.path().join("other.sif");
    let mut b = std::fs::read(&sif).unwrap();
    b.extend_from_slice(&[0u8; 4096]);
    std::fs::write(&other, &b).unwrap();
    run_ok(
        veil_at(&home)
            .args(["push", "-q", "--no-https"])
            .arg(&other)
            .arg(reg.oras("bad/missing:1")),
    );
    std::fs::remove_file(reg.blob_file(&sha256_file(&other))).unwrap();
    fails_in_one_line(&pull("bad/missing:1"), "bad/missing");
    check_clean();
    // A declared size beyond any disk, and one smaller than the blob.
    put("base:huge", &sif_manifest(&good, 1 << 60));
    fails_in_one_line(&pull("bad/base:huge"), "bytes free");
    put("base:short", &sif_manifest(&good, size - 10));
    fails_in_one_line(&pull("bad/base:short"), "more than the");
    put("base:negative", &sif_manifest(&good, -1));
    fails_in_one_line(&pull("bad/base:negative"), "");
    check_clean();

    // An artifact that is not a SIF, under the SIF type; and a container image's layer.
    let text = t.path().join("notes.txt");
    std::fs::write(&text, "not an image\n").unwrap();
    run_ok(
        Command::new(&py)
            .arg(&client)
            .args(["push", &format!("{}/bad/text:1", reg.host)])
            .arg(&text),
    );
    fails_in_one_line(&pull("bad/text:1"), "not a SIF image");
    run_ok(
        Command::new(&py)
            .arg(&client)
            .args(["push", &format!("{}/bad/tar:1", reg.host)])
            .arg(&text)
            .arg("application/vnd.oci.image.layer.v1.tar"),
    );
    fails_in_one_line(&pull("bad/tar:1"), "not a SIF artifact");
    fails_in_one_line(&pull("bad/absent:1"), "not found");
    check_clean();

    // Nothing listening; names that are not URIs.
    let port = common::registry::free_port();
    let o = veil_at(&home)
        .args(["pull", "-q", "--no-https"])
        .arg(out.join("x.sif"))
        .arg(format!("oras://127.0.0.1:{port}/veil/app:1"))
        .output()
        .unwrap();
    fails_in_one_line(&o, "127.0.0.1");
    let o = veil_at(&home)
        .args(["pull", "oras://app:v1"])
        .output()
        .unwrap();
    fails_in_one_line(&o, "must name its registry");
    let o = veil_at(&home)
        .args(["push", "-q", "--no-https"])
        .arg(&text)
        .arg(reg.oras("bad/x:1"))
        .output()
        .unwrap();
    fails_in_one_line(&o, "not a SIF image");
    check_clean();
}

/// The workflow the encryption documentation describes, as an unprivileged user:
/// build encrypted, sign, push; on the "compute node" pull, verify and run, and run
/// straight from the URI with the signature checked first.
#[test]
fn encrypted_images_travel_sealed_from_build_to_run() {
    let reg = require!(Registry::start(Auth::Anonymous), "no docker-registry");
    let e = require!(Unprivileged::new(), "no unprivileged user namespace");
    let root = require!(busybox_rootfs(e.dir.path()), "busybox is not installed");
    let as_user = |args: &[&str]| {
        let mut c = e.veil();
        c.env("VEIL_CACHEDIR", e.home.join("cache"))
            .env("VEIL_PASSPHRASE", "")
            .args(args);
        c
    };
    std::fs::write(e.home.join("pass"), "job secret\n").unwrap();
    e.own(&e.home);
    let root = root.to_str().unwrap();
    run_ok(&mut as_user(&[
        "build",
        "-q",
        "--passphrase-file",
        "pass",
        "enc.sif",
        root,
    ]));
    run_ok(&mut as_user(&[
        "key", "newpair", "--name", "Builder", "--type", "ed25519",
    ]));
    run_ok(&mut as_user(&["sign", "enc.sif"]));
    let uri = reg.oras("team/enc:1");
    run_ok(&mut as_user(&["push", "-q", "--no-https", "enc.sif", &uri]));

    // The registry holds the encrypted file as it is.
    let built = std::fs::read(e.home.join("enc.sif")).unwrap();
    let stored = std::fs::read(reg.blob_file(&sha256_file(&e.home.join("enc.sif")))).unwrap();
    assert_eq!(stored, built);
    assert!(!stored.windows(20).any(|w| w == b"hello from the image"));

    run_ok(&mut as_user(&[
        "pull",
        "-q",
        "--no-https",
        "node.sif",
        &uri,
    ]));
    run_ok(&mut as_user(&["verify", "node.sif"]));
    let o = run_ok(&mut as_user(&[
        "exec",
        "--passphrase-file",
        "pass",
        "node.sif",
        "cat",
        "/data/hello.txt",
    ]));
    assert_eq!(stdout(&o), "hello from the image\n");
    let o = run_ok(&mut as_user(&[
        "exec",
        "--no-https",
        "--verify",
        "--passphrase-file",
        "pass",
        &uri,
        "cat",
        "/data/hello.txt",
    ]));
    assert_eq!(stdout(&o), "hello from the image\n");
    // Without the key, the pulled image does not open.
    let o = as_user(&["exec", "--no-https", &uri, "true"])
        .output()
        .unwrap();
    assert_ne!(o.status.code(), Some(0));
}

/// A download stopped by Ctrl-C (a registry that stalls mid-blob) leaves no file and
/// no process; so does a `veil` killed outright, whose registry helper then removes its
/// partial file itself. Both for an `oras://` SIF and for a `docker://` image's layer
/// (where the builder's cleanup thread takes the signals).
#[test]
fn an_interrupted_pull_leaves_nothing_behind() {
    let py = require!(python_with(&["json"]), "python3 is not installed");
    for docker in [false, true] {
        for sig in [
            nix::sys::signal::Signal::SIGINT,
            nix::sys::signal::Signal::SIGKILL,
        ] {
            interrupt_a_pull(&py, sig, docker);
        }
    }
}

/// A process's state and parent, from /proc/PID/stat.
fn state_of(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command's closing parenthesis: state, then the parent's PID.
    let mut f = stat.rsplit_once(')')?.1.split_whitespace();
    let state = f.next()?.chars().next()?;
    Some((state, f.next()?.parse().ok()?))
}

/// The PIDs of the children of `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| state_of(p).is_some_and(|(_, parent)| parent == pid))
        .collect()
}

/// Whether `pid` runs (a zombie no longer does).
fn alive(pid: u32) -> bool {
    state_of(pid).is_some_and(|(state, _)| state != 'Z')
}

fn interrupt_a_pull(py: &Path, sig: nix::sys::signal::Signal, docker: bool) {
    use std::io::BufRead;
    struct Server(std::process::Child);
    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut server = Server(
        Command::new(py)
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/registry/stall_registry.py"))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    std::io::BufReader::new(server.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line.split_whitespace().nth(1).unwrap().to_string();
    let t = tempfile::tempdir().unwrap();
    let home = t.path().join("home");
    let out = t.path().join("out");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&out).unwrap();
    let mut pull = veil_at(&home);
    let uri = if docker {
        format!("docker://127.0.0.1:{port}/stall/img:1")
    } else {
        format!("oras://127.0.0.1:{port}/stall/app:1")
    };
    // The partial download: beside the destination, or a layer's in the cache.
    let partial_dir = if docker {
        home.join("cachedir/cache/blob")
    } else {
        out.clone()
    };
    let partial = |name: &str| name.contains(".veil-") && !name.starts_with(".veil-build-");
    pull.args(["pull", "-q", "--no-https"])
        .arg(out.join("x.sif"))
        .arg(&uri)
        .stderr(Stdio::null());
    // SIGINT as a terminal sends it. A test run started in the background by a shell
    // without job control has SIGINT ignored, which veil rightly leaves ignored: the
    // pull gets the default disposition back, as a foreground command has it.
    // SAFETY: signal() between fork and exec, on the child's own dispositions.
    unsafe {
        use std::os::unix::process::CommandExt;
        pull.pre_exec(|| {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            Ok(())
        });
    }
    let mut pull = pull.spawn().unwrap();
    // Wait until the temporary file exists and the first megabyte had time to come.
    let start = std::time::Instant::now();
    loop {
        let started = std::fs::read_dir(&partial_dir)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| partial(&e.file_name().to_string_lossy()));
        if started {
            break;
        }
        assert!(start.elapsed().as_secs() < 30, "the download never started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    // The download is the registry helper's, a child of veil's.
    let helpers = children_of(pull.id());
    assert_eq!(helpers.len(), 1, "veil's children: {helpers:?}");
    let helper = helpers[0];
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pull.id() as i32), sig).unwrap();
    let status = pull.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    if docker && sig == nix::sys::signal::Signal::SIGINT {
        // The builder's cleanup ends the process itself, as 128 + the signal.
        assert_eq!(status.code(), Some(130), "{status:?}");
    } else {
        assert_eq!(status.signal(), Some(sig as i32), "{status:?}");
    }
    if sig == nix::sys::signal::Signal::SIGINT {
        // veil waited for its helper.
        assert!(!alive(helper), "the helper outlived veil");
    } else {
        // The helper, orphaned, is told to end and does.
        let start = std::time::Instant::now();
        while alive(helper) {
            assert!(start.elapsed().as_secs() < 20, "the helper outlived veil");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    drop(server);
    let names = |d: &Path| -> Vec<String> {
        std::fs::read_dir(d)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    };
    let mut left = names(&out);
    // A build killed outright keeps its staging tree: SIGKILL cannot be caught.
    if sig == nix::sys::signal::Signal::SIGKILL {
        left.retain(|n| !n.starts_with(".veil-build-"));
    }
    // (The cache keeps what was complete: the image's configuration.)
    left.extend(names(&partial_dir).into_iter().filter(|n| partial(n)));
    assert!(left.is_empty(), "{uri}, {sig}: left behind: {left:?}");
}

/// The cache is trusted by name only because nobody else can write it: a cache that
/// others can write or that is a link is refused, an entry that is a link is not
/// taken, and `cache clean` removes entries, nothing else.
#[test]
fn only_a_private_cache_is_trusted() {
    let reg = require!(Registry::start(Auth::Anonymous), "no docker-registry");
    let t = tempfile::tempdir().unwrap();
    let sif = require!(
        fixture(t.path()),
        "busybox, mksquashfs or /dev/fuse missing"
    );
    let home = t.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let uri = reg.oras("veil/cached:1");
    run_ok(
        veil_at(&home)
            .args(["push", "-q", "--no-https"])
            .arg(&sif)
            .arg(&uri),
    );
    let inspect = || {
        veil_at(&home)
            .args(["inspect", "--no-https", &uri])
            .output()
            .unwrap()
    };
    use std::os::unix::fs::PermissionsExt;
    let cache = home.join("cachedir/cache");
    let oras = cache.join("oras");
    std::fs::create_dir_all(&oras).unwrap();
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
    fails_in_one_line(&inspect(), "can be written by other users");
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o700)).unwrap();

    // An entry that is a link to another file of the same size is not taken.
    let evil = t.path().join("evil.sif");
    let mut bytes = std::fs::read(&sif).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 1;
    std::fs::write(&evil, &bytes).unwrap();
    let entry = oras.join(sha256_file(&sif));
    std::os::unix::fs::symlink(&evil, &entry).unwrap();
    std::fs::write(oras.join("notes.txt"), "mine").unwrap();
    let o = run_ok(veil_at(&home).args(["inspect", "--no-https", &uri]));
    assert!(o.status.success());
    assert!(
        !std::fs::symlink_metadata(&entry)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(std::fs::read(&entry).unwrap(), std::fs::read(&sif).unwrap());
    assert_eq!(std::fs::read(&evil).unwrap(), bytes);

    // Clean takes the entry, not the user's other file.
    let o = run_ok(veil_at(&home).args(["cache", "clean"]));
    assert!(stdout(&o).contains("removed 1 entry"), "{}", stdout(&o));
    assert!(oras.join("notes.txt").exists());

    // A cache directory that is a link is refused.
    std::fs::remove_dir_all(&oras).unwrap();
    std::os::unix::fs::symlink(t.path(), &oras).unwrap();
    fails_in_one_line(&inspect(), "is a symbolic link");
    let o = veil_at(&home).args(["cache", "clean"]).output().unwrap();
    fails_in_one_line(&o, "is a symbolic link");
    assert!(evil.exists());
}

/// `cmd` run on a pseudo-terminal (script(1) from util-linux): what the terminal showed.
fn on_a_terminal(script: &Path, cmd: &Command) -> String {
    let line: Vec<String> = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_str().unwrap().to_string())
        .collect();
    let mut c = Command::new(script);
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c.env("TERM", "xterm")
        .args(["-q", "-e", "-c", &line.join(" "), "/dev/null"])
        .stdin(Stdio::null());
    let o = run_ok(&mut c);
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn transfers_show_progress_bars_on_a_terminal_only_and_not_with_q() {
    let reg = require!(Registry::start(Auth::Anonymous), "no docker-registry");
    let script = require!(which("script"), "no script(1) (util-linux)");
    let t = tempfile::tempdir().unwrap();
    let root = require!(busybox_rootfs(t.path()), "busybox missing");
    // Bytes that do not compress: the SIF is well over the 8 MiB a bar is drawn for.
    let mut noise = vec![0u8; 12 << 20];
    getrandom::fill(&mut noise).unwrap();
    std::fs::write(root.join("noise"), &noise).unwrap();
    let (_, sif) = require!(squash_and_sif(&root, t.path()), "mksquashfs missing");
    let home = t.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let uri = reg.oras("veil/big:1");
    let digest = sha256_file(&sif);
    let short = &digest["sha256:".len()..][..12];

    // Off a terminal: no bar.
    let o = run_ok(
        veil_at(&home)
            .args(["push", "--no-https"])
            .arg(&sif)
            .arg(&uri),
    );
    assert!(!String::from_utf8_lossy(&o.stderr).contains('%'));

    // On a terminal: the blob's bar, full at the end.
    let mut pull = veil_at(&home);
    pull.args(["pull", "--no-https"])
        .arg(t.path().join("a.sif"))
        .arg(&uri);
    let shown = on_a_terminal(&script, &pull);
    assert!(shown.contains(short) && shown.contains("100%"), "{shown:?}");
    assert_eq!(
        std::fs::read(t.path().join("a.sif")).unwrap(),
        std::fs::read(&sif).unwrap()
    );

    // With -q, not even there.
    let mut quiet = veil_at(&home);
    quiet
        .args(["pull", "-q", "--no-https"])
        .arg(t.path().join("b.sif"))
        .arg(&uri);
    let shown = on_a_terminal(&script, &quiet);
    assert!(!shown.contains('%'), "{shown:?}");
    nothing_half_written(t.path());
}

/// The network client lives in `veil-registry`, which veil finds beside itself or in
/// `../libexec/veil/`. Without it, containers of local files still run and registry
/// work fails in one line; the helper itself answers only veil's requests.
#[test]
fn the_registry_helper_is_found_beside_veil_or_in_libexec() {
    let t = tempfile::tempdir().unwrap();
    let sif = require!(
        fixture(t.path()),
        "busybox, mksquashfs or /dev/fuse missing"
    );
    let home = t.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    // Nothing listens on port 9 (discard) of loopback here.
    let uri = "oras://127.0.0.1:9/veil/app:1";
    let at = |bin: &Path| program_at(bin, &home);

    // veil alone.
    let alone = t.path().join("alone");
    std::fs::create_dir(&alone).unwrap();
    copy_executable(Path::new(env!("CARGO_BIN_EXE_veil")), &alone.join("veil")).unwrap();
    let veil = alone.join("veil");
    let o = at(&veil)
        .args(["exec", sif.to_str().unwrap(), "cat", "/data/hello.txt"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let dest = t.path().join("x.sif");
    let o = at(&veil).arg("pull").arg(&dest).arg(uri).output().unwrap();
    fails_in_one_line(&o, "veil-registry: not found");
    assert!(!dest.exists());
    let o = at(&veil).args(["run", uri]).output().unwrap();
    fails_in_one_line(&o, "veil-registry: not found");

    // A system layout: bin/veil and libexec/veil/veil-registry. The helper runs: the
    // error is the registry's absence, not its own.
    let bin = t.path().join("usr/bin");
    let libexec = t.path().join("usr/libexec/veil");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&libexec).unwrap();
    copy_executable(Path::new(env!("CARGO_BIN_EXE_veil")), &bin.join("veil")).unwrap();
    let helper = libexec.join("veil-registry");
    copy_executable(Path::new(env!("CARGO_BIN_EXE_veil-registry")), &helper).unwrap();
    let o = at(&bin.join("veil"))
        .args(["pull", "--no-https"])
        .arg(&dest)
        .arg(uri)
        .output()
        .unwrap();
    fails_in_one_line(&o, "is the registry running");
    assert!(!dest.exists());

    // The helper on its own: a request that is not veil's, or from another version.
    for (input, want) in [
        ("", "an unreadable request"),
        ("pull oras://x/y:1", "an unreadable request"),
        (
            r#"{"version":"0.0.1","request":{"op":"fetch-sif","uri":"oras://x/y:1"},"options":{"no_https":false,"quiet":true,"arch":null,"username":null,"password":null}}"#,
            "veil 0.0.1 sent the request",
        ),
    ] {
        let mut c = Command::new(&helper)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        c.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        let o = c.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(1), "{input}");
        let reply: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let err = reply["error"].as_str().unwrap_or_default();
        assert!(err.contains(want), "{input}: {reply}");
    }
}
