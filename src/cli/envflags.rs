//! Flag defaults from the environment, as the peers take them: `APPTAINER_<FLAG>` and
//! `SINGULARITY_<FLAG>` (a flag's long name in capitals, `-` as `_`), and veil's own
//! `VEIL_<FLAG>`. A flag on the command line wins; otherwise the first of `VEIL_`,
//! `APPTAINER_`, `SINGULARITY_` that is set and not empty. Only the flags listed
//! here have variables; binds (`*_BIND`, `*_BINDPATH`) are read with the command
//! line's in `run.rs`, as the peers add them to it.

#![forbid(unsafe_code)]

/// Flags of the container commands (and `instance start|run`) that the peers give
/// variables, with the names after the prefix, in the peers' order. veil honours them
/// with all three prefixes. Not here: `--home` (a `*_HOME` variable is often an
/// install directory that a module set), `--shell` (Apptainer sets `APPTAINER_SHELL`
/// inside its own containers, where a nested veil would take it), and the key flags,
/// which have their own variables.
pub const PEER_FLAGS: &[(&str, &[&str])] = &[
    ("contain", &["CONTAIN"]),
    ("containall", &["CONTAINALL"]),
    ("no-home", &["NO_HOME"]),
    ("pwd", &["PWD", "TARGET_PWD", "CWD", "TARGET_CWD"]),
    ("cleanenv", &["CLEANENV"]),
    ("writable-tmpfs", &["WRITABLE_TMPFS"]),
    ("pid", &["PID", "UNSHARE_PID"]),
    ("ipc", &["IPC", "UNSHARE_IPC"]),
    ("uts", &["UTS", "UNSHARE_UTS"]),
    ("hostname", &["HOSTNAME"]),
    ("fakeroot", &["FAKEROOT"]),
    ("userns", &["USERNS", "UNSHARE_USERNS"]),
    ("sharens", &["SHARENS"]),
    ("env-file", &["ENV_FILE"]),
    ("mount", &["MOUNT"]),
    ("no-mount", &["NO_MOUNT"]),
    ("workdir", &["WORKDIR"]),
    ("scratch", &["SCRATCH", "SCRATCHDIR"]),
    ("no-eval", &["NO_EVAL"]),
    ("no-umask", &["NO_UMASK"]),
    ("no-pid", &["NO_PID"]),
    ("compat", &["COMPAT"]),
    ("unsquash", &["UNSQUASH", "TMP_SANDBOX"]),
    ("no-tmp-sandbox", &["NO_TMP_SANDBOX"]),
    ("no-privs", &["NO_PRIVS"]),
    ("net", &["NET", "UNSHARE_NET"]),
    ("network", &["NETWORK"]),
];

/// veil's own flags, with a `VEIL_` variable only.
pub const VEIL_FLAGS: &[&str] = &["verify", "require-encrypted"];

/// The prefixes, in order of precedence.
const PREFIXES: [&str; 3] = ["VEIL_", "APPTAINER_", "SINGULARITY_"];

/// The variables of the flag `long`, in order of precedence: by prefix, then by name.
pub fn variables(long: &str) -> Vec<String> {
    if let Some((_, names)) = PEER_FLAGS.iter().find(|(f, _)| *f == long) {
        return PREFIXES
            .iter()
            .flat_map(|p| names.iter().map(move |n| format!("{p}{n}")))
            .collect();
    }
    if VEIL_FLAGS.contains(&long) {
        return vec![format!(
            "VEIL_{}",
            long.to_ascii_uppercase().replace('-', "_")
        )];
    }
    Vec::new()
}

/// `true`/`false` of a boolean variable's value, as the peers' Go `ParseBool` reads it
/// (and yes/no, on/off), in any case.
fn boolean(var: &str, value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "t" | "true" | "yes" | "on" => Ok(true),
        "0" | "f" | "false" | "no" | "off" => Ok(false),
        _ => Err(format!("{var}={value:?}: give 1/true or 0/false")),
    }
}

/// `cmd` with the defaults its flags take from the environment (`env` looks a
/// variable up). The error is a variable whose value the flag cannot take.
pub fn apply(
    mut cmd: clap::Command,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<clap::Command, String> {
    let args: Vec<(clap::Id, String, bool)> = cmd
        .get_arguments()
        .filter_map(|a| {
            let long = a.get_long()?.to_string();
            let flag = matches!(a.get_action(), clap::ArgAction::SetTrue);
            Some((a.get_id().clone(), long, flag))
        })
        .collect();
    for (id, long, flag) in args {
        let Some((var, value)) = variables(&long)
            .into_iter()
            .find_map(|v| env(&v).filter(|x| !x.trim().is_empty()).map(|x| (v, x)))
        else {
            continue;
        };
        let default: &'static str = if flag {
            if boolean(&var, &value)? {
                "true"
            } else {
                "false"
            }
        } else {
            // Read once per run, a few at most: leaked rather than tied to `cmd`.
            Box::leak(value.into_boxed_str())
        };
        cmd = cmd.mut_arg(id, |a| a.default_value(default));
    }
    Ok(cmd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, ArgAction, Command};

    fn cmd() -> Command {
        Command::new("exec")
            .arg(
                Arg::new("containall")
                    .long("containall")
                    .action(ArgAction::SetTrue),
            )
            .arg(Arg::new("pwd").long("pwd"))
            .arg(Arg::new("verify").long("verify").action(ArgAction::SetTrue))
            .arg(
                Arg::new("passphrase")
                    .long("passphrase")
                    .action(ArgAction::SetTrue),
            )
    }

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn the_command_line_then_veil_then_apptainer_then_singularity() {
        let env = env_of(&[
            ("SINGULARITY_PWD", "/s"),
            ("APPTAINER_PWD", "/a"),
            ("APPTAINER_CONTAINALL", "t"),
            ("APPTAINER_VERIFY", "1"),
            ("VEIL_PASSPHRASE", "secret"),
        ]);
        let m = apply(cmd(), &env).unwrap().get_matches_from(["exec"]);
        assert_eq!(m.get_one::<String>("pwd").unwrap(), "/a");
        assert!(m.get_flag("containall"));
        // No variable for veil's own flags under the peers' prefixes, and none at all
        // for the key flags.
        assert!(!m.get_flag("verify"));
        assert!(!m.get_flag("passphrase"));
        let env = env_of(&[
            ("VEIL_PWD", "/v"),
            ("APPTAINER_PWD", "/a"),
            ("VEIL_VERIFY", "yes"),
        ]);
        let m = apply(cmd(), &env)
            .unwrap()
            .get_matches_from(["exec", "--pwd", "/flag"]);
        assert_eq!(m.get_one::<String>("pwd").unwrap(), "/flag");
        assert!(m.get_flag("verify"));
        let m = apply(cmd(), &env).unwrap().get_matches_from(["exec"]);
        assert_eq!(m.get_one::<String>("pwd").unwrap(), "/v");
        // Off, empty, and a value a boolean cannot take.
        let m = apply(
            cmd(),
            &env_of(&[("VEIL_CONTAINALL", "false"), ("APPTAINER_CONTAINALL", "1")]),
        )
        .unwrap()
        .get_matches_from(["exec"]);
        assert!(!m.get_flag("containall"));
        let m = apply(
            cmd(),
            &env_of(&[("VEIL_CONTAINALL", ""), ("APPTAINER_CONTAINALL", "1")]),
        )
        .unwrap()
        .get_matches_from(["exec"]);
        assert!(m.get_flag("containall"));
        // The peers' other names, after the first one, within a prefix.
        assert_eq!(
            &variables("pwd")[..4],
            ["VEIL_PWD", "VEIL_TARGET_PWD", "VEIL_CWD", "VEIL_TARGET_CWD"]
        );
        assert!(variables("pid").contains(&"SINGULARITY_UNSHARE_PID".to_string()));
        assert!(variables("home").is_empty() && variables("shell").is_empty());
        let e = apply(cmd(), &env_of(&[("APPTAINER_CONTAINALL", "maybe")])).unwrap_err();
        assert!(e.contains("APPTAINER_CONTAINALL"), "{e}");
    }
}
