//! SEV-SNP verification against the shared fixtures (`$CLOISTER_FIXTURES`, normally
//! `/work/shared/fixtures`, see `evidence/PROVENANCE.md`) and against an emulated AMD-style PKI
//! embedded below. Fixture tests print a skip message and pass when the variable is unset; the
//! emulated-PKI tests and the property tests always run.
//!
//! The emulated PKI (RSA-2048 ARK/ASK/ASVK with RSASSA-PSS SHA-384 salt 48, P-384 VCEK/VLEK with
//! the AMD extensions, an ARK-signed CRL, and the VEK private keys) was generated once for these
//! tests with Python `cryptography`; reports are built with `ReportFields` and signed with `ring`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cloister_evidence::snp::{
    AttestationReport, ChipId, Cpuid, GuestPolicy, KeyInfo, Product, ReportFields, ReportSignature, SIGNED_LEN,
    SigningKey, TcbLayout, TcbParts, TcbVersion,
};
use cloister_verifier::snp::{
    CertRole, CertSource, ChainLink, KdsDirectory, SnpCertificates, SnpVerifier, SnpVerifyError, TcbComponent,
    TrustAnchors, VekKind, VerifyOptions, build_cert_table,
};
use proptest::prelude::*;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair};

/// 2026-01-01: inside every VCEK window of the fixtures.
const NOW: u64 = 1_767_225_600;
/// 2025-06-01: inside the S4 VLEK window.
const S4_NOW: u64 = 1_748_736_000;

fn fixtures(test: &str) -> Option<PathBuf> {
    match std::env::var_os("CLOISTER_FIXTURES") {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p).join("evidence")),
        _ => {
            eprintln!("skipping {test}: CLOISTER_FIXTURES is not set");
            None
        }
    }
}

fn read(root: &Path, rel: &str) -> Vec<u8> {
    let p = root.join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

fn certs(root: &Path, vek: &str, chain: Option<&str>) -> SnpCertificates {
    let c = SnpCertificates::from_vek(&read(root, vek)).unwrap();
    match chain {
        Some(ch) => c.with_chain(&read(root, ch)).unwrap(),
        None => c,
    }
}

fn amd() -> SnpVerifier {
    SnpVerifier::amd().unwrap()
}

fn at(now: u64) -> VerifyOptions {
    VerifyOptions::at(now)
}

/// A fixture sample: id, report, VEK, chain, `now`.
#[derive(Clone, Copy)]
struct Sample {
    id: &'static str,
    report: &'static str,
    vek: &'static str,
    chain: Option<&'static str>,
    now: u64,
}

const S1: Sample = Sample {
    id: "S1",
    report: "virtee-sev/report_milan.bin",
    vek: "virtee-sev/vcek_milan.der",
    chain: Some("virtee-sev/cert_chain_milan"),
    now: NOW,
};
const S2: Sample = Sample {
    id: "S2",
    report: "go-sev-guest/attestation.bin",
    vek: "go-sev-guest/vcek.testcer",
    chain: Some("go-sev-guest/milan.testcer"),
    now: NOW,
};
const S3: Sample = Sample {
    id: "S3",
    report: "trustee-snp/test-report.bin",
    vek: "trustee-snp/test-vcek.der",
    chain: Some("trustee-snp/milan_ask_ark_asvk.pem"),
    now: NOW,
};
const S4: Sample = Sample {
    id: "S4",
    report: "trustee-snp/test-vlek-report.bin",
    vek: "trustee-snp/test-vlek.der",
    chain: Some("go-sev-guest/milanvlek.testcer"),
    now: S4_NOW,
};
const S5: Sample = Sample {
    id: "S5",
    report: "trustee-az-snp-vtpm/genoa-snp-report.bin",
    vek: "trustee-az-snp-vtpm/vcek-genoa.pem",
    chain: Some("virtee-sev/builtin_genoa_ask.pem"),
    now: NOW,
};
const S6: Sample = Sample {
    id: "S6",
    report: "trustee-az-snp-vtpm/milan-snp-report.bin",
    vek: "trustee-az-snp-vtpm/vcek-milan.pem",
    chain: None,
    now: NOW,
};
const S8: Sample = Sample {
    id: "S8",
    report: "trustee-snp/e2e-genoa-report.bin",
    vek: "trustee-snp/e2e-genoa-vcek.der",
    chain: Some("go-sev-guest/trust/ask_ark_genoa.pem"),
    now: NOW,
};
const S9: Sample = Sample {
    id: "S9",
    report: "trustee-az-snp-vtpm/milan2-snp-report.bin",
    vek: "trustee-az-snp-vtpm/vcek-milan2.der",
    chain: None,
    now: NOW,
};

fn load(root: &Path, s: &Sample) -> (Vec<u8>, SnpCertificates) {
    (read(root, s.report), certs(root, s.vek, s.chain))
}

fn verify_sample(
    v: &SnpVerifier,
    root: &Path,
    s: &Sample,
    opts: &VerifyOptions,
) -> Result<serde_json::Value, SnpVerifyError> {
    let (report, certs) = load(root, s);
    v.verify(&report, &certs, opts).map(|r| r.claims())
}

/// A KDS fetcher that records URLs and serves nothing.
#[derive(Debug, Default)]
struct RecordingFetcher {
    urls: std::sync::Mutex<Vec<String>>,
}

impl cloister_verifier::snp::KdsFetch for RecordingFetcher {
    fn get(&self, url: &str) -> Result<Vec<u8>, String> {
        self.urls.lock().unwrap().push(url.to_owned());
        Err("offline".into())
    }
}

// ------------------------------------------------------------------------------------------------
// S1–S5: the verdicts of PROVENANCE.md §2.

#[test]
fn s1_milan_v2_is_valid() {
    let Some(root) = fixtures("s1_milan_v2_is_valid") else { return };
    let v = amd();
    let (report, certs) = load(&root, &S1);
    let r = v.verify(&report, &certs, &at(S1.now)).unwrap();
    assert_eq!(r.product(), Product::Milan);
    assert_eq!(r.vek_kind(), VekKind::Vcek);
    assert!(r.vek().root_is_builtin());
    let c = r.claims();
    assert_eq!(c["version"], 2);
    assert_eq!(
        c["measurement"],
        "7a1e5c266c0108dbc9bb94fa926951320940915d0aafb42464bd88b579ea158d3e1a0dc39b2c60bd95b9c480cd81841f"
    );
    assert_eq!(
        c["report_data"],
        "d447b55d197491bfe15cf298f9de9986b7a7c4be2468b4f6e2d53b71d7c645810b0f2cdfca0040433be063fc1a8293f0f3f8dae7b79fecb3d1cd82bd6a93ebfd"
    );
    assert_eq!(
        c["chip_id"],
        "d49554ec717f4e5b0fe6b143bcf0405bd7ae304727edf46603f2a76aef6a3abc15d7af38db757039029f0efacfd08e244324884738c72b082e2f87a44d541eb6"
    );
    assert_eq!(c["init_data"], "00".repeat(32));
    assert_eq!(c["host_data"], c["init_data"]);
    assert_eq!(c["report_id_ma"], "ff".repeat(32));
    assert_eq!(c["id_key_digest"], "00".repeat(48));
    assert_eq!(c["policy"], "0x30000");
    assert_eq!(c["policy_debug_allowed"], false);
    assert_eq!(c["policy_smt_allowed"], true);
    assert_eq!(c["policy_migrate_ma"], false);
    assert_eq!(c["policy_abi_major"], 0);
    assert_eq!(c["platform_smt_enabled"], true);
    assert_eq!(c["platform_tsme_enabled"], false);
    assert_eq!(c["vmpl"], 0);
    assert_eq!(c["guest_svn"], 0);
    assert_eq!(c["signing_key"], "vcek");
    assert_eq!(c["product"], "Milan");
    assert_eq!(c["firmware_current"], "1.52.4");
    for prefix in ["reported_tcb", "current_tcb", "committed_tcb", "launch_tcb"] {
        assert_eq!(c[format!("{prefix}_bootloader")], 3);
        assert_eq!(c[format!("{prefix}_tee")], 0);
        assert_eq!(c[format!("{prefix}_snp")], 8);
        assert_eq!(c[format!("{prefix}_microcode")], 115);
        assert_eq!(c[format!("{prefix}_raw")], "0300000000000873");
        assert!(c.get(format!("{prefix}_fmc")).is_none());
    }
    assert!(c.get("cpuid_fam_id").is_none());
    // Without a supplied chain the built-in ASK is used.
    let certs = SnpCertificates::from_vek(&read(&root, S1.vek)).unwrap();
    v.verify(&report, &certs, &at(S1.now)).unwrap();
}

#[test]
fn s2_debug_policy_is_rejected_unless_allowed() {
    let Some(root) = fixtures("s2_debug_policy_is_rejected_unless_allowed") else { return };
    let v = amd();
    let err = verify_sample(&v, &root, &S2, &at(S2.now)).unwrap_err();
    assert_eq!(err, SnpVerifyError::DebugPolicy);
    assert_eq!(err.check(), "debug");
    let c = verify_sample(&v, &root, &S2, &at(S2.now).allow_debug(true)).unwrap();
    assert_eq!(c["policy_debug_allowed"], true);
    assert_eq!(c["policy"], "0xb0000");
    assert_eq!(
        c["measurement"],
        "b07af9620f3b839b47996422ddec6058338951d984e312115131ea82705eaf5b6bdf8a9ece31a5a608eb0cf2e4872b01"
    );
    assert_eq!(c["report_data"], format!("0102030405{}", "00".repeat(59)));
    assert_eq!(c["reported_tcb_raw"], "0200000000000544");
    assert_eq!(c["reported_tcb_microcode"], 68);
    assert_eq!(c["firmware_current"], "1.49.3");
}

#[test]
fn s3_vcek_matches_reported_not_current_tcb() {
    let Some(root) = fixtures("s3_vcek_matches_reported_not_current_tcb") else { return };
    let c = verify_sample(&amd(), &root, &S3, &at(S3.now)).unwrap();
    assert_eq!(c["reported_tcb_microcode"], 115);
    assert_eq!(c["current_tcb_microcode"], 206);
    assert_eq!(c["current_tcb_raw"], "03000000000008ce");
    assert_eq!(c["guest_svn"], 4);
    assert_eq!(c["policy"], "0x3001f");
    assert_eq!(c["policy_abi_minor"], 31);
    assert_eq!(c["family_id"], "01000000000000000000000000000000");
    assert_eq!(c["image_id"], "02000000000000000000000000000000");
    assert_eq!(
        c["id_key_digest"],
        "0356215882a825279a85b300b0b742931d113bf7e32dde2e50ffde7ec743ca491ecdd7f336dc28a6e0b2bb57af7a44a3"
    );
    assert_eq!(
        c["measurement"],
        "a1f3930413247bb38cfc171579ea3c12d5fe4901f0c792f63fd75d98f1ef827c23500644e0e692e6be917f9050d3d38c"
    );
    // The same with the virtee chain file.
    let s = Sample { chain: Some("virtee-sev/cert_chain_milan"), ..S3 };
    verify_sample(&amd(), &root, &s, &at(NOW)).unwrap();
}

#[test]
fn s4_vlek_is_valid_only_inside_its_window() {
    let Some(root) = fixtures("s4_vlek_is_valid_only_inside_its_window") else { return };
    let v = amd();
    let (report, certs) = load(&root, &S4);
    let r = v.verify(&report, &certs, &at(S4.now)).unwrap();
    assert_eq!(r.vek_kind(), VekKind::Vlek);
    assert_eq!(r.product(), Product::Milan);
    assert_eq!(r.vek().csp_id(), Some("CN=cc-us-east-2.amazonaws.com"));
    assert_eq!(r.vek().hw_id(), None);
    let c = r.claims();
    assert_eq!(c["vmpl"], 1);
    assert_eq!(c["signing_key"], "vlek");
    assert_eq!(c["chip_id"], "00".repeat(64));
    assert_eq!(c["cpuid_fam_id"], 0x19);
    assert_eq!(c["cpuid_mod_id"], 1);
    assert_eq!(c["cpuid_step"], 1);
    assert_eq!(c["platform_info"], "0x27");
    assert_eq!(c["reported_tcb_microcode"], 217);
    assert_eq!(c["current_tcb_microcode"], 220);
    assert_eq!(c["committed_tcb_microcode"], 219);
    assert_eq!(c["firmware_current"], "1.55.29");
    assert_eq!(c["vlek_csp_id"], "CN=cc-us-east-2.amazonaws.com");
    assert_eq!(
        c["measurement"],
        "8922ebbdd00ec2c541f36a6e7a82a8773a7accb451ed67bc94e740dbe92c93c4e8c9af857f5ceeb5a493df2a570d7bf0"
    );
    // Built-in ASVK without a supplied chain, and trustee's bundle (ASK, ARK, ASVK).
    v.verify(&report, &SnpCertificates::from_vek(&read(&root, S4.vek)).unwrap(), &at(S4.now)).unwrap();
    let c2 = certs_with(&root, S4.vek, "trustee-snp/milan_ask_ark_asvk.pem");
    v.verify(&report, &c2, &at(S4.now)).unwrap();
    // After 2025-12-10 the VLEK has expired.
    for now in [1_765_411_000, NOW] {
        let err = v.verify(&report, &certs, &at(now)).unwrap_err();
        assert!(
            matches!(err, SnpVerifyError::CertificateExpired { which: CertRole::Vlek, not_after: 1_765_404_861, .. }),
            "{err}"
        );
        assert_eq!(err.check(), "dates");
    }
    // Before 2024-12-10 it is not yet valid.
    let err = v.verify(&report, &certs, &at(1_733_000_000)).unwrap_err();
    assert!(matches!(err, SnpVerifyError::CertificateNotYetValid { which: CertRole::Vlek, .. }), "{err}");
}

fn certs_with(root: &Path, vek: &str, chain: &str) -> SnpCertificates {
    certs(root, vek, Some(chain))
}

#[test]
fn s5_genoa_is_valid_with_genoa_roots_only() {
    let Some(root) = fixtures("s5_genoa_is_valid_with_genoa_roots_only") else { return };
    let c = verify_sample(&amd(), &root, &S5, &at(S5.now)).unwrap();
    assert_eq!(c["product"], "Genoa");
    assert_eq!(c["version"], 3);
    assert_eq!(c["cpuid_mod_id"], 0x11);
    assert_eq!(c["firmware_current"], "1.55.40");
    assert_eq!(c["guest_svn"], 0x1000b);
    assert_eq!(c["platform_info"], "0x24");
    assert_eq!(c["reported_tcb_bootloader"], 10);
    assert_eq!(c["reported_tcb_snp"], 23);
    assert_eq!(c["reported_tcb_microcode"], 84);
    assert_eq!(c["family_id"], "01232000000000000000000000000000");
    assert_eq!(
        c["report_data"],
        format!("b581f12e29a2d7d64e5e0b738d563879a78b51c644d0fa0cce02b48699f6bf5f{}", "00".repeat(32))
    );
    assert_eq!(
        c["measurement"],
        "f57dc09a507c6ecd82369bffb600f0003792f4d99bc26e985ec0c266fc34faf3706faf814c9e61065768a6ff917c89ae"
    );
    let (report, _) = load(&root, &S5);
    // Milan roots only: the Genoa chain ends at an ARK that is not pinned.
    let milan_only = SnpVerifier::new(TrustAnchors::amd_for(&[Product::Milan]).unwrap());
    let genoa_chain = certs_with(&root, S5.vek, "trustee-snp/genoa_ask_ark_asvk.pem");
    let err = milan_only.verify(&report, &genoa_chain, &at(NOW)).unwrap_err();
    assert!(matches!(&err, SnpVerifyError::UnpinnedRoot { subject, .. } if subject == "ARK-Genoa"), "{err}");
    assert_eq!(err.check(), "root");
    // ...or, without the chain, whose issuer is unknown.
    let vek_only = SnpCertificates::from_vek(&read(&root, S5.vek)).unwrap();
    let err = milan_only.verify(&report, &vek_only, &at(NOW)).unwrap_err();
    assert!(matches!(&err, SnpVerifyError::IssuerNotFound { issuer, .. } if issuer == "SEV-Genoa"), "{err}");
    // A Milan chain does not help.
    let milan_chain = certs_with(&root, S5.vek, "virtee-sev/cert_chain_milan");
    assert!(matches!(milan_only.verify(&report, &milan_chain, &at(NOW)), Err(SnpVerifyError::IssuerNotFound { .. })));
    // The caller expecting Milan rejects the Genoa report.
    let err = amd().verify(&report, &genoa_chain, &at(NOW).expect_product(Product::Milan)).unwrap_err();
    assert!(matches!(err, SnpVerifyError::ProductMismatch { .. }), "{err}");
    assert_eq!(err.check(), "product");
}

// ------------------------------------------------------------------------------------------------
// The other real SNP samples (PROVENANCE.md §4, §5): verdicts worked out here and cross-checked
// against the `sev` crate in `sev_crate_agrees_on_the_cryptography`.

#[test]
fn other_real_samples_verify() {
    let Some(root) = fixtures("other_real_samples_verify") else { return };
    let v = amd();
    for (s, product, version) in [(S6, "Milan", 3), (S8, "Genoa", 3), (S9, "Milan", 3)] {
        let c = verify_sample(&v, &root, &s, &at(s.now)).unwrap_or_else(|e| panic!("{}: {e}", s.id));
        assert_eq!(c["product"], product, "{}", s.id);
        assert_eq!(c["version"], version, "{}", s.id);
        assert_eq!(c["vmpl"], 0, "{}", s.id);
        assert_eq!(c["policy_debug_allowed"], false, "{}", s.id);
    }
    // S8 is a Siena (CPUID model 0xA0) using the Genoa roots.
    let c = verify_sample(&v, &root, &S8, &at(NOW)).unwrap();
    assert_eq!(c["cpuid_mod_id"], 0xA0);
    // S7: report v2 inside an Azure HCL report, VCEK/ASK/ARK as one PEM bundle; like S3 its
    // CURRENT_TCB is ahead of REPORTED_TCB.
    let report = read(&root, "trustee-az-snp-vtpm/hcl-report.snp-report.bin");
    let hcl = read(&root, "trustee-az-snp-vtpm/hcl-report.bin");
    assert_eq!(&hcl[0x20..0x20 + 0x4A0], report.as_slice());
    let bundle = SnpCertificates::from_pem_bundle(&read(&root, "trustee-az-snp-vtpm/vcek.pem")).unwrap();
    let r = v.verify(&report, &bundle, &at(NOW)).unwrap();
    assert_eq!(r.product(), Product::Milan);
    let c = r.claims();
    assert_eq!(c["version"], 2);
    assert_eq!(c["reported_tcb_microcode"], 115);
    assert_eq!(c["current_tcb_microcode"], 210);
    // The derived SNP reports are the bytes [0x20, 0x4C0) of their HCL reports.
    for (hcl, snp) in [
        ("trustee-az-snp-vtpm/genoa-hcl-report.bin", S5.report),
        ("trustee-az-snp-vtpm/milan-hcl-report.bin", S6.report),
        ("trustee-az-snp-vtpm/milan2-hcl-report.bin", S9.report),
    ] {
        assert_eq!(&read(&root, hcl)[0x20..0x4C0], read(&root, snp).as_slice(), "{hcl}");
    }
}

#[test]
fn trustee_negative_vceks_fail_the_chain() {
    let Some(root) = fixtures("trustee_negative_vceks_fail_the_chain") else { return };
    let report = read(&root, S3.report);
    for vek in ["trustee-snp/test-vcek-invalid-legacy.der", "trustee-snp/test-vcek-invalid-new.der"] {
        let err = amd().verify(&report, &certs(&root, vek, None), &at(NOW)).unwrap_err();
        assert_eq!(err, SnpVerifyError::ChainSignature { link: ChainLink::AskToVcek }, "{vek}");
        assert_eq!(err.check(), "chain");
    }
}

#[test]
fn turin_vcek_chain_and_binding() {
    let Some(root) = fixtures("turin_vcek_chain_and_binding") else { return };
    let v = amd();
    let certs = certs(&root, "virtee-sev/vcek_turin.der", Some("virtee-sev/cert_chain_turin"));
    let vek = v.verify_vek(&certs, &at(NOW)).unwrap();
    assert_eq!(vek.product(), Product::Turin);
    assert_eq!(vek.kind(), VekKind::Vcek);
    assert_eq!(vek.hw_id(), Some(&hex::decode("1e550a8ee5cf9f4d").unwrap()[..]));
    let t = vek.tcb();
    assert_eq!((t.fmc, t.bootloader, t.tee, t.snp, t.microcode), (Some(0), Some(0), Some(0), Some(0), Some(9)));
    // A report claiming this chip and TCB binds (Turin layout: FMC in byte 0); the signature
    // cannot be produced, so the full verification stops there.
    let mut f = report_fields(3, Cpuid { family: 0x1A, model: 0x02, stepping: 0 });
    f.chip_id.0[..8].copy_from_slice(&hex::decode("1e550a8ee5cf9f4d").unwrap());
    f.reported_tcb = TcbVersion::from_parts(
        TcbLayout::Turin,
        TcbParts { fmc: Some(0), bootloader: 0, tee: 0, snp: 0, microcode: 9 },
    );
    f.signature.r[0] = 1;
    f.signature.s[0] = 1;
    let report = AttestationReport::from_fields(&f).unwrap();
    vek.check_report_binding(&report).unwrap();
    let err = v.verify(report.raw(), &certs, &at(NOW)).unwrap_err();
    assert_eq!(err, SnpVerifyError::ReportSignature { which: CertRole::Vcek });
    // The Milan/Genoa layout would read microcode 9 too, but bootloader etc. from other bytes.
    let mut g = f.clone();
    g.reported_tcb = TcbVersion([0, 0, 0, 0, 0, 0, 0, 9]);
    g.reported_tcb.0[0] = 5;
    let err = vek.check_report_binding(&AttestationReport::from_fields(&g).unwrap()).unwrap_err();
    assert_eq!(err, SnpVerifyError::TcbMismatch { component: TcbComponent::Fmc, certificate: 0, report: 5 });
    // Turin CHIP_ID uses 8 bytes; the rest must be zero.
    let mut g = f.clone();
    g.chip_id.0[9] = 1;
    let err = vek.check_report_binding(&AttestationReport::from_fields(&g).unwrap()).unwrap_err();
    assert!(matches!(err, SnpVerifyError::ChipIdMismatch { .. }), "{err}");
    // Turin roots are required.
    let genoa_only = SnpVerifier::new(TrustAnchors::amd_for(&[Product::Genoa]).unwrap());
    let err = genoa_only.verify_vek(&certs, &at(NOW)).unwrap_err();
    assert!(matches!(err, SnpVerifyError::UnpinnedRoot { .. }), "{err}");
}

// ------------------------------------------------------------------------------------------------
// Tampering: every signed byte, the signature, and each certificate's TBS.

#[test]
fn every_signed_byte_flip_is_rejected() {
    let Some(root) = fixtures("every_signed_byte_flip_is_rejected") else { return };
    let v = amd();
    for s in [S1, S4] {
        let (report, certs) = load(&root, &s);
        let opts = at(s.now);
        v.verify(&report, &certs, &opts).unwrap();
        let mut checks = std::collections::BTreeMap::new();
        for i in 0..SIGNED_LEN {
            let mut bad = report.clone();
            bad[i] ^= 0x01;
            let err = v.verify(&bad, &certs, &opts).expect_err(&format!("{}: flip at {i:#x} accepted", s.id));
            *checks.entry(err.check()).or_insert(0) += 1;
            if (0x90..0xC0).contains(&i) {
                assert_eq!(err.check(), "signature", "{}: MEASUREMENT flip at {i:#x}", s.id);
            }
        }
        eprintln!("{}: rejections by check: {checks:?}", s.id);
        // Signature bytes: R and S (low 48 bytes each) fail the signature; the unused high bytes
        // and the rest of the signature area are rejected by the parser.
        for i in (0x2A0..0x4A0).step_by(3) {
            let mut bad = report.clone();
            bad[i] ^= 0x80;
            let err = v.verify(&bad, &certs, &opts).expect_err(&format!("{}: signature flip at {i:#x}", s.id));
            let in_scalar = (0x2A0..0x2A0 + 48).contains(&i) || (0x2E8..0x2E8 + 48).contains(&i);
            assert_eq!(err.check(), if in_scalar { "signature" } else { "report" }, "{}: flip at {i:#x}", s.id);
        }
    }
}

/// Offset and length of the TBS inside a DER certificate (outer and TBS SEQUENCEs, long form).
fn tbs_range(der: &[u8]) -> std::ops::Range<usize> {
    assert_eq!((der[0], der[1], der[4], der[5]), (0x30, 0x82, 0x30, 0x82));
    let len = usize::from(der[6]) << 8 | usize::from(der[7]);
    4..8 + len
}

fn pem_ders(pem: &[u8]) -> Vec<Vec<u8>> {
    x509_parser::pem::Pem::iter_from_buffer(pem).map(|p| p.unwrap().contents).collect()
}

#[test]
fn certificate_tbs_flips_are_rejected() {
    let Some(root) = fixtures("certificate_tbs_flips_are_rejected") else { return };
    let report = read(&root, S1.report);
    let vcek = read(&root, S1.vek);
    let chain = pem_ders(&read(&root, S1.chain.unwrap()));
    let (ask, ark) = (&chain[0], &chain[1]);
    // Only the pinned ARK, no built-in intermediates: the supplied ASK is the one that counts.
    let anchors = TrustAnchors::empty().with_root(Product::Milan, ark, &hex_sha256(ark)).unwrap();
    let v = SnpVerifier::with_cache_capacity(anchors.clone(), 0);
    let good = SnpCertificates::from_vek(&vcek).unwrap().with_chain(ask).unwrap();
    v.verify(&report, &good, &at(NOW)).unwrap();
    let mut n = 0;
    for i in tbs_range(&vcek).step_by(5) {
        let mut bad = vcek.clone();
        bad[i] ^= 0x01;
        let Ok(c) = SnpCertificates::from_vek(&bad).and_then(|c| c.with_chain(ask)) else { continue };
        v.verify(&report, &c, &at(NOW)).expect_err(&format!("VCEK TBS flip at {i}"));
        n += 1;
    }
    for i in tbs_range(ask).step_by(7) {
        let mut bad = ask.clone();
        bad[i] ^= 0x01;
        let Ok(c) = SnpCertificates::from_vek(&vcek).and_then(|c| c.with_chain(&bad)) else { continue };
        v.verify(&report, &c, &at(NOW)).expect_err(&format!("ASK TBS flip at {i}"));
        n += 1;
    }
    assert!(n > 250, "only {n} flips reached verification");
    // Signature bits of the VCEK and the ASK.
    for (which, der) in [("VCEK", &vcek), ("ASK", ask)] {
        let sig_start = tbs_range(der).end + 20;
        for i in (sig_start..der.len()).step_by(11) {
            let mut bad = der.clone();
            bad[i] ^= 0x01;
            let c = if which == "VCEK" {
                SnpCertificates::from_vek(&bad).unwrap().with_chain(ask).unwrap()
            } else {
                SnpCertificates::from_vek(&vcek).unwrap().with_chain(&bad).unwrap()
            };
            let err = v.verify(&report, &c, &at(NOW)).expect_err(&format!("{which} signature flip at {i}"));
            assert_eq!(err.check(), "chain", "{which} signature flip at {i}: {err}");
        }
    }
    // A modified ARK is not the pinned one.
    let mut bad_ark = ark.clone();
    bad_ark[100] ^= 1;
    assert!(TrustAnchors::empty().with_root(Product::Milan, &bad_ark, &hex_sha256(ark)).is_err());
}

fn hex_sha256(der: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, der))
}

// ------------------------------------------------------------------------------------------------
// Dates, roots, caching, sources.

#[test]
fn dates_are_checked_for_every_certificate() {
    let Some(root) = fixtures("dates_are_checked_for_every_certificate") else { return };
    let v = amd();
    let (report, certs) = load(&root, &S1);
    // VCEK valid 2023-04-03T19:23:43Z .. 2030-04-03T19:23:43Z.
    let err = v.verify(&report, &certs, &at(1_680_549_822)).unwrap_err();
    assert_eq!(
        err,
        SnpVerifyError::CertificateNotYetValid { which: CertRole::Vcek, not_before: 1_680_549_823, now: 1_680_549_822 }
    );
    v.verify(&report, &certs, &at(1_680_549_823)).unwrap();
    v.verify(&report, &certs, &at(1_901_474_623)).unwrap();
    let err = v.verify(&report, &certs, &at(1_901_474_624)).unwrap_err();
    assert_eq!(
        err,
        SnpVerifyError::CertificateExpired { which: CertRole::Vcek, not_after: 1_901_474_623, now: 1_901_474_624 }
    );
    // Dates are checked again on a cache hit.
    assert_eq!(v.cache_len(), 1);
    assert!(v.verify(&report, &certs, &at(0)).is_err());
    assert!(v.verify(&report, &certs, &at(u64::MAX)).is_err());
}

#[test]
fn cache_is_keyed_by_vek_and_shared_across_threads() {
    let Some(root) = fixtures("cache_is_keyed_by_vek_and_shared_across_threads") else { return };
    let v = Arc::new(amd());
    let samples = [S1, S3, S5, S6, S9];
    std::thread::scope(|scope| {
        for t in 0..4 {
            let v = v.clone();
            let root = root.clone();
            scope.spawn(move || {
                for s in samples.iter().cycle().skip(t).take(10) {
                    verify_sample(&v, &root, s, &at(s.now)).unwrap_or_else(|e| panic!("{}: {e}", s.id));
                }
            });
        }
    });
    assert_eq!(v.cache_len(), samples.len());
    // A cached VEK still has to bind to the report: S1's VCEK does not sign S3.
    let err = v.verify(&read(&root, S3.report), &certs(&root, S1.vek, None), &at(NOW)).unwrap_err();
    assert!(matches!(err, SnpVerifyError::ChipIdMismatch { .. }), "{err}");
    v.clear_cache();
    assert_eq!(v.cache_len(), 0);
    // With caching off nothing is kept.
    let uncached = SnpVerifier::with_cache_capacity(TrustAnchors::amd().unwrap(), 0);
    verify_sample(&uncached, &root, &S1, &at(NOW)).unwrap();
    assert_eq!(uncached.cache_len(), 0);
}

#[test]
fn wrong_vek_for_the_report() {
    let Some(root) = fixtures("wrong_vek_for_the_report") else { return };
    let v = amd();
    // S2's VCEK (other chip, other TCB) for S1's report: the TCB check fails first.
    let err = v.verify(&read(&root, S1.report), &certs(&root, S2.vek, None), &at(NOW)).unwrap_err();
    assert_eq!(err, SnpVerifyError::TcbMismatch { component: TcbComponent::Bootloader, certificate: 2, report: 3 });
    assert_eq!(err.check(), "tcb");
    // The VLEK for a VCEK-signed report.
    let err = v.verify(&read(&root, S1.report), &certs(&root, S4.vek, None), &at(S4_NOW)).unwrap_err();
    assert!(
        matches!(err, SnpVerifyError::SigningKeyMismatch { report: SigningKey::Vcek, certificate: CertRole::Vlek }),
        "{err}"
    );
    // No VEK at all.
    let err = v.verify(&read(&root, S1.report), &SnpCertificates::new(), &at(NOW)).unwrap_err();
    assert!(matches!(err, SnpVerifyError::MissingVek(_)), "{err}");
    // The ASK given as VEK.
    let ask = read(&root, "virtee-sev/builtin_milan_ask.pem");
    let err = v.verify(&read(&root, S1.report), &SnpCertificates::from_vek(&ask).unwrap(), &at(NOW)).unwrap_err();
    assert!(matches!(err, SnpVerifyError::MalformedCertificate { which: CertRole::Vek, .. }), "{err}");
}

#[test]
fn cert_table_and_kds_directory_sources() {
    let Some(root) = fixtures("cert_table_and_kds_directory_sources") else { return };
    let v = amd();
    let report = read(&root, S1.report);
    let vcek = read(&root, S1.vek);
    let chain = pem_ders(&read(&root, S1.chain.unwrap()));
    let table = build_cert_table(&vcek, false, Some(&chain[0]), Some(&chain[1]));
    let c = SnpCertificates::from_cert_table(&table).unwrap();
    v.verify(&report, &c, &at(NOW)).unwrap();

    let dir = std::env::temp_dir().join(format!("cloister-snp-kds-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let kds = KdsDirectory::new(&dir);
    let parsed = AttestationReport::from_bytes(&report).unwrap();
    // A miss in the cache directory alone is a missing VEK, network allowed or not.
    let err = v.verify_with_source(&report, CertSource::Directory(&kds), &at(NOW)).unwrap_err();
    assert!(matches!(err, SnpVerifyError::MissingVek(_)), "{err}");
    let err = v.verify_with_source(&report, CertSource::Directory(&kds), &at(NOW).allow_network(true)).unwrap_err();
    assert!(matches!(err, SnpVerifyError::MissingVek(_)), "{err}");
    // A fetcher is not called without allow_network; with it, it is asked for the KDS URLs.
    let fetcher = RecordingFetcher::default();
    let err = v
        .verify_with_source(&report, CertSource::Fetch(&fetcher), &at(NOW).expect_product(Product::Milan))
        .unwrap_err();
    assert!(fetcher.urls.lock().unwrap().is_empty());
    let err2 = v
        .verify_with_source(
            &report,
            CertSource::Fetch(&fetcher),
            &at(NOW).expect_product(Product::Milan).allow_network(true),
        )
        .unwrap_err();
    assert!(matches!(err2, SnpVerifyError::Io { .. }), "{err2}");
    assert!(fetcher.urls.lock().unwrap()[0].starts_with("https://kdsintf.amd.com/vcek/v1/Milan/d49554ec"));
    let SnpVerifyError::NetworkDisabled(url) = &err else { panic!("{err}") };
    assert!(url.starts_with("https://kdsintf.amd.com/vcek/v1/Milan/d49554ec"), "{url}");
    assert!(url.ends_with("?blSPL=03&teeSPL=00&snpSPL=08&ucodeSPL=115"), "{url}");
    assert_eq!(err.check(), "source");
    // Store the VCEK where KDS would serve it; the v2 report finds it under Milan.
    let path = kds.store_vcek(Product::Milan, &parsed.chip_id, parsed.reported_tcb, &vcek).unwrap();
    assert!(path.ends_with(format!("Milan/vcek/{}/bl03_tee00_snp08_ucode115.der", parsed.chip_id.to_hex())));
    let r = v.verify_with_source(&report, CertSource::Directory(&kds), &at(NOW)).unwrap();
    assert_eq!(r.product(), Product::Milan);
    std::fs::write(kds.chain_path(Product::Milan, false), read(&root, S1.chain.unwrap())).unwrap();
    v.verify_with_source(&report, CertSource::Directory(&kds), &at(NOW)).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

// ------------------------------------------------------------------------------------------------
// Cross-check with the `sev` crate: the same verdict on the signatures of every real sample.

#[test]
fn sev_crate_agrees_on_the_cryptography() {
    use sev::certs::snp::{Certificate, Verifiable};
    use sev::firmware::guest::AttestationReport as SevReport;
    use sev::parser::ByteParser;
    let Some(root) = fixtures("sev_crate_agrees_on_the_cryptography") else { return };
    let chains = [
        (Product::Milan, "trustee-snp/milan_ask_ark_asvk.pem"),
        (Product::Genoa, "trustee-snp/genoa_ask_ark_asvk.pem"),
    ];
    for s in [S1, S2, S3, S4, S5, S6, S8, S9] {
        let report = read(&root, s.report);
        let ours = amd().verify(&report, &certs(&root, s.vek, None), &at(s.now).allow_debug(true)).unwrap();
        let ders = pem_ders(&read(&root, chains.iter().find(|(p, _)| *p == ours.product()).unwrap().1));
        let (ask, ark, asvk) = (&ders[0], &ders[1], &ders[2]);
        let ark = Certificate::from_der(ark).unwrap();
        let int = Certificate::from_der(if ours.vek_kind() == VekKind::Vlek { asvk } else { ask }).unwrap();
        let vek_bytes = read(&root, s.vek);
        let vek =
            if vek_bytes[0] == 0x30 { Certificate::from_der(&vek_bytes) } else { Certificate::from_pem(&vek_bytes) }
                .unwrap();
        (&ark, &int).verify().unwrap_or_else(|e| panic!("{}: sev ARK->int: {e}", s.id));
        (&int, &vek).verify().unwrap_or_else(|e| panic!("{}: sev int->VEK: {e}", s.id));
        let parsed = SevReport::from_bytes(&report).unwrap();
        (&vek, &parsed).verify().unwrap_or_else(|e| panic!("{}: sev VEK->report: {e}", s.id));
        assert_eq!(parsed.measurement.as_slice(), ours.report().measurement.as_bytes(), "{}", s.id);
        assert_eq!(parsed.chip_id.as_slice(), ours.report().chip_id.as_bytes(), "{}", s.id);
        let mut tampered = report.clone();
        tampered[0x90] ^= 1;
        let parsed = SevReport::from_bytes(&tampered).unwrap();
        assert!((&vek, &parsed).verify().is_err(), "{}", s.id);
    }
}

// ------------------------------------------------------------------------------------------------
// Emulated PKI: an extra root named explicitly, and every binding, CRL and layout rule with
// reports this test can sign.

/// SHA-256 of the emulated ARK's DER: how a caller names the extra root.
const EMU_ARK_SHA256: &str = "4e9db22922bff0ab01374dd4d20609a794c9990ab04d28547af7a2c6b26e910d";
/// 2025-06-01, inside every emulated certificate and the CRL.
const EMU_NOW: u64 = 1_748_736_000;

fn pem_der(pem: &str) -> Vec<u8> {
    x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap().1.contents
}

fn emu_anchors(product: Product) -> TrustAnchors {
    TrustAnchors::amd().unwrap().with_root(product, EMU_ARK.as_bytes(), EMU_ARK_SHA256).unwrap()
}

fn emu_certs(vek: &str, vlek: bool) -> SnpCertificates {
    let int = if vlek { EMU_ASVK } else { EMU_ASK };
    SnpCertificates::from_vek(vek.as_bytes()).unwrap().with_chain(format!("{int}{EMU_ARK}").as_bytes()).unwrap()
}

fn emu_chip() -> ChipId {
    let mut c = ChipId::default();
    for (i, b) in c.0.iter_mut().enumerate() {
        *b = 0x40 + i as u8;
    }
    c
}

fn report_fields(version: u32, cpuid: Cpuid) -> ReportFields {
    ReportFields {
        version,
        signature_algo: 1,
        policy: GuestPolicy(0x30000),
        cpuid: (version >= 3).then_some(cpuid),
        launch_mit_vector: (version >= 5).then_some(0x5),
        current_mit_vector: (version >= 5).then_some(0x7),
        ..Default::default()
    }
}

/// A Milan report for the emulated VCEK: chip 0x40..0x80, TCB bl 3 tee 0 snp 8 ucode 115.
fn emu_milan_fields() -> ReportFields {
    let mut f = report_fields(3, Cpuid { family: 0x19, model: 0x01, stepping: 1 });
    f.chip_id = emu_chip();
    f.reported_tcb = TcbVersion::from_parts(
        TcbLayout::MilanGenoa,
        TcbParts { fmc: None, bootloader: 3, tee: 0, snp: 8, microcode: 115 },
    );
    f.current_tcb = f.reported_tcb;
    f.report_data.0[0] = 0xaa;
    f.measurement.0[47] = 0x55;
    f
}

/// Signs the fields with a PKCS#8 PEM P-384 key, returning the report bytes.
fn sign(mut f: ReportFields, key_pem: &str) -> Vec<u8> {
    let rng = SystemRandom::new();
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &pem_der(key_pem), &rng).unwrap();
    f.signature = ReportSignature::default();
    let unsigned = f.to_bytes();
    let sig = key.sign(&rng, &unsigned[..SIGNED_LEN]).unwrap();
    f.signature = ReportSignature::from_p384_fixed(sig.as_ref().try_into().unwrap());
    f.to_bytes().to_vec()
}

#[test]
fn emulated_root_is_accepted_only_when_named() {
    let report = sign(emu_milan_fields(), EMU_VCEK_KEY);
    let certs = emu_certs(EMU_VCEK, false);
    let err = amd().verify(&report, &certs, &at(EMU_NOW)).unwrap_err();
    assert!(
        matches!(&err, SnpVerifyError::UnpinnedRoot { subject, fingerprint } if subject == "ARK-Emulated" && fingerprint == EMU_ARK_SHA256),
        "{err}"
    );
    let no_root = SnpCertificates::from_vek(EMU_VCEK.as_bytes()).unwrap().with_chain(EMU_ASK.as_bytes()).unwrap();
    let err = amd().verify(&report, &no_root, &at(EMU_NOW)).unwrap_err();
    assert!(matches!(err, SnpVerifyError::UnknownRoot { which: CertRole::Ask, .. }), "{err}");
    let v = SnpVerifier::new(emu_anchors(Product::Milan));
    let r = v.verify(&report, &certs, &at(EMU_NOW)).unwrap();
    assert!(!r.vek().root_is_builtin());
    assert_eq!(r.vek().root_sha256(), EMU_ARK_SHA256);
    assert_eq!(r.product(), Product::Milan);
    let c = r.claims();
    assert_eq!(c["report_data"], format!("aa{}", "00".repeat(63)));
    assert_eq!(c["cpuid_fam_id"], 0x19);
    // Registered for another product, the same root does not make this a Milan report.
    let v =
        SnpVerifier::new(TrustAnchors::empty().with_root(Product::Genoa, EMU_ARK.as_bytes(), EMU_ARK_SHA256).unwrap());
    let err = v.verify(&report, &certs, &at(EMU_NOW)).unwrap_err();
    assert!(matches!(err, SnpVerifyError::MalformedCertificate { which: CertRole::Vcek, .. }), "{err}");
}

#[test]
fn emulated_bindings() {
    let v = SnpVerifier::new(emu_anchors(Product::Milan));
    let certs = emu_certs(EMU_VCEK, false);
    let opts = at(EMU_NOW);
    let verify = |f: ReportFields, key: &str, certs: &SnpCertificates| v.verify(&sign(f, key), certs, &opts);
    verify(emu_milan_fields(), EMU_VCEK_KEY, &certs).unwrap();

    // REPORTED_TCB differs from the VCEK: each component is named.
    for (component, byte, cert_value) in [
        (TcbComponent::Bootloader, 0, 3),
        (TcbComponent::Tee, 1, 0),
        (TcbComponent::Snp, 6, 8),
        (TcbComponent::Microcode, 7, 115),
    ] {
        let mut f = emu_milan_fields();
        f.reported_tcb.0[byte] = f.reported_tcb.0[byte].wrapping_add(1);
        let report = f.reported_tcb.0[byte];
        let err = verify(f, EMU_VCEK_KEY, &certs).unwrap_err();
        assert_eq!(err, SnpVerifyError::TcbMismatch { component, certificate: cert_value, report });
    }
    // CURRENT_TCB may differ.
    let mut f = emu_milan_fields();
    f.current_tcb.0[7] = 200;
    verify(f, EMU_VCEK_KEY, &certs).unwrap();

    // CHIP_ID.
    let mut f = emu_milan_fields();
    f.chip_id.0[63] ^= 1;
    let err = verify(f, EMU_VCEK_KEY, &certs).unwrap_err();
    assert!(matches!(err, SnpVerifyError::ChipIdMismatch { .. }), "{err}");
    assert_eq!(err.check(), "chip_id");
    let mut f = emu_milan_fields();
    f.chip_id = ChipId::default();
    assert_eq!(verify(f, EMU_VCEK_KEY, &certs).unwrap_err(), SnpVerifyError::ChipIdMasked);

    // Signed by the VLEK key but presented with the VCEK: the signature fails.
    let err = verify(emu_milan_fields(), EMU_VLEK_KEY, &certs).unwrap_err();
    assert_eq!(err, SnpVerifyError::ReportSignature { which: CertRole::Vcek });
    // KEY_INFO says VLEK but the certificate is a VCEK.
    let mut f = emu_milan_fields();
    f.key_info = KeyInfo::new(false, false, SigningKey::Vlek);
    let err = verify(f, EMU_VCEK_KEY, &certs).unwrap_err();
    assert!(
        matches!(err, SnpVerifyError::SigningKeyMismatch { report: SigningKey::Vlek, certificate: CertRole::Vcek }),
        "{err}"
    );
    assert_eq!(err.check(), "signing_key");
    // No signing key / masked chip key.
    let mut f = emu_milan_fields();
    f.key_info = KeyInfo::new(false, false, SigningKey::None);
    assert_eq!(verify(f, EMU_VCEK_KEY, &certs).unwrap_err(), SnpVerifyError::UnsupportedSigningKey(SigningKey::None));
    let mut f = emu_milan_fields();
    f.key_info = KeyInfo::new(false, true, SigningKey::Vcek);
    assert_eq!(v.verify(&f.to_bytes(), &certs, &opts).unwrap_err(), SnpVerifyError::ChipKeyMasked);

    // Debug policy.
    let mut f = emu_milan_fields();
    f.policy = GuestPolicy(0x30000 | GuestPolicy::DEBUG);
    let report = sign(f, EMU_VCEK_KEY);
    assert_eq!(v.verify(&report, &certs, &opts).unwrap_err(), SnpVerifyError::DebugPolicy);
    v.verify(&report, &certs, &opts.clone().allow_debug(true)).unwrap();

    // Unknown CPUID product; CPUID disagreeing with the chain.
    let mut f = emu_milan_fields();
    f.cpuid = Some(Cpuid { family: 0x1A, model: 0x50, stepping: 0 });
    let err = verify(f, EMU_VCEK_KEY, &certs).unwrap_err();
    assert_eq!(err, SnpVerifyError::UnknownProduct { family: 0x1A, model: 0x50 });
    let mut f = emu_milan_fields();
    f.cpuid = Some(Cpuid { family: 0x19, model: 0x11, stepping: 0 });
    let err = verify(f, EMU_VCEK_KEY, &certs).unwrap_err();
    assert_eq!(err, SnpVerifyError::ProductMismatch { expected: Product::Genoa, chain: Product::Milan });

    // Version 2 (no CPUID) and version 5 (mitigation vectors) reports.
    let mut f = emu_milan_fields();
    f.version = 2;
    f.cpuid = None;
    verify(f, EMU_VCEK_KEY, &certs).unwrap();
    let mut f = emu_milan_fields();
    f.version = 5;
    f.launch_mit_vector = Some(0x3);
    f.current_mit_vector = Some(0xf);
    let c = v.verify(&sign(f, EMU_VCEK_KEY), &certs, &opts).unwrap().claims();
    assert_eq!(c["launch_mit_vector"], "0x3");
    assert_eq!(c["current_mit_vector"], "0xf");
}

#[test]
fn emulated_vlek_rules() {
    let v = SnpVerifier::new(emu_anchors(Product::Milan));
    let certs = emu_certs(EMU_VLEK, true);
    let opts = at(EMU_NOW);
    let mut f = report_fields(3, Cpuid { family: 0x19, model: 0x01, stepping: 1 });
    f.key_info = KeyInfo::new(false, false, SigningKey::Vlek);
    f.reported_tcb = TcbVersion::from_parts(
        TcbLayout::MilanGenoa,
        TcbParts { fmc: None, bootloader: 4, tee: 0, snp: 24, microcode: 217 },
    );
    // CHIP_ID is not bound by a VLEK: zero or not, it verifies.
    let r = v.verify(&sign(f.clone(), EMU_VLEK_KEY), &certs, &opts).unwrap();
    assert_eq!(r.vek_kind(), VekKind::Vlek);
    assert_eq!(r.claims()["vlek_csp_id"], "CN=cloud.example");
    let mut g = f.clone();
    g.chip_id = emu_chip();
    v.verify(&sign(g, EMU_VLEK_KEY), &certs, &opts).unwrap();
    // KEY_INFO says VCEK while a VLEK signed.
    let mut g = f.clone();
    g.key_info = KeyInfo::new(false, false, SigningKey::Vcek);
    let err = v.verify(&sign(g, EMU_VLEK_KEY), &certs, &opts).unwrap_err();
    assert!(
        matches!(err, SnpVerifyError::SigningKeyMismatch { report: SigningKey::Vcek, certificate: CertRole::Vlek }),
        "{err}"
    );
    // TCB still binds.
    let mut g = f.clone();
    g.reported_tcb.0[6] = 25;
    let err = v.verify(&sign(g, EMU_VLEK_KEY), &certs, &opts).unwrap_err();
    assert_eq!(err, SnpVerifyError::TcbMismatch { component: TcbComponent::Snp, certificate: 24, report: 25 });
    // One-year validity.
    let err = v.verify(&sign(f, EMU_VLEK_KEY), &certs, &at(1_767_225_601)).unwrap_err();
    assert!(matches!(err, SnpVerifyError::CertificateExpired { which: CertRole::Vlek, .. }), "{err}");
}

#[test]
fn emulated_crl() {
    let v = SnpVerifier::new(emu_anchors(Product::Milan));
    let crl = pem_crl(EMU_CRL);
    let opts = at(EMU_NOW).with_crl(&crl);
    // The ASK is not revoked.
    v.verify(&sign(emu_milan_fields(), EMU_VCEK_KEY), &emu_certs(EMU_VCEK, false), &opts).unwrap();
    // The ASVK is.
    let mut f = report_fields(3, Cpuid { family: 0x19, model: 0x01, stepping: 1 });
    f.key_info = KeyInfo::new(false, false, SigningKey::Vlek);
    f.reported_tcb = TcbVersion([4, 0, 0, 0, 0, 0, 24, 217]);
    let vlek_report = sign(f, EMU_VLEK_KEY);
    v.verify(&vlek_report, &emu_certs(EMU_VLEK, true), &at(EMU_NOW)).unwrap();
    let err = v.verify(&vlek_report, &emu_certs(EMU_VLEK, true), &opts).unwrap_err();
    assert_eq!(err, SnpVerifyError::Revoked { which: CertRole::Asvk, serial: "1002".to_string() });
    assert_eq!(err.check(), "crl");
    // The CRL is valid 2025-01-01 .. 2027-01-01.
    let report = sign(emu_milan_fields(), EMU_VCEK_KEY);
    let later = at(1_830_000_000).with_crl(&crl);
    let err = v.verify(&report, &emu_certs(EMU_VCEK, false), &later).unwrap_err();
    assert!(matches!(err, SnpVerifyError::CrlNotCurrent { next_update: Some(1_798_761_600), .. }), "{err}");
    // A tampered CRL.
    let mut bad = crl.clone();
    let n = bad.len();
    bad[n - 5] ^= 1;
    let err = v.verify(&report, &emu_certs(EMU_VCEK, false), &at(EMU_NOW).with_crl(&bad)).unwrap_err();
    assert_eq!(err, SnpVerifyError::ChainSignature { link: ChainLink::ArkToCrl });
    let err = v.verify(&report, &emu_certs(EMU_VCEK, false), &at(EMU_NOW).with_crl(b"not a crl")).unwrap_err();
    assert!(matches!(err, SnpVerifyError::MalformedCrl(_)), "{err}");
}

#[test]
fn emulated_crl_of_another_root_is_ignored() {
    let Some(root) = fixtures("emulated_crl_of_another_root_is_ignored") else { return };
    let v = SnpVerifier::new(emu_anchors(Product::Milan));
    verify_sample(&v, &root, &S1, &at(NOW).with_crl(&pem_crl(EMU_CRL))).unwrap();
}

fn pem_crl(pem: &str) -> Vec<u8> {
    x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap().1.contents
}

#[test]
fn emulated_turin_layout() {
    let v = SnpVerifier::new(emu_anchors(Product::Turin));
    let certs = emu_certs(EMU_TURIN_VCEK, false);
    let mut f = report_fields(3, Cpuid { family: 0x1A, model: 0x02, stepping: 0 });
    f.chip_id.0[..8].copy_from_slice(&emu_chip().0[..8]);
    f.reported_tcb = TcbVersion::from_parts(
        TcbLayout::Turin,
        TcbParts { fmc: Some(1), bootloader: 2, tee: 3, snp: 4, microcode: 9 },
    );
    let r = v.verify(&sign(f.clone(), EMU_TURIN_KEY), &certs, &at(EMU_NOW)).unwrap();
    assert_eq!(r.product(), Product::Turin);
    let c = r.claims();
    assert_eq!(c["reported_tcb_fmc"], 1);
    assert_eq!(c["reported_tcb_bootloader"], 2);
    assert_eq!(c["reported_tcb_raw"], "0102030400000009");
    for (byte, component, cert) in [
        (0, TcbComponent::Fmc, 1),
        (1, TcbComponent::Bootloader, 2),
        (2, TcbComponent::Tee, 3),
        (3, TcbComponent::Snp, 4),
    ] {
        let mut g = f.clone();
        g.reported_tcb.0[byte] += 10;
        let err = v.verify(&sign(g, EMU_TURIN_KEY), &certs, &at(EMU_NOW)).unwrap_err();
        assert_eq!(err, SnpVerifyError::TcbMismatch { component, certificate: cert, report: cert as u8 + 10 });
    }
    let mut g = f.clone();
    g.chip_id = emu_chip();
    let err = v.verify(&sign(g, EMU_TURIN_KEY), &certs, &at(EMU_NOW)).unwrap_err();
    assert!(matches!(err, SnpVerifyError::ChipIdMismatch { .. }), "{err}");
    // A Milan CPUID with the Turin chain.
    let mut g = f;
    g.cpuid = Some(Cpuid { family: 0x19, model: 0x01, stepping: 1 });
    let err = v.verify(&sign(g, EMU_TURIN_KEY), &certs, &at(EMU_NOW)).unwrap_err();
    assert_eq!(err, SnpVerifyError::ProductMismatch { expected: Product::Milan, chain: Product::Turin });
}

#[test]
fn every_error_has_a_one_line_message_and_a_check_name() {
    let errors = [
        SnpVerifyError::DebugPolicy,
        SnpVerifyError::ChipKeyMasked,
        SnpVerifyError::ChainSignature { link: ChainLink::ArkToAsvk },
        SnpVerifyError::TcbMismatch { component: TcbComponent::Microcode, certificate: 1, report: 2 },
        SnpVerifyError::NetworkDisabled("u".into()),
    ];
    for e in errors {
        let msg = e.to_string();
        assert!(!msg.contains('\n') && !msg.is_empty(), "{msg}");
        assert!(!e.check().is_empty());
    }
}

/// The outer (unsigned) signature algorithm of a certificate must be byte-identical to the signed
/// one. Found by `random_certificates_are_rejected`: x509-parser accepts an outer algorithm OID
/// whose tag byte is not OBJECT IDENTIFIER (0x06 → 0x4D), so comparing parsed values was not
/// enough.
#[test]
fn a_mangled_outer_signature_algorithm_is_rejected() {
    let v = SnpVerifier::new(emu_anchors(Product::Milan));
    let report = sign(emu_milan_fields(), EMU_VCEK_KEY);
    let good = pem_der(EMU_VCEK);
    let pss_oid = [0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x0A];
    let outer = good.windows(pss_oid.len()).rposition(|w| w == pss_oid).unwrap();
    for (tag, what) in [(0x4Du8, "application-class tag"), (0x86, "context tag")] {
        let mut der = good.clone();
        der[outer] = tag;
        let certs = SnpCertificates::from_vek(&der).unwrap().with_chain(EMU_ASK.as_bytes()).unwrap();
        let err = v.verify(&report, &certs, &at(EMU_NOW)).unwrap_err();
        assert!(matches!(err, SnpVerifyError::UnsupportedCertSignatureAlgorithm { .. }), "{what}: {err:?}");
    }
    let certs = SnpCertificates::from_vek(&good).unwrap().with_chain(EMU_ASK.as_bytes()).unwrap();
    assert!(v.verify(&report, &certs, &at(EMU_NOW)).is_ok());
}

// ------------------------------------------------------------------------------------------------
// Property tests: the entry points never panic and reject garbage with a typed error.

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_reports_are_rejected(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let v = SnpVerifier::new(emu_anchors(Product::Milan));
        let certs = emu_certs(EMU_VCEK, false);
        prop_assert!(v.verify(&bytes, &certs, &at(EMU_NOW)).is_err());
    }

    #[test]
    fn mutated_reports_are_rejected(
        pos in 0usize..0x4A0, val in any::<u8>(), version in 0u32..8, trunc in 0usize..0x4A0,
    ) {
        let v = SnpVerifier::new(emu_anchors(Product::Milan));
        let certs = emu_certs(EMU_VCEK, false);
        let good = sign(emu_milan_fields(), EMU_VCEK_KEY);
        let mut bad = good.clone();
        bad[pos] = val;
        let r = v.verify(&bad, &certs, &at(EMU_NOW));
        prop_assert_eq!(r.is_ok(), bad == good);
        let mut bad = good.clone();
        bad[..4].copy_from_slice(&version.to_le_bytes());
        prop_assert_eq!(v.verify(&bad, &certs, &at(EMU_NOW)).is_ok(), version == 3);
        prop_assert!(v.verify(&good[..trunc], &certs, &at(EMU_NOW)).is_err());
        let mut long = good.clone();
        long.push(0);
        prop_assert!(matches!(v.verify(&long, &certs, &at(EMU_NOW)), Err(SnpVerifyError::Report(_))));
    }

    #[test]
    fn random_certificates_are_rejected(
        bytes in proptest::collection::vec(any::<u8>(), 0..1500), pos in 0usize..1400, val in any::<u8>(),
    ) {
        let v = SnpVerifier::new(emu_anchors(Product::Milan));
        let report = sign(emu_milan_fields(), EMU_VCEK_KEY);
        for input in [bytes.clone(), { let mut d = pem_der(EMU_VCEK); let p = pos % d.len(); d[p] = val; d }] {
            let original = input == pem_der(EMU_VCEK);
            if let Ok(c) = SnpCertificates::from_vek(&input).and_then(|c| c.with_chain(EMU_ASK.as_bytes())) {
                prop_assert_eq!(v.verify(&report, &c, &at(EMU_NOW)).is_ok(), original);
            }
            let _ = SnpCertificates::from_cert_table(&input);
            let _ = SnpCertificates::from_pem_bundle(&input);
            let _ = SnpCertificates::new().with_chain(&input);
            let c = emu_certs(EMU_VCEK, false);
            let r = v.verify(&report, &c, &at(EMU_NOW).with_crl(&input));
            prop_assert!(r.is_err() || input.is_empty() || original || r.is_ok());
        }
    }
}

/// emulated ARK ("ARK-Emulated", RSA-2048, self-signed).
const EMU_ARK: &str = "\
-----BEGIN CERTIFICATE-----\n\
MIIDnDCCAlCgAwIBAgIBATBBBgkqhkiG9w0BAQowNKAPMA0GCWCGSAFlAwQCAgUA\n\
oRwwGgYJKoZIhvcNAQEIMA0GCWCGSAFlAwQCAgUAogMCATAwUjEUMBIGA1UECwwL\n\
RW5naW5lZXJpbmcxCzAJBgNVBAYTAlVTMRYwFAYDVQQKDA1DbG9pc3RlciBUZXN0\n\
MRUwEwYDVQQDDAxBUkstRW11bGF0ZWQwIBcNMjAwMTAxMDAwMDAwWhgPMjA1MDAx\n\
MDEwMDAwMDBaMFIxFDASBgNVBAsMC0VuZ2luZWVyaW5nMQswCQYDVQQGEwJVUzEW\n\
MBQGA1UECgwNQ2xvaXN0ZXIgVGVzdDEVMBMGA1UEAwwMQVJLLUVtdWxhdGVkMIIB\n\
IjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA2ddT7WFgpscebs/gvbIjdTjD\n\
QrNtu2F5Z/76NggaSzLDpROvYkOI7JYDLAb6QbwHRTS/ETJ8b/gaJnS1nT1gLQdG\n\
JJ2W4SX1HUOPIrNwEKrXVw36YesSBYZideSkHsTFDhdsN3hXV1m+v4YpZuVi9Y2U\n\
mLGe9S5vxl4NMquayBxyIs1HKWwYYFJNocBnTfFKvMp8k6gHgUJhHVA/wl6BohVO\n\
70U3R4qUUpoCkjPhasMVkXkDmgrFj8hEkFzJhr1EU14N8lyu4Ftc4UvG/FcV4COT\n\
643QbnYXvctlwSVMIO/7GZGFwHFIa1ZDH/4AA7nKkS5hm2CmJDezOepzzJAY0wID\n\
AQABoxMwETAPBgNVHRMBAf8EBTADAQH/MEEGCSqGSIb3DQEBCjA0oA8wDQYJYIZI\n\
AWUDBAICBQChHDAaBgkqhkiG9w0BAQgwDQYJYIZIAWUDBAICBQCiAwIBMAOCAQEA\n\
QuOHP9nZh7EJjSkr2uLF/9GhKf7Kfhy8uZqqBZznVc8n9n5ubH+45Q13X5nO2VZE\n\
udCEfG+sI0TP39NQEWHvgdXb+fNdbjoD5e3iiww4t6Tg7ZWLmKRXfnJOllh4duvm\n\
Y5oUl+0BJRaIMlo8j6oJmN30L/haeE+v3PhqRsDwxMofmlfcqjUhBva82mTwkKr7\n\
+G2ZLM7HsTFGkeCaF9pIb+WQA4wBbBZjKAw5xCFf0Sl3FPRIPWUulbZcRXwJqR9e\n\
d7O6d8tAW2LKMYVVNkRSKdacmfP2Vl8tLjLhm2WRw1lmvNTQ0LkKkgvSfJigwnB1\n\
YHO3oCGMldt74+q/YgpT+Q==\n\
-----END CERTIFICATE-----\n";
/// emulated ASK ("SEV-Emulated", serial 0x1001).
const EMU_ASK: &str = "\
-----BEGIN CERTIFICATE-----\n\
MIIDnTCCAlGgAwIBAgICEAEwQQYJKoZIhvcNAQEKMDSgDzANBglghkgBZQMEAgIF\n\
AKEcMBoGCSqGSIb3DQEBCDANBglghkgBZQMEAgIFAKIDAgEwMFIxFDASBgNVBAsM\n\
C0VuZ2luZWVyaW5nMQswCQYDVQQGEwJVUzEWMBQGA1UECgwNQ2xvaXN0ZXIgVGVz\n\
dDEVMBMGA1UEAwwMQVJLLUVtdWxhdGVkMCAXDTIwMDEwMTAwMDAwMFoYDzIwNTAw\n\
MTAxMDAwMDAwWjBSMRQwEgYDVQQLDAtFbmdpbmVlcmluZzELMAkGA1UEBhMCVVMx\n\
FjAUBgNVBAoMDUNsb2lzdGVyIFRlc3QxFTATBgNVBAMMDFNFVi1FbXVsYXRlZDCC\n\
ASIwDQYJKoZIhvcNAQEBBQADggEPADCCAQoCggEBALt4/QWH45TjMazGird9lEn3\n\
EOhoYDGVGIG7AfEio1vLO6gS9KM1MvHIu617yI1eBp8G/9f114cPqdie8R5dllph\n\
IomM3QUwXabHJERyKBYhMup+DwGzxuGRn0Dl+Xo8wXts2gPMagnUxhemKH/sHFPW\n\
pUVb9Z6OwvGVfWH+Gr8dycXNbd43awfGujRaqAXqmaS9lMgz/j9oJ6UK9YZqm8LQ\n\
640+bR+4q7JGPG9R5mVEhdRHZOwCwsAHsBwS00tlZKM+yz+QUsaTfK7mT3I4m1yi\n\
36blIWE4ofTjV2VJDF3GHY/pLQ5soFkvZZLPSH4l0z/soCPsGLPfKsVH0r4oSkEC\n\
AwEAAaMTMBEwDwYDVR0TAQH/BAUwAwEB/zBBBgkqhkiG9w0BAQowNKAPMA0GCWCG\n\
SAFlAwQCAgUAoRwwGgYJKoZIhvcNAQEIMA0GCWCGSAFlAwQCAgUAogMCATADggEB\n\
ABL5ROlxstosZvj7RvhNv/KImMZPKRDiC3MM022r7QoSABfh1t7lMNw/bReLynRK\n\
0+PPafXP9JlSCSydC7RQOQTXlk9QHwE9k7d2gTjS6SMzIyUY1Tm0ClcDtYVopcE0\n\
2kYYvIbdEXkped8T/llO5BEikQm00qQaDPHgejgWGGuZU79b4kFvvjtGr1eAFLp9\n\
SNs94ieSkvdr/XWPguYdUEpQujrneU6FwIAIhg3KUvA7jiOsVhgQkc9q0C/W7p6k\n\
8cmSjdw1d+OzPPzrkivvrCqpgYriOhGUmS3hwtog2uLVuCCtmIy9526salwWLacr\n\
nE9tRuAiQ4NduNv7ptW9L7U=\n\
-----END CERTIFICATE-----\n";
/// emulated ASVK ("SEV-VLEK-Emulated", serial 0x1002).
const EMU_ASVK: &str = "\
-----BEGIN CERTIFICATE-----\n\
MIIDojCCAlagAwIBAgICEAIwQQYJKoZIhvcNAQEKMDSgDzANBglghkgBZQMEAgIF\n\
AKEcMBoGCSqGSIb3DQEBCDANBglghkgBZQMEAgIFAKIDAgEwMFIxFDASBgNVBAsM\n\
C0VuZ2luZWVyaW5nMQswCQYDVQQGEwJVUzEWMBQGA1UECgwNQ2xvaXN0ZXIgVGVz\n\
dDEVMBMGA1UEAwwMQVJLLUVtdWxhdGVkMCAXDTIwMDEwMTAwMDAwMFoYDzIwNTAw\n\
MTAxMDAwMDAwWjBXMRQwEgYDVQQLDAtFbmdpbmVlcmluZzELMAkGA1UEBhMCVVMx\n\
FjAUBgNVBAoMDUNsb2lzdGVyIFRlc3QxGjAYBgNVBAMMEVNFVi1WTEVLLUVtdWxh\n\
dGVkMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAraMFTpwSEd88aB8I\n\
GYqd83r9Rv2wDEE1lh5IW+evTdDqHE0vCKNEVMtYT3lvCBL9WDgPsQH2HczG8QOQ\n\
4k+KRbzLxzn/8vI/ahcO12AT8RQTgBQ1+/kJgvJBly7MgwhbY8524yXwO7R1ClrD\n\
Xoe6A8oCcxZVaKwa6Bh0arbc44bjPdcHSl7FYBgz68y7FOUWaQafs4xQvBz92Zmg\n\
Gtgmx66PVGUbVcpv2ZqFR4+prYW+PkGm8/O47CY8Ca7b6ua3IM1+dLqGJk5fu/r8\n\
Ch88nQm59mwUNQYpmzwgYdowHON31uw62cRrwptPwwfSM7W12fceZpz3Ugf3pPp2\n\
/OXBAQIDAQABoxMwETAPBgNVHRMBAf8EBTADAQH/MEEGCSqGSIb3DQEBCjA0oA8w\n\
DQYJYIZIAWUDBAICBQChHDAaBgkqhkiG9w0BAQgwDQYJYIZIAWUDBAICBQCiAwIB\n\
MAOCAQEAQ6+smKzFbRSaiikal5a3Aj/hvgkQyUO/SOkDbnM9DrUUivyTtSZfQWtU\n\
VOUVcrPe1iQ9QCRF/cCaKJrKt5M1nlXTXod2qPHT9Dx0psQKTXilUMGF3khXUbgH\n\
4gHLWT9iRDeKtwD6wHg6D52EBK8IccxpeLS8k9FywxmeRVY++OKn33cmL4BueYeT\n\
xz4QMOBetfqwLYiiwuLFo5s6lAMRVCgNyxGEqKyvNWpsOH6zq/W0bN4e/s4QIDzx\n\
+pyVzW6JHP9heiT/aFM4BBg03hd1orrFJ7KXl5N+d1cVfZdEbhlfGB/nknLfJJIx\n\
4udLMgZ2cLkvHAAzk8Lx0q9jHu11oA==\n\
-----END CERTIFICATE-----\n";
/// emulated Milan VCEK: bl 3, tee 0, snp 8, ucode 115; hwID = bytes 0x40..0x80 as an OCTET STRING; valid 2024..2031.
const EMU_VCEK: &str = "\
-----BEGIN CERTIFICATE-----\n\
MIID7zCCAqOgAwIBAgIBATBBBgkqhkiG9w0BAQowNKAPMA0GCWCGSAFlAwQCAgUA\n\
oRwwGgYJKoZIhvcNAQEIMA0GCWCGSAFlAwQCAgUAogMCATAwUjEUMBIGA1UECwwL\n\
RW5naW5lZXJpbmcxCzAJBgNVBAYTAlVTMRYwFAYDVQQKDA1DbG9pc3RlciBUZXN0\n\
MRUwEwYDVQQDDAxTRVYtRW11bGF0ZWQwHhcNMjQwMTAxMDAwMDAwWhcNMzEwMTAx\n\
MDAwMDAwWjBOMRQwEgYDVQQLDAtFbmdpbmVlcmluZzELMAkGA1UEBhMCVVMxFjAU\n\
BgNVBAoMDUNsb2lzdGVyIFRlc3QxETAPBgNVBAMMCFNFVi1WQ0VLMHYwEAYHKoZI\n\
zj0CAQYFK4EEACIDYgAEj4RznIcdeWt7Nvr3NcQFhVZJYFqGGQ+X4X9Aet0TadIh\n\
NUtGlXiAGRXZu0q9fs4vCYP8CpRWpwQW0fAj4iCR18nLN7rokourZVI1CS42jcpw\n\
j2+t7yMLx+ltCPPRCcRUo4IBGDCCARQwEAYJKwYBBAGceAEBBAMCAQAwFwYJKwYB\n\
BAGceAECBAoWCE1pbGFuLUIwMBEGCisGAQQBnHgBAwEEAwIBAzARBgorBgEEAZx4\n\
AQMCBAMCAQAwEQYKKwYBBAGceAEDAwQDAgEIMBEGCisGAQQBnHgBAwQEAwIBADAR\n\
BgorBgEEAZx4AQMFBAMCAQAwEQYKKwYBBAGceAEDBgQDAgEAMBEGCisGAQQBnHgB\n\
AwcEAwIBADARBgorBgEEAZx4AQMIBAMCAXMwTwYJKwYBBAGceAEEBEIEQEBBQkNE\n\
RUZHSElKS0xNTk9QUVJTVFVWV1hZWltcXV5fYGFiY2RlZmdoaWprbG1ub3BxcnN0\n\
dXZ3eHl6e3x9fn8wQQYJKoZIhvcNAQEKMDSgDzANBglghkgBZQMEAgIFAKEcMBoG\n\
CSqGSIb3DQEBCDANBglghkgBZQMEAgIFAKIDAgEwA4IBAQB39wFQRhOncSs4CCFn\n\
bMr856w3HzhvHMDqHI2UTQkdkBVlozXojuGDNCGoWXv7u76Rvxcmnz+0sT+s2MAr\n\
VJysGJLSNW65RZpQA9R/daWGrsvG0DovCB1F6v2AKWkuldj0J2HykXoc73NHUgQ4\n\
2tGphbopisIuw9EjBfJvZ8dt4jAXGWLrgkFUi/JaL+5tYjH3kdEU6VW87imaBjtX\n\
gaFJ8O9o9ud6HlNfGj3UV8guCyV4ZMJtVEZocg4CSUGmjO1+E33zJ7xyzrB2E5R3\n\
dxt1sCfBfXYIusFAypTmegVoMS66Q4665khTGsACu//DbzfskzplxJauiuXDvWPn\n\
+jWT\n\
-----END CERTIFICATE-----\n";
/// emulated Turin VCEK: fmc 1, bl 2, tee 3, snp 4, ucode 9; 8-byte raw hwID 0x40..0x48; valid 2024..2031.
const EMU_TURIN_VCEK: &str = "\
-----BEGIN CERTIFICATE-----\n\
MIIDwzCCAnegAwIBAgIBATBBBgkqhkiG9w0BAQowNKAPMA0GCWCGSAFlAwQCAgUA\n\
oRwwGgYJKoZIhvcNAQEIMA0GCWCGSAFlAwQCAgUAogMCATAwUjEUMBIGA1UECwwL\n\
RW5naW5lZXJpbmcxCzAJBgNVBAYTAlVTMRYwFAYDVQQKDA1DbG9pc3RlciBUZXN0\n\
MRUwEwYDVQQDDAxTRVYtRW11bGF0ZWQwHhcNMjQwMTAxMDAwMDAwWhcNMzEwMTAx\n\
MDAwMDAwWjBOMRQwEgYDVQQLDAtFbmdpbmVlcmluZzELMAkGA1UEBhMCVVMxFjAU\n\
BgNVBAoMDUNsb2lzdGVyIFRlc3QxETAPBgNVBAMMCFNFVi1WQ0VLMHYwEAYHKoZI\n\
zj0CAQYFK4EEACIDYgAE0dizJM3jveWn1u9Q4BsDLc0EMnlJVs5AYihdG7hjKHYf\n\
OPPI2RZ/8NOR6xPvy7inaEau2nD1Juz56BpwMPqkewHH9m+vO5phERSR8OgTACe1\n\
aueFYe14I+Leg55/tlCUo4HtMIHqMBAGCSsGAQQBnHgBAQQDAgEBMBQGCSsGAQQB\n\
nHgBAgQHFgVUdXJpbjARBgorBgEEAZx4AQMBBAMCAQIwEQYKKwYBBAGceAEDAgQD\n\
AgEDMBEGCisGAQQBnHgBAwMEAwIBBDARBgorBgEEAZx4AQMEBAMCAQAwEQYKKwYB\n\
BAGceAEDBQQDAgEAMBEGCisGAQQBnHgBAwYEAwIBADARBgorBgEEAZx4AQMHBAMC\n\
AQAwEQYKKwYBBAGceAEDCAQDAgEJMBEGCisGAQQBnHgBAwkEAwIBATAVBgkrBgEE\n\
AZx4AQQECEBBQkNERUZHMEEGCSqGSIb3DQEBCjA0oA8wDQYJYIZIAWUDBAICBQCh\n\
HDAaBgkqhkiG9w0BAQgwDQYJYIZIAWUDBAICBQCiAwIBMAOCAQEAAXGi/5u/16Tt\n\
2vpA3fQZcTp3P3tZErMRoYB8BiU+QOxFIQsWINcYTjHXurQByaA02bY4pQP7y03p\n\
cxWGOF0ZkBUUtYG49w8HtoQIbnnuhx3nKDo/SO55n0XSLDlPfrB125+IiJDGY1vM\n\
cIZj1X2f1ei1Sbid+iz9L2JqG1hiDzqv+6KNGtWT1O0zUq/YCktDU8aNSCYSkApl\n\
nFwAQII4NYZCyvP+vfS6CN1ZCkq58jZfFdfUfEoAgp5VYsRRjoAmfRw4gB2aM2X2\n\
nQpkLjWmdjMZznYuABa1bTA2GmUFl/DIdGUyo4611hWmh49a+TeFdkSFijvwDLau\n\
rdRJZJo52w==\n\
-----END CERTIFICATE-----\n";
/// emulated VLEK: bl 4, tee 0, snp 24, ucode 217; cspID; valid 2025..2026.
const EMU_VLEK: &str = "\
-----BEGIN CERTIFICATE-----\n\
MIIDwDCCAnSgAwIBAgIBATBBBgkqhkiG9w0BAQowNKAPMA0GCWCGSAFlAwQCAgUA\n\
oRwwGgYJKoZIhvcNAQEIMA0GCWCGSAFlAwQCAgUAogMCATAwVzEUMBIGA1UECwwL\n\
RW5naW5lZXJpbmcxCzAJBgNVBAYTAlVTMRYwFAYDVQQKDA1DbG9pc3RlciBUZXN0\n\
MRowGAYDVQQDDBFTRVYtVkxFSy1FbXVsYXRlZDAeFw0yNTAxMDEwMDAwMDBaFw0y\n\
NjAxMDEwMDAwMDBaME4xFDASBgNVBAsMC0VuZ2luZWVyaW5nMQswCQYDVQQGEwJV\n\
UzEWMBQGA1UECgwNQ2xvaXN0ZXIgVGVzdDERMA8GA1UEAwwIU0VWLVZMRUswdjAQ\n\
BgcqhkjOPQIBBgUrgQQAIgNiAAQ88Ji1kKbC0VkrbhXazNrIs4wKBq29t9FvM1Xn\n\
f4mcQnZhXYy8Nk1sbvTfzWa0zBiYRS7A3VyijUXk6kOZeoqogKr10q0IkMjYlWLP\n\
gnqRF7q/JOEOAmARk4XhEgHSfxmjgeUwgeIwEAYJKwYBBAGceAEBBAMCAQAwFAYJ\n\
KwYBBAGceAECBAcWBU1pbGFuMBEGCisGAQQBnHgBAwEEAwIBBDARBgorBgEEAZx4\n\
AQMCBAMCAQAwEQYKKwYBBAGceAEDAwQDAgEYMBEGCisGAQQBnHgBAwQEAwIBADAR\n\
BgorBgEEAZx4AQMFBAMCAQAwEQYKKwYBBAGceAEDBgQDAgEAMBEGCisGAQQBnHgB\n\
AwcEAwIBADASBgorBgEEAZx4AQMIBAQCAgDZMB8GCSsGAQQBnHgBBQQSFhBDTj1j\n\
bG91ZC5leGFtcGxlMEEGCSqGSIb3DQEBCjA0oA8wDQYJYIZIAWUDBAICBQChHDAa\n\
BgkqhkiG9w0BAQgwDQYJYIZIAWUDBAICBQCiAwIBMAOCAQEAmMzAlRnyR9foCyLC\n\
Zh9ELJ4+kTdlF2ZCKqUHv5sJr2SKsYxndW1guoQ1+2DLUxRoq+U3R5qvtvuWeAjt\n\
IWHcdIRUdjRASzM3Ch2PhnJYgAFQybZaWyWUU+rTIHxpce6lTPIC8+o9VGfjNCwh\n\
PIZrTHIIW3JWumx96cN67qN2zMKUvG32FvKiuBNk5BtW9XzWdC5nJvv1wNSPzEki\n\
fhJCIRgRl8xovFelkuR9T3WjKTcceHr64cwx9alRtvk3pVaV/anEbOz2ePwOnue9\n\
PeVsbHC2FgIK3uLtzMYQmYhzgzI6tsuUjfp3RNLwsUQBJNVLtmPFAep9SoZRY8l9\n\
r/M+Yw==\n\
-----END CERTIFICATE-----\n";
/// CRL signed by the emulated ARK, valid 2025..2027, revoking the ASVK (serial 0x1002).
const EMU_CRL: &str = "\
-----BEGIN X509 CRL-----\n\
MIICGjCBzwIBATBBBgkqhkiG9w0BAQowNKAPMA0GCWCGSAFlAwQCAgUAoRwwGgYJ\n\
KoZIhvcNAQEIMA0GCWCGSAFlAwQCAgUAogMCATAwUjEUMBIGA1UECwwLRW5naW5l\n\
ZXJpbmcxCzAJBgNVBAYTAlVTMRYwFAYDVQQKDA1DbG9pc3RlciBUZXN0MRUwEwYD\n\
VQQDDAxBUkstRW11bGF0ZWQXDTI1MDEwMTAwMDAwMFoXDTI3MDEwMTAwMDAwMFow\n\
FTATAgIQAhcNMjUwMTAxMDAwMDAwWjBBBgkqhkiG9w0BAQowNKAPMA0GCWCGSAFl\n\
AwQCAgUAoRwwGgYJKoZIhvcNAQEIMA0GCWCGSAFlAwQCAgUAogMCATADggEBAIfb\n\
8N7NwyqWdSVBmo2lHlEc92+7cjhsIm+KKqitTCX+1ltXgLDzjKb7TL19ZxteD9b8\n\
JQZaEh+ih8jLuhZtXr91qmnf2yPbXKuOUPR6hsP90HQ+vUCwmoO91X69aJfU/JMi\n\
vI91kcPJyMdoOUpPkvs8cQl2nuMljcZ+jd+F4twoe+jjsMKlI8xwjPJboW4+z7lA\n\
DfYdC9yAaZ/809CUYD6anvDi32LgfbMe2wBP5H0X9vl7oMShaCAdSxpYcRyyQFsm\n\
dT/s6HHf937PKnAZmbYVI4WTOcrIurXpZv3qQsQLF89u7rJ4NmNPPmminsf2g5Mm\n\
VJ1ltq27Uwnw3DQbxl4=\n\
-----END X509 CRL-----\n";
/// PKCS#8 key of EMU_VCEK.
const EMU_VCEK_KEY: &str = "\
-----BEGIN PRIVATE KEY-----\n\
MIG2AgEAMBAGByqGSM49AgEGBSuBBAAiBIGeMIGbAgEBBDCkaejaVDDZ+FzNf9Lp\n\
lQhFu/JePGCe4ABcnGPnvtyUh9hRty+1ZlidzN2V2xh+SVahZANiAASPhHOchx15\n\
a3s2+vc1xAWFVklgWoYZD5fhf0B63RNp0iE1S0aVeIAZFdm7Sr1+zi8Jg/wKlFan\n\
BBbR8CPiIJHXycs3uuiSi6tlUjUJLjaNynCPb63vIwvH6W0I89EJxFQ=\n\
-----END PRIVATE KEY-----\n";
/// PKCS#8 key of EMU_TURIN_VCEK.
const EMU_TURIN_KEY: &str = "\
-----BEGIN PRIVATE KEY-----\n\
MIG2AgEAMBAGByqGSM49AgEGBSuBBAAiBIGeMIGbAgEBBDBgwphIVOmDsm3B1jm6\n\
xO7vJrhN2yHdcdUr5sQgOoG72BW2+SDaM10ddouQVDkgmSShZANiAATR2LMkzeO9\n\
5afW71DgGwMtzQQyeUlWzkBiKF0buGModh8488jZFn/w05HrE+/LuKdoRq7acPUm\n\
7PnoGnAw+qR7Acf2b687mmERFJHw6BMAJ7Vq54Vh7Xgj4t6Dnn+2UJQ=\n\
-----END PRIVATE KEY-----\n";
/// PKCS#8 key of EMU_VLEK.
const EMU_VLEK_KEY: &str = "\
-----BEGIN PRIVATE KEY-----\n\
MIG2AgEAMBAGByqGSM49AgEGBSuBBAAiBIGeMIGbAgEBBDAXeO8+S7lGxij73qOF\n\
Jipnd7x2rOPKs/B32x6lYC/zxttR8a43G/wWWhFDHfxVuAChZANiAAQ88Ji1kKbC\n\
0VkrbhXazNrIs4wKBq29t9FvM1Xnf4mcQnZhXYy8Nk1sbvTfzWa0zBiYRS7A3Vyi\n\
jUXk6kOZeoqogKr10q0IkMjYlWLPgnqRF7q/JOEOAmARk4XhEgHSfxk=\n\
-----END PRIVATE KEY-----\n";
