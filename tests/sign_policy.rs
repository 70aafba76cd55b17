//! The run-time policy check and the build-time `Fingerprints:` check, through the
//! library API that `run/exec/shell --verify` and `build` call.

mod common;

use std::path::PathBuf;

use common::*;
use veil::sign::keyring::read_key_file;
use veil::sign::policy::{Mode, Policy, Verdict, check};
use veil::sign::{SignError, check_fingerprints};

const FPR: &str = "12045C8C0B1004D058DE4BEDA20C27EE7FF7BA84";
const OTHER: &str = "0123456789ABCDEF0123456789ABCDEF01234567";

fn img(name: &str) -> Option<PathBuf> {
    sif_testdata().map(|d| d.join("images").join(name))
}

fn open(path: &std::path::Path) -> std::fs::File {
    std::fs::File::open(path).unwrap()
}

fn policy(text: &str) -> Policy {
    let d = sif_testdata().unwrap();
    let mut p = Policy::parse(text, "test.policy").unwrap();
    p.certs = read_key_file(&d.join("keys/public.asc")).unwrap();
    p
}

fn refused(v: Verdict) -> String {
    match v {
        Verdict::Refused { reason } => reason,
        Verdict::Allowed { .. } => panic!("allowed"),
    }
}

#[test]
fn verify_flag_policy() {
    let signed = require!(
        img("two-groups-signed-pgp.sif"),
        "shared/testdata/sif is missing"
    );
    let p = policy("");
    assert_eq!(p.mode, Mode::Signed);
    assert_eq!(
        check(&signed, &p).unwrap(),
        Verdict::Allowed {
            signers: vec![FPR.into()]
        }
    );
    let r = refused(check(&img("two-groups.sif").unwrap(), &p).unwrap());
    assert_eq!(
        r,
        "image signature not valid: signature not found for object group 1"
    );
    // Signed by a key we do not have.
    let mut nokeys = policy("");
    nokeys.certs.clear();
    let r = refused(check(&signed, &nokeys).unwrap());
    assert!(r.contains("signature made by unknown entity"), "{r}");
    // ... with the way to get the key (trust checks never ask a keyserver).
    assert!(r.contains(&format!("`veil key pull {FPR}`")), "{r}");
    // Legacy images are refused unless the policy opts in.
    let legacy = img("one-group-signed-legacy.sif").unwrap();
    refused(check(&legacy, &p).unwrap());
    assert!(
        check(&legacy, &policy("legacy-insecure = true"))
            .unwrap()
            .is_allowed()
    );
    // DSSE: refused with a clear reason (policies trust OpenPGP keys only).
    let r = refused(check(&img("one-group-signed-dsse.sif").unwrap(), &p).unwrap());
    assert!(
        r.contains("key material not provided for DSSE envelope signature"),
        "{r}"
    );
    // Not a SIF at all: an error, not a verdict.
    let d = sif_testdata().unwrap();
    assert!(matches!(
        check(&d.join("keys/public.asc"), &p),
        Err(SignError::Sif(_))
    ));
}

#[test]
fn fingerprint_modes() {
    let signed = require!(
        img("two-groups-signed-pgp.sif"),
        "shared/testdata/sif is missing"
    );
    let wl = |fps: &[&str], mode: &str| {
        let mut t = format!("mode = {mode}\n");
        for f in fps {
            t.push_str(&format!("fingerprint = {f}\n"));
        }
        check(&signed, &policy(&t)).unwrap()
    };
    assert!(wl(&[FPR], "whitelist").is_allowed());
    assert!(wl(&[&FPR.to_lowercase()], "whitelist").is_allowed());
    assert!(wl(&[OTHER, FPR], "whitelist").is_allowed());
    assert_eq!(
        refused(wl(&[OTHER], "whitelist")),
        "image not signed by required entities"
    );
    assert!(wl(&[FPR], "whitestrict").is_allowed());
    refused(wl(&[FPR, OTHER], "whitestrict"));
    assert!(wl(&[OTHER], "blacklist").is_allowed());
    assert_eq!(
        refused(wl(&[FPR], "blacklist")),
        "image signed by a forbidden entity"
    );
    // A blacklist still requires a verified signature.
    let r = refused(
        check(
            &img("one-group.sif").unwrap(),
            &policy(&format!("mode = blacklist\nfingerprint = {OTHER}")),
        )
        .unwrap(),
    );
    assert!(r.contains("signature not found"), "{r}");
}

#[test]
fn policy_file_syntax() {
    let d = require!(sif_testdata(), "shared/testdata/sif is missing");
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("veil.policy");
    std::fs::write(
        &f,
        format!(
            "# trusted builders\nmode = whitestrict\nfingerprint = {FPR}  # unit test key\n\
             keyring = {}\nuser-keyrings = false\n",
            d.join("keys/public.asc").display()
        ),
    )
    .unwrap();
    let p = Policy::load(&f, None).unwrap();
    assert_eq!(p.mode, Mode::Whitestrict);
    assert_eq!(p.fingerprints, vec![FPR.to_string()]);
    assert_eq!(p.certs.len(), 1);
    assert!(
        check(&img("one-group-signed-pgp.sif").unwrap(), &p)
            .unwrap()
            .is_allowed()
    );

    // Fingerprints without a mode mean a whitelist.
    assert_eq!(
        Policy::parse(&format!("fingerprint = {FPR}"), "x")
            .unwrap()
            .mode,
        Mode::Whitelist
    );
    for (text, want) in [
        ("mode = maybe", "line 1: unknown mode"),
        (
            "fingerprint = 1234",
            "line 1: fingerprint \"1234\" is not 40 hex digits",
        ),
        ("\n\nfrobnicate = 1", "line 3: unknown setting"),
        ("legacy-insecure = yes", "must be true or false"),
        ("no equals sign", "expected `key = value`"),
        ("mode = whitelist", "needs at least one fingerprint"),
    ] {
        let e = Policy::parse(text, "x.policy").unwrap_err().to_string();
        assert!(e.contains(want), "{text:?}: {e}");
        assert!(e.starts_with("policy x.policy: line "), "{e}");
    }
}

#[test]
fn build_fingerprints_check() {
    let signed = require!(
        img("one-group-signed-pgp.sif"),
        "shared/testdata/sif is missing"
    );
    let d = sif_testdata().unwrap();
    let certs = read_key_file(&d.join("keys/public.asc")).unwrap();
    assert!(
        check_fingerprints(&open(&signed), &[FPR.into()], &certs)
            .unwrap()
            .is_allowed()
    );
    assert!(
        check_fingerprints(&open(&signed), &[OTHER.into(), FPR.to_lowercase()], &certs)
            .unwrap()
            .is_allowed()
    );
    refused(check_fingerprints(&open(&signed), &[OTHER.into()], &certs).unwrap());
    refused(
        check_fingerprints(&open(&img("one-group.sif").unwrap()), &[FPR.into()], &certs).unwrap(),
    );
    refused(check_fingerprints(&open(&signed), &[FPR.into()], &[]).unwrap());
    assert!(check_fingerprints(&open(&signed), &["nope".into()], &certs).is_err());
    assert!(check_fingerprints(&open(&signed), &[], &certs).is_err());
}
