//! The run service below the command line: opens the image once, checks it against the
//! signature policy, unlocks an encrypted image, and launches the container. `run`,
//! `exec`, `shell` and `test` call it with a [`RunRequest`]; so can instances.
//!
//! Layers: `cli -> runner -> {launch, registry, sign, image, crypt}`.

pub mod error;
pub mod instance;
mod open;
mod unlock;

use std::ffi::OsString;
use std::path::PathBuf;

use crate::crypt::source::KeyFlags;
use crate::launch::{self, Action, LaunchSpec};

pub use error::{Result, RunnerError};
pub use open::{open_image, open_verified, signature_policy};
pub use unlock::root_source;

/// A container to run, as the command line (or another caller) asks for it.
#[derive(Debug, Clone)]
pub struct RunRequest {
    pub action: Action,
    /// The image as the user named it: a SIF or squashfs file, or a sandbox directory.
    pub image: String,
    pub args: Vec<OsString>,
    pub options: launch::Options,
    /// `--verify`: only images signed by a key in the user's keyrings.
    pub verify: bool,
    /// `--policy`: only images whose signatures satisfy this policy file.
    pub policy: Option<PathBuf>,
    /// The key flags; the environment's key variables are read too.
    pub keys: KeyFlags,
    pub require_encrypted: bool,
    /// How to reach the registry when `image` is an `oras://` URI.
    pub registry: crate::registry::Options,
    /// `--sharens`: share one session with the job's other processes on this node.
    pub sharens: bool,
}

/// Removes secret variables from the environment when dropped.
struct ScrubEnvironment;

impl Drop for ScrubEnvironment {
    fn drop(&mut self) {
        crate::crypt::environ::scrub();
    }
}

/// The image a URI names, as an open file of the cache: an `oras://` SIF as pulled;
/// a `docker://` image as a SIF built from it (`veil pull docker://` makes the same),
/// cached under its platform manifest's digest so the next run starts at once.
fn pulled(req: &RunRequest) -> Result<std::fs::File> {
    use crate::registry::{self, ImageUri, Transport, cache, docker};
    let uri = ImageUri::parse(&req.image)?;
    if uri.transport == Transport::Oras {
        return Ok(registry::fetch_sif(&uri, &req.registry)?.1);
    }
    let digest = registry::docker_digest(&uri, &req.registry)?;
    let arch = req
        .registry
        .arch
        .clone()
        .unwrap_or_else(|| docker::host_arch().to_string());
    let key = {
        use sha2::Digest;
        let h = sha2::Sha256::digest(format!("{digest}{arch}").as_bytes());
        h.iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    let entry = cache::kind_dir("oci-tmp")?.join(key);
    if let Some(f) = cache::open_entry(&entry, None) {
        crate::support::diag::debug_note(&format!("registry: {} from the cache", uri.text));
        return Ok(f);
    }
    // Built from the manifest the key names (not the tag again, which the registry
    // could answer differently), by `veil pull` in a process of its own: its cleanup
    // takes the termination signals while it builds, which this process, about to
    // launch a container, must not give away.
    let pinned = uri.with_digest(&digest);
    let mut cmd = std::process::Command::new("/proc/self/exe");
    cmd.args(["pull", "-q", "--force"]);
    if req.registry.no_https {
        cmd.arg("--no-https");
    }
    if let Some(a) = &req.registry.arch {
        cmd.args(["--arch", a]);
    }
    cmd.arg(&entry)
        .arg(&pinned)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null());
    // SIGTERM, not SIGKILL, should this run be killed: the pull's cleanup removes its
    // staging tree and stops its own download.
    crate::support::spawn::end_with_parent(&mut cmd, nix::sys::signal::Signal::SIGTERM);
    let out = cmd.output().map_err(|err| RunnerError::Open {
        name: uri.text.clone(),
        err,
    })?;
    if !out.status.success() {
        // The pull's own error line: its last (warnings may come before it).
        let text = String::from_utf8_lossy(&out.stderr);
        let msg = text
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("the pull failed")
            .trim()
            .trim_start_matches("veil: error: ");
        return Err(RunnerError::Pull {
            name: uri.text.clone(),
            why: msg.to_string(),
        });
    }
    cache::open_entry(&entry, None).ok_or_else(|| RunnerError::Open {
        name: entry.display().to_string(),
        err: std::io::Error::other("the image built from the registry's is not in the cache"),
    })
}

/// Runs the container and returns its exit status: in a new launch, in a running
/// instance (`instance://NAME`), or in the job's shared session (`--sharens`).
pub fn run(req: RunRequest) -> Result<i32> {
    if let Some(name) = req.image.strip_prefix(instance::SCHEME) {
        // A join needs no key: the key descriptors given go at once, before veil opens
        // any of its own (whose numbers a wrong --pem-fd could name).
        let fds: Vec<i32> = [req.keys.pem_fd, req.keys.passphrase_fd]
            .into_iter()
            .flatten()
            .collect();
        crate::support::fds::close_open(&fds);
        let found = instance::find(name)?;
        return instance::join(req, found);
    }
    if req.sharens {
        return instance::sharens::run(req);
    }
    run_with(req, None)
}

/// [`run`] as a new launch; `instance` makes it an instance's (`launch::LaunchSpec`).
pub(crate) fn run_with(
    req: RunRequest,
    instance: Option<Box<dyn FnOnce(launch::Started)>>,
) -> Result<i32> {
    // Secret variables leave the environment on every way out, errors included
    // (the unlock scrubs them as soon as the key is read).
    let _scrub = ScrubEnvironment;
    let policy = signature_policy(req.verify, req.policy.as_deref())?;
    let image = if crate::registry::ImageUri::is_uri(&req.image) {
        // Pulled into the cache (or found there); from here on a local file.
        let file = pulled(&req)?;
        crate::support::diag::debug_time("image pulled or found in the cache");
        if crate::support::userns::real_root() {
            crate::image::check_root_may_trust(&file, &req.image)?;
        }
        open_verified(file, &req.image, policy.as_ref())?
    } else {
        open_image(&req.image, policy.as_ref())?
    };
    let root = root_source(&req, image)?;
    crate::support::diag::debug_time("image opened");
    let unpacker = Some(unpacker(&req.image));
    let spec = LaunchSpec {
        action: req.action,
        image_name: req.image,
        root,
        args: req.args,
        options: req.options,
        instance,
        unpacker,
    };
    let code = launch::launch(spec)?;
    crate::support::diag::debug_time("launcher done");
    Ok(code)
}

/// How a launch unpacks an image where FUSE cannot serve it: the builder's confined
/// extraction, every file the caller's.
fn unpacker(image: &str) -> launch::unpack::Unpacker {
    let name = std::path::PathBuf::from(image);
    std::sync::Arc::new(move |fs, dir| {
        let root = crate::builder::rooted::Rooted::open(dir).map_err(|e| e.to_string())?;
        crate::builder::fsops::extract_squashfs_as_caller(fs, &name, &root)
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
}
