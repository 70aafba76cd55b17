//! Where a pull may write.

#![forbid(unsafe_code)]

use std::path::Path;

use super::error::{RegistryError, Result};

/// A destination a download can end in: a file name in an existing directory, not a
/// directory, and not an existing file unless `force`.
pub fn check(dest: &Path, force: bool) -> Result<()> {
    let bad = |why: &str| RegistryError::Content {
        reference: dest.display().to_string(),
        why: why.into(),
    };
    if dest.as_os_str().is_empty() || dest.file_name().is_none() {
        return Err(bad("not a file name"));
    }
    match dest.symlink_metadata() {
        Ok(m) if m.is_dir() => return Err(bad("is a directory")),
        Ok(_) if !force => return Err(RegistryError::Exists(dest.to_path_buf())),
        _ => {}
    }
    let dir = crate::fsutil::parent_dir(dest);
    if !dir.is_dir() {
        return Err(RegistryError::Content {
            reference: dir.display().to_string(),
            why: "no such directory".into(),
        });
    }
    Ok(())
}
