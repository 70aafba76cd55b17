//! `veil build` end to end, unprivileged (uid 65534 when the tests run as root): every
//! source type, checked with the real siftool, unsquashfs and (for encrypted builds)
//! shared/interop/check-encrypted-sif, then run with `veil run`.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

struct Env {
    user: Unprivileged,
    /// A directory the unprivileged user owns (sources and outputs).
    work: PathBuf,
    /// SOURCE_DATE_EPOCH for every build (so separate builds have equal labels).
    sde: Option<String>,
}

fn setup() -> Option<Env> {
    which("siftool")?;
    which("unsquashfs")?;
    let user = Unprivileged::new()?;
    let work = user.dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    busybox_rootfs(&work)?;
    std::fs::write(work.join("payload.txt"), "copied by %files\n").unwrap();
    user.own(&work);
    Some(Env {
        user,
        work,
        sde: None,
    })
}

fn build(env: &Env, args: &[&str]) -> std::process::Output {
    let mut c = env.user.veil();
    c.current_dir(&env.work).arg("build").arg("-q").args(args);
    if let Some(t) = &env.sde {
        c.env("SOURCE_DATE_EPOCH", t);
    }
    c.output().unwrap()
}

fn build_ok(env: &Env, args: &[&str]) {
    let o = build(env, args);
    assert!(
        o.status.success(),
        "veil build {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The primary partition's bytes, via `siftool dump`.
fn dump_partition(sif: &Path, to: &Path) {
    let list = siftool_list(sif);
    let id = list
        .lines()
        .find(|l| l.contains("*System"))
        .and_then(|l| l.split('|').next())
        .map(|s| s.trim().to_string())
        .expect("a primary partition");
    let o = run_ok(Command::new("siftool").arg("dump").arg(id).arg(sif));
    std::fs::write(to, &o.stdout).unwrap();
}

fn unsquashfs_paths(img: &Path) -> Vec<String> {
    let o = run_ok(Command::new("unsquashfs").args(["-lln", "-d", ""]).arg(img));
    stdout(&o)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5).map(|p| p.to_string()))
        .collect()
}

fn tree_paths(root: &Path) -> Vec<String> {
    fn walk(root: &Path, p: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(p).unwrap().flatten() {
            let path = e.path();
            out.push(format!("/{}", path.strip_prefix(root).unwrap().display()));
            if e.file_type().unwrap().is_dir() {
                walk(root, &path, out);
            }
        }
    }
    let mut v = Vec::new();
    walk(root, root, &mut v);
    v
}

const DEF: &str = "\
Bootstrap: localimage
From: rootfs

%arguments
    WHO=world

%files
    payload.txt /opt/payload.txt

%post
    echo \"hello {{ WHO }}\" > /opt/greeting
    echo 'export FROM_POST=post-value' >> $APPTAINER_ENVIRONMENT
    [ \"$(id -u)\" = 0 ]

%environment
    export GREETING_FILE=/opt/greeting

%runscript
    cat $GREETING_FILE
    echo \"args: $* post: $FROM_POST\"

%startscript
    echo started

%test
    grep -q hello /opt/greeting

%labels
    Author veil-tests
    Version 1.2

%help
    Say hello.
";

#[test]
fn definition_file_builds_the_apptainer_layout_and_runs() {
    let env = require!(
        setup(),
        "siftool, squashfs-tools, busybox or user namespaces missing"
    );
    std::fs::write(env.work.join("app.def"), DEF).unwrap();
    build_ok(&env, &["--build-arg", "WHO=veil", "app.sif", "app.def"]);
    let sif = env.work.join("app.sif");
    let list = siftool_list(&sif);
    assert!(list.contains("|Def.FILE"), "{list}");
    assert!(list.contains("|JSON.Generic"), "{list}");
    assert!(list.contains("FS (Squashfs/*System/"), "{list}");
    let info = stdout(&run_ok(
        Command::new("siftool").args(["info", "2"]).arg(&sif),
    ));
    assert!(info.contains("inspect-metadata.json"), "{info}");
    let def = stdout(&run_ok(
        Command::new("siftool").args(["dump", "1"]).arg(&sif),
    ));
    assert!(
        def.contains("From: rootfs") && def.contains("hello veil"),
        "{def}"
    );
    let meta = stdout(&run_ok(
        Command::new("siftool").args(["dump", "2"]).arg(&sif),
    ));
    let v: serde_json::Value = serde_json::from_str(&meta).unwrap();
    let attrs = &v["data"]["attributes"];
    assert_eq!(attrs["labels"]["Author"], "veil-tests");
    assert!(
        attrs["runscript"]
            .as_str()
            .unwrap()
            .contains("cat $GREETING_FILE")
    );
    assert!(attrs["deffile"].as_str().unwrap().contains("%post"));

    let part = env.work.join("part.sqfs");
    dump_partition(&sif, &part);
    let paths = unsquashfs_paths(&part);
    for p in [
        "/.singularity.d/runscript",
        "/.singularity.d/startscript",
        "/.singularity.d/test",
        "/.singularity.d/labels.json",
        "/.singularity.d/runscript.help",
        "/.singularity.d/env/01-base.sh",
        "/.singularity.d/env/90-environment.sh",
        "/.singularity.d/env/91-environment.sh",
        "/.singularity.d/env/99-base.sh",
        "/.singularity.d/actions/run",
        "/.singularity.d/actions/exec",
        "/singularity",
        "/environment",
        "/opt/payload.txt",
        "/opt/greeting",
    ] {
        assert!(paths.iter().any(|x| x == p), "{p} missing from {paths:?}");
    }
    // Every file of the source tree is in the image, owned by root.
    for p in tree_paths(&env.work.join("rootfs")) {
        assert!(paths.contains(&p), "{p} missing");
    }
    let ll = stdout(&run_ok(
        Command::new("unsquashfs")
            .args(["-lln", "-d", ""])
            .arg(&part),
    ));
    assert!(ll.lines().all(|l| l.contains(" 0/0 ")), "{ll}");

    let o = env
        .user
        .veil()
        .arg("run")
        .arg(&sif)
        .args(["a", "b"])
        .output()
        .unwrap();
    let out = stdout(&o);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("hello veil"), "{out}");
    assert!(out.contains("args: a b post: post-value"), "{out}");
    let o = env
        .user
        .veil()
        .arg("exec")
        .arg(&sif)
        .args(["cat", "/.singularity.d/labels.json"])
        .output()
        .unwrap();
    assert!(
        stdout(&o).contains("\"Version\": \"1.2\""),
        "{}",
        stdout(&o)
    );
}

#[test]
fn directory_sandbox_and_sif_sources() {
    let env = require!(
        setup(),
        "siftool, squashfs-tools, busybox or user namespaces missing"
    );
    // Directory -> SIF: the tree is the source tree plus the layout.
    build_ok(&env, &["dir.sif", "rootfs"]);
    let sif = env.work.join("dir.sif");
    let part = env.work.join("dir.sqfs");
    dump_partition(&sif, &part);
    let paths = unsquashfs_paths(&part);
    for p in tree_paths(&env.work.join("rootfs")) {
        assert!(paths.contains(&p), "{p} missing");
    }
    assert!(paths.iter().any(|p| p == "/.singularity.d/actions/run"));
    // The inspect metadata object carries the image's own runscript.
    let list = siftool_list(&sif);
    let json_id = list
        .lines()
        .find(|l| l.contains("JSON.Generic"))
        .and_then(|l| l.split('|').next())
        .unwrap()
        .trim()
        .to_string();
    let meta = stdout(&run_ok(
        Command::new("siftool").arg("dump").arg(json_id).arg(&sif),
    ));
    assert!(meta.contains("runscript: $*"), "{meta}");
    // The image's own runscript (from busybox_rootfs) is kept.
    let o = env
        .user
        .veil()
        .arg("run")
        .arg(&sif)
        .arg("x")
        .output()
        .unwrap();
    assert!(stdout(&o).contains("runscript: x"), "{}", stdout(&o));
    // SIF -> sandbox -> SIF.
    build_ok(&env, &["--sandbox", "sb", "dir.sif"]);
    assert!(env.work.join("sb/.singularity.d/runscript").is_file());
    assert!(env.work.join("sb/data/hello.txt").is_file());
    build_ok(&env, &["sb.sif", "sb"]);
    let o = env
        .user
        .veil()
        .arg("exec")
        .arg(env.work.join("sb.sif"))
        .args(["cat", "/data/hello.txt"])
        .output()
        .unwrap();
    assert_eq!(stdout(&o), "hello from the image\n");
    // Bootstrap: scratch with %files.
    std::fs::write(
        env.work.join("scratch.def"),
        "Bootstrap: scratch\n%files\n    rootfs/bin /bin\n    payload.txt\n%runscript\n    echo scratch-ok\n",
    )
    .unwrap();
    build_ok(&env, &["scratch.sif", "scratch.def"]);
    let o = env
        .user
        .veil()
        .arg("run")
        .arg(env.work.join("scratch.sif"))
        .output()
        .unwrap();
    assert_eq!(
        stdout(&o),
        "scratch-ok\n",
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn reproducible_with_source_date_epoch() {
    let env = require!(
        setup(),
        "siftool, squashfs-tools, busybox or user namespaces missing"
    );
    for name in ["r1.sif", "r2.sif"] {
        let o = env
            .user
            .veil()
            .current_dir(&env.work)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .args(["build", "-q", name, "rootfs"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let a = std::fs::read(env.work.join("r1.sif")).unwrap();
    let b = std::fs::read(env.work.join("r2.sif")).unwrap();
    assert!(a == b, "two builds with SOURCE_DATE_EPOCH differ");
}

fn pem_pair(dir: &Path) -> Option<(PathBuf, PathBuf)> {
    which("openssl")?;
    let pri = dir.join("pri.pem");
    let publ = dir.join("pub.pem");
    run_ok(
        Command::new("openssl")
            .args(["genrsa", "-traditional", "-out"])
            .arg(&pri)
            .arg("2048"),
    );
    run_ok(
        Command::new("openssl")
            .args(["rsa", "-RSAPublicKey_out", "-in"])
            .arg(&pri)
            .arg("-out")
            .arg(&publ),
    );
    std::fs::set_permissions(&pri, std::fs::Permissions::from_mode(0o644)).unwrap();
    Some((pri, publ))
}

fn check_encrypted(sif: &Path, key: &[&str], compare: &Path) -> Option<()> {
    let script = shared_dir()?.join("interop/check-encrypted-sif");
    script.is_file().then_some(())?;
    let o = Command::new(script)
        .arg(sif)
        .args(key)
        .arg("--compare-dir")
        .arg(compare)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "check-encrypted-sif {key:?}: {}{}",
        stdout(&o),
        String::from_utf8_lossy(&o.stderr)
    );
    Some(())
}

#[test]
fn encrypted_builds_pass_the_interop_check_and_run() {
    let mut env = require!(
        setup(),
        "siftool, squashfs-tools, busybox or user namespaces missing"
    );
    env.sde = Some("1700000000".into());
    let (pri, publ) = require!(pem_pair(&env.work), "openssl missing");
    std::fs::write(env.work.join("pass"), "correct horse\n").unwrap();
    env.user.own(&env.work);
    let fast = ["--kdf-time", "50", "--kdf-memory", "16"];
    let mut args = fast.to_vec();
    args.extend(["--passphrase-file", "pass", "pass.sif", "rootfs"]);
    build_ok(&env, &args);
    build_ok(
        &env,
        &["--pem-path", publ.to_str().unwrap(), "pem.sif", "rootfs"],
    );
    let list = siftool_list(&env.work.join("pem.sif"));
    assert!(list.contains("FS (Encrypted squashfs/*System/"), "{list}");
    assert!(
        list.contains("Cryptographic Message (PEM/RSA-OAEP)"),
        "{list}"
    );
    assert!(!siftool_list(&env.work.join("pass.sif")).contains("Cryptographic"));
    // Environment variable alone: no encryption, with a warning; with -e: encrypted.
    let o = env
        .user
        .veil()
        .current_dir(&env.work)
        .env("APPTAINER_ENCRYPTION_PASSPHRASE", "pw")
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .args(["build", "-q", "noenc.sif", "rootfs"])
        .output()
        .unwrap();
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("NOT encrypting"));
    assert!(siftool_list(&env.work.join("noenc.sif")).contains("FS (Squashfs/"));
    let mut args = vec!["build", "-q", "-e"];
    args.extend(fast);
    args.extend(["envenc.sif", "rootfs"]);
    let o = env
        .user
        .veil()
        .current_dir(&env.work)
        .env("APPTAINER_ENCRYPTION_PASSPHRASE", "pw")
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .args(&args)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // What the image must hold: the same build, as a sandbox.
    build_ok(&env, &["--sandbox", "expected", "rootfs"]);
    let rootfs = env.work.join("expected");
    if check_encrypted(
        &env.work.join("pass.sif"),
        &["--passphrase", "correct horse"],
        &rootfs,
    )
    .is_none()
    {
        eprintln!("SKIP interop check: shared/interop/check-encrypted-sif missing");
    }
    check_encrypted(
        &env.work.join("pem.sif"),
        &["--pem-path", pri.to_str().unwrap()],
        &rootfs,
    );
    check_encrypted(
        &env.work.join("envenc.sif"),
        &["--passphrase", "pw"],
        &rootfs,
    );

    let o = env
        .user
        .veil()
        .arg("run")
        .arg("--pem-path")
        .arg(&pri)
        .arg(env.work.join("pem.sif"))
        .arg("pem")
        .output()
        .unwrap();
    assert!(
        stdout(&o).contains("runscript: pem"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = env
        .user
        .veil()
        .arg("run")
        .arg("--passphrase-file")
        .arg(env.work.join("pass"))
        .arg(env.work.join("pass.sif"))
        .arg("pp")
        .output()
        .unwrap();
    assert!(
        stdout(&o).contains("runscript: pp"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // Conversions: encrypted -> plain, and re-encryption for another key, without
    // unpacking; the metadata objects are kept, or left out on request.
    build_ok(
        &env,
        &[
            "--source-pem-path",
            pri.to_str().unwrap(),
            "plain.sif",
            "pem.sif",
        ],
    );
    assert!(siftool_list(&env.work.join("plain.sif")).contains("FS (Squashfs/"));
    let o = env
        .user
        .veil()
        .arg("run")
        .arg(env.work.join("plain.sif"))
        .arg("dec")
        .output()
        .unwrap();
    assert!(stdout(&o).contains("runscript: dec"));
    build_ok(
        &env,
        &[
            "--source-passphrase-file",
            "pass",
            "--pem-path",
            publ.to_str().unwrap(),
            "--no-plaintext-metadata",
            "re.sif",
            "pass.sif",
        ],
    );
    check_encrypted(
        &env.work.join("re.sif"),
        &["--pem-path", pri.to_str().unwrap()],
        &rootfs,
    );
    let o = build(&env, &["nokey.sif", "pem.sif"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("encrypted"));
    assert!(!env.work.join("nokey.sif").exists());
}

fn no_temporaries(dir: &Path) {
    let left: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".veil"))
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
}

#[test]
fn bad_recipes_name_the_line_and_leave_nothing() {
    let env = require!(
        setup(),
        "siftool, squashfs-tools, busybox or user namespaces missing"
    );
    let cases: &[(&str, &str, &str)] = &[
        (
            "unknown.def",
            "Bootstrap: localimage\nFrom: rootfs\n\n%post\n  true\n%bogus\n",
            "unknown.def:6: unknown section %bogus",
        ),
        (
            "nofrom.def",
            "# x\nBootstrap: localimage\n%post\n  true\n",
            "nofrom.def:2: Bootstrap: localimage needs a `From:` header",
        ),
        (
            "fails.def",
            "Bootstrap: localimage\nFrom: rootfs\n\n%post\n  echo before\n  false\n  echo after\n",
            "fails.def:4: %post failed (exit status 1)",
        ),
        (
            "badfrom.def",
            "Bootstrap: localimage\nFrom: nowhere\n",
            "badfrom.def:2: From: nowhere",
        ),
        (
            "noarg.def",
            "Bootstrap: scratch\n%runscript\n  echo {{ MISSING }}\n",
            "noarg.def:3: build argument \"MISSING\"",
        ),
    ];
    for (name, text, want) in cases {
        std::fs::write(env.work.join(name), text).unwrap();
        let o = build(&env, &["bad.sif", name]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{name} built");
        let last = err.lines().last().unwrap_or("");
        assert!(
            last.starts_with("veil: error: ") && last.contains(want),
            "{name}: {err}"
        );
        assert!(!env.work.join("bad.sif").exists());
        no_temporaries(&env.work);
    }
    // An existing output is kept without --force, replaced with it, and a failed
    // build leaves the old one untouched.
    build_ok(&env, &["keep.sif", "rootfs"]);
    let before = std::fs::read(env.work.join("keep.sif")).unwrap();
    let o = build(&env, &["keep.sif", "rootfs"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("exists (use --force"));
    let o = build(&env, &["--force", "keep.sif", "fails.def"]);
    assert!(!o.status.success());
    assert_eq!(std::fs::read(env.work.join("keep.sif")).unwrap(), before);
    build_ok(
        &env,
        &["--force", "--compression", "zstd", "keep.sif", "rootfs"],
    );
    assert_ne!(std::fs::read(env.work.join("keep.sif")).unwrap(), before);
    no_temporaries(&env.work);
}

#[test]
fn inspect_shows_build_metadata_from_objects_or_the_image() {
    let env = require!(
        setup(),
        "siftool, squashfs-tools, busybox or user namespaces missing"
    );
    let def = "Bootstrap: localimage\nFrom: rootfs\n%environment\n    export A=1\n%runscript\n    echo run\n%test\n    true\n%labels\n    Who me\n%help\n    Some help.\n";
    std::fs::write(env.work.join("meta.def"), def).unwrap();
    std::fs::write(env.work.join("pass"), "pw").unwrap();
    env.user.own(&env.work);
    build_ok(&env, &["meta.sif", "meta.def"]);
    build_ok(
        &env,
        &[
            "--passphrase-file",
            "pass",
            "--kdf-time",
            "50",
            "--kdf-memory",
            "16",
            "--no-plaintext-metadata",
            "enc.sif",
            "meta.def",
        ],
    );
    let list = siftool_list(&env.work.join("enc.sif"));
    assert!(
        !list.contains("Def.FILE") && !list.contains("JSON.Generic"),
        "{list}"
    );
    let inspect = |args: &[&str]| {
        let o = env
            .user
            .veil()
            .current_dir(&env.work)
            .arg("inspect")
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_str::<serde_json::Value>(&stdout(&o)).unwrap()
    };
    for args in [
        vec!["--json", "--all", "meta.sif"],
        vec!["--json", "--all", "--passphrase-file", "pass", "enc.sif"],
    ] {
        let v = inspect(&args);
        let a = &v["attributes"];
        assert_eq!(a["labels"]["Who"], "me", "{v}");
        assert!(
            a["deffile"].as_str().unwrap().contains("From: rootfs"),
            "{v}"
        );
        assert!(a["runscript"].as_str().unwrap().contains("echo run"), "{v}");
        assert!(a["test"].as_str().unwrap().contains("true"), "{v}");
        assert!(
            a["helpfile"].as_str().unwrap().contains("Some help."),
            "{v}"
        );
        assert!(
            a["environment"]["90-environment.sh"]
                .as_str()
                .unwrap()
                .contains("export A=1"),
            "{v}"
        );
    }
    // Without the key, an encrypted image without metadata objects shows what it can.
    let v = inspect(&["--json", "-l", "enc.sif"]);
    assert!(v["note"].as_str().unwrap().contains("encrypted"), "{v}");
    let o = env
        .user
        .veil()
        .current_dir(&env.work)
        .args(["inspect", "-r", "meta.sif"])
        .output()
        .unwrap();
    assert!(
        stdout(&o).contains("== runscript ==\n#!/bin/sh\n\n    echo run"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn an_interrupted_build_leaves_nothing_behind() {
    let env = require!(
        setup(),
        "siftool, squashfs-tools, busybox or user namespaces missing"
    );
    // A command line no other process on the machine has, so that pgrep below
    // finds only what this build left behind.
    let sleeper = format!("sleep {}", 100_000 + std::process::id());
    std::fs::write(
        env.work.join("slow.def"),
        format!("Bootstrap: localimage\nFrom: rootfs\n%post\n    {sleeper}\n"),
    )
    .unwrap();
    env.user.own(&env.work);
    let mut c = env.user.veil();
    c.current_dir(&env.work)
        .args(["build", "-q", "slow.sif", "slow.def"]);
    c.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let child = c.spawn().unwrap();
    // Wait until %post runs (the staging tree exists), then interrupt.
    let t0 = std::time::Instant::now();
    while !std::fs::read_dir(&env.work)
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with(".veil-build"))
    {
        assert!(t0.elapsed().as_secs() < 60, "the build never started");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!env.work.join("slow.sif").exists());
    no_temporaries(&env.work);
    // The script's processes went with it (its PID namespace died; the kernel
    // reaps the rest of the namespace right after its first process).
    let t0 = std::time::Instant::now();
    loop {
        let Ok(ps) = Command::new("pgrep").args(["-f", &sleeper]).output() else {
            break;
        };
        if stdout(&ps).trim().is_empty() {
            break;
        }
        assert!(t0.elapsed().as_secs() < 10, "left running: {}", stdout(&ps));
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// A file that appears at the destination while a build without `--force` runs is
/// not replaced: the build fails in one line and leaves it as it was.
#[test]
fn a_destination_that_appears_during_a_build_is_kept() {
    let env = require!(
        setup(),
        "siftool, squashfs-tools, busybox or user namespaces missing"
    );
    std::fs::write(
        env.work.join("slow.def"),
        "Bootstrap: localimage\nFrom: rootfs\n%post\n    sleep 2\n",
    )
    .unwrap();
    env.user.own(&env.work);
    for (out, extra) in [("slow.sif", None), ("slow-sandbox", Some("--sandbox"))] {
        let mut c = env.user.veil();
        c.current_dir(&env.work).args(["build", "-q"]);
        c.args(extra).args([out, "slow.def"]);
        c.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        let child = c.spawn().unwrap();
        // Once the build stages (past its check of the destination), a file appears.
        let t0 = std::time::Instant::now();
        while !std::fs::read_dir(&env.work)
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(".veil-build"))
        {
            assert!(t0.elapsed().as_secs() < 60, "the build never started");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        std::fs::write(env.work.join(out), "someone else's\n").unwrap();
        let o = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(veil_failed(o.status), "{out}: {err}");
        // (Before it, what %post printed.)
        let last = err.trim_end().lines().last().unwrap_or_default();
        assert!(
            last.starts_with("veil: error: ") && last.contains(&format!("{out} exists")),
            "{err}"
        );
        assert_eq!(
            std::fs::read_to_string(env.work.join(out)).unwrap(),
            "someone else's\n"
        );
        no_temporaries(&env.work);
    }
}

const SUBID_DEF: &str = "\
Bootstrap: localimage
From: rootfs

%post
    cat /proc/self/uid_map > /uid_map
    busybox mkdir /secret
    echo hidden > /secret/f
    busybox chmod 600 /secret/f
    busybox chmod 700 /secret
    busybox chown -R 1234:2345 /secret
";

/// `veil build` as the test user with subordinate ids. As root, the ranges are given
/// to uid 65534 by files bound over /etc/subuid and /etc/subgid in a private mount
/// namespace (the host's files are not touched; newuidmap reads them from there).
/// Otherwise the caller's own configuration is used, when it has one.
fn build_with_subids(env: &Env, args: &[&str]) -> Option<std::process::Output> {
    which("newuidmap")?;
    which("newgidmap")?;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        let name = std::env::var("USER").unwrap_or_default();
        let has = |f: &str| {
            std::fs::read_to_string(f).is_ok_and(|t| {
                t.lines().any(|l| {
                    l.starts_with(&format!("{name}:"))
                        || l.starts_with(&format!("{}:", env.user.uid))
                })
            })
        };
        if !(has("/etc/subuid") && has("/etc/subgid")) {
            return None;
        }
        return Some(build(env, args));
    }
    which("setpriv")?;
    let dir = env.user.dir.path();
    for f in ["subuid", "subgid"] {
        std::fs::write(dir.join(f), "nobody:300000:65536\n").unwrap();
    }
    let mut c = Command::new("unshare");
    c.arg("-m")
        .arg("sh")
        .arg("-c")
        .arg(
            "mount --bind \"$1/subuid\" /etc/subuid && mount --bind \"$1/subgid\" /etc/subgid \
             && shift && exec setpriv --reuid 65534 --regid 65534 --clear-groups \"$@\"",
        )
        .arg("sh")
        .arg(dir)
        .arg(&env.user.bin)
        .arg("build")
        .arg("-q")
        .args(args)
        .current_dir(&env.work)
        .env_clear()
        .env("HOME", &env.user.home)
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("LANG", "C.UTF-8");
    Some(c.output().unwrap())
}

#[test]
fn post_gets_subordinate_ids_when_they_are_configured() {
    let env = require!(
        setup(),
        "siftool, squashfs-tools, busybox or user namespaces missing"
    );
    std::fs::write(env.work.join("subid.def"), SUBID_DEF).unwrap();
    let o = require!(
        build_with_subids(&env, &["subid.sif", "subid.def"]),
        "newuidmap/newgidmap/setpriv missing, or (not running as root) no /etc/subuid and /etc/subgid ranges for this user"
    );
    assert!(
        o.status.success(),
        "build with subordinate ids failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    no_temporaries(&env.work);
    let img = env.work.join("subid.sqfs");
    dump_partition(&env.work.join("subid.sif"), &img);
    let listing = stdout(&run_ok(
        Command::new("unsquashfs")
            .args(["-lln", "-d", ""])
            .arg(&img),
    ));
    let owner_of = |path: &str| {
        listing
            .lines()
            .find(|l| l.split_whitespace().nth(5) == Some(path))
            .map(|l| {
                let f: Vec<_> = l.split_whitespace().collect();
                format!("{} {}", f[0], f[1])
            })
            .unwrap_or_else(|| panic!("{path} not in the image:\n{listing}"))
    };
    // Owners %post gave stay in the image; what the caller owned is root's.
    assert_eq!(owner_of("/secret"), "drwx------ 1234/2345");
    assert_eq!(owner_of("/secret/f"), "-rw------- 1234/2345");
    assert_eq!(owner_of("/bin/busybox").split(' ').nth(1), Some("0/0"));
    // %post saw the caller as root and the range as ids 1 and up.
    let map = stdout(&run_ok(
        Command::new("unsquashfs")
            .args(["-cat"])
            .arg(&img)
            .arg("uid_map"),
    ));
    let lines: Vec<Vec<&str>> = map
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines.len(), 2, "uid_map in %post: {map}");
    assert_eq!(lines[0], ["0", &env.user.uid.to_string(), "1"]);
    assert_eq!(lines[1][0], "1");
    assert!(lines[1][2].parse::<u32>().unwrap() > 0);

    // --ignore-subuid: a single id, so the chown fails and so does the build, at its line.
    let o = require!(
        build_with_subids(&env, &["--ignore-subuid", "single.sif", "subid.def"]),
        "unreachable: the first build ran"
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("subid.def:4: %post failed"), "{err}");
    assert!(!env.work.join("single.sif").exists());
    no_temporaries(&env.work);
}

/// A key given on a descriptor is closed once read, and key variables leave the
/// environment: neither `%setup` (on the host) nor `%post` sees them.
#[test]
fn build_scripts_see_no_key_descriptor_or_key_variable() {
    let env = require!(
        setup(),
        "siftool, squashfs-tools, busybox or user namespaces missing"
    );
    std::fs::write(env.work.join("pass"), "correct horse\n").unwrap();
    std::fs::write(
        env.work.join("leak.def"),
        "Bootstrap: localimage\nFrom: rootfs\n\n%setup\n    { cat /proc/self/fd/3; env; } > \"$APPTAINER_ROOTFS/setup.txt\" 2>&1 || true\n\n%post\n    { cat /proc/self/fd/3; env; } > /post.txt 2>&1 || true\n",
    )
    .unwrap();
    env.user.own(&env.work);
    let key = std::fs::File::open(env.work.join("pass")).unwrap();
    let mut c = env.user.veil();
    c.current_dir(&env.work)
        .args(["build", "-q", "--kdf-time", "50", "--kdf-memory", "16"])
        .args(["--passphrase-fd", "3", "leak.sif", "leak.def"])
        .env("VEIL_ENCRYPTION_PEM_DATA", "decoy-key-material");
    inherit_fds(&mut c, &[(&key, 3)]);
    let o = c.output().unwrap();
    drop(key);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = run_ok(
        env.user
            .veil()
            .current_dir(&env.work)
            .args(["exec", "--passphrase-file", "pass", "leak.sif"])
            .args(["cat", "/setup.txt", "/post.txt"]),
    );
    let seen = stdout(&o);
    assert!(seen.contains("LANG="), "the scripts did not run: {seen}");
    assert!(
        !seen.contains("correct horse"),
        "a script read the key: {seen}"
    );
    assert!(
        !seen.contains("decoy-key-material"),
        "a script saw the key variable: {seen}"
    );
}

/// The squashfs of an image about to be encrypted holds its contents in the clear:
/// while it exists (beside the output, for the whole key derivation and encryption)
/// no other user may read it. Watches the output directory during a real encrypted
/// build and fails on any temporary file readable by group or others.
#[test]
fn plaintext_temporaries_of_an_encrypted_build_are_private() {
    use std::os::unix::fs::MetadataExt;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let env = require!(
        setup(),
        "siftool, squashfs-tools, busybox or user namespaces missing"
    );
    std::fs::write(env.work.join("pass"), "correct horse\n").unwrap();
    env.user.own(&env.work);
    let done = Arc::new(AtomicBool::new(false));
    let seen: Arc<Mutex<std::collections::BTreeSet<(String, u32)>>> = Arc::default();
    let watcher = {
        let (done, seen, dir) = (done.clone(), seen.clone(), env.work.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                for e in std::fs::read_dir(&dir).unwrap().flatten() {
                    let n = e.file_name().to_string_lossy().into_owned();
                    if !n.starts_with(".veil-squashfs") && !n.starts_with(".veil-luks") {
                        continue;
                    }
                    if let Ok(md) = e.metadata() {
                        seen.lock().unwrap().insert((n, md.mode() & 0o777));
                    }
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        })
    };
    // A key derivation of a second gives the watcher time to look.
    build_ok(
        &env,
        &[
            "--kdf-time",
            "1000",
            "--kdf-memory",
            "16",
            "--passphrase-file",
            "pass",
            "private.sif",
            "rootfs",
        ],
    );
    done.store(true, Ordering::SeqCst);
    watcher.join().unwrap();
    let seen = seen.lock().unwrap();
    assert!(
        seen.iter().any(|(n, _)| n.starts_with(".veil-squashfs")),
        "the plaintext squashfs was never seen: {seen:?}"
    );
    let open: Vec<_> = seen.iter().filter(|(_, m)| m & 0o077 != 0).collect();
    assert!(open.is_empty(), "temporaries readable by others: {open:?}");
    no_temporaries(&env.work);
}
