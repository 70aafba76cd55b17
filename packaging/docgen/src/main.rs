//! Writes what the packages carry besides the binaries: one man page per command and
//! subcommand (`veil.1`, `veil-run.1`, `veil-key-newpair.1`, …) and the shell
//! completions, all from veil's own command tree, so they cannot drift from `--help`.
//!
//! `veil-docgen man DIR` and `veil-docgen completions DIR`.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [what, dir] = args.as_slice() else {
        bail!("usage: veil-docgen man|completions DIR");
    };
    let dir = PathBuf::from(dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut cmd = veil::cli::command();
    // Fills in every subcommand's display name (veil-key-newpair) and usage line.
    cmd.build();
    match what.as_str() {
        "man" => {
            let n = man_pages(&cmd, &dir)?;
            println!("{n} man pages in {}", dir.display());
        }
        "completions" => completions(&mut cmd, &dir)?,
        other => bail!("unknown output {other:?}: man or completions"),
    }
    Ok(())
}

/// The page of `cmd` and of each of its subcommands, recursively; the count written.
fn man_pages(cmd: &clap::Command, dir: &Path) -> anyhow::Result<usize> {
    let name = cmd.get_display_name().unwrap_or(cmd.get_name()).to_string();
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .title(name.to_uppercase())
        .section("1")
        .source(format!("veil {}", env!("CARGO_PKG_VERSION")))
        .manual("veil manual")
        .render(&mut page)
        .with_context(|| format!("rendering the page of {name}"))?;
    let subs: Vec<&clap::Command> = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
        .collect();
    if !subs.is_empty() {
        see_also(&mut page, &subs);
    }
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, page).with_context(|| format!("writing {}", path.display()))?;
    let mut n = 1;
    for sub in subs {
        n += man_pages(sub, dir)?;
    }
    Ok(n)
}

/// A SEE ALSO section naming the subcommands' pages (roff).
fn see_also(page: &mut Vec<u8>, subs: &[&clap::Command]) {
    page.extend_from_slice(b".SH \"SEE ALSO\"\n");
    let names: Vec<String> = subs
        .iter()
        .map(|s| {
            let n = s.get_display_name().unwrap_or(s.get_name());
            format!("\\fB{n}\\fR(1)")
        })
        .collect();
    page.extend_from_slice(names.join(", ").as_bytes());
    page.push(b'\n');
}

/// bash, zsh and fish completion scripts, under the names those shells look for.
fn completions(cmd: &mut clap::Command, dir: &Path) -> anyhow::Result<()> {
    use clap_complete::Shell;
    for (shell, file) in [
        (Shell::Bash, "veil"),
        (Shell::Zsh, "_veil"),
        (Shell::Fish, "veil.fish"),
    ] {
        let mut script = Vec::new();
        clap_complete::generate(shell, cmd, "veil", &mut script);
        let path = dir.join(file);
        std::fs::write(&path, script).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
