//! Replays the crypt fuzz corpus (keys in every accepted format, a crypto message, and
//! what the fuzzer found interesting), plus truncated and bit-flipped copies of the
//! seeds, through the fuzzing entry point: a parser regression shows up here without a
//! fuzzing run.

mod common;

use std::path::Path;

#[test]
fn corpus_and_mutations_replay_cleanly() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let corpus = common::files_in(&fuzz.join("corpus/crypt"));
    assert!(corpus.len() >= 8, "the seed corpus is committed");
    for input in corpus
        .iter()
        .chain(common::files_in(&fuzz.join("artifacts/crypt")).iter())
    {
        veil::crypt::fuzz_one(input);
    }
    // The biggest inputs are whole keys and messages: mutate those.
    let mut seeds: Vec<&Vec<u8>> = corpus.iter().collect();
    seeds.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let mut n = 0;
    for seed in seeds.into_iter().take(16) {
        for cut in (0..seed.len()).step_by(7) {
            veil::crypt::fuzz_one(&seed[..cut]);
            n += 1;
        }
        for at in (0..seed.len()).step_by(13) {
            let mut m = seed.clone();
            m[at] ^= 1 << (at % 8);
            veil::crypt::fuzz_one(&m);
            n += 1;
        }
    }
    assert!(n > 1000, "{n} mutations");
}
