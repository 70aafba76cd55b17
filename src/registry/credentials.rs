//! Registry credentials, looked for in the order a user of Apptainer expects: the
//! command line, the environment (`VEIL_`, `APPTAINER_` and `SINGULARITY_DOCKER_USERNAME`
//! / `_PASSWORD`), veil's own login file (`veil registry login`), then Docker's
//! `~/.docker/config.json` (`auths`, and its credential helpers). veil's file comes
//! before Docker's so that a login made with veil takes effect even where Docker holds
//! an older one.

#![forbid(unsafe_code)]

use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine;
use serde_json::Value;
use zeroize::Zeroizing;

use super::error::{RegistryError, Result};

/// A user name and password (or token) for one registry.
#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: Zeroizing<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// The environment variable prefixes read, most specific first.
const PREFIXES: [&str; 3] = ["VEIL_", "APPTAINER_", "SINGULARITY_"];

/// Credentials from the environment, if a user name is set there. (The run service
/// removes the password variables before a container starts: `crypt::environ`.)
pub fn from_environment() -> Option<Credentials> {
    for p in PREFIXES {
        if let Ok(user) = std::env::var(format!("{p}DOCKER_USERNAME")) {
            let password = std::env::var(format!("{p}DOCKER_PASSWORD")).unwrap_or_default();
            return Some(Credentials {
                username: user,
                password: Zeroizing::new(password),
            });
        }
    }
    None
}

/// Credentials of `username` with the password from the environment.
pub fn password_from_environment(username: &str) -> Option<Credentials> {
    PREFIXES.iter().find_map(|p| {
        std::env::var(format!("{p}DOCKER_PASSWORD"))
            .ok()
            .filter(|p| !p.is_empty())
            .map(|password| Credentials {
                username: username.to_string(),
                password: Zeroizing::new(password),
            })
    })
}

/// veil's login file: `$VEIL_CONFIGDIR/docker-config.json`, else
/// `~/.veil/docker-config.json` (Docker's format, mode 0600).
pub fn login_file() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("VEIL_CONFIGDIR").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d).join("docker-config.json"));
    }
    home().map(|h| h.join(".veil/docker-config.json"))
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

/// Docker's own file: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
fn docker_file() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d).join("config.json"));
    }
    home().map(|h| h.join(".docker/config.json"))
}

/// The stored credentials for `registry` (a host, with its port if any): veil's login
/// file first, then Docker's. A file that exists but cannot be understood is an error
/// (credentials silently ignored would show as a puzzling "not authorized").
///
/// `prepare` readies the command of a Docker credential helper before it starts.
pub fn stored(registry: &str, prepare: fn(&mut Command)) -> Result<Option<Credentials>> {
    for file in [login_file(), docker_file()].into_iter().flatten() {
        if let Some(c) = from_config_file(&file, registry, prepare)? {
            return Ok(Some(c));
        }
    }
    Ok(None)
}

/// Reads a Docker-format config file; `None` when it does not exist or has nothing
/// for `registry`.
fn from_config_file(
    path: &Path,
    registry: &str,
    prepare: fn(&mut Command),
) -> Result<Option<Credentials>> {
    let text = match std::fs::read(path) {
        Ok(t) => Zeroizing::new(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(RegistryError::io("reading", path, e)),
    };
    let bad = |why: String| RegistryError::Credentials {
        path: path.to_path_buf(),
        why,
    };
    let config: Value =
        serde_json::from_slice(&text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    // A credential helper for this registry, or for all of them.
    let helper = config
        .get("credHelpers")
        .and_then(|h| h.as_object())
        .and_then(|h| h.iter().find(|(k, _)| same_registry(k, registry)))
        .and_then(|(_, v)| v.as_str())
        .or_else(|| config.get("credsStore").and_then(|s| s.as_str()));
    if let Some(entry) = config
        .get("auths")
        .and_then(|a| a.as_object())
        .and_then(|a| a.iter().find(|(k, _)| same_registry(k, registry)))
        .map(|(_, v)| v)
        && let Some(c) = decode_entry(entry).map_err(|w| bad(format!("{registry}: {w}")))?
    {
        return Ok(Some(c));
    }
    match helper {
        Some(h) => from_helper(h, registry, prepare),
        None => Ok(None),
    }
}

/// One `auths` entry: `auth` (base64 of `user:password`) or `username` + `password`.
fn decode_entry(entry: &Value) -> std::result::Result<Option<Credentials>, String> {
    if let Some(a) = entry
        .get("auth")
        .and_then(|a| a.as_str())
        .filter(|a| !a.is_empty())
    {
        let raw = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(a)
                .map_err(|_| "the auth entry is not base64".to_string())?,
        );
        let text = std::str::from_utf8(&raw).map_err(|_| "the auth entry is not text")?;
        let (user, pass) = text
            .split_once(':')
            .ok_or("the auth entry is not user:password")?;
        return Ok(Some(Credentials {
            username: user.to_string(),
            password: Zeroizing::new(pass.to_string()),
        }));
    }
    match (
        entry.get("username").and_then(|u| u.as_str()),
        entry.get("password").and_then(|p| p.as_str()),
    ) {
        (Some(u), Some(p)) => Ok(Some(Credentials {
            username: u.to_string(),
            password: Zeroizing::new(p.to_string()),
        })),
        _ => Ok(None),
    }
}

/// Asks `docker-credential-HELPER get` for the registry's credentials. A helper that
/// is not installed, or knows nothing of the registry, gives none.
fn from_helper(
    helper: &str,
    registry: &str,
    prepare: fn(&mut Command),
) -> Result<Option<Credentials>> {
    if helper.is_empty()
        || !helper
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return Ok(None);
    }
    let mut cmd = Command::new(format!("docker-credential-{helper}"));
    cmd.arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    prepare(&mut cmd);
    let Ok(mut child) = cmd.spawn() else {
        return Ok(None);
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(registry.as_bytes());
    }
    // A helper gets HELPER_DEADLINE and HELPER_OUTPUT bytes; one that hangs is killed.
    let mut stdout = child.stdout.take();
    let reader = std::thread::spawn(move || {
        let mut out = Zeroizing::new(Vec::new());
        if let Some(s) = stdout.as_mut() {
            use std::io::Read;
            let _ = s.take(HELPER_OUTPUT as u64 + 1).read_to_end(&mut out);
        }
        out
    });
    let start = std::time::Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if start.elapsed() < HELPER_DEADLINE => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let stdout = reader.join().unwrap_or_default();
    if !status.is_some_and(|s| s.success()) || stdout.len() > HELPER_OUTPUT {
        return Ok(None);
    }
    let v: Value = match serde_json::from_slice(&stdout) {
        Ok(v) => v,
        Err(_) => return Ok(None),
    };
    match (
        v.get("Username").and_then(|u| u.as_str()),
        v.get("Secret").and_then(|s| s.as_str()),
    ) {
        (Some(u), Some(s)) => Ok(Some(Credentials {
            username: u.to_string(),
            password: Zeroizing::new(s.to_string()),
        })),
        _ => Ok(None),
    }
}

/// How long a credential helper may take, and how much it may print.
const HELPER_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);
const HELPER_OUTPUT: usize = 64 << 10;

/// Whether a config file's key names `registry`: keys may carry a scheme and a path
/// (`https://index.docker.io/v1/`), and Docker Hub goes by several names.
fn same_registry(key: &str, registry: &str) -> bool {
    let host = |s: &str| -> String {
        let s = s
            .strip_prefix("https://")
            .or_else(|| s.strip_prefix("http://"))
            .unwrap_or(s);
        let s = s.split('/').next().unwrap_or(s).to_ascii_lowercase();
        match s.as_str() {
            "index.docker.io" | "registry-1.docker.io" | "docker.io" => "docker.io".into(),
            _ => s,
        }
    };
    host(key) == host(registry)
}

/// Saves credentials for `registry` in veil's login file (created 0600; other
/// registries' entries are kept).
pub fn save(registry: &str, creds: &Credentials) -> Result<PathBuf> {
    let path = login_file().ok_or_else(|| RegistryError::Setup("HOME is not set".into()))?;
    let mut config = read_login_file(&path)?;
    let auth = Zeroizing::new(format!("{}:{}", creds.username, creds.password.as_str()));
    let encoded = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(auth.as_bytes()));
    auths(&mut config).insert(
        registry.to_string(),
        serde_json::json!({ "auth": encoded.as_str() }),
    );
    write_login_file(&path, &config)?;
    Ok(path)
}

/// Removes `registry` from veil's login file; false when it was not there.
pub fn forget(registry: &str) -> Result<bool> {
    let Some(path) = login_file() else {
        return Ok(false);
    };
    let mut config = read_login_file(&path)?;
    let a = auths(&mut config);
    let keys: Vec<String> = a
        .keys()
        .filter(|k| same_registry(k, registry))
        .cloned()
        .collect();
    if keys.is_empty() {
        return Ok(false);
    }
    for k in keys {
        a.remove(&k);
    }
    write_login_file(&path, &config)?;
    Ok(true)
}

fn read_login_file(path: &Path) -> Result<Value> {
    match std::fs::read(path) {
        Ok(t) => serde_json::from_slice(&t).map_err(|e| RegistryError::Credentials {
            path: path.to_path_buf(),
            why: format!("not valid JSON: {e}"),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(serde_json::json!({})),
        Err(e) => Err(RegistryError::io("reading", path, e)),
    }
}

fn auths(config: &mut Value) -> &mut serde_json::Map<String, Value> {
    if !config.is_object() {
        *config = serde_json::json!({});
    }
    let obj = config.as_object_mut().expect("made an object above");
    let a = obj
        .entry("auths")
        .or_insert_with(|| Value::Object(Default::default()));
    if !a.is_object() {
        *a = Value::Object(Default::default());
    }
    a.as_object_mut().expect("made an object above")
}

fn write_login_file(path: &Path, config: &Value) -> Result<()> {
    let dir = crate::fsutil::parent_dir(path);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| RegistryError::io("creating", dir, e))?;
    let text = Zeroizing::new(serde_json::to_vec_pretty(config).expect("JSON values serialise"));
    crate::fsutil::write_atomic_mode(path, 0o600, |w| w.write_all(&text))
        .map_err(|e| RegistryError::io("writing", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_config_entries_in_both_forms_and_hub_aliases() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("config.json");
        std::fs::write(
            &f,
            r#"{"auths":{"https://index.docker.io/v1/":{"auth":"YW5uOnMzY3I6dA=="},
                "127.0.0.1:5000":{"username":"bob","password":"pw"}}}"#,
        )
        .unwrap();
        let c = from_config_file(&f, "docker.io", |_| {}).unwrap().unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.as_str()),
            ("ann", "s3cr:t")
        );
        let c = from_config_file(&f, "127.0.0.1:5000", |_| {})
            .unwrap()
            .unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("bob", "pw"));
        assert!(
            from_config_file(&f, "127.0.0.1:5001", |_| {})
                .unwrap()
                .is_none()
        );
        std::fs::write(&f, "{not json").unwrap();
        assert!(
            from_config_file(&f, "x", |_| {})
                .unwrap_err()
                .to_string()
                .contains("not valid JSON")
        );
        std::fs::write(&f, r#"{"auths":{"x":{"auth":"@@@"}}}"#).unwrap();
        assert!(
            from_config_file(&f, "x", |_| {})
                .unwrap_err()
                .to_string()
                .contains("not base64")
        );
    }
}
