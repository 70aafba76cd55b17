//! Random-offset reads (a property test) and many threads reading at once must
//! return exactly the bytes unsquashfs extracts.

mod common_squashfs;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use common_squashfs::*;
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use veil_fusefs::source::MmapSource;
use veil_fusefs::squashfs::{CacheSizes, InodeId, Options, Squashfs};

struct Fixture {
    _dir: tempfile::TempDir,
    fs: Squashfs<MmapSource>,
    files: Vec<(InodeId, Vec<u8>)>,
}

const NAMES: [&str; 5] = ["random", "text", "sparse", "tail_only", "blocks_and_tail"];

fn build(comp: &str, opts: Options) -> Option<Fixture> {
    if !have_tools(&["mksquashfs", "unsquashfs"]) {
        return None;
    }
    let dir = fast_tempdir();
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    let mut rng = Rng(99);
    std::fs::write(tree.join("random"), rng.bytes(3_000_000)).unwrap();
    let text: String = (0..150_000).map(|i| format!("{i} ")).collect();
    std::fs::write(tree.join("text"), text).unwrap();
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::create(tree.join("sparse")).unwrap();
        f.write_all_at(&rng.bytes(10_000), 500_000).unwrap();
        f.set_len(2_000_000).unwrap();
    }
    std::fs::write(tree.join("tail_only"), rng.bytes(3000)).unwrap();
    std::fs::write(tree.join("blocks_and_tail"), rng.bytes(131_072 * 3 + 777)).unwrap();
    let img = dir.path().join("img");
    mksquashfs(&tree, &img, &["-comp", comp]);
    let out = dir.path().join("out");
    run(Command::new("unsquashfs")
        .arg("-no-progress")
        .arg("-d")
        .arg(&out)
        .arg(&img));
    let fs = Squashfs::open_with(MmapSource::open(&img).unwrap(), opts).unwrap();
    let files = NAMES
        .iter()
        .map(|n| {
            let a = fs.lookup_path(n.as_bytes()).unwrap();
            (a.id, std::fs::read(Path::new(&out).join(n)).unwrap())
        })
        .collect();
    Some(Fixture {
        _dir: dir,
        fs,
        files,
    })
}

fn check(f: &Fixture, file: usize, offset: u64, len: usize) {
    let (id, want) = &f.files[file % f.files.len()];
    let offset = offset % (want.len() as u64 + 10);
    let mut buf = vec![0u8; len];
    let n = f.fs.read(*id, offset, &mut buf).unwrap();
    let start = (offset as usize).min(want.len());
    let end = (start + len).min(want.len());
    assert_eq!(n, end - start);
    assert!(
        buf[..n] == want[start..end],
        "file {file} offset {offset} len {len}"
    );
}

/// Property: any (file, offset, length) reads the extracted bytes. The runner is
/// driven by hand so one image serves all cases and is removed afterwards.
#[test]
fn random_reads_match_extraction() {
    let Some(f) = build("zstd", Options::default()) else {
        return;
    };
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 2000,
        ..ProptestConfig::default()
    });
    let strategy = (
        0usize..5,
        any::<u64>(),
        prop_oneof![1usize..64, 1usize..9000, 100_000usize..400_000],
    );
    runner
        .run(&strategy, |(file, offset, len)| {
            check(&f, file, offset, len);
            Ok(())
        })
        .unwrap();
}

/// Eight threads reading random ranges at once through tiny caches, so blocks
/// are evicted and reloaded concurrently; also a second compressor.
#[test]
fn many_threads_small_caches() {
    let tiny = Options {
        caches: CacheSizes {
            metadata: 64 << 10,
            data: 512 << 10,
            fragments: 256 << 10,
            inodes: 16 << 10,
        },
        ..Options::default()
    };
    let Some(f) = build("gzip", tiny) else { return };
    let f = Arc::new(f);
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let f = f.clone();
            std::thread::spawn(move || {
                let mut rng = Rng(t * 7919 + 1);
                for _ in 0..1500 {
                    let len = (rng.next() % 200_000) as usize + 1;
                    check(&f, rng.next() as usize, rng.next(), len);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}
