//! Replays the SIF fuzz corpus, every input that ever crashed, and truncated and
//! bit-flipped copies of the reference images through the fuzzing entry point, so a
//! regression shows up in a normal test run without a fuzzing run.

mod common;

use std::path::Path;

#[test]
fn corpus_and_crashes_replay_cleanly() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let corpus = common::files_in(&fuzz.join("corpus/sif"));
    assert!(corpus.len() >= 10, "the seed corpus is committed");
    for input in corpus
        .iter()
        .chain(common::files_in(&fuzz.join("artifacts/sif")).iter())
    {
        veil::sif::fuzz_one(input);
    }
}

#[test]
fn mutated_reference_images_never_panic() {
    let shared = require!(common::shared_dir(), "shared/ is not beside the repository");
    let mut n = 0;
    for img in common::files_in(&shared.join("testdata/sif/images")) {
        // Every truncation point in the header and table region, then coarser ones.
        let cuts = (0..img.len().min(33_000))
            .step_by(7)
            .chain((33_000..img.len()).step_by(4093));
        for cut in cuts {
            veil::sif::fuzz_one(&img[..cut]);
            n += 1;
        }
        // Bit flips across the header and the first descriptors, with a cheap LCG so the
        // positions are the same on every run.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..3000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let mut m = img.clone();
            let region = if x & 1 == 0 {
                128
            } else {
                (4096 + 585 * 6).min(m.len())
            };
            let pos = ((x >> 16) as usize) % region;
            m[pos] ^= 1 << ((x >> 8) & 7);
            veil::sif::fuzz_one(&m);
            n += 1;
        }
    }
    assert!(n > 50_000, "{n} inputs");
}
