//! The `veil` command: parse the command line, run the command, and turn any error into
//! one line on stderr and a non-zero exit status.

// No function longer than clippy.toml's threshold (100 lines) outside tests.
#![warn(clippy::too_many_lines)]

use std::process::ExitCode;

/// The error and its causes on one line, "context: cause: cause". Layers often include
/// their source's text in their own message already; a cause whose text is already
/// there is not repeated.
fn one_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    // One line, and nothing in it that a terminal would take as a command (text from
    // an image or a registry may hold escape sequences).
    line.chars()
        .flat_map(|c| match c {
            '\n' => vec![' '],
            c if c.is_control() => c.escape_default().collect(),
            c => vec![c],
        })
        .collect()
}

fn main() -> ExitCode {
    // A container's init is this binary again, exec'd by the container process.
    if let Some(code) = veil::launch::init::main_if_init() {
        return code;
    }
    match veil::cli::main() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("veil: error: {}", one_line(&err));
            veil::cli::exit::Status::exit_code(veil::cli::exit::classify(&err))
        }
    }
}
