//! The runtime layout Apptainer and SingularityCE put in every image they build, so
//! that they and veil run a veil-built image the same way:
//!
//! - `/.singularity.d/{actions,env,libs}`; the action scripts `actions/{exec,run,shell,
//!   start,test}`; the environment scripts `env/NN-*.sh`, sourced in name order
//!   (01-base, 10-docker2singularity for container-registry sources, 90-environment for
//!   `%environment`, 91-environment for what `%post` appends to `$APPTAINER_ENVIRONMENT`,
//!   94-appsbase, 95-apps, 99-base, 99-runtimevars);
//! - `runscript`, `startscript`, `test`, `runscript.help`, `labels.json`;
//! - the compatibility links `/singularity`, `/.run`, `/.exec`, `/.shell`, `/.test`,
//!   `/environment`, and the usual mount points.
//!
//! The base entries are only added where the source image has none (a base image's
//! runscript is inherited); what the definition file says replaces them.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::path::Path;

use super::recipe::{Recipe, Script};
use super::rooted::{self, Rooted};
use super::tree::{FileData, Kind, Meta, Tree};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    File(Vec<u8>),
    Symlink(String),
}

#[derive(Debug, Clone)]
pub struct Entry {
    /// Absolute path in the image.
    pub path: String,
    pub kind: EntryKind,
    pub perm: u16,
    /// Replace an existing entry (recipe content) or only fill a gap (base layout).
    pub replace: bool,
}

const SOURCE_ENV: &str = "for __f in /.singularity.d/env/*.sh; do\n    if [ -f \"$__f\" ]; then\n        . \"$__f\"\n    fi\ndone\nunset __f\n";

fn action(body: &str) -> Vec<u8> {
    format!("#!/bin/sh\n# veil/Apptainer action script: load the image environment, then act.\n{SOURCE_ENV}\n{body}")
        .into_bytes()
}

fn base(path: &str, kind: EntryKind, perm: u16) -> Entry {
    Entry {
        path: path.into(),
        kind,
        perm,
        replace: false,
    }
}

/// The base layout (added only where missing).
pub fn base_entries() -> Vec<Entry> {
    let mut v = Vec::new();
    for d in [
        "/.singularity.d",
        "/.singularity.d/actions",
        "/.singularity.d/env",
        "/.singularity.d/libs",
        "/dev",
        "/proc",
        "/sys",
        "/etc",
        "/home",
        "/root",
        "/var",
    ] {
        v.push(base(d, EntryKind::Dir, 0o755));
    }
    v.push(base("/tmp", EntryKind::Dir, 0o1777));
    v.push(base("/var/tmp", EntryKind::Dir, 0o1777));
    for f in ["/etc/hosts", "/etc/resolv.conf"] {
        v.push(base(f, EntryKind::File(Vec::new()), 0o644));
    }
    let file = |p: &str, s: &str| base(p, EntryKind::File(s.as_bytes().to_vec()), 0o755);
    v.push(file(
        "/.singularity.d/env/01-base.sh",
        "#!/bin/sh\n# Base environment: intentionally empty, kept for the standard layout.\n",
    ));
    v.push(file(
        "/.singularity.d/env/90-environment.sh",
        "#!/bin/sh\n# %environment of the definition file goes here.\n",
    ));
    v.push(file(
        "/.singularity.d/env/94-appsbase.sh",
        "#!/bin/sh\n# SCIF app base paths (no apps in veil-built images).\n",
    ));
    v.push(file(
        "/.singularity.d/env/95-apps.sh",
        "#!/bin/sh\n# SCIF app environment (no apps in veil-built images).\n",
    ));
    v.push(file(
        "/.singularity.d/env/99-base.sh",
        "#!/bin/sh\n# Prompt for interactive shells.\nif [ -z \"${PS1:-}\" ] || [ \"${PS1:-}\" = '$ ' ]; then\n    PS1=\"Apptainer> \"\n    export PS1\nfi\n",
    ));
    v.push(file(
        "/.singularity.d/env/99-runtimevars.sh",
        "#!/bin/sh\n# Runtime variables set by the launcher are exported unchanged.\n",
    ));
    v.push(file(
        "/.singularity.d/runscript",
        "#!/bin/sh\n\necho \"There is no runscript defined for this container.\" >&2\n",
    ));
    v.push(file("/.singularity.d/startscript", "#!/bin/sh\n"));
    v.push(base(
        "/.singularity.d/actions/exec",
        EntryKind::File(action("exec \"$@\"\n")),
        0o755,
    ));
    v.push(base(
        "/.singularity.d/actions/run",
        EntryKind::File(action(
            "if [ -x /.singularity.d/runscript ]; then\n    exec /.singularity.d/runscript \"$@\"\nfi\necho \"There is no runscript defined for this container.\" >&2\nexit 1\n",
        )),
        0o755,
    ));
    v.push(base(
        "/.singularity.d/actions/shell",
        EntryKind::File(action(
            "if [ -x /bin/bash ]; then\n    exec /bin/bash --norc \"$@\"\nfi\nexec /bin/sh \"$@\"\n",
        )),
        0o755,
    ));
    v.push(base(
        "/.singularity.d/actions/start",
        EntryKind::File(action(
            "if [ -x /.singularity.d/startscript ]; then\n    exec /.singularity.d/startscript \"$@\"\nfi\n",
        )),
        0o755,
    ));
    v.push(base(
        "/.singularity.d/actions/test",
        EntryKind::File(action(
            "if [ -x /.singularity.d/test ]; then\n    exec /.singularity.d/test \"$@\"\nfi\necho \"No test script found in the container, exiting.\" >&2\nexit 0\n",
        )),
        0o755,
    ));
    for (link, target) in [
        ("/singularity", ".singularity.d/runscript"),
        ("/.run", ".singularity.d/actions/run"),
        ("/.exec", ".singularity.d/actions/exec"),
        ("/.shell", ".singularity.d/actions/shell"),
        ("/.test", ".singularity.d/actions/test"),
        ("/environment", ".singularity.d/env/90-environment.sh"),
    ] {
        v.push(base(link, EntryKind::Symlink(target.into()), 0o777));
    }
    v
}

fn script_file(s: &Script) -> Vec<u8> {
    let interp = s.interpreter.as_deref().unwrap_or("/bin/sh");
    format!("#!{interp}\n\n{}", s.body).into_bytes()
}

/// What a definition file puts in the image, with the values inspect shows.
#[derive(Debug, Clone, Default)]
pub struct Metadata {
    pub runscript: Option<String>,
    pub startscript: Option<String>,
    pub test: Option<String>,
    pub environment: Option<String>,
    pub help: Option<String>,
    pub labels: BTreeMap<String, String>,
}

/// The entries a recipe contributes (replacing what the source has).
pub fn recipe_entries(r: &Recipe, labels: &BTreeMap<String, String>) -> (Vec<Entry>, Metadata) {
    let mut v = Vec::new();
    let mut md = Metadata {
        labels: labels.clone(),
        ..Default::default()
    };
    let mut put = |path: &str, bytes: Vec<u8>, perm: u16| {
        v.push(Entry {
            path: path.into(),
            kind: EntryKind::File(bytes),
            perm,
            replace: true,
        })
    };
    if let Some(s) = &r.runscript {
        let b = script_file(s);
        md.runscript = Some(String::from_utf8_lossy(&b).into_owned());
        put("/.singularity.d/runscript", b, 0o755);
    }
    if let Some(s) = &r.startscript {
        let b = script_file(s);
        md.startscript = Some(String::from_utf8_lossy(&b).into_owned());
        put("/.singularity.d/startscript", b, 0o755);
    }
    if let Some(s) = &r.test {
        let b = script_file(s);
        md.test = Some(String::from_utf8_lossy(&b).into_owned());
        put("/.singularity.d/test", b, 0o755);
    }
    if let Some(s) = &r.environment {
        let b = format!(
            "#!/bin/sh\n# Custom environment shell code should follow\n\n{}",
            s.body
        )
        .into_bytes();
        md.environment = Some(String::from_utf8_lossy(&b).into_owned());
        put("/.singularity.d/env/90-environment.sh", b, 0o755);
    }
    if let Some(h) = &r.help {
        md.help = Some(h.clone());
        put(
            "/.singularity.d/runscript.help",
            h.clone().into_bytes(),
            0o644,
        );
    }
    if !r.text.is_empty() {
        put(
            "/.singularity.d/Singularity",
            r.text.clone().into_bytes(),
            0o644,
        );
    }
    let json = serde_json::to_string_pretty(labels).unwrap_or_else(|_| "{}".into());
    put("/.singularity.d/labels.json", json.into_bytes(), 0o644);
    (v, md)
}

/// A `labels.json` as a map of strings (a value that is not a string as its JSON
/// text); empty when it is not a JSON object.
pub fn parse_labels(b: &[u8]) -> BTreeMap<String, String> {
    serde_json::from_slice::<BTreeMap<String, serde_json::Value>>(b)
        .map(|m| {
            m.into_iter()
                .map(|(k, v)| match v {
                    serde_json::Value::String(s) => (k, s),
                    other => (k, other.to_string()),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The labels of a build: the source image's, then the build's own, then the recipe's.
pub fn labels(
    existing: Option<&[u8]>,
    recipe: Option<&Recipe>,
    arch: &str,
    build_time: i64,
) -> BTreeMap<String, String> {
    let mut l = existing.map(parse_labels).unwrap_or_default();
    l.insert("org.label-schema.schema-version".into(), "1.0".into());
    l.insert("org.label-schema.build-arch".into(), arch.into());
    l.insert("org.label-schema.build-date".into(), rfc3339(build_time));
    l.insert(
        "org.label-schema.usage.veil.version".into(),
        env!("CARGO_PKG_VERSION").into(),
    );
    if let Some(r) = recipe {
        l.insert(
            "org.label-schema.usage.singularity.deffile.bootstrap".into(),
            r.bootstrap.name().into(),
        );
        if let Some(f) = &r.from {
            l.insert(
                "org.label-schema.usage.singularity.deffile.from".into(),
                f.clone(),
            );
        }
        if r.help.is_some() {
            l.insert(
                "org.label-schema.usage".into(),
                "/.singularity.d/runscript.help".into(),
            );
        }
        for (k, v) in &r.labels {
            l.insert(k.clone(), v.clone());
        }
    }
    l
}

/// `YYYY-MM-DDTHH:MM:SSZ` for a unix time (UTC).
pub fn rfc3339(t: i64) -> String {
    let days = t.div_euclid(86400);
    let secs = t.rem_euclid(86400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Applies entries to an in-memory tree.
pub fn apply_to_tree(tree: &mut Tree, entries: &[Entry], mtime: u32) {
    for e in entries {
        if !e.replace && tree.lookup(&e.path).is_some() {
            continue;
        }
        let meta = Meta {
            perm: e.perm,
            mtime,
            ..Default::default()
        };
        let kind = match &e.kind {
            EntryKind::Dir => Kind::Dir(Default::default()),
            EntryKind::File(b) => Kind::File(FileData::Bytes(b.clone()), b.len() as u64),
            EntryKind::Symlink(t) => Kind::Symlink(t.as_bytes().to_vec()),
        };
        tree.put(&e.path, kind, meta);
    }
}

/// Applies entries to a staging tree on disk (sandbox builds and the %post staging
/// tree), through the rooted writer: a base image's symlink at a layout path (say
/// `.singularity.d/env` pointing at a host directory) resolves inside the tree.
pub fn apply_to_dir(root: &Rooted, entries: &[Entry]) -> crate::builder::Result<()> {
    let mut made = Vec::new();
    for e in entries {
        let p = Path::new(e.path.trim_start_matches('/'));
        let exists = root.kind(p)?.is_some();
        if exists && !e.replace {
            continue;
        }
        match &e.kind {
            EntryKind::Dir => {
                root.mkdir(p, &mut made)?;
                root.set_meta(
                    p,
                    rooted::Meta {
                        owner: None,
                        mode: Some(e.perm as u32),
                        mtime: None,
                    },
                )?;
            }
            EntryKind::File(b) => root.write_file(p, b, e.perm as u32)?,
            EntryKind::Symlink(t) => root.symlink(p, std::ffi::OsStr::new(t), &mut made)?,
        }
    }
    Ok(())
}

/// The inspect metadata object Apptainer stores in a SIF (`inspect-metadata.json`).
pub fn inspect_json(md: &Metadata, deffile: Option<&str>) -> Vec<u8> {
    let mut attrs = serde_json::Map::new();
    if !md.labels.is_empty() {
        attrs.insert(
            "labels".into(),
            serde_json::to_value(&md.labels).unwrap_or_default(),
        );
    }
    let mut put = |k: &str, v: &Option<String>| {
        if let Some(v) = v {
            attrs.insert(k.into(), serde_json::Value::String(v.clone()));
        }
    };
    put("deffile", &deffile.map(String::from));
    put("runscript", &md.runscript);
    put("test", &md.test);
    put("helpfile", &md.help);
    put("startscript", &md.startscript);
    if let Some(e) = &md.environment {
        let mut m = serde_json::Map::new();
        m.insert(
            "90-environment.sh".into(),
            serde_json::Value::String(e.clone()),
        );
        attrs.insert("environment".into(), serde_json::Value::Object(m));
    }
    let v = serde_json::json!({
        "data": { "attributes": attrs },
        "type": "container",
    });
    serde_json::to_vec(&v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}
