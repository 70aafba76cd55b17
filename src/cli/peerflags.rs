//! The peers' flags that veil accepts without a meaning of its own: each is either
//! ignored (veil already behaves that way, or it cannot apply) or refused with a
//! one-line reason that names what to do instead. Flags veil honours are ordinary
//! clap arguments of their commands; these are added to the command tree hidden, so
//! that a script written for Apptainer or SingularityCE fails with a reason instead of
//! "unexpected argument". docs/compat.md lists them all; tests/peer_flags.rs checks
//! that every peer flag parses.

#![forbid(unsafe_code)]

use clap::{Arg, ArgAction, ArgMatches, Command};

/// What veil does with a peer's flag it has no argument for.
#[derive(Debug, Clone, Copy)]
pub enum Treatment {
    /// Accepted and without effect: why (shown with -v).
    Ignored(&'static str),
    /// Refused: why, and what to do instead.
    Refused(&'static str),
}

/// One flag of the peers.
#[derive(Debug)]
pub struct PeerFlag {
    /// The commands that have it: "run", "build", "key list", "" for the global flags.
    pub commands: &'static [&'static str],
    pub long: &'static str,
    pub short: Option<char>,
    /// Whether it takes a value.
    pub value: bool,
    pub treatment: Treatment,
}

use Treatment::{Ignored, Refused};

/// The commands that take the peers' action flags.
pub const ACTIONS: &[&str] = &[
    "run",
    "exec",
    "shell",
    "test",
    "instance start",
    "instance run",
];
const BUILD: &[&str] = &["build"];
const GLOBAL: &[&str] = &[""];
const KEYS_DIR_COMMANDS: &[&str] = &[
    "key newpair",
    "key list",
    "key import",
    "key export",
    "key remove",
    "key pull",
    "key push",
];
const GLOBAL_KEYRING_COMMANDS: &[&str] = &[
    "key list",
    "key import",
    "key export",
    "key remove",
    "key pull",
    "key push",
];
const BOTH: &[&str] = &[
    "run",
    "exec",
    "shell",
    "test",
    "instance start",
    "instance run",
    "build",
];

const CGROUPS: Treatment = Refused(
    "veil does not manage cgroups: let the batch scheduler set limits, or run veil under `systemd-run --user --scope -p …`",
);
const GPU: Treatment = Refused(
    "veil has no GPU support yet: bind the driver's libraries and /dev/nvidia* (or /dev/dri, /dev/kfd) with --bind",
);
const NETWORK: Treatment = Refused(
    "veil makes only --net --network none (a network namespace with loopback alone); port maps, other networks and joining one need root",
);
const CREDENTIALS: Treatment = Refused(
    "veil takes registry credentials from `veil registry login`, VEIL_/APPTAINER_DOCKER_USERNAME and _PASSWORD, or Docker's config (docs/registry.md)",
);
const OCI_MODE: Treatment =
    Refused("SingularityCE's OCI mode and OCI-SIF images are not supported");
const REMOTE_BUILD: Treatment =
    Refused("veil builds locally and without root; remote and BuildKit builders are not supported");
const CERTIFICATES: Treatment = Refused(
    "X.509 certificate verification is not supported: veil checks OpenPGP signatures against your keyrings, or DSSE ones with --key",
);
const COSIGN: Treatment = Refused(
    "cosign signatures are not supported: veil signs and verifies OpenPGP (and verifies DSSE with --key)",
);
const SCIF: Treatment = Refused("SCIF apps are not supported: run the app's command with exec");
const NOT_NEEDED_ROOTLESS: Treatment =
    Ignored("veil always works in a user namespace, without root or helpers");

macro_rules! flag {
    ($cmds:expr, $long:literal, $short:expr, $value:literal, $t:expr) => {
        PeerFlag {
            commands: $cmds,
            long: $long,
            short: $short,
            value: $value,
            treatment: $t,
        }
    };
}

/// Every peer flag veil has no argument of its own for.
pub static FLAGS: &[PeerFlag] = &[
    // Global.
    flag!(
        GLOBAL,
        "config",
        Some('c'),
        true,
        Refused(
            "veil reads no apptainer.conf: its settings are flags and VEIL_ variables (docs/compat.md)"
        )
    ),
    flag!(
        GLOBAL,
        "build-config",
        None,
        false,
        Ignored("veil has one configuration for builds and runs")
    ),
    // Actions.
    flag!(
        ACTIONS,
        "add-caps",
        None,
        true,
        Refused("capability sets cannot be changed: veil runs containers without privileges")
    ),
    flag!(
        ACTIONS,
        "drop-caps",
        None,
        true,
        Refused("capability sets cannot be changed: veil runs containers without privileges")
    ),
    flag!(
        ACTIONS,
        "allow-setuid",
        None,
        false,
        Refused("setuid programs cannot gain privileges in veil's user namespace")
    ),
    flag!(
        ACTIONS,
        "keep-privs",
        None,
        false,
        Refused("veil has no privileges to keep: it runs as you")
    ),
    flag!(ACTIONS, "app", None, true, SCIF),
    flag!(ACTIONS, "apply-cgroups", None, true, CGROUPS),
    flag!(ACTIONS, "blkio-weight", None, true, CGROUPS),
    flag!(ACTIONS, "blkio-weight-device", None, true, CGROUPS),
    flag!(ACTIONS, "cpu-shares", None, true, CGROUPS),
    flag!(ACTIONS, "cpus", None, true, CGROUPS),
    flag!(ACTIONS, "cpuset-cpus", None, true, CGROUPS),
    flag!(ACTIONS, "cpuset-mems", None, true, CGROUPS),
    flag!(ACTIONS, "memory", None, true, CGROUPS),
    flag!(ACTIONS, "memory-reservation", None, true, CGROUPS),
    flag!(ACTIONS, "memory-swap", None, true, CGROUPS),
    flag!(ACTIONS, "oom-kill-disable", None, false, CGROUPS),
    flag!(ACTIONS, "pids-limit", None, true, CGROUPS),
    flag!(BOTH, "authfile", None, true, CREDENTIALS),
    flag!(BOTH, "docker-login", None, false, CREDENTIALS),
    flag!(ACTIONS, "docker-username", None, true, CREDENTIALS),
    flag!(ACTIONS, "docker-password", None, true, CREDENTIALS),
    flag!(
        BOTH,
        "docker-host",
        None,
        true,
        Refused("veil talks to no Docker daemon: use docker://IMAGE or docker-archive:FILE")
    ),
    flag!(
        ACTIONS,
        "cdi-dirs",
        None,
        true,
        Refused("CDI devices are not supported: bind device nodes with --bind /dev/NAME")
    ),
    flag!(
        ACTIONS,
        "device",
        None,
        true,
        Refused("CDI devices are not supported: bind device nodes with --bind /dev/NAME")
    ),
    flag!(BOTH, "nv", None, false, GPU),
    flag!(BOTH, "nvccli", None, false, GPU),
    flag!(BOTH, "rocm", None, false, GPU),
    flag!(ACTIONS, "intel-hpu", None, false, GPU),
    flag!(
        ACTIONS,
        "no-nv",
        None,
        false,
        Ignored("veil sets up no GPUs")
    ),
    flag!(
        ACTIONS,
        "no-rocm",
        None,
        false,
        Ignored("veil sets up no GPUs")
    ),
    flag!(
        BOTH,
        "compat32",
        None,
        false,
        Refused("32-bit GPU library setup is not supported")
    ),
    flag!(
        ACTIONS,
        "containlibs",
        None,
        true,
        Refused("library injection is not supported: bind the libraries with --bind")
    ),
    flag!(ACTIONS, "data", None, true, OCI_MODE),
    flag!(BOTH, "keep-layers", None, false, OCI_MODE),
    flag!(BOTH, "oci", None, false, OCI_MODE),
    flag!(ACTIONS, "no-compat", None, false, OCI_MODE),
    flag!(
        BOTH,
        "no-oci",
        None,
        false,
        Ignored("veil always runs SIF images natively")
    ),
    flag!(
        BOTH,
        "disable-cache",
        None,
        false,
        Refused(
            "veil caches docker:// and oras:// images for runs: point VEIL_CACHEDIR at a job-local directory, or `veil cache clean` after"
        )
    ),
    flag!(
        ACTIONS,
        "dns",
        None,
        true,
        Refused(
            "veil binds the host's /etc/resolv.conf: bind another with --bind FILE:/etc/resolv.conf"
        )
    ),
    flag!(ACTIONS, "network-args", None, true, NETWORK),
    flag!(ACTIONS, "netns-path", None, true, NETWORK),
    flag!(
        ACTIONS,
        "fusemount",
        None,
        true,
        Refused("FUSE mounts inside the container are not supported")
    ),
    flag!(
        BOTH,
        "ignore-fakeroot-command",
        None,
        false,
        NOT_NEEDED_ROOTLESS
    ),
    flag!(ACTIONS, "ignore-subuid", None, false, NOT_NEEDED_ROOTLESS),
    flag!(BOTH, "ignore-userns", None, false, NOT_NEEDED_ROOTLESS),
    flag!(
        BOTH,
        "no-setgroups",
        None,
        false,
        Ignored("veil's user namespace keeps no supplementary groups to drop")
    ),
    flag!(
        ACTIONS,
        "no-env",
        None,
        true,
        Refused("not supported: use --cleanenv with --env for the variables to keep")
    ),
    flag!(
        ACTIONS,
        "overlay",
        Some('o'),
        true,
        Refused(
            "persistent overlays are not supported: --writable-tmpfs gives a writable root in memory"
        )
    ),
    flag!(
        ACTIONS,
        "writable",
        Some('w'),
        false,
        Refused("veil runs images read-only: --writable-tmpfs gives a writable root in memory")
    ),
    flag!(
        ACTIONS,
        "proot",
        None,
        true,
        Ignored("veil needs no proot: it runs without root")
    ),
    flag!(
        ACTIONS,
        "security",
        None,
        true,
        Refused("security options (seccomp, SELinux, AppArmor labels) are not supported")
    ),
    flag!(
        ACTIONS,
        "sif-fuse",
        None,
        false,
        Ignored("veil always serves SIF images with its own FUSE server")
    ),
    flag!(
        ACTIONS,
        "underlay",
        None,
        false,
        Ignored("veil makes mount points with its FUSE server or an overlay")
    ),
    flag!(
        ACTIONS,
        "tmpdir",
        None,
        true,
        Ignored(
            "a run writes nothing but the cache of docker:// and oras:// images (VEIL_CACHEDIR)"
        )
    ),
    flag!(
        ACTIONS,
        "no-init",
        None,
        false,
        Ignored("veil's init is part of veil and always runs")
    ),
    flag!(
        &["instance start", "instance run"],
        "sharens",
        None,
        false,
        Ignored("an instance is one shared container already: join it with instance://NAME")
    ),
    flag!(
        &["run"],
        "runscript-timeout",
        None,
        true,
        Refused("not supported: run `timeout SECONDS veil run …`")
    ),
    // Build.
    flag!(
        BUILD,
        "arch-variant",
        None,
        true,
        Refused("platform variants are not supported: --arch picks the architecture")
    ),
    flag!(
        BUILD,
        "bind",
        Some('B'),
        true,
        Refused("binds during %post are not supported: copy files in with %files")
    ),
    flag!(
        BUILD,
        "mount",
        None,
        true,
        Refused("binds during %post are not supported: copy files in with %files")
    ),
    flag!(BUILD, "builder", None, true, REMOTE_BUILD),
    flag!(BUILD, "buildkit-host", None, true, REMOTE_BUILD),
    flag!(BUILD, "detached", Some('d'), false, REMOTE_BUILD),
    flag!(BUILD, "remote", Some('r'), false, REMOTE_BUILD),
    flag!(
        BUILD,
        "library",
        None,
        true,
        Refused("library:// images are not supported: use oras:// or docker://")
    ),
    flag!(
        BUILD,
        "data",
        None,
        false,
        Refused("data containers are not supported")
    ),
    flag!(
        BUILD,
        "fix-perms",
        None,
        false,
        Refused("not supported: veil keeps the source's permissions")
    ),
    flag!(
        BUILD,
        "json",
        None,
        false,
        Ignored(
            "the peers accept it and do nothing with it either (their JSON definitions are gone since 2019)"
        )
    ),
    flag!(BUILD, "ignore-proot", None, false, NOT_NEEDED_ROOTLESS),
    flag!(
        BUILD,
        "mksquashfs-args",
        None,
        true,
        Refused(
            "veil writes squashfs itself: use --compression, --compression-level, --block-size"
        )
    ),
    flag!(
        BUILD,
        "no-cleanup",
        None,
        false,
        Refused("veil always removes what a failed build left")
    ),
    flag!(
        BUILD,
        "reproducible",
        None,
        false,
        Refused("set SOURCE_DATE_EPOCH, which veil build honours (docs/build.md)")
    ),
    flag!(
        BUILD,
        "section",
        None,
        true,
        Refused("veil runs the whole definition file")
    ),
    flag!(
        BUILD,
        "update",
        Some('u'),
        false,
        Refused("veil does not update a sandbox in place: build a new one")
    ),
    flag!(BUILD, "userns", None, false, NOT_NEEDED_ROOTLESS),
    flag!(
        BUILD,
        "writable-tmpfs",
        None,
        false,
        Ignored("%test runs on veil's build tree")
    ),
    // Inspect, sign, verify.
    flag!(&["inspect"], "app", None, true, SCIF),
    flag!(&["inspect"], "list-apps", None, false, SCIF),
    flag!(
        &["sign"],
        "key",
        None,
        true,
        Refused(
            "signing with a PEM key (DSSE) is not supported: veil signs with OpenPGP keys (--keyidx); verify --key checks DSSE signatures"
        )
    ),
    flag!(&["sign", "verify"], "cosign", Some('c'), false, COSIGN),
    flag!(&["verify"], "certificate", None, true, CERTIFICATES),
    flag!(
        &["verify"],
        "certificate-intermediates",
        None,
        true,
        CERTIFICATES
    ),
    flag!(&["verify"], "certificate-roots", None, true, CERTIFICATES),
    flag!(&["verify"], "ocsp-verify", None, false, CERTIFICATES),
    // Keys.
    flag!(
        KEYS_DIR_COMMANDS,
        "keysdir",
        Some('d'),
        true,
        Refused(
            "veil's keyrings are ~/.veil/keys (the peers' are read too); run with another HOME for others"
        )
    ),
    flag!(
        GLOBAL_KEYRING_COMMANDS,
        "global",
        Some('g'),
        false,
        Refused("veil has no system-wide keyring: keys are per user")
    ),
    flag!(
        &["key import"],
        "new-password",
        None,
        false,
        Refused(
            "not supported: change the key's passphrase with `gpg --passwd` before importing it"
        )
    ),
];

/// The flags of command `path` ("" for the top).
fn of(path: &str) -> impl Iterator<Item = &'static PeerFlag> + '_ {
    FLAGS.iter().filter(move |f| f.commands.contains(&path))
}

/// `cmd` (the command at `path`) and its subcommands with the peers' flags added,
/// hidden; a flag whose name or letter the command already uses is left alone (the
/// command's own argument takes it).
pub fn augment(cmd: Command, path: &str) -> Command {
    let mut cmd = cmd;
    for f in of(path) {
        let taken_long = cmd.get_arguments().any(|a| {
            a.get_long() == Some(f.long)
                || a.get_all_aliases().is_some_and(|al| al.contains(&f.long))
        });
        if taken_long {
            continue;
        }
        let mut arg = Arg::new(f.long).long(f.long).hide(true);
        if let Some(c) = f.short
            && !cmd.get_arguments().any(|a| a.get_short() == Some(c))
        {
            arg = arg.short(c);
        }
        arg = if f.value {
            arg.action(ArgAction::Append)
                .num_args(1)
                .allow_hyphen_values(true)
        } else {
            arg.action(ArgAction::Count)
        };
        cmd = cmd.arg(arg);
    }
    let subs: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    for name in subs {
        let sub_path = if path.is_empty() {
            name.clone()
        } else {
            format!("{path} {name}")
        };
        cmd = cmd.mut_subcommand(&name, |s| augment(s, &sub_path));
    }
    cmd
}

/// The first refused peer flag given anywhere along the parsed command line, as
/// `(--flag, why)`; ignored ones are noted with -v.
pub fn refused(m: &ArgMatches) -> Option<(String, &'static str)> {
    let mut path = String::new();
    let mut m = m;
    loop {
        for f in of(&path) {
            // (The id is the long name; a command whose own argument has that name
            // did not get the peer flag.)
            let given = m.try_contains_id(f.long).unwrap_or(false)
                && m.value_source(f.long) == Some(clap::parser::ValueSource::CommandLine);
            if !given {
                continue;
            }
            match f.treatment {
                Refused(why) => return Some((format!("--{}", f.long), why)),
                Ignored(why) => {
                    crate::support::diag::debug_note(&format!("--{} has no effect: {why}", f.long))
                }
            }
        }
        let (name, sub) = m.subcommand()?;
        path = if path.is_empty() {
            name.to_string()
        } else {
            format!("{path} {name}")
        };
        m = sub;
    }
}
