//! Definitions in JSON (`veil build --json`), the form Apptainer's and SingularityCE's
//! `build --json` read: the parsed definition as a JSON object (`header`, `imageData`
//! with `labels` and `imageScripts`, `buildData` with `files` and `buildScripts`).
//! It is written out as a definition file's text, which the ordinary parser then
//! reads, so both forms mean exactly the same. A JSON without a header but with the
//! file's own text (`fullraw` or `raw`, base64 as Go writes bytes) is that text.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fmt::Write;

use base64::Engine;
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Definition {
    header: BTreeMap<String, String>,
    #[serde(rename = "imageData")]
    image: ImageData,
    #[serde(rename = "buildData")]
    build: BuildData,
    raw: Option<String>,
    fullraw: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ImageData {
    labels: BTreeMap<String, String>,
    #[serde(rename = "imageScripts")]
    scripts: ImageScripts,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ImageScripts {
    help: Script,
    environment: Script,
    #[serde(rename = "runScript")]
    runscript: Script,
    test: Script,
    #[serde(rename = "startScript")]
    startscript: Script,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct BuildData {
    files: Vec<Files>,
    #[serde(rename = "buildScripts")]
    scripts: BuildScripts,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct BuildScripts {
    pre: Script,
    setup: Script,
    post: Script,
    test: Script,
    arguments: Script,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Files {
    args: String,
    files: Vec<FileTransport>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct FileTransport {
    source: String,
    destination: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Script {
    args: String,
    script: String,
}

/// The definition file text of a JSON definition, or why it is not one.
pub fn to_text(json: &str) -> Result<String, String> {
    let d: Definition =
        serde_json::from_str(json).map_err(|e| format!("not a JSON definition: {e}"))?;
    if d.header.is_empty() {
        let raw = d.fullraw.or(d.raw).filter(|r| !r.is_empty());
        let Some(raw) = raw else {
            return Err("the JSON definition has no header (no Bootstrap)".into());
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(raw.as_bytes())
            .map_err(|e| format!("its raw text is not base64: {e}"))?;
        return String::from_utf8(bytes).map_err(|_| "its raw text is not UTF-8".into());
    }
    let mut t = String::new();
    // Bootstrap first, as a definition file has it; the rest in a fixed order.
    let header = d.header.iter().map(|(k, v)| (k.to_ascii_lowercase(), v));
    let (boot, rest): (Vec<_>, Vec<_>) = header.partition(|(k, _)| k == "bootstrap");
    for (k, v) in boot.into_iter().chain(rest) {
        check_line("header", &k)?;
        check_line("header", v)?;
        let _ = writeln!(t, "{k}: {v}");
    }
    t.push('\n');
    // %arguments first: its defaults fill the {{ NAME }} of the sections below.
    section(&mut t, "arguments", &d.build.scripts.arguments)?;
    if !d.image.labels.is_empty() {
        t.push_str("%labels\n");
        for (k, v) in &d.image.labels {
            check_line("label", k)?;
            check_line("label", v)?;
            let _ = writeln!(t, "    {k} {v}");
        }
        t.push('\n');
    }
    for f in &d.build.files {
        if f.files.is_empty() {
            continue;
        }
        check_line("%files", &f.args)?;
        let _ = writeln!(t, "%files {}", f.args);
        for ft in &f.files {
            check_line("%files", &ft.source)?;
            check_line("%files", &ft.destination)?;
            let _ = writeln!(t, "    {} {}", ft.source, ft.destination);
        }
        t.push('\n');
    }
    let s = &d.image.scripts;
    let b = &d.build.scripts;
    for (name, script) in [
        ("help", &s.help),
        ("environment", &s.environment),
        ("runscript", &s.runscript),
        ("test", &s.test),
        ("startscript", &s.startscript),
        ("pre", &b.pre),
        ("setup", &b.setup),
        ("post", &b.post),
    ] {
        section(&mut t, name, script)?;
    }
    // A build-time %test is the image's test script: both name one section.
    if !b.test.script.is_empty() && s.test.script.is_empty() {
        section(&mut t, "test", &b.test)?;
    }
    Ok(t)
}

fn section(t: &mut String, name: &str, s: &Script) -> Result<(), String> {
    if s.script.is_empty() {
        return Ok(());
    }
    check_line(name, &s.args)?;
    if s.args.is_empty() {
        let _ = writeln!(t, "%{name}");
    } else {
        let _ = writeln!(t, "%{name} {}", s.args);
    }
    // A line of the script that starts with % would open another section.
    for line in s.script.lines() {
        if line.trim_start().starts_with('%') {
            return Err(format!(
                "%{name}: a line starts with %, which would begin another section"
            ));
        }
        let _ = writeln!(t, "{line}");
    }
    t.push('\n');
    Ok(())
}

/// A value that must stay on its line.
fn check_line(what: &str, v: &str) -> Result<(), String> {
    if v.contains(['\n', '\r']) {
        return Err(format!(
            "{what} {v:?}: a line break where one line is expected"
        ));
    }
    Ok(())
}

/// One fuzzing input (fuzz/fuzz_targets/recipe.rs): JSON bytes; whatever text comes
/// out must be one the definition parser takes or refuses, never panics on.
#[doc(hidden)]
pub fn fuzz_one(data: &[u8]) {
    if let Ok(json) = std::str::from_utf8(data)
        && let Ok(text) = to_text(json)
    {
        let _ = super::recipe::parse("fuzz.json", &text, &[]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_definition_is_written_as_a_definition_file() {
        let j = r#"{
            "header": {"from": "base.sif", "Bootstrap": "localimage"},
            "imageData": {
                "labels": {"who": "{{ WHO }}"},
                "imageScripts": {"runScript": {"args": "", "script": "echo run\necho two"}}
            },
            "buildData": {
                "files": [{"args": "", "files": [{"source": "a.txt", "destination": "/a.txt"}]}],
                "buildScripts": {"post": {"args": "-c /bin/sh", "script": "echo post"},
                                  "arguments": {"script": "WHO=me"}}
            }
        }"#;
        let t = to_text(j).unwrap();
        assert!(
            t.starts_with("bootstrap: localimage\nfrom: base.sif\n\n"),
            "{t}"
        );
        for part in [
            "%arguments\nWHO=me\n",
            "%labels\n    who {{ WHO }}\n",
            "%files \n    a.txt /a.txt\n",
            "%runscript\necho run\necho two\n",
            "%post -c /bin/sh\necho post\n",
        ] {
            assert!(t.contains(part), "{part:?} in {t}");
        }
        let r = crate::builder::recipe::parse("x.json", &t, &[]).unwrap();
        assert_eq!(r.from.as_deref(), Some("base.sif"));
        assert!(r.text.contains("who me"));
    }

    #[test]
    fn raw_text_and_bad_input() {
        let raw = base64::engine::general_purpose::STANDARD.encode("Bootstrap: scratch\n");
        assert_eq!(
            to_text(&format!(r#"{{"fullraw": "{raw}"}}"#)).unwrap(),
            "Bootstrap: scratch\n"
        );
        for bad in [
            "[]",
            "{",
            "{}",
            r#"{"header": {"bootstrap": "x\nfrom: y"}}"#,
            r#"{"header": {"bootstrap": "scratch"}, "buildData": {"buildScripts": {"post": {"script": "ok\n%runscript\nevil"}}}}"#,
            r#"{"fullraw": "!!!"}"#,
        ] {
            assert!(to_text(bad).is_err(), "{bad}");
        }
    }
}
