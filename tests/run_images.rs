//! What is particular to images served by veil's FUSE server: the root is the FUSE
//! mount, large files read correctly from many readers at once, the image's own
//! attributes show through, and broken images fail cleanly.

mod common;

use std::path::PathBuf;
use std::process::Stdio;

use common::*;

struct Env {
    user: Unprivileged,
    sqfs: PathBuf,
    sif: PathBuf,
    big: Vec<Vec<u8>>,
    /// Files small enough for the server's warmer, which pushes their blocks into the
    /// kernel's page cache once any part is read.
    mid: Vec<Vec<u8>>,
    /// /data/small/NNN: one-block files, all pushed into the page cache once any of
    /// them is read.
    small: Vec<Vec<u8>>,
}

fn setup() -> Option<Env> {
    let user = Unprivileged::new()?;
    let root = busybox_rootfs(user.dir.path())?;
    // Four large files: half noise, half text, so both stored and compressed blocks occur.
    let mut big = Vec::new();
    for i in 0..4u64 {
        let mut data = noise(6 << 20, i + 1);
        data.extend(std::iter::repeat_n(b"veil big file line\n".as_slice(), 200_000).flatten());
        std::fs::write(root.join(format!("data/big{i}")), &data).unwrap();
        big.push(data);
    }
    // Mid-sized files: a tail in a fragment, an exact block multiple, one block and a
    // bit, and sparse (all-zero) blocks between noise.
    let mut mid = vec![noise(1_000_003, 11), noise(3 << 20, 12), noise(131_073, 13)];
    let mut sparse = noise(262_144, 14);
    sparse.extend(std::iter::repeat_n(0u8, 524_288));
    sparse.extend(noise(100_000, 15));
    mid.push(sparse);
    for (i, data) in mid.iter().enumerate() {
        std::fs::write(root.join(format!("data/mid{i}")), data).unwrap();
    }
    // Sizes around page and block boundaries, then a spread up to just over a block.
    let mut sizes = vec![
        0usize, 1, 4095, 4096, 4097, 65536, 131_071, 131_072, 131_073,
    ];
    sizes.extend((0..150).map(|i| (i * 7919 * 13) % 140_000));
    std::fs::create_dir_all(root.join("data/small")).unwrap();
    let small: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| noise(n, 100 + i as u64))
        .collect();
    for (i, data) in small.iter().enumerate() {
        std::fs::write(root.join(format!("data/small/{i:03}")), data).unwrap();
    }
    std::fs::create_dir_all(root.join("data/tree/a/b/c")).unwrap();
    std::os::unix::fs::symlink("../hello.txt", root.join("data/tree/link")).unwrap();
    let (sqfs, sif) = squash_and_sif(&root, user.dir.path())?;
    // The tests compare against the data kept in memory; ten of them run at once.
    std::fs::remove_dir_all(root.join("data")).unwrap();
    Some(Env {
        user,
        sqfs,
        sif,
        big,
        mid,
        small,
    })
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `sh -c script` in the SIF and in the plain squashfs; each image with its stdout.
fn in_both_images<'a>(e: &'a Env, script: &str) -> Vec<(&'a PathBuf, String)> {
    [&e.sif, &e.sqfs]
        .into_iter()
        .map(|image| {
            let o = run_ok(
                e.user
                    .veil()
                    .arg("exec")
                    .arg(image)
                    .args(["sh", "-c", script]),
            );
            (image, stdout(&o))
        })
        .collect()
}

#[test]
fn the_root_is_the_fuse_mount_and_it_is_read_only() {
    let e = require!(
        setup(),
        "no unprivileged user namespace, busybox, mksquashfs or /dev/fuse"
    );
    let o = run_ok(e.user.veil().arg("exec").arg(&e.sif).args(["sh", "-c", "grep ' / ' /proc/self/mounts; touch /x 2>&1; readlink /data/tree/link; cat /data/tree/link"]));
    let s = stdout(&o);
    let first = s.lines().next().unwrap();
    assert!(
        first.starts_with("image.sif / fuse.veil ro,nosuid,nodev"),
        "{s}"
    );
    assert!(s.contains("Read-only file system"), "{s}");
    assert!(s.contains("../hello.txt\nhello from the image\n"), "{s}");
}

#[test]
fn eight_parallel_readers_read_the_right_bytes() {
    let e = require!(
        setup(),
        "no unprivileged user namespace, busybox, mksquashfs or /dev/fuse"
    );
    // Eight readers, two per file, started together in one container.
    let script = "for i in 0 1 2 3 0 1 2 3; do sha256sum /data/big$i & done; wait";
    for (image, s) in in_both_images(&e, script) {
        assert_eq!(s.lines().count(), 8, "{s}");
        for line in s.lines() {
            let (sum, path) = line.split_once("  ").unwrap();
            let i: usize = path.trim_start_matches("/data/big").parse().unwrap();
            assert_eq!(sum, sha256_hex(&e.big[i]), "{path} in {}", image.display());
        }
    }
    // Random-offset reads through dd agree with the file.
    let o = run_ok(e.user.veil().arg("exec").arg(&e.sif).args([
        "sh",
        "-c",
        "dd if=/data/big2 bs=4096 skip=1500 count=3 2>/dev/null",
    ]));
    assert_eq!(o.stdout, e.big[2][1500 * 4096..1503 * 4096]);
}

#[test]
fn files_read_out_of_order_are_warmed_and_read_right() {
    let e = require!(
        setup(),
        "no unprivileged user namespace, busybox, mksquashfs or /dev/fuse"
    );
    // Each file is first read at its end and then at its start (the warmer then pushes
    // every block into the page cache), then at scattered offsets and whole, by two
    // readers at once. mid2 is too small to be warmed and is read the ordinary way.
    let mut script = String::new();
    for (i, data) in e.mid.iter().enumerate() {
        // The last page, then the first: a reader jumping around, as a program being
        // started does, which makes the server warm the whole file.
        let last = (data.len() - 1) / 4096;
        script.push_str(&format!(
            "{{ dd if=/data/mid{i} bs=4096 skip={last} count=1; dd if=/data/mid{i} bs=4096 count=1; }} 2>/dev/null | sha256sum; sleep 0.2; \
             for s in 0 31 32 33 63 64 65 70 97; do dd if=/data/mid{i} bs=4096 skip=$s count=2 2>/dev/null; done | sha256sum; \
             sha256sum /data/mid{i} & sha256sum /data/mid{i}; wait\n"
        ));
    }
    for (image, s) in in_both_images(&e, &script) {
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines.len(), 4 * e.mid.len(), "{s}");
        for (i, data) in e.mid.iter().enumerate() {
            let at = |from: usize, len: usize| {
                let end = (from + len).min(data.len());
                data.get(from.min(end)..end).unwrap_or(&[]).to_vec()
            };
            let last = (data.len() - 1) / 4096;
            let mut jumps = at(last * 4096, 4096);
            jumps.extend(at(0, 4096));
            let first = sha256_hex(&jumps);
            let mut scattered = Vec::new();
            for s in [0, 31, 32, 33, 63, 64, 65, 70, 97] {
                scattered.extend(at(s * 4096, 8192));
            }
            let whole = sha256_hex(data);
            let got: Vec<&str> = lines[4 * i..4 * i + 4]
                .iter()
                .map(|l| l.split_whitespace().next().unwrap())
                .collect();
            let what = format!("mid{i} in {}", image.display());
            assert_eq!(got[0], first, "{what}: first read");
            assert_eq!(got[1], sha256_hex(&scattered), "{what}: scattered reads");
            assert_eq!(got[2], whole, "{what}: whole file");
            assert_eq!(got[3], whole, "{what}: whole file, second reader");
        }
    }
}

#[test]
fn the_program_started_reads_right_from_the_page_cache_filled_ahead() {
    let e = require!(
        setup(),
        "no unprivileged user namespace, busybox, mksquashfs or /dev/fuse"
    );
    // The launcher has the program's blocks (busybox, about 2 MB) pushed into the page
    // cache as they are decompressed, racing the program's own page faults and reads:
    // reading the whole file back must give its bytes, in both images.
    let host = std::fs::read(e.user.dir.path().join("rootfs/bin/busybox")).unwrap();
    for image in [&e.sif, &e.sqfs] {
        let o = run_ok(
            e.user
                .veil()
                .arg("exec")
                .arg(image)
                .args(["sha256sum", "/bin/busybox"]),
        );
        let s = stdout(&o);
        assert_eq!(
            s.split_whitespace().next(),
            Some(sha256_hex(&host).as_str()),
            "{}",
            image.display()
        );
    }
}

#[test]
fn missing_names_stay_missing_and_others_are_found() {
    let e = require!(
        setup(),
        "no unprivileged user namespace, busybox, mksquashfs or /dev/fuse"
    );
    // The kernel remembers a missing name (a negative entry): asked again, it is still
    // missing, and its neighbours, the image's own and the mount points made for the
    // container, are still there.
    let script = "for i in 1 2; do test -e /bin/nope || echo miss; test -e /nope/x || echo miss; done; \
                  test -x /bin/ls && echo bin; test -f /etc/hosts && echo hosts; test -d /proc/self && echo proc";
    for (image, s) in in_both_images(&e, script) {
        assert_eq!(
            s,
            "miss\nmiss\nmiss\nmiss\nbin\nhosts\nproc\n",
            "{}",
            image.display()
        );
    }
}

#[test]
fn small_files_pushed_into_the_page_cache_read_right() {
    let e = require!(
        setup(),
        "no unprivileged user namespace, busybox, mksquashfs or /dev/fuse"
    );
    // The first read makes the server push every other small file of the directory
    // into the page cache; the pause lets it finish, so the rest are read from there.
    let script = "cat /data/small/005 >/dev/null; sleep 0.3; cd /data/small && sha256sum *";
    for (image, s) in in_both_images(&e, script) {
        assert_eq!(s.lines().count(), e.small.len(), "{s}");
        for line in s.lines() {
            let (sum, name) = line.split_once("  ").unwrap();
            let i: usize = name.parse().unwrap();
            assert_eq!(
                sum,
                sha256_hex(&e.small[i]),
                "/data/small/{name} ({} bytes) in {}",
                e.small[i].len(),
                image.display()
            );
        }
    }
}

#[test]
fn shell_reads_commands_from_stdin() {
    let e = require!(
        setup(),
        "no unprivileged user namespace, busybox, mksquashfs or /dev/fuse"
    );
    let mut c = e
        .user
        .veil()
        .arg("shell")
        .arg(&e.sif)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    c.stdin
        .take()
        .unwrap()
        .write_all(b"echo in-shell $FROM_IMAGE\nexit 5\n")
        .unwrap();
    let o = c.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(5));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "in-shell image-value\n");
}

#[test]
fn broken_images_fail_with_one_line_errors() {
    let e = require!(
        setup(),
        "no unprivileged user namespace, busybox, mksquashfs or /dev/fuse"
    );
    let dir = e.user.dir.path();
    let check = |path: &PathBuf, want: &str| {
        let o = e
            .user
            .veil()
            .arg("exec")
            .arg(path)
            .arg("true")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(250), "{}: {err}", path.display());
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains(want),
            "{}: expected {want:?} in {err}",
            path.display()
        );
    };
    // Corrupt superblock.
    let mut bytes = std::fs::read(&e.sqfs).unwrap();
    bytes[0] = b'X';
    let p = dir.join("badmagic.sqfs");
    std::fs::write(&p, &bytes).unwrap();
    check(&p, "not a SIF file, a squashfs image or a directory");
    let mut bytes = std::fs::read(&e.sqfs).unwrap();
    bytes[20..22].copy_from_slice(&99u16.to_le_bytes()); // compressor id
    let p = dir.join("badcomp.sqfs");
    std::fs::write(&p, &bytes).unwrap();
    check(&p, "compressor");
    // Truncated squashfs.
    let bytes = std::fs::read(&e.sqfs).unwrap();
    let p = dir.join("short.sqfs");
    std::fs::write(&p, &bytes[..bytes.len() / 3]).unwrap();
    check(&p, "squashfs");
    // A SIF without a primary partition.
    let p = dir.join("noprim.sif");
    run_ok(veil().args(["sif", "new"]).arg(&p));
    run_ok(
        veil()
            .args(["sif", "add", "--datatype", "1"])
            .arg(&p)
            .arg(&e.sqfs),
    );
    check(&p, "no primary system partition");
    // A truncated SIF.
    let bytes = std::fs::read(&e.sif).unwrap();
    let p = dir.join("short.sif");
    std::fs::write(&p, &bytes[..40_000]).unwrap();
    check(&p, "truncated");
    // Not there at all.
    check(&dir.join("missing.sif"), "missing.sif: No such file");
    // A corrupt data block inside an otherwise valid image: the container sees EIO,
    // the launcher names the problem once, and nothing hangs. squashfs has no checksums,
    // so the damage goes where a compressed block is: the data of /a/text.txt, which
    // mksquashfs writes first, right after the 96-byte superblock.
    let bad = dir.join("bad");
    let root = busybox_rootfs(&bad).unwrap();
    std::fs::create_dir_all(root.join("a")).unwrap();
    let text: String = (0..60_000)
        .map(|i| format!("line {i} of a compressible file\n"))
        .collect();
    std::fs::write(root.join("a/text.txt"), text).unwrap();
    let (sqfs, _) = squash_and_sif(&root, &bad).unwrap();
    let mut bytes = std::fs::read(&sqfs).unwrap();
    for b in &mut bytes[2000..20_000] {
        *b ^= 0x5a;
    }
    std::fs::write(&sqfs, &bytes).unwrap();
    let o = e
        .user
        .veil()
        .arg("exec")
        .arg(&sqfs)
        .args(["sh", "-c", "cat /a/text.txt > /dev/null; echo rc=$?"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        out.trim(),
        "rc=1",
        "the reader sees an I/O error: {out} {err}"
    );
    assert_eq!(err.matches("error reading the image").count(), 1, "{err}");
}

/// An image with no environment scripts: `exec` starts the program itself, found on
/// the container's PATH (not the launcher's); what is not found falls back to the
/// action shell's message, or, with no shell at all, a clear error.
#[test]
fn exec_without_environment_scripts_searches_the_containers_path() {
    let Some(user) = Unprivileged::new() else {
        eprintln!("SKIP {}: no unprivileged user namespace", module_path!());
        return;
    };
    let Some(busybox) = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
    else {
        eprintln!("SKIP {}: busybox missing", module_path!());
        return;
    };
    let make = |name: &str, with_sh: bool| -> Option<PathBuf> {
        let dir = user.dir.path().join(name);
        let tools = dir.join("root/opt/tools");
        std::fs::create_dir_all(&tools).unwrap();
        std::fs::create_dir_all(dir.join("root/bin")).unwrap();
        common::copy_executable(&busybox, &tools.join("busybox")).unwrap();
        for t in ["echo", "id"] {
            std::os::unix::fs::symlink("busybox", tools.join(t)).unwrap();
        }
        if with_sh {
            std::os::unix::fs::symlink("/opt/tools/busybox", dir.join("root/bin/sh")).unwrap();
        }
        squash_and_sif(&dir.join("root"), &dir).map(|(_, sif)| sif)
    };
    let (Some(nosh), Some(sh)) = (make("nosh", false), make("sh", true)) else {
        eprintln!("SKIP {}: mksquashfs or /dev/fuse missing", module_path!());
        return;
    };
    for image in [&nosh, &sh] {
        let o = run_ok(
            user.veil()
                .args(["exec", "--env", "PATH=/opt/tools"])
                .arg(image)
                .args(["echo", "found on the container's PATH"]),
        );
        assert_eq!(
            stdout(&o),
            "found on the container's PATH\n",
            "{}",
            image.display()
        );
    }
    // Not found: with a shell, its message and status 127, as Apptainer's.
    let o = user
        .veil()
        .args(["exec", "--env", "PATH=/opt/tools"])
        .arg(&sh)
        .arg("no-such-tool")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(127));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not found"));
    // Without one, veil says what failed; `run` needs a shell.
    let err = run_err(
        user.veil()
            .args(["exec", "--env", "PATH=/opt/tools"])
            .arg(&nosh)
            .arg("no-such-tool"),
    );
    assert!(err.contains("cannot run no-such-tool"), "{err}");
    let err = run_err(user.veil().arg("run").arg(&nosh));
    assert!(err.contains("no /bin/sh"), "{err}");
}

#[test]
fn a_failure_inside_the_container_setup_comes_back_as_one_line() {
    // The container process reports its setup errors to the launcher through a pipe
    // that closes on exec; both ways of starting it (shared memory until exec, and the
    // fork that --pid keeps) must deliver the message, exit 1, and leave no process of
    // this run behind.
    let e = require!(
        setup(),
        "no unprivileged user namespace, busybox, mksquashfs or /dev/fuse"
    );
    // A host file bound onto a directory of the image: the bind fails in the child.
    let file = e.user.dir.path().join("veil");
    for pid in [false, true] {
        let mut c = e.user.veil();
        c.arg("exec");
        if pid {
            c.arg("--pid");
        }
        let o = c
            .arg("-B")
            .arg(format!("{}:/bin", file.display()))
            .arg(&e.sif)
            .arg("true")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(veil_failed(o.status), "--pid {pid}: {err}");
        assert_eq!(err.lines().count(), 1, "--pid {pid}: {err}");
        assert!(
            err.contains("container setup failed") && err.contains("ENOTDIR"),
            "--pid {pid}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
        // Nothing of this run is left: no process runs this test's copy of veil.
        let left: Vec<String> = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|p| std::fs::read_link(p.path().join("exe")).is_ok_and(|x| x == e.user.bin))
            .map(|p| p.file_name().to_string_lossy().into_owned())
            .collect();
        assert!(left.is_empty(), "--pid {pid}: processes left: {left:?}");
    }
}
