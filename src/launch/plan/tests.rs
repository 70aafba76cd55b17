//! The mount plan of each kind of request.

#![forbid(unsafe_code)]

use super::*;

fn req() -> MountRequest {
    MountRequest {
        home_src: Some("/home/ann".into()),
        home_dst: "/home/ann".into(),
        cwd: Some("/work/project".into()),
        passwd: b"p".to_vec(),
        group: b"g".to_vec(),
        resolv_conf: Some("/etc/resolv.conf".into()),
        ..Default::default()
    }
}

fn binds(steps: &[Step]) -> Vec<(String, String)> {
    steps
        .iter()
        .filter_map(|s| match s {
            Step::Bind { src, dst, .. } => {
                Some((src.display().to_string(), dst.display().to_string()))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn default_session_binds_like_apptainer() {
    let steps = build(&req());
    let b = binds(&steps);
    for (src, dst) in [
        ("/.host/proc", "/.root/proc"),
        ("/.host/sys", "/.root/sys"),
        ("/.host/dev", "/.root/dev"),
        ("/.host/tmp", "/.root/tmp"),
        ("/.host/var/tmp", "/.root/var/tmp"),
        ("/.host/home/ann", "/.root/home/ann"),
        ("/.host/etc/resolv.conf", "/.root/etc/resolv.conf"),
        ("/.session/passwd", "/.root/etc/passwd"),
        ("/.session/group", "/.root/etc/group"),
        ("/.host/work/project", "/.root/work/project"),
    ] {
        assert!(
            b.contains(&(src.into(), dst.into())),
            "missing {src} -> {dst} in {b:?}"
        );
    }
    assert!(matches!(steps.first(), Some(Step::Tmpfs { .. })));
    assert_eq!(steps.last(), Some(&Step::RemountRootReadOnly));
}

#[test]
fn contain_uses_session_directories_and_a_minimal_dev() {
    let steps = build(&MountRequest {
        contain: true,
        ..req()
    });
    let b = binds(&steps);
    assert!(b.contains(&("/.session/tmp".into(), "/.root/tmp".into())));
    assert!(b.contains(&("/.session/home".into(), "/.root/home/ann".into())));
    assert!(b.contains(&("/.host/dev/null".into(), "/.root/dev/null".into())));
    assert!(
        !b.iter()
            .any(|(s, _)| s == "/.host/dev" || s == "/.host/work/project")
    );
}

#[test]
fn cwd_inside_home_or_system_dirs_is_not_bound_again() {
    for cwd in ["/home/ann/src", "/usr/share", "/"] {
        let b = binds(&build(&MountRequest {
            cwd: Some(cwd.into()),
            ..req()
        }));
        assert!(
            !b.iter().any(|(s, _)| s == &format!("/.host{cwd}")),
            "{cwd}: {b:?}"
        );
    }
}

#[test]
fn every_mount_is_nosuid_and_only_devices_keep_dev() {
    let user_binds = vec![
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
        BindSpec {
            src: "/dev/fuse".into(),
            dst: "/dev/fuse".into(),
            readonly: false,
        },
    ];
    for contain in [false, true] {
        for pid_namespace in [false, true] {
            let steps = build(&MountRequest {
                contain,
                pid_namespace,
                binds: user_binds.clone(),
                ..req()
            });
            let mut mounts = 0;
            for s in &steps {
                let Some(a) = s.attrs() else { continue };
                mounts += 1;
                assert!(a.nosuid, "{s:?}");
                let dst = match s {
                    Step::Bind { dst, .. }
                    | Step::Tmpfs { dst, .. }
                    | Step::Proc { dst }
                    | Step::Devpts { dst } => dst.clone(),
                    _ => PathBuf::from("/"),
                };
                let devices = dst.starts_with("/.root/dev")
                    && dst != Path::new("/.root/dev/shm")
                    && !(contain && dst == Path::new("/.root/dev"));
                assert_eq!(a.nodev, !devices, "{s:?}");
            }
            assert!(mounts > 8);
        }
    }
    let steps = build(&MountRequest {
        binds: user_binds,
        ..req()
    });
    let attrs_of = |dst: &str| {
        steps
            .iter()
            .find_map(|s| match s {
                Step::Bind { dst: d, attrs, .. } if d == Path::new(dst) => Some(*attrs),
                _ => None,
            })
            .unwrap()
    };
    assert_eq!(attrs_of("/.root/mnt/data"), Attrs::READ_ONLY);
    assert_eq!(attrs_of("/.root/scratch"), Attrs::NOSUID_NODEV);
    assert_eq!(attrs_of("/.root/dev/fuse"), Attrs::DEVICES);
    assert_eq!(attrs_of("/.root/dev"), Attrs::DEVICES);
    assert_eq!(attrs_of("/.root/home/ann"), Attrs::NOSUID_NODEV);
    assert_eq!(attrs_of("/.root/work/project"), Attrs::NOSUID_NODEV);
    // The root is remounted read-only, with the same flags.
    assert_eq!(steps.last().unwrap().attrs(), Some(Attrs::READ_ONLY));
}

#[test]
fn contain_binds_a_home_given_with_home() {
    let given = build(&MountRequest {
        contain: true,
        custom_home: true,
        home_src: Some("/data/h".into()),
        home_dst: "/custom".into(),
        ..req()
    });
    assert!(binds(&given).contains(&("/.host/data/h".into(), "/.root/custom".into())));
    assert!(!binds(&given).iter().any(|(s, _)| s == "/.session/home"));
    // Without --home, contained means an empty home in memory.
    let default = build(&MountRequest {
        contain: true,
        ..req()
    });
    assert!(binds(&default).contains(&("/.session/home".into(), "/.root/home/ann".into())));
}

#[test]
fn direct_root_and_writable_tmpfs() {
    let direct = build(&MountRequest {
        direct_root: true,
        ..req()
    });
    assert!(
        !direct
            .iter()
            .any(|s| matches!(s, Step::Overlay { .. } | Step::RemountRootReadOnly))
    );
    let points = mount_points(&direct, IMAGE);
    assert!(points.contains(&("/home/ann".into(), false)));
    assert!(points.contains(&("/etc/passwd".into(), true)));
    let w = build(&MountRequest {
        direct_root: true,
        writable_tmpfs: true,
        ..req()
    });
    assert!(w.iter().any(|s| matches!(s, Step::Overlay { .. })));
    assert!(!w.contains(&Step::RemountRootReadOnly));
}

/// `--no-mount` leaves out exactly what it names.
#[test]
fn no_mount_leaves_out_what_it_names() {
    let dsts = |r: &MountRequest| -> Vec<String> {
        build(r)
            .iter()
            .filter_map(|s| match s {
                Step::Bind { dst, .. }
                | Step::Tmpfs { dst, .. }
                | Step::Proc { dst }
                | Step::Devpts { dst } => Some(dst.display().to_string()),
                _ => None,
            })
            .collect()
    };
    let all = dsts(&MountRequest {
        contain: true,
        pid_namespace: true,
        ..req()
    });
    for (item, gone) in [
        ("proc", &["/.root/proc"][..]),
        ("sys", &["/.root/sys"]),
        (
            "dev",
            &[
                "/.root/dev",
                "/.root/dev/pts",
                "/.root/dev/null",
                "/.root/dev/shm",
            ],
        ),
        ("devpts", &["/.root/dev/pts"]),
        ("tmp", &["/.root/tmp", "/.root/var/tmp"]),
        ("home", &["/.root/home/ann"]),
        ("bind-paths", &["/.root/etc/resolv.conf"]),
        ("/etc/resolv.conf", &["/.root/etc/resolv.conf"]),
    ] {
        let mut no_mount = NoMount::default();
        no_mount.add(item).unwrap();
        let left = dsts(&MountRequest {
            contain: true,
            pid_namespace: true,
            no_mount,
            ..req()
        });
        for g in gone {
            assert!(all.contains(&g.to_string()), "{g} not there to start with");
            assert!(!left.contains(&g.to_string()), "--no-mount {item} kept {g}");
        }
        // Nothing else goes (what goes is those or under them).
        for d in all.iter().filter(|d| !left.contains(d)) {
            assert!(
                gone.iter().any(|g| Path::new(d).starts_with(g)),
                "--no-mount {item} also dropped {d}"
            );
        }
    }
    // cwd: the working directory is bound only when not contained.
    let mut no_mount = NoMount::default();
    no_mount.add("cwd").unwrap();
    assert!(dsts(&req()).contains(&"/.root/work/project".to_string()));
    assert!(
        !dsts(&MountRequest { no_mount, ..req() }).contains(&"/.root/work/project".to_string())
    );
}
