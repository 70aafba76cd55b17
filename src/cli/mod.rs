//! Command-line parsing (clap derive), one file per command group. No logic beyond
//! turning arguments into calls on the layers below.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod build;
mod encryption;
mod inspect;
mod key;
mod keyslot;
mod run;
mod sif;
mod sign;

/// Rootless runtime for SIF containers, including LUKS2-encrypted ones.
#[derive(Debug, Parser)]
#[command(name = "veil", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the image's runscript
    Run(run::RunArgs),
    /// Run a command in the image
    Exec(run::RunArgs),
    /// Start an interactive shell in the image
    Shell(run::ShellArgs),
    /// Run the image's test script
    Test(run::RunArgs),
    /// Build a SIF image (or a sandbox) from a definition file, a directory or an image, plain or encrypted, without root
    Build(build::BuildArgs),
    /// Re-key an encrypted SIF in place: add or remove a passphrase or an RSA recipient
    Keyslot(keyslot::KeyslotArgs),
    /// Show what an image is, including its encryption parameters (no key needed)
    Inspect(inspect::InspectArgs),
    /// Inspect and edit SIF files (siftool-compatible)
    Sif(sif::SifArgs),
    /// Manage OpenPGP keys (~/.veil/keys; Apptainer's and SingularityCE's keyrings are read too)
    Key(key::KeyArgs),
    /// Sign a SIF image (one OpenPGP signature per object group)
    Sign(sign::SignArgs),
    /// Verify a SIF image's signatures
    Verify(sign::VerifyArgs),
}

/// Parses the process arguments and runs the command.
pub fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(a) => run::run(crate::launch::Action::Run, a, None),
        Command::Exec(a) => run::run(crate::launch::Action::Exec, a, None),
        Command::Shell(a) => run::shell(a),
        Command::Test(a) => run::run(crate::launch::Action::Test, a, None),
        Command::Build(args) => build::run(args),
        Command::Keyslot(args) => keyslot::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Sif(args) => sif::run(args),
        Command::Key(args) => key::run(args),
        Command::Sign(args) => sign::run_sign(args),
        Command::Verify(args) => sign::run_verify(args),
    }
}
