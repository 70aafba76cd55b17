//! Keys from a real HKP keyserver (Debian's sks, started per test on loopback), with
//! GnuPG as the independent client both ways: `veil key search|pull|push`, `veil
//! verify` with a signer's key only the keyserver has, the keyserver list, and
//! keyservers that misbehave.

mod common;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::registry::free_port;
use common::sks::{Gpg, Sks};
use common::*;

/// veil with HOME at `home` and none of the keyserver variables of the caller's.
fn veil_k(home: &Path) -> Command {
    let mut c = veil_in(home);
    for v in [
        "VEIL_KEYSERVER",
        "APPTAINER_URL",
        "SINGULARITY_URL",
        "VEIL_LOCAL_VERIFY",
        "APPTAINER_LOCAL_VERIFY",
        "SINGULARITY_LOCAL_VERIFY",
        "VEIL_KEYSERVER_TIMEOUT",
    ] {
        c.env_remove(v);
    }
    c
}

/// The error of a failed command, which must be one line.
fn one_line_error(cmd: &mut Command) -> String {
    let err = run_err(cmd);
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| !l.starts_with("veil: warning:"))
        .collect();
    assert_eq!(lines.len(), 1, "not one line of error: {err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

/// A new ed25519 key pair in `home`'s keyrings; its fingerprint.
fn veil_newpair(home: &Path, name: &str) -> String {
    let out = run_ok(veil_k(home).env("VEIL_PASSPHRASE", "pw").args([
        "key",
        "newpair",
        "-N",
        name,
        "-E",
        "x@example.org",
        "--type",
        "ed25519",
    ]));
    stdout(&out).trim().rsplit(' ').next().unwrap().to_string()
}

/// A copy of a reference image, signed with `home`'s only key.
fn signed_image(home: &Path, dir: &Path) -> Option<PathBuf> {
    let d = sif_testdata()?;
    let img = dir.join("signed.sif");
    std::fs::copy(d.join("images/one-group.sif"), &img).unwrap();
    run_ok(
        veil_k(home)
            .env("VEIL_PASSPHRASE", "pw")
            .arg("sign")
            .arg(&img),
    );
    Some(img)
}

fn public_keys(home: &Path) -> Vec<String> {
    let out = run_ok(veil_k(home).args(["key", "list", "--json"]));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|k| k["fingerprint"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn gpg_publishes_a_key_that_veil_finds_and_pulls() {
    let sks = require!(Sks::start(), "no keyserver");
    let t = tempfile::tempdir().unwrap();
    let home = t.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let gpg = Gpg::new(t.path());
    let fpr = gpg.new_key("Alice Example <alice@example.org>");
    run_ok(
        gpg.cmd()
            .args(["--keyserver", &sks.url(), "--send-keys", &fpr]),
    );
    let url = sks.url();

    let out = stdout(&run_ok(veil_k(&home).args([
        "key",
        "search",
        "--url",
        &url,
        "alice@example.org",
    ])));
    assert!(out.contains(&fpr), "{out}");
    assert!(out.contains("Alice Example <alice@example.org>"), "{out}");
    let long = stdout(&run_ok(
        veil_k(&home).args(["key", "search", "-l", "--url", &url, &fpr]),
    ));
    assert!(long.contains(&format!("Fingerprint:  {fpr}")), "{long}");
    assert!(long.contains("Status:       valid"), "{long}");
    let json = run_ok(veil_k(&home).args(["key", "search", "--json", "--url", &url, "Alice"]));
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["keys"][0]["key"], fpr.as_str());
    let e = one_line_error(veil_k(&home).args(["key", "search", "--url", &url, "nobody-here"]));
    assert!(e.contains("no key matches"), "{e}");

    // Pulled by fingerprint (written any way), into the public ring.
    let lower = format!("0x{}", fpr.to_lowercase());
    let out = stdout(&run_ok(
        veil_k(&home).args(["key", "pull", "--url", &url, &lower]),
    ));
    assert!(out.contains(&format!("Added public key {fpr}")), "{out}");
    assert_eq!(public_keys(&home), vec![fpr.clone()]);
    let out = stdout(&run_ok(
        veil_k(&home).args(["key", "pull", "--url", &url, &fpr]),
    ));
    assert!(out.contains("Updated public key"), "{out}");
    let e = one_line_error(veil_k(&home).args(["key", "pull", "--url", &url, &fpr[24..]]));
    assert!(e.contains("not a fingerprint"), "{e}");
    let absent = "0123456789ABCDEF0123456789ABCDEF01234567";
    let e = one_line_error(veil_k(&home).args(["key", "pull", "--url", &url, absent]));
    assert!(
        e.contains(&format!("no key {absent} on http://127.0.0.1:{}", sks.port)),
        "{e}"
    );

    // The list is asked in order: a keyserver that is down is passed over, with a
    // warning, for the next.
    let dead = format!("hkp://127.0.0.1:{}", free_port());
    let other = tempfile::tempdir().unwrap();
    run_ok(veil_k(other.path()).args(["keyserver", "add", "--order", "1", &dead]));
    run_ok(veil_k(other.path()).args(["keyserver", "add", "--order", "2", &url]));
    let out = run_ok(veil_k(other.path()).args(["key", "pull", &fpr]));
    assert!(stdout(&out).contains("Added public key"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Connection refused"));
}

#[test]
fn veil_pushes_a_key_that_gpg_receives() {
    let sks = require!(Sks::start(), "no keyserver");
    let t = tempfile::tempdir().unwrap();
    let home = t.path().join("home");
    let fpr = veil_newpair(&home, "Veil Signer");
    let out = stdout(&run_ok(veil_k(&home).args([
        "key",
        "push",
        "--url",
        &sks.url(),
        &fpr,
    ])));
    assert!(out.contains(&format!("Pushed public key {fpr}")), "{out}");
    let gpg = Gpg::new(t.path());
    run_ok(
        gpg.cmd()
            .args(["--keyserver", &sks.url(), "--recv-keys", &fpr]),
    );
    let listed = stdout(&run_ok(gpg.cmd().args([
        "--with-colons",
        "--list-keys",
        &fpr,
    ])));
    assert!(listed.contains(&format!("fpr:::::::::{fpr}:")), "{listed}");
    assert!(listed.contains("Veil Signer"), "{listed}");
    // Only the public key travelled.
    assert!(
        run_err(gpg.cmd().args(["--list-secret-keys", &fpr])).contains("No secret key")
            || stdout(
                &gpg.cmd()
                    .args(["--list-secret-keys", &fpr])
                    .output()
                    .unwrap()
            )
            .is_empty()
    );

    // Apptainer's newpair form: the passphrase as -P, published at once with --push.
    let second = t.path().join("second");
    let out = stdout(&run_ok(veil_k(&second).args([
        "key",
        "newpair",
        "-N",
        "Pushed At Once",
        "--type",
        "ed25519",
        "-P",
        "pw",
        "--push",
        "--url",
        &sks.url(),
    ])));
    let fpr2 = out
        .lines()
        .next()
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap()
        .to_string();
    assert!(out.contains(&format!("Pushed public key {fpr2}")), "{out}");
    run_ok(
        gpg.cmd()
            .args(["--keyserver", &sks.url(), "--recv-keys", &fpr2]),
    );
    // export OUTPUT without a key: the only one; with two keys and no terminal, a
    // clear refusal.
    let only = second.join("only.asc");
    run_ok(veil_k(&second).args(["key", "export", "-a"]).arg(&only));
    assert!(
        std::fs::read_to_string(&only)
            .unwrap()
            .contains("BEGIN PGP PUBLIC KEY BLOCK")
    );
    run_ok(
        veil_k(&second)
            .args(["key", "import"])
            .arg(t.path().join("home/.veil/keys/pgp-public")),
    );
    let e = run_err(
        veil_k(&second)
            .args(["key", "export", "-a"])
            .arg(second.join("two.asc"))
            .stdin(Stdio::null()),
    );
    assert!(e.contains("there are 2 public keys"), "{e}");
}

#[test]
fn verify_fetches_a_signer_only_the_keyserver_has() {
    let sks = require!(Sks::start(), "no keyserver");
    let t = tempfile::tempdir().unwrap();
    let signer = t.path().join("signer");
    let user = t.path().join("user");
    std::fs::create_dir_all(&user).unwrap();
    let fpr = veil_newpair(&signer, "Image Signer");
    let img = require!(
        signed_image(&signer, t.path()),
        "shared/testdata is missing"
    );
    run_ok(veil_k(&signer).args(["key", "push", "--url", &sks.url(), &fpr]));

    let out = stdout(&run_ok(
        veil_k(&user)
            .args(["verify", "--url", &sks.url()])
            .arg(&img),
    ));
    assert!(
        out.contains(&format!("[REMOTE]  Fingerprint: {fpr}")),
        "{out}"
    );
    assert!(
        out.contains("[REMOTE]  Signing entity: Image Signer"),
        "{out}"
    );
    assert!(out.contains("Container verified"), "{out}");
    let json = run_ok(
        veil_k(&user)
            .args(["verify", "--json", "--url", &sks.url()])
            .arg(&img),
    );
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["verified"], true);
    assert_eq!(v["signatures"][0]["key_source"], "remote");
    assert_eq!(v["signatures"][0]["fingerprint"], fpr.as_str());
    // Used, not kept.
    assert!(public_keys(&user).is_empty());
    // The keyserver from the variables.
    for var in ["VEIL_KEYSERVER", "APPTAINER_URL", "SINGULARITY_URL"] {
        let out = stdout(&run_ok(
            veil_k(&user).env(var, sks.url()).arg("verify").arg(&img),
        ));
        assert!(out.contains("[REMOTE]"), "{var}: {out}");
    }
    // --local (or its variables): the keyrings alone.
    let e = one_line_error(veil_k(&user).args(["verify", "--local"]).arg(&img));
    assert!(
        e.contains("unknown entity") && e.contains("without --local"),
        "{e}"
    );
    let e = one_line_error(
        veil_k(&user)
            .env("APPTAINER_LOCAL_VERIFY", "t")
            .args(["verify", "--url", &sks.url()])
            .arg(&img),
    );
    assert!(e.contains("without APPTAINER_LOCAL_VERIFY=t"), "{e}");
    // --local with --url makes no sense: refused.
    run_err(
        veil_k(&user)
            .args(["verify", "--local", "--url", &sks.url()])
            .arg(&img),
    );
    // A signer's key at hand: the keyserver settings are not even read (here: a list
    // with no keyserver in it, and a variable veil cannot use).
    run_ok(veil_k(&signer).args(["keyserver", "remove", "https://keys.openpgp.org"]));
    let out = stdout(&run_ok(
        veil_k(&signer)
            .env("APPTAINER_URL", "gopher://x")
            .arg("verify")
            .arg(&img),
    ));
    assert!(out.contains("Container verified"), "{out}");

    // The keyserver down: one line naming it. A signer with the key at hand never
    // asks (the same dead URL), and says [LOCAL].
    let url = sks.url();
    let port = sks.port;
    drop(sks);
    let e = one_line_error(veil_k(&user).args(["verify", "--url", &url]).arg(&img));
    assert!(
        e.contains(&format!("keyserver http://127.0.0.1:{port}")),
        "{e}"
    );
    let out = stdout(&run_ok(
        veil_k(&signer).args(["verify", "--url", &url]).arg(&img),
    ));
    assert!(
        out.contains(&format!("[LOCAL]   Fingerprint: {fpr}")),
        "{out}"
    );
}

/// `packets` as an ASCII-armored public key block (no checksum: RFC 9580 makes it
/// optional).
fn armor(packets: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(packets);
    let mut out = String::from("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap());
        out.push('\n');
    }
    out.push_str("-----END PGP PUBLIC KEY BLOCK-----\n");
    out
}

struct Hostile(std::process::Child, u16);

impl Hostile {
    fn start(mode: &str, key: Option<&Path>) -> Option<Hostile> {
        let py = which("python3")?;
        let mut c = Command::new(py);
        c.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/keyserver/hostile_keyserver.py"))
            .arg(mode)
            .stdout(Stdio::piped());
        if let Some(k) = key {
            c.arg(k);
        }
        let mut server = Hostile(c.spawn().unwrap(), 0);
        let mut line = String::new();
        std::io::BufReader::new(server.0.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        server.1 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(server)
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.1)
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn hostile_keyservers_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let alice = t.path().join("alice");
    let mallory = t.path().join("mallory");
    let user = t.path().join("user");
    std::fs::create_dir_all(&user).unwrap();
    let want = veil_newpair(&alice, "Alice");
    let other = veil_newpair(&mallory, "Mallory");
    let key = t.path().join("mallory.asc");
    run_ok(
        veil_k(&mallory)
            .args(["key", "export", "-a", &other])
            .arg(&key),
    );

    // Another key than the one asked for: refused, nothing stored, and a verification
    // does not take it either.
    let s = require!(Hostile::start("wrongkey", Some(&key)), "python3 is missing");
    let e = one_line_error(veil_k(&user).args(["key", "pull", "--url", &s.url(), &want]));
    assert!(
        e.contains(&format!("not the key {want} asked for: refused")),
        "{e}"
    );
    assert!(e.contains(&other), "{e}");
    assert!(public_keys(&user).is_empty());
    if let Some(img) = signed_image(&alice, t.path()) {
        let e = one_line_error(veil_k(&user).args(["verify", "--url", &s.url()]).arg(&img));
        assert!(e.contains("refused"), "{e}");
    }
    drop(s);

    // A genuine key, served with a user ID its holder never bound (appended by the
    // server): verification works, the user ID is not taken; and the holder's own
    // user ID, full of terminal controls, reaches the screen escaped.
    let evil_home = t.path().join("evil");
    let evil = veil_newpair(&evil_home, "Evil\x1b[2J\rCorp");
    let bin = t.path().join("evil.gpg");
    run_ok(veil_k(&evil_home).args(["key", "export", &evil]).arg(&bin));
    let mut packets = std::fs::read(&bin).unwrap();
    let uid = b"Injected <injected@example.org>";
    packets.push(0xC0 | 13);
    packets.push(uid.len() as u8);
    packets.extend_from_slice(uid);
    let served = t.path().join("evil-served.asc");
    std::fs::write(&served, armor(&packets)).unwrap();
    let s = Hostile::start("wrongkey", Some(&served)).unwrap();
    if let Some(img) = signed_image(&evil_home, &t.path().join("evil")) {
        let out = run_ok(veil_k(&user).args(["verify", "--url", &s.url()]).arg(&img));
        let text = stdout(&out);
        assert!(
            text.contains("[REMOTE]  Signing entity: Evil\\u{1b}[2J\\rCorp"),
            "{text}"
        );
        assert!(!text.contains('\x1b') && !text.contains('\r'), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("came from a keyserver for this check only"),
            "{err}"
        );
    }
    run_ok(veil_k(&user).args(["key", "pull", "--url", &s.url(), &evil]));
    let list = stdout(&run_ok(veil_k(&user).args(["key", "list", "--json"])));
    assert!(list.contains(&evil) && !list.contains("Injected"), "{list}");
    let shown = stdout(&run_ok(veil_k(&user).args(["key", "list"])));
    assert!(!shown.contains('\x1b'), "{shown}");
    drop(s);

    // An endless answer is cut at the cap.
    let s = Hostile::start("huge", None).unwrap();
    let e = one_line_error(veil_k(&user).args(["key", "pull", "--url", &s.url(), &want]));
    assert!(e.contains("larger than 4096 KiB"), "{e}");
    drop(s);

    // Malformed index lines are skipped with a warning; escapes do not reach the
    // terminal.
    let s = Hostile::start("badindex", None).unwrap();
    let out = run_ok(veil_k(&user).args(["key", "search", "--url", &s.url(), "good"]));
    let text = stdout(&out);
    assert!(
        text.contains("AB60BF8FD61BB9FE0CAFD31DD0E6C4F452A71A51"),
        "{text}"
    );
    assert!(text.contains("Good Key <good@example.org>"), "{text}");
    assert!(
        !text.contains('\x1b') && !text.contains("belongs to garbage"),
        "{text}"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("3 line(s)") && err.contains("skipped"),
        "{err}"
    );
    drop(s);

    // A server that never answers: the request ends at the timeout.
    let s = Hostile::start("stall", None).unwrap();
    let start = Instant::now();
    let e = one_line_error(veil_k(&user).env("VEIL_KEYSERVER_TIMEOUT", "2").args([
        "key",
        "pull",
        "--url",
        &s.url(),
        &want,
    ]));
    assert!(e.contains("no answer within 2 s"), "{e}");
    assert!(start.elapsed() < Duration::from_secs(20));
}

#[test]
fn the_keyserver_list_is_kept_in_order() {
    let t = tempfile::tempdir().unwrap();
    let home = t.path();
    let list = |c: &mut Command| stdout(&run_ok(c));
    let out = list(veil_k(home).args(["keyserver", "list"]));
    assert!(
        out.contains("the default") && out.contains("vks  https://keys.openpgp.org"),
        "{out}"
    );
    run_ok(veil_k(home).args(["keyserver", "add", "hkp://127.0.0.1:11371"]));
    run_ok(veil_k(home).args([
        "keyserver",
        "add",
        "--order",
        "1",
        "hkps://keys.example.org",
    ]));
    let out = list(veil_k(home).args(["keyserver", "list"]));
    let rows: Vec<&str> = out.lines().filter(|l| l.starts_with("  ")).collect();
    assert_eq!(
        rows,
        vec![
            "  1  hkp  https://keys.example.org",
            "  2  vks  https://keys.openpgp.org",
            "  3  hkp  http://127.0.0.1:11371",
        ],
        "{out}"
    );
    let e = one_line_error(veil_k(home).args(["keyserver", "add", "hkp://127.0.0.1"]));
    assert!(e.contains("listed already"), "{e}");
    let e = one_line_error(veil_k(home).args(["keyserver", "add", "ftp://x"]));
    assert!(e.contains("not a keyserver URL"), "{e}");
    run_ok(veil_k(home).args(["keyserver", "remove", "https://keys.openpgp.org"]));
    let e = one_line_error(veil_k(home).args(["keyserver", "remove", "https://keys.openpgp.org"]));
    assert!(e.contains("not in the keyserver list"), "{e}");
    let out = list(
        veil_k(home)
            .env("VEIL_KEYSERVER", "hkp://h")
            .args(["keyserver", "list"]),
    );
    assert!(
        out.contains("In use (VEIL_KEYSERVER): http://h:11371"),
        "{out}"
    );
    // A broken list file is named.
    std::fs::write(home.join(".veil/keyservers.json"), "{").unwrap();
    let e = one_line_error(veil_k(home).args([
        "key",
        "pull",
        "0123456789ABCDEF0123456789ABCDEF01234567",
    ]));
    assert!(e.contains("keyservers.json"), "{e}");
}
