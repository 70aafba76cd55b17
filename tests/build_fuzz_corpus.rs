//! Replays the fuzz corpora of the definition-file parser and of the ELF reader that
//! chooses what to prewarm (seeds, what the fuzzer kept, every input that ever broke an
//! invariant), plus truncated, bit-flipped and spliced copies of the seeds, through
//! the fuzzing entry points, whose invariant checks panic: a regression shows up here
//! without a fuzzing run.

mod common;

use std::path::Path;

fn corpus(target: &str, at_least: usize) -> Vec<Vec<u8>> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let seeds = common::files_in(&fuzz.join("corpus").join(target));
    assert!(
        seeds.len() >= at_least,
        "the {target} seed corpus is committed"
    );
    seeds
        .into_iter()
        .chain(common::files_in(&fuzz.join("artifacts").join(target)))
        .collect()
}

/// Every input, then cuts and bit flips of the biggest ones; returns how many ran.
fn replay(inputs: &[Vec<u8>], step: usize, one: impl Fn(&[u8])) -> usize {
    let mut n = 0;
    for input in inputs {
        one(input);
        n += 1;
    }
    let mut seeds: Vec<&Vec<u8>> = inputs.iter().collect();
    seeds.sort_by_key(|s| std::cmp::Reverse(s.len()));
    for seed in seeds.into_iter().take(16) {
        let len = seed.len().min(4096);
        for cut in (0..len).step_by(step) {
            one(&seed[..cut]);
            n += 1;
        }
        for at in (0..len).step_by(step * 2 + 1) {
            let mut m = seed.clone();
            m[at] ^= 1 << (at % 8);
            one(&m);
            n += 1;
        }
    }
    n
}

#[test]
fn recipe_corpus_and_mutations_keep_the_invariants() {
    let inputs = corpus("recipe", 20);
    let mut n = replay(&inputs, 11, veil::builder::recipe::fuzz_one);
    // Sections of one file spliced into another: headers, bodies and placeholders in
    // combinations the seeds do not have.
    for (i, a) in inputs.iter().enumerate().take(24) {
        for b in inputs.iter().skip(i + 1).take(24) {
            let (ha, hb) = (a.len() / 2, b.len() / 2);
            veil::builder::recipe::fuzz_one(&[&a[..ha], &b[hb..]].concat());
            veil::builder::recipe::fuzz_one(&[&b[..hb], b"\r\n%post\r\n", &a[ha..]].concat());
            n += 2;
        }
    }
    assert!(n > 2000, "{n} inputs");
}

#[test]
fn elf_corpus_and_mutations_keep_offsets_inside_the_file() {
    let inputs = corpus("elf", 5);
    let n = replay(&inputs, 5, veil::launch::fuzz_elf);
    assert!(n > 1000, "{n} inputs");
}

/// The reader on whole real programs (not only their first page): what the host has.
#[test]
fn elf_reader_keeps_offsets_inside_real_programs() {
    let mut n = 0;
    for p in [
        "/bin/sh",
        "/bin/busybox",
        "/usr/bin/busybox",
        "/usr/bin/env",
        "/lib64/ld-linux-x86-64.so.2",
    ] {
        if let Ok(b) = std::fs::read(p) {
            veil::launch::fuzz_elf(&b);
            // A program cut short keeps its headers but loses the segments they name.
            veil::launch::fuzz_elf(&b[..b.len().min(8192)]);
            n += 1;
        }
    }
    require!((n > 0).then_some(()), "no program found to read");
}
