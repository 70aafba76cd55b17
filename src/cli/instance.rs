//! `veil instance start | run | stop | list | stats`, with Apptainer's flags.

#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};

use crate::runner::instance::{self, State, StopOptions};

#[derive(Debug, Args)]
pub struct InstanceArgs {
    #[command(subcommand)]
    cmd: InstanceCmd,
}

#[derive(Debug, Subcommand)]
enum InstanceCmd {
    /// Start a named instance in the background: the image's %startscript (if any) runs, and the container stays up until stopped
    Start(StartArgs),
    /// Start a named instance running the image's runscript
    Run(StartArgs),
    /// Stop instances: SIGTERM (or --signal), then SIGKILL after the timeout
    Stop(StopArgs),
    /// List your running instances
    List(ListArgs),
    /// Show an instance's CPU and memory use (from /proc)
    Stats(StatsArgs),
}

#[derive(Debug, Args)]
struct StartArgs {
    #[command(flatten)]
    flags: super::run::RunFlags,
    /// The image: a SIF file, a squashfs file, a sandbox directory, oras:// or docker://
    image: String,
    /// The instance's name (letters, digits, '.', '_', '-')
    name: String,
    /// Arguments for the startscript (or runscript)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<OsString>,
}

#[derive(Debug, Args)]
struct StopArgs {
    /// Stop all your instances
    #[arg(short = 'a', long)]
    all: bool,
    /// Kill at once (SIGKILL)
    #[arg(short = 'F', long)]
    force: bool,
    /// The signal to send first: a name (TERM, SIGUSR1) or a number
    #[arg(short = 's', long, value_name = "SIGNAL")]
    signal: Option<String>,
    /// Seconds to wait before SIGKILL
    #[arg(short = 't', long, value_name = "SECONDS", default_value_t = 10)]
    timeout: u64,
    /// The instance (`*` matches any characters)
    name: Option<String>,
}

#[derive(Debug, Args)]
struct ListArgs {
    /// Print JSON
    #[arg(short = 'j', long)]
    json: bool,
    /// Show the paths of the instances' logs
    #[arg(short = 'l', long)]
    logs: bool,
    /// Another user's instances (root only)
    #[arg(short = 'u', long, value_name = "USER")]
    user: Option<String>,
    /// Only instances whose names match (`*` matches any characters)
    name: Option<String>,
}

#[derive(Debug, Args)]
struct StatsArgs {
    /// Print JSON
    #[arg(short = 'j', long)]
    json: bool,
    /// The instance
    name: String,
}

pub fn run(a: InstanceArgs) -> Result<ExitCode> {
    match a.cmd {
        InstanceCmd::Start(s) => start(s, false),
        InstanceCmd::Run(s) => start(s, true),
        InstanceCmd::Stop(s) => stop(s),
        InstanceCmd::List(l) => list(l),
        InstanceCmd::Stats(s) => stats(s),
    }
}

fn start(a: StartArgs, run: bool) -> Result<ExitCode> {
    let req = super::run::request(instance::action(run), a.flags, None, a.image, a.args)?;
    let s = instance::start(req, &a.name)?;
    crate::say_info!(
        "veil: instance {} started (pid {}; logs in {})",
        s.name,
        s.init,
        s.out_log
            .parent()
            .map_or_else(String::new, |p| p.display().to_string())
    );
    Ok(ExitCode::SUCCESS)
}

/// A signal by name (with or without SIG) or number.
fn parse_signal(s: &str) -> Result<nix::sys::signal::Signal> {
    use nix::sys::signal::Signal;
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| anyhow::anyhow!("--signal {s}: no such signal"));
    }
    let up = s.to_ascii_uppercase();
    let name = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    };
    name.parse::<Signal>()
        .map_err(|_| anyhow::anyhow!("--signal {s}: no such signal"))
}

fn stop(a: StopArgs) -> Result<ExitCode> {
    let signal = match (&a.signal, a.force) {
        (_, true) => nix::sys::signal::Signal::SIGKILL,
        (Some(s), false) => parse_signal(s)?,
        (None, false) => nix::sys::signal::Signal::SIGTERM,
    };
    let o = StopOptions {
        signal,
        timeout: Duration::from_secs(a.timeout),
    };
    let names = match (&a.name, a.all) {
        (Some(_), true) => bail!("give either an instance name or --all, not both"),
        (None, false) => bail!("name the instance to stop, or give --all"),
        (None, true) => instance::running_names()?,
        (Some(n), false) if n.contains('*') => instance::list(None, Some(n))?
            .into_iter()
            .map(|s| s.name)
            .collect(),
        (Some(n), false) => vec![n.clone()],
    };
    if names.is_empty() && a.name.is_some() {
        bail!("no running instance matches {}", a.name.unwrap_or_default());
    }
    // One that cannot be stopped (it ended meanwhile) does not keep the rest running.
    let mut failed = 0;
    let many = names.len() > 1;
    for n in names {
        match instance::stop(&n, o) {
            Ok(true) => crate::say_info!("veil: instance {n} stopped"),
            Ok(false) => crate::say_warn!(
                "veil: instance {n} killed: it was still running {} s after {signal}",
                a.timeout
            ),
            Err(e) if many => {
                eprintln!("veil: error: {e}");
                failed += 1;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(if failed > 0 {
        super::exit::Status::exit_code(super::exit::Failure::Other)
    } else {
        ExitCode::SUCCESS
    })
}

fn list(a: ListArgs) -> Result<ExitCode> {
    let all = instance::list(a.user.as_deref(), a.name.as_deref())?;
    if a.json {
        let v: Vec<serde_json::Value> = all.iter().map(json_entry).collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "instances": v }))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<[String; 3]> = all
        .iter()
        .map(|s| {
            let last = if a.logs {
                format!(
                    "{}\n{}",
                    printable(&s.err_log.display().to_string()),
                    printable(&s.out_log.display().to_string())
                )
            } else {
                printable(&s.image)
            };
            [s.name.clone(), s.init.to_string(), last]
        })
        .collect();
    let w0 = rows.iter().map(|r| r[0].len()).max().unwrap_or(0).max(13) + 3;
    let w1 = rows.iter().map(|r| r[1].len()).max().unwrap_or(0).max(3) + 3;
    let head = if a.logs { "LOGS" } else { "IMAGE" };
    println!("{:w0$}{:w1$}{head}", "INSTANCE NAME", "PID");
    for [name, pid, last] in rows {
        let mut lines = last.lines();
        println!("{name:w0$}{pid:w1$}{}", lines.next().unwrap_or(""));
        for l in lines {
            println!("{:w$}{l}", "", w = w0 + w1);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `s` with control characters escaped: a record's strings never drive the terminal.
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// The fields Apptainer's `instance list --json` has, and the start time.
fn json_entry(s: &State) -> serde_json::Value {
    serde_json::json!({
        "instance": s.name,
        "pid": s.init,
        "img": s.image,
        "ip": "",
        "logErrPath": s.err_log,
        "logOutPath": s.out_log,
        "started": s.started,
    })
}

fn stats(a: StatsArgs) -> Result<ExitCode> {
    let st = instance::stats(&a.name)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&st)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!(
        "{:<16}{:>10}{:>12}{:>24}{:>9}{:>6}",
        "INSTANCE NAME", "CPU %", "CPU TIME", "MEM USAGE / LIMIT", "MEM %", "PIDS"
    );
    let mem = format!(
        "{:.1}MiB / {:.1}GiB",
        mib(st.memory_bytes),
        mib(st.memory_limit_bytes) / 1024.0
    );
    let pct = if st.memory_limit_bytes > 0 {
        st.memory_bytes as f64 * 100.0 / st.memory_limit_bytes as f64
    } else {
        0.0
    };
    println!(
        "{:<16}{:>9.2}%{:>11.2}s{:>24}{:>8.2}%{:>6}",
        st.name, st.cpu_percent, st.cpu_seconds, mem, pct, st.pids
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_name_or_number() {
        use nix::sys::signal::Signal;
        assert_eq!(parse_signal("TERM").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("sigusr1").unwrap(), Signal::SIGUSR1);
        assert_eq!(parse_signal("9").unwrap(), Signal::SIGKILL);
        assert!(parse_signal("NOPE").is_err());
        assert!(parse_signal("99").is_err());
    }
}
