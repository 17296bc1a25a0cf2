//! TDX quote verification cost (criterion; needs `CLOISTER_FIXTURES`, else prints a skip message).
//!
//! On the T1 sample (TDX quote v4 with its dcap-qvl collateral, `now` pinned):
//! (a) the floor of a cached verification: three ECDSA P-256 verifications with ring (PCK leaf by
//!     its CA, QE report by the PCK key, quote by the attestation key);
//! (b) `TdxVerifier::verify` with the collateral already verified and cached (goal ≤ 1.3 × a);
//! (c) `TdxVerifier::verify_uncached`, verifying the collateral and the whole chain every time;
//! (d) dcap-qvl 0.7 (ring backend) `verify` on the same quote and collateral (goal c ≤ d);
//! and, for reference, parsing the quote. Criterion measures the variants one after another; the
//! run ends with interleaved medians of all four, which are robust to a changing machine load.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

use cloister_evidence::tdx::Quote;
use cloister_verifier::tdx::{TdxCollateral, TdxVerifier};
use criterion::{Criterion, criterion_group, criterion_main};
use ring::signature::{ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};
use x509_parser::prelude::{FromDer, X509Certificate};

const NOW_T1: u64 = 1_751_624_191;

fn read(root: &std::path::Path, rel: &str) -> Vec<u8> {
    std::fs::read(root.join(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
}

/// DER certificates of the PEM chain in the quote.
fn pem_chain(pem: &[u8]) -> Vec<Vec<u8>> {
    let text = String::from_utf8_lossy(pem);
    text.split("-----BEGIN CERTIFICATE-----")
        .skip(1)
        .filter_map(|b| b.split("-----END CERTIFICATE-----").next())
        .map(|b| {
            let b64: String = b.chars().filter(|c| !c.is_whitespace()).collect();
            base64_decode(&b64)
        })
        .collect()
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes().filter(|c| *c != b'=') {
        acc = (acc << 6) | u32::from(val(c));
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

fn bench(c: &mut Criterion) {
    let Some(root) = std::env::var_os("CLOISTER_FIXTURES").filter(|p| !p.is_empty()) else {
        eprintln!("skipping the TDX benchmark: CLOISTER_FIXTURES is not set");
        return;
    };
    let root = PathBuf::from(root).join("evidence");
    let quote = read(&root, "dcap-qvl/tdx_quote");
    let json = read(&root, "dcap-qvl/tdx_quote_collateral.json");
    let ours = TdxCollateral::from_json(&json).expect("collateral");
    let theirs: dcap_qvl::QuoteCollateralV3 = serde_json::from_slice(&json).expect("dcap-qvl collateral");

    // The three signatures of the cached path, prepared outside the loop.
    let parsed = Quote::parse(&quote).expect("quote");
    let sig = parsed.signature_data();
    let chain = pem_chain(&sig.certification.data);
    let (_, leaf) = X509Certificate::from_der(&chain[0]).expect("PCK certificate");
    let (_, ca) = X509Certificate::from_der(&chain[1]).expect("PCK CA certificate");
    let leaf_tbs = leaf.tbs_certificate.as_ref().to_vec();
    let leaf_sig = leaf.signature_value.data.to_vec();
    let ca_key = ca.public_key().subject_public_key.data.to_vec();
    let leaf_key = leaf.public_key().subject_public_key.data.to_vec();
    let mut att_key = vec![4u8];
    att_key.extend_from_slice(&sig.attestation_key.0);
    let qe_report = parsed.qe_report_bytes().to_vec();
    let signed = parsed.signed_bytes().to_vec();

    let verifier = TdxVerifier::default();
    verifier.verify(&quote, Some(&ours), NOW_T1).expect("T1 verifies");
    dcap_qvl::verify::ring::verify(&quote, &theirs, NOW_T1).expect("dcap-qvl accepts T1");

    let mut g = c.benchmark_group("tdx_verify");
    g.sample_size(50).measurement_time(Duration::from_secs(4)).warm_up_time(Duration::from_secs(1));
    g.bench_function("a_ring_3x_p256_verify", |b| {
        b.iter(|| {
            let leaf_ok = UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &ca_key).verify(&leaf_tbs, &leaf_sig).is_ok();
            let qe_ok = UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &leaf_key)
                .verify(&qe_report, &sig.qe_report_signature.0)
                .is_ok();
            let quote_ok =
                UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &att_key).verify(&signed, &sig.signature.0).is_ok();
            black_box(leaf_ok && qe_ok && quote_ok)
        })
    });
    g.bench_function("b_cloister_cached", |b| {
        b.iter(|| black_box(verifier.verify(black_box(&quote), Some(&ours), NOW_T1).is_ok()))
    });
    g.bench_function("c_cloister_uncached", |b| {
        b.iter(|| black_box(verifier.verify_uncached(black_box(&quote), Some(&ours), NOW_T1).is_ok()))
    });
    g.bench_function("d_dcap_qvl_ring", |b| {
        b.iter(|| black_box(dcap_qvl::verify::ring::verify(black_box(&quote), &theirs, NOW_T1).is_ok()))
    });
    g.bench_function("parse_quote", |b| b.iter(|| black_box(Quote::parse(black_box(&quote)).is_ok())));
    g.finish();

    // Criterion measures the variants one after the other; on a busy machine the load changes in
    // between. Also time them interleaved, round by round, and compare medians.
    let mut samples: [Vec<Duration>; 4] = Default::default();
    let mut time = |i: usize, f: &mut dyn FnMut() -> bool| {
        let start = std::time::Instant::now();
        black_box(f());
        samples[i].push(start.elapsed());
    };
    for _ in 0..400 {
        time(0, &mut || {
            UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &ca_key).verify(&leaf_tbs, &leaf_sig).is_ok()
                && UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &leaf_key)
                    .verify(&qe_report, &sig.qe_report_signature.0)
                    .is_ok()
                && UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &att_key).verify(&signed, &sig.signature.0).is_ok()
        });
        time(1, &mut || verifier.verify(&quote, Some(&ours), NOW_T1).is_ok());
        time(2, &mut || verifier.verify_uncached(&quote, Some(&ours), NOW_T1).is_ok());
        time(3, &mut || dcap_qvl::verify::ring::verify(&quote, &theirs, NOW_T1).is_ok());
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2].as_secs_f64() * 1e6
    };
    let [a, b, c, d] = samples.each_mut().map(median);
    println!(
        "interleaved medians (400 rounds): a {a:.0} µs, b {b:.0} µs, c {c:.0} µs, d {d:.0} µs; b/a = {:.2}, c/d = {:.2}",
        b / a,
        c / d
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
