//! The mount and namespace steps of each kind of run, recorded on the fake seam: their
//! order and their flags.

#![forbid(unsafe_code)]

use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;

use super::super::binds::BindSpec;
use super::super::plan::{self, Attrs};
use super::super::prepare::{self, HostEtc, HostPaths};
use super::super::spec::{Options, RootKind, squashfs_kind};
use super::*;
use crate::support::identity::Identity;
use crate::support::sys::recording::{Call, RecordingSys};

/// The descriptor the fake pretends is the nested user namespace (any open one).
fn locked_fd() -> BorrowedFd<'static> {
    static FILE: std::sync::OnceLock<std::fs::File> = std::sync::OnceLock::new();
    FILE.get_or_init(|| std::fs::File::open("/dev/null").unwrap())
        .as_fd()
}

fn identity(fakeroot: bool) -> Identity {
    Identity {
        uid: 1000,
        gid: 1000,
        inner_uid: if fakeroot { 0 } else { 1000 },
        inner_gid: if fakeroot { 0 } else { 1000 },
        name: "ann".into(),
        group_name: "ann".into(),
        gecos: String::new(),
        host_home: "/home/ann".into(),
        shell: "/bin/sh".into(),
    }
}

/// Devices as a launch of `kind` would have made them, named; what is asked of them
/// is noted among the calls on the seam.
struct NamedDevices<'s> {
    kind: RootKind,
    loop_dev: PathBuf,
    sys: &'s RecordingSys,
}

impl Devices for NamedDevices<'_> {
    fn image(&mut self) -> Result<StagedImage<'_>> {
        self.sys.record(Call::Note("image"));
        Ok(match self.kind {
            RootKind::Directory => StagedImage::Directory(5),
            RootKind::Unpacked => StagedImage::Unpacked,
            RootKind::Fuse => StagedImage::Fuse,
            RootKind::Kernel => StagedImage::Block(&self.loop_dev),
            RootKind::KernelCrypt => StagedImage::Mapped {
                major: 253,
                minor: 3,
            },
        })
    }
    fn staged(&mut self) {
        self.sys.record(Call::Note("staged"));
    }
    fn fuse(&self) -> Option<RawFd> {
        (self.kind == RootKind::Fuse).then_some(6)
    }
    fn serve(&mut self) -> Result<()> {
        self.sys.record(Call::Note("serve"));
        Ok(())
    }
    fn unpack(&mut self) -> Result<()> {
        self.sys.record(Call::Note("unpack"));
        Ok(())
    }
}

/// Every step a launch of `kind` with `o` makes on the seam, in the order the launcher
/// and then the container process make them.
fn rehearse(kind: RootKind, o: &Options) -> Vec<Call> {
    let sys = RecordingSys::default();
    let id = identity(o.fakeroot);
    enter_namespaces(&sys, kind, &id).unwrap();
    let mut devices = NamedDevices {
        kind,
        loop_dev: PathBuf::from("/dev/loop7"),
        sys: &sys,
    };
    let owner = (id.inner_uid, id.inner_gid);
    stage_and_serve(&sys, &mut devices, owner, "/images/app one.sif").unwrap();
    check_device_order(&sys.calls(), kind);
    let host = HostPaths {
        home_src: Some("/home/ann".into()),
        home_dst: if o.fakeroot { "/root" } else { "/home/ann" }.into(),
        cwd: Some("/work/project".into()),
    };
    let etc = HostEtc {
        resolv_conf: Some("/etc/resolv.conf".into()),
        ..Default::default()
    };
    let req = prepare::mount_request(o, kind, &host, etc, &id, (None, None));
    let steps = plan::build(&req);
    // As `userns::locked_userns`: made when uid 0 is mapped inside a user namespace.
    let locked = (!kind.by_kernel() && id.inner_uid == 0).then(locked_fd);
    let ns = prepare::container_namespaces(o, locked);
    enter_container(&sys, &ns, &steps, Path::new(plan::root_dir(&req))).unwrap();
    let calls = sys.calls();
    calls
        .into_iter()
        .filter(|c| !matches!(c, Call::Note(_)))
        .collect()
}

/// The devices are asked for the image once the namespace is private and before the
/// staging tmpfs covers /tmp; let go of once the image is mounted in the staging area;
/// and the FUSE server starts right after the FUSE mount.
fn check_device_order(calls: &[Call], kind: RootKind) {
    let at = |n: &'static str| calls.iter().position(|c| *c == Call::Note(n));
    let (image, staged) = (at("image").unwrap(), at("staged").unwrap());
    assert_eq!(
        calls[image - 1],
        mount("", "/", None, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None),
        "{calls:#?}"
    );
    assert!(matches!(&calls[image + 1], Call::Mount { dst, .. } if dst == Path::new("/tmp")));
    // Nothing of the launcher's staging follows the release of the devices but the
    // FUSE mount and its server.
    let after: Vec<&Call> = calls[staged + 1..].iter().collect();
    if kind == RootKind::Fuse {
        assert!(
            matches!(after.as_slice(), [Call::Mount { fstype: Some(t), .. }, Call::Note("serve")] if t == "fuse.veil"),
            "{calls:#?}"
        );
    } else {
        assert!(after.is_empty(), "{calls:#?}");
        assert_eq!(at("serve"), None);
    }
    // The image is in the staging area when the devices are let go of.
    let mounted = calls[..staged].iter().any(|c| match c {
        Call::Mount { dst, .. } | Call::SetAttrs { path: dst, .. } => {
            dst == Path::new("/tmp/.image")
        }
        _ => false,
    });
    assert!(mounted || kind == RootKind::Fuse, "{calls:#?}");
}

/// [`Call::mount`] with paths as text, "" for no source.
fn mount(src: &str, dst: &str, fstype: Option<&str>, flags: MsFlags, data: Option<&str>) -> Call {
    let src = (!src.is_empty()).then(|| Path::new(src));
    Call::mount(src, Path::new(dst), fstype, flags, data)
}

/// A recursive bind, as the plan makes every bind.
fn bind(src: &str, dst: &str) -> Call {
    Call::bind(Path::new(src), Path::new(dst), MsFlags::MS_REC)
}

fn set_attrs(path: &str, attrs: Attrs, recursive: bool) -> Call {
    Call::SetAttrs {
        path: path.into(),
        attrs,
        recursive,
    }
}

const NOSUID_NODEV: MsFlags = MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV);
const READ_ONLY: MsFlags = NOSUID_NODEV.union(MsFlags::MS_RDONLY);

/// The launcher's staging steps before the image is mounted in it.
fn staging() -> Vec<Call> {
    vec![
        mount("", "/", None, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None),
        mount(
            "veil",
            "/tmp",
            Some("tmpfs"),
            NOSUID_NODEV,
            Some("mode=0755"),
        ),
        Call::CreateDir("/tmp/.host".into()),
        Call::CreateDir("/tmp/.image".into()),
    ]
}

/// The container process's first steps: its namespaces, the staging area as its root.
fn container_entry(flags: CloneFlags) -> Vec<Call> {
    vec![
        Call::Unshare(flags),
        Call::PivotRoot {
            new_root: "/tmp".into(),
            put_old: "/tmp/.host".into(),
        },
        Call::Chdir("/".into()),
    ]
}

/// The pivot from the staging area into the container's root.
fn pivot_into(root: &str) -> Vec<Call> {
    vec![
        Call::Chdir(root.into()),
        Call::PivotRoot {
            new_root: ".".into(),
            put_old: ".".into(),
        },
        Call::Umount {
            path: ".".into(),
            flags: MntFlags::MNT_DETACH,
        },
        Call::Chdir("/".into()),
    ]
}

/// `calls` holds `want` as a contiguous run.
fn contains_run(calls: &[Call], want: &[Call]) -> bool {
    calls.windows(want.len()).any(|w| w == want)
}

fn position(calls: &[Call], c: &Call) -> usize {
    calls
        .iter()
        .position(|x| x == c)
        .unwrap_or_else(|| panic!("{c:?} not in {calls:#?}"))
}

/// What holds for every run: new mounts are nosuid (and nodev, but for devices);
/// every bind is followed by the flags for its whole tree; the image is read-only.
fn check_invariants(calls: &[Call], what: &str) {
    for (i, c) in calls.iter().enumerate() {
        let Call::Mount {
            src,
            dst,
            fstype,
            flags,
            ..
        } = c
        else {
            continue;
        };
        if flags.contains(MsFlags::MS_PRIVATE) {
            continue;
        }
        if flags.contains(MsFlags::MS_BIND) {
            assert!(flags.contains(MsFlags::MS_REC), "{what}: {c:?}");
            match calls.get(i + 1) {
                Some(Call::SetAttrs {
                    path,
                    attrs,
                    recursive: true,
                }) if path == dst => {
                    assert!(attrs.nosuid, "{what}: {c:?} gets {attrs:?}");
                    let device = dst.starts_with("/.image/dev") || dst.starts_with("/.root/dev");
                    assert!(attrs.nodev || device, "{what}: {c:?} gets {attrs:?}");
                }
                other => panic!("{what}: {c:?} is followed by {other:?}"),
            }
            continue;
        }
        assert!(flags.contains(MsFlags::MS_NOSUID), "{what}: {c:?}");
        // Device nodes live only in a devpts and in the node directory of dm-crypt.
        let devices =
            fstype.as_deref() == Some("devpts") || src.as_deref() == Some(Path::new("veil-dev"));
        assert!(
            flags.contains(MsFlags::MS_NODEV) || devices,
            "{what}: {c:?}"
        );
        // The image is read-only from the start; a ramfs to unpack into becomes so
        // right after the unpacking.
        let unpacking = fstype.as_deref() == Some("ramfs")
            && matches!(calls.get(i + 1), Some(Call::Mount { dst: d, flags: f, .. })
                if d == dst && f.contains(MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY));
        if dst == Path::new("/tmp/.image") && !unpacking {
            assert!(flags.contains(MsFlags::MS_RDONLY), "{what}: {c:?}");
        }
    }
}

fn user_binds() -> Vec<BindSpec> {
    vec![
        BindSpec {
            src: "/data".into(),
            dst: "/mnt/data".into(),
            readonly: true,
        },
        BindSpec {
            src: "/scratch".into(),
            dst: "/scratch".into(),
            readonly: false,
        },
    ]
}

#[test]
fn plain_image_is_served_read_only_with_fuse_and_is_the_root_itself() {
    let calls = rehearse(RootKind::Fuse, &Options::default());
    check_invariants(&calls, "plain");
    let mut want = vec![Call::EnterUserns {
        uid: 1000,
        gid: 1000,
        inner_uid: 1000,
        inner_gid: 1000,
    }];
    want.extend(staging());
    want.push(mount(
        "app_one.sif",
        "/tmp/.image",
        Some("fuse.veil"),
        READ_ONLY,
        Some(&veil_fusefs::fuse::mount_data(6, 1000, 1000)),
    ));
    want.extend(container_entry(CloneFlags::CLONE_NEWNS));
    want.push(mount(
        "tmpfs",
        "/.session",
        Some("tmpfs"),
        NOSUID_NODEV,
        Some("mode=755"),
    ));
    assert_eq!(calls[..want.len()], want[..]);
    // The FUSE root is the container's root: no overlay, nothing to remount.
    assert!(
        !calls
            .iter()
            .any(|c| matches!(c, Call::Mount { fstype: Some(t), .. } if t == "overlay"))
    );
    assert!(!calls.contains(&set_attrs("/.image", Attrs::READ_ONLY, false)));
    for (src, dst, attrs) in [
        ("/.host/proc", "/.image/proc", Attrs::NOSUID_NODEV),
        ("/.host/dev", "/.image/dev", Attrs::DEVICES),
        ("/.host/home/ann", "/.image/home/ann", Attrs::NOSUID_NODEV),
        (
            "/.host/work/project",
            "/.image/work/project",
            Attrs::NOSUID_NODEV,
        ),
    ] {
        assert!(
            contains_run(&calls, &[bind(src, dst), set_attrs(dst, attrs, true)]),
            "{src} -> {dst}: {calls:#?}"
        );
    }
    assert!(calls.ends_with(&pivot_into("/.image")));
}

#[test]
fn unpacked_image_goes_into_a_ramfs_made_read_only_then_under_an_overlay() {
    let calls = rehearse(RootKind::Unpacked, &Options::default());
    check_invariants(&calls, "unpacked");
    let ramfs = mount(
        "veil",
        "/tmp/.image",
        Some("ramfs"),
        NOSUID_NODEV,
        Some("mode=0755"),
    );
    let at = calls.iter().position(|c| *c == ramfs).expect("no ramfs");
    // (The unpacking itself, between the two, makes no call on the seam.)
    let Call::Mount { flags, dst, .. } = &calls[at + 1] else {
        panic!("{:?}", calls[at + 1]);
    };
    assert_eq!(dst, Path::new("/tmp/.image"));
    assert!(
        flags.contains(MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY),
        "{flags:?}"
    );
    // No FUSE, and the root is an overlay over the unpacked tree, as for a sandbox.
    assert!(
        !calls
            .iter()
            .any(|c| matches!(c, Call::Mount { fstype: Some(t), .. } if t == "fuse.veil"))
    );
    assert!(
        calls
            .iter()
            .any(|c| matches!(c, Call::Mount { fstype: Some(t), .. } if t == "overlay"))
    );
    assert!(!calls.contains(&Call::Note("serve")));
}

/// The mount of a squashfs as `squashfs_kind` chooses it.
fn kind(region: bool, crypt: bool, real_root: bool, fuse: bool, dm: bool) -> RootKind {
    let dm_available = || if dm { Ok(()) } else { Err(LaunchError::NoFuse) };
    squashfs_kind(region, crypt, || real_root, fuse, dm_available)
}

#[test]
fn encrypted_image_without_root_privileges_takes_the_plain_steps() {
    // FUSE decrypts in the launcher: the mounts are those of a plain image, whether
    // or not device-mapper is there.
    for dm in [false, true] {
        assert_eq!(kind(false, true, false, false, dm), RootKind::Fuse);
    }
    assert_eq!(kind(true, false, false, false, true), RootKind::Fuse);
    let calls = rehearse(RootKind::Fuse, &Options::default());
    assert!(calls.contains(&mount(
        "app_one.sif",
        "/tmp/.image",
        Some("fuse.veil"),
        READ_ONLY,
        Some(&veil_fusefs::fuse::mount_data(6, 1000, 1000)),
    )));
    assert!(!calls.iter().any(|c| matches!(c, Call::MknodBlock { .. })));
}

#[test]
fn contain_gives_a_minimal_dev_and_session_directories() {
    let o = Options {
        contain: true,
        ..Default::default()
    };
    let calls = rehearse(RootKind::Fuse, &o);
    check_invariants(&calls, "--contain");
    assert!(contains_run(
        &calls,
        &[
            mount(
                "tmpfs",
                "/.image/dev",
                Some("tmpfs"),
                NOSUID_NODEV,
                Some("mode=755")
            ),
            bind("/.host/dev/null", "/.image/dev/null"),
            set_attrs("/.image/dev/null", Attrs::DEVICES, true),
        ]
    ));
    assert!(calls.contains(&mount(
        "devpts",
        "/.image/dev/pts",
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )));
    assert!(contains_run(
        &calls,
        &[
            Call::CreateDirAll {
                path: "/.session/tmp".into(),
                mode: 0o1777
            },
            bind("/.session/tmp", "/.image/tmp"),
            set_attrs("/.image/tmp", Attrs::NOSUID_NODEV, true),
        ]
    ));
    for host in [
        "/.host/dev",
        "/.host/tmp",
        "/.host/home/ann",
        "/.host/work/project",
    ] {
        assert!(
            !calls
                .iter()
                .any(|c| matches!(c, Call::Mount { src: Some(s), .. } if s == Path::new(host))),
            "{host} is bound"
        );
    }
    // The host's /proc, as without --contain; no namespace but the mount namespace.
    assert!(calls.contains(&bind("/.host/proc", "/.image/proc")));
    assert!(contains_run(
        &calls,
        &container_entry(CloneFlags::CLONE_NEWNS)
    ));
}

#[test]
fn containall_adds_pid_and_ipc_namespaces_and_a_private_proc() {
    // What the command line makes of --containall.
    let o = Options {
        contain: true,
        cleanenv: true,
        pid: true,
        ipc: true,
        ..Default::default()
    };
    let calls = rehearse(RootKind::Fuse, &o);
    check_invariants(&calls, "--containall");
    // The PID namespace is the one the container process is started in.
    let ns = prepare::container_namespaces(&o, None);
    assert_eq!(ns.clone_flags(), CloneFlags::CLONE_NEWPID);
    let plain = prepare::container_namespaces(&Options::default(), None);
    assert_eq!(plain.clone_flags(), CloneFlags::empty());
    assert!(contains_run(
        &calls,
        &container_entry(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWIPC)
    ));
    assert!(calls.contains(&mount(
        "proc",
        "/.image/proc",
        Some("proc"),
        NOSUID_NODEV | MsFlags::MS_NOEXEC,
        None,
    )));
    assert!(!calls.contains(&bind("/.host/proc", "/.image/proc")));
    assert!(!calls.iter().any(|c| matches!(c, Call::Setns { .. })));
}

#[test]
fn fakeroot_locks_the_mounts_in_a_nested_user_namespace_after_the_pivot() {
    let o = Options {
        fakeroot: true,
        hostname: Some("box".into()),
        ..Default::default()
    };
    let calls = rehearse(RootKind::Fuse, &o);
    check_invariants(&calls, "--fakeroot");
    assert_eq!(
        calls[0],
        Call::EnterUserns {
            uid: 1000,
            gid: 1000,
            inner_uid: 0,
            inner_gid: 0
        }
    );
    assert!(contains_run(
        &calls,
        &container_entry(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS)
    ));
    assert!(calls.contains(&bind("/.host/home/ann", "/.image/root")));
    // Last: the pivot, the hostname, then the nested user namespace and a mount
    // namespace of its own, which locks every mount made before.
    let mut tail = pivot_into("/.image");
    tail.extend([
        Call::Sethostname("box".into()),
        Call::Setns {
            fd: locked_fd().as_raw_fd(),
            flags: CloneFlags::CLONE_NEWUSER,
        },
        Call::Unshare(CloneFlags::CLONE_NEWNS),
    ]);
    assert!(calls.ends_with(&tail), "{calls:#?}");
}

#[test]
fn binds_come_last_with_their_flags_on_the_whole_tree() {
    let o = Options {
        binds: user_binds(),
        ..Default::default()
    };
    let calls = rehearse(RootKind::Fuse, &o);
    check_invariants(&calls, "--bind");
    let ro = [
        bind("/.host/data", "/.image/mnt/data"),
        set_attrs("/.image/mnt/data", Attrs::READ_ONLY, true),
    ];
    let rw = [
        bind("/.host/scratch", "/.image/scratch"),
        set_attrs("/.image/scratch", Attrs::NOSUID_NODEV, true),
    ];
    let mut both = ro.to_vec();
    both.extend(rw);
    both.extend(pivot_into("/.image"));
    assert!(calls.ends_with(&both), "{calls:#?}");
    // After every session bind.
    assert!(
        position(&calls, &ro[0])
            > position(&calls, &bind("/.host/work/project", "/.image/work/project"))
    );
}

#[test]
fn sandbox_directory_is_bound_read_only_under_an_overlay_root() {
    let calls = rehearse(RootKind::Directory, &Options::default());
    check_invariants(&calls, "directory");
    let mut want = staging();
    want.extend([
        bind("/proc/self/fd/5", "/tmp/.image"),
        set_attrs("/tmp/.image", Attrs::READ_ONLY, true),
    ]);
    assert_eq!(calls[1..=want.len()], want[..]);
    assert!(calls.contains(&mount(
        "overlay",
        "/.root",
        Some("overlay"),
        NOSUID_NODEV,
        Some("lowerdir=/.image,upperdir=/.session/upper,workdir=/.session/work,userxattr"),
    )));
    // The overlay root is made read-only once the mount points are in it.
    let mut tail = vec![set_attrs("/.root", Attrs::READ_ONLY, false)];
    tail.extend(pivot_into("/.root"));
    assert!(calls.ends_with(&tail), "{calls:#?}");
}

#[test]
fn root_mounts_the_squashfs_from_a_loop_device_without_a_user_namespace() {
    assert_eq!(kind(true, false, true, false, false), RootKind::Kernel);
    // --fuse, or no file region to hand over: FUSE after all.
    assert_eq!(kind(true, false, true, true, true), RootKind::Fuse);
    assert_eq!(kind(false, false, true, false, true), RootKind::Fuse);
    let calls = rehearse(RootKind::Kernel, &Options::default());
    check_invariants(&calls, "root");
    let mut want = vec![Call::Unshare(CloneFlags::CLONE_NEWNS)];
    want.extend(staging());
    want.push(mount(
        "/dev/loop7",
        "/tmp/.image",
        Some("squashfs"),
        READ_ONLY,
        None,
    ));
    want.extend(container_entry(CloneFlags::CLONE_NEWNS));
    assert_eq!(calls[..want.len()], want[..]);
    assert!(
        !calls
            .iter()
            .any(|c| matches!(c, Call::EnterUserns { .. } | Call::Setns { .. }))
    );
    let mut tail = vec![set_attrs("/.root", Attrs::READ_ONLY, false)];
    tail.extend(pivot_into("/.root"));
    assert!(calls.ends_with(&tail), "{calls:#?}");
}

#[test]
fn root_with_dm_crypt_mounts_the_mapping_through_a_private_node_directory() {
    assert_eq!(kind(false, true, true, false, true), RootKind::KernelCrypt);
    // Without device-mapper, or with --fuse, FUSE decrypts.
    assert_eq!(kind(false, true, true, false, false), RootKind::Fuse);
    assert_eq!(kind(false, true, true, true, true), RootKind::Fuse);
    let calls = rehearse(RootKind::KernelCrypt, &Options::default());
    check_invariants(&calls, "root, dm-crypt");
    let mut want = vec![Call::Unshare(CloneFlags::CLONE_NEWNS)];
    want.extend(staging());
    want.extend([
        Call::CreateDir("/tmp/.dm".into()),
        mount(
            "veil-dev",
            "/tmp/.dm",
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some("mode=0700,size=16k"),
        ),
        Call::MknodBlock {
            path: "/tmp/.dm/crypt".into(),
            major: 253,
            minor: 3,
        },
        mount(
            "/tmp/.dm/crypt",
            "/tmp/.image",
            Some("squashfs"),
            READ_ONLY,
            None,
        ),
        Call::Umount {
            path: "/tmp/.dm".into(),
            flags: MntFlags::MNT_DETACH,
        },
        Call::RemoveDir("/tmp/.dm".into()),
    ]);
    want.extend(container_entry(CloneFlags::CLONE_NEWNS));
    assert_eq!(calls[..want.len()], want[..]);
    assert!(!calls.iter().any(|c| matches!(c, Call::Setns { .. })));
}

#[test]
fn writable_tmpfs_keeps_the_overlay_root_writable_but_nosuid_nodev() {
    let o = Options {
        writable_tmpfs: true,
        ..Default::default()
    };
    let calls = rehearse(RootKind::Fuse, &o);
    check_invariants(&calls, "--writable-tmpfs");
    assert!(calls.contains(&mount(
        "overlay",
        "/.root",
        Some("overlay"),
        NOSUID_NODEV,
        Some("lowerdir=/.image,upperdir=/.session/upper,workdir=/.session/work,userxattr"),
    )));
    assert!(!calls.contains(&set_attrs("/.root", Attrs::READ_ONLY, false)));
    assert!(calls.ends_with(&pivot_into("/.root")));
}

#[test]
fn net_gives_the_container_a_network_namespace_with_loopback_up() {
    let o = Options {
        net: true,
        ..Options::default()
    };
    let calls = rehearse(RootKind::Fuse, &o);
    check_invariants(&calls, "net");
    let at = calls
        .iter()
        .position(|c| matches!(c, Call::Unshare(f) if f.contains(CloneFlags::CLONE_NEWNET)))
        .expect("no network namespace");
    assert_eq!(calls[at + 1], Call::LoopbackUp);
    let plain = rehearse(RootKind::Fuse, &Options::default());
    assert!(!plain.contains(&Call::LoopbackUp));
    assert!(
        !plain
            .iter()
            .any(|c| matches!(c, Call::Unshare(f) if f.contains(CloneFlags::CLONE_NEWNET)))
    );
}
