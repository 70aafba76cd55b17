//! The `veil` command: parse the command line, run the command, and turn any error into
//! one line on stderr and a non-zero exit status.

use std::process::ExitCode;

fn main() -> ExitCode {
    match veil::cli::main() {
        Ok(code) => code,
        Err(err) => {
            // `{:#}` joins the context chain on one line: "reading x.sif: malformed SIF: …".
            eprintln!("veil: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
