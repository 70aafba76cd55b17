//! Opening the image once, and the signature policy it must satisfy.

#![forbid(unsafe_code)]

use std::fs::File;
use std::path::Path;

use super::error::{Result, RunnerError};
use crate::image::{self, Image, Root};
use crate::sif::SifError;
use crate::sign::SignError;
use crate::sign::keyring::KeyStore;
use crate::sign::policy::{self, Policy, Verdict};

/// The policy of `--verify` (`verify`) or `--policy` (`file`), if either was given.
pub fn signature_policy(verify: bool, file: Option<&Path>) -> Result<Option<Policy>> {
    if !verify && file.is_none() {
        return Ok(None);
    }
    let store = KeyStore::from_env()?;
    Ok(Some(match file {
        Some(file) => Policy::load(file, Some(&store))?,
        None => Policy::signed_by_known_key(store.verification_certs()?),
    }))
}

/// Opens the image the user named, once. A file is opened a single time: its
/// signatures are checked, its partitions read and (as real root) its loop device
/// attached through that one descriptor, so a file moved over the path in between
/// is never run unverified.
pub fn open_image(name: &str, policy: Option<&Policy>) -> Result<Image> {
    let path = Path::new(name);
    let open_err = |err| RunnerError::Open {
        name: name.to_string(),
        err,
    };
    // Opened once, without blocking: a FIFO put at the path cannot hang the run.
    let file = crate::fsutil::open_nonblocking(path).map_err(open_err)?;
    let meta = file.metadata().map_err(open_err)?;
    if meta.is_dir() {
        if policy.is_some() {
            return Err(RunnerError::NeedsSif(name.to_string()));
        }
        return Ok(Image::Plain(Root::Directory(path.to_path_buf())));
    }
    if !meta.is_file() {
        return Err(open_err(std::io::Error::other(
            "not a regular file or a directory",
        )));
    }
    if crate::support::userns::real_root() {
        image::check_root_may_trust(&file, name)?;
    }
    open_verified(file, name, policy)
}

/// The signature check (when there is a policy) and the opening of the image, both
/// on `file`.
pub fn open_verified(file: File, name: &str, policy: Option<&Policy>) -> Result<Image> {
    if let Some(pol) = policy {
        let verdict = match policy::check_file(&file, pol) {
            Ok(v) => v,
            Err(SignError::Sif(SifError::NotSif(_))) => {
                return Err(RunnerError::NeedsSif(name.to_string()));
            }
            Err(err) => {
                return Err(RunnerError::Verify {
                    name: name.to_string(),
                    err,
                });
            }
        };
        if let Verdict::Refused { reason } = verdict {
            return Err(RunnerError::Prohibited {
                name: name.to_string(),
                reason,
            });
        }
    }
    Ok(image::open_file(file, name)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::{keyring, policy::Policy};
    use std::path::{Path, PathBuf};

    /// A SIF whose squashfs holds /data/hello.txt with `text`; `None` without
    /// mksquashfs.
    fn sif_with(dir: &Path, name: &str, text: &str) -> Option<PathBuf> {
        use crate::sif::*;
        let tree = dir.join(format!("{name}.tree"));
        std::fs::create_dir_all(tree.join("data")).unwrap();
        std::fs::write(tree.join("data/hello.txt"), text).unwrap();
        let sqfs = dir.join(format!("{name}.sqfs"));
        let st = std::process::Command::new("mksquashfs")
            .arg(&tree)
            .arg(&sqfs)
            .args(["-noappend", "-quiet", "-all-root", "-no-progress"])
            .stdout(std::process::Stdio::null())
            .status()
            .ok()?;
        assert!(st.success());
        let mut part = NewObject::new(DataType::Partition, ObjectData::Path(&sqfs));
        part.group = 1;
        part.extra = Extra::Partition {
            fs: FsType::Squash,
            part: PartType::PrimSys,
            arch: Arch::host(),
        };
        let sif = dir.join(format!("{name}.sif"));
        let opts = CreateOptions {
            launch_script: DEFAULT_LAUNCH_SCRIPT.into(),
            ..Default::default()
        };
        create(&sif, &opts, vec![part]).unwrap();
        Some(sif)
    }

    /// /data/hello.txt of the image, and the inode of the file its loop device
    /// (real root) would be attached to.
    fn hello(image: crate::image::Image) -> (String, u64) {
        use std::os::unix::fs::MetadataExt;
        let crate::image::Image::Plain(crate::image::Root::Squashfs {
            fs,
            region: Some(region),
        }) = image
        else {
            panic!("not a plain squashfs image");
        };
        (
            crate::image::read_small_file(&fs, "/data/hello.txt").unwrap(),
            region.file.metadata().unwrap().ino(),
        )
    }

    /// The path is swapped for an unsigned file after the image was opened (and
    /// before it is verified and read): what is verified and what is served are both
    /// the file that was opened, never the one the path names by then.
    #[test]
    fn the_verified_file_is_the_one_served_when_the_path_is_swapped() {
        let dir = tempfile::tempdir().unwrap();
        let Some(signed) = sif_with(dir.path(), "signed", "verified bytes\n") else {
            eprintln!("SKIP: mksquashfs is not installed (apt-get install squashfs-tools)");
            return;
        };
        let evil = sif_with(dir.path(), "evil", "swapped bytes\n").unwrap();
        let cert = keyring::generate(
            &keyring::NewKey {
                name: "Signer".into(),
                email: String::new(),
                comment: String::new(),
                kind: keyring::KeyKind::Ed25519,
            },
            &crate::sign::passphrase::Passphrase::new(String::new()),
        )
        .unwrap();
        let pair = keyring::signing_keypair(&cert, || unreachable!()).unwrap();
        let fpr = crate::sign::pgp::fpr20(&cert.fingerprint()).unwrap();
        crate::sign::sign_image(&signed, &pair, fpr, &crate::sign::Selection::AllGroups).unwrap();
        let policy = Policy::signed_by_known_key(vec![cert]);
        let name = signed.display().to_string();

        let file = std::fs::File::open(&signed).unwrap();
        let ino = {
            use std::os::unix::fs::MetadataExt;
            file.metadata().unwrap().ino()
        };
        std::fs::rename(&evil, &signed).unwrap();
        let image = open_verified(file, &name, Some(&policy)).unwrap();
        assert_eq!(hello(image), ("verified bytes\n".to_string(), ino));

        // The path names the unsigned file now: opened anew, it is refused.
        let err = open_verified(std::fs::File::open(&signed).unwrap(), &name, Some(&policy))
            .err()
            .expect("the unsigned file passed verification")
            .to_string();
        assert!(err.contains("image prohibited by policy"), "{err}");
        // Without a policy it is served, from its own bytes.
        let image = open_verified(std::fs::File::open(&signed).unwrap(), &name, None).unwrap();
        assert_eq!(hello(image).0, "swapped bytes\n");
    }
}
