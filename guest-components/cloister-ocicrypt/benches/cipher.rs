//! Streaming layer decryption throughput against its physical floor.
//!
//! 64 MiB of ciphertext is read through [`LayerDecryptReader`] (1 MiB caller buffer, from an
//! in-memory slice, HMAC and digest verified at the end). The floor is AES-256-CTR alone plus
//! HMAC-SHA256 alone over the same bytes; the reader must also hash the plaintext (SHA-256 for the
//! `digest` check), so a second floor adds SHA-256 alone.
//!
//! The run prints Criterion group `layer_cipher`, then a sequential timing (best of N) with the
//! ratios reader / (CTR + HMAC) and reader / (CTR + HMAC + SHA-256).
//!
//! `cargo bench -p cloister-ocicrypt --bench cipher`; `CLOISTER_BENCH_QUICK=1` (or `--test`)
//! makes it short (Criterion: 10 samples, 1 s; 8 MiB for the sequential timing).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::io::Read;
use std::time::{Duration, Instant};

use cloister_ocicrypt::cipher::encrypt_stream;
use cloister_ocicrypt::{LayerDecryptReader, PrivateOptions, PublicOptions};
use criterion::{Criterion, Throughput};
use ctr::cipher::{KeyIvInit, StreamCipher};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

const MIB: usize = 1 << 20;

fn quick() -> bool {
    std::env::var("CLOISTER_BENCH_QUICK").is_ok_and(|v| v == "1" || v == "true")
        || std::env::args().any(|a| a == "--test")
}

struct Fixture {
    ciphertext: Vec<u8>,
    public: PublicOptions,
    private: PrivateOptions,
}

fn fixture(len: usize) -> Fixture {
    let plain: Vec<u8> = (0..len).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let mut ciphertext = Vec::with_capacity(len);
    let s = encrypt_stream(&plain[..], &mut ciphertext).unwrap();
    Fixture { ciphertext, public: s.public_options, private: s.private_options }
}

fn reader_pass(f: &Fixture, buf: &mut [u8]) -> u64 {
    let mut r = LayerDecryptReader::new(&f.ciphertext[..], &f.public, &f.private).unwrap();
    let mut total = 0u64;
    loop {
        let n = r.read(buf).unwrap();
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    assert!(r.is_verified());
    total
}

fn ctr_pass(f: &Fixture, scratch: &mut [u8]) {
    scratch.copy_from_slice(&f.ciphertext);
    let key: &[u8; 32] = &f.private.symkey;
    let mut c = ctr::Ctr128BE::<aes::Aes256>::new(key.into(), (&f.private.nonce).into());
    c.apply_keystream(scratch);
    black_box(&scratch[..16]);
}

fn ctr_only(f: &Fixture, scratch: &mut [u8]) {
    let key: &[u8; 32] = &f.private.symkey;
    let mut c = ctr::Ctr128BE::<aes::Aes256>::new(key.into(), (&f.private.nonce).into());
    c.apply_keystream(scratch);
    black_box(&scratch[..16]);
}

fn hmac_pass(f: &Fixture) {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(f.private.symkey.as_ref()).unwrap();
    m.update(&f.ciphertext);
    black_box(m.finalize().into_bytes());
}

fn sha_pass(f: &Fixture) {
    black_box(Sha256::digest(&f.ciphertext));
}

fn best_of(runs: usize, mut f: impl FnMut()) -> Duration {
    f();
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn main() {
    let q = quick();
    let len = if q { 8 * MIB } else { 64 * MIB };
    let f = fixture(len);
    let mut buf = vec![0u8; MIB];
    let mut scratch = vec![0u8; len];

    let mut c = Criterion::default().configure_from_args();
    c = if q {
        c.sample_size(10).measurement_time(Duration::from_secs(1)).warm_up_time(Duration::from_millis(300))
    } else {
        c.sample_size(10).measurement_time(Duration::from_secs(8)).warm_up_time(Duration::from_secs(1))
    };
    {
        let mut g = c.benchmark_group("layer_cipher");
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function(format!("LayerDecryptReader {} MiB", len / MIB), |b| b.iter(|| reader_pass(&f, &mut buf)));
        g.bench_function("floor AES-256-CTR", |b| b.iter(|| ctr_only(&f, &mut scratch)));
        g.bench_function("floor HMAC-SHA256", |b| b.iter(|| hmac_pass(&f)));
        g.bench_function("SHA-256 (plaintext digest)", |b| b.iter(|| sha_pass(&f)));
        g.finish();
    }
    c.final_summary();

    // Sequential timing for the ratios (best of N, same bytes).
    let runs = if q { 3 } else { 7 };
    let reader = best_of(runs, || {
        reader_pass(&f, &mut buf);
    });
    let copy_ctr = best_of(runs, || ctr_pass(&f, &mut scratch));
    let ctr = best_of(runs, || ctr_only(&f, &mut scratch));
    let hmac = best_of(runs, || hmac_pass(&f));
    let sha = best_of(runs, || sha_pass(&f));
    let gbps = |d: Duration| len as f64 / d.as_secs_f64() / 1e9;
    println!("\nsequential, {} MiB, best of {runs}:", len / MIB);
    println!("  LayerDecryptReader     {:>8.2} ms  {:>6.2} GB/s", reader.as_secs_f64() * 1e3, gbps(reader));
    println!("  AES-256-CTR alone      {:>8.2} ms  {:>6.2} GB/s", ctr.as_secs_f64() * 1e3, gbps(ctr));
    println!("  memcpy + AES-256-CTR   {:>8.2} ms  {:>6.2} GB/s", copy_ctr.as_secs_f64() * 1e3, gbps(copy_ctr));
    println!("  HMAC-SHA256 alone      {:>8.2} ms  {:>6.2} GB/s", hmac.as_secs_f64() * 1e3, gbps(hmac));
    println!("  SHA-256 alone          {:>8.2} ms  {:>6.2} GB/s", sha.as_secs_f64() * 1e3, gbps(sha));
    let floor = ctr + hmac;
    println!("  ratio reader / (CTR + HMAC)           = {:.2}", reader.as_secs_f64() / floor.as_secs_f64());
    println!("  ratio reader / (CTR + HMAC + SHA-256) = {:.2}", reader.as_secs_f64() / (floor + sha).as_secs_f64());
}
