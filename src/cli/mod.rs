//! Command-line parsing (clap derive), one file per command group. No logic beyond
//! turning arguments into calls on the layers below.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod build;
mod encryption;
mod envflags;
pub mod exit;
mod inspect;
mod instance;
mod key;
mod keyserver;
mod keyslot;
pub mod peerflags;
pub(crate) mod registry;
mod run;
mod sif;
mod sign;

/// Rootless runtime for SIF containers, including LUKS2-encrypted ones.
#[derive(Debug, Parser)]
#[command(name = "veil", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    messages: Messages,
    #[command(subcommand)]
    command: Command,
}

/// The peers' global flags for how much is said, given before the command (`veil -q
/// build …`).
#[derive(Debug, clap::Args)]
#[group(multiple = false)]
struct Messages {
    /// Print debugging information: the decisions taken and each step's timing (as VEIL_DEBUG)
    #[arg(short = 'd', long)]
    debug: bool,
    /// Print errors and warnings only: no reports of what was done, no notes, no progress bars
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Print errors only
    #[arg(short = 's', long)]
    silent: bool,
    /// Print the decisions taken on the way too
    #[arg(short = 'v', long)]
    verbose: bool,
    /// No colours in help and usage errors (veil's own output has none)
    #[arg(long)]
    nocolor: bool,
}

impl Messages {
    fn level(&self) -> Option<crate::support::say::Level> {
        use crate::support::say::Level;
        [
            (self.debug, Level::Debug),
            (self.quiet, Level::Quiet),
            (self.silent, Level::Silent),
            (self.verbose, Level::Verbose),
        ]
        .into_iter()
        .find_map(|(on, l)| on.then_some(l))
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    #[command(about = RUN_ABOUT)]
    Run(run::RunArgs),
    #[command(about = EXEC_ABOUT)]
    Exec(run::RunArgs),
    #[command(about = SHELL_ABOUT)]
    Shell(run::ShellArgs),
    #[command(about = TEST_ABOUT)]
    Test(run::RunArgs),
    /// Run containers in the background: start, stop, list and measure named instances (joined with instance://NAME)
    Instance(instance::InstanceArgs),
    /// Build a SIF image (or a sandbox) from a definition file, a directory or an image, plain or encrypted, without root
    Build(build::BuildArgs),
    /// Re-key an encrypted SIF without a rebuild: add, remove or change a passphrase or an RSA recipient
    Keyslot(keyslot::KeyslotArgs),
    /// Show what an image is, including its encryption parameters (no key needed)
    Inspect(inspect::InspectArgs),
    /// Print the image's help text (its definition file's %help)
    RunHelp(inspect::RunHelpArgs),
    /// Inspect and edit SIF files (siftool-compatible)
    Sif(sif::SifArgs),
    /// Manage OpenPGP keys (~/.veil/keys; Apptainer's and SingularityCE's keyrings are read too)
    Key(key::KeyArgs),
    /// Manage the keyservers that key search/pull/push and verify use
    Keyserver(keyserver::KeyserverArgs),
    /// Sign a SIF image (one OpenPGP signature per object group)
    Sign(sign::SignArgs),
    /// Verify a SIF image's signatures
    Verify(sign::VerifyArgs),
    /// Push a SIF image to an OCI registry (oras://)
    Push(registry::PushArgs),
    /// Pull a SIF image from an OCI registry (oras://), or make one from a container image (docker://)
    Pull(registry::PullArgs),
    /// Log in to and out of OCI registries
    Registry(registry::RegistryCmd),
    /// List and clean the cache of images pulled for runs
    Cache(registry::CacheCmd),
    /// Print veil's version
    Version,
    /// Print a completion script for a shell (bash, zsh, fish, elvish, powershell)
    Completion {
        /// The shell
        shell: clap_complete::Shell,
    },
}

const RUN_ABOUT: &str = "Run the image's runscript";
const EXEC_ABOUT: &str = "Run a command in the image";
const SHELL_ABOUT: &str = "Start an interactive shell in the image";
const TEST_ABOUT: &str = "Run the image's test script";

/// `run`, `exec`, `shell` and `test`, the commands that start a container, parsed with
/// a command tree that holds only the one given: clap builds every subcommand's
/// arguments first, which takes longer (about 0.6 ms) than a container's whole mount
/// setup. Same arguments, help, errors and exit codes as through [`Cli`] (checked by
/// a test against it). `None` for every other command line.
fn container_command() -> Option<anyhow::Result<ExitCode>> {
    use clap::FromArgMatches;
    let name = std::env::args_os().nth(1)?;
    let (command, action) = container_tree(name.to_str()?)?;
    let command = match with_env_defaults(command, &[name.to_str()?]) {
        Ok(c) => c,
        Err(e) => return Some(Err(e)),
    };
    let command = peerflags::augment(command, "");
    let matches = match command.try_get_matches() {
        Ok(m) => m,
        Err(e) => return Some(Ok(usage_error(&e))),
    };
    if let Err(e) = refuse_peer_flags(&matches) {
        return Some(Err(e));
    }
    let (_, m) = matches.subcommand()?;
    Some(if action == crate::launch::Action::Shell {
        match run::ShellArgs::from_arg_matches(m) {
            Ok(a) => run::shell(a),
            Err(e) => Ok(usage_error(&e)),
        }
    } else {
        match run::RunArgs::from_arg_matches(m) {
            Ok(a) => run::run(action, a, None),
            Err(e) => Ok(usage_error(&e)),
        }
    })
}

/// `cmd` with the environment's defaults (envflags) on the subcommand at `path`.
fn with_env_defaults(cmd: clap::Command, path: &[&str]) -> anyhow::Result<clap::Command> {
    fn at(
        cmd: clap::Command,
        path: &[&str],
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<clap::Command, String> {
        let Some((first, rest)) = path.split_first() else {
            return envflags::apply(cmd, env);
        };
        let mut err = None;
        let cmd = cmd.mut_subcommand(*first, |sub| match at(sub.clone(), rest, env) {
            Ok(s) => s,
            Err(e) => {
                err = Some(e);
                sub
            }
        });
        match err {
            Some(e) => Err(e),
            None => Ok(cmd),
        }
    }
    let env = |k: &str| std::env::var(k).ok();
    at(cmd, path, &env)
        .map_err(|e| anyhow::Error::msg(e).context(exit::Tagged(exit::Failure::Usage)))
}

/// The global flags, as they may come before the command.
const GLOBAL_FLAGS: [&str; 9] = [
    "-d",
    "--debug",
    "-q",
    "--quiet",
    "-s",
    "--silent",
    "-v",
    "--verbose",
    "--nocolor",
];

/// A usage error naming the first peer flag given that veil refuses, and why.
fn refuse_peer_flags(m: &clap::ArgMatches) -> anyhow::Result<()> {
    match peerflags::refused(m) {
        Some((flag, why)) => {
            Err(anyhow::anyhow!("{flag}: {why}").context(exit::Tagged(exit::Failure::Usage)))
        }
        None => Ok(()),
    }
}

/// Whether `--nocolor` is among the global flags (before the command), looked for
/// before parsing so that a usage error is plain too.
fn nocolor_asked() -> bool {
    std::env::args_os()
        .skip(1)
        .take_while(|a| a.to_str().is_some_and(|s| s.starts_with('-')))
        .any(|a| a == "--nocolor")
}

/// Prints a parse error (or the help or version asked for) and gives the status:
/// success for help and version, veil's usage status for anything else (clap's own,
/// 2, is a status programs commonly use).
fn usage_error(e: &clap::Error) -> ExitCode {
    let _ = e.print();
    if e.kind() == clap::error::ErrorKind::UnknownArgument
        && let Some(clap::error::ContextValue::String(arg)) =
            e.get(clap::error::ContextKind::InvalidArg)
        && GLOBAL_FLAGS.contains(&arg.as_str())
    {
        eprintln!("tip: veil's global flags go before the command: veil {arg} COMMAND …");
    }
    if e.exit_code() == 0 {
        ExitCode::SUCCESS
    } else {
        exit::Status::exit_code(exit::Failure::Usage)
    }
}

/// The command tree with only the container command `name`, and its action.
fn container_tree(name: &str) -> Option<(clap::Command, crate::launch::Action)> {
    use crate::launch::Action;
    use clap::Args;
    let (name, action, about) = match name {
        "run" => ("run", Action::Run, RUN_ABOUT),
        "exec" => ("exec", Action::Exec, EXEC_ABOUT),
        "shell" => ("shell", Action::Shell, SHELL_ABOUT),
        "test" => ("test", Action::Test, TEST_ABOUT),
        _ => return None,
    };
    let sub = clap::Command::new(name).about(about);
    let sub = if action == Action::Shell {
        run::ShellArgs::augment_args(sub)
    } else {
        run::RunArgs::augment_args(sub)
    };
    Some((top_command().subcommand(sub), action))
}

/// The top of [`Cli`]'s command, without its subcommands.
fn top_command() -> clap::Command {
    use clap::Args;
    Messages::augment_args(clap::Command::new("veil"))
        .version(env!("CARGO_PKG_VERSION"))
        .about(env!("CARGO_PKG_DESCRIPTION"))
        .propagate_version(true)
        .subcommand_required(true)
        .arg_required_else_help(true)
}

/// veil's whole command tree, for the man pages and completions the packages carry
/// (packaging/docgen).
pub fn command() -> clap::Command {
    use clap::CommandFactory;
    peerflags::augment(Cli::command(), "")
}

/// Parses the process arguments and runs the command.
pub fn main() -> anyhow::Result<ExitCode> {
    if let Some(done) = container_command() {
        return done;
    }
    let cli = {
        use clap::{CommandFactory, FromArgMatches};
        let mut cmd = Cli::command();
        // The variables are read for the command being run only: one set for
        // something else cannot break every command.
        // (args_os: a file name need not be UTF-8.)
        // Global flags (`veil -q run …`) come first; the command follows them.
        let argv: Vec<std::ffi::OsString> = std::env::args_os()
            .skip(1)
            .skip_while(|a| GLOBAL_FLAGS.iter().any(|g| a == g))
            .take(2)
            .collect();
        let words: Vec<&str> = argv.iter().filter_map(|a| a.to_str()).collect();
        match words.as_slice() {
            ["instance", sub @ ("start" | "run"), ..] => {
                cmd = with_env_defaults(cmd, &["instance", sub])?;
            }
            [name @ ("run" | "exec" | "shell" | "test"), ..] => {
                cmd = with_env_defaults(cmd, &[name])?;
            }
            _ => {}
        }
        if nocolor_asked() {
            cmd = cmd.color(clap::ColorChoice::Never);
        }
        let matches = match peerflags::augment(cmd, "").try_get_matches() {
            Ok(m) => m,
            Err(e) => return Ok(usage_error(&e)),
        };
        let cli = match Cli::from_arg_matches(&matches) {
            Ok(c) => c,
            Err(e) => return Ok(usage_error(&e)),
        };
        if let Some(level) = cli.messages.level() {
            // SAFETY: nothing but parsing has run: this process has no other thread yet.
            unsafe { crate::support::say::set_level(level) };
        }
        refuse_peer_flags(&matches)?;
        cli
    };
    match cli.command {
        Command::Run(a) => run::run(crate::launch::Action::Run, a, None),
        Command::Exec(a) => run::run(crate::launch::Action::Exec, a, None),
        Command::Shell(a) => run::shell(a),
        Command::Test(a) => run::run(crate::launch::Action::Test, a, None),
        Command::Instance(args) => instance::run(args),
        Command::Build(args) => build::run(args),
        Command::Keyslot(args) => keyslot::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::RunHelp(args) => inspect::run_help(args),
        Command::Sif(args) => sif::run(args),
        Command::Key(args) => key::run(args),
        Command::Keyserver(args) => keyserver::run(args),
        Command::Sign(args) => sign::run_sign(args),
        Command::Verify(args) => sign::run_verify(args),
        Command::Push(args) => registry::push(args),
        Command::Pull(args) => registry::pull(args),
        Command::Registry(args) => registry::registry_cmd(args),
        Command::Cache(args) => registry::cache_cmd(args),
        Command::Version => {
            println!("veil version {}", env!("CARGO_PKG_VERSION"));
            Ok(ExitCode::SUCCESS)
        }
        Command::Completion { shell } => {
            use clap::CommandFactory;
            use std::io::Write;
            let mut cmd = Cli::command();
            // Into memory first: the generator panics on a failed write (a closed pipe).
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut cmd, "veil", &mut script);
            std::io::stdout()
                .write_all(&script)
                .map_err(|e| anyhow::anyhow!("writing the completion script: {e}"))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, FromArgMatches};

    /// The short tree of a container command parses, helps and fails exactly as the
    /// whole tree does.
    #[test]
    fn container_commands_parse_as_through_the_whole_tree() {
        for name in ["run", "exec", "shell", "test"] {
            let (fast, _) = container_tree(name).unwrap();
            let cases: [&[&str]; 7] = [
                &["--help"],
                &["-h"],
                &["--version"],
                &[],
                &["--bogus", "img.sif"],
                &[
                    "-B",
                    "/a:/b",
                    "--bind",
                    "/c",
                    "--cleanenv",
                    "img.sif",
                    "ls",
                    "-l",
                ],
                &[
                    "--contain",
                    "--env",
                    "A=1",
                    "--pwd",
                    "/x",
                    "img.sif",
                    "--",
                    "--flag",
                ],
            ];
            for case in cases {
                let argv: Vec<&str> = ["veil", name].iter().chain(case).copied().collect();
                let whole = Cli::command().try_get_matches_from(&argv);
                let short = fast.clone().try_get_matches_from(&argv);
                match (whole, short) {
                    (Err(a), Err(b)) => {
                        assert_eq!(a.kind(), b.kind(), "{argv:?}");
                        assert_eq!(a.render().to_string(), b.render().to_string(), "{argv:?}");
                    }
                    (Ok(a), Ok(b)) => {
                        let a = Cli::from_arg_matches(&a).unwrap();
                        let (_, b) = b.subcommand().unwrap();
                        let b = if name == "shell" {
                            format!("{:?}", run::ShellArgs::from_arg_matches(b).unwrap())
                        } else {
                            format!("{:?}", run::RunArgs::from_arg_matches(b).unwrap())
                        };
                        let a = match a.command {
                            Command::Shell(x) => format!("{x:?}"),
                            Command::Run(x) | Command::Exec(x) | Command::Test(x) => {
                                format!("{x:?}")
                            }
                            other => panic!("{other:?}"),
                        };
                        assert_eq!(a, b, "{argv:?}");
                    }
                    (a, b) => panic!("{argv:?}: {a:?} vs {b:?}"),
                }
            }
        }
    }
}
