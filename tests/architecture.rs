//! The layer map in docs/architecture.md is the code's: every `crate::X` a module of
//! `veil` or `veil-fusefs` names must be of a lower layer (or a leaf of its own crate
//! root), as the tables on that page say. Test modules are left out: a test may look
//! at anything.

use std::collections::BTreeMap;
use std::path::Path;

/// The `layer module job` tables of the page, in order: first `veil`'s, then
/// `veil-fusefs`'s.
fn tables() -> Vec<BTreeMap<String, u32>> {
    let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/architecture.md");
    let text = std::fs::read_to_string(doc).unwrap();
    let mut out = Vec::new();
    let mut current: Option<BTreeMap<String, u32>> = None;
    for line in text.lines() {
        if line.starts_with("layer  module") {
            current = Some(BTreeMap::new());
            continue;
        }
        let Some(t) = current.as_mut() else { continue };
        if line.starts_with("```") {
            out.push(current.take().unwrap());
            continue;
        }
        let mut w = line.split_whitespace();
        let (Some(layer), Some(module)) = (w.next(), w.next()) else {
            continue;
        };
        t.insert(module.to_string(), layer.parse().unwrap());
    }
    out
}

/// Each `crate::NAME` in `src` outside `#[cfg(test)]` test modules.
fn crate_refs(src: &str) -> Vec<String> {
    let body = match src.find("#[cfg(test)]\nmod tests") {
        Some(i) => &src[..i],
        None => src,
    };
    let mut out = Vec::new();
    let mut rest = body;
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a, b::c, d::{e, f}}`: the first name of each top-level item.
            let (mut depth, mut start) = (0usize, 0usize);
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        out.push(ident(&group[start..j]));
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.push(ident(&group[start..j]));
                        start = j + 1;
                    }
                    _ => {}
                }
            }
        } else {
            out.push(ident(rest));
        }
    }
    out.retain(|n| !n.is_empty());
    out
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Every violation of `layers` in the crate whose sources are in `src`.
fn violations(src: &Path, layers: &BTreeMap<String, u32>) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut bad = Vec::new();
    for f in files {
        let rel = f.strip_prefix(src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = first.trim_end_matches(".rs").to_string();
        let Some(&own) = layers.get(&module) else {
            // The crate root and its private leaves (lib.rs, main.rs, fastmem.rs).
            continue;
        };
        for r in crate_refs(&std::fs::read_to_string(&f).unwrap()) {
            match layers.get(&r) {
                Some(&l) if r != module && l >= own => bad.push(format!(
                    "{} (layer {own}) uses crate::{r} (layer {l})",
                    rel.display()
                )),
                _ => {}
            }
        }
    }
    bad
}

#[test]
fn imports_point_down_as_the_architecture_page_says() {
    let t = tables();
    assert_eq!(
        t.len(),
        2,
        "docs/architecture.md should have two layer tables"
    );
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // Every module of each crate is on the page.
    for (dir, table) in [("src", &t[0]), ("fusefs/src", &t[1])] {
        for e in std::fs::read_dir(root.join(dir)).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().to_string();
            let module = name.trim_end_matches(".rs");
            // The crate roots: the library, and the programs (main.rs, bin/).
            if ["lib", "main", "bin", "fastmem"].contains(&module) {
                continue;
            }
            assert!(
                table.contains_key(module),
                "{dir}/{name} is not in docs/architecture.md's layer table"
            );
        }
    }
    let mut bad = violations(&root.join("src"), &t[0]);
    bad.extend(violations(&root.join("fusefs/src"), &t[1]));
    assert!(
        bad.is_empty(),
        "imports against the layer map:\n  {}",
        bad.join("\n  ")
    );
}

#[test]
fn a_sideways_import_is_found() {
    // The check itself: a layer-2 module naming a layer-2 module is reported.
    let mut layers = BTreeMap::new();
    layers.insert("image".to_string(), 2);
    layers.insert("sign".to_string(), 2);
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("image.rs"), "use crate::sign::policy;\n").unwrap();
    std::fs::write(t.path().join("other.rs"), "use crate::{fsutil, sign::x};\n").unwrap();
    layers.insert("other".to_string(), 1);
    std::fs::write(
        t.path().join("sign.rs"),
        "#[cfg(test)]\nmod tests { use crate::image; }\n",
    )
    .unwrap();
    let mut bad = violations(t.path(), &layers);
    bad.sort();
    assert_eq!(
        bad,
        vec![
            "image.rs (layer 2) uses crate::sign (layer 2)".to_string(),
            "other.rs (layer 1) uses crate::sign (layer 2)".to_string(),
        ]
    );
}

/// The network client (HTTP, TLS, the async runtime) is the registry helper's alone:
/// no code outside `registry::remote` and the helper's `main` names it, and the `veil`
/// program links none of it (every container start would pay for it).
#[test]
fn the_network_client_stays_in_the_registry_helper() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut named = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let rel = p.strip_prefix(&root).unwrap().to_path_buf();
            if rel.starts_with("registry/remote") || rel.starts_with("bin") {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            for needle in ["remote::", "oci_client", "reqwest", "rustls", "tokio"] {
                if text.contains(needle) {
                    named.push(format!("{} names {needle}", rel.display()));
                }
            }
        }
    }
    assert!(named.is_empty(), "outside registry::remote: {named:?}");

    let Ok(o) = std::process::Command::new("nm")
        .arg("-C")
        .arg(env!("CARGO_BIN_EXE_veil"))
        .output()
    else {
        eprintln!("SKIP the_network_client_stays_in_the_registry_helper: nm is not installed");
        return;
    };
    let symbols = String::from_utf8_lossy(&o.stdout);
    assert!(symbols.lines().count() > 1000, "nm read no symbols");
    for krate in [
        "tokio::",
        "rustls::",
        "reqwest::",
        "hyper::",
        "oci_client::",
        "h2::",
    ] {
        let n = symbols.lines().filter(|l| l.contains(krate)).count();
        assert_eq!(n, 0, "veil links {n} symbols of {krate}");
    }
    // (The helper does, which shows the check would see them.)
    let o = std::process::Command::new("nm")
        .arg("-C")
        .arg(env!("CARGO_BIN_EXE_veil-registry"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).contains("rustls::"));
}
