//! SIF parsing cost: opening and validating an image (header + 48-slot descriptor table),
//! and rendering its listing. Opening is on the path of every `veil run`.

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use veil::sif::{CreateOptions, DataType, NewObject, ObjectData, Sif, create, report};

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.sif");
    let payloads: Vec<Vec<u8>> = (0..40).map(|i| vec![i as u8; 1000 + i * 37]).collect();
    let objects = payloads
        .iter()
        .map(|p| {
            let mut o = NewObject::new(DataType::Generic, ObjectData::Bytes(p));
            o.group = 1;
            o
        })
        .collect();
    create(&path, &CreateOptions::default(), objects).unwrap();
    let bytes = std::fs::read(&path).unwrap();

    c.bench_function("sif/open_in_memory_40_objects", |b| {
        b.iter(|| Sif::open(black_box(&bytes[..])).unwrap().objects().count())
    });
    c.bench_function("sif/open_file_40_objects", |b| {
        b.iter(|| Sif::open_path(black_box(&path)).unwrap().objects().count())
    });
    let sif = Sif::open(&bytes[..]).unwrap();
    c.bench_function("sif/list_text_40_objects", |b| {
        b.iter(|| report::list_text(black_box(&sif).objects()).len())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
