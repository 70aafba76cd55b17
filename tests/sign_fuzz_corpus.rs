//! Replays the sign fuzz corpus (signed SIFs of every signature kind, a policy file,
//! and what the fuzzer found interesting) and every input that ever crashed through
//! the fuzzing entry point, so a regression shows up without a fuzzing run.

mod common;

use std::path::Path;

#[test]
fn corpus_and_crashes_replay_cleanly() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let corpus = common::files_in(&fuzz.join("corpus/sign"));
    assert!(corpus.len() >= 5, "the seed corpus is committed");
    for input in corpus
        .iter()
        .chain(common::files_in(&fuzz.join("artifacts/sign")).iter())
    {
        veil::sign::fuzz_one(input);
    }
}
