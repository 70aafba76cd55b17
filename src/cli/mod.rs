//! Command-line parsing (clap derive), one file per command group. No logic beyond
//! turning arguments into calls on the layers below.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod sif;

/// Rootless runtime for SIF containers, including LUKS2-encrypted ones.
#[derive(Debug, Parser)]
#[command(name = "veil", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Inspect and edit SIF files (siftool-compatible)
    Sif(sif::SifArgs),
}

/// Parses the process arguments and runs the command.
pub fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::Sif(args) => sif::run(args),
    }
}
