//! Replays the gocryptfs fuzz corpus (a real gocryptfs.conf, stored-looking files,
//! plaintexts for the sealed round trip) and every fixed crash input through
//! `fuzz_one`, plus truncated and bit-flipped copies of the seeds, so a regression
//! shows up in an ordinary `cargo test`.

use std::path::Path;

#[test]
fn replay_gocryptfs_corpus_and_artifacts() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut inputs = Vec::new();
    for sub in ["corpus/gocryptfs", "artifacts/gocryptfs"] {
        let Ok(entries) = std::fs::read_dir(fuzz.join(sub)) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_file() {
                inputs.push(std::fs::read(&p).unwrap());
            }
        }
    }
    // The seed corpus is committed: an empty replay would be a silent pass.
    assert!(inputs.len() >= 10, "only {} corpus files", inputs.len());
    for input in &inputs {
        veil_fusefs::gocryptfs::fuzz_one(input);
    }
    // Cuts and flips of the seeds that matter most: the real gocryptfs.conf and the
    // biggest inputs.
    let mut seeds: Vec<&Vec<u8>> = inputs.iter().collect();
    seeds.sort_by_key(|s| (!s.starts_with(b"{"), std::cmp::Reverse(s.len())));
    let mut n = 0;
    for input in seeds.into_iter().take(8) {
        for cut in (0..input.len()).step_by(97) {
            veil_fusefs::gocryptfs::fuzz_one(&input[..cut]);
            n += 1;
        }
        for at in (0..input.len()).step_by(61) {
            let mut m = input.clone();
            m[at] ^= 1 << (at % 8);
            veil_fusefs::gocryptfs::fuzz_one(&m);
            n += 1;
        }
    }
    eprintln!("replayed {} inputs and {n} mutations", inputs.len());
}
