//! Mutated signed images never panic the verifier, and a change inside signed object
//! data never verifies.

mod common;

use common::*;
use veil::sif::Sif;
use veil::sign::keyring::read_key_file;
use veil::sign::{VerifyOptions, verify};

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn mutations_fail_cleanly() {
    let d = require!(sif_testdata(), "shared/testdata/sif is missing");
    let certs = read_key_file(&d.join("keys/public.asc")).unwrap();
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut rejected = 0;
    for name in [
        "one-group-signed-pgp.sif",
        "two-groups-signed-pgp.sif",
        "one-group-signed-legacy-group.sif",
    ] {
        let orig = std::fs::read(d.join("images").join(name)).unwrap();
        let sif = Sif::open(&orig[..]).unwrap();
        // Byte ranges of the signed (non-signature) objects.
        let signed: Vec<(usize, usize)> = sif
            .objects()
            .filter(|o| o.data_type != veil::sif::DataType::Signature)
            .map(|o| (o.offset as usize, (o.offset + o.size) as usize))
            .collect();
        let legacy = name.contains("legacy");
        let opts = VerifyOptions {
            legacy,
            groups: if legacy { vec![1] } else { vec![] },
            ..Default::default()
        };
        assert!(
            verify(&sif, &certs, &opts).is_ok(),
            "{name} must verify unmodified"
        );
        for _ in 0..150 {
            let mut buf = orig.clone();
            for _ in 0..1 + rng.next() % 3 {
                // Mostly the descriptor table and the data; sometimes the header.
                let at = if rng.next().is_multiple_of(8) {
                    (rng.next() % 128) as usize
                } else {
                    4096 + (rng.next() as usize) % (buf.len() - 4096)
                };
                let mask = 1u8 << (rng.next() % 8);
                buf[at] ^= mask;
            }
            let hit_signed = signed.iter().any(|&(s, e)| buf[s..e] != orig[s..e]);
            veil::sign::fuzz_one(&buf);
            let Ok(m) = Sif::open(&buf[..]) else {
                continue;
            };
            let out = verify(&m, &certs, &opts);
            if hit_signed {
                assert!(
                    !out.is_ok(),
                    "{name}: a changed signed object still verifies"
                );
            }
            if !out.is_ok() {
                rejected += 1;
            }
        }
    }
    assert!(rejected > 0);
}
