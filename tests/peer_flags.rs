//! Every flag the peers have on the commands veil shares with them parses: each one is
//! honoured, ignored or refused with a reason, never "unexpected argument" (the list,
//! tests/peer_flags.tsv, is taken from the peers' command definitions). And every
//! one of them is in docs/compat.md's table.

use clap::error::ErrorKind;
use veil::cli::peerflags::ACTIONS;

/// The rows of tests/peer_flags.tsv: (command, long, short, kind).
fn rows() -> impl Iterator<Item = [&'static str; 4]> {
    let text: &'static str = include_str!("peer_flags.tsv");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            let [command, long, short, kind, ..] = f[..] else {
                panic!("bad line {line:?}");
            };
            [command, long, short, kind]
        })
}

/// The table's name for a command: the action rows cover every container command.
fn table_command(command: &str) -> &str {
    match command {
        "action" => "actions",
        "global" => "(global)",
        c => c,
    }
}

/// (command words, long, short letters, takes a value)
fn peer_flags() -> Vec<(Vec<&'static str>, String, Vec<char>, bool)> {
    let mut out = Vec::new();
    for [command, long, short, kind] in rows() {
        let commands: Vec<&str> = match command {
            "action" => ACTIONS.to_vec(),
            "global" => vec![""],
            c => vec![c],
        };
        // "A:-|S:r": each peer's letter.
        let shorts: Vec<char> = short
            .split('|')
            .filter_map(|s| s.rsplit(':').next())
            .filter(|s| s.len() == 1 && *s != "-")
            .filter_map(|s| s.chars().next())
            .collect();
        for c in commands {
            out.push((
                c.split_whitespace().collect(),
                long.to_string(),
                shorts.clone(),
                kind == "value",
            ));
        }
    }
    out
}

#[test]
fn every_peer_flag_parses() {
    let flags = peer_flags();
    assert!(
        flags.len() > 300,
        "the list lost its flags: {}",
        flags.len()
    );
    let mut unknown = Vec::new();
    for (words, long, shorts, value) in &flags {
        if *long == "help" || *long == "version" {
            continue;
        }
        let mut forms = vec![format!("--{long}")];
        forms.extend(shorts.iter().map(|c| format!("-{c}")));
        for form in forms {
            let mut argv = vec!["veil".to_string()];
            argv.extend(words.iter().map(|w| w.to_string()));
            argv.push(form.clone());
            if *value {
                argv.push("1".into());
            }
            if words.is_empty() {
                argv.push("version".into());
            }
            // Only whether the flag is known matters: a missing image or a value
            // veil's own argument does not take are other errors.
            if let Err(e) = veil::cli::command().try_get_matches_from(&argv)
                && e.kind() == ErrorKind::UnknownArgument
            {
                unknown.push(argv[1..].join(" "));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "peer flags veil does not know:\n  {}",
        unknown.join("\n  ")
    );
}

/// docs/compat.md has a row for every peer flag of every command.
#[test]
fn the_compat_table_lists_every_peer_flag() {
    let doc = include_str!("../docs/compat.md");
    let mut missing = Vec::new();
    let mut rows_seen = 0;
    for [command, long, ..] in rows() {
        if long == "help" || long == "version" {
            continue;
        }
        let command = table_command(command);
        let row = format!("| {command} | `--{long}`");
        rows_seen += 1;
        if !doc.lines().any(|l| l.starts_with(&row)) {
            missing.push(row);
        }
    }
    assert!(rows_seen > 200, "{rows_seen}");
    assert!(
        missing.is_empty(),
        "docs/compat.md lacks rows:\n  {}",
        missing.join("\n  ")
    );
}

/// What the table says veil does with an ignored or refused flag is what the code
/// says (`veil::cli::peerflags::FLAGS`).
#[test]
fn the_compat_table_gives_the_codes_reasons() {
    use veil::cli::peerflags::{FLAGS, Treatment};
    let doc = include_str!("../docs/compat.md");
    let mut wrong = Vec::new();
    for f in FLAGS {
        let (kind, why) = match f.treatment {
            Treatment::Ignored(w) => ("ignored", w),
            Treatment::Refused(w) => ("refused", w),
        };
        for c in f.commands {
            let command = match *c {
                "" => "(global)",
                // The action rows cover run, exec, shell, test and instance start|run;
                // a flag of `run` alone has a row of its own.
                c if ACTIONS.contains(&c)
                    && (f.commands.contains(&"exec") || c.starts_with("instance")) =>
                {
                    "actions"
                }
                c => c,
            };
            let row = format!("| {command} | `--{}`", f.long);
            let Some(line) = doc.lines().find(|l| l.starts_with(&row)) else {
                wrong.push(format!("{row}: no row"));
                continue;
            };
            if !line.contains(&format!("{kind}: {why}")) {
                wrong.push(format!("{row}: not \"{kind}: {why}\""));
            }
        }
    }
    wrong.dedup();
    assert!(
        wrong.is_empty(),
        "docs/compat.md differs from the code:\n  {}",
        wrong.join("\n  ")
    );
}
