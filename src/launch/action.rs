//! What runs in the container for each action, compatible with images Apptainer and
//! SingularityCE build: their `/.singularity.d` layout (runscript, test, env scripts).
//!
//! The container's own `/bin/sh` runs a small script that sources the image's environment
//! scripts, applies the user's overrides, and `exec`s the action, so the process the user
//! asked for replaces the shell and receives signals and the exit status directly. An
//! image without `/bin/sh` can still `exec` a program: then the environment is applied
//! directly and no script is sourced.

#![forbid(unsafe_code)]

use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStrExt;

use super::env::{ContainerEnv, DEFAULT_PATH, sh_quote};
use super::error::{LaunchError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Run,
    Exec,
    Shell,
    Test,
    /// An instance's start: the image's `%startscript`, if it has one.
    Start,
    /// Nothing: a container that is only held (a `--sharens` session), with no
    /// process of the image's until something joins it.
    Hold,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Run => "run",
            Action::Exec => "exec",
            Action::Shell => "shell",
            Action::Test => "test",
            Action::Start => "start",
            Action::Hold => "hold",
        }
    }
}

/// Two ways to start the action, decided in the container once its root is in place.
#[derive(Debug)]
pub struct ActionArgv {
    /// Through `/bin/sh`, with the image's environment scripts.
    pub with_shell: (Vec<CString>, Vec<CString>),
    /// For `exec` in an image without `/bin/sh`: the program itself, searched on PATH.
    pub direct: Option<(Vec<CString>, Vec<CString>)>,
}

fn cstr(b: &[u8]) -> Result<CString> {
    CString::new(b).map_err(|_| LaunchError::NulByte)
}

fn env_block(env: &[(OsString, OsString)]) -> Result<Vec<CString>> {
    env.iter()
        .map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            cstr(&kv)
        })
        .collect()
}

/// The shell script for an action. `$@` holds the user's arguments.
pub fn script(action: Action, env: &ContainerEnv, shell: Option<&str>) -> String {
    let mut s = String::from(
        "for __veil_f in /.singularity.d/env/*.sh; do\n  if [ -f \"$__veil_f\" ]; then . \"$__veil_f\"; fi\ndone\nunset __veil_f\n",
    );
    for (k, v) in &env.overrides {
        s.push_str(&format!("export {k}={}\n", sh_quote(v)));
    }
    if let Some(p) = &env.prepend_path {
        s.push_str(&format!(
            "export PATH={}\"${{PATH:-{DEFAULT_PATH}}}\"\n",
            sh_quote(&format!("{p}:"))
        ));
    }
    if let Some(p) = &env.append_path {
        s.push_str(&format!(
            "export PATH=\"${{PATH:-{DEFAULT_PATH}}}\"{}\n",
            sh_quote(&format!(":{p}"))
        ));
    }
    match action {
        Action::Exec => s.push_str("exec \"$@\"\n"),
        Action::Run => s.push_str(
            "if [ -x /.singularity.d/runscript ]; then exec /.singularity.d/runscript \"$@\"; fi\n\
             echo 'veil: the image has no runscript; starting /bin/sh' >&2\n\
             exec /bin/sh \"$@\"\n",
        ),
        Action::Test => s.push_str(
            "if [ -x /.singularity.d/test ]; then exec /.singularity.d/test \"$@\"; fi\n\
             if [ -f /.singularity.d/test ]; then exec /bin/sh /.singularity.d/test \"$@\"; fi\n\
             echo 'veil: the image has no test script' >&2\nexit 0\n",
        ),
        Action::Hold => s.push_str("exit 0\n"),
        Action::Start => s.push_str(
            "if [ -x /.singularity.d/startscript ]; then exec /.singularity.d/startscript \"$@\"; fi\n\
             if [ -f /.singularity.d/startscript ]; then exec /bin/sh /.singularity.d/startscript \"$@\"; fi\n\
             exit 0\n",
        ),
        Action::Shell => match shell {
            Some(sh) => s.push_str(&format!("exec {} \"$@\"\n", sh_quote(sh))),
            None => s.push_str(
                "if [ -x /bin/bash ]; then exec /bin/bash --norc \"$@\"; fi\nexec /bin/sh \"$@\"\n",
            ),
        },
    }
    s
}

pub fn build(
    action: Action,
    args: &[OsString],
    env: &ContainerEnv,
    shell: Option<&str>,
) -> Result<ActionArgv> {
    if action == Action::Exec && args.is_empty() {
        return Err(LaunchError::NoCommand);
    }
    if action == Action::Hold {
        // No argv: the action's process ends at once without an exec (`child`).
        return Ok(ActionArgv {
            with_shell: (Vec::new(), Vec::new()),
            direct: None,
        });
    }
    let mut argv = vec![
        cstr(b"/bin/sh")?,
        cstr(b"-c")?,
        cstr(script(action, env, shell).as_bytes())?,
        cstr(format!("veil-{}", action.name()).as_bytes())?,
    ];
    for a in args {
        argv.push(cstr(a.as_bytes())?);
    }
    let with_shell = (argv, env_block(&env.initial)?);
    let direct = if action == Action::Exec {
        let argv = args
            .iter()
            .map(|a| cstr(a.as_bytes()))
            .collect::<Result<Vec<_>>>()?;
        Some((argv, env_block(&env.flattened())?))
    } else {
        None
    };
    Ok(ActionArgv { with_shell, direct })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_source_env_then_override_then_exec() {
        let env = ContainerEnv {
            overrides: vec![("A".into(), "x'y".into())],
            prepend_path: Some("/p".into()),
            ..Default::default()
        };
        let s = script(Action::Exec, &env, None);
        let src = s.find("/.singularity.d/env/*.sh").unwrap();
        let ov = s.find("export A='x'\\''y'").unwrap();
        let ex = s.find("exec \"$@\"").unwrap();
        assert!(src < ov && ov < ex, "{s}");
        assert!(s.contains("export PATH='/p:'\"${PATH:-"), "{s}");
        assert!(script(Action::Run, &env, None).contains("exec /.singularity.d/runscript \"$@\""));
        assert!(script(Action::Shell, &env, Some("/bin/zsh")).contains("exec '/bin/zsh' \"$@\""));
        assert!(build(Action::Exec, &[], &env, None).is_err());
        let a = build(Action::Exec, &["echo".into(), "hi".into()], &env, None).unwrap();
        assert_eq!(a.with_shell.0[3].to_str().unwrap(), "veil-exec");
        assert_eq!(a.with_shell.0[4].to_str().unwrap(), "echo");
        assert_eq!(a.direct.unwrap().0.len(), 2);
    }
}
