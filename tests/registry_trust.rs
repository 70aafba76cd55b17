//! Whom the registry helper trusts and how far: HTTPS registries verified against the
//! system's store or `SSL_CERT_FILE`/`SSL_CERT_DIR`, credentials never sent to a
//! plain-HTTP token endpoint, Docker credential helpers, and the memory bound that
//! endless answers meet. Real docker-registry servers on loopback (with TLS from a
//! private CA made by the openssl command), and a Python server for the endless
//! answers.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::registry::{Auth, PASSWORD, Registry, TestCa, USER, python_with, veil_at};
use common::*;

/// A SIF with a busybox root.
fn fixture(dir: &Path) -> Option<PathBuf> {
    let root = busybox_rootfs(dir)?;
    let (_, sif) = squash_and_sif(&root, dir)?;
    Some(sif)
}

/// Fails with one line on stderr and one of veil's failure statuses.
fn fails_in_one_line(o: &Output, want: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(veil_failed(o.status), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(err.contains(want), "expected {want:?}: {err}");
}

fn succeeds(o: &Output) {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// veil with a private HOME, and no CA settings of the caller's.
fn veil_in(home: &Path) -> Command {
    let mut c = veil_at(home);
    c.env_remove("SSL_CERT_FILE").env_remove("SSL_CERT_DIR");
    c
}

#[test]
fn https_registries_are_verified_against_the_system_store_or_ssl_cert_file() {
    let ca = require!(TestCa::make(), "the openssl command is missing");
    let reg = require!(
        Registry::start_tls(Auth::Anonymous, &ca),
        "no docker-registry"
    );
    let t = tempfile::tempdir().unwrap();
    let sif = require!(
        fixture(t.path()),
        "busybox, mksquashfs or /dev/fuse missing"
    );
    let home = t.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let uri = reg.oras("trust/app:1");

    // The private CA is in no system store.
    let o = veil_in(&home)
        .args(["push", "-q"])
        .arg(&sif)
        .arg(&uri)
        .output()
        .unwrap();
    fails_in_one_line(&o, "certificate");

    // Named by SSL_CERT_FILE, it is trusted.
    let o = veil_in(&home)
        .env("SSL_CERT_FILE", &ca.ca)
        .args(["push", "-q"])
        .arg(&sif)
        .arg(&uri)
        .output()
        .unwrap();
    succeeds(&o);
    let pulled = t.path().join("pulled.sif");
    let o = veil_in(&home)
        .env("SSL_CERT_FILE", &ca.ca)
        .args(["pull", "-q"])
        .arg(&pulled)
        .arg(&uri)
        .output()
        .unwrap();
    succeeds(&o);
    assert_eq!(
        std::fs::read(&pulled).unwrap(),
        std::fs::read(&sif).unwrap()
    );

    // And through a directory of certificates (as `openssl rehash` lays one out).
    let certs = t.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    std::fs::copy(&ca.ca, certs.join("veil-test-ca.pem")).unwrap();
    let o = veil_in(&home)
        .env("SSL_CERT_DIR", &certs)
        .args(["pull", "-q", "--force"])
        .arg(&pulled)
        .arg(&uri)
        .output()
        .unwrap();
    succeeds(&o);

    // A certificate for another name is refused even from a trusted CA: the server's
    // is for 127.0.0.1, and localhost is not in it.
    let other = uri.replace("127.0.0.1", "localhost");
    let o = veil_in(&home)
        .env("SSL_CERT_FILE", &ca.ca)
        .args(["pull", "-q", "--force"])
        .arg(&pulled)
        .arg(&other)
        .output()
        .unwrap();
    fails_in_one_line(&o, "certificate");
}

#[test]
fn credentials_never_go_to_a_plain_http_token_endpoint_of_an_https_registry() {
    let ca = require!(TestCa::make(), "the openssl command is missing");
    // The test token server speaks plain HTTP: the registry's challenge names
    // http://127.0.0.1:PORT/token.
    let reg = require!(
        Registry::start_tls(Auth::Token, &ca),
        "no docker-registry, or python3 lacks jwt/cryptography"
    );
    let t = tempfile::tempdir().unwrap();
    let sif = require!(
        fixture(t.path()),
        "busybox, mksquashfs or /dev/fuse missing"
    );
    let home = t.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let o = veil_in(&home)
        .env("SSL_CERT_FILE", &ca.ca)
        .args([
            "push",
            "-q",
            "--docker-username",
            USER,
            "--docker-password",
            PASSWORD,
        ])
        .arg(&sif)
        .arg(reg.oras("trust/app:1"))
        .output()
        .unwrap();
    fails_in_one_line(&o, "is not HTTPS; credentials are not sent there");
    // From the environment too.
    let o = veil_in(&home)
        .env("SSL_CERT_FILE", &ca.ca)
        .env("VEIL_DOCKER_USERNAME", USER)
        .env("VEIL_DOCKER_PASSWORD", PASSWORD)
        .args(["pull", "-q"])
        .arg(t.path().join("x.sif"))
        .arg(reg.oras("trust/app:1"))
        .output()
        .unwrap();
    fails_in_one_line(&o, "is not HTTPS; credentials are not sent there");
    assert!(!t.path().join("x.sif").exists());
}

/// Writes `docker-credential-NAME` into `bin`: it logs what it is asked, and what its
/// parent (the registry helper) holds open and in its environment, and answers for
/// `host` with `secret`.
fn credential_helper(bin: &Path, name: &str, host: &str, secret: &str, log: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let script = format!(
        "#!/bin/sh\nasked=$(cat)\necho \"$1 $asked\" >> '{0}'\nls -l /proc/$PPID/fd/ > '{0}.fds' 2>&1\ntr '\\0' '\\n' < /proc/$PPID/environ > '{0}.env' 2>&1\nif [ \"$asked\" = '{host}' ]; then\n  printf '{{\"ServerURL\":\"%s\",\"Username\":\"{USER}\",\"Secret\":\"{secret}\"}}' \"$asked\"\nelse\n  echo 'credentials not found in native keychain'\n  exit 1\nfi\n",
        log.display()
    );
    let p = bin.join(format!("docker-credential-{name}"));
    std::fs::write(&p, script).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn docker_credential_helpers_answer_for_their_registry() {
    let reg = require!(
        Registry::start(Auth::Basic),
        "no docker-registry, or python3 lacks bcrypt"
    );
    let t = tempfile::tempdir().unwrap();
    let sif = require!(
        fixture(t.path()),
        "busybox, mksquashfs or /dev/fuse missing"
    );
    let home = t.path().join("home");
    let bin = t.path().join("bin");
    std::fs::create_dir_all(home.join(".docker")).unwrap();
    std::fs::create_dir_all(&bin).unwrap();
    let log = t.path().join("asked.log");
    credential_helper(&bin, "veiltest", &reg.host, PASSWORD, &log);
    credential_helper(&bin, "stale", &reg.host, "not-the-password", &log);
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let push = |config: &str| {
        std::fs::write(home.join(".docker/config.json"), config).unwrap();
        veil_in(&home)
            .env("PATH", &path)
            .args(["push", "-q", "--no-https"])
            .arg(&sif)
            .arg(reg.oras("helped/app:1"))
            .output()
            .unwrap()
    };
    // The registry's own helper. veil has a passphrase in its environment and a
    // descriptor open (as `--pem-fd` would leave one): the registry helper, which
    // starts the credential helper, has neither.
    std::fs::write(
        home.join(".docker/config.json"),
        format!(r#"{{"credHelpers": {{"{}": "veiltest"}}}}"#, reg.host),
    )
    .unwrap();
    let marker = t.path().join("key-marker.pem");
    std::fs::write(&marker, "not a key").unwrap();
    let held = std::fs::File::open(&marker).unwrap();
    let mut c = veil_in(&home);
    c.env("PATH", &path)
        .env("APPTAINER_ENCRYPTION_PASSPHRASE", "marker-passphrase-4711")
        .args(["push", "-q", "--no-https"])
        .arg(&sif)
        .arg(reg.oras("helped/app:1"));
    {
        use std::os::fd::AsRawFd;
        use std::os::unix::process::CommandExt;
        let fd = held.as_raw_fd();
        // SAFETY: dup2 between fork and exec, on the child's own descriptors.
        unsafe {
            c.pre_exec(move || {
                if libc::dup2(fd, 5) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    succeeds(&c.output().unwrap());
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        format!("get {}\n", reg.host),
        "the helper is asked for this registry, by its host and port"
    );
    let fds = std::fs::read_to_string(log.with_extension("log.fds")).unwrap();
    assert!(
        !fds.contains("key-marker"),
        "the registry helper holds: {fds}"
    );
    let env = std::fs::read_to_string(log.with_extension("log.env")).unwrap();
    assert!(!env.contains("marker-passphrase"), "{env}");
    if nix::unistd::geteuid().is_root() {
        // (Root reads a non-dumpable process's environment; others may not.)
        assert!(env.contains("PATH="), "{env}");
    }
    // The helper for every registry.
    succeeds(&push(r#"{"credsStore": "veiltest"}"#));
    // A helper for another registry is not asked.
    std::fs::remove_file(&log).unwrap();
    let o = push(r#"{"credHelpers": {"registry.example.org": "veiltest"}}"#);
    fails_in_one_line(&o, "not authorized");
    assert!(!log.exists(), "a helper for another registry was asked");
    // A helper's wrong answer, and a helper that is not installed.
    fails_in_one_line(&push(r#"{"credsStore": "stale"}"#), "not authorized");
    fails_in_one_line(&push(r#"{"credsStore": "absent"}"#), "not authorized");
    // A name that is not a program's is not run.
    fails_in_one_line(
        &push(r#"{"credsStore": "../../bin/veiltest"}"#),
        "not authorized",
    );
}

/// A server whose answers never end (tests/registry/endless_registry.py).
struct Endless(std::process::Child, String);

impl Endless {
    fn start(py: &Path, mode: &str) -> Endless {
        use std::io::BufRead;
        let mut c = Command::new(py)
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/registry/endless_registry.py"))
            .arg(mode)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(c.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.split_whitespace().nth(1).unwrap().to_string();
        Endless(c, format!("127.0.0.1:{port}"))
    }
}

impl Drop for Endless {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn endless_answers_meet_the_helpers_memory_bound() {
    let py = require!(python_with(&["json"]), "python3 is not installed");
    let t = tempfile::tempdir().unwrap();
    let sif = require!(
        fixture(t.path()),
        "busybox, mksquashfs or /dev/fuse missing"
    );
    let home = t.path().join("home");
    let out = t.path().join("out");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&out).unwrap();
    let want = "took more than the helper's memory limit";
    // A token endpoint's answer (read whole by the client library).
    let server = Endless::start(&py, "token");
    let start = std::time::Instant::now();
    let o = veil_in(&home)
        .args(["pull", "-q", "--no-https"])
        .arg(out.join("x.sif"))
        .arg(format!("oras://{}/endless/app:1", server.1))
        .output()
        .unwrap();
    fails_in_one_line(&o, want);
    drop(server);
    // An error answer to an upload.
    let server = Endless::start(&py, "error");
    let o = veil_in(&home)
        .args(["push", "-q", "--no-https"])
        .arg(&sif)
        .arg(format!("oras://{}/endless/app:1", server.1))
        .output()
        .unwrap();
    fails_in_one_line(&o, want);
    drop(server);
    assert!(
        start.elapsed().as_secs() < 120,
        "the bound took {:?}",
        start.elapsed()
    );
    let left: Vec<_> = std::fs::read_dir(&out).unwrap().flatten().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// Proxies come from the usual variables (`HTTP_PROXY`/`http_proxy`, `NO_PROXY`), for
/// the helper's every request: a pull through a forward proxy that logs what passes,
/// a pull through a proxy that is not there, and the same with the registry exempt.
#[test]
fn proxies_come_from_the_environment() {
    use std::io::BufRead;
    let reg = require!(Registry::start(Auth::Anonymous), "no docker-registry");
    let py = require!(python_with(&["json"]), "python3 is not installed");
    let t = tempfile::tempdir().unwrap();
    let sif = require!(
        fixture(t.path()),
        "busybox, mksquashfs or /dev/fuse missing"
    );
    let home = t.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let uri = reg.oras("proxied/app:1");
    let unproxied = |c: &mut Command| {
        for v in [
            "HTTP_PROXY",
            "http_proxy",
            "HTTPS_PROXY",
            "https_proxy",
            "ALL_PROXY",
            "all_proxy",
            "NO_PROXY",
            "no_proxy",
        ] {
            c.env_remove(v);
        }
    };
    let mut push = veil_in(&home);
    unproxied(&mut push);
    succeeds(
        &push
            .args(["push", "-q", "--no-https"])
            .arg(&sif)
            .arg(&uri)
            .output()
            .unwrap(),
    );

    let log = t.path().join("proxy.log");
    let mut proxy = Command::new(&py)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/registry/http_proxy.py"))
        .arg(&log)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(proxy.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line.split_whitespace().nth(1).unwrap().to_string();
    let pull = |proxy_port: &str, no_proxy: Option<&str>| {
        let mut c = veil_in(&home);
        unproxied(&mut c);
        c.env("http_proxy", format!("http://127.0.0.1:{proxy_port}"));
        if let Some(n) = no_proxy {
            c.env("NO_PROXY", n);
        }
        c.args(["pull", "-q", "--force", "--no-https"])
            .arg(t.path().join("pulled.sif"))
            .arg(&uri)
            .output()
            .unwrap()
    };
    succeeds(&pull(&port, None));
    let seen = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        seen.contains(&format!(
            "GET http://{}/v2/proxied/app/manifests/1",
            reg.host
        )),
        "the proxy saw: {seen}"
    );
    assert_eq!(
        std::fs::read(t.path().join("pulled.sif")).unwrap(),
        std::fs::read(&sif).unwrap()
    );
    let _ = proxy.kill();
    let _ = proxy.wait();
    // A proxy that is not there: the pull fails; with the registry exempt, it works.
    let dead = common::registry::free_port().to_string();
    let o = pull(&dead, None);
    assert!(
        veil_failed(o.status),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&o.stderr)
            .trim_end()
            .lines()
            .count(),
        1
    );
    succeeds(&pull(&dead, Some("127.0.0.1")));
}
