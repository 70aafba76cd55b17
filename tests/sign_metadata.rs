//! The integrity streams and metadata JSON against the reference library's golden
//! files (shared/testdata/sif/integrity), without any signing involved.

mod common;

use std::path::Path;

use common::*;
use veil::sif::Sif;
use veil::sign::metadata::{
    DigestAlg, ImageMetadata, descriptor_stream, digest_matches, group_min_id, hash_object,
    header_stream, image_metadata,
};

fn golden(d: &Path, rel: &str) -> String {
    let s = std::fs::read_to_string(d.join("integrity/golden").join(rel)).unwrap();
    s.strip_suffix('\n').unwrap_or(&s).to_string()
}

#[test]
fn header_digest_names_and_values() {
    let d = require!(sif_testdata(), "shared/testdata/sif is missing");
    let stream = std::fs::read(d.join("integrity/sources/header.bin")).unwrap();
    assert_eq!(stream.len(), 61);
    for (file, alg) in [
        ("SHA224", DigestAlg::Sha224),
        ("SHA256", DigestAlg::Sha256),
        ("SHA384", DigestAlg::Sha384),
        ("SHA512", DigestAlg::Sha512),
        ("SHA512_224", DigestAlg::Sha512_224),
        ("SHA512_256", DigestAlg::Sha512_256),
    ] {
        let want = golden(&d, &format!("TestGetHeaderMetadata/{file}.golden"));
        let got = format!(
            "{{\"digest\":\"{}:{}\"}}",
            alg.name(),
            veil::sign::metadata::encode_hex(&alg.hash(&stream))
        );
        assert_eq!(got, want, "{file}");
    }
}

#[test]
fn image_metadata_matches_golden() {
    let d = require!(sif_testdata(), "shared/testdata/sif is missing");
    let sif = Sif::open_path(d.join("images/one-group.sif")).unwrap();
    let min = group_min_id(&sif, 1).unwrap();
    let o1 = sif.object(1).unwrap();
    let o2 = sif.object(2).unwrap();
    for (objs, file) in [
        (vec![o1], "Object1"),
        (vec![o2], "Object2"),
        (vec![o1, o2], "SHA256"),
    ] {
        let json = image_metadata(&sif, min, &objs).unwrap().to_json();
        assert_eq!(
            String::from_utf8(json).unwrap(),
            golden(&d, &format!("TestGetImageMetadata/{file}.golden")),
            "{file}"
        );
    }
    // The library entry point sign uses gives the same bytes.
    let json = veil::sign::signer::metadata_json(&d.join("images/one-group.sif"), 1).unwrap();
    assert_eq!(
        String::from_utf8(json).unwrap(),
        golden(&d, "TestGetImageMetadata/SHA256.golden")
    );
}

#[test]
fn verify_accepts_every_reference_digest_algorithm() {
    // Metadata made with sha224/384/512 (which peers may send) checks out against the
    // same image, digest by digest, and a changed byte does not.
    let d = require!(sif_testdata(), "shared/testdata/sif is missing");
    let sif = Sif::open_path(d.join("images/one-group.sif")).unwrap();
    for file in ["SHA224", "SHA256", "SHA384", "SHA512"] {
        let meta: ImageMetadata =
            serde_json::from_str(&golden(&d, &format!("TestGetImageMetadata/{file}.golden")))
                .unwrap();
        let h = header_stream(sif.header());
        assert!(
            digest_matches(&meta.header.digest, |a| Ok(a.hash(&h))).unwrap(),
            "{file}"
        );
        let mut bad = h;
        bad[0] ^= 1;
        assert!(!digest_matches(&meta.header.digest, |a| Ok(a.hash(&bad))).unwrap());
        for om in meta.objects.as_ref().unwrap() {
            let od = sif.object(1 + om.relative_id).unwrap();
            let ds = descriptor_stream(od, om.relative_id);
            assert!(digest_matches(&om.descriptor_digest, |a| Ok(a.hash(&ds))).unwrap());
            assert!(digest_matches(&om.object_digest, |a| hash_object(&sif, od, a)).unwrap());
        }
    }
    assert!(!digest_matches("md5:d41d8cd98f00b204e9800998ecf8427e", |_| Ok(vec![])).unwrap());
}
