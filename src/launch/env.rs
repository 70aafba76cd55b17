//! The container's environment, computed the way Apptainer does it:
//!
//! 1. the host environment is passed in (all of it, or with `--cleanenv` a minimal set),
//!    except the runtime's own variables (`VEIL_*`, `APPTAINER_*`, `SINGULARITY_*`, which
//!    is also where encryption secrets live) and `PATH`/`LD_LIBRARY_PATH`/`PS1`, which
//!    are reset;
//! 2. the image's `/.singularity.d/env/*.sh` scripts are sourced and may override that;
//! 3. `VEILENV_X` / `APPTAINERENV_X` / `SINGULARITYENV_X` and then `--env-file` and `--env`
//!    set `X` last, so they win over the image (`..._PREPEND_PATH` / `..._APPEND_PATH`
//!    extend `PATH` instead).
//!
//! Steps 2 and 3 happen inside the container's shell; this module prepares both lists.

#![forbid(unsafe_code)]

use std::ffi::OsString;

use super::error::{LaunchError, Result};

/// The container's default `PATH` (Apptainer's).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Prefixes that set a container variable from the host.
const ENV_PREFIXES: [&str; 3] = ["VEILENV_", "APPTAINERENV_", "SINGULARITYENV_"];
/// Host variables that belong to the runtime and never enter the container.
const RUNTIME_PREFIXES: [&str; 3] = ["VEIL", "APPTAINER", "SINGULARITY"];
/// Host variables that are reset rather than passed.
const RESET: [&str; 3] = ["PATH", "LD_LIBRARY_PATH", "PS1"];
/// What `--cleanenv` keeps.
const CLEAN_KEEP: [&str; 6] = ["TERM", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "DISPLAY"];

#[derive(Debug, Default)]
pub struct EnvRequest {
    pub host: Vec<(OsString, OsString)>,
    pub cleanenv: bool,
    /// `--env-file` entries, then `--env` entries, in order.
    pub cli: Vec<(String, String)>,
    pub home: String,
    pub user: String,
    /// The image path as given, for `APPTAINER_CONTAINER`.
    pub container: String,
    pub container_name: String,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct ContainerEnv {
    /// Passed to `execve`: the shell then sources the image's scripts on top.
    pub initial: Vec<(OsString, OsString)>,
    /// Applied after the image's scripts, in order.
    pub overrides: Vec<(String, String)>,
    pub prepend_path: Option<String>,
    pub append_path: Option<String>,
}

impl ContainerEnv {
    /// The final environment without the image's scripts: what a shell-less `exec` gets.
    pub fn flattened(&self) -> Vec<(OsString, OsString)> {
        let mut env = self.initial.clone();
        let mut set = |k: &str, v: String| {
            env.retain(|(ek, _)| ek != k);
            env.push((k.into(), v.into()));
        };
        for (k, v) in &self.overrides {
            set(k, v.clone());
        }
        let path = self
            .overrides
            .iter()
            .rev()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| DEFAULT_PATH.to_string());
        let path = [
            self.prepend_path.as_deref(),
            Some(&path),
            self.append_path.as_deref(),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(":");
        set("PATH", path);
        env
    }
}

fn is_valid_name(k: &str) -> bool {
    let mut c = k.chars();
    matches!(c.next(), Some(ch) if ch == '_' || ch.is_ascii_alphabetic())
        && c.all(|ch| ch == '_' || ch.is_ascii_alphanumeric())
}

pub fn compute(req: &EnvRequest) -> Result<ContainerEnv> {
    let mut out = ContainerEnv::default();
    for (k, v) in &req.host {
        let Some(ks) = k.to_str() else { continue };
        if ENV_PREFIXES.iter().any(|p| ks.starts_with(p)) {
            continue;
        }
        if RUNTIME_PREFIXES.iter().any(|p| ks.starts_with(p)) || RESET.contains(&ks) {
            continue;
        }
        if req.cleanenv && !CLEAN_KEEP.contains(&ks) {
            continue;
        }
        out.initial.push((k.clone(), v.clone()));
    }
    let rank = |k: &str| match () {
        _ if k.starts_with("VEILENV_") => 2,
        _ if k.starts_with("APPTAINERENV_") => 1,
        _ => 0,
    };
    // VEILENV_ beats APPTAINERENV_ beats SINGULARITYENV_: sort so the winners come last.
    let mut with_rank: Vec<(u8, String, String)> = req
        .host
        .iter()
        .filter_map(|(k, v)| {
            let ks = k.to_str()?;
            let name = ENV_PREFIXES.iter().find_map(|p| ks.strip_prefix(p))?;
            is_valid_name(name)
                .then(|| (rank(ks), name.to_string(), v.to_string_lossy().into_owned()))
        })
        .collect();
    with_rank.sort_by_key(|(r, _, _)| *r);
    let prefixed = with_rank.into_iter().map(|(_, k, v)| (k, v));

    for (k, v) in prefixed.chain(req.cli.iter().cloned()) {
        if !is_valid_name(&k) {
            return Err(LaunchError::EnvName(k));
        }
        match k.as_str() {
            "PREPEND_PATH" => out.prepend_path = Some(v),
            "APPEND_PATH" => out.append_path = Some(v),
            _ => {
                out.overrides.retain(|(ok, _)| *ok != k);
                out.overrides.push((k, v));
            }
        }
    }

    let set = |env: &mut Vec<(OsString, OsString)>, k: &str, v: &str| {
        env.retain(|(ek, _)| ek != k);
        env.push((k.into(), v.into()));
    };
    set(&mut out.initial, "PATH", DEFAULT_PATH);
    set(&mut out.initial, "HOME", &req.home);
    if !req.user.is_empty() {
        set(&mut out.initial, "USER", &req.user);
        set(&mut out.initial, "LOGNAME", &req.user);
    }
    set(&mut out.initial, "LD_LIBRARY_PATH", "/.singularity.d/libs");
    set(&mut out.initial, "PS1", "Veil> ");
    for p in ["APPTAINER", "SINGULARITY", "VEIL"] {
        set(&mut out.initial, &format!("{p}_CONTAINER"), &req.container);
        set(&mut out.initial, &format!("{p}_NAME"), &req.container_name);
    }
    Ok(out)
}

/// Parses `--env` values: `K=V[,K=V...]`.
pub fn parse_env_flag(s: &str) -> Result<Vec<(String, String)>> {
    s.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.to_string()))
                .ok_or_else(|| LaunchError::EnvFlag(p.to_string()))
        })
        .collect()
}

/// Parses an `--env-file`: `NAME=VALUE` lines, optional `export `, `#` comments, values
/// optionally in single or double quotes (taken literally: no expansion).
pub fn parse_env_file(text: &str, file: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| LaunchError::EnvFileLine {
                file: file.to_string(),
                line: n + 1,
            })?;
        let v = v.trim();
        let v = if v.len() >= 2
            && ((v.starts_with('"') && v.ends_with('"'))
                || (v.starts_with('\'') && v.ends_with('\'')))
        {
            &v[1..v.len() - 1]
        } else {
            v
        };
        if !is_valid_name(k.trim()) {
            return Err(LaunchError::EnvFileName {
                file: file.to_string(),
                line: n + 1,
                name: k.trim().to_string(),
            });
        }
        out.push((k.trim().to_string(), v.to_string()));
    }
    Ok(out)
}

pub use crate::support::shell::sh_quote;

#[cfg(test)]
mod tests {
    use super::*;

    fn host(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs.iter().map(|(k, v)| (k.into(), v.into())).collect()
    }

    fn get<'a>(env: &'a [(OsString, OsString)], k: &str) -> Option<&'a str> {
        env.iter()
            .find(|(ek, _)| ek == k)
            .map(|(_, v)| v.to_str().unwrap())
    }

    #[test]
    fn host_env_passes_except_runtime_and_reset_variables() {
        let req = EnvRequest {
            host: host(&[
                ("FOO", "1"),
                ("PATH", "/host/bin"),
                ("APPTAINER_ENCRYPTION_PASSPHRASE", "secret"),
                ("SINGULARITY_ENCRYPTION_PEM_DATA", "secret"),
                ("VEIL_ENCRYPTION_PASSPHRASE", "secret"),
                ("SINGULARITYENV_A", "s"),
                ("APPTAINERENV_A", "a"),
                ("VEILENV_B", "v"),
                ("APPTAINERENV_PREPEND_PATH", "/pre"),
                ("TERM", "xterm"),
            ]),
            cli: vec![("B".into(), "cli".into())],
            home: "/home/u".into(),
            user: "u".into(),
            container: "x.sif".into(),
            container_name: "x.sif".into(),
            ..Default::default()
        };
        let env = compute(&req).unwrap();
        assert_eq!(get(&env.initial, "FOO"), Some("1"));
        assert_eq!(get(&env.initial, "PATH"), Some(DEFAULT_PATH));
        assert_eq!(get(&env.initial, "HOME"), Some("/home/u"));
        assert_eq!(get(&env.initial, "APPTAINER_CONTAINER"), Some("x.sif"));
        assert!(!env.initial.iter().any(|(_, v)| v == "secret"));
        assert!(
            !env.initial
                .iter()
                .any(|(k, _)| k.to_str().unwrap().contains("ENV_"))
        );
        // APPTAINERENV_ beats SINGULARITYENV_; --env beats VEILENV_.
        assert_eq!(
            env.overrides,
            vec![("A".into(), "a".into()), ("B".into(), "cli".into())]
        );
        assert_eq!(env.prepend_path.as_deref(), Some("/pre"));
        let flat = env.flattened();
        assert_eq!(
            get(&flat, "PATH"),
            Some(format!("/pre:{DEFAULT_PATH}").as_str())
        );

        let clean = compute(&EnvRequest {
            cleanenv: true,
            ..req
        })
        .unwrap();
        assert_eq!(get(&clean.initial, "FOO"), None);
        assert_eq!(get(&clean.initial, "TERM"), Some("xterm"));
    }

    #[test]
    fn env_flags_and_files() {
        assert_eq!(
            parse_env_flag("A=1,B=x=y").unwrap(),
            vec![("A".into(), "1".into()), ("B".into(), "x=y".into())]
        );
        assert!(parse_env_flag("NOVALUE").is_err());
        let f = parse_env_file("# c\nexport A='x y'\nB=\"q\"\n\nC=plain\n", "f").unwrap();
        assert_eq!(f[0], ("A".into(), "x y".into()));
        assert_eq!(f[1], ("B".into(), "q".into()));
        assert_eq!(f[2], ("C".into(), "plain".into()));
        let e = parse_env_file("A=1\n1BAD=2\n", "f")
            .unwrap_err()
            .to_string();
        assert!(e.contains("f:2"), "{e}");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
    }
}
