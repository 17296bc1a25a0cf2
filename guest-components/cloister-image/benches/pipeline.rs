//! The per-layer pipeline against its floor, in one run.
//!
//! A gzip layer (a tar of 64 MiB: many small files and a few large ones, half compressible text,
//! half random) is fed in 64 KiB chunks through [`run_layer`]: blob digest, gunzip, diff_id and the
//! safe unpack into a fresh directory on `/dev/shm` (or the temp dir). The floor is gunzip alone
//! (flate2, the same backend) into a sink. The ratio pipeline/floor is what the verification and
//! unpacking cost on top of decompression.
//!
//! `cargo bench -p cloister-image --bench pipeline`; `CLOISTER_BENCH_QUICK=1` (or `--test`) makes
//! it short (8 MiB, 10 samples).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use cloister_image::Digest;
use cloister_image::manifest::Compression;
use cloister_image::pipeline::{LayerJob, run_layer};
use cloister_image::unpack::UnpackOptions;
use criterion::{Criterion, Throughput};

fn quick() -> bool {
    std::env::var("CLOISTER_BENCH_QUICK").is_ok_and(|v| v == "1" || v == "true")
        || std::env::args().any(|a| a == "--test")
}

fn layer(total: usize) -> (Vec<u8>, Vec<u8>) {
    let mut b = tar::Builder::new(Vec::new());
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    };
    let text: Vec<u8> =
        b"the quick brown fox jumps over the lazy dog; ".iter().copied().cycle().take(1 << 20).collect();
    let mut written = 0;
    let mut i = 0;
    while written < total {
        let (size, data) = if i % 64 == 0 {
            (1 << 20, if i % 128 == 0 { text.clone() } else { rnd(1 << 20) })
        } else {
            let n = 512 + (i * 97) % 8192;
            (n, if i % 2 == 0 { text[..n].to_vec() } else { rnd(n) })
        };
        let mut h = tar::Header::new_gnu();
        h.set_size(size as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_577_836_800);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, format!("d{}/f{i}", i % 32), &data[..]).unwrap();
        written += size;
        i += 1;
    }
    let tar = b.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    gz.write_all(&tar).unwrap();
    (tar, gz.finish().unwrap())
}

fn scratch() -> PathBuf {
    let shm = PathBuf::from("/dev/shm");
    if shm.is_dir() { shm } else { std::env::temp_dir() }
}

fn pipeline_once(tar_digest: Digest, gz: &[u8], base: &std::path::Path) {
    let dest = tempfile::tempdir_in(base).unwrap();
    let root = dest.path().join("layer");
    std::fs::create_dir(&root).unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(cloister_image::pipeline::CHANNEL_DEPTH);
    let chunks: Vec<Bytes> = gz.chunks(64 * 1024).map(Bytes::copy_from_slice).collect();
    let feeder = std::thread::spawn(move || {
        for c in chunks {
            if tx.blocking_send(Ok(c)).is_err() {
                return;
            }
        }
    });
    let job = LayerJob {
        digest: Digest::of(gz),
        size: gz.len() as u64,
        diff_id: tar_digest,
        compression: Compression::Gzip,
        decrypt: None,
        dest: root,
        opts: UnpackOptions { same_owner: false },
    };
    black_box(run_layer(job, rx).unwrap());
    feeder.join().unwrap();
}

fn floor_once(gz: &[u8]) {
    let mut d = flate2::read::MultiGzDecoder::new(gz);
    let mut buf = vec![0u8; 256 * 1024];
    let mut n = 0usize;
    loop {
        let k = d.read(&mut buf).unwrap();
        if k == 0 {
            break;
        }
        n += k;
    }
    black_box(n);
}

fn main() {
    let q = quick();
    let (tar, gz) = layer(if q { 8 << 20 } else { 64 << 20 });
    let tar_digest = Digest::of(&tar);
    let base = scratch();
    let mut c = Criterion::default()
        .sample_size(10)
        .measurement_time(Duration::from_secs(if q { 1 } else { 8 }))
        .warm_up_time(Duration::from_millis(if q { 200 } else { 1000 }));
    let mut g = c.benchmark_group("layer_pipeline");
    g.throughput(Throughput::Bytes(tar.len() as u64));
    g.bench_function("floor: gunzip alone", |b| b.iter(|| floor_once(&gz)));
    g.bench_function("pipeline: digest+gunzip+diff_id+unpack", |b| b.iter(|| pipeline_once(tar_digest, &gz, &base)));
    g.finish();

    // One sequential comparison for the ratio (best of N).
    let best = |f: &dyn Fn()| {
        (0..if q { 2 } else { 5 })
            .map(|_| {
                let t = std::time::Instant::now();
                f();
                t.elapsed()
            })
            .min()
            .unwrap()
    };
    let floor = best(&|| floor_once(&gz));
    let pipe = best(&|| pipeline_once(tar_digest, &gz, &base));
    let mib = tar.len() as f64 / (1 << 20) as f64;
    println!(
        "layer {mib:.0} MiB tar ({:.0} MiB gzip): floor {:.0} ms ({:.0} MiB/s), pipeline {:.0} ms ({:.0} MiB/s), ratio {:.2}",
        gz.len() as f64 / (1 << 20) as f64,
        floor.as_secs_f64() * 1e3,
        mib / floor.as_secs_f64(),
        pipe.as_secs_f64() * 1e3,
        mib / pipe.as_secs_f64(),
        pipe.as_secs_f64() / floor.as_secs_f64()
    );
}
