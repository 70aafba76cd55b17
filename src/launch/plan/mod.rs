//! The container's mount plan: which mounts, in which order, and why. Building it is
//! pure (unit-tested without privileges); `sys` applies it in the container process.
//!
//! Where things are while the plan runs (the container process has pivoted into the
//! launcher's staging tmpfs):
//!
//! | path | what |
//! |---|---|
//! | `/.host` | the host's root, for bind sources |
//! | `/.image` | the image's root (FUSE, kernel squashfs, or a bound sandbox directory) |
//! | `/.session` | a tmpfs for generated files, contained home/tmp, overlay layers |
//! | `/.root` | the container's root as it is assembled (an overlay), or `/.image` itself |

use std::path::{Path, PathBuf};

use super::binds::{BindSpec, NoMount, clean};

pub const HOST: &str = "/.host";
pub const IMAGE: &str = "/.image";
pub const SESSION: &str = "/.session";
pub const OVERLAY_ROOT: &str = "/.root";

pub use crate::support::sys::Attrs;

/// What a step mounts over or creates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A fresh tmpfs (nosuid, nodev).
    Tmpfs { dst: PathBuf, mode: u32 },
    /// A directory in the session tmpfs (or any writable place).
    Mkdir { path: PathBuf, mode: u32 },
    /// A file with generated contents in the session tmpfs.
    WriteFile { path: PathBuf, contents: Vec<u8> },
    /// An overlay of `/.image` with its upper layer in the session tmpfs, so mount points
    /// can be added (and, with --writable-tmpfs, files written) without touching the image.
    Overlay { dst: PathBuf },
    /// A bind mount onto a path inside the container root. The mount point is resolved
    /// inside the root (symlinks in the image are followed as the container would) and
    /// created when missing and the root allows it.
    /// A session bind whose mount point cannot be made (a read-only root, or a directory
    /// of the image the user may not write) is skipped with a warning, as Apptainer does;
    /// a `--bind` the user asked for is `required` and fails instead.
    /// `attrs` apply to the whole bound tree (its submounts too), so a read-only bind is
    /// read-only throughout.
    Bind {
        src: PathBuf,
        dst: PathBuf,
        recursive: bool,
        attrs: Attrs,
        file: bool,
        required: bool,
        why: &'static str,
    },
    /// A new procfs (with a PID namespace).
    Proc { dst: PathBuf },
    /// A private devpts instance.
    Devpts { dst: PathBuf },
    /// A symlink inside the container root.
    Symlink { target: PathBuf, link: PathBuf },
    /// Remount the container root read-only (it is an overlay that let us add mount points).
    RemountRootReadOnly,
}

impl Step {
    /// The flags of the mount this step makes (none for steps that mount nothing).
    pub fn attrs(&self) -> Option<Attrs> {
        match self {
            Step::Tmpfs { .. } | Step::Overlay { .. } => Some(Attrs::NOSUID_NODEV),
            Step::Proc { .. } => Some(Attrs {
                noexec: true,
                ..Attrs::NOSUID_NODEV
            }),
            // Its device nodes are the container's terminals.
            Step::Devpts { .. } => Some(Attrs {
                noexec: true,
                ..Attrs::DEVICES
            }),
            Step::Bind { attrs, .. } => Some(*attrs),
            Step::RemountRootReadOnly => Some(Attrs::READ_ONLY),
            Step::Mkdir { .. } | Step::WriteFile { .. } | Step::Symlink { .. } => None,
        }
    }
}

/// What the user asked for, as far as mounts are concerned.
#[derive(Debug, Clone, Default)]
pub struct MountRequest {
    /// The root is the image mount itself (FUSE with synthetic mount points, no overlay).
    pub direct_root: bool,
    pub writable_tmpfs: bool,
    pub contain: bool,
    pub no_home: bool,
    pub pid_namespace: bool,
    /// Host home (canonical) and where it appears inside.
    pub home_src: Option<PathBuf>,
    /// `home_src` was given with --home: bound even when contained.
    pub custom_home: bool,
    pub home_dst: PathBuf,
    /// Host working directory (canonical), bound when not contained.
    pub cwd: Option<PathBuf>,
    pub binds: Vec<BindSpec>,
    pub passwd: Vec<u8>,
    pub group: Vec<u8>,
    /// Host files to bind over `/etc/...`, canonical, when they exist.
    pub resolv_conf: Option<PathBuf>,
    pub hosts: Option<PathBuf>,
    pub localtime: Option<PathBuf>,
    /// `--no-mount`.
    pub no_mount: NoMount,
    /// `--workdir` (canonical; its tmp, var_tmp and home with --contain, and its
    /// scratch directories, exist and are the user's alone).
    pub workdir: Option<PathBuf>,
    /// `--scratch` destinations.
    pub scratch: Vec<PathBuf>,
}

/// The container root's path while the plan runs.
pub fn root_dir(req: &MountRequest) -> &'static str {
    if req.direct_root && !req.writable_tmpfs {
        IMAGE
    } else {
        OVERLAY_ROOT
    }
}

fn host(p: &Path) -> PathBuf {
    Path::new(HOST).join(p.strip_prefix("/").unwrap_or(p))
}

fn under(root: &str, p: &Path) -> PathBuf {
    Path::new(root).join(p.strip_prefix("/").unwrap_or(p))
}

/// True when `p` is `base` or inside it.
fn is_within(p: &Path, base: &Path) -> bool {
    p.starts_with(base)
}

/// The steps under construction, and the root they assemble.
struct Builder {
    root: &'static str,
    steps: Vec<Step>,
}

impl Builder {
    /// `p` inside the container's root.
    fn r(&self, p: &str) -> PathBuf {
        under(self.root, Path::new(p))
    }

    fn push(&mut self, s: Step) {
        self.steps.push(s);
    }

    /// A recursive session bind of `src` onto `dst` (inside the root), with `attrs`.
    fn bind_with(&mut self, src: PathBuf, dst: &Path, file: bool, attrs: Attrs, why: &'static str) {
        let dst = under(self.root, dst);
        self.push(Step::Bind {
            src,
            dst,
            recursive: true,
            attrs,
            file,
            required: false,
            why,
        });
    }

    /// A directory veil made for this run (`--workdir`): nosuid, nodev, and its
    /// absence an error, never a silent fallback to the image's directory.
    fn bind_required(&mut self, src: PathBuf, dst: &Path, why: &'static str) {
        let dst = under(self.root, dst);
        self.push(Step::Bind {
            src,
            dst,
            recursive: true,
            attrs: Attrs::NOSUID_NODEV,
            file: false,
            required: true,
            why,
        });
    }

    /// A recursive session bind, nosuid and nodev.
    fn bind(&mut self, src: PathBuf, dst: &Path, file: bool, why: &'static str) {
        self.bind_with(src, dst, file, Attrs::NOSUID_NODEV, why);
    }
}

pub fn build(req: &MountRequest) -> Vec<Step> {
    let mut b = Builder {
        root: root_dir(req),
        steps: vec![Step::Tmpfs {
            dst: SESSION.into(),
            mode: 0o755,
        }],
    };
    if b.root == OVERLAY_ROOT {
        overlay_root(&mut b);
    }
    proc_and_sys(&mut b, req);
    dev(&mut b, req);
    let bound = tmp_and_home(&mut b, req);
    scratch(&mut b, req);
    host_files(&mut b, req);
    identity(&mut b, req);
    cwd(&mut b, req, &bound);
    user_binds(&mut b, req);
    if b.root == OVERLAY_ROOT && !req.writable_tmpfs {
        b.push(Step::RemountRootReadOnly);
    }
    b.steps
}

/// An overlay over the image, so mount points can be added to it.
fn overlay_root(b: &mut Builder) {
    for path in [format!("{SESSION}/upper"), format!("{SESSION}/work")] {
        b.push(Step::Mkdir {
            path: path.into(),
            mode: 0o755,
        });
    }
    b.push(Step::Mkdir {
        path: OVERLAY_ROOT.into(),
        mode: 0o755,
    });
    b.push(Step::Overlay {
        dst: OVERLAY_ROOT.into(),
    });
}

/// /proc and /sys: the host's, or a private /proc in a PID namespace.
fn proc_and_sys(b: &mut Builder, req: &MountRequest) {
    if req.no_mount.proc {
    } else if req.pid_namespace {
        let dst = b.r("/proc");
        b.push(Step::Proc { dst });
    } else {
        b.bind(host(Path::new("/proc")), Path::new("/proc"), false, "/proc");
    }
    if !req.no_mount.sys {
        b.bind(host(Path::new("/sys")), Path::new("/sys"), false, "/sys");
    }
}

/// /dev: the host's, or a minimal one when contained.
fn dev(b: &mut Builder, req: &MountRequest) {
    if req.no_mount.dev {
        return;
    }
    if !req.contain {
        b.bind_with(
            host(Path::new("/dev")),
            Path::new("/dev"),
            false,
            Attrs::DEVICES,
            "/dev",
        );
        return;
    }
    let dst = b.r("/dev");
    b.push(Step::Tmpfs { dst, mode: 0o755 });
    for dev in ["null", "zero", "full", "random", "urandom", "tty"] {
        let p = format!("/dev/{dev}");
        b.bind_with(
            host(Path::new(&p)),
            Path::new(&p),
            true,
            Attrs::DEVICES,
            "minimal /dev",
        );
    }
    let dst = b.r("/dev/shm");
    b.push(Step::Tmpfs { dst, mode: 0o1777 });
    let mut links = vec![("/proc/self/fd".to_string(), "/dev/fd".to_string())];
    if !req.no_mount.devpts {
        let dst = b.r("/dev/pts");
        b.push(Step::Devpts { dst });
        links.push(("pts/ptmx".to_string(), "/dev/ptmx".to_string()));
    }
    for (i, name) in ["stdin", "stdout", "stderr"].iter().enumerate() {
        links.push((format!("/proc/self/fd/{i}"), format!("/dev/{name}")));
    }
    for (target, link) in links {
        let link = b.r(&link);
        b.push(Step::Symlink {
            target: target.into(),
            link,
        });
    }
}

/// Temporary directories and the home; returns the destinations bound, under which
/// the working directory is visible already.
fn tmp_and_home(b: &mut Builder, req: &MountRequest) -> Vec<PathBuf> {
    let mut bound: Vec<PathBuf> = Vec::new();
    for (t, in_workdir) in [("/tmp", "tmp"), ("/var/tmp", "var_tmp")] {
        if req.no_mount.tmp {
            continue;
        }
        bound.push(t.into());
        if let (Some(w), true) = (&req.workdir, req.contain) {
            b.bind_required(
                host(&w.join(in_workdir)),
                Path::new(t),
                "--workdir temporary directory",
            );
        } else if req.contain {
            let s = PathBuf::from(format!("{SESSION}{t}"));
            b.push(Step::Mkdir {
                path: s.clone(),
                mode: 0o1777,
            });
            b.bind(s, Path::new(t), false, "contained temporary directory");
        } else {
            b.bind(
                host(Path::new(t)),
                Path::new(t),
                false,
                "temporary directory",
            );
        }
    }
    if !req.no_home && !req.no_mount.home {
        // Contained, the home is an empty directory (in --workdir if given), unless
        // --home named one.
        match (&req.home_src, req.contain && !req.custom_home) {
            (Some(src), false) => {
                b.bind(host(src), &req.home_dst, false, "home directory");
            }
            (_, true) if req.workdir.is_some() => {
                let w = req.workdir.as_deref().unwrap_or(Path::new("/"));
                b.bind_required(
                    host(&w.join("home")),
                    &req.home_dst,
                    "--workdir home directory",
                );
            }
            _ => {
                let s = PathBuf::from(format!("{SESSION}/home"));
                b.push(Step::Mkdir {
                    path: s.clone(),
                    mode: 0o755,
                });
                b.bind(s, &req.home_dst, false, "contained home directory");
            }
        }
        bound.push(req.home_dst.clone());
    }
    bound
}

/// `--scratch` directories: in `--workdir` when given, else in memory. Mounted after
/// /proc, /dev, /tmp and the home: the command line refuses destinations that would
/// cover the first two.
fn scratch(b: &mut Builder, req: &MountRequest) {
    for dst in &req.scratch {
        match &req.workdir {
            Some(w) => b.bind_required(host(&scratch_dir(w, dst)), dst, "--scratch directory"),
            None => {
                let dst = under(b.root, dst);
                b.push(Step::Tmpfs { dst, mode: 0o755 });
            }
        }
    }
}

/// Where scratch directory `dst` lives in workdir `w`.
pub fn scratch_dir(w: &Path, dst: &Path) -> PathBuf {
    w.join("scratch").join(dst.strip_prefix("/").unwrap_or(dst))
}

/// Host files the network and the clock need.
fn host_files(b: &mut Builder, req: &MountRequest) {
    for (src, dst) in [
        (&req.resolv_conf, "/etc/resolv.conf"),
        (&req.hosts, "/etc/hosts"),
        (&req.localtime, "/etc/localtime"),
    ] {
        if req.no_mount.skips_file(dst) {
            continue;
        }
        if let Some(src) = src {
            b.bind(host(src), Path::new(dst), true, "host configuration");
        }
    }
}

/// The container's /etc/passwd and /etc/group.
fn identity(b: &mut Builder, req: &MountRequest) {
    for (name, contents) in [("passwd", &req.passwd), ("group", &req.group)] {
        let s = PathBuf::from(format!("{SESSION}/{name}"));
        b.push(Step::WriteFile {
            path: s.clone(),
            contents: contents.clone(),
        });
        b.bind(s, Path::new(&format!("/etc/{name}")), true, "user identity");
    }
}

/// The working directory, unless contained or already visible.
fn cwd(b: &mut Builder, req: &MountRequest, bound: &[PathBuf]) {
    if let Some(cwd) = &req.cwd
        && !req.contain
        && !req.no_mount.cwd
        && cwd != Path::new("/")
        && !bound.iter().any(|d| is_within(cwd, d))
        && !SYSTEM_DIRS.iter().any(|d| is_within(cwd, Path::new(d)))
    {
        b.bind(host(cwd), cwd, false, "working directory");
    }
}

/// The user's binds, last, so they can cover anything above. A device bound at its
/// own place under /dev keeps working (as in Apptainer); everything else is nodev.
fn user_binds(b: &mut Builder, req: &MountRequest) {
    for u in &req.binds {
        let dst = clean(&u.dst);
        let device = dst.starts_with("/dev") && u.src.starts_with("/dev");
        b.push(Step::Bind {
            src: host(&u.src),
            dst: under(b.root, &dst),
            recursive: true,
            attrs: Attrs {
                readonly: u.readonly,
                ..if device {
                    Attrs::DEVICES
                } else {
                    Attrs::NOSUID_NODEV
                }
            },
            file: !u.src.is_dir(),
            required: true,
            why: "--bind",
        });
    }
}

/// Directories whose host version never replaces the image's (a working directory inside
/// them is not bound; the container starts in its home instead).
const SYSTEM_DIRS: [&str; 10] = [
    "/proc", "/sys", "/dev", "/etc", "/usr", "/bin", "/sbin", "/lib", "/lib64", "/boot",
];

/// The mount points the plan needs inside the container root, for a root that cannot
/// create them itself (the FUSE root synthesises them): `(path, is_file)`.
pub fn mount_points(steps: &[Step], root: &str) -> Vec<(PathBuf, bool)> {
    steps
        .iter()
        .filter_map(|s| match s {
            Step::Bind { dst, file, .. } => Some((dst, *file)),
            Step::Tmpfs { dst, .. } | Step::Proc { dst } | Step::Devpts { dst } => {
                Some((dst, false))
            }
            _ => None,
        })
        .filter_map(|(dst, file)| {
            dst.strip_prefix(root)
                .ok()
                .map(|p| (Path::new("/").join(p), file))
        })
        .collect()
}

#[cfg(test)]
mod tests;
