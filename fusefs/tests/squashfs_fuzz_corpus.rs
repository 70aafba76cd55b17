//! Replays the fuzz corpus and every saved crash input through `fuzz_one`, then
//! feeds truncated and bit-flipped versions of real mksquashfs images to the
//! reader: errors are fine, panics and hangs are not.

mod common_squashfs;

use std::path::PathBuf;

use common_squashfs::*;
use veil_fusefs::squashfs::{Squashfs, fuzz_one};

fn fuzz_dir(sub: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz")
        .join(sub)
        .join("squashfs")
}

#[test]
fn corpus_and_artifacts_replay() {
    let mut n = 0;
    for dir in [fuzz_dir("corpus"), fuzz_dir("artifacts")] {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            eprintln!("no {} (nothing to replay there)", dir.display());
            continue;
        };
        for e in rd {
            let p = e.unwrap().path();
            if p.is_file() {
                fuzz_one(&std::fs::read(&p).unwrap());
                n += 1;
            }
        }
    }
    eprintln!("replayed {n} inputs");
    assert!(n > 0, "the committed seed corpus is missing");
}

/// Small real images, one per compressor this mksquashfs has.
fn small_images() -> Vec<(String, Vec<u8>)> {
    let work = fast_tempdir();
    let tree = work.path().join("tree");
    std::fs::create_dir_all(tree.join("d/e")).unwrap();
    let mut rng = Rng(7);
    std::fs::write(tree.join("d/f"), b"hello").unwrap();
    std::fs::write(tree.join("rnd"), rng.bytes(9000)).unwrap();
    std::fs::write(tree.join("text"), "abc ".repeat(5000)).unwrap();
    for i in 0..300 {
        std::fs::write(tree.join("d/e").join(format!("n{i}")), i.to_string()).unwrap();
    }
    std::os::unix::fs::symlink("d/f", tree.join("l")).unwrap();
    let _ = std::process::Command::new("setfattr")
        .args(["-n", "user.x", "-v", "y"])
        .arg(tree.join("d/f"))
        .output();
    let mut out = Vec::new();
    for c in compressors() {
        let img = work.path().join(format!("{c}.sqfs"));
        mksquashfs(&tree, &img, &["-comp", &c, "-b", "4096", "-nopad"]);
        out.push((c, std::fs::read(&img).unwrap()));
    }
    out
}

#[test]
fn truncated_and_bit_flipped_images() {
    if !have_tools(&["mksquashfs"]) {
        return;
    }
    let start = std::time::Instant::now();
    let mut runs = 0;
    for (comp, img) in small_images() {
        // The intact image opens and walks.
        let fs = Squashfs::open(img.as_slice()).unwrap_or_else(|e| panic!("{comp}: {e}"));
        let mut count = 0;
        fs.walk(|_, _| {
            count += 1;
            Ok(())
        })
        .unwrap();
        assert!(count > 300, "{comp}: walk found {count} nodes");
        // Truncated anywhere: open refuses (bytes_used is past the end) or, for cuts
        // inside the superblock, says it is not an image.
        for cut in (0..img.len()).step_by(61) {
            assert!(
                Squashfs::open(&img[..cut]).is_err(),
                "{comp}: truncated at {cut} opened"
            );
            fuzz_one(&img[..cut]);
            runs += 1;
        }
        // Bit flips and byte smashes at pseudo-random places, a few at a time.
        let mut rng = Rng(0xf00d ^ img.len() as u64);
        for _ in 0..800 {
            let mut m = img.clone();
            for _ in 0..1 + rng.next() % 3 {
                let at = (rng.next() % m.len() as u64) as usize;
                if rng.next().is_multiple_of(4) {
                    m[at] = rng.next() as u8;
                } else {
                    m[at] ^= 1 << (rng.next() % 8);
                }
            }
            let t = std::time::Instant::now();
            fuzz_one(&m);
            if t.elapsed().as_millis() > 200 {
                eprintln!("{comp}: slow damaged image ({:?})", t.elapsed());
                if std::env::var_os("SAVE_SLOW").is_some() {
                    std::fs::write(format!("/tmp/slow-{comp}-{runs}"), &m).unwrap();
                }
            }
            runs += 1;
        }
    }
    eprintln!("{runs} damaged images in {:?}", start.elapsed());
}
