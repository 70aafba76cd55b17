//! `--bind` / `APPTAINER_BIND` specifications (`src[:dst[:ro|rw]]`, comma-separated),
//! `--mount` ones (`type=bind,source=…,destination=…[,ro]`), and `--no-mount` lists.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

use super::error::{LaunchError, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindSpec {
    /// Host path, canonical (symlinks resolved on the host, where they mean something).
    pub src: PathBuf,
    /// Path inside the container.
    pub dst: PathBuf,
    pub readonly: bool,
}

/// Parses one comma-separated list of bind specifications.
pub fn parse_list(list: &str) -> Result<Vec<BindSpec>> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(parse_one)
        .collect()
}

fn parse_one(spec: &str) -> Result<BindSpec> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (src, dst, opts) = match parts.as_slice() {
        [src] => (*src, *src, None),
        [src, dst] if *dst == "ro" || *dst == "rw" => (*src, *src, Some(*dst)),
        [src, dst] => (*src, *dst, None),
        [src, dst, opts] => (*src, *dst, Some(*opts)),
        _ => {
            return Err(LaunchError::BindSpec(
                spec.into(),
                "expected src[:dst[:ro|rw]]",
            ));
        }
    };
    let readonly = match opts {
        None | Some("rw") => false,
        Some("ro") => true,
        Some(_) => {
            return Err(LaunchError::BindSpec(
                spec.into(),
                "options must be ro or rw",
            ));
        }
    };
    if src.is_empty() || dst.is_empty() {
        return Err(LaunchError::BindSpec(spec.into(), "empty path"));
    }
    if !dst.starts_with('/') {
        return Err(LaunchError::BindSpec(
            spec.into(),
            "the destination must be an absolute path",
        ));
    }
    let src_path = Path::new(src)
        .canonicalize()
        .map_err(|_| LaunchError::BindSource(src.into()))?;
    Ok(BindSpec {
        src: src_path,
        dst: clean(Path::new(dst)),
        readonly,
    })
}

/// Lexically normalises an absolute container path (`//a/./b/` → `/a/b`; `..` is
/// refused by dropping it at the root, since the path is resolved inside the image).
pub fn clean(p: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            std::path::Component::Normal(n) => out.push(n),
            std::path::Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_apptainer_forms() {
        let v = parse_list("/tmp, /etc:/mnt/etc:ro ,/usr:ro,/var:/v:rw").unwrap();
        assert_eq!(
            v[0],
            BindSpec {
                src: "/tmp".into(),
                dst: "/tmp".into(),
                readonly: false
            }
        );
        assert_eq!(
            v[1],
            BindSpec {
                src: "/etc".into(),
                dst: "/mnt/etc".into(),
                readonly: true
            }
        );
        assert_eq!(
            v[2],
            BindSpec {
                src: "/usr".into(),
                dst: "/usr".into(),
                readonly: true
            }
        );
        assert_eq!(
            v[3],
            BindSpec {
                src: "/var".into(),
                dst: "/v".into(),
                readonly: false
            }
        );
        assert!(matches!(
            parse_list("/nonexistent-x"),
            Err(LaunchError::BindSource(_))
        ));
        assert!(matches!(
            parse_list("/tmp:rel"),
            Err(LaunchError::BindSpec(..))
        ));
        assert!(matches!(
            parse_list("/tmp:/x:rx"),
            Err(LaunchError::BindSpec(..))
        ));
        assert!(matches!(
            parse_list("/tmp:/x:ro:y"),
            Err(LaunchError::BindSpec(..))
        ));
        assert_eq!(clean(Path::new("//a/./b/../c/")), PathBuf::from("/a/c"));
        assert_eq!(clean(Path::new("/../../etc")), PathBuf::from("/etc"));
    }
}

/// Parses a `--mount` specification, Docker's form as the peers take it:
/// `type=bind,source=SRC,destination=DST[,readonly]` (also `src`, `dst`, `target`,
/// `ro`, `readonly=true`). A field may be double-quoted (CSV), for paths with commas.
pub fn parse_mount(spec: &str) -> Result<BindSpec> {
    let bad = |why: &'static str| LaunchError::MountSpec(spec.into(), why);
    let (mut kind, mut src, mut dst, mut readonly) = (None, None, None, false);
    let mut seen = std::collections::HashSet::new();
    for field in csv_fields(spec).ok_or_else(|| bad("malformed quotes"))? {
        let (key, value) = match field.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v)),
            None => (field.trim(), None),
        };
        let canonical = match key {
            "source" | "src" => "source",
            "destination" | "dst" | "target" => "destination",
            "readonly" | "ro" => "readonly",
            k => k,
        };
        if !seen.insert(canonical.to_string()) {
            return Err(bad("a field is given twice"));
        }
        match (key, value) {
            ("type", Some(v)) => kind = Some(v.to_string()),
            ("source" | "src", Some(v)) => src = Some(v.to_string()),
            ("destination" | "dst" | "target", Some(v)) => dst = Some(v.to_string()),
            ("readonly" | "ro", None | Some("true" | "1")) => readonly = true,
            ("readonly" | "ro", Some("false" | "0")) => readonly = false,
            ("bind-propagation", Some(_)) => {}
            ("image-src" | "id", Some(_)) => {
                return Err(bad("image mounts (image-src, id) are not supported"));
            }
            _ => {
                return Err(bad(
                    "unknown field; expected type, source, destination, readonly",
                ));
            }
        }
    }
    match kind.as_deref() {
        Some("bind") => {}
        None => return Err(bad("type=bind is required")),
        Some(_) => return Err(bad("only type=bind is supported")),
    }
    let (Some(src), Some(dst)) = (src, dst) else {
        return Err(bad("source and destination are required"));
    };
    if src.is_empty() || dst.is_empty() {
        return Err(bad("empty path"));
    }
    if !dst.starts_with('/') {
        return Err(bad("the destination must be an absolute path"));
    }
    let src_path = Path::new(&src)
        .canonicalize()
        .map_err(|_| LaunchError::BindSource(src.clone()))?;
    Ok(BindSpec {
        src: src_path,
        dst: clean(Path::new(&dst)),
        readonly,
    })
}

/// Comma-separated fields (CSV): a field that starts with a double quote runs to the
/// closing one (`""` inside is a quote) and may hold commas; a quote anywhere else,
/// or text after a closing quote, is malformed (`None`).
fn csv_fields(s: &str) -> Option<Vec<String>> {
    let mut fields = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next()? {
                    '"' if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    '"' => break,
                    c => field.push(c),
                }
            }
            if !matches!(chars.peek(), None | Some(',')) {
                return None;
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                if c == '"' {
                    return None;
                }
                field.push(c);
                chars.next();
            }
        }
        if !field.is_empty() {
            fields.push(field);
        }
        if chars.next().is_none() {
            return Some(fields);
        }
    }
}

/// The default mounts `--no-mount` leaves out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NoMount {
    pub proc: bool,
    pub sys: bool,
    pub dev: bool,
    pub devpts: bool,
    pub tmp: bool,
    pub home: bool,
    pub cwd: bool,
    /// The host files bound by default (/etc/hosts, /etc/localtime,
    /// /etc/resolv.conf): the peers' "bind path" entries.
    pub bind_paths: bool,
    /// Single ones of those, by destination.
    pub paths: Vec<PathBuf>,
}

/// The host files veil binds by default, which `--no-mount PATH` can leave out.
pub const DEFAULT_BIND_PATHS: [&str; 3] = ["/etc/hosts", "/etc/localtime", "/etc/resolv.conf"];

impl NoMount {
    /// Adds a comma-separated `--no-mount` list.
    pub fn add(&mut self, list: &str) -> Result<()> {
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match item {
                "proc" => self.proc = true,
                "sys" => self.sys = true,
                "dev" => self.dev = true,
                "devpts" => self.devpts = true,
                "tmp" => self.tmp = true,
                "home" => self.home = true,
                "cwd" => self.cwd = true,
                "bind-paths" => self.bind_paths = true,
                // The peers' host filesystem mounts are off by default, as veil has none.
                "hostfs" => {}
                p if DEFAULT_BIND_PATHS.contains(&p) => self.paths.push(PathBuf::from(p)),
                _ => return Err(LaunchError::NoMount(item.into())),
            }
        }
        Ok(())
    }

    /// Whether the default bind of host file `dst` is left out.
    pub fn skips_file(&self, dst: &str) -> bool {
        self.bind_paths || self.paths.iter().any(|p| p == Path::new(dst))
    }
}

#[cfg(test)]
mod mount_tests {
    use super::*;

    #[test]
    fn mount_specs_parse_as_docker_writes_them() {
        let tmp = std::env::temp_dir();
        let t = tmp.display();
        let b = parse_mount(&format!("type=bind,source={t},destination=/d,readonly")).unwrap();
        assert_eq!((b.dst.as_path(), b.readonly), (Path::new("/d"), true));
        let b = parse_mount(&format!("type=bind,src={t},dst=/e,ro=false")).unwrap();
        assert!(!b.readonly);
        let b = parse_mount(&format!("type=bind,\"src={t}\",\"target=/a,b\"")).unwrap();
        assert_eq!(b.dst, Path::new("/a,b"));
        for bad in [
            format!("type=volume,src={t},dst=/d"),
            format!("src={t},dst=/d"),
            format!("type=bind,src={t}"),
            format!("type=bind,src={t},dst=rel"),
            format!("type=bind,src={t},src=/etc,dst=/d"),
            format!("type=bind,src={t},dst=/d,readonly,ro=false"),
            format!("type=bind,src={t},dst=/d\"x"),
            format!("type=bind,\"src={t}\"x,dst=/d"),
            format!("type=bind,\"src={t},dst=/d"),
            format!("type=bind,src={t},dst=/d,image-src=/x"),
            format!("type=bind,src={t},dst=/d,bogus=1"),
        ] {
            assert!(parse_mount(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn no_mount_lists() {
        let mut n = NoMount::default();
        n.add("proc, tmp,/etc/hosts,hostfs").unwrap();
        assert!(
            n.proc
                && n.tmp
                && !n.sys
                && n.skips_file("/etc/hosts")
                && !n.skips_file("/etc/localtime")
        );
        n.add("bind-paths").unwrap();
        assert!(n.skips_file("/etc/localtime"));
        assert!(n.add("/etc/passwd").is_err() && n.add("nope").is_err());
    }
}
