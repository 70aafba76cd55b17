//! A real registry for the tests: Debian's `docker-registry` (the CNCF distribution
//! server) started on loopback with its storage in a temporary directory, anonymous,
//! with htpasswd basic authentication, or with token authentication against the token
//! endpoint in `tests/registry/tokensrv.py`. Stopped when dropped.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::which;

/// `veil` with a private HOME (no stored credentials) and cache, and none of the
/// caller's registry settings.
pub fn veil_at(home: &Path) -> Command {
    program_at(Path::new(env!("CARGO_BIN_EXE_veil")), home)
}

/// The program `bin` (a copy of veil's) as [`veil_at`] sets it up.
pub fn program_at(bin: &Path, home: &Path) -> Command {
    let mut c = Command::new(bin);
    for p in ["VEIL_", "APPTAINER_", "SINGULARITY_"] {
        c.env_remove(format!("{p}DOCKER_USERNAME"))
            .env_remove(format!("{p}DOCKER_PASSWORD"))
            .env_remove(format!("{p}CACHEDIR"));
    }
    c.env("HOME", home)
        .env("VEIL_CACHEDIR", home.join("cachedir"))
        .env_remove("VEIL_CONFIGDIR")
        .env_remove("DOCKER_CONFIG");
    c
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    Anonymous,
    /// htpasswd: alice / secret.
    Basic,
    /// Bearer tokens from the test token server: alice / secret, anonymous pull.
    Token,
}

pub const USER: &str = "alice";
pub const PASSWORD: &str = "secret";

pub struct Registry {
    pub dir: tempfile::TempDir,
    /// `127.0.0.1:PORT`
    pub host: String,
    registry: Child,
    token_server: Option<Child>,
}

impl Drop for Registry {
    fn drop(&mut self) {
        for c in [Some(&mut self.registry), self.token_server.as_mut()]
            .into_iter()
            .flatten()
        {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The Python that has the test's modules (the registry's token server, bcrypt for
/// htpasswd, the ORAS SDK).
pub fn python_with(modules: &[&str]) -> Option<PathBuf> {
    let probe = format!("import {}", modules.join(", "));
    ["python3", "/usr/bin/python3"].into_iter().find_map(|p| {
        let ok = Command::new(p)
            .args(["-c", &probe])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| PathBuf::from(p))
    })
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The status line's code of a plain HTTP GET, or None when nothing answers.
pub fn http_status(host: &str, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(host).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").ok()?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).ok()?;
    let line = String::from_utf8_lossy(&buf[..n]);
    line.split_whitespace().nth(1)?.parse().ok()
}

fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{what} did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Registry {
    /// Starts a registry, or says why it cannot (None: the test skips).
    pub fn start(auth: Auth) -> Option<Registry> {
        Registry::start_with(auth, None)
    }

    /// Starts a registry that speaks HTTPS with `ca`'s certificate for 127.0.0.1.
    pub fn start_tls(auth: Auth, ca: &TestCa) -> Option<Registry> {
        Registry::start_with(auth, Some(ca))
    }

    fn start_with(auth: Auth, tls: Option<&TestCa>) -> Option<Registry> {
        let Some(bin) = which("docker-registry") else {
            eprintln!("docker-registry is not installed (apt-get install docker-registry)");
            return None;
        };
        let modules: &[&str] = match auth {
            Auth::Anonymous => &[],
            Auth::Basic => &["bcrypt"],
            Auth::Token => &["jwt", "cryptography"],
        };
        let python = if modules.is_empty() {
            None
        } else {
            let Some(p) = python_with(modules) else {
                eprintln!("python3 lacks {modules:?} (pip install pyjwt cryptography bcrypt)");
                return None;
            };
            Some(p)
        };
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut token_server = None;
        let auth_yaml = match auth {
            Auth::Anonymous => String::new(),
            Auth::Basic => {
                let out = Command::new(python.as_ref().unwrap())
                    .args([
                        "-c",
                        "import bcrypt,sys;print(sys.argv[1]+':'+bcrypt.hashpw(sys.argv[2].encode(),bcrypt.gensalt(rounds=5)).decode())",
                        USER,
                        PASSWORD,
                    ])
                    .output()
                    .unwrap();
                assert!(out.status.success());
                std::fs::write(d.join("htpasswd"), &out.stdout).unwrap();
                format!(
                    "auth:\n  htpasswd:\n    realm: veil-test\n    path: {}\n",
                    d.join("htpasswd").display()
                )
            }
            Auth::Token => {
                let port = free_port();
                let script =
                    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/registry/tokensrv.py");
                let mut child = Command::new(python.as_ref().unwrap())
                    .arg(&script)
                    .arg(port.to_string())
                    .arg(d)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap();
                let mut line = [0u8; 6];
                child
                    .stdout
                    .as_mut()
                    .unwrap()
                    .read_exact(&mut line)
                    .unwrap();
                assert_eq!(&line, b"ready\n", "token server");
                token_server = Some(child);
                format!(
                    "auth:\n  token:\n    realm: http://127.0.0.1:{port}/token\n    service: veil-registry\n    issuer: veil-test-issuer\n    rootcertbundle: {}\n",
                    d.join("root.pem").display()
                )
            }
        };
        let port = free_port();
        let host = format!("127.0.0.1:{port}");
        let tls_yaml = match tls {
            Some(ca) => format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                ca.cert.display(),
                ca.key.display()
            ),
            None => String::new(),
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {host}\n  secret: veil-test-secret\n{tls_yaml}{auth_yaml}",
            d.join("data").display()
        );
        std::fs::write(d.join("config.yml"), config).unwrap();
        let log = std::fs::File::create(d.join("registry.log")).unwrap();
        let registry = Command::new(bin)
            .arg("serve")
            .arg(d.join("config.yml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let r = Registry {
            dir,
            host,
            registry,
            token_server,
        };
        wait_until("docker-registry", || http_status(&r.host, "/v2/").is_some());
        Some(r)
    }

    /// `oras://HOST/REPO`
    pub fn oras(&self, repo: &str) -> String {
        format!("oras://{}/{repo}", self.host)
    }

    /// Makes the registry serve `manifest` for `repo:tag` by writing it into its
    /// storage, as a registry that lies would serve it: the server checks the blobs
    /// and sizes of a manifest it is sent, not of one it finds in its storage.
    pub fn plant_manifest(&self, repo: &str, tag: &str, manifest: &[u8]) {
        use sha2::Digest;
        let hex = format!("{:x}", sha2::Sha256::digest(manifest));
        let v2 = self.dir.path().join("data/docker/registry/v2");
        let blob = self.blob_file(&format!("sha256:{hex}"));
        std::fs::create_dir_all(blob.parent().unwrap()).unwrap();
        std::fs::write(&blob, manifest).unwrap();
        let m = v2.join("repositories").join(repo).join("_manifests");
        let link = format!("sha256:{hex}");
        for dir in [
            m.join("revisions/sha256").join(&hex),
            m.join("tags").join(tag).join("current"),
            m.join("tags").join(tag).join("index/sha256").join(&hex),
        ] {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("link"), &link).unwrap();
        }
    }

    /// Where the registry keeps the blob `digest` (`sha256:HEX`).
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

/// A private certificate authority and the certificate for 127.0.0.1 it signed (made
/// with the openssl command), for registries that speak HTTPS.
pub struct TestCa {
    pub dir: tempfile::TempDir,
    /// The authority's certificate (PEM): what SSL_CERT_FILE names.
    pub ca: PathBuf,
    /// The server's certificate and key.
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCa {
    pub fn make() -> Option<TestCa> {
        let Some(openssl) = which("openssl") else {
            eprintln!("the openssl command is not installed");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let run = |args: &[&str]| {
            let o = Command::new(&openssl)
                .args(args)
                .current_dir(d)
                .output()
                .unwrap();
            assert!(
                o.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        let mut a = vec!["req", "-x509"];
        a.extend(ec);
        a.extend([
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=veil test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        run(&a);
        let mut a = vec!["req"];
        a.extend(ec);
        a.extend([
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ]);
        run(&a);
        std::fs::write(
            d.join("ext.cnf"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ]);
        Some(TestCa {
            ca: d.join("ca.pem"),
            cert: d.join("server.pem"),
            key: d.join("server.key"),
            dir,
        })
    }
}
