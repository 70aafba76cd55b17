//! Replays the LUKS2 fuzz corpus and every fixed crash input through `fuzz_one`,
//! so a regression shows up in an ordinary `cargo test`.

use std::path::Path;

#[test]
fn replay_luks2_corpus_and_artifacts() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut n = 0;
    for sub in ["corpus/luks2", "artifacts/luks2"] {
        let dir = fuzz.join(sub);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            eprintln!("note: {} does not exist", dir.display());
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_file() {
                let data = std::fs::read(&p).unwrap();
                veil_fusefs::luks2::fuzz_one(&data);
                n += 1;
            }
        }
    }
    // The seed corpus is committed: an empty replay would be a silent pass.
    assert!(
        n >= 3,
        "only {n} corpus files found under {}",
        fuzz.display()
    );
    eprintln!("replayed {n} inputs");
}
