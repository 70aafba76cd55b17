//! Replays the layer fuzz corpus (hostile layer sequences) through the fuzzing entry
//! point, which panics when a layer changed anything outside the staging root, plus
//! truncated and bit-flipped copies of the seeds.

mod common;

use std::path::Path;

#[test]
fn layer_corpus_and_mutations_leave_the_host_alone() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let corpus = common::files_in(&fuzz.join("corpus/layers"));
    assert!(corpus.len() >= 8, "the seed corpus is committed");
    for input in corpus
        .iter()
        .chain(common::files_in(&fuzz.join("artifacts/layers")).iter())
    {
        veil::builder::layer_fuzz::fuzz_one(input);
    }
    for seed in corpus.iter().take(32) {
        for cut in 0..seed.len() {
            veil::builder::layer_fuzz::fuzz_one(&seed[..cut]);
        }
        for at in 0..seed.len() {
            let mut m = seed.clone();
            m[at] = m[at].wrapping_add(1);
            veil::builder::layer_fuzz::fuzz_one(&m);
        }
    }
}
