//! Real evidence all the way to a release decision: verify (S1 SNP, T1 TDX) → claims → default
//! attestation policy with reference values → EAR token (ES256) → verify the token → default
//! resource policy. Skips without `CLOISTER_FIXTURES`.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use cloister_policy::{Policy, builtin};
use cloister_verifier::appraisal::{AppraisalInput, AttestationPolicy, ReferenceValues, appraise};
use cloister_verifier::ear::{Ear, EarSigner, Status, TrustedKeys, verify_ear, verify_jws};
use cloister_verifier::snp::{SnpCertificates, SnpVerifier, VerifyOptions};
use cloister_verifier::tdx::{TdxCollateral, TdxVerifier};
use serde_json::{Value, json};

fn evidence() -> Option<PathBuf> {
    let p = std::env::var_os("CLOISTER_FIXTURES").map(|p| PathBuf::from(p).join("evidence"));
    if p.is_none() {
        eprintln!("skipping: CLOISTER_FIXTURES is not set");
    }
    p
}

fn input(tee: &str, claims: Value) -> AppraisalInput {
    AppraisalInput {
        tee: tee.into(),
        claims,
        report_data: None,
        init_data: None,
        init_data_claims: None,
        runtime_data_claims: None,
    }
}

fn release(token: &str, signer: &EarSigner, now: u64) -> bool {
    let keys = TrustedKeys { jwks: vec![signer.public_jwk().clone()], insecure_header_jwk: false };
    let claims = verify_jws(token, &keys, now).unwrap();
    let policy = Policy::new("default", builtin::RESOURCE_DEFAULT).unwrap();
    let data = json!({"plugin": "resource", "resource-path": ["default", "key", "image"], "query": {}});
    policy.allows(&claims, &data).unwrap()
}

#[test]
fn snp_s1_end_to_end() {
    let Some(e) = evidence() else { return };
    let now = 1_767_225_600;
    let report = std::fs::read(e.join("virtee-sev/report_milan.bin")).unwrap();
    let certs =
        SnpCertificates::from_files(&e.join("virtee-sev/vcek_milan.der"), Some(&e.join("virtee-sev/cert_chain_milan")))
            .unwrap();
    let verified = SnpVerifier::amd().unwrap().verify(&report, &certs, &VerifyOptions::at(now)).unwrap();
    let claims = verified.claims();
    let measurement = claims["measurement"].as_str().unwrap().to_owned();
    let policy = AttestationPolicy::default_cpu().unwrap();

    let mut refs = ReferenceValues::default();
    refs.add("snp_launch_measurement", [json!(measurement)]);
    let good = appraise(&policy, &input("snp", claims.clone()), &refs).unwrap();
    assert_eq!(good.status, Status::Affirming, "{:?}", good.trust_vector);
    assert_eq!(good.trust_vector.get("executables"), Some(3));
    assert_eq!(good.trust_vector.get("hardware"), Some(2));

    // A TCB minimum above the reported bootloader SVN (3) lowers hardware to 97.
    let mut strict = refs.clone();
    strict.add("snp_bootloader", [json!(4)]);
    let old_tcb = appraise(&policy, &input("snp", claims.clone()), &strict).unwrap();
    assert_eq!(old_tcb.trust_vector.get("hardware"), Some(97));
    assert_eq!(old_tcb.status, Status::Contraindicated);

    // Not the reference measurement: executables 33, warning.
    let mut other = ReferenceValues::default();
    other.add("snp_launch_measurement", [json!("00".repeat(48))]);
    let unknown = appraise(&policy, &input("snp", claims.clone()), &other).unwrap();
    assert_eq!(unknown.trust_vector.get("executables"), Some(33));
    assert_eq!(unknown.status, Status::Warning);

    // The same claims under the emulated or sample TEE key are never affirmed.
    let emulated = appraise(&policy, &input("emulated_snp", claims), &refs).unwrap();
    assert_ne!(emulated.status, Status::Affirming);

    // Tokens: the affirming one opens a resource under the default policy, the others do not.
    let (signer, _) = EarSigner::generate().unwrap();
    let sign = |s| signer.sign(&Ear::new(now, 300, s)).unwrap();
    let token = sign(good);
    assert!(release(&token, &signer, now + 10));
    assert!(!release(&sign(unknown), &signer, now + 10));
    assert!(!release(&sign(emulated), &signer, now + 10));
    let keys = TrustedKeys { jwks: vec![signer.public_jwk().clone()], insecure_header_jwk: false };
    assert!(verify_ear(&token, &keys, now + 301).is_err(), "expired after its 5-minute lifetime");
}

#[test]
fn tdx_t1_end_to_end() {
    let Some(e) = evidence() else { return };
    let now = 1_751_624_191;
    let quote = std::fs::read(e.join("dcap-qvl/tdx_quote")).unwrap();
    let collateral =
        TdxCollateral::from_json(&std::fs::read(e.join("dcap-qvl/tdx_quote_collateral.json")).unwrap()).unwrap();
    let verified = TdxVerifier::default().verify(&quote, Some(&collateral), now).unwrap();
    let claims = verified.claims();
    let policy = AttestationPolicy::default_cpu().unwrap();
    let mut refs = ReferenceValues::default();
    refs.add("mr_td", [claims["mr_td"].clone()]);
    refs.add("rtmr_1", [claims["rtmr_1"].clone()]);
    refs.add("rtmr_2", [claims["rtmr_2"].clone()]);
    let good = appraise(&policy, &input("tdx", claims.clone()), &refs).unwrap();
    assert_eq!(good.trust_vector.get("executables"), Some(3), "{:?}", good.trust_vector);
    assert_eq!(
        good.status,
        if claims["tcb_status"] == "UpToDate" { Status::Affirming } else { Status::Contraindicated }
    );
    let mut wrong = refs.clone();
    wrong.0.insert("rtmr_2".into(), vec![json!("00".repeat(48))]);
    let bad = appraise(&policy, &input("tdx", claims), &wrong).unwrap();
    assert_eq!(bad.trust_vector.get("executables"), Some(33));
}
