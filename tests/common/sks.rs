//! A real HKP keyserver for the tests: Debian's `sks`, on a free loopback port, with a
//! database of its own built from one seed key (`sks build`, `pbuild`), then
//! served by `sks db`. Dropping it stops the server.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::registry::{free_port, http_status};
use super::{gpg_in, new_gnupghome, run_ok, wait_until, which};

pub struct Sks {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: Child,
}

impl Sks {
    /// Starts a keyserver, or says why it cannot (None: the test skips).
    pub fn start() -> Option<Sks> {
        let sks = which("sks").or_else(|| {
            let p = PathBuf::from("/usr/sbin/sks");
            p.is_file().then_some(p)
        });
        let Some(sks) = sks else {
            eprintln!("SKIP: sks is not installed (Debian package sks)");
            return None;
        };
        if which("gpg").is_none() {
            eprintln!("SKIP: gpg is not installed");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path();
        // Debian's sks finds its configuration, database and logs under the base
        // directory as it would under /.
        for d in [
            "dump",
            "etc/sks",
            "var/lib/sks",
            "var/log/sks",
            "var/run/sks",
        ] {
            std::fs::create_dir_all(base.join(d)).unwrap();
        }
        // The seed key's GnuPG home; its agent is stopped when this goes, panic or not.
        let gpg = Gpg::new(base);
        gpg.new_key("Seed <seed@example.org>");
        run_ok(
            gpg.cmd()
                .arg("--output")
                .arg(base.join("dump/seed.pgp"))
                .arg("--export"),
        );
        drop(gpg);
        let port = free_port();
        let recon = free_port();
        std::fs::write(
            base.join("etc/sks/sksconf"),
            format!(
                "hkp_address: 127.0.0.1\nhkp_port: {port}\nrecon_address: 127.0.0.1\nrecon_port: {recon}\n\
pagesize: 16\nptree_pagesize: 16\ndisable_mailsync:\n"
            ),
        )
        .unwrap();
        std::fs::write(base.join("etc/sks/membership"), "").unwrap();
        let sks_in = |args: &[&str]| {
            let mut c = Command::new(&sks);
            c.args(args).arg("-basedir").arg(base).current_dir(base);
            c
        };
        run_ok(&mut sks_in(&[
            "build",
            "dump/seed.pgp",
            "-n",
            "10",
            "-cache",
            "100",
        ]));
        // (No `sks cleandb`: it has nothing to clean in a one-key database, and it
        // crashes on some machines.)
        run_ok(&mut sks_in(&[
            "pbuild",
            "-cache",
            "20",
            "-ptree_cache",
            "70",
        ]));
        let child = sks_in(&["db"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let s = Sks { dir, port, child };
        let host = format!("127.0.0.1:{port}");
        wait_until("sks", || {
            http_status(&host, "/pks/lookup?op=stats").is_some()
        });
        Some(s)
    }

    /// The keyserver as veil and gpg are told it.
    pub fn url(&self) -> String {
        format!("hkp://127.0.0.1:{}", self.port)
    }

    pub fn base(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Sks {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A GNUPGHOME whose daemons (gpg-agent, dirmngr, which talks to keyservers) are
/// stopped when it is dropped.
pub struct Gpg {
    pub home: PathBuf,
}

impl Gpg {
    pub fn new(parent: &Path) -> Gpg {
        Gpg {
            home: new_gnupghome(parent),
        }
    }

    pub fn cmd(&self) -> Command {
        gpg_in(&self.home)
    }

    /// The fingerprint of the key `quick-gen-key` makes for `uid`.
    pub fn new_key(&self, uid: &str) -> String {
        run_ok(self.cmd().args([
            "--passphrase",
            "",
            "--quick-gen-key",
            uid,
            "ed25519",
            "sign",
            "never",
        ]));
        let out = run_ok(self.cmd().args(["--with-colons", "--list-keys", uid]));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find(|l| l.starts_with("fpr:"))
            .and_then(|l| l.split(':').nth(9))
            .unwrap()
            .to_string()
    }
}

impl Drop for Gpg {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", &self.home)
            .args(["--kill", "all"])
            .status();
    }
}
