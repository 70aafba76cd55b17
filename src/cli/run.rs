//! `veil run | exec | shell | test`: the container actions, with Apptainer's flags.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::launch::{self, Action, LaunchSpec, Options, RootSource, binds, env};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Bind a host path: src[:dst[:ro|rw]], comma-separated or repeated (also APPTAINER_BIND / SINGULARITY_BIND / VEIL_BIND)
    #[arg(short = 'B', long = "bind", value_name = "SPEC")]
    bind: Vec<String>,
    /// Use minimal /dev and empty /tmp, /var/tmp and home instead of the host's
    #[arg(short = 'c', long)]
    contain: bool,
    /// --contain plus --cleanenv, a PID namespace and an IPC namespace
    #[arg(short = 'C', long)]
    containall: bool,
    /// Do not mount the home directory
    #[arg(long)]
    no_home: bool,
    /// Home directory: src[:dst] (default: your home, at the same path)
    #[arg(short = 'H', long, value_name = "SPEC")]
    home: Option<String>,
    /// Initial working directory inside the container
    #[arg(long, value_name = "DIR")]
    pwd: Option<PathBuf>,
    /// Do not pass the host environment (except TERM, LANG, LC_*, TZ, DISPLAY)
    #[arg(short = 'e', long)]
    cleanenv: bool,
    /// Set variables: NAME=VALUE, comma-separated or repeated
    #[arg(long = "env", value_name = "NAME=VALUE")]
    env: Vec<String>,
    /// Read NAME=VALUE lines from a file
    #[arg(long, value_name = "FILE")]
    env_file: Vec<PathBuf>,
    /// Let the container write to its root, into memory that vanishes at exit
    #[arg(long)]
    writable_tmpfs: bool,
    /// Run in a new PID namespace (a private /proc)
    #[arg(short = 'p', long)]
    pid: bool,
    /// Run in a new IPC namespace
    #[arg(short = 'i', long)]
    ipc: bool,
    /// Run in a new UTS namespace (own hostname)
    #[arg(long)]
    uts: bool,
    /// Hostname inside the container (implies --uts)
    #[arg(long)]
    hostname: Option<String>,
    /// Be root inside the container (uid 0, mapped to you)
    #[arg(short = 'f', long)]
    fakeroot: bool,
    /// Serve the image with FUSE even when running as root (instead of a loop device)
    #[arg(long)]
    fuse: bool,
    /// Refuse to run a SIF that is unsigned, tampered with, or signed by a key not in your keyrings
    #[arg(long)]
    verify: bool,
    /// Refuse to run a SIF unless its signatures satisfy this policy file (see docs/sign.md; also VEIL_POLICY)
    #[arg(long, value_name = "FILE", env = "VEIL_POLICY")]
    policy: Option<PathBuf>,
    #[command(flatten)]
    keys: super::encryption::EncryptionArgs,
    /// Refuse to run an image that is not encrypted
    #[arg(long)]
    require_encrypted: bool,
    /// The image: a SIF file, a squashfs file, or a sandbox directory
    image: String,
    /// Arguments
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<OsString>,
}

#[derive(Debug, Args)]
pub struct ShellArgs {
    /// The shell to start (default: /bin/bash if present, else /bin/sh)
    #[arg(short = 's', long)]
    shell: Option<String>,
    #[command(flatten)]
    run: RunArgs,
}

fn env_var(names: &[&str]) -> Option<String> {
    names
        .iter()
        .find_map(|n| std::env::var(n).ok())
        .filter(|v| !v.is_empty())
}

fn options(a: &RunArgs, shell: Option<String>) -> Result<Options> {
    let mut bind_specs = Vec::new();
    // Environment binds first, as the peers: they apply before the command line's.
    if let Some(list) = env_var(&["VEIL_BIND", "APPTAINER_BIND", "SINGULARITY_BIND"]) {
        bind_specs.extend(binds::parse_list(&list)?);
    }
    for b in &a.bind {
        bind_specs.extend(binds::parse_list(b)?);
    }
    let mut env_pairs = Vec::new();
    for f in &a.env_file {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("--env-file {}", f.display()))?;
        env_pairs.extend(env::parse_env_file(&text, &f.display().to_string())?);
    }
    for e in &a.env {
        env_pairs.extend(env::parse_env_flag(e)?);
    }
    let home = match &a.home {
        None => None,
        Some(spec) => {
            let (src, dst) = spec
                .split_once(':')
                .unwrap_or((spec.as_str(), spec.as_str()));
            if !dst.starts_with('/') {
                bail!("--home {spec:?}: the destination must be an absolute path");
            }
            Some((PathBuf::from(src), PathBuf::from(dst)))
        }
    };
    Ok(Options {
        binds: bind_specs,
        contain: a.contain || a.containall,
        cleanenv: a.cleanenv || a.containall,
        no_home: a.no_home,
        home,
        pwd: a.pwd.clone(),
        env: env_pairs,
        writable_tmpfs: a.writable_tmpfs,
        pid: a.pid || a.containall,
        ipc: a.ipc || a.containall,
        uts: a.uts || a.hostname.is_some(),
        hostname: a.hostname.clone(),
        fakeroot: a.fakeroot,
        shell,
        fuse: a.fuse,
    })
}

/// The policy of `--verify` / `--policy`, if either was given.
fn signature_policy(a: &RunArgs) -> Result<Option<crate::sign::policy::Policy>> {
    use crate::sign::{keyring::KeyStore, policy};
    if !a.verify && a.policy.is_none() {
        return Ok(None);
    }
    let store = KeyStore::from_env()?;
    Ok(Some(match &a.policy {
        Some(file) => policy::Policy::load(file, Some(&store))?,
        None => policy::Policy::signed_by_known_key(store.verification_certs()?),
    }))
}

/// Opens the image the user named, once. A file is opened a single time: its
/// signatures are checked, its partitions read and (as real root) its loop device
/// attached through that one descriptor, so a file moved over the path in between
/// is never run unverified.
fn open_image(a: &RunArgs) -> Result<crate::image::Image> {
    use crate::image::{Image, Root};
    let path = std::path::Path::new(&a.image);
    let policy = signature_policy(a)?;
    let meta = std::fs::metadata(path).with_context(|| a.image.clone())?;
    if meta.is_dir() {
        if policy.is_some() {
            bail!(
                "{}: --verify and --policy need a SIF image (only SIF files carry signatures)",
                a.image
            );
        }
        return Ok(Image::Plain(Root::Directory(path.to_path_buf())));
    }
    let file = std::fs::File::open(path).with_context(|| a.image.clone())?;
    if launch::real_root() {
        crate::image::check_root_may_trust(&file, &a.image)?;
    }
    open_verified(file, &a.image, policy.as_ref())
}

/// The signature check (when there is a policy) and the opening of the image, both
/// on `file`.
fn open_verified(
    file: std::fs::File,
    name: &str,
    policy: Option<&crate::sign::policy::Policy>,
) -> Result<crate::image::Image> {
    use crate::sign::policy;
    if let Some(pol) = policy {
        let Ok(verdict) = policy::check_file(&file, pol) else {
            bail!(
                "{name}: --verify and --policy need a SIF image (only SIF files carry signatures)"
            );
        };
        if let policy::Verdict::Refused { reason } = verdict {
            bail!("{name}: image prohibited by policy: {reason}");
        }
    }
    Ok(crate::image::open_file(file, name)?)
}

/// For an encrypted image, unlocks it with the key the user gave. Every key error
/// surfaces here, before any mount exists.
fn root_source(a: &RunArgs, image: crate::image::Image) -> Result<RootSource> {
    use crate::crypt::source::{self, HOW_TO_GIVE_A_KEY};
    use crate::image::Image;
    let flags = a.keys.flags();
    let key = source::select_from_env(&flags);
    let root = match image {
        Image::Plain(root) => {
            if a.require_encrypted {
                bail!(
                    "{}: the image is not encrypted, and --require-encrypted was given",
                    a.image
                );
            }
            // A key flag for a plain image is probably a mistake worth a word; the
            // environment variables may be set for other images, so they stay quiet.
            if flags.any()
                && let Some(k) = &key
            {
                eprintln!(
                    "WARNING: {}: the image is not encrypted; ignoring {}",
                    a.image,
                    k.describe()
                );
            }
            root.into()
        }
        Image::Encrypted(enc) => {
            let Some(key) = key else {
                let kind = if enc.message().is_some() {
                    "for an RSA key"
                } else {
                    "with a passphrase"
                };
                bail!(
                    "{}: the image is encrypted {kind}; {HOW_TO_GIVE_A_KEY}",
                    a.image
                );
            };
            // Key material is about to enter this process: it enters its user
            // namespace first (writing id maps needs a dumpable process) and is
            // non-dumpable from then on.
            launch::userns::enter_before_secrets(a.fakeroot)?;
            let pass = key
                .for_run(enc.message())
                .map_err(|e| anyhow::anyhow!("{}: {e}", a.image))?;
            launch::debug_time("key material read");
            let unlocked = match (*enc).unlock(&pass, &crate::image::kdf::unlock_options()) {
                Ok(u) => u,
                // Say which source the failed key came from, and when a passphrase
                // was given for an image made for an RSA key, what it needs instead.
                Err(crate::image::ImageError::WrongKey { name, for_rsa }) if !key.is_pem() => {
                    if for_rsa {
                        bail!(
                            "{name}: the image was encrypted for an RSA key, and the passphrase \
                             ({}) opens none of its keyslots: give the private key with --pem-path \
                             or --pem-fd (or VEIL_ENCRYPTION_PEM_PATH / _PEM_DATA)",
                            key.describe()
                        );
                    }
                    bail!(
                        "{name}: wrong passphrase ({}): it opens no keyslot of the image",
                        key.describe()
                    );
                }
                Err(e) => return Err(e.into()),
            };
            launch::debug_time("image unlocked");
            let crate::image::Root::Squashfs { fs, .. } = unlocked.root else {
                bail!("{}: an encrypted partition holds a directory", a.image);
            };
            // Only real root can hand the decryption to dm-crypt: otherwise the
            // second copy of the volume key (for its table) goes now.
            let crypt = launch::real_root().then(|| launch::KernelCrypt {
                volume: unlocked.volume,
                mapping: unlocked.mapping,
            });
            RootSource::Squashfs {
                fs,
                region: None,
                crypt,
            }
        }
    };
    // Secrets given in the environment leave it (and the launcher's
    // /proc/PID/environ) whether or not they were used.
    crate::crypt::environ::scrub();
    Ok(root)
}

pub fn run(action: Action, a: RunArgs, shell: Option<String>) -> Result<ExitCode> {
    launch::debug_time("arguments parsed");
    let options = options(&a, shell)?;
    a.keys.apply_kdf_limit();
    let image = open_image(&a)?;
    let spec = LaunchSpec {
        action,
        image_name: a.image.clone(),
        root: {
            let r = root_source(&a, image)?;
            launch::debug_time("image opened");
            r
        },
        args: a.args,
        options,
    };
    let code = launch::launch(spec)?;
    launch::debug_time("launcher done");
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

pub fn shell(a: ShellArgs) -> Result<ExitCode> {
    run(Action::Shell, a.run, a.shell)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::{keyring, policy::Policy};
    use std::path::Path;

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
