//! `--bind` / `APPTAINER_BIND` specifications: `src[:dst[:ro|rw]]`, comma-separated.

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
