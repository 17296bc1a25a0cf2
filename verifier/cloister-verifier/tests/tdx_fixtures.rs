//! TDX/SGX DCAP quote verification against the real samples in the shared fixtures
//! (`$CLOISTER_FIXTURES/evidence`, see its PROVENANCE.md): the expected verdicts of T1, T2, T4,
//! T5, T12 and X1 at their pinned `now`, the other real samples, expiry at today's date, single-byte
//! tampering of every signed byte, collateral tampering, cache behaviour, and agreement with
//! dcap-qvl on every quote × collateral pairing. Every test prints a skip message and passes when
//! the variable is unset.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use cloister_evidence::tdx::{CERT_DATA_PCK_CHAIN, CertificationData, Quote};
use cloister_verifier::tdx::{
    CertRole, CollateralParts, CrlKind, TcbStatus, TdxCollateral, TdxTrustAnchors, TdxVerifier, TdxVerifyError,
    TdxVerifyOptions, VerifiedTdxQuote, check_event_log, pcs_signed_body,
};
use proptest::prelude::*;

// Pinned times from PROVENANCE.md §3.
const NOW_T1: u64 = 1_751_624_191;
const NOW_OUTDATED: u64 = 1_772_707_803;
const NOW_GO: u64 = 1_687_939_438;
const NOW_SGX: u64 = 1_751_624_924;
const NOW_T12: u64 = 1_767_225_600;
/// Inside every window of the TD 1.5-extended collateral (2026-10-08T00:28:26Z .. 2026-11-06T23:45:11Z).
const NOW_TD15EX: u64 = 1_792_454_400;
/// Inside the window of go-tdx-guest's TCB info v5 response combined with the "outdated" set's CRLs.
const NOW_TCBINFO_V5: u64 = 1_771_977_600;
/// 2026-11-28: T1's collateral has expired.
const NOW_T1_EXPIRED: u64 = 1_795_890_177;

const T1: &str = "dcap-qvl/tdx_quote";
const T2: &str = "go-tdx-guest/quote_v5_sample.dat";
const T3: &str = "dcap-qvl/tdx_quote_td15ex";
const T4: &str = "trustee-tdx/tdx_quote_4.dat";
const T5: &str = "go-tdx-guest/tdx_prod_quote_SPR_E4.dat";
const T6: &str = "trustee-tdx/tdx_quote_5.dat";
const T7: &str = "dcap-qvl/tdx_quote_outdated";
const T8: &str = "dcap-qvl/tdx-quote-hex.bin";
const T9: &str = "dcap-qvl/quote-from-tappd.bin";
const T10: &str = "trustee-tdx/tdx_quote_6.dat";
const T11: &str = "trustee-az-tdx-vtpm/td-quote.bin";
const T12: &str = "go-tdx-guest/ccel/cos-113-tdx-quote.dat";
const X1: &str = "dcap-qvl/sgx_quote";
const X2: &str = "trustee-tdx/occlum_quote.dat";
const ALL_QUOTES: [&str; 14] = [T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11, T12, X1, X2];

const C_T1: &str = "dcap-qvl/tdx_quote_collateral.json";
const C_SGX: &str = "dcap-qvl/sgx_quote_collateral.json";
const C_TD15EX: &str = "dcap-qvl/tdx_quote_td15ex_collateral.json";
const C_OUTDATED: &str = "dcap-qvl/tdx_quote_outdated_collateral.json";
const C_GO: &str = "go-tdx-guest/collateral_50806f000000_dcapqvl.json";

fn evidence(test: &str) -> Option<PathBuf> {
    match std::env::var_os("CLOISTER_FIXTURES") {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p).join("evidence")),
        _ => {
            eprintln!("skipping {test}: CLOISTER_FIXTURES is not set");
            None
        }
    }
}

fn read(root: &std::path::Path, rel: &str) -> Vec<u8> {
    let p = root.join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

fn collateral(root: &std::path::Path, rel: &str) -> TdxCollateral {
    TdxCollateral::from_json(&read(root, rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn strict() -> TdxVerifier {
    TdxVerifier::default()
}

fn with(options: TdxVerifyOptions) -> TdxVerifier {
    TdxVerifier::new(TdxTrustAnchors::intel(), options)
}

fn allow_debug() -> TdxVerifier {
    with(TdxVerifyOptions { allow_debug: true, ..Default::default() })
}

/// The "outdated" set with go-tdx-guest's TCB info v5 response (same FMSPC 90c06f000000) in place
/// of its own TCB info: cross-repository collateral.
fn collateral_tcbinfo_v5(root: &std::path::Path) -> TdxCollateral {
    let body = String::from_utf8(read(root, "go-tdx-guest/sample_tcbinfo_response_v5")).unwrap();
    let (text, sig) = pcs_signed_body(&body, "tcbInfo").unwrap();
    let mut p = collateral(root, C_OUTDATED).into_parts();
    p.tcb_info = text.to_string();
    p.tcb_info_signature = sig;
    TdxCollateral::new(p)
}

/// T1's set with trustee's TCB info and QE identity for FMSPC 00A06D080000 (T10). No PCK CRL
/// covering their window is available, so this set can only fail on dates.
fn collateral_t10(root: &std::path::Path) -> TdxCollateral {
    let mut p = collateral(root, C_T1).into_parts();
    let tcb = String::from_utf8(read(root, "trustee-tdx/tcbInfo.json")).unwrap();
    let (text, sig) = pcs_signed_body(&tcb, "tcbInfo").unwrap();
    p.tcb_info = text.to_string();
    p.tcb_info_signature = sig;
    let qe = String::from_utf8(read(root, "trustee-tdx/enclaveIdentity.json")).unwrap();
    let (text, sig) = pcs_signed_body(&qe, "enclaveIdentity").unwrap();
    p.qe_identity = text.to_string();
    p.qe_identity_signature = sig;
    TdxCollateral::new(p)
}

fn claim_str(v: &VerifiedTdxQuote, key: &str) -> String {
    v.claims()[key].as_str().unwrap_or_else(|| panic!("claim {key} missing or not a string")).to_string()
}

#[test]
fn t1_tdx_v4_up_to_date() {
    let Some(root) = evidence("t1_tdx_v4_up_to_date") else { return };
    let bytes = read(&root, T1);
    let v = strict().verify(&bytes, Some(&collateral(&root, C_T1)), NOW_T1).unwrap();
    assert_eq!(v.tcb_status, TcbStatus::UpToDate);
    assert!(v.advisory_ids.is_empty());
    assert_eq!(v.qe_tcb_status, TcbStatus::UpToDate);
    assert_eq!(v.platform_tcb_status, TcbStatus::UpToDate);
    assert_eq!(hex::encode(v.fmspc), "b0c06f000000");
    assert_eq!(v.pce_svn, 11);
    assert_eq!(v.quote.header().version, 4);
    assert_eq!(v.quote.signed_bytes().len(), 48 + 584);
    assert_eq!((v.quote.encoded_len(), v.quote.trailing_len()), (5006 - 70, 70));
    assert_eq!(v.quote.to_bytes().unwrap(), bytes[..5006 - 70]);
    for (key, want) in [
        ("tee", "tdx"),
        ("tcb_svn", "06010300000000000000000000000000"),
        ("mr_seam", "5b38e33a6487958b72c3c12a938eaa5e3fd4510c51aeeab58c7d5ecee41d7c436489d6c8e4f92f160b7cad34207b00c1"),
        ("mrsigner_seam", &"00".repeat(48)),
        ("td_attributes_hex", "0000001000000000"),
        ("xfam", "e702060000000000"),
        ("mr_td", "91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7"),
        ("rtmr_0", "44c0197b39157fdd7a4dcc44767f9d6b0bb3977c7a8e347b8492f827fe9d9e5c48aca29b220b80b6a540cf994b9bc9c0"),
        ("rtmr_1", "0084452c01668329d4bc06acdf58a7205c26743304509973949e5619bf81a6a7aea8c323c173019b3093d54e579e9378"),
        ("rtmr_2", "d833feef2cd945148aa38ead2c53e9b7f138190aaaebfc551dccd829fc207aa3ba80b70870d7330733642e01d48c3132"),
        ("rtmr_3", &"00".repeat(48)),
        ("mr_config_id", &"00".repeat(48)),
        ("mr_owner", &"00".repeat(48)),
        ("mr_owner_config", &"00".repeat(48)),
        (
            "report_data",
            "9a9d48e7f6799642d3d1b34e1e5e1742d4bb02dd6ddd551862c1211d35c304f9eca3efdbb481601c163cf52493d6e44aed55d51ec39b7e518fadb92c2b523f20",
        ),
        ("tcb_status", "UpToDate"),
        ("fmspc", "b0c06f000000"),
    ] {
        assert_eq!(claim_str(&v, key), want, "claim {key}");
    }
    let claims = v.claims();
    assert_eq!(claims["td_attributes"]["debug"], false);
    assert_eq!(claims["td_attributes"]["septve_disable"], true);
    assert_eq!(claims["advisory_ids"], serde_json::json!([]));
}

#[test]
fn t1_expired_collateral() {
    let Some(root) = evidence("t1_expired_collateral") else { return };
    let bytes = read(&root, T1);
    let c = collateral(&root, C_T1);
    let e = strict().verify(&bytes, Some(&c), NOW_T1_EXPIRED).unwrap_err();
    assert!(matches!(e, TdxVerifyError::CrlExpired { crl: CrlKind::RootCa, .. }), "{e}");
    assert!(e.is_expired() && e.check() == "dates", "{e}");
    assert_eq!(e.to_string(), "root CA CRL expired at 2026-04-03T11:21:57Z");
    // Today's date (no pin): the same collateral is stale.
    let today = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let e = strict().verify(&bytes, Some(&c), today).unwrap_err();
    assert!(e.is_expired(), "today: {e}");
    // Just after the PCK CRL's nextUpdate (2025-07-19T10:00:35Z), before the others expire.
    let e = strict().verify(&bytes, Some(&c), 1_752_919_236).unwrap_err();
    assert!(matches!(e, TdxVerifyError::CrlExpired { crl: CrlKind::Pck, .. }), "{e}");
    // Before the collateral was issued.
    let e = strict().verify(&bytes, Some(&c), 1_750_000_000).unwrap_err();
    assert!(e.is_expired(), "{e}");
    // Before the PCK certificate was issued (2025-02-06), without collateral.
    let e = strict().verify(&bytes, None, 1_700_000_000).unwrap_err();
    assert!(matches!(e, TdxVerifyError::CertificateNotYetValid { cert: CertRole::PckLeaf, .. }), "{e}");
}

#[test]
fn t2_tdx_v5_td15_up_to_date() {
    let Some(root) = evidence("t2_tdx_v5_td15_up_to_date") else { return };
    let bytes = read(&root, T2);
    let v = strict().verify(&bytes, Some(&collateral(&root, C_OUTDATED)), NOW_OUTDATED).unwrap();
    assert_eq!((v.tcb_status, v.qe_tcb_status), (TcbStatus::UpToDate, TcbStatus::UpToDate));
    assert!(v.advisory_ids.is_empty());
    assert_eq!(v.quote.header().version, 5);
    assert_eq!(v.quote.body().body_type(), 3);
    assert_eq!(v.quote.signed_bytes().len(), 702);
    assert_eq!((hex::encode(v.fmspc), v.pce_svn), ("90c06f000000".to_string(), 13));
    assert_eq!(claim_str(&v, "tcb_svn"), "0b010400000000000000000000000000");
    assert_eq!(claim_str(&v, "tee_tcb_svn2"), "0d010400000000000000000000000000");
    assert_eq!(claim_str(&v, "mr_servicetd"), "00".repeat(48));
    assert_eq!(
        claim_str(&v, "mr_td"),
        "7348651a34b2d2d3462822e3a750ec6110125f36757c78480bbfc69cc0d21fb001a1ced3ee19747dda8f750c3bc8f876"
    );
    assert_eq!(
        claim_str(&v, "report_data"),
        "945eaacf5abc1f719d8666a942fda03d1edcb4490277396093dc5a5289ab9f1e094aed63060cd4a4933a4dd537ed1255c9c79ecb3ed82cd1b486233e31c25c3a"
    );
    // Also with go-tdx-guest's own TCB info v5 response (cross-repository collateral).
    let v = strict().verify(&bytes, Some(&collateral_tcbinfo_v5(&root)), NOW_TCBINFO_V5).unwrap();
    assert_eq!(v.tcb_status, TcbStatus::UpToDate);
}

#[test]
fn t4_debug_td() {
    let Some(root) = evidence("t4_debug_td") else { return };
    let bytes = read(&root, T4);
    let c = collateral(&root, C_GO);
    let e = strict().verify(&bytes, Some(&c), NOW_GO).unwrap_err();
    assert_eq!(e, TdxVerifyError::Debug("TD"));
    assert_eq!(e.check(), "debug");
    let v = allow_debug().verify(&bytes, Some(&c), NOW_GO).unwrap();
    assert_eq!((v.tcb_status, v.qe_tcb_status), (TcbStatus::UpToDate, TcbStatus::UpToDate));
    // Claims carry trustee's names and values for this quote.
    let expected: serde_json::Value =
        serde_json::from_slice(&read(&root, "trustee-tdx/parse_tdx_claims_expected.json")).unwrap();
    let claims = v.claims();
    for (key, want) in expected["quote"]["body"].as_object().unwrap() {
        let ours = if key == "td_attributes" { "td_attributes_hex" } else { key.as_str() };
        assert_eq!(&claims[ours], want, "claim {key}");
    }
    for (flag, want) in expected["td_attributes"].as_object().unwrap() {
        assert_eq!(&claims["td_attributes"][flag], want, "td_attributes.{flag}");
    }
    assert_eq!(claims["report_data"], expected["report_data"]);
    assert_eq!(claims["init_data"], expected["init_data"]);
}

#[test]
fn t5_tcb_level_not_supported() {
    let Some(root) = evidence("t5_tcb_level_not_supported") else { return };
    let bytes = read(&root, T5);
    let c = collateral(&root, C_GO);
    assert_eq!(strict().verify(&bytes, Some(&c), NOW_GO).unwrap_err(), TdxVerifyError::TcbLevelNotSupported);
    assert_eq!(allow_debug().verify(&bytes, Some(&c), NOW_GO).unwrap_err(), TdxVerifyError::TcbLevelNotSupported);
    let q = Quote::parse(&bytes).unwrap();
    assert_eq!(q.trailing_len(), 39);
    // Signatures and chain are fine: without collateral only the TCB is missing.
    assert_eq!(
        strict().verify(&bytes, None, NOW_GO).unwrap_err(),
        TdxVerifyError::CollateralMissing { fmspc: "50806f000000".into() }
    );
}

#[test]
fn t12_collateral_missing_and_event_log() {
    let Some(root) = evidence("t12_collateral_missing_and_event_log") else { return };
    let bytes = read(&root, T12);
    let e = strict().verify(&bytes, None, NOW_T12).unwrap_err();
    assert_eq!(e, TdxVerifyError::CollateralMissing { fmspc: "00806f050000".into() });
    assert_eq!(e.check(), "tcb");
    // The signatures were checked before that verdict: a flipped body byte is caught first.
    let mut bad = bytes.clone();
    bad[48 + 136] ^= 1;
    assert_eq!(strict().verify(&bad, None, NOW_T12).unwrap_err(), TdxVerifyError::QuoteSignature);

    let q = Quote::parse(&bytes).unwrap();
    assert_eq!((q.encoded_len(), q.trailing_len()), (8000 - 3065, 3065));
    let td = q.td10().unwrap();
    assert_eq!(td.report_data.0.to_vec(), read(&root, "go-tdx-guest/ccel/nonce.dat"));
    assert_eq!(
        td.mr_td.to_hex(),
        "dae67181d3d65e073ad8f95b7907d5e927bfe9761c9ff3e9b89734a45d8954dba41394c7717cb2735396c1d04231f94a"
    );
    let log = read(&root, "go-tdx-guest/ccel/ccel_data.dat");
    let parsed = check_event_log(td, &log).unwrap();
    assert_eq!(parsed.events.len(), 43);
    // Flip one byte of the SHA-384 digest of each of a few extended events.
    for e in parsed.events.iter().filter(|e| e.rtmr().is_some()).step_by(7) {
        let mut bad = log.clone();
        bad[e.offset + 14 + 10] ^= 0x80;
        match check_event_log(td, &bad) {
            Err(TdxVerifyError::RtmrMismatch { index, .. }) => assert_eq!(Some(index), e.rtmr()),
            other => panic!("event at {:#x}: {other:?}", e.offset),
        }
    }
}

#[test]
fn x1_sgx_v3() {
    let Some(root) = evidence("x1_sgx_v3") else { return };
    let bytes = read(&root, X1);
    let v = strict().verify(&bytes, Some(&collateral(&root, C_SGX)), NOW_SGX).unwrap();
    assert_eq!(v.tcb_status, TcbStatus::ConfigurationAndSwHardeningNeeded);
    assert_eq!(v.advisory_ids, ["INTEL-SA-00289", "INTEL-SA-00615"]);
    assert_eq!(v.qe_tcb_status, TcbStatus::UpToDate);
    assert_eq!((hex::encode(v.fmspc), v.pce_svn), ("00a067110000".to_string(), 13));
    assert_eq!(v.quote.header().version, 3);
    assert!(v.td_report().is_none());
    let claims = v.claims();
    assert_eq!(claims["tee"], "sgx");
    assert_eq!(claims["tcb_status"], "ConfigurationAndSWHardeningNeeded");
    assert_eq!(claims["mr_enclave"], "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb");
    assert_eq!(claims["mr_signer"], "815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6");
    assert_eq!(claims["cpu_svn"], "0b0b1a18ffff04000000000000000000");
    assert_eq!(claims["attributes"], "0500000000000000e700000000000000");
    assert_eq!((claims["isv_prod_id"].as_u64(), claims["isv_svn"].as_u64()), (Some(0), Some(0)));
    let mut report_data = b"Hello, world!".to_vec();
    report_data.resize(64, 0);
    assert_eq!(claims["report_data"], hex::encode(report_data));
    assert!(v.check_event_log(&[]).is_err(), "an SGX quote has no RTMRs");
}

#[test]
fn other_real_samples() {
    let Some(root) = evidence("other_real_samples") else { return };
    let v = strict();
    // T3: quote v5 with a TD 1.5-extended (885-byte) body and its own collateral.
    let r = v.verify(&read(&root, T3), Some(&collateral(&root, C_TD15EX)), NOW_TD15EX).unwrap();
    assert_eq!((r.tcb_status, r.quote.body().body_type(), r.quote.body().len()), (TcbStatus::UpToDate, 4, 885));
    assert_eq!(r.quote.signed_bytes().len(), 48 + 6 + 885);
    assert_eq!(r.tcb_evaluation_data_number, 20);
    // T1 under that newer TCB evaluation (data number 20): out of date.
    let r = v.verify(&read(&root, T1), Some(&collateral(&root, C_TD15EX)), NOW_TD15EX).unwrap();
    assert_eq!(r.tcb_status, TcbStatus::OutOfDate);
    assert_eq!(r.advisory_ids, ["INTEL-SA-01192", "INTEL-SA-01245", "INTEL-SA-01312", "INTEL-SA-01313"]);
    // T6 (TD 1.5, non-zero MRSERVICETD), T7: below every TCB level of the FMSPC's TCB info.
    for q in [T6, T7] {
        for (c, now) in [(collateral(&root, C_OUTDATED), NOW_OUTDATED), (collateral_tcbinfo_v5(&root), NOW_TCBINFO_V5)]
        {
            assert_eq!(
                v.verify(&read(&root, q), Some(&c), now).unwrap_err(),
                TdxVerifyError::TcbLevelNotSupported,
                "{q}"
            );
        }
    }
    // T8, T9 (FMSPC b0c06f000000): below every level of the June 2025 TCB info.
    for q in [T8, T9] {
        let e = v.verify(&read(&root, q), Some(&collateral(&root, C_T1)), NOW_T1).unwrap_err();
        assert_eq!(e, TdxVerifyError::TcbLevelNotSupported, "{q}");
    }
    // No collateral for these FMSPCs: signatures and chains verify, TCB cannot be appraised.
    for (q, fmspc) in [(T10, "00a06d080000"), (T11, "00806f050000"), (X2, "00606a000000"), (T6, "90c06f000000")] {
        let e = v.verify(&read(&root, q), None, NOW_T12).unwrap_err();
        assert_eq!(e, TdxVerifyError::CollateralMissing { fmspc: fmspc.into() }, "{q}");
    }
    // T10 with trustee's signed TCB info / QE identity: their signatures verify, but no PCK CRL
    // covering their window (2025-10-28 .. 2025-11-26) exists in the fixtures.
    let e = v.verify(&read(&root, T10), Some(&collateral_t10(&root)), 1_762_000_000).unwrap_err();
    assert!(matches!(e, TdxVerifyError::CrlExpired { crl: CrlKind::Pck, .. }), "{e}");
    // Not quotes: a raw TDREPORT and an Azure HCL report.
    for f in ["go-tdx-guest/report.dat", "trustee-az-tdx-vtpm/hcl-report.bin"] {
        assert!(matches!(v.verify(&read(&root, f), None, NOW_T12), Err(TdxVerifyError::Malformed(_))), "{f}");
    }
    // Wrong-TEE collateral.
    let e = v.verify(&read(&root, X2), Some(&collateral(&root, C_T1)), NOW_T1).unwrap_err();
    assert!(matches!(e, TdxVerifyError::CollateralKind { document: "TCB info", .. }), "{e}");
    let e = v.verify(&read(&root, T1), Some(&collateral(&root, C_OUTDATED)), NOW_OUTDATED).unwrap_err();
    assert!(matches!(e, TdxVerifyError::FmspcMismatch { .. }), "{e}");
}

#[test]
fn pcs_responses_give_the_derived_collateral() {
    let Some(root) = evidence("pcs_responses_give_the_derived_collateral") else { return };
    let c = collateral(&root, C_GO);
    let tcb = String::from_utf8(read(&root, "go-tdx-guest/sample_tcbInfo_response")).unwrap();
    let (text, sig) = pcs_signed_body(&tcb, "tcbInfo").unwrap();
    assert_eq!((text, &sig), (c.parts().tcb_info.as_str(), &c.parts().tcb_info_signature));
    let qe = String::from_utf8(read(&root, "go-tdx-guest/sample_qeIdentity_response")).unwrap();
    let (text, sig) = pcs_signed_body(&qe, "enclaveIdentity").unwrap();
    assert_eq!((text, &sig), (c.parts().qe_identity.as_str(), &c.parts().qe_identity_signature));
    assert!(pcs_signed_body(&qe, "tcbInfo").is_err());
    // JSON round trip keeps the digest.
    let again = TdxCollateral::from_json(c.to_json().as_bytes()).unwrap();
    assert_eq!(again.digest(), c.digest());
}

/// The dcap-qvl verdict, with the collateral's `pck_certificate_chain` removed when the quote
/// carries its own chain: dcap-qvl prefers the collateral's chain, this verifier the quote's (so
/// collateral stays per-FMSPC and cacheable). With that one difference taken out, the two must
/// agree on every pairing.
fn dcap_qvl_verdict(
    quote: &[u8],
    c: &TdxCollateral,
    now: u64,
    allow_debug: bool,
) -> Result<(String, Vec<String>), String> {
    let mut parts = c.parts().clone();
    if Quote::parse(quote).is_ok_and(|q| q.signature_data().certification.cert_type == CERT_DATA_PCK_CHAIN) {
        parts.pck_certificate_chain = None;
    }
    let theirs: dcap_qvl::QuoteCollateralV3 = serde_json::from_str(&serde_json::to_string(&parts).unwrap()).unwrap();
    dcap_qvl::verify::QuoteVerifier::new_prod()
        .with_config::<dcap_qvl::configs::RingConfig>()
        .allow_debug(allow_debug)
        .verify(quote, &theirs, now)
        .map(|r| (r.status, r.advisory_ids))
        .map_err(|e| format!("{e:#}"))
}

#[test]
fn agrees_with_dcap_qvl() {
    let Some(root) = evidence("agrees_with_dcap_qvl") else { return };
    let sets = [
        (collateral(&root, C_T1), NOW_T1),
        (collateral(&root, C_SGX), NOW_SGX),
        (collateral(&root, C_TD15EX), NOW_TD15EX),
        (collateral(&root, C_OUTDATED), NOW_OUTDATED),
        (collateral(&root, C_GO), NOW_GO),
        (collateral_tcbinfo_v5(&root), NOW_TCBINFO_V5),
        (collateral_t10(&root), 1_762_000_000),
        (collateral(&root, C_T1), NOW_T1_EXPIRED),
    ];
    let (strict, debug) = (strict(), allow_debug());
    let mut oks = 0;
    for q in ALL_QUOTES {
        let bytes = read(&root, q);
        for (i, (c, now)) in sets.iter().enumerate() {
            for (allow, v) in [(false, &strict), (true, &debug)] {
                let ours = v.verify(&bytes, Some(c), *now);
                let theirs = dcap_qvl_verdict(&bytes, c, *now, allow);
                match (&ours, &theirs) {
                    (Ok(o), Ok((status, advisories))) => {
                        assert_eq!(o.tcb_status.as_str(), status, "{q} with set {i}");
                        assert_eq!(&o.advisory_ids, advisories, "{q} with set {i}");
                        oks += 1;
                    }
                    (Err(_), Err(_)) => {}
                    _ => panic!("{q} with set {i} (allow_debug {allow}): ours {ours:?}, dcap-qvl {theirs:?}"),
                }
                if let Err(e) = &ours {
                    assert!(!e.to_string().is_empty() && !e.check().is_empty());
                }
            }
        }
    }
    // T1, T2, T3, X1, T1 under the newer TCB evaluation, T2 with TCB info v5, T4 (debug allowed),
    // each strict and with debug allowed except T4.
    assert_eq!(oks, 13, "number of accepted pairings");
}

/// Verifies `bytes` with byte `i` flipped and returns the result.
fn flipped(
    v: &TdxVerifier,
    bytes: &[u8],
    i: usize,
    c: Option<&TdxCollateral>,
    now: u64,
) -> Result<VerifiedTdxQuote, TdxVerifyError> {
    let mut b = bytes.to_vec();
    b[i] ^= 0x01;
    v.verify(&b, c, now)
}

#[test]
fn every_signed_byte_matters() {
    let Some(root) = evidence("every_signed_byte_matters") else { return };
    let v = strict();
    for (q, c, now) in [(T1, C_T1, NOW_T1), (T2, C_OUTDATED, NOW_OUTDATED), (X1, C_SGX, NOW_SGX)] {
        let bytes = read(&root, q);
        let c = collateral(&root, c);
        let quote = Quote::parse(&bytes).unwrap();
        v.verify(&bytes, Some(&c), now).unwrap();
        let signed = quote.signed_bytes().len();
        let header_and_descriptor = signed - quote.body().len();
        for i in 0..signed {
            let e = flipped(&v, &bytes, i, Some(&c), now)
                .map(|_| ())
                .expect_err(&format!("{q}: flipped byte {i} accepted"));
            if i >= header_and_descriptor {
                assert_eq!(e, TdxVerifyError::QuoteSignature, "{q}: body byte {i}");
            }
        }
        // Signature data: [len u32][sig 64][key 64]([type u16][size u32] for v4/v5)[QE report 384]
        // [QE report sig 64][auth size u16][auth data][cert type u16][cert size u32][PEM].
        let sig = signed + 4;
        let qe = sig + 128 + if quote.header().version == 3 { 0 } else { 6 };
        let auth = qe + 384 + 64 + 2;
        let auth_len = quote.signature_data().qe_auth_data.len();
        let pem = auth + auth_len + 6;
        let expect = |range: std::ops::Range<usize>, want: TdxVerifyError| {
            for i in range {
                assert_eq!(flipped(&v, &bytes, i, Some(&c), now).unwrap_err(), want, "{q}: byte {i}");
            }
        };
        expect(sig..sig + 64, TdxVerifyError::QuoteSignature);
        expect(sig + 64..sig + 128, TdxVerifyError::QeBinding);
        expect(qe..qe + 384 + 64, TdxVerifyError::QeReportSignature);
        expect(auth..auth + auth_len, TdxVerifyError::QeBinding);
        // The PEM chain: every 5th byte inside the base64 payload of each certificate.
        let cert = &quote.signature_data().certification.data;
        let text = String::from_utf8_lossy(cert);
        let mut checked = 0;
        for (start, _) in text.match_indices("-----BEGIN CERTIFICATE-----\n") {
            let body = start + 28;
            let end = body + text[body..].find("-----END").unwrap();
            for i in (body..end).step_by(5).filter(|&i| cert[i] != b'\n') {
                let e = flipped(&v, &bytes, pem + i, Some(&c), now).unwrap_err();
                assert!(matches!(e.check(), "chain" | "crl" | "qe_report" | "tcb"), "{q}: PEM byte {i}: {e}");
                checked += 1;
            }
        }
        assert!(checked > 400, "{q}: {checked} PEM bytes checked");
        // Trailing bytes after the signature data are not part of the quote.
        if quote.trailing_len() > 0 {
            flipped(&v, &bytes, quote.encoded_len(), Some(&c), now).unwrap();
        }
    }
}

#[test]
fn collateral_tampering_is_rejected() {
    let Some(root) = evidence("collateral_tampering_is_rejected") else { return };
    let bytes = read(&root, T1);
    let good = collateral(&root, C_T1).into_parts();
    let v = strict();
    let check = |edit: &dyn Fn(&mut CollateralParts), pred: &dyn Fn(&TdxVerifyError) -> bool, what: &str| {
        let mut p = good.clone();
        edit(&mut p);
        let e = v.verify(&bytes, Some(&TdxCollateral::new(p)), NOW_T1).expect_err(what);
        assert!(pred(&e), "{what}: {e}");
    };
    check(
        &|p| p.tcb_info = p.tcb_info.replacen("UpToDate", "OutOfDate", 1),
        &|e| *e == TdxVerifyError::TcbInfoSignature,
        "TCB info text",
    );
    check(&|p| p.tcb_info_signature[5] ^= 1, &|e| *e == TdxVerifyError::TcbInfoSignature, "TCB info signature");
    check(
        &|p| p.tcb_info_signature.truncate(63),
        &|e| *e == TdxVerifyError::TcbInfoSignature,
        "short TCB info signature",
    );
    check(
        &|p| p.qe_identity = p.qe_identity.replace("\"isvprodid\":2", "\"isvprodid\":3"),
        &|e| *e == TdxVerifyError::QeIdentitySignature,
        "QE identity text",
    );
    check(
        &|p| p.qe_identity_signature[40] ^= 1,
        &|e| *e == TdxVerifyError::QeIdentitySignature,
        "QE identity signature",
    );
    let last = good.root_ca_crl.len() - 3;
    check(
        &|p| p.root_ca_crl[last] ^= 1,
        &|e| {
            matches!(
                e,
                TdxVerifyError::CrlSignature { crl: CrlKind::RootCa }
                    | TdxVerifyError::CrlMalformed { crl: CrlKind::RootCa, .. }
            )
        },
        "root CA CRL signature",
    );
    check(&|p| p.root_ca_crl[60] ^= 1, &|e| e.check() == "crl", "root CA CRL body");
    let last = good.pck_crl.len() - 3;
    check(
        &|p| p.pck_crl[last] ^= 1,
        &|e| {
            matches!(
                e,
                TdxVerifyError::CrlSignature { crl: CrlKind::Pck }
                    | TdxVerifyError::CrlMalformed { crl: CrlKind::Pck, .. }
            )
        },
        "PCK CRL signature",
    );
    check(&|p| p.pck_crl[200] ^= 1, &|e| e.check() == "crl", "PCK CRL body");
    check(
        &|p| p.pck_crl = p.root_ca_crl.clone(),
        &|e| *e == TdxVerifyError::CrlIssuer { crl: CrlKind::Pck },
        "root CRL as PCK CRL",
    );
    check(
        &|p| p.root_ca_crl = p.pck_crl.clone(),
        &|e| *e == TdxVerifyError::CrlIssuer { crl: CrlKind::RootCa },
        "PCK CRL as root CRL",
    );
    check(
        &|p| p.tcb_info_issuer_chain = p.pck_crl_issuer_chain.clone(),
        &|e| *e == TdxVerifyError::TcbInfoSignature,
        "wrong TCB signer",
    );
    check(
        &|p| p.tcb_info_issuer_chain = p.tcb_info_issuer_chain.replacen('A', "B", 1),
        &|e| e.check() == "chain",
        "TCB signer bytes",
    );
    check(&|p| p.tcb_info = "{}".into(), &|e| *e == TdxVerifyError::TcbInfoSignature, "empty TCB info");
    check(
        &|p| p.pck_crl.clear(),
        &|e| matches!(e, TdxVerifyError::CrlMalformed { crl: CrlKind::Pck, .. }),
        "empty PCK CRL",
    );
    // A collateral set for SGX (Processor CA CRL) does not cover a Platform CA PCK certificate.
    let e = v.verify(&bytes, Some(&collateral(&root, C_SGX)), NOW_SGX).unwrap_err();
    assert_eq!(e, TdxVerifyError::CrlIssuer { crl: CrlKind::Pck });
}

#[test]
fn chain_to_an_unpinned_root_is_rejected() {
    let Some(root) = evidence("chain_to_an_unpinned_root_is_rejected") else { return };
    let bytes = read(&root, T1);
    let c = collateral(&root, C_T1);
    // No anchors at all.
    let none = TdxVerifier::new(TdxTrustAnchors::empty(), TdxVerifyOptions::default());
    assert!(matches!(none.verify(&bytes, None, NOW_T1), Err(TdxVerifyError::RootNotPinned { .. })));
    assert!(matches!(none.verify(&bytes, Some(&c), NOW_T1), Err(TdxVerifyError::RootNotPinned { .. })));
    // The quote's chain ending in another certificate (the TCB signing certificate) instead of
    // the Intel root: the signature data is not signed, so only the pinning catches this.
    let quote = Quote::parse(&bytes).unwrap();
    let mut sig = quote.signature_data().clone();
    let pem = String::from_utf8(sig.certification.data.clone()).unwrap();
    let root_start = pem.rfind("-----BEGIN CERTIFICATE-----").unwrap();
    let signer_end = c.parts().tcb_info_issuer_chain.find("-----END CERTIFICATE-----").unwrap() + 25;
    let forged = format!("{}{}\n\0", &pem[..root_start], &c.parts().tcb_info_issuer_chain[..signer_end]);
    sig.certification = CertificationData { cert_type: CERT_DATA_PCK_CHAIN, data: forged.into_bytes() };
    let forged = Quote::new(*quote.header(), *quote.body(), sig).unwrap().to_bytes().unwrap();
    assert!(matches!(strict().verify(&forged, Some(&c), NOW_T1), Err(TdxVerifyError::RootNotPinned { .. })));
    // Only leaf and CA (root omitted): the CA's issuer names the pinned root, which is accepted.
    let mut sig = quote.signature_data().clone();
    sig.certification.data = pem.as_bytes()[..root_start].to_vec();
    let short = Quote::new(*quote.header(), *quote.body(), sig).unwrap().to_bytes().unwrap();
    assert_eq!(strict().verify(&short, Some(&c), NOW_T1).unwrap().tcb_status, TcbStatus::UpToDate);
    // Leaf only.
    let mut sig = quote.signature_data().clone();
    let ca_start = pem.find("-----BEGIN CERTIFICATE-----").unwrap() + 10;
    let ca_start = ca_start + pem[ca_start..].find("-----BEGIN CERTIFICATE-----").unwrap();
    sig.certification.data = pem.as_bytes()[..ca_start].to_vec();
    let leaf_only = Quote::new(*quote.header(), *quote.body(), sig).unwrap().to_bytes().unwrap();
    assert!(matches!(strict().verify(&leaf_only, Some(&c), NOW_T1), Err(TdxVerifyError::PckChainMissing(_))));
    // No type-5 chain in the quote: the collateral's `pck_certificate_chain` is used if present.
    let mut sig = quote.signature_data().clone();
    sig.certification = CertificationData { cert_type: 3, data: vec![0; 276] };
    let no_chain = Quote::new(*quote.header(), *quote.body(), sig).unwrap().to_bytes().unwrap();
    assert!(matches!(strict().verify(&no_chain, Some(&c), NOW_T1), Err(TdxVerifyError::PckChainMissing(_))));
    let mut parts = c.parts().clone();
    parts.pck_certificate_chain = Some(pem.clone());
    let with_chain = TdxCollateral::new(parts);
    assert_eq!(strict().verify(&no_chain, Some(&with_chain), NOW_T1).unwrap().tcb_status, TcbStatus::UpToDate);
}

#[test]
fn cache_is_keyed_by_collateral() {
    let Some(root) = evidence("cache_is_keyed_by_collateral") else { return };
    let v = strict();
    let (t1, x1) = (read(&root, T1), read(&root, X1));
    let (c1, cx) = (collateral(&root, C_T1), collateral(&root, C_SGX));
    let a = v.verify(&t1, Some(&c1), NOW_T1).unwrap();
    assert_eq!(v.cached_collateral(), 1);
    let b = v.verify(&t1, Some(&c1), NOW_T1).unwrap();
    assert_eq!(v.cached_collateral(), 1);
    assert_eq!((a.tcb_status, a.quote.signed_bytes()), (b.tcb_status, b.quote.signed_bytes()));
    // Dates are checked on every call, also for cached collateral.
    assert!(v.verify(&t1, Some(&c1), NOW_T1_EXPIRED).unwrap_err().is_expired());
    v.verify(&x1, Some(&cx), NOW_SGX).unwrap();
    assert_eq!(v.cached_collateral(), 2);
    v.verify_uncached(&t1, Some(&c1), NOW_T1).unwrap();
    assert_eq!(v.cached_collateral(), 2);
    // A tampered set is a different key and fails on its own.
    let mut p = c1.parts().clone();
    p.tcb_info_signature[0] ^= 1;
    assert_eq!(v.verify(&t1, Some(&TdxCollateral::new(p)), NOW_T1).unwrap_err(), TdxVerifyError::TcbInfoSignature);
    assert_eq!(v.cached_collateral(), 2);
    // Capacity 1: the older set is evicted.
    let small = with(TdxVerifyOptions { cache_capacity: 1, ..Default::default() });
    small.verify(&t1, Some(&c1), NOW_T1).unwrap();
    small.verify(&x1, Some(&cx), NOW_SGX).unwrap();
    assert_eq!(small.cached_collateral(), 1);
    v.clear_cache();
    assert_eq!(v.cached_collateral(), 0);
}

#[test]
fn shared_between_threads() {
    let Some(root) = evidence("shared_between_threads") else { return };
    let v = Arc::new(strict());
    let (t1, c1) = (Arc::new(read(&root, T1)), Arc::new(collateral(&root, C_T1)));
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (v, t1, c1) = (Arc::clone(&v), Arc::clone(&t1), Arc::clone(&c1));
            std::thread::spawn(move || {
                (0..5).map(|_| v.verify(&t1, Some(&c1), NOW_T1).map(|r| r.tcb_status)).collect::<Vec<_>>()
            })
        })
        .collect();
    for h in handles {
        assert!(h.join().unwrap().iter().all(|r| *r == Ok(TcbStatus::UpToDate)));
    }
    assert_eq!(v.cached_collateral(), 1);
}

/// The base64 payloads of the PEM certificate blocks, whitespace removed.
fn pem_payloads(data: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(data);
    text.split("-----BEGIN CERTIFICATE-----")
        .skip(1)
        .filter_map(|block| block.split("-----END CERTIFICATE-----").next())
        .map(|b| b.chars().filter(|c| !c.is_ascii_whitespace()).collect())
        .collect()
}

static SEEDS: OnceLock<Option<(Vec<u8>, TdxCollateral, String)>> = OnceLock::new();

fn seeds() -> Option<&'static (Vec<u8>, TdxCollateral, String)> {
    SEEDS
        .get_or_init(|| {
            let root = evidence("proptest seeds")?;
            let json = String::from_utf8(read(&root, C_T1)).unwrap();
            Some((read(&root, T1), TdxCollateral::from_json(json.as_bytes()).unwrap(), json))
        })
        .as_ref()
}

fn shared_verifier() -> &'static TdxVerifier {
    static V: OnceLock<TdxVerifier> = OnceLock::new();
    V.get_or_init(TdxVerifier::default)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Any edit of the quote proper is rejected with a typed error; nothing panics.
    #[test]
    fn mutated_quotes_are_rejected(edits in prop::collection::vec((0usize..4936, 1u8..=255), 1..4), cut in 0usize..6000) {
        let Some((quote, c, _)) = seeds() else { return Ok(()) };
        let mut q = quote.clone();
        let mut seen = std::collections::HashSet::new();
        for (i, x) in &edits {
            if seen.insert(*i) {
                q[*i] ^= x;
            }
        }
        q.truncate(cut.max(1));
        match shared_verifier().verify(&q, Some(c), NOW_T1) {
            Err(e) => prop_assert!(!e.check().is_empty()),
            Ok(v) => {
                // Only bytes nothing depends on may have changed (text around the PEM blocks of
                // the unsigned certification data): everything else parses to the same values.
                let original = Quote::parse(quote).unwrap();
                let (a, b) = (original.signature_data(), v.quote.signature_data());
                prop_assert_eq!(v.quote.signed_bytes(), original.signed_bytes());
                prop_assert_eq!(v.quote.qe_report_bytes(), original.qe_report_bytes());
                prop_assert_eq!((&a.signature, &a.attestation_key, &a.qe_report_signature, &a.qe_auth_data),
                    (&b.signature, &b.attestation_key, &b.qe_report_signature, &b.qe_auth_data));
                let differing: Vec<usize> = (0..q.len().min(quote.len())).filter(|&i| q[i] != quote[i]).collect();
                prop_assert!(differing.iter().all(|&i| i >= 4936 - a.certification.data.len()));
                prop_assert_eq!(pem_payloads(&a.certification.data), pem_payloads(&b.certification.data));
            }
        }
    }

    /// Random bytes, also with a valid-looking header, never panic.
    #[test]
    fn random_quotes_never_panic(mut bytes in prop::collection::vec(any::<u8>(), 0..6000), version in 3u16..=5, tdx in any::<bool>()) {
        if bytes.len() >= 8 {
            bytes[0..2].copy_from_slice(&version.to_le_bytes());
            bytes[2..4].copy_from_slice(&2u16.to_le_bytes());
            bytes[4..8].copy_from_slice(&(if tdx { 0x81u32 } else { 0 }).to_le_bytes());
        }
        prop_assert!(shared_verifier().verify(&bytes, None, NOW_T1).is_err());
    }

    /// Edited collateral JSON either fails to parse or fails verification; nothing panics.
    #[test]
    fn mutated_collateral_is_rejected(i in 0usize..16000, x in 1u8..=255) {
        let Some((quote, _, json)) = seeds() else { return Ok(()) };
        let mut b = json.clone().into_bytes();
        let i = i % b.len();
        b[i] ^= x;
        if let Ok(c) = TdxCollateral::from_json(&b) {
            // Accepted only if nothing the verifier uses changed: hex case flips decode to the
            // same bytes, and the PCK CRL issuer chain is not used (the CRL is checked against the
            // quote's verified PCK CA).
            if shared_verifier().verify(quote, Some(&c), NOW_T1).is_ok() {
                let original = &seeds().unwrap().1;
                let mut p = c.parts().clone();
                p.pck_crl_issuer_chain = original.parts().pck_crl_issuer_chain.clone();
                let normalised = TdxCollateral::new(p);
                prop_assert_eq!(normalised.digest(), original.digest());
            }
        }
    }
}

/// A complete DCAP PKI under a locally generated root (what the TEE emulator will produce): root,
/// PCK CA, PCK leaf with the Intel SGX extension, TCB signing certificate, both CRLs, signed TCB
/// info and QE identity, and a quote signed by a fresh attestation key. Covers what no real sample
/// can: an emulated root accepted only when named, revocations, a revoked TCB level, FMSPC / PCE-ID
/// / QE identity / TDX module mismatches, and the TD 1.5 relaunch status. Needs no fixtures.
mod synthetic {
    use cloister_evidence::tdx::{
        Bytes, CertificationData, EnclaveReport, INTEL_QE_VENDOR_ID, Quote, QuoteBody, QuoteHeader, QuoteSignatureData,
        TdAttributes, TdReport10, TdReport15,
    };
    use cloister_verifier::tdx::{
        CertRole, CollateralParts, CrlKind, TcbStatus, TdxCollateral, TdxTrustAnchors, TdxVerifier, TdxVerifyError,
        TdxVerifyOptions,
    };
    use ring::rand::SystemRandom;
    use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};

    /// 2030-01-01T00:00:00Z, inside every window below.
    const NOW: u64 = 1_893_456_000;
    const SGX: [u8; 9] = [0x2a, 0x86, 0x48, 0x86, 0xf8, 0x4d, 0x01, 0x0d, 0x01];
    const ECDSA_SHA256: [u8; 8] = [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
    const QE_MRSIGNER: [u8; 32] = [0x5a; 32];

    struct Key {
        asn1: EcdsaKeyPair,
        fixed: EcdsaKeyPair,
    }

    impl Key {
        fn new() -> Self {
            let rng = SystemRandom::new();
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
            Self {
                asn1: EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng).unwrap(),
                fixed: EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap(),
            }
        }
        fn point(&self) -> &[u8] {
            self.asn1.public_key().as_ref()
        }
        fn sign_der(&self, msg: &[u8]) -> Vec<u8> {
            self.asn1.sign(&SystemRandom::new(), msg).unwrap().as_ref().to_vec()
        }
        fn sign_raw(&self, msg: &[u8]) -> Vec<u8> {
            self.fixed.sign(&SystemRandom::new(), msg).unwrap().as_ref().to_vec()
        }
    }

    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        match content.len() {
            n if n < 0x80 => out.push(n as u8),
            n if n < 0x100 => out.extend_from_slice(&[0x81, n as u8]),
            n => out.extend_from_slice(&[0x82, (n >> 8) as u8, n as u8]),
        }
        out.extend_from_slice(content);
        out
    }
    fn seq(parts: &[Vec<u8>]) -> Vec<u8> {
        tlv(0x30, &parts.concat())
    }
    fn int(v: u64) -> Vec<u8> {
        let mut b: Vec<u8> = v.to_be_bytes().iter().copied().skip_while(|x| *x == 0).collect();
        if b.first().is_none_or(|x| x & 0x80 != 0) {
            b.insert(0, 0);
        }
        tlv(0x02, &b)
    }
    fn oid(content: &[u8]) -> Vec<u8> {
        tlv(0x06, content)
    }
    fn sgx_oid(suffix: &[u8]) -> Vec<u8> {
        oid(&[&SGX[..], suffix].concat())
    }
    fn name(cn: &str) -> Vec<u8> {
        seq(&[tlv(0x31, &seq(&[oid(&[0x55, 0x04, 0x03]), tlv(0x0c, cn.as_bytes())]))])
    }
    fn utc(t: &str) -> Vec<u8> {
        tlv(0x17, t.as_bytes())
    }
    fn alg() -> Vec<u8> {
        seq(&[oid(&ECDSA_SHA256)])
    }
    fn signed(tbs: Vec<u8>, key: &Key) -> Vec<u8> {
        let mut bits = vec![0u8];
        bits.extend(key.sign_der(&tbs));
        seq(&[tbs, alg(), tlv(0x03, &bits)])
    }

    /// A certificate; `ca` adds basicConstraints cA and keyUsage keyCertSign + cRLSign.
    fn cert(
        serial: u64,
        issuer: &str,
        subject: &str,
        subject_key: &Key,
        issuer_key: &Key,
        ca: bool,
        sgx: Option<Vec<u8>>,
    ) -> Vec<u8> {
        let spki = {
            let mut bits = vec![0u8];
            bits.extend_from_slice(subject_key.point());
            seq(&[
                seq(&[
                    oid(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01]),
                    oid(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07]),
                ]),
                tlv(0x03, &bits),
            ])
        };
        let bc = if ca { seq(&[tlv(0x01, &[0xff])]) } else { seq(&[]) };
        let mut exts = vec![seq(&[oid(&[0x55, 0x1d, 0x13]), tlv(0x01, &[0xff]), tlv(0x04, &bc)])];
        if ca {
            exts.push(seq(&[oid(&[0x55, 0x1d, 0x0f]), tlv(0x01, &[0xff]), tlv(0x04, &tlv(0x03, &[0x01, 0x06]))]));
        }
        if let Some(v) = sgx {
            exts.push(seq(&[oid(&SGX), tlv(0x04, &v)]));
        }
        let tbs = seq(&[
            tlv(0xa0, &int(2)),
            int(serial),
            alg(),
            name(issuer),
            seq(&[utc("200101000000Z"), utc("400101000000Z")]),
            name(subject),
            spki,
            tlv(0xa3, &seq(&exts)),
        ]);
        signed(tbs, issuer_key)
    }

    fn sgx_extension(fmspc: [u8; 6], pce_id: [u8; 2], comps: u8, pce_svn: u64) -> Vec<u8> {
        let mut tcb: Vec<Vec<u8>> = (1..=16u8).map(|i| seq(&[sgx_oid(&[2, i]), int(u64::from(comps))])).collect();
        tcb.push(seq(&[sgx_oid(&[2, 17]), int(pce_svn)]));
        tcb.push(seq(&[sgx_oid(&[2, 18]), tlv(0x04, &[comps; 16])]));
        seq(&[
            seq(&[sgx_oid(&[1]), tlv(0x04, &[7; 16])]),
            seq(&[sgx_oid(&[2]), seq(&tcb)]),
            seq(&[sgx_oid(&[3]), tlv(0x04, &pce_id)]),
            seq(&[sgx_oid(&[4]), tlv(0x04, &fmspc)]),
            seq(&[sgx_oid(&[5]), tlv(0x0a, &[0])]),
        ])
    }

    fn crl(issuer: &str, key: &Key, revoked: &[u64]) -> Vec<u8> {
        let mut fields = vec![int(1), alg(), name(issuer), utc("291201000000Z"), utc("300201000000Z")];
        if !revoked.is_empty() {
            fields.push(seq(&revoked.iter().map(|s| seq(&[int(*s), utc("291115000000Z")])).collect::<Vec<_>>()));
        }
        signed(seq(&fields), key)
    }

    fn pem(ders: &[&Vec<u8>]) -> String {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for der in ders {
            let mut b64 = String::new();
            for chunk in der.chunks(3) {
                let n = chunk.iter().enumerate().fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
                for i in 0..4 {
                    b64.push(if i <= chunk.len() { A[(n >> (18 - 6 * i) & 63) as usize] as char } else { '=' });
                }
            }
            out.push_str("-----BEGIN CERTIFICATE-----\n");
            for line in b64.as_bytes().chunks(64) {
                out.push_str(std::str::from_utf8(line).unwrap());
                out.push('\n');
            }
            out.push_str("-----END CERTIFICATE-----\n");
        }
        out
    }

    /// What to vary.
    #[derive(Clone)]
    struct Spec {
        platform_status: &'static str,
        platform_advisories: &'static str,
        tcb_fmspc: &'static str,
        tcb_pce_id: &'static str,
        module_id: &'static str,
        qe_min_isvsvn: u16,
        qe_mrsigner: [u8; 32],
        pck_revoked: bool,
        ca_revoked: bool,
        signer_revoked: bool,
        ca_can_sign: bool,
        /// TD 1.5 body with these (TEE_TCB_SVN[0], TEE_TCB_SVN2[0]) module SVNs.
        td15: Option<(u8, u8)>,
    }

    impl Default for Spec {
        fn default() -> Self {
            Self {
                platform_status: "UpToDate",
                platform_advisories: "",
                tcb_fmspc: "00112233aabb",
                tcb_pce_id: "0000",
                module_id: "TDX_01",
                qe_min_isvsvn: 4,
                qe_mrsigner: QE_MRSIGNER,
                pck_revoked: false,
                ca_revoked: false,
                signer_revoked: false,
                ca_can_sign: true,
                td15: None,
            }
        }
    }

    struct World {
        root: Vec<u8>,
        quote: Vec<u8>,
        collateral: TdxCollateral,
    }

    fn world(spec: &Spec) -> World {
        let (root_key, ca_key, leaf_key, signer_key, att_key) =
            (Key::new(), Key::new(), Key::new(), Key::new(), Key::new());
        let root = cert(1, "Emulated Root CA", "Emulated Root CA", &root_key, &root_key, true, None);
        let ca = cert(2, "Emulated Root CA", "Emulated PCK Platform CA", &ca_key, &root_key, spec.ca_can_sign, None);
        let sgx = sgx_extension([0x00, 0x11, 0x22, 0x33, 0xaa, 0xbb], [0, 0], 5, 10);
        let leaf =
            cert(3, "Emulated PCK Platform CA", "Emulated PCK Certificate", &leaf_key, &ca_key, false, Some(sgx));
        let signer = cert(4, "Emulated Root CA", "Emulated TCB Signing", &signer_key, &root_key, false, None);
        let mut root_revoked = vec![99];
        if spec.ca_revoked {
            root_revoked.push(2);
        }
        if spec.signer_revoked {
            root_revoked.push(4);
        }
        let root_crl = crl("Emulated Root CA", &root_key, &root_revoked);
        let pck_crl = crl("Emulated PCK Platform CA", &ca_key, if spec.pck_revoked { &[3, 98] } else { &[98] });

        let level = |sgx: u8, status: &str, adv: &str| {
            format!(
                r#"{{"tcb":{{"sgxtcbcomponents":[{}],"pcesvn":10,"tdxtcbcomponents":[{}]}},"tcbDate":"2029-11-01T00:00:00Z","tcbStatus":"{status}","advisoryIDs":[{adv}]}}"#,
                vec![format!(r#"{{"svn":{sgx}}}"#); 16].join(","),
                (0..16).map(|i| format!(r#"{{"svn":{}}}"#, if i == 2 { 3 } else { 0 })).collect::<Vec<_>>().join(",")
            )
        };
        let zeros48 = "00".repeat(48);
        let tcb_info = format!(
            r#"{{"id":"TDX","version":3,"issueDate":"2029-12-15T00:00:00Z","nextUpdate":"2030-01-15T00:00:00Z","fmspc":"{}","pceId":"{}","tcbType":0,"tcbEvaluationDataNumber":7,"tdxModule":{{"mrsigner":"{zeros48}","attributes":"0000000000000000","attributesMask":"FFFFFFFFFFFFFFFF"}},"tdxModuleIdentities":[{{"id":"{}","mrsigner":"{zeros48}","attributes":"0000000000000000","attributesMask":"FFFFFFFFFFFFFFFF","tcbLevels":[{{"tcb":{{"isvsvn":3}},"tcbDate":"2029-11-01T00:00:00Z","tcbStatus":"UpToDate"}},{{"tcb":{{"isvsvn":1}},"tcbDate":"2028-11-01T00:00:00Z","tcbStatus":"OutOfDate","advisoryIDs":["EMU-SA-0002"]}}]}}],"tcbLevels":[{},{}]}}"#,
            spec.tcb_fmspc,
            spec.tcb_pce_id,
            spec.module_id,
            level(5, spec.platform_status, spec.platform_advisories),
            level(1, "OutOfDate", r#""EMU-SA-0001""#),
        );
        let qe_identity = format!(
            r#"{{"id":"TD_QE","version":2,"issueDate":"2029-12-15T00:00:00Z","nextUpdate":"2030-01-15T00:00:00Z","tcbEvaluationDataNumber":7,"miscselect":"00000000","miscselectMask":"FFFFFFFF","attributes":"11000000000000000000000000000000","attributesMask":"FBFFFFFFFFFFFFFF0000000000000000","mrsigner":"{}","isvprodid":2,"tcbLevels":[{{"tcb":{{"isvsvn":{}}},"tcbDate":"2029-11-01T00:00:00Z","tcbStatus":"UpToDate"}}]}}"#,
            hex::encode(spec.qe_mrsigner),
            spec.qe_min_isvsvn,
        );
        let chain = pem(&[&signer, &root]);
        let collateral = TdxCollateral::new(CollateralParts {
            pck_crl_issuer_chain: pem(&[&ca, &root]),
            root_ca_crl: root_crl,
            pck_crl,
            tcb_info_issuer_chain: chain.clone(),
            tcb_info_signature: signer_key.sign_raw(tcb_info.as_bytes()),
            tcb_info,
            qe_identity_issuer_chain: chain,
            qe_identity_signature: signer_key.sign_raw(qe_identity.as_bytes()),
            qe_identity,
            pck_certificate_chain: None,
        });

        // The quote.
        let mut td = TdReport10::from_bytes(&[0u8; 584]).unwrap();
        td.tee_tcb_svn.0[..3].copy_from_slice(&[3, 1, 3]);
        td.td_attributes = TdAttributes(Bytes(TdAttributes::SEPT_VE_DISABLE.to_le_bytes()));
        td.mr_td = Bytes([0x42; 48]);
        td.report_data = Bytes([0x24; 64]);
        let (version, body) = match spec.td15 {
            None => (4, QuoteBody::Td10(td)),
            Some((launch, current)) => {
                td.tee_tcb_svn.0[0] = launch;
                let mut svn2 = td.tee_tcb_svn;
                svn2.0[0] = current;
                (5, QuoteBody::Td15(TdReport15 { base: td, tee_tcb_svn2: svn2, mr_service_td: Bytes::ZERO }))
            }
        };
        let header = QuoteHeader {
            version,
            attestation_key_type: 2,
            tee_type: 0x81,
            qe_svn: 0,
            pce_svn: 0,
            qe_vendor_id: Bytes(INTEL_QE_VENDOR_ID),
            user_data: Bytes([1; 20]),
        };
        let auth = vec![0xa5; 32];
        let att: [u8; 64] = att_key.point()[1..].try_into().unwrap();
        let mut qe = EnclaveReport::from_bytes(&[0u8; 384]).unwrap();
        qe.attributes.0[0] = 0x11;
        qe.mr_signer = Bytes(QE_MRSIGNER);
        qe.isv_prod_id = 2;
        qe.isv_svn = 4;
        let binding = ring::digest::digest(&ring::digest::SHA256, &[&att[..], &auth].concat());
        qe.report_data.0[..32].copy_from_slice(binding.as_ref());
        let qe_sig = leaf_key.sign_raw(&qe.to_bytes());
        let mut sig = QuoteSignatureData {
            signature: Bytes::ZERO,
            attestation_key: Bytes(att),
            qe_report: qe,
            qe_report_signature: Bytes(qe_sig.try_into().unwrap()),
            qe_auth_data: auth,
            certification: CertificationData {
                cert_type: 5,
                data: format!("{}\0", pem(&[&leaf, &ca, &root])).into_bytes(),
            },
        };
        let unsigned = Quote::new(header, body, sig.clone()).unwrap();
        sig.signature = Bytes(att_key.sign_raw(unsigned.signed_bytes()).try_into().unwrap());
        let quote = Quote::new(header, body, sig).unwrap().to_bytes().unwrap();
        World { root, quote, collateral }
    }

    fn verify(spec: &Spec) -> Result<(TcbStatus, Vec<String>), TdxVerifyError> {
        let w = world(spec);
        let v = TdxVerifier::new(TdxTrustAnchors::intel().with_root(&w.root).unwrap(), TdxVerifyOptions::default());
        v.verify(&w.quote, Some(&w.collateral), NOW).map(|r| (r.tcb_status, r.advisory_ids))
    }

    #[test]
    fn emulated_root_only_when_named() {
        let w = world(&Spec::default());
        let intel = TdxVerifier::default();
        assert!(matches!(intel.verify(&w.quote, Some(&w.collateral), NOW), Err(TdxVerifyError::RootNotPinned { .. })));
        assert!(matches!(intel.verify(&w.quote, None, NOW), Err(TdxVerifyError::RootNotPinned { .. })));
        let named = TdxVerifier::new(TdxTrustAnchors::intel().with_root(&w.root).unwrap(), TdxVerifyOptions::default());
        let r = named.verify(&w.quote, Some(&w.collateral), NOW).unwrap();
        assert_eq!((r.tcb_status, r.advisory_ids.len()), (TcbStatus::UpToDate, 0));
        assert_eq!(hex::encode(r.fmspc), "00112233aabb");
        assert_eq!(r.claims()["mr_td"], "42".repeat(48));
        assert_eq!(
            named.verify(&w.quote, None, NOW).unwrap_err(),
            TdxVerifyError::CollateralMissing { fmspc: "00112233aabb".into() }
        );
        // Another emulated world's root does not vouch for this one.
        let other = world(&Spec::default());
        let wrong =
            TdxVerifier::new(TdxTrustAnchors::empty().with_root(&other.root).unwrap(), TdxVerifyOptions::default());
        assert!(wrong.verify(&w.quote, Some(&w.collateral), NOW).is_err());
        // Outside the collateral's window.
        assert!(named.verify(&w.quote, Some(&w.collateral), NOW + 40 * 86_400).unwrap_err().is_expired());
    }

    #[test]
    fn revocations() {
        let e = verify(&Spec { pck_revoked: true, ..Spec::default() }).unwrap_err();
        assert!(
            matches!(e, TdxVerifyError::Revoked { cert: CertRole::PckLeaf, crl: CrlKind::Pck, ref serial } if serial == "03"),
            "{e}"
        );
        let e = verify(&Spec { ca_revoked: true, ..Spec::default() }).unwrap_err();
        assert!(matches!(e, TdxVerifyError::Revoked { cert: CertRole::PckCa, crl: CrlKind::RootCa, .. }), "{e}");
        let e = verify(&Spec { signer_revoked: true, ..Spec::default() }).unwrap_err();
        assert!(
            matches!(e, TdxVerifyError::Revoked { cert: CertRole::TcbInfoSigner, crl: CrlKind::RootCa, .. }),
            "{e}"
        );
        assert_eq!(e.check(), "crl");
        let e = verify(&Spec { ca_can_sign: false, ..Spec::default() }).unwrap_err();
        assert_eq!(e, TdxVerifyError::ChainRole { cert: CertRole::PckCa });
    }

    #[test]
    fn tcb_statuses() {
        let e =
            verify(&Spec { platform_status: "Revoked", platform_advisories: r#""EMU-SA-0666""#, ..Spec::default() })
                .unwrap_err();
        assert_eq!(e, TdxVerifyError::TcbRevoked { advisory_ids: vec!["EMU-SA-0666".into()] });
        assert_eq!(
            verify(&Spec {
                platform_status: "SWHardeningNeeded",
                platform_advisories: r#""EMU-SA-0003""#,
                ..Spec::default()
            }),
            Ok((TcbStatus::SwHardeningNeeded, vec!["EMU-SA-0003".into()]))
        );
        assert_eq!(
            verify(&Spec { platform_status: "ConfigurationNeeded", ..Spec::default() }),
            Ok((TcbStatus::ConfigurationNeeded, vec![]))
        );
        // TD 1.5: launched on module SVN 2 (out of date), running on 3 (up to date).
        assert_eq!(
            verify(&Spec { td15: Some((2, 3)), ..Spec::default() }),
            Ok((TcbStatus::TdRelaunchAdvised, vec!["EMU-SA-0002".into()]))
        );
        assert_eq!(verify(&Spec { td15: Some((3, 3)), ..Spec::default() }), Ok((TcbStatus::UpToDate, vec![])));
        assert_eq!(
            verify(&Spec { td15: Some((2, 2)), ..Spec::default() }),
            Ok((TcbStatus::OutOfDate, vec!["EMU-SA-0002".into()]))
        );
        assert_eq!(
            verify(&Spec { td15: Some((0, 3)), ..Spec::default() }),
            Err(TdxVerifyError::TdxModuleTcbNotSupported { isv_svn: 0 })
        );
    }

    #[test]
    fn collateral_mismatches() {
        assert!(matches!(
            verify(&Spec { tcb_fmspc: "00112233aabc", ..Spec::default() }),
            Err(TdxVerifyError::FmspcMismatch { .. })
        ));
        assert!(matches!(
            verify(&Spec { tcb_pce_id: "0100", ..Spec::default() }),
            Err(TdxVerifyError::PceIdMismatch { .. })
        ));
        assert_eq!(
            verify(&Spec { module_id: "TDX_03", ..Spec::default() }),
            Err(TdxVerifyError::TdxModuleUnknown { id: "TDX_01".into() })
        );
        assert_eq!(
            verify(&Spec { qe_min_isvsvn: 5, ..Spec::default() }),
            Err(TdxVerifyError::QeTcbNotSupported { isv_svn: 4 })
        );
        assert_eq!(
            verify(&Spec { qe_mrsigner: [0; 32], ..Spec::default() }),
            Err(TdxVerifyError::QeIdentityMismatch { field: "MRSIGNER" })
        );
    }
}
