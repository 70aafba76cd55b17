//! Which keyservers to ask: `--url`, else `VEIL_KEYSERVER`, else the peers'
//! `APPTAINER_URL` and `SINGULARITY_URL` (the variables their key commands and `verify`
//! read for `--url`), else the user's list in `~/.veil/keyservers.json` (kept by
//! `veil keyserver add|remove`), else the default, keys.openpgp.org.

#![forbid(unsafe_code)]

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{KeyProtocol, Keyserver};
use crate::registry::error::{RegistryError, Result};

/// The keyserver used when nothing else is configured (Apptainer's default too).
pub const DEFAULT_URL: &str = "https://keys.openpgp.org";
/// The list's file under the home directory.
pub const FILE: &str = ".veil/keyservers.json";
/// The environment variables that name one keyserver, in order of precedence.
pub const VARIABLES: [&str; 3] = ["VEIL_KEYSERVER", "APPTAINER_URL", "SINGULARITY_URL"];
/// The largest list file read.
const MAX_FILE: u64 = 64 << 10;

#[derive(Debug, Default, Serialize, Deserialize)]
struct File {
    keyservers: Vec<Keyserver>,
}

/// The keyservers in effect and where that choice came from.
#[derive(Debug, Clone)]
pub struct Chosen {
    /// In the order they are asked.
    pub servers: Vec<Keyserver>,
    /// `--url`, a variable's name, the file's path, or "the default".
    pub from: String,
}

/// The list file of the user whose home is `home`.
pub fn path(home: &Path) -> PathBuf {
    home.join(FILE)
}

fn home() -> Result<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .ok_or_else(|| RegistryError::Setup("HOME is not set: no keyserver list to read".into()))
}

fn default_list() -> Vec<Keyserver> {
    vec![Keyserver::parse(DEFAULT_URL, None).expect("the default keyserver URL parses")]
}

/// The list in `file`, or `None` when there is no such file.
fn read(file: &Path) -> Result<Option<Vec<Keyserver>>> {
    let bad = |why: String| RegistryError::Config {
        path: file.to_path_buf(),
        why,
    };
    let f = match std::fs::File::open(file) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(RegistryError::io("reading", file, e)),
    };
    let mut text = Vec::new();
    f.take(MAX_FILE + 1)
        .read_to_end(&mut text)
        .map_err(|e| RegistryError::io("reading", file, e))?;
    if text.len() as u64 > MAX_FILE {
        return Err(bad(format!(
            "larger than {} KiB: not a keyserver list",
            MAX_FILE >> 10
        )));
    }
    let parsed: File = serde_json::from_slice(&text)
        .map_err(|e| bad(format!("not a keyserver list ({e}); fix or remove it")))?;
    // Written by hand, perhaps: each entry goes through the same checks as `add`.
    let mut out = Vec::new();
    for k in parsed.keyservers {
        out.push(Keyserver::parse(&k.url, Some(k.protocol)).map_err(|e| bad(e.to_string()))?);
    }
    Ok(Some(out))
}

/// The user's list (the default when they have none) and its file.
pub fn configured() -> Result<(Vec<Keyserver>, PathBuf)> {
    let file = path(&home()?);
    let list = read(&file)?.unwrap_or_else(default_list);
    Ok((list, file))
}

/// The keyservers to ask, given the `--url` flag's value.
pub fn chosen(url: Option<&str>) -> Result<Chosen> {
    if let Some(u) = url {
        return Ok(Chosen {
            servers: vec![Keyserver::parse(u, None)?],
            from: "--url".into(),
        });
    }
    for var in VARIABLES {
        if let Some(v) = std::env::var_os(var).filter(|v| !v.is_empty()) {
            let v = v.to_string_lossy();
            return Ok(Chosen {
                servers: vec![Keyserver::parse(&v, None).map_err(|e| RegistryError::Uri {
                    uri: format!("{var}={}", crate::registry::error::printable(&v)),
                    why: match e {
                        RegistryError::Uri { why, .. } => why,
                        e => e.to_string(),
                    },
                })?],
                from: var.into(),
            });
        }
    }
    let (servers, file) = configured()?;
    if servers.is_empty() {
        return Err(RegistryError::Config {
            path: file,
            why: "lists no keyserver (add one with `veil keyserver add URL`, or give --url)".into(),
        });
    }
    Ok(Chosen {
        servers,
        from: file.display().to_string(),
    })
}

fn save(file: &Path, list: Vec<Keyserver>) -> Result<()> {
    if let Some(dir) = file.parent() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| RegistryError::io("creating", dir, e))?;
    }
    let text = serde_json::to_vec_pretty(&File { keyservers: list })
        .map_err(|e| RegistryError::Setup(e.to_string()))?;
    crate::fsutil::write_atomic_mode(file, 0o644, |w| {
        w.write_all(&text)?;
        w.write_all(b"\n")
    })
    .map_err(|e| RegistryError::io("writing", file, e))
}

/// Adds `server` to the user's list, at position `order` (1 is first) or last.
/// Returns the list as it now is.
pub fn add(server: Keyserver, order: Option<usize>) -> Result<Vec<Keyserver>> {
    let file = path(&home()?);
    let mut list = read(&file)?.unwrap_or_else(default_list);
    let user_error = |why: String| RegistryError::Config {
        path: file.clone(),
        why,
    };
    if list.iter().any(|k| k.url == server.url) {
        return Err(user_error(format!(
            "{} is listed already (see `veil keyserver list`)",
            server.url
        )));
    }
    let at = match order {
        Some(0) => {
            return Err(user_error(
                "--order counts from 1 (the first keyserver asked)".into(),
            ));
        }
        Some(n) => (n - 1).min(list.len()),
        None => list.len(),
    };
    list.insert(at, server);
    save(&file, list.clone())?;
    Ok(list)
}

/// Removes the keyserver written `url` from the user's list.
pub fn remove(url: &str) -> Result<Vec<Keyserver>> {
    let file = path(&home()?);
    let mut list = read(&file)?.unwrap_or_else(default_list);
    let want = Keyserver::parse(url, None)?;
    let before = list.len();
    list.retain(|k| k.url != want.url);
    if list.len() == before {
        return Err(RegistryError::Config {
            path: file.clone(),
            why: format!(
                "{} is not in the keyserver list (see `veil keyserver list`)",
                want.url
            ),
        });
    }
    save(&file, list.clone())?;
    Ok(list)
}

/// The protocol a `--protocol` value names.
pub fn protocol(name: &str) -> Option<KeyProtocol> {
    match name {
        "hkp" | "hkps" => Some(KeyProtocol::Hkp),
        "vks" => Some(KeyProtocol::Vks),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_file_is_checked_like_a_flag() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("k.json");
        assert!(read(&f).unwrap().is_none());
        std::fs::write(&f, r#"{"keyservers":[{"url":"hkp://h","protocol":"hkp"}]}"#).unwrap();
        let l = read(&f).unwrap().unwrap();
        assert_eq!(l[0].url, "http://h:11371");
        std::fs::write(
            &f,
            r#"{"keyservers":[{"url":"gopher://h","protocol":"hkp"}]}"#,
        )
        .unwrap();
        assert!(read(&f).is_err());
        std::fs::write(&f, "{").unwrap();
        assert!(read(&f).is_err());
        std::fs::write(&f, vec![b' '; MAX_FILE as usize + 10]).unwrap();
        assert!(read(&f).unwrap_err().to_string().contains("larger than"));
    }
}
