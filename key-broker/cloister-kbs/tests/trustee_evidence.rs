//! trustee's own SNP evidence (fixture S8: `attestation-service/tests/e2e/evidence.json`, a real
//! Genoa-family report in the `sev` crate's serde form with its VCEK) verifies through the key
//! broker's SNP path; a single changed field is refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use cloister_kbs::config::VerifierConfig;
use cloister_kbs::evidence::Verifiers;
use cloister_kbs_protocol::Tee;
use serde_json::Value;

/// The time the fixture's certificates are checked at (as in the verifier's fixture tests).
const NOW: u64 = 1_767_225_600;

fn fixture() -> Option<PathBuf> {
    match std::env::var_os("CLOISTER_FIXTURES") {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p).join("evidence/trustee-snp")),
        _ => {
            eprintln!("skipping: CLOISTER_FIXTURES is not set");
            None
        }
    }
}

#[test]
fn trustee_snp_evidence_json_verifies() {
    let Some(dir) = fixture() else { return };
    let evidence: Value = serde_json::from_slice(&std::fs::read(dir.join("e2e-evidence.json")).unwrap()).unwrap();
    // The rebuilt raw report is byte-identical to the real one.
    let raw = cloister_evidence::snp::sev_json::report_from_sev_json(&evidence["attestation_report"]).unwrap();
    assert_eq!(&raw[..], &std::fs::read(dir.join("e2e-genoa-report.bin")).unwrap()[..]);

    let v = Verifiers::from_config(&VerifierConfig::default()).unwrap();
    let ok = v.verify(Tee::Snp, &evidence, NOW).unwrap();
    assert_eq!(ok.tee_key, "snp");
    assert_eq!(ok.claims["product"], "Genoa");
    assert_eq!(&ok.report_data[..], &raw[0x50..0x90]);

    let mut bad = evidence.clone();
    bad["attestation_report"]["measurement"][0] =
        Value::from(bad["attestation_report"]["measurement"][0].as_u64().unwrap() ^ 1);
    let e = v.verify(Tee::Snp, &bad, NOW).unwrap_err();
    assert!(e.contains("signature"), "{e}");
    let mut bad = evidence.clone();
    bad["attestation_report"]["report_data"] = Value::from(vec![0u8; 63]);
    assert!(v.verify(Tee::Snp, &bad, NOW).unwrap_err().contains("report_data"));
    let mut bad = evidence;
    bad["cert_chain"] = Value::Null;
    assert!(v.verify(Tee::Snp, &bad, NOW).unwrap_err().contains("no VCEK"));
}
