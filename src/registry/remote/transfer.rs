//! Moving blobs: downloads streamed into a temporary file beside their destination,
//! hashed as they arrive and resumed with `Range` after a dropped connection, never
//! longer than their descriptor says; uploads streamed from the file, skipped when the
//! registry has the blob already.

#![forbid(unsafe_code)]

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::Path;

use futures_util::StreamExt;
use oci_client::errors::OciDistributionError;
use oci_client::manifest::OciDescriptor;
use sha2::{Digest, Sha256};

use super::client::{Session, backoff, transient};
use crate::fsutil::TempFile;
use crate::registry::error::{RegistryError, Result};
use crate::support::progress::Progress;

/// Bytes read from a file per upload chunk.
const CHUNK: usize = 4 << 20;
/// Attempts of a download before it is given up.
pub(crate) const ATTEMPTS: u32 = 5;
/// The slowest transfer taken: this many bytes in each `RATE_WINDOW`.
const MIN_RATE: u64 = 16 << 10;
const RATE_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

/// A blob's name on its progress bar: the first 12 digits of its digest, as docker
/// and skopeo show them.
fn short(hex: &str) -> &str {
    &hex[..12]
}

/// Downloads the blob `desc` into a temporary file in `dir` (named for `target`). The
/// file holds exactly the blob's bytes, checked against its digest, when this returns;
/// on any error it is gone.
pub(crate) fn download(
    s: &Session,
    desc: &OciDescriptor,
    dir: &Path,
    target: &Path,
    mode: u32,
) -> Result<Downloaded> {
    let bad = |why: String| RegistryError::Blob {
        reference: s.reference.whole(),
        digest: desc.digest.clone(),
        why,
    };
    let want = crate::registry::sha256_hex(&desc.digest)
        .ok_or_else(|| bad("only sha256 digests are supported".into()))?
        .to_string();
    let size = u64::try_from(desc.size).map_err(|_| bad(format!("negative size {}", desc.size)))?;
    check_room(dir, size).map_err(bad)?;
    let tmp = TempFile::new_in_mode(dir, target, mode).map_err(RegistryError::Local)?;
    // Until it is renamed into place, the file goes with the process on Ctrl-C or
    // SIGTERM too.
    let guard = super::interrupt::Guard::new(tmp.path());
    let out = tmp
        .file()
        .try_clone()
        .map_err(|e| RegistryError::io("writing", tmp.path(), e))?;
    let sink = Sink::new(out);
    let progress = Progress::new(short(&want), size, !s.quiet);
    let mut written: u64 = 0;
    let mut attempt = 1;
    let mut last_error = String::new();
    while written < size || size == 0 {
        if attempt > ATTEMPTS {
            return Err(bad(format!(
                "download failed {ATTEMPTS} times: {last_error}"
            )));
        }
        let cut = match request(s, desc, written)? {
            Response::Retry(why) => Cut::Interrupted(why),
            Response::Stream { stream, whole } => {
                if whole && written > 0 {
                    // The registry ignored the range: start over.
                    sink.reset();
                    progress.restart();
                    written = 0;
                }
                let mut rx = Receiving {
                    sink: &sink,
                    progress: &progress,
                    written,
                    size,
                    path: tmp.path(),
                };
                let ended = s.block_on(rx.receive(stream));
                written = rx.written;
                match ended {
                    Ok(()) if written == size => break,
                    Ok(()) => Cut::Interrupted(format!(
                        "the connection ended after {written} of {size} bytes"
                    )),
                    Err(cut) => cut,
                }
            }
        };
        match cut {
            Cut::Interrupted(why) => last_error = why,
            Cut::Fatal(why) => return Err(bad(why)),
        }
        crate::support::diag::debug_note(&format!(
            "registry: {last_error}; resuming at byte {written}"
        ));
        std::thread::sleep(backoff(attempt));
        attempt += 1;
        if size == 0 {
            break;
        }
    }
    progress.finish();
    let hasher = sink
        .finish()
        .map_err(|e| RegistryError::io("writing", tmp.path(), e))?;
    let got = hex(&hasher.finalize());
    if got != want {
        return Err(bad(format!(
            "digest mismatch: the bytes received hash to sha256:{got}"
        )));
    }
    Ok(Downloaded { tmp, _guard: guard })
}

/// What a request for the rest of a blob got.
enum Response {
    /// The bytes from the offset asked for, or the `whole` blob when the registry
    /// ignored the range.
    Stream {
        stream: futures_util::stream::BoxStream<'static, std::io::Result<bytes::Bytes>>,
        whole: bool,
    },
    /// A failure worth another attempt.
    Retry(String),
}

/// Asks for `desc`'s bytes from `offset` on.
fn request(s: &Session, desc: &OciDescriptor, offset: u64) -> Result<Response> {
    use oci_client::client::BlobResponse;
    let response = s.block_on(
        s.client
            .pull_blob_stream_partial(&s.reference, desc, offset, None),
    );
    match response {
        Ok(BlobResponse::Partial(st)) => Ok(Response::Stream {
            stream: st.stream,
            whole: false,
        }),
        Ok(BlobResponse::Full(st)) => Ok(Response::Stream {
            stream: st.stream,
            whole: true,
        }),
        Err(e) if transient(&e) => Ok(Response::Retry(e.to_string())),
        Err(err) => Err(super::describe::request_error(
            "downloading",
            format!("{} blob {}", s.reference.whole(), desc.digest),
            &err,
        )),
    }
}

/// Why an attempt ended before the whole blob arrived.
enum Cut {
    /// The transfer broke off: resumed at the byte reached.
    Interrupted(String),
    /// The registry sent what the blob cannot be, or the file cannot be written.
    Fatal(String),
}

/// One attempt's stream going into the sink.
struct Receiving<'a> {
    sink: &'a Sink,
    progress: &'a Progress,
    /// Bytes of the blob in the sink so far.
    written: u64,
    size: u64,
    path: &'a Path,
}

impl Receiving<'_> {
    /// Takes the stream until it ends. A registry that trickles is as good as gone:
    /// below MIN_RATE bytes in a RATE_WINDOW the transfer is cut (and resumed, up to
    /// ATTEMPTS times).
    async fn receive(
        &mut self,
        mut stream: futures_util::stream::BoxStream<'static, std::io::Result<bytes::Bytes>>,
    ) -> std::result::Result<(), Cut> {
        let mut window = (tokio::time::Instant::now(), 0u64);
        loop {
            let next = tokio::time::timeout(RATE_WINDOW, stream.next()).await;
            let Ok(item) = next else {
                return Err(Cut::Interrupted(
                    "transfer interrupted: nothing arrived for a minute".into(),
                ));
            };
            let Some(item) = item else { return Ok(()) };
            if window.0.elapsed() >= RATE_WINDOW {
                if window.1 < MIN_RATE {
                    return Err(Cut::Interrupted(format!(
                        "transfer interrupted: less than {} KiB arrived in a minute",
                        MIN_RATE >> 10
                    )));
                }
                window = (tokio::time::Instant::now(), 0);
            }
            match item {
                Ok(bytes) => {
                    window.1 += bytes.len() as u64;
                    self.take(bytes)?;
                }
                // A whole blob's own check fails after its last byte; ours says more.
                Err(_) if self.written == self.size => return Ok(()),
                Err(e) => return Err(Cut::Interrupted(format!("transfer interrupted: {e}"))),
            }
        }
    }

    fn take(&mut self, bytes: bytes::Bytes) -> std::result::Result<(), Cut> {
        let size = self.size;
        if self.written + bytes.len() as u64 > size {
            return Err(Cut::Fatal(format!(
                "the registry sent more than the {size} bytes the manifest declares"
            )));
        }
        self.written += bytes.len() as u64;
        self.progress.add(bytes.len() as u64);
        if !self.sink.send(bytes) {
            return Err(Cut::Fatal(format!(
                "writing {} failed",
                self.path.display()
            )));
        }
        Ok(())
    }
}

/// Writes and hashes the bytes of a download on a thread of its own, so that the
/// network loop only receives: hashing in line with receiving held a pull to about
/// half of what the wire gave.
struct Sink {
    tx: Option<std::sync::mpsc::SyncSender<SinkMsg>>,
    worker: Option<std::thread::JoinHandle<std::io::Result<Sha256>>>,
}

enum SinkMsg {
    Data(bytes::Bytes),
    /// Start the file and the hash over.
    Reset,
}

impl Sink {
    fn new(file: File) -> Sink {
        let (tx, rx) = std::sync::mpsc::sync_channel::<SinkMsg>(256);
        let worker = std::thread::spawn(move || {
            let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
            let mut h = Sha256::new();
            for m in rx {
                match m {
                    SinkMsg::Data(b) => {
                        h.update(&b);
                        w.write_all(&b)?;
                    }
                    SinkMsg::Reset => {
                        w.flush()?;
                        w.get_mut().set_len(0)?;
                        w.get_mut().rewind()?;
                        h = Sha256::new();
                    }
                }
            }
            w.flush()?;
            Ok(h)
        });
        Sink {
            tx: Some(tx),
            worker: Some(worker),
        }
    }

    /// False once the writer has failed (`finish` says why).
    fn send(&self, b: bytes::Bytes) -> bool {
        self.tx
            .as_ref()
            .is_some_and(|tx| tx.send(SinkMsg::Data(b)).is_ok())
    }

    fn reset(&self) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(SinkMsg::Reset);
        }
    }

    /// Waits for every byte to be written; the hash of them all.
    fn finish(mut self) -> std::io::Result<Sha256> {
        drop(self.tx.take());
        match self.worker.take().map(|w| w.join()) {
            Some(Ok(r)) => r,
            _ => Err(std::io::Error::other("the writer thread failed")),
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

/// A downloaded and checked blob in its temporary file, removed unless persisted
/// (also when a signal ends the process first).
pub(crate) struct Downloaded {
    tmp: TempFile,
    _guard: super::interrupt::Guard,
}

impl Downloaded {
    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// Renames the file to `dest`.
    pub fn persist(self, dest: &Path) -> std::io::Result<()> {
        self.tmp.persist(dest)
    }

    /// Moves the file to `dest` unless something is there by then.
    pub fn persist_new(self, dest: &Path) -> std::io::Result<()> {
        self.tmp.persist_new(dest)
    }
}

/// Refuses a download that cannot fit in the file system of `dir`.
fn check_room(dir: &Path, size: u64) -> std::result::Result<(), String> {
    let Ok(st) = nix::sys::statvfs::statvfs(dir) else {
        return Ok(());
    };
    let free = st.blocks_available().saturating_mul(st.fragment_size());
    if size > free {
        return Err(format!(
            "needs {size} bytes, but {} has only {free} bytes free",
            dir.display()
        ));
    }
    Ok(())
}

/// The sha256 digest and size of an open file, read from its start.
pub(crate) fn file_digest_of(f: &mut File, path: &Path) -> Result<(String, u64)> {
    f.rewind()
        .map_err(|e| RegistryError::io("reading", path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n_total = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| RegistryError::io("reading", path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        n_total += n as u64;
    }
    Ok((format!("sha256:{}", hex(&h.finalize())), n_total))
}

/// Uploads the open `file` (named `path`) as the blob `digest` unless the registry
/// has it already. Each attempt reads the file from its start by position.
pub(crate) fn upload_file(
    s: &Session,
    file: &File,
    path: &Path,
    digest: &str,
    size: u64,
) -> Result<bool> {
    if s.retry("checking for", || {
        s.client.blob_exists(&s.reference, digest)
    })? {
        return Ok(false);
    }
    let progress = Progress::new("pushing", size, !s.quiet);
    s.retry_within("uploading", None, || {
        progress.restart();
        let counter = progress.counter();
        let f = file.try_clone().map_err(OciDistributionError::IoError);
        let stream = futures_util::stream::unfold((f, 0u64), move |(state, offset)| {
            let counter = counter.clone();
            async move {
                let f = match state {
                    Ok(f) => f,
                    Err(e) => return Some((Err(e), (Err(gone()), u64::MAX))),
                };
                if offset == u64::MAX {
                    return None;
                }
                let mut buf = vec![0u8; CHUNK];
                match read_full_at(&f, &mut buf, offset) {
                    Ok(0) => None,
                    Ok(n) => {
                        counter.add(n as u64);
                        buf.truncate(n);
                        Some((Ok(bytes::Bytes::from(buf)), (Ok(f), offset + n as u64)))
                    }
                    Err(e) => Some((
                        Err(OciDistributionError::IoError(e)),
                        (Err(gone()), u64::MAX),
                    )),
                }
            }
        });
        s.client
            .push_blob_stream(&s.reference, stream, digest, Some(size))
    })
    .map_err(|e| match e {
        RegistryError::Request { what, why, .. } => RegistryError::Request {
            what,
            reference: format!("{} from {}", s.reference.whole(), path.display()),
            why,
        },
        e => e,
    })?;
    progress.finish();
    Ok(true)
}

fn gone() -> OciDistributionError {
    OciDistributionError::IoError(std::io::Error::other("the upload stream ended"))
}

/// Uploads a small blob held in memory unless the registry has it already.
pub(crate) fn upload_bytes(s: &Session, data: &[u8], digest: &str) -> Result<()> {
    if s.retry("checking for", || {
        s.client.blob_exists(&s.reference, digest)
    })? {
        return Ok(());
    }
    s.retry("uploading", || {
        s.client.push_blob(&s.reference, data.to_vec(), digest)
    })?;
    Ok(())
}

/// Reads at `offset` until `buf` is full or the file ends.
fn read_full_at(f: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut n = 0;
    while n < buf.len() {
        match f.read_at(&mut buf[n..], offset + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
