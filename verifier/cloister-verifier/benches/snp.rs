//! SEV-SNP verification cost on fixture S1 (Milan, report v2, VCEK chain):
//! (a) one ECDSA P-384 verification with aws-lc-rs, the fastest we have — the floor (ring's, 4-5x
//! slower, is printed beside it); (b) our verification with the VEK
//! chain already verified and cached (goal ≤ 1.2 × a); (c) our full uncached verification (two
//! RSA-4096 PSS + one P-384); (d) the `sev` crate's own path on the same bytes (parse, then its
//! `Verifiable` impls for (ARK, ASK), (ASK, VCEK), (VCEK, report)) — goal c ≤ d.
//!
//! Needs `CLOISTER_FIXTURES`; prints a skip message without it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::path::PathBuf;

use aws_lc_rs::signature::{ECDSA_P384_SHA384_FIXED as AWS_P384, UnparsedPublicKey as AwsLcKey};
use cloister_evidence::snp::AttestationReport;
use cloister_verifier::snp::{SnpCertificates, SnpVerifier, TrustAnchors, VerifyOptions};
use criterion::Criterion;
use ring::signature::{ECDSA_P384_SHA384_FIXED, UnparsedPublicKey};
use sev::certs::snp::{Certificate, Verifiable};
use sev::firmware::guest::AttestationReport as SevReport;
use sev::parser::ByteParser;

const NOW: u64 = 1_767_225_600;

fn read(root: &std::path::Path, rel: &str) -> Vec<u8> {
    std::fs::read(root.join(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
}

fn main() {
    let Some(root) = std::env::var_os("CLOISTER_FIXTURES").filter(|v| !v.is_empty()) else {
        eprintln!("skipping the SNP benchmark: CLOISTER_FIXTURES is not set");
        return;
    };
    let root = PathBuf::from(root).join("evidence");
    let report = read(&root, "virtee-sev/report_milan.bin");
    let vcek = read(&root, "virtee-sev/vcek_milan.der");
    let chain_pem = read(&root, "virtee-sev/cert_chain_milan");
    let chain: Vec<Vec<u8>> =
        x509_parser::pem::Pem::iter_from_buffer(&chain_pem).map(|p| p.expect("PEM").contents).collect();
    let (ask, ark) = (&chain[0], &chain[1]);
    let certs = SnpCertificates::from_vek(&vcek).and_then(|c| c.with_chain(&chain_pem)).expect("certificates");
    let opts = VerifyOptions::at(NOW);

    let cached = SnpVerifier::amd().expect("anchors");
    cached.verify(&report, &certs, &opts).expect("S1 verifies");
    let uncached = SnpVerifier::with_cache_capacity(TrustAnchors::amd().expect("anchors"), 0);
    uncached.verify(&report, &certs, &opts).expect("S1 verifies uncached");

    let parsed = AttestationReport::from_bytes(&report).expect("report");
    let public_key = cached.verify_vek(&certs, &opts).expect("VEK").public_key().to_vec();
    let fixed = parsed.signature.to_p384_fixed().expect("P-384 signature");

    let sev_ark = Certificate::from_der(ark).expect("ARK");
    let sev_ask = Certificate::from_der(ask).expect("ASK");
    let sev_vcek = Certificate::from_der(&vcek).expect("VCEK");
    let sev_report = SevReport::from_bytes(&report).expect("sev report");
    (&sev_ark, &sev_ask).verify().expect("sev ARK->ASK");
    (&sev_ask, &sev_vcek).verify().expect("sev ASK->VCEK");
    (&sev_vcek, &sev_report).verify().expect("sev VCEK->report");

    let mut c = Criterion::default().configure_from_args();
    let mut g = c.benchmark_group("snp");
    g.bench_function("a_p384_verify", |b| {
        b.iter(|| {
            AwsLcKey::new(&AWS_P384, black_box(&public_key))
                .verify(black_box(parsed.signed_bytes()), black_box(&fixed))
                .expect("signature")
        })
    });
    g.bench_function("a_ring_p384_verify", |b| {
        b.iter(|| {
            UnparsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, black_box(&public_key))
                .verify(black_box(parsed.signed_bytes()), black_box(&fixed))
                .expect("signature")
        })
    });
    g.bench_function("b_cloister_cached_chain", |b| {
        b.iter(|| cached.verify(black_box(&report), black_box(&certs), &opts).expect("verify"))
    });
    g.bench_function("c_cloister_uncached", |b| {
        b.iter(|| uncached.verify(black_box(&report), black_box(&certs), &opts).expect("verify"))
    });
    g.bench_function("d_sev_crate_parse_and_verify", |b| {
        b.iter(|| {
            let ark = Certificate::from_der(black_box(ark)).expect("ARK");
            let ask = Certificate::from_der(black_box(ask)).expect("ASK");
            let vcek = Certificate::from_der(black_box(&vcek)).expect("VCEK");
            let r = SevReport::from_bytes(black_box(&report)).expect("report");
            (&ark, &ask).verify().expect("ARK->ASK");
            (&ask, &vcek).verify().expect("ASK->VCEK");
            (&vcek, &r).verify().expect("VCEK->report");
        })
    });
    g.bench_function("d2_sev_crate_verify_only", |b| {
        b.iter(|| {
            (&sev_ark, &sev_ask).verify().expect("ARK->ASK");
            (&sev_ask, &sev_vcek).verify().expect("ASK->VCEK");
            (&sev_vcek, &sev_report).verify().expect("VCEK->report");
        })
    });
    g.finish();
    c.final_summary();

    // Criterion measures one function after the other, so load changes on a shared machine skew
    // the ratios. Interleave the four paths instead and compare medians of the same rounds.
    let mut samples: [Vec<f64>; 4] = Default::default();
    for _ in 0..300 {
        let t = std::time::Instant::now();
        AwsLcKey::new(&AWS_P384, black_box(&public_key))
            .verify(black_box(parsed.signed_bytes()), black_box(&fixed))
            .expect("signature");
        samples[0].push(t.elapsed().as_secs_f64());
        let t = std::time::Instant::now();
        cached.verify(black_box(&report), black_box(&certs), &opts).expect("verify");
        samples[1].push(t.elapsed().as_secs_f64());
        let t = std::time::Instant::now();
        uncached.verify(black_box(&report), black_box(&certs), &opts).expect("verify");
        samples[2].push(t.elapsed().as_secs_f64());
        let t = std::time::Instant::now();
        let r = SevReport::from_bytes(black_box(&report)).expect("report");
        let (ark, ask, vcek) = (
            Certificate::from_der(ark).expect("ARK"),
            Certificate::from_der(ask).expect("ASK"),
            Certificate::from_der(&vcek).expect("VCEK"),
        );
        (&ark, &ask).verify().expect("ARK->ASK");
        (&ask, &vcek).verify().expect("ASK->VCEK");
        (&vcek, &r).verify().expect("VCEK->report");
        samples[3].push(t.elapsed().as_secs_f64());
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2] * 1e6
    };
    let [a, b, c, d] = samples.each_mut().map(median);
    println!(
        "interleaved medians (µs): a P-384 (aws-lc-rs) {a:.0}, b cached {b:.0} ({:.3}x a), c uncached {c:.0}, \
         d sev {d:.0} (c/d {:.3})",
        b / a,
        c / d
    );
}
