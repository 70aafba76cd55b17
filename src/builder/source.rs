//! The first step of a build: what the source argument names (a definition file, a
//! sandbox directory, a SIF or squashfs image, an archive), and the definition file's
//! own source (`Bootstrap:` and `From:`), checked against `Fingerprints:`.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

use super::archive;
use super::error::{BuildError, Result};
use super::recipe::{self, Bootstrap, Recipe};
use crate::crypt::source::KeySource;
use crate::registry::{self, ImageUri, Transport};

/// How to give the key of an encrypted source image.
pub const SOURCE_KEY_HINT: &str = "give its key with --source-pem-path PRIVATE.pem or --source-passphrase-file FILE (or --source-passphrase)";

/// A resolved source.
pub enum Input {
    Dir(PathBuf),
    /// A SIF or plain squashfs file, opened once: the descriptor that `Fingerprints:`
    /// verified is the one the build reads, whatever the path names by then.
    Image(PathBuf, std::fs::File),
    /// A rootfs tarball, docker-archive or oci-archive.
    Archive(PathBuf, archive::Kind),
    /// A container image in a registry (`docker://`), pulled while the tree is staged.
    Registry(Box<ImageUri>),
    Scratch,
}

/// A parsed definition file and its name as given.
pub type Definition = (Recipe, String);

/// The largest file taken for a definition file.
const MAX_DEFINITION: u64 = 4 << 20;

fn head(path: &Path) -> Vec<u8> {
    use std::io::Read;
    let mut b = vec![0u8; 64];
    let n = crate::fsutil::open_nonblocking(path)
        .and_then(|mut f| f.read(&mut b))
        .unwrap_or(0);
    b.truncate(n);
    b
}

fn is_image(path: &Path) -> bool {
    let h = head(path);
    (h.len() >= 41 && &h[32..41] == b"SIF_MAGIC") || h.starts_with(b"hsqs")
}

/// Whether building from `source` runs a definition file's `%post` or `%test` inside
/// the image: what decides, before anything else happens, whether the build moves into
/// a user namespace with subordinate ids. A source that does not parse says no here;
/// the build itself reports why.
pub fn runs_scripts_in_image(source: &str, build_args: &[(String, String)], notest: bool) -> bool {
    let p = Path::new(source);
    let Ok(md) = std::fs::metadata(p) else {
        return false;
    };
    if !md.is_file() || md.len() > MAX_DEFINITION || is_image(p) || archive::is_tar(p) {
        return false;
    }
    let Ok(text) = std::fs::read_to_string(p) else {
        return false;
    };
    recipe::parse(source, &text, build_args)
        .is_ok_and(|r| r.post.is_some() || (r.test.is_some() && !notest))
}

/// Resolves the source argument: a definition file is parsed, anything else is used
/// as is.
pub fn resolve(
    source: &str,
    build_args: &[(String, String)],
    reg: &registry::Options,
) -> Result<(Input, Option<Definition>)> {
    if ImageUri::is_uri(source) {
        let uri = ImageUri::parse(source)?;
        return Ok((from_registry(uri, reg)?, None));
    }
    for (prefix, kind) in [
        ("docker-archive:", archive::Kind::DockerArchive),
        ("oci-archive:", archive::Kind::OciArchive),
    ] {
        if let Some(rest) = source.strip_prefix(prefix) {
            let p = Path::new(rest);
            std::fs::metadata(p).map_err(|e| BuildError::io(p, e))?;
            return Ok((Input::Archive(p.to_path_buf(), kind), None));
        }
    }
    let p = Path::new(source);
    let md = std::fs::metadata(p).map_err(|e| BuildError::io(p, e))?;
    if md.is_dir() {
        return Ok((Input::Dir(p.to_path_buf()), None));
    }
    if !md.is_file() {
        return Err(BuildError::source(p, "not a regular file or a directory"));
    }
    if is_image(p) {
        let file = crate::fsutil::open_nonblocking(p).map_err(|e| BuildError::io(p, e))?;
        return Ok((Input::Image(p.to_path_buf(), file), None));
    }
    if archive::is_tar(p) {
        let kind = archive::detect(p)?;
        return Ok((Input::Archive(p.to_path_buf(), kind), None));
    }
    let not_a_source = || BuildError::source(p, "not a directory, an image or a definition file");
    if md.len() > MAX_DEFINITION {
        return Err(not_a_source());
    }
    let text = std::fs::read(p).map_err(|e| BuildError::io(p, e))?;
    let text = String::from_utf8(text).map_err(|_| not_a_source())?;
    let name = p.display().to_string();
    let r = recipe::parse(&name, &text, build_args)?;
    let input = bootstrap(&r, &name, p, reg)?;
    Ok((input, Some((r, name))))
}

/// A registry source: a container image is pulled while the tree is staged; a SIF
/// (oras://) is pulled into the cache now and read like a local image, through the
/// one descriptor opened here.
fn from_registry(uri: ImageUri, reg: &registry::Options) -> Result<Input> {
    match uri.transport {
        Transport::Docker => Ok(Input::Registry(Box::new(uri))),
        Transport::Oras => {
            let (path, file) = registry::fetch_sif(&uri, reg)?;
            Ok(Input::Image(path, file))
        }
    }
}

/// The source a definition file's `Bootstrap:` and `From:` name.
fn bootstrap(r: &Recipe, name: &str, def: &Path, reg: &registry::Options) -> Result<Input> {
    let from_err = |from: &str, e: std::io::Error| BuildError::Recipe {
        file: name.into(),
        line: r.from_line,
        msg: format!("From: {from}: {e}"),
    };
    Ok(match r.bootstrap {
        Bootstrap::Scratch => Input::Scratch,
        Bootstrap::LocalImage => {
            let from = r.from.clone().unwrap_or_default();
            let fp = beside(def, &from);
            let file = crate::fsutil::open_nonblocking(&fp).map_err(|e| from_err(&from, e))?;
            let is_dir = file.metadata().map_err(|e| from_err(&from, e))?.is_dir();
            if !r.fingerprints.is_empty() {
                check_fingerprints(r, name, &fp, &file, is_dir)?;
            }
            if is_dir {
                Input::Dir(fp)
            } else {
                Input::Image(fp, file)
            }
        }
        Bootstrap::Docker | Bootstrap::Oras => {
            let from = r.from.clone().unwrap_or_default();
            let scheme = if r.bootstrap == Bootstrap::Docker {
                "docker"
            } else {
                "oras"
            };
            let text = if ImageUri::is_uri(&from) {
                if !from.starts_with(&format!("{scheme}://")) {
                    return Err(BuildError::Recipe {
                        file: name.into(),
                        line: r.from_line,
                        msg: format!("From: {from}: Bootstrap: {scheme} takes {scheme}:// images"),
                    });
                }
                from.clone()
            } else {
                format!("{scheme}://{from}")
            };
            let uri = ImageUri::parse(&text).map_err(|e| BuildError::Recipe {
                file: name.into(),
                line: r.from_line,
                msg: format!("From: {e}"),
            })?;
            let input = from_registry(uri, reg)?;
            if !r.fingerprints.is_empty() {
                match &input {
                    Input::Image(p, file) => check_fingerprints(r, name, p, file, false)?,
                    _ => {
                        return Err(BuildError::Recipe {
                            file: name.into(),
                            line: r.fingerprints_line,
                            msg: "Fingerprints: only SIF images carry signatures (Bootstrap: oras or localimage)".into(),
                        });
                    }
                }
            }
            input
        }
        Bootstrap::DockerArchive | Bootstrap::OciArchive => {
            let from = r.from.clone().unwrap_or_default();
            let from = from
                .strip_prefix(&format!("{}:", r.bootstrap.name()))
                .unwrap_or(&from)
                .to_string();
            let fp = beside(def, &from);
            std::fs::metadata(&fp).map_err(|e| from_err(&from, e))?;
            let kind = if r.bootstrap == Bootstrap::DockerArchive {
                archive::Kind::DockerArchive
            } else {
                archive::Kind::OciArchive
            };
            Input::Archive(fp, kind)
        }
    })
}

/// `from` as given, or, when that does not exist and is relative, relative to the
/// definition file's directory.
fn beside(def: &Path, from: &str) -> PathBuf {
    let fp = PathBuf::from(from);
    if !fp.exists() && fp.is_relative() {
        let alt = crate::fsutil::parent_dir(def).join(from);
        if alt.exists() {
            return alt;
        }
    }
    fp
}

/// `Fingerprints:`: the base image must be signed by one of the listed keys.
fn check_fingerprints(
    r: &Recipe,
    name: &str,
    fp: &Path,
    file: &std::fs::File,
    is_dir: bool,
) -> Result<()> {
    let e = |msg: String| BuildError::Recipe {
        file: name.into(),
        line: r.fingerprints_line,
        msg,
    };
    if is_dir {
        return Err(e(
            "Fingerprints: a sandbox directory cannot be signed".into()
        ));
    }
    let certs = crate::sign::keyring::KeyStore::from_env()
        .and_then(|k| k.verification_certs())
        .map_err(|err| e(format!("Fingerprints: reading the keyrings: {err}")))?;
    match crate::sign::check_fingerprints(file, &r.fingerprints, &certs) {
        Ok(v) if v.is_allowed() => Ok(()),
        Ok(crate::sign::policy::Verdict::Refused { reason }) => {
            Err(e(format!("Fingerprints: {}: {reason}", fp.display())))
        }
        Ok(_) => unreachable!("allowed is handled above"),
        // These already name the header.
        Err(
            err @ (crate::sign::SignError::BadFingerprint { .. }
            | crate::sign::SignError::NoFingerprints),
        ) => Err(e(err.to_string())),
        Err(err) => Err(e(format!("Fingerprints: {err}"))),
    }
}

/// The squashfs reader of an image source (plain SIF, encrypted SIF with a key, or a
/// bare squashfs).
pub fn open_image(
    path: &Path,
    file: &std::fs::File,
    key: Option<&KeySource>,
) -> Result<std::sync::Arc<veil_fusefs::squashfs::Squashfs<crate::image::Source>>> {
    use crate::image::{Image, Root};
    let bad = |why: String| BuildError::source_image(path, why);
    let file = file.try_clone().map_err(|e| BuildError::io(path, e))?;
    match crate::image::open_file(file, &path.display().to_string())? {
        Image::Plain(Root::Squashfs { fs, .. }) => Ok(fs),
        Image::Plain(Root::Directory(_)) => Err(bad("is a directory".into())),
        Image::Encrypted(e) => {
            let Some(key) = key else {
                return Err(bad(format!(
                    "the source image is encrypted; {SOURCE_KEY_HINT}"
                )));
            };
            let pass = key
                .for_run(e.message())
                .map_err(|err| bad(err.to_string()))?;
            match e.unlock(&pass, &crate::image::kdf::unlock_options())?.root {
                Root::Squashfs { fs, .. } => Ok(fs),
                Root::Directory(_) => Err(bad("unlocked to a directory".into())),
            }
        }
    }
}
