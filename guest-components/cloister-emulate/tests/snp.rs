//! Emulated SEV-SNP evidence against the project's verifier: accepted exactly when the emulated
//! root is named, through the same code paths as real evidence.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use cloister_emulate::snp::{EmulatedSnp, SnpReportRequest};
use cloister_evidence::snp::{GuestPolicy, Product, TcbParts};
use cloister_verifier::snp::{
    CertSource, ChainLink, SnpCertificates, SnpVerifier, SnpVerifyError, TcbComponent, TrustAnchors, VekKind,
    VerifyOptions,
};

/// One generated chain per product per test binary (RSA-4096 key generation is slow).
fn emulated(product: Product) -> &'static Arc<EmulatedSnp> {
    static CHAINS: [OnceLock<Arc<EmulatedSnp>>; 3] = [OnceLock::new(), OnceLock::new(), OnceLock::new()];
    let i = Product::ALL.iter().position(|p| *p == product).unwrap();
    CHAINS[i].get_or_init(|| {
        let start = Instant::now();
        let e = EmulatedSnp::generate(product).unwrap();
        eprintln!("generated the emulated {product} chain in {:.1?}", start.elapsed());
        Arc::new(e)
    })
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn verifier_for(emu: &EmulatedSnp) -> SnpVerifier {
    SnpVerifier::new(TrustAnchors::empty().with_root(emu.product(), emu.ark_der(), &emu.ark_sha256_hex()).unwrap())
}

fn chain_certs(emu: &EmulatedSnp) -> SnpCertificates {
    SnpCertificates::from_vek(emu.vcek_der())
        .unwrap()
        .with_chain(emu.ask_der())
        .unwrap()
        .with_chain(emu.ark_der())
        .unwrap()
}

fn request(seed: u8) -> SnpReportRequest {
    let mut req =
        SnpReportRequest::new([seed; 64]).with_measurement([seed ^ 0x5a; 48]).with_host_data([seed ^ 0xa5; 32]);
    req.guest_svn = 7;
    req.vmpl = 1;
    req.family_id.0 = [0x11; 16];
    req.image_id.0 = [0x22; 16];
    req
}

#[test]
fn reports_verify_under_the_emulated_root_for_every_product() {
    for product in Product::ALL {
        let emu = emulated(product);
        let verifier = verifier_for(emu);
        let opts = VerifyOptions::at(now());
        for (version, seed) in [(5, 1u8), (3, 2u8)] {
            let req = SnpReportRequest { version, ..request(seed) };
            let report = emu.report(&req).unwrap();
            assert_eq!(report.len(), 1184);

            let verified = verifier.verify(&report, &chain_certs(emu), &opts).unwrap();
            assert_eq!(verified.product(), product);
            assert_eq!(verified.vek_kind(), VekKind::Vcek);
            assert!(!verified.vek().root_is_builtin());
            assert_eq!(verified.vek().root_sha256(), emu.ark_sha256_hex());
            let tcb = verified.vek().tcb();
            assert_eq!(tcb.bootloader, Some(u64::from(emu.tcb().bootloader)));
            assert_eq!(tcb.microcode, Some(u64::from(emu.tcb().microcode)));
            assert_eq!(tcb.fmc, emu.tcb().fmc.map(u64::from));

            let claims = verified.claims();
            assert_eq!(claims["version"], version);
            assert_eq!(claims["product"], product.name());
            assert_eq!(claims["measurement"], hex::encode([seed ^ 0x5a; 48]));
            assert_eq!(claims["report_data"], hex::encode([seed; 64]));
            assert_eq!(claims["host_data"], hex::encode([seed ^ 0xa5; 32]));
            assert_eq!(claims["init_data"], hex::encode([seed ^ 0xa5; 32]));
            assert_eq!(claims["chip_id"], emu.chip_id().to_hex());
            assert_eq!(claims["vmpl"], 1);
            assert_eq!(claims["guest_svn"], 7);
            assert_eq!(claims["family_id"], hex::encode([0x11; 16]));
            assert_eq!(claims["image_id"], hex::encode([0x22; 16]));
            assert_eq!(claims["policy"], "0x30000");
            assert_eq!(claims["policy_debug_allowed"], false);
            assert_eq!(claims["policy_smt_allowed"], true);
            assert_eq!(claims["reported_tcb_raw"], emu.tcb_version().to_hex());
            assert_eq!(claims["reported_tcb_snp"], emu.tcb().snp);

            // The same report through the extended-report certificate table.
            let from_table = SnpCertificates::from_cert_table(&emu.cert_table()).unwrap();
            assert_eq!(from_table.vek_der(), Some(emu.vcek_der()));
            assert_eq!(from_table.chain_ders().len(), 2);
            let fresh = verifier_for(emu);
            let v = fresh.verify_with_source(&report, CertSource::Provided(&from_table), &opts).unwrap();
            assert_eq!(v.report().report_data.0, [seed; 64]);

            // And with only the VCEK plus the KDS-style chain bundle.
            let bundle =
                SnpCertificates::from_vek(emu.vcek_der()).unwrap().with_chain(emu.cert_chain_pem().as_bytes()).unwrap();
            verifier_for(emu).verify(&report, &bundle, &opts.clone().expect_product(product)).unwrap();
        }
    }
}

#[test]
fn rejected_by_the_builtin_amd_roots() {
    let emu = emulated(Product::Milan);
    let report = emu.report(&request(3)).unwrap();
    let amd = SnpVerifier::amd().unwrap();
    let err = amd.verify(&report, &chain_certs(emu), &VerifyOptions::at(now())).unwrap_err();
    assert!(
        matches!(&err, SnpVerifyError::UnpinnedRoot { fingerprint, .. } if *fingerprint == emu.ark_sha256_hex()),
        "{err:?}"
    );
    // Without the ARK in the supplied chain the root is simply unknown.
    let certs = SnpCertificates::from_vek(emu.vcek_der()).unwrap().with_chain(emu.ask_der()).unwrap();
    let err = amd.verify(&report, &certs, &VerifyOptions::at(now())).unwrap_err();
    assert!(matches!(err, SnpVerifyError::UnknownRoot { .. }), "{err:?}");
}

#[test]
fn rejected_under_another_emulated_root() {
    let milan = emulated(Product::Milan);
    let genoa = emulated(Product::Genoa);
    let report = milan.report(&request(4)).unwrap();
    // Trusting Genoa's emulated root (even when declared as a Milan root).
    for product in [Product::Genoa, Product::Milan] {
        let anchors = TrustAnchors::empty().with_root(product, genoa.ark_der(), &genoa.ark_sha256_hex()).unwrap();
        let err =
            SnpVerifier::new(anchors).verify(&report, &chain_certs(milan), &VerifyOptions::at(now())).unwrap_err();
        assert!(matches!(err, SnpVerifyError::UnpinnedRoot { .. }), "{err:?}");
    }
    // Genoa's VCEK for Milan's report: rejected (product from CPUID vs the chain).
    let err = verifier_for(genoa).verify(&report, &chain_certs(genoa), &VerifyOptions::at(now())).unwrap_err();
    assert!(matches!(err, SnpVerifyError::ProductMismatch { .. }), "{err:?}");
}

#[test]
fn a_second_chain_with_the_same_names_is_not_trusted() {
    // Same product, same certificate names, different keys: the signature check decides.
    let milan = emulated(Product::Milan);
    let start = Instant::now();
    let other = EmulatedSnp::generate(Product::Milan).unwrap();
    eprintln!("generated a second Milan chain in {:.1?}", start.elapsed());
    assert_ne!(other.ark_sha256_hex(), milan.ark_sha256_hex());
    let report = other.report(&request(5)).unwrap();
    let err = verifier_for(milan).verify(&report, &chain_certs(&other), &VerifyOptions::at(now())).unwrap_err();
    assert!(matches!(err, SnpVerifyError::ChainSignature { link: ChainLink::ArkToAsk }), "{err:?}");
    // Other's VCEK with milan's ASK and ARK: the ASK did not sign it.
    let mixed = SnpCertificates::from_vek(other.vcek_der())
        .unwrap()
        .with_chain(milan.ask_der())
        .unwrap()
        .with_chain(milan.ark_der())
        .unwrap();
    let err = verifier_for(milan).verify(&report, &mixed, &VerifyOptions::at(now())).unwrap_err();
    assert!(matches!(err, SnpVerifyError::ChainSignature { link: ChainLink::AskToVcek }), "{err:?}");
}

#[test]
fn any_flipped_byte_is_rejected() {
    let emu = emulated(Product::Genoa);
    let report = emu.report(&request(6)).unwrap();
    let verifier = verifier_for(emu);
    let certs = chain_certs(emu);
    let opts = VerifyOptions::at(now());
    verifier.verify(&report, &certs, &opts).unwrap();
    // Signed fields (report data, measurement, host data, guest SVN) and the signature itself.
    for offset in [0x004, 0x050, 0x090, 0x0C0, 0x0E0, 0x140, 0x2A0, 0x2E8] {
        let mut bad = report.clone();
        bad[offset] ^= 0x01;
        let err = verifier.verify(&bad, &certs, &opts).unwrap_err();
        assert!(matches!(err, SnpVerifyError::ReportSignature { .. }), "offset {offset:#x}: {err:?}");
    }
    // Bytes the verifier checks before the signature fail there.
    let mut bad = report.clone();
    bad[0x180] ^= 0x01; // REPORTED_TCB
    assert!(matches!(
        verifier.verify(&bad, &certs, &opts),
        Err(SnpVerifyError::TcbMismatch { component: TcbComponent::Bootloader, .. })
    ));
    let mut bad = report.clone();
    bad[0x1A0] ^= 0x01; // CHIP_ID
    assert!(matches!(verifier.verify(&bad, &certs, &opts), Err(SnpVerifyError::ChipIdMismatch { .. })));
    let mut bad = report;
    bad[0x400] = 1; // unsigned reserved area
    assert!(matches!(verifier.verify(&bad, &certs, &opts), Err(SnpVerifyError::Report(_))));
}

#[test]
fn debug_policy_dates_and_crls_are_checked_as_for_real_evidence() {
    let emu = emulated(Product::Turin);
    let verifier = verifier_for(emu);
    let certs = chain_certs(emu);
    let debug = emu.report(&request(7).with_policy(0x30000 | GuestPolicy::DEBUG)).unwrap();
    assert!(matches!(verifier.verify(&debug, &certs, &VerifyOptions::at(now())), Err(SnpVerifyError::DebugPolicy)));
    verifier.verify(&debug, &certs, &VerifyOptions::at(now()).allow_debug(true)).unwrap();

    let report = emu.report(&request(8)).unwrap();
    let err = verifier.verify(&report, &certs, &VerifyOptions::at(now() + 8 * 365 * 86_400)).unwrap_err();
    assert!(matches!(err, SnpVerifyError::CertificateExpired { .. }), "{err:?}");
    let err = verifier.verify(&report, &certs, &VerifyOptions::at(now() - 2 * 86_400)).unwrap_err();
    assert!(matches!(err, SnpVerifyError::CertificateNotYetValid { .. }), "{err:?}");

    let crl = emu.crl_der(&[], 30 * 86_400).unwrap();
    verifier.verify(&report, &certs, &VerifyOptions::at(now()).with_crl(&crl)).unwrap();
    let revoking = emu.crl_der(&[emu.ask_serial().unwrap()], 30 * 86_400).unwrap();
    let err = verifier.verify(&report, &certs, &VerifyOptions::at(now()).with_crl(&revoking)).unwrap_err();
    assert!(matches!(err, SnpVerifyError::Revoked { .. }), "{err:?}");
    let err = verifier.verify(&report, &certs, &VerifyOptions::at(now() + 31 * 86_400).with_crl(&crl)).unwrap_err();
    assert!(matches!(err, SnpVerifyError::CrlNotCurrent { .. }), "{err:?}");
    // A CRL that arrives with the certificates (cert table, cache directory) is applied too.
    let with_revoking = certs.clone().with_crl(&revoking);
    let err = verifier.verify(&report, &with_revoking, &VerifyOptions::at(now())).unwrap_err();
    assert!(matches!(err, SnpVerifyError::Revoked { .. }), "{err:?}");
    verifier.verify(&report, &certs.clone().with_crl(&crl), &VerifyOptions::at(now())).unwrap();
}

#[test]
fn a_new_tcb_needs_the_new_vcek() {
    let emu = emulated(Product::Turin);
    let newer = emu.with_tcb(TcbParts { fmc: Some(2), bootloader: 3, tee: 4, snp: 5, microcode: 6 }).unwrap();
    assert_eq!(newer.chip_id(), emu.chip_id());
    assert_eq!(newer.ark_der(), emu.ark_der());
    let report = newer.report(&request(9)).unwrap();
    let verifier = verifier_for(emu);
    let v = verifier.verify(&report, &chain_certs(&newer), &VerifyOptions::at(now())).unwrap();
    assert_eq!(v.claims()["reported_tcb_fmc"], 2);
    assert_eq!(v.claims()["reported_tcb_microcode"], 6);
    let err = verifier.verify(&report, &chain_certs(emu), &VerifyOptions::at(now())).unwrap_err();
    assert!(matches!(err, SnpVerifyError::TcbMismatch { component: TcbComponent::Fmc, .. }), "{err:?}");
}

#[test]
fn save_and_load_round_trip() {
    let emu = emulated(Product::Milan);
    let dir = tempfile::tempdir().unwrap();
    emu.save(dir.path()).unwrap();
    for name in ["ark-key.pem", "ask-key.pem", "vcek-key.pem"] {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.path().join(name)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{name}");
        let text = std::fs::read_to_string(dir.path().join(name)).unwrap();
        assert!(text.starts_with("-----BEGIN PRIVATE KEY-----"), "{name}");
    }
    for name in ["ark.pem", "ask.pem", "vcek.pem", "cert_chain.pem", "snp-emulator.json"] {
        assert!(dir.path().join(name).is_file(), "{name}");
    }

    let loaded = EmulatedSnp::load(dir.path()).unwrap();
    assert_eq!(loaded.product(), emu.product());
    assert_eq!(loaded.ark_der(), emu.ark_der());
    assert_eq!(loaded.ask_der(), emu.ask_der());
    assert_eq!(loaded.vcek_der(), emu.vcek_der());
    assert_eq!(loaded.chip_id(), emu.chip_id());
    assert_eq!(loaded.tcb(), emu.tcb());
    assert_eq!(loaded.cert_table(), emu.cert_table());

    // The loaded keys sign valid new reports (and new CRLs) under the original root.
    let report = loaded.report(&request(10)).unwrap();
    let certs = SnpCertificates::from_cert_table(&emu.cert_table()).unwrap();
    let crl = loaded.crl_der(&[], 86_400).unwrap();
    let v = verifier_for(emu).verify(&report, &certs, &VerifyOptions::at(now()).with_crl(&crl)).unwrap();
    assert_eq!(v.report().measurement.0, [10 ^ 0x5a; 48]);

    // A state file that disagrees with the VCEK is refused.
    let state_path = dir.path().join("snp-emulator.json");
    let state = std::fs::read_to_string(&state_path).unwrap();
    let chip = emu.chip_id().to_hex();
    let mut flipped = chip.clone();
    flipped.replace_range(0..2, if &chip[0..2] == "ff" { "fe" } else { "ff" });
    std::fs::write(&state_path, state.replace(&chip, &flipped)).unwrap();
    assert!(EmulatedSnp::load(dir.path()).is_err());
    std::fs::write(&state_path, &state).unwrap();
    // A key that does not match its certificate is refused.
    std::fs::copy(dir.path().join("ask-key.pem"), dir.path().join("ark-key.pem")).unwrap();
    assert!(EmulatedSnp::load(dir.path()).is_err());
}

#[test]
fn invalid_requests_are_refused() {
    let emu = emulated(Product::Genoa);
    assert!(emu.report(&SnpReportRequest { version: 2, ..SnpReportRequest::default() }).is_err());
    assert!(emu.report(&SnpReportRequest { vmpl: 4, ..SnpReportRequest::default() }).is_err());
    assert_eq!(SnpReportRequest::default().policy.0, 0x30000);
}

#[test]
fn service_fixes_launch_state_and_refuses_bad_requests() {
    use cloister_emulate::service::{LaunchState, MAX_LINE, SnpEndpoint, answer_with, request, serve_endpoint};
    let launch = LaunchState { measurement: [0x42; 48], host_data: [0x24; 32], policy: 0x30000 };
    let endpoint = Arc::new(SnpEndpoint { platform: emulated(Product::Milan).clone(), launch });
    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    let served = endpoint.clone();
    let server = std::thread::spawn(move || serve_endpoint(served.as_ref(), b));
    let v = request(&a, &[7; 64]).unwrap();
    let bytes =
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, v["report"].as_str().unwrap()).unwrap();
    let r = cloister_evidence::snp::AttestationReport::from_bytes(&bytes).unwrap();
    assert_eq!(r.measurement.0, [0x42; 48]);
    assert_eq!(r.host_data.0, [0x24; 32]);
    assert_eq!(r.report_data.0, [7; 64]);
    // A second request on the same connection.
    assert!(request(&a, &[8; 64]).is_ok());
    // Bad requests get an error reply, not a report.
    for bad in ["not json", "{}", r#"{"report_data": "zz"}"#, &format!(r#"{{"report_data": "{}"}}"#, "00".repeat(65))] {
        assert!(answer_with(endpoint.as_ref(), bad).get("error").is_some(), "{bad}");
    }
    // An oversized line closes the connection.
    use std::io::Write;
    (&a).write_all(&vec![b'x'; MAX_LINE + 10]).unwrap();
    drop(a);
    assert!(server.join().unwrap().is_err());
}

#[test]
fn an_snp_endpoint_has_no_ultravisor() {
    use cloister_emulate::service::{LaunchState, SnpEndpoint, answer_with};
    let launch = LaunchState { measurement: [0x42; 48], host_data: [0x24; 32], policy: 0x30000 };
    let endpoint = SnpEndpoint { platform: emulated(Product::Milan).clone(), launch };
    let line = r#"{"uv_attest": {"arcb": "", "user_data": "", "measurement_len": 64, "additional_len": 0}}"#;
    let reply = answer_with(&endpoint, line);
    assert!(reply["error"].as_str().unwrap().contains("not an IBM SE machine"), "{reply}");
}
