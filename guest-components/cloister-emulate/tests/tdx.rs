//! Emulated TDX quotes and collateral against the project's verifier: accepted exactly when the
//! emulated root is named.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use cloister_emulate::tdx::{EmulatedTdx, TdxQuoteRequest};
use cloister_evidence::tdx::{Bytes, TdAttributes};
use cloister_verifier::tdx::{
    TcbStatus, TdxCollateral, TdxTrustAnchors, TdxVerifier, TdxVerifyError, TdxVerifyOptions,
};

fn emulated() -> &'static EmulatedTdx {
    static TDX: OnceLock<EmulatedTdx> = OnceLock::new();
    TDX.get_or_init(|| EmulatedTdx::generate().unwrap())
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn verifier_for(emu: &EmulatedTdx) -> TdxVerifier {
    TdxVerifier::new(TdxTrustAnchors::empty().with_root(emu.root_der()).unwrap(), TdxVerifyOptions::default())
}

fn request(seed: u8) -> TdxQuoteRequest {
    TdxQuoteRequest {
        report_data: Bytes([seed; 64]),
        mr_td: Bytes([seed ^ 1; 48]),
        rtmrs: [Bytes([seed ^ 2; 48]), Bytes([seed ^ 3; 48]), Bytes([seed ^ 4; 48]), Bytes([seed ^ 5; 48])],
        mr_config_id: Bytes([seed ^ 6; 48]),
        ..TdxQuoteRequest::default()
    }
}

#[test]
fn quotes_verify_under_the_emulated_root() {
    let emu = emulated();
    let collateral = TdxCollateral::from_json(emu.collateral_json().unwrap().as_bytes()).unwrap();
    let verifier = verifier_for(emu);
    for seed in [1u8, 2] {
        let quote = emu.quote(&request(seed)).unwrap();
        let v = verifier.verify(&quote, Some(&collateral), now()).unwrap();
        assert_eq!(v.tcb_status, TcbStatus::UpToDate);
        assert_eq!(v.fmspc, emu.tcb().fmspc);
        assert_eq!(v.pce_svn, emu.tcb().pce_svn);
        assert_eq!(v.cpu_svn, emu.tcb().sgx_components);
        let c = v.claims();
        assert_eq!(c["tee"], "tdx");
        assert_eq!(c["quote_version"], 4);
        assert_eq!(c["report_data"], hex::encode([seed; 64]));
        assert_eq!(c["mr_td"], hex::encode([seed ^ 1; 48]));
        assert_eq!(c["rtmr_0"], hex::encode([seed ^ 2; 48]));
        assert_eq!(c["rtmr_3"], hex::encode([seed ^ 5; 48]));
        assert_eq!(c["mr_config_id"], hex::encode([seed ^ 6; 48]));
        assert_eq!(c["td_attributes"]["debug"], false);
        assert_eq!(c["td_attributes"]["septve_disable"], true);
    }
    // Without collateral the chain and signatures still verify, then the TCB cannot be appraised.
    let quote = emu.quote(&request(3)).unwrap();
    let err = verifier.verify(&quote, None, now()).unwrap_err();
    assert!(matches!(err, TdxVerifyError::CollateralMissing { .. }), "{err:?}");
}

#[test]
fn rejected_by_intel_roots_and_other_emulated_roots() {
    let emu = emulated();
    let quote = emu.quote(&request(4)).unwrap();
    let collateral = TdxCollateral::from_json(emu.collateral_json().unwrap().as_bytes()).unwrap();
    let err = TdxVerifier::default().verify(&quote, Some(&collateral), now()).unwrap_err();
    assert!(matches!(err, TdxVerifyError::RootNotPinned { .. }), "{err:?}");
    let err = TdxVerifier::default().verify(&quote, None, now()).unwrap_err();
    assert!(matches!(err, TdxVerifyError::RootNotPinned { .. }), "{err:?}");

    let other = EmulatedTdx::generate().unwrap();
    let err = verifier_for(&other).verify(&quote, Some(&collateral), now()).unwrap_err();
    assert!(matches!(err, TdxVerifyError::RootNotPinned { .. } | TdxVerifyError::ChainSignature { .. }), "{err:?}");
    // The other platform's collateral for this quote: a different root.
    let other_collateral = TdxCollateral::from_json(other.collateral_json().unwrap().as_bytes()).unwrap();
    let err = verifier_for(emu).verify(&quote, Some(&other_collateral), now()).unwrap_err();
    assert!(matches!(err, TdxVerifyError::RootNotPinned { .. }), "{err:?}");
}

#[test]
fn tampering_is_rejected() {
    let emu = emulated();
    let quote = emu.quote(&request(5)).unwrap();
    let collateral = TdxCollateral::from_json(emu.collateral_json().unwrap().as_bytes()).unwrap();
    let verifier = verifier_for(emu);
    verifier.verify(&quote, Some(&collateral), now()).unwrap();
    // MRTD at 48 + 136, REPORTDATA at 48 + 520, the quote signature right after the body.
    for offset in [48 + 136, 48 + 520, 48 + 584 + 4] {
        let mut bad = quote.clone();
        bad[offset] ^= 1;
        let err = verifier.verify(&bad, Some(&collateral), now()).unwrap_err();
        assert!(matches!(err, TdxVerifyError::QuoteSignature), "offset {offset}: {err:?}");
    }
    // Collateral text altered after signing.
    let mut parts = collateral.clone().into_parts();
    parts.tcb_info = parts.tcb_info.replace("UpToDate", "OutOfDate");
    let err = verifier.verify(&quote, Some(&TdxCollateral::new(parts)), now()).unwrap_err();
    assert!(matches!(err, TdxVerifyError::TcbInfoSignature), "{err:?}");
    // A revoked PCK certificate.
    let revoking = emu.collateral_json_revoking(&[emu.pck_serial().unwrap()]).unwrap();
    let err =
        verifier.verify(&quote, Some(&TdxCollateral::from_json(revoking.as_bytes()).unwrap()), now()).unwrap_err();
    assert!(matches!(err, TdxVerifyError::Revoked { .. }), "{err:?}");
    // Expired collateral.
    let err = verifier.verify(&quote, Some(&collateral), now() + 31 * 86_400).unwrap_err();
    assert!(
        matches!(
            err,
            TdxVerifyError::CrlExpired { .. }
                | TdxVerifyError::TcbInfoExpired { .. }
                | TdxVerifyError::QeIdentityExpired { .. }
        ),
        "{err:?}"
    );
}

#[test]
fn debug_tds_are_rejected_by_default() {
    let emu = emulated();
    let collateral = TdxCollateral::from_json(emu.collateral_json().unwrap().as_bytes()).unwrap();
    let bits = TdAttributes::SEPT_VE_DISABLE | TdAttributes::DEBUG;
    let req = TdxQuoteRequest { td_attributes: TdAttributes(Bytes(bits.to_le_bytes())), ..request(6) };
    let quote = emu.quote(&req).unwrap();
    let err = verifier_for(emu).verify(&quote, Some(&collateral), now()).unwrap_err();
    assert!(matches!(err, TdxVerifyError::Debug(_)), "{err:?}");
    let lax = TdxVerifier::new(
        TdxTrustAnchors::empty().with_root(emu.root_der()).unwrap(),
        TdxVerifyOptions { allow_debug: true, ..TdxVerifyOptions::default() },
    );
    lax.verify(&quote, Some(&collateral), now()).unwrap();
}

#[test]
fn saved_platforms_load_and_keep_their_root() {
    let dir = tempfile::tempdir().unwrap();
    let emu = emulated();
    assert!(!EmulatedTdx::exists(dir.path()));
    emu.save(dir.path()).unwrap();
    assert!(EmulatedTdx::exists(dir.path()));
    let loaded = EmulatedTdx::load(dir.path()).unwrap();
    assert_eq!(loaded.root_der(), emu.root_der());
    assert_eq!(loaded.tcb(), emu.tcb());
    // A quote from the loaded platform verifies with collateral from the original, and back.
    let quote = loaded.quote(&request(7)).unwrap();
    let collateral = TdxCollateral::from_json(emu.collateral_json().unwrap().as_bytes()).unwrap();
    verifier_for(emu).verify(&quote, Some(&collateral), now()).unwrap();
    let collateral = TdxCollateral::from_json(loaded.collateral_json().unwrap().as_bytes()).unwrap();
    verifier_for(&loaded).verify(&emu.quote(&request(8)).unwrap(), Some(&collateral), now()).unwrap();
    // Private keys are not world-readable.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("tdx-root-key.pem")).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "{mode:o}");
    // A key swapped for another platform's is refused, naming the file.
    let other = tempfile::tempdir().unwrap();
    EmulatedTdx::generate().unwrap().save(other.path()).unwrap();
    std::fs::copy(other.path().join("tdx-pck-key.pem"), dir.path().join("tdx-pck-key.pem")).unwrap();
    let err = EmulatedTdx::load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("tdx-pck.pem") && err.contains("does not match"), "{err}");
    // Garbage state.
    std::fs::write(dir.path().join("tdx-emulator.json"), b"{}").unwrap();
    assert!(EmulatedTdx::load(dir.path()).is_err());
}

/// The `/dev/tdx_guest` path: the emulated TDX module's TDREPORT, quoted by the emulated QGS over
/// Intel's message protocol, verifies like a direct quote; a report MACed by another platform or
/// altered after the MAC is refused by the QGS with a QGS error code.
#[test]
fn td_reports_are_quoted_through_the_qgs_protocol() {
    use cloister_evidence::tdx::qgs::{self, QGS_ERROR_INVALID_PARAMETER, QGS_ERROR_UNEXPECTED, QgsError};
    use cloister_evidence::tdx::tdreport::{TD_INFO_OFFSET, TdReport};
    let emu = emulated();
    let collateral = TdxCollateral::from_json(emu.collateral_json().unwrap().as_bytes()).unwrap();
    let report = emu.td_report(&request(9));
    let parsed = TdReport::from_bytes(&report).unwrap();
    assert_eq!(parsed.td_info.mr_td.0, [9 ^ 1; 48]);
    assert_eq!(parsed.report_data.0, [9; 64]);

    let ask = |report: &[u8]| {
        let framed = qgs::encode_get_quote_request(report, &[]).unwrap();
        let reply = cloister_emulate::qgs::answer(emu, &framed[4..]);
        qgs::decode_get_quote_response(&reply[4..])
    };
    let quote = ask(&report).unwrap().quote;
    let v = verifier_for(emu).verify(&quote, Some(&collateral), now()).unwrap();
    let c = v.claims();
    assert_eq!(c["mr_td"], hex::encode([9 ^ 1; 48]));
    assert_eq!(c["rtmr_2"], hex::encode([9 ^ 4; 48]));
    assert_eq!(c["report_data"], hex::encode([9; 64]));

    // Another platform's CPU key.
    let other = EmulatedTdx::generate().unwrap().td_report(&request(9));
    assert_eq!(ask(&other).unwrap_err(), QgsError::Service { code: QGS_ERROR_UNEXPECTED });
    // MRTD changed after the MAC: the TDINFO hash no longer matches (and so neither does the MAC
    // over it, were the hash fixed up).
    let mut altered = report;
    altered[TD_INFO_OFFSET + 0x10] ^= 1;
    assert_eq!(ask(&altered).unwrap_err(), QgsError::Service { code: QGS_ERROR_UNEXPECTED });
    // Not a TD report at all.
    assert_eq!(ask(&[0u8; 100]).unwrap_err(), QgsError::Service { code: QGS_ERROR_UNEXPECTED });
    // A malformed request message.
    let reply = cloister_emulate::qgs::answer(emu, &[1, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(
        qgs::decode_get_quote_response(&reply[4..]).unwrap_err(),
        QgsError::Service { code: QGS_ERROR_INVALID_PARAMETER }
    );
}
