//! The registry helper's side (`veil-registry`): the network client and what is done
//! with it. `veil` sends one request on standard input and reads one reply on
//! standard output ([`crate::registry::protocol`]); standard error carries progress
//! bars and warnings to the user's terminal.
//!
//! The client is the ORAS project's (`oci-client`, over rustls with ring), driven on a
//! current-thread runtime.

mod client;
mod describe;
pub mod docker;
mod interrupt;
mod keyserver;
mod login;
pub mod memory;
pub mod oras;
mod target;
mod transfer;

use std::io::{IsTerminal, Read, Write};
use std::process::ExitCode;

use zeroize::Zeroizing;

use super::error::Result;
use super::protocol::{Envelope, MAX_MESSAGE, Reply, Request, VERSION};
use target::Target;

/// What the last panic said, for its error reply.
static PANIC: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());

/// The helper's `main`.
pub fn main() -> ExitCode {
    // It may hold a registry password: no core dumps, no tracing by other processes.
    let _ = nix::sys::prctl::set_dumpable(false);
    if let Err(e) = memory::limit() {
        crate::say_warn!("veil-registry: warning: no memory limit ({e})");
    }
    if std::io::stdin().is_terminal() {
        crate::say_warn!(
            "veil-registry: veil's registry helper, run by veil (veil push, veil pull, veil registry login, and runs and builds of oras:// and docker:// images)"
        );
        return ExitCode::from(2);
    }
    // A panic (a defect) is an error reply like any other, not Rust's report on the
    // user's terminal.
    std::panic::set_hook(Box::new(|info| {
        let what = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        if let Ok(mut p) = PANIC.lock() {
            *p = format!("{what}{at}");
        }
    }));
    let reply = match read_request() {
        Ok(envelope) => match std::panic::catch_unwind(|| handle(&envelope)) {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Reply::Error(e.to_string()),
            Err(_) => Reply::Error(format!(
                "veil-registry: internal error ({}); please report it",
                PANIC.lock().map(|p| p.clone()).unwrap_or_default()
            )),
        },
        Err(why) => Reply::Error(format!("veil-registry: {why}")),
    };
    let failed = matches!(reply, Reply::Error(_));
    let written = serde_json::to_vec(&reply)
        .map_err(std::io::Error::other)
        .and_then(|text| {
            let mut out = std::io::stdout().lock();
            out.write_all(&text)?;
            out.flush()
        });
    if written.is_err() || failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// The request on standard input, from the same build of veil.
fn read_request() -> std::result::Result<Envelope, String> {
    // Allocated once at its largest: a buffer that grew would leave copies of the
    // password in freed memory.
    let mut text = Zeroizing::new(Vec::with_capacity(MAX_MESSAGE as usize + 1));
    std::io::stdin()
        .lock()
        .take(MAX_MESSAGE)
        .read_to_end(&mut text)
        .map_err(|e| format!("reading the request: {e}"))?;
    let envelope: Envelope =
        serde_json::from_slice(&text).map_err(|e| format!("an unreadable request: {e}"))?;
    if envelope.version != VERSION {
        return Err(format!(
            "veil {} sent the request, and this helper is {VERSION}: install the two from one build",
            super::error::printable(&envelope.version)
        ));
    }
    Ok(envelope)
}

fn handle(envelope: &Envelope) -> Result<Reply> {
    let opts = envelope.options.options();
    Ok(match &envelope.request {
        Request::Push { image, uri } => {
            Reply::Transferred(oras::push(image, &Target::parse(uri)?, &opts)?)
        }
        Request::Pull { uri, dest, force } => {
            Reply::Transferred(oras::pull(&Target::parse(uri)?, dest, *force, &opts)?)
        }
        Request::FetchSif { uri } => {
            Reply::Path(oras::fetch_to_cache(&Target::parse(uri)?, &opts)?)
        }
        Request::DockerDigest { uri } => {
            Reply::Digest(docker::manifest_digest(&Target::parse(uri)?, &opts)?)
        }
        Request::DockerFetch { uri } => Reply::Docker(docker::fetch(&Target::parse(uri)?, &opts)?),
        Request::Login { registry } => {
            login::check_login(registry, &opts)?;
            Reply::Done
        }
        Request::KeyGet {
            server,
            fingerprint,
        } => Reply::Found(keyserver::get(server, fingerprint)?),
        Request::KeySearch { server, text } => Reply::Found(keyserver::search(server, text)?),
        Request::KeyPush { server, armored } => Reply::Pushed(keyserver::push(server, armored)?),
    })
}
