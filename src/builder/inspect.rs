//! An image's build metadata for `veil inspect`: labels, definition file, runscript,
//! startscript, test, environment and help. Read from the SIF's metadata objects
//! (`inspect-metadata.json`, Def.FILE) where present, else from the image's
//! `/.singularity.d` (a sandbox directory, a plain squashfs, or an unlocked encrypted
//! one).

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;
use veil_fusefs::squashfs::{FileKind, Squashfs};

use super::layout::parse_labels;
use crate::image::Source;
use crate::sif::{DataType, Sif};

/// Apptainer's `inspect` attributes.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Attributes {
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deffile: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runscript: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub startscript: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub helpfile: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub environment: BTreeMap<String, String>,
}

impl Attributes {
    /// Fills what `self` lacks from `other`.
    pub fn fill_from(&mut self, other: Attributes) {
        if self.labels.is_empty() {
            self.labels = other.labels;
        }
        if self.environment.is_empty() {
            self.environment = other.environment;
        }
        for (mine, theirs) in [
            (&mut self.deffile, other.deffile),
            (&mut self.runscript, other.runscript),
            (&mut self.startscript, other.startscript),
            (&mut self.test, other.test),
            (&mut self.helpfile, other.helpfile),
        ] {
            if mine.is_none() {
                *mine = theirs;
            }
        }
    }
}

const LIMIT: u64 = 4 << 20;

/// From the SIF's metadata objects; `None` when `path` is not a SIF or has neither.
pub fn from_sif_objects(path: &Path) -> Option<Attributes> {
    let sif = Sif::open_path(path).ok()?;
    let mut a = Attributes::default();
    let mut found = false;
    if let Some(d) = sif
        .objects_of_type(DataType::GenericJson)
        .find(|d| d.name_str() == "inspect-metadata.json")
        && let Ok(b) = sif.read_object(d, LIMIT)
        && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&b)
    {
        let at = &v["data"]["attributes"];
        let s = |k: &str| at[k].as_str().map(String::from);
        a.deffile = s("deffile");
        a.runscript = s("runscript");
        a.startscript = s("startscript");
        a.test = s("test");
        a.helpfile = s("helpfile");
        if let Ok(l) = serde_json::to_vec(&at["labels"]) {
            a.labels = parse_labels(&l);
        }
        if let Some(env) = at["environment"].as_object() {
            for (k, v) in env {
                if let Some(v) = v.as_str() {
                    a.environment.insert(k.clone(), v.to_string());
                }
            }
        }
        found = true;
    }
    if a.deffile.is_none()
        && let Some(d) = sif.objects_of_type(DataType::Deffile).next()
        && let Ok(b) = sif.read_object(d, LIMIT)
    {
        a.deffile = Some(String::from_utf8_lossy(&b).into_owned());
        found = true;
    }
    found.then_some(a)
}

/// Reads the standard files through `read` (a path below the image root → bytes).
fn from_reader(read: &dyn Fn(&str) -> Option<Vec<u8>>, env_names: Vec<String>) -> Attributes {
    let text = |p: &str| read(p).map(|b| String::from_utf8_lossy(&b).into_owned());
    let mut a = Attributes {
        labels: read(".singularity.d/labels.json")
            .map(|b| parse_labels(&b))
            .unwrap_or_default(),
        deffile: text(".singularity.d/Singularity"),
        runscript: text(".singularity.d/runscript"),
        startscript: text(".singularity.d/startscript"),
        test: text(".singularity.d/test"),
        helpfile: text(".singularity.d/runscript.help"),
        environment: BTreeMap::new(),
    };
    for n in env_names {
        if let Some(t) = text(&format!(".singularity.d/env/{n}")) {
            a.environment.insert(n, t);
        }
    }
    a
}

/// From a squashfs image's `/.singularity.d`.
pub fn from_squashfs(fs: &Squashfs<Source>) -> Attributes {
    let read = |p: &str| crate::image::read_small_file(fs, p).map(String::into_bytes);
    let mut names = Vec::new();
    if let Ok(env) = fs.lookup_path(b".singularity.d/env")
        && let Ok(rd) = fs.readdir(env.id, 0)
    {
        for e in rd.flatten() {
            if e.kind != FileKind::Directory {
                names.push(String::from_utf8_lossy(&e.name).into_owned());
            }
        }
    }
    names.sort();
    from_reader(&read, names)
}

/// From a sandbox directory's `/.singularity.d`.
pub fn from_dir(dir: &Path) -> Attributes {
    let read = |p: &str| {
        let f = dir.join(p);
        let md = std::fs::metadata(&f).ok()?;
        (md.is_file() && md.len() <= LIMIT).then(|| std::fs::read(&f).ok())?
    };
    let mut names: Vec<String> = std::fs::read_dir(dir.join(".singularity.d/env"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    from_reader(&read, names)
}
