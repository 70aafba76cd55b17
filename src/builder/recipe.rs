//! Definition files (Apptainer/SingularityCE `.def`): a header of `Key: value` lines,
//! then `%section` blocks. Parsing is pure: text in, a [`Recipe`] or an error naming the
//! line out. `{{ NAME }}` placeholders are filled from `%arguments` defaults and
//! `--build-arg` values before anything else is looked at.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;

use super::error::{BuildError, Result};

/// The bootstrap agents veil builds from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Bootstrap {
    LocalImage,
    /// An empty root: what a recipe-less build starts from.
    #[default]
    Scratch,
    DockerArchive,
    OciArchive,
    /// An image in a registry (`From: [REGISTRY/]REPOSITORY[:TAG|@DIGEST]`).
    Docker,
    /// A SIF in a registry, pushed as an ORAS artifact (`From: REGISTRY/REPOSITORY:TAG`).
    Oras,
}

impl Bootstrap {
    pub fn name(self) -> &'static str {
        match self {
            Bootstrap::LocalImage => "localimage",
            Bootstrap::Scratch => "scratch",
            Bootstrap::DockerArchive => "docker-archive",
            Bootstrap::OciArchive => "oci-archive",
            Bootstrap::Docker => "docker",
            Bootstrap::Oras => "oras",
        }
    }
}

/// A script section: its body, the interpreter given with `-c`, and the line of its
/// `%name` header.
#[derive(Debug, Clone, Default)]
pub struct Script {
    pub body: String,
    pub interpreter: Option<String>,
    pub line: usize,
}

/// One `%files` line: host source (a path or glob) and destination in the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileCopy {
    pub src: String,
    pub dst: String,
    pub line: usize,
}

#[derive(Debug, Clone, Default)]
pub struct Recipe {
    /// The definition file after argument substitution (stored as Def.FILE).
    pub text: String,
    /// Build arguments given that no `{{ NAME }}` of the file uses, sorted.
    pub unused_args: Vec<String>,
    pub bootstrap: Bootstrap,
    pub from: Option<String>,
    pub from_line: usize,
    pub fingerprints: Vec<String>,
    /// Line of the `Fingerprints:` header (0 when absent).
    pub fingerprints_line: usize,
    pub header: BTreeMap<String, String>,
    pub setup: Option<Script>,
    pub files: Vec<FileCopy>,
    pub post: Option<Script>,
    pub environment: Option<Script>,
    pub runscript: Option<Script>,
    pub startscript: Option<Script>,
    pub test: Option<Script>,
    pub labels: Vec<(String, String)>,
    pub help: Option<String>,
}

const SECTIONS: &[&str] = &[
    "setup",
    "files",
    "post",
    "environment",
    "runscript",
    "startscript",
    "test",
    "labels",
    "help",
    "arguments",
];

const APP_SECTIONS: &[&str] = &[
    "appinstall",
    "apprun",
    "appenv",
    "applabels",
    "appfiles",
    "apphelp",
    "apptest",
    "appstart",
];

struct Parser<'a> {
    file: &'a str,
}

impl Parser<'_> {
    fn err(&self, line: usize, msg: impl Into<String>) -> BuildError {
        BuildError::Recipe {
            file: self.file.to_string(),
            line,
            msg: msg.into(),
        }
    }
}

/// A `%name args` section header, if `line` is one.
fn section_header(line: &str) -> Option<(&str, &str)> {
    let rest = line.strip_prefix('%')?;
    let name_end = rest.find(|c: char| c.is_whitespace()).unwrap_or(rest.len());
    let name = &rest[..name_end];
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return None;
    }
    Some((name, rest[name_end..].trim()))
}

/// Collects `%arguments` defaults (KEY=VALUE lines) from the raw text.
fn argument_defaults(p: &Parser<'_>, text: &str) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut inside = false;
    for (i, raw) in text.lines().enumerate() {
        if let Some((name, _)) = section_header(raw) {
            inside = name.eq_ignore_ascii_case("arguments");
            continue;
        }
        let l = raw.trim();
        if !inside || l.is_empty() || l.starts_with('#') {
            continue;
        }
        let Some((k, v)) = l.split_once('=') else {
            return Err(p.err(i + 1, format!("%arguments: expected NAME=value, got {l:?}")));
        };
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(v);
        out.insert(k.trim().to_string(), v.to_string());
    }
    Ok(out)
}

/// Replaces `{{ NAME }}` placeholders; a name with no value is an error on its line.
fn substitute(
    p: &Parser<'_>,
    text: &str,
    args: &BTreeMap<String, String>,
    used: &mut std::collections::BTreeSet<String>,
) -> Result<String> {
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let mut rest = line;
        while let Some(start) = rest.find("{{") {
            let Some(len) = rest[start + 2..].find("}}") else {
                break;
            };
            let name = rest[start + 2..start + 2 + len].trim();
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
            {
                out.push_str(&rest[..start + 2]);
                rest = &rest[start + 2..];
                continue;
            }
            let Some(v) = args.get(name) else {
                return Err(p.err(
                    i + 1,
                    format!("build argument {name:?} has no value (give --build-arg {name}=... or a default in %arguments)"),
                ));
            };
            used.insert(name.to_string());
            out.push_str(&rest[..start]);
            out.push_str(v);
            rest = &rest[start + 2 + len + 2..];
        }
        out.push_str(rest);
    }
    Ok(out)
}

fn split_words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut any = false;
    for c in s.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => cur.push(c),
            None if c == '"' || c == '\'' => {
                quote = Some(c);
                any = true;
            }
            None if c.is_whitespace() => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            None => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Parses a definition file. `file` names it in errors; `build_args` override the
/// `%arguments` defaults.
pub fn parse(file: &str, text: &str, build_args: &[(String, String)]) -> Result<Recipe> {
    let p = Parser { file };
    let mut args = argument_defaults(&p, text)?;
    for (k, v) in build_args {
        args.insert(k.clone(), v.clone());
    }
    let mut used = std::collections::BTreeSet::new();
    let text = substitute(&p, text, &args, &mut used)?;
    let (header, sections) = split_sections(&p, &text)?;
    let mut r = header_fields(&p, header)?;
    r.text = text.clone();
    r.unused_args = build_args
        .iter()
        .map(|(k, _)| k.clone())
        .filter(|k| !used.contains(k))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    for s in sections {
        add_section(&p, &mut r, s)?;
    }
    Ok(r)
}

/// The header's `Key: value` lines (keys lowercased), each with its line number.
struct Header {
    values: BTreeMap<String, String>,
    lines: BTreeMap<String, usize>,
}

/// A `%section` as written: its name (lowercased), the arguments on its header line,
/// that line's number, and the lines under it.
struct Section {
    name: String,
    args: String,
    line: usize,
    body: String,
}

/// Splits a definition file into its header and its sections.
fn split_sections(p: &Parser<'_>, text: &str) -> Result<(Header, Vec<Section>)> {
    let mut header = Header {
        values: BTreeMap::new(),
        lines: BTreeMap::new(),
    };
    let mut sections: Vec<Section> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        if let Some((name, sargs)) = section_header(raw) {
            let lname = name.to_ascii_lowercase();
            if APP_SECTIONS.contains(&lname.as_str()) {
                return Err(p.err(
                    n,
                    format!("%{name}: SCIF app sections are not supported by veil build"),
                ));
            }
            if lname == "pre" {
                return Err(p.err(
                    n,
                    "%pre is not supported (Apptainer removed it too; use %setup)",
                ));
            }
            if !SECTIONS.contains(&lname.as_str()) {
                return Err(p.err(n, format!("unknown section %{name}")));
            }
            if sections.iter().any(|s| s.name == lname) {
                return Err(p.err(n, format!("section %{name} appears twice")));
            }
            sections.push(Section {
                name: lname,
                args: sargs.to_string(),
                line: n,
                body: String::new(),
            });
            continue;
        }
        if let Some(s) = sections.last_mut() {
            s.body.push_str(raw);
            s.body.push('\n');
            continue;
        }
        let l = raw.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let Some((k, v)) = l.split_once(':') else {
            return Err(p.err(n, format!("expected a header line `Key: value`, got {l:?}")));
        };
        let key = k.trim().to_ascii_lowercase();
        if key == "bootstrap" && header.values.contains_key("bootstrap") {
            return Err(p.err(
                n,
                "multi-stage builds (a second Bootstrap:) are not supported",
            ));
        }
        header.values.insert(key.clone(), v.trim().to_string());
        header.lines.insert(key, n);
    }
    Ok((header, sections))
}

/// The recipe's header fields: `Bootstrap:`, `From:`, `Fingerprints:`.
fn header_fields(p: &Parser<'_>, h: Header) -> Result<Recipe> {
    let Some(agent) = h.values.get("bootstrap") else {
        return Err(p.err(1, "missing `Bootstrap:` header"));
    };
    let bline = h.lines["bootstrap"];
    let bootstrap = match agent.to_ascii_lowercase().as_str() {
        "localimage" => Bootstrap::LocalImage,
        "scratch" => Bootstrap::Scratch,
        "docker-archive" => Bootstrap::DockerArchive,
        "oci-archive" => Bootstrap::OciArchive,
        "docker" => Bootstrap::Docker,
        "oras" => Bootstrap::Oras,
        other => {
            return Err(p.err(
                bline,
                format!("bootstrap agent {other:?} is not supported (veil builds from localimage, scratch, docker, oras, docker-archive, oci-archive)"),
            ));
        }
    };
    let from = h.values.get("from").cloned().filter(|s| !s.is_empty());
    let from_line = h.lines.get("from").copied().unwrap_or(bline);
    if bootstrap != Bootstrap::Scratch && from.is_none() {
        return Err(p.err(
            bline,
            format!("Bootstrap: {} needs a `From:` header", bootstrap.name()),
        ));
    }
    let fingerprints = h
        .values
        .get("fingerprints")
        .map(|f| {
            f.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    Ok(Recipe {
        bootstrap,
        from,
        from_line,
        fingerprints,
        fingerprints_line: h.lines.get("fingerprints").copied().unwrap_or(0),
        header: h.values,
        ..Default::default()
    })
}

/// Puts one section into the recipe.
fn add_section(p: &Parser<'_>, r: &mut Recipe, s: Section) -> Result<()> {
    let Section {
        name,
        args: sargs,
        line,
        body,
    } = s;
    let script = || -> Result<Script> {
        let words = split_words(&sargs);
        let interpreter = match words.as_slice() {
            [] => None,
            [c, sh] if c == "-c" => Some(sh.clone()),
            _ => {
                return Err(p.err(
                    line,
                    format!("%{name}: unexpected arguments {sargs:?} (only `-c <interpreter>` is accepted)"),
                ));
            }
        };
        Ok(Script {
            body: body.clone(),
            interpreter,
            line,
        })
    };
    match name.as_str() {
        "setup" => r.setup = Some(script()?),
        "post" => r.post = Some(script()?),
        "environment" => r.environment = Some(script()?),
        "runscript" => r.runscript = Some(script()?),
        "startscript" => r.startscript = Some(script()?),
        "test" => r.test = Some(script()?),
        "help" => r.help = Some(body.clone()),
        "arguments" => {}
        "files" => {
            if !sargs.is_empty() {
                return Err(p.err(
                    line,
                    "%files from another stage is not supported (multi-stage builds)",
                ));
            }
            files_section(p, r, line, &body)?;
        }
        "labels" => labels_section(r, &body),
        _ => unreachable!("checked against SECTIONS"),
    }
    Ok(())
}

/// `%files`: `source [destination]` lines.
fn files_section(p: &Parser<'_>, r: &mut Recipe, line: usize, body: &str) -> Result<()> {
    for (j, l) in body.lines().enumerate() {
        let t = l.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let w = split_words(t);
        let (src, dst) = match w.as_slice() {
            [s] => (s.clone(), s.clone()),
            [s, d] => (s.clone(), d.clone()),
            _ => {
                return Err(p.err(
                    line + 1 + j,
                    format!("%files: expected `source [destination]`, got {t:?}"),
                ));
            }
        };
        r.files.push(FileCopy {
            src,
            dst,
            line: line + 1 + j,
        });
    }
    Ok(())
}

/// `%labels`: `KEY value` lines; a later key replaces an earlier one.
fn labels_section(r: &mut Recipe, body: &str) {
    for l in body.lines() {
        let t = l.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let (k, v) = match t.find(char::is_whitespace) {
            Some(at) => (&t[..at], t[at..].trim()),
            None => (t, ""),
        };
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(v);
        r.labels.retain(|(key, _)| key != k);
        r.labels.push((k.to_string(), v.to_string()));
    }
}

/// Fuzzing entry point: arbitrary bytes as a definition file, parsed with no build
/// arguments and with one, then turned into the image's layout entries and labels as a
/// build does. Never panics on its own; panics when an invariant breaks: every line a
/// result names exists and says what it should, every script body is the run of lines
/// under its header, and text without placeholders comes back unchanged. Shared by the
/// cargo-fuzz target and the corpus replay test.
#[doc(hidden)]
pub fn fuzz_one(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    for args in [
        Vec::new(),
        vec![("X".to_string(), "value {{ X }} %post\n".to_string())],
    ] {
        match parse("fuzz.def", &text, &args) {
            Ok(r) => check_invariants(&text, &args, &r),
            Err(BuildError::Recipe { line, .. }) => {
                // (A build argument's value may add lines; %arguments defaults cannot.)
                let lines = text.lines().count().max(1);
                assert!(
                    !args.is_empty() || (1..=lines).contains(&line),
                    "error line {line} of {lines}"
                );
            }
            Err(e) => panic!("a recipe error of another kind: {e}"),
        }
    }
}

fn check_invariants(input: &str, args: &[(String, String)], r: &Recipe) {
    if !input.contains("{{") {
        assert_eq!(r.text, input, "text without placeholders is kept as is");
    }
    if args.is_empty() && r.text != input {
        assert!(input.contains("{{"), "only placeholders change the text");
    }
    let lines: Vec<&str> = r.text.lines().collect();
    let line = |n: usize| -> &str {
        assert!(
            (1..=lines.len()).contains(&n),
            "line {n} of {}",
            lines.len()
        );
        lines[n - 1]
    };
    // A section's body is exactly the lines between its header and the next one.
    let check_script = |name: &str, s: &Script| {
        let (h, _) = section_header(line(s.line)).expect("a script's line is its header");
        assert!(h.eq_ignore_ascii_case(name), "%{h} is not %{name}");
        let body: Vec<&str> = s.body.split_terminator('\n').collect();
        assert_eq!(
            s.body.matches('\n').count(),
            body.len(),
            "one newline per line"
        );
        assert_eq!(&lines[s.line..s.line + body.len()], body.as_slice());
        if let Some(next) = lines.get(s.line + body.len()) {
            assert!(section_header(next).is_some(), "a body ends at a header");
        }
    };
    for (name, s) in [
        ("setup", &r.setup),
        ("post", &r.post),
        ("environment", &r.environment),
        ("runscript", &r.runscript),
        ("startscript", &r.startscript),
        ("test", &r.test),
    ] {
        if let Some(s) = s {
            check_script(name, s);
        }
    }
    for f in &r.files {
        let l = line(f.line);
        assert!(!l.trim().is_empty() && !l.trim().starts_with('#'), "{l:?}");
    }
    if r.bootstrap != Bootstrap::Scratch {
        assert!(r.from.as_deref().is_some_and(|f| !f.is_empty()));
    }
    let from = line(r.from_line).to_ascii_lowercase();
    assert!(
        from.trim_start().starts_with("from") || from.trim_start().starts_with("bootstrap"),
        "{from:?}"
    );
    if r.fingerprints_line > 0 {
        assert!(line(r.fingerprints_line).contains(':'));
    }
    for (k, _) in &r.labels {
        assert!(
            !k.is_empty() && !k.contains(char::is_whitespace),
            "label {k:?}"
        );
        assert_eq!(
            r.labels.iter().filter(|(x, _)| x == k).count(),
            1,
            "{k:?} twice"
        );
    }
    // What a build makes of it: the labels the recipe set win, every entry is in
    // /.singularity.d, scripts keep their bodies.
    let labels = super::layout::labels(None, Some(r), "amd64", 0);
    for (k, v) in &r.labels {
        assert_eq!(labels.get(k), Some(v));
    }
    let (entries, md) = super::layout::recipe_entries(r, &labels);
    assert!(
        entries
            .iter()
            .all(|e| e.path.starts_with("/.singularity.d/"))
    );
    if let (Some(s), Some(m)) = (&r.runscript, &md.runscript) {
        assert!(m.ends_with(&s.body));
    }
    let json = super::layout::inspect_json(&md, Some(&r.text));
    assert!(serde_json::from_slice::<serde_json::Value>(&json).is_ok());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_header_sections_and_arguments() {
        let def = "# comment\nBootstrap: localimage\nFrom: {{ BASE }}\n\n%arguments\n  BASE=base.sif\n  GREETING=\"hi there\"\n%files\n  a.txt /opt/a.txt\n  'b c' \n%post -c /bin/bash\n  echo {{GREETING}}\n%labels\n  Author me@example.org\n  Version 1.0\n%help\nHelp text\n%runscript\n  exec echo \"$@\"\n";
        let r = parse("x.def", def, &[("GREETING".into(), "hello".into())]).unwrap();
        assert_eq!(r.bootstrap, Bootstrap::LocalImage);
        assert_eq!(r.from.as_deref(), Some("base.sif"));
        assert_eq!(r.files.len(), 2);
        assert_eq!(r.files[0].dst, "/opt/a.txt");
        assert_eq!(r.files[1].src, "b c");
        assert_eq!(r.files[1].line, 10);
        let post = r.post.unwrap();
        assert_eq!(post.interpreter.as_deref(), Some("/bin/bash"));
        assert_eq!(post.body.trim(), "echo hello");
        assert_eq!(post.line, 11);
        assert_eq!(r.labels[0], ("Author".into(), "me@example.org".into()));
        assert_eq!(r.help.as_deref(), Some("Help text\n"));
        assert!(r.text.contains("From: base.sif"));
    }

    #[test]
    fn errors_name_the_line() {
        let e = parse("x.def", "Bootstrap: scratch\n%post\ntrue\n%bogus\n", &[]).unwrap_err();
        assert_eq!(e.to_string(), "x.def:4: unknown section %bogus");
        let e = parse("x.def", "\nBootstrap: localimage\n%post\n", &[]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "x.def:2: Bootstrap: localimage needs a `From:` header"
        );
        let e = parse("x.def", "%post\ntrue\n", &[]).unwrap_err();
        assert!(e.to_string().contains("missing `Bootstrap:`"), "{e}");
        let e = parse("x.def", "Bootstrap: library\nFrom: x\n", &[]).unwrap_err();
        assert!(e.to_string().starts_with("x.def:1: bootstrap agent"), "{e}");
        let e = parse("x.def", "Bootstrap: scratch\n%post\necho {{ NOPE }}\n", &[]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("x.def:3: build argument \"NOPE\""),
            "{e}"
        );
        let e = parse("x.def", "Bootstrap: scratch\n%post\n%post\n", &[]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("x.def:3: section %post appears twice"),
            "{e}"
        );
    }
}
