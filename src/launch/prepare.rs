//! What a launch computes before it makes any namespace or mount: paths on the host,
//! the container's environment and argv, its identity files, and the mount request.

#![forbid(unsafe_code)]

use std::ffi::CString;
use std::fs;
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use veil_fusefs::squashfs::Squashfs;

use super::action::{self, Action, ActionArgv};
use super::error::{LaunchError, Result};
use super::spec::{LaunchSpec, Mode, Options, RootKind, RootSource};
use super::steps::ContainerNamespaces;
use super::{env, plan, sys};
use crate::support::identity::{self, Identity};

/// Paths on the host the container's mounts and start directory depend on.
#[derive(Debug, Clone, Default)]
pub(super) struct HostPaths {
    /// The home to bind (canonical), when it exists.
    pub home_src: Option<PathBuf>,
    /// Where the home appears inside.
    pub home_dst: PathBuf,
    /// The working directory (canonical).
    pub cwd: Option<PathBuf>,
}

impl HostPaths {
    pub fn resolve(o: &Options, id: &Identity) -> Result<HostPaths> {
        let (home_src, home_dst) = match &o.home {
            Some((src, dst)) => (
                Some(
                    src.canonicalize()
                        .map_err(|_| LaunchError::BindSource(src.display().to_string()))?,
                ),
                dst.clone(),
            ),
            None => {
                let host_home = PathBuf::from(&id.host_home);
                let dst = if o.fakeroot {
                    PathBuf::from("/root")
                } else {
                    host_home.clone()
                };
                (host_home.canonicalize().ok(), dst)
            }
        };
        let cwd = std::env::current_dir()
            .ok()
            .and_then(|p| p.canonicalize().ok());
        if let Some(w) = &o.workdir {
            workdir_dirs(w, o)?;
        }
        Ok(HostPaths {
            home_src,
            home_dst,
            cwd,
        })
    }

    /// The directories the container may start in, in order: --pwd, else the working
    /// directory if it is visible inside, else the home directory, else /.
    pub fn start_dirs(&self, o: &Options) -> Vec<CString> {
        let start_dir = o
            .pwd
            .clone()
            .or_else(|| if o.contain { None } else { self.cwd.clone() });
        [
            start_dir,
            Some(self.home_dst.clone()),
            Some(PathBuf::from("/")),
        ]
        .into_iter()
        .flatten()
        .filter_map(|p| CString::new(p.as_os_str().as_bytes()).ok())
        .collect()
    }
}

/// The host files bound over the image's `/etc/...`, canonical, when they exist.
#[derive(Debug, Clone, Default)]
pub(super) struct HostEtc {
    pub resolv_conf: Option<PathBuf>,
    pub hosts: Option<PathBuf>,
    pub localtime: Option<PathBuf>,
}

impl HostEtc {
    pub fn current() -> HostEtc {
        HostEtc {
            resolv_conf: host_file("/etc/resolv.conf"),
            hosts: host_file("/etc/hosts"),
            localtime: host_file("/etc/localtime"),
        }
    }
}

/// The container's environment and the argv of its action.
pub(super) fn action_argv(spec: &LaunchSpec, id: &Identity, home_dst: &Path) -> Result<ActionArgv> {
    argv_for(
        spec.action,
        &spec.image_name,
        &spec.args,
        &spec.options,
        id,
        home_dst,
    )
}

/// [`action_argv`] from its parts, for a launch or a join of a running container.
pub(super) fn argv_for(
    action: Action,
    image_name: &str,
    args: &[std::ffi::OsString],
    o: &Options,
    id: &Identity,
    home_dst: &Path,
) -> Result<ActionArgv> {
    let env = env::compute(&env::EnvRequest {
        host: std::env::vars_os().collect(),
        cleanenv: o.cleanenv,
        cli: o.env.clone(),
        home: home_dst.to_string_lossy().into_owned(),
        user: if o.fakeroot {
            "root".into()
        } else {
            id.name.clone()
        },
        container: image_name.to_string(),
        container_name: Path::new(image_name)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    })?;
    action::build(action, args, &env, o.shell.as_deref())
}

pub(super) fn direct_first(spec: &LaunchSpec) -> bool {
    spec.action == Action::Exec && !has_env_scripts(&spec.root)
}

/// The image's own /etc/passwd and /etc/group, which the container's are made from:
/// read from the sandbox directory, or from the squashfs `image_fs` whichever way it
/// is mounted.
pub(super) fn image_identity_files(
    mode: &Mode,
    image_fs: Option<&Squashfs<crate::image::Source>>,
) -> (Option<String>, Option<String>) {
    match (mode, image_fs) {
        (Mode::Directory(dir), _) => (
            read_in_root(dir, "etc/passwd"),
            read_in_root(dir, "etc/group"),
        ),
        (_, Some(fs)) => (
            crate::image::read_small_file(fs, "/etc/passwd"),
            crate::image::read_small_file(fs, "/etc/group"),
        ),
        _ => (None, None),
    }
}

/// The directories of `--workdir` the mounts use, made if missing (mode 0700, in the
/// user's own directory). Each one, and every directory between it and the work
/// directory, must be a directory (not a symlink) of the user's that no one else may
/// write to: a work directory such as /tmp is shared, and a `tmp` or `home` another
/// user made there in advance must not become the container's.
fn workdir_dirs(w: &Path, o: &Options) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let mut dirs = Vec::new();
    if o.contain {
        dirs.extend([w.join("tmp"), w.join("var_tmp"), w.join("home")]);
    }
    dirs.extend(o.scratch.iter().map(|d| plan::scratch_dir(w, d)));
    if dirs.is_empty() {
        // Without --contain or --scratch the work directory is not used at all.
        return Ok(());
    }
    let uid = nix::unistd::geteuid().as_raw();
    let bad = |path: &Path, why: &str| LaunchError::Workdir {
        path: path.to_path_buf(),
        err: std::io::Error::other(why.to_string()),
    };
    // A work directory others may write to must be sticky (as /tmp), or they could
    // rename what is checked below and put something else in its place.
    let wm = fs::metadata(w).map_err(|err| LaunchError::Workdir {
        path: w.to_path_buf(),
        err,
    })?;
    if wm.mode() & 0o022 != 0 && wm.mode() & 0o1000 == 0 {
        return Err(bad(
            w,
            "others may write to it and it is not sticky (as /tmp is)",
        ));
    }
    // Its owner may rename what is in it, sticky or not: yours, or root's (/tmp).
    if wm.uid() != uid && wm.uid() != 0 {
        return Err(bad(w, "belongs to another user"));
    }
    for d in dirs {
        let rel = d.strip_prefix(w).unwrap_or(&d);
        let mut p = w.to_path_buf();
        for c in rel.components() {
            p.push(c);
            match fs::DirBuilder::new().mode(0o700).create(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(err) => return Err(LaunchError::Workdir { path: p, err }),
            }
            let m = fs::symlink_metadata(&p).map_err(|err| LaunchError::Workdir {
                path: p.clone(),
                err,
            })?;
            if !m.is_dir() {
                return Err(bad(&p, "not a directory (a symlink is not followed)"));
            }
            if m.uid() != uid || m.mode() & 0o022 != 0 {
                return Err(bad(&p, "must be yours and writable by you alone"));
            }
        }
    }
    Ok(())
}

/// What the mount plan is built from. `passwd` and `group` are the image's own files.
pub(super) fn mount_request(
    o: &Options,
    kind: RootKind,
    host: &HostPaths,
    etc: HostEtc,
    id: &Identity,
    (passwd, group): (Option<String>, Option<String>),
) -> plan::MountRequest {
    let home = host.home_dst.to_string_lossy();
    plan::MountRequest {
        direct_root: kind == RootKind::Fuse,
        writable_tmpfs: o.writable_tmpfs,
        contain: o.contain,
        no_home: o.no_home,
        pid_namespace: o.pid,
        home_src: host.home_src.clone(),
        custom_home: o.home.is_some(),
        home_dst: host.home_dst.clone(),
        cwd: host.cwd.clone(),
        binds: o.binds.clone(),
        passwd: identity::passwd(passwd.as_deref(), id, &home).into_bytes(),
        group: identity::group(group.as_deref(), id).into_bytes(),
        resolv_conf: etc.resolv_conf,
        hosts: etc.hosts,
        localtime: etc.localtime,
        no_mount: o.no_mount.clone(),
        workdir: o.workdir.clone(),
        scratch: o.scratch.clone(),
    }
}

/// The container process's namespaces; `locked_userns` is the nested user namespace
/// that locks its mounts, if there is one.
pub(super) fn container_namespaces(
    o: &Options,
    locked_userns: Option<BorrowedFd<'static>>,
) -> ContainerNamespaces {
    ContainerNamespaces {
        pid: o.pid,
        uts: o.uts || o.hostname.is_some(),
        ipc: o.ipc,
        net: o.net,
        hostname: hostname(o),
        locked_userns,
    }
}

/// The container's hostname: --hostname, or "veil" in a new UTS namespace.
fn hostname(o: &Options) -> Option<String> {
    o.hostname
        .clone()
        .or_else(|| o.uts.then(|| "veil".to_string()))
}

/// Whether the image has environment scripts (`/.singularity.d/env/*.sh`) for the
/// action shell to source. When unsure, yes.
fn has_env_scripts(root: &RootSource) -> bool {
    let is_script = |name: &[u8]| name.ends_with(b".sh") && !name.starts_with(b".");
    match root {
        RootSource::Directory(dir) => match fs::read_dir(dir.join(".singularity.d/env")) {
            Ok(entries) => entries
                .flatten()
                .any(|e| is_script(e.file_name().as_bytes())),
            Err(e) => e.kind() != std::io::ErrorKind::NotFound,
        },
        RootSource::Squashfs { fs, .. } => {
            use veil_fusefs::squashfs::{Error, FileKind};
            match fs.lookup_path(b"/.singularity.d/env") {
                Ok(a) if a.kind == FileKind::Directory => match fs.readdir(a.id, 0) {
                    Ok(mut entries) => entries.any(|e| e.map_or(true, |e| is_script(&e.name))),
                    Err(_) => true,
                },
                Err(Error::NotFound) => false,
                _ => true,
            }
        }
    }
}

/// A file inside a sandbox directory, read with the image's symlinks resolved inside it.
fn read_in_root(root: &Path, rel: &str) -> Option<String> {
    let p = sys::resolve_in_root(root, Path::new(rel)).ok()?;
    fs::read_to_string(p).ok()
}

/// The canonical path of a host file, if it exists (symlinks such as
/// /etc/resolv.conf -> /run/... are resolved on the host, where they mean something).
fn host_file(p: &str) -> Option<PathBuf> {
    Path::new(p).canonicalize().ok().filter(|c| c.is_file())
}
