//! The launcher's error type. Messages are one line and, where the cause is a machine
//! setting, they say the fix.

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error(
        "user namespaces are disabled (user.max_user_namespaces = 0); an administrator can enable them with: sysctl -w user.max_user_namespaces=15000"
    )]
    UserNsDisabled,
    #[error(
        "unprivileged user namespaces are restricted by AppArmor (kernel.apparmor_restrict_unprivileged_userns = 1); an administrator can allow them with: sysctl -w kernel.apparmor_restrict_unprivileged_userns=0, or install an AppArmor profile granting 'userns' to veil"
    )]
    UserNsAppArmor,
    #[error(
        "unprivileged user namespaces are disabled (kernel.unprivileged_userns_clone = 0); an administrator can enable them with: sysctl -w kernel.unprivileged_userns_clone=1"
    )]
    UserNsCloneDisabled,
    #[error("cannot create a user namespace: {0}")]
    UserNs(nix::Error),
    #[error(
        "/dev/fuse does not exist: load the fuse module (modprobe fuse), or inside a container start it with --device /dev/fuse"
    )]
    NoFuse,
    #[error("cannot open /dev/fuse: {0} (an administrator can run: chmod 0666 /dev/fuse)")]
    FuseAccess(io::Error),
    #[error("Linux {0} is too old: veil needs 4.18 or later to mount FUSE in a user namespace")]
    KernelTooOld(String),
    #[error("{what}: {err}")]
    Sys { what: String, err: nix::Error },
    #[error("bind source {0} does not exist")]
    BindSource(String),
    #[error("invalid bind {0:?}: {1}")]
    BindSpec(String, &'static str),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    MountPoint(String),
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("container setup failed: {0}")]
    Child(String),
}

pub type Result<T> = std::result::Result<T, LaunchError>;

/// Attaches what was being done to a failed system call.
pub(crate) trait SysContext<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> SysContext<T> for nix::Result<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|err| LaunchError::Sys { what: what(), err })
    }
}
