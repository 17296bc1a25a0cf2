//! Launch-digest cost against its physical floor, in one run.
//!
//! The floor is one plain SHA-384 pass over the same firmware bytes (`floor/sha384_pass`, ring's
//! assembly SHA-384): the SNP digest must hash every page, so a serial implementation cannot do less
//! work than that. The goal is `snp/*` within 1.5x of the floor. `pages/*` shows where the
//! time goes: scalar per-page hashing (ring) against the multi-buffer AVX-512 path (`simd`). Uses the real 4 MiB Debian `OVMF.amdsev.fd` when
//! `CLOISTER_FIXTURES` is set, otherwise a synthetic image of the same size.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use cloister_measure::digest::{sha384, sha384_pages};
use cloister_measure::snp::{self, SnpParams};
use cloister_measure::tdx::{PageOrder, mrtd};
use cloister_measure::{FirmwareImage, KernelHashes};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn firmware() -> Vec<u8> {
    if let Some(root) = std::env::var_os("CLOISTER_FIXTURES") {
        let p = std::path::Path::new(&root).join("firmware/debian-sid/OVMF.amdsev.fd");
        if let Ok(b) = std::fs::read(p) {
            return b;
        }
    }
    eprintln!("CLOISTER_FIXTURES not set: benchmarking a synthetic 4 MiB image");
    let mut img: Vec<u8> = (0..4u32 << 20).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8).collect();
    // A footer table with the SEV-ES reset block so VMSAs can be built.
    let footer = [0xde, 0x82, 0xb5, 0x96, 0xb2, 0x1f, 0xf7, 0x45, 0xba, 0xea, 0xa3, 0x66, 0xc5, 0x5a, 0x08, 0x2d];
    let reset = [0xde, 0x71, 0xf7, 0x00, 0x7e, 0x1a, 0xcb, 0x4f, 0x89, 0x0e, 0x68, 0xc7, 0x7e, 0x2f, 0xb4, 0x4e];
    let mut t = 0x80b004u32.to_le_bytes().to_vec();
    t.extend_from_slice(&22u16.to_le_bytes());
    t.extend_from_slice(&reset);
    t.extend_from_slice(&40u16.to_le_bytes());
    t.extend_from_slice(&footer);
    let end = img.len() - 32;
    img[end - t.len()..end].copy_from_slice(&t);
    img
}

fn bench(c: &mut Criterion) {
    let bytes = firmware();
    let fw = FirmwareImage::parse(&bytes).expect("firmware");
    let mut g = c.benchmark_group("snp_4MiB");
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.sample_size(30);
    g.bench_function("floor/sha384_pass", |b| b.iter(|| sha384(black_box(&bytes))));
    g.bench_function("pages/scalar_per_page", |b| {
        b.iter(|| black_box(&bytes).chunks_exact(4096).map(sha384).collect::<Vec<_>>())
    });
    g.bench_function("pages/multibuffer_1thread", |b| b.iter(|| sha384_pages(black_box(&bytes), 1)));
    g.bench_function("pages/multibuffer_2threads", |b| b.iter(|| sha384_pages(black_box(&bytes), 2)));
    g.bench_function("snp/ovmf_hash_1thread", |b| b.iter(|| snp::ovmf_hash(black_box(&fw), 1).expect("digest")));
    g.bench_function("snp/ovmf_hash_2threads", |b| b.iter(|| snp::ovmf_hash(black_box(&fw), 2).expect("digest")));
    let mut p = SnpParams::qemu(4, 0x800f12);
    p.threads = 1;
    p.kernel_hashes = fw
        .sev_hashes_table_gpa()
        .ok()
        .filter(|g| *g != 0)
        .map(|_| KernelHashes::from_contents(b"kernel", Some(b"initrd"), Some("console=ttyS0")));
    g.bench_function("snp/launch_digest_4vcpus_1thread", |b| {
        b.iter(|| snp::launch_digest(black_box(&fw), &p).expect("digest"))
    });
    p.threads = 2;
    g.bench_function("snp/launch_digest_4vcpus_2threads", |b| {
        b.iter(|| snp::launch_digest(black_box(&fw), &p).expect("digest"))
    });
    // With the firmware part precomputed (--snp-ovmf-hash), only metadata and VMSAs remain.
    p.ovmf_hash = Some(snp::ovmf_hash(&fw, 2).expect("digest"));
    g.bench_function("snp/launch_digest_seeded", |b| {
        b.iter(|| snp::launch_digest(black_box(&fw), &p).expect("digest"))
    });
    g.finish();
}

/// TDX MRTD against the same floor: one SHA-384 pass over the image. MRTD hashes each measured
/// 256-byte chunk behind a 128-byte record (plus one record per page), so it must feed the hash
/// about 1.5x the image bytes; 1.5x the floor is the serial optimum.
fn bench_tdx(c: &mut Criterion) {
    let Some(root) = std::env::var_os("CLOISTER_FIXTURES") else {
        eprintln!("CLOISTER_FIXTURES not set: skipping the TDX benchmark (needs a real TDVF image)");
        return;
    };
    let Ok(bytes) = std::fs::read(std::path::Path::new(&root).join("firmware/debian-sid/OVMF.inteltdx.ms.fd")) else {
        return;
    };
    let mut g = c.benchmark_group("tdx_4MiB");
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.sample_size(30);
    g.bench_function("floor/sha384_pass", |b| b.iter(|| sha384(black_box(&bytes))));
    for order in [PageOrder::SinglePass, PageOrder::TwoPass] {
        g.bench_function(format!("mrtd/{}", order.cli_name()), |b| {
            b.iter(|| mrtd(black_box(&bytes), order).expect("mrtd"))
        });
    }
    g.finish();
}

criterion_group!(benches, bench, bench_tdx);
criterion_main!(benches);
