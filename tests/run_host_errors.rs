//! The machine-setting errors of the launcher, provoked for real: user namespaces turned
//! off with the sysctl, /dev/fuse made inaccessible. This changes host settings, so it
//! runs only as root, restores them on every exit path, and lives in its own test binary
//! (cargo runs test binaries one after another).

mod common;

use std::path::Path;

use common::*;

/// Restores a file's previous content (a sysctl) or mode (a device) when dropped.
struct Restore(Box<dyn Fn()>);
impl Drop for Restore {
    fn drop(&mut self) {
        (self.0)();
    }
}

#[test]
fn disabled_user_namespaces_and_fuse_give_the_fix() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP {}: changing sysctls needs root", module_path!());
        return;
    }
    let e = require!(Unprivileged::new(), "no unprivileged user namespace here");
    let root = require!(busybox_rootfs(e.dir.path()), "busybox is not installed");
    let (_, sif) = require!(
        squash_and_sif(&root, e.dir.path()),
        "mksquashfs or /dev/fuse missing"
    );
    let run = || {
        // (--no-tmp-sandbox: without /dev/fuse veil would unpack the image instead.)
        let o = e
            .veil()
            .args(["exec", "--no-tmp-sandbox"])
            .arg(&sif)
            .arg("true")
            .output()
            .unwrap();
        // This machine cannot run containers: veil's status for that.
        assert_eq!(o.status.code(), Some(253));
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(err.lines().count(), 1, "{err}");
        err
    };

    let knob = "/proc/sys/user/max_user_namespaces";
    if let Ok(old) = std::fs::read_to_string(knob) {
        let guard = Restore(Box::new(move || {
            let _ = std::fs::write(knob, old.trim());
        }));
        if std::fs::write(knob, "0").is_ok() {
            let err = run();
            assert!(
                err.contains("user namespaces are disabled (user.max_user_namespaces = 0)"),
                "{err}"
            );
            assert!(err.contains("sysctl -w user.max_user_namespaces="), "{err}");
        } else {
            eprintln!("SKIP part: {knob} is not writable here");
        }
        drop(guard);
    }

    let fuse = Path::new("/dev/fuse");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(fuse).unwrap().permissions().mode() & 0o7777;
    let guard = Restore(Box::new(move || {
        let _ = std::fs::set_permissions("/dev/fuse", std::fs::Permissions::from_mode(mode));
    }));
    std::fs::set_permissions(fuse, std::fs::Permissions::from_mode(0o600)).unwrap();
    let err = run();
    assert!(
        err.contains("cannot open /dev/fuse") && err.contains("chmod 0666 /dev/fuse"),
        "{err}"
    );
    // Without --no-tmp-sandbox: the image is unpacked into memory instead, with a note
    // that names why.
    let o = run_ok(e.veil().arg("exec").arg(&sif).arg("true"));
    let note = String::from_utf8_lossy(&o.stderr);
    assert!(
        note.contains("unpacking the image into memory") && note.contains("cannot open /dev/fuse"),
        "{note}"
    );
    drop(guard);
    // And everything works again afterwards.
    run_ok(e.veil().arg("exec").arg(&sif).arg("true"));
}
