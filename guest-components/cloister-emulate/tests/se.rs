//! The emulated IBM SE machine against the project's verifier: its host-key document chains to
//! the emulated root (and to nothing else), a request the verifier builds for it is answered by
//! the emulated Ultravisor, and the answer verifies, with the verifier's and the emulator's
//! independent implementations of the ARCB, key slots and HMAC meeting in the middle.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::OnceLock;

use cloister_emulate::se::EmulatedSe;
use cloister_evidence::se::{AttestationFlags, SeAttestationResponse};
use cloister_measure::Sha256Digest;
use cloister_measure::se::parse_se_header;
use cloister_verifier::se::hostkey::{HostKey, HostKeyAuthority, HostKeyError, HostKeyRoot, P521HostKeyWrap};
use cloister_verifier::se::{SeReference, SeRequestSecrets, SeVerifyError, build_arcb, verify_se_response};
use ring::rand::SystemRandom;

fn emulated() -> &'static EmulatedSe {
    static SE: OnceLock<EmulatedSe> = OnceLock::new();
    SE.get_or_init(|| EmulatedSe::generate().unwrap())
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

fn authority(se: &EmulatedSe) -> HostKeyAuthority {
    HostKeyAuthority::new()
        .with_root(se.root_der(), HostKeyRoot::Emulated)
        .unwrap()
        .with_cert(se.signing_der())
        .unwrap()
}

fn host_key(se: &EmulatedSe) -> HostKey {
    authority(se).verify(se.hkd_der(), now()).unwrap()
}

fn reference(se: &EmulatedSe) -> SeReference {
    let hdr = parse_se_header(se.header()).unwrap();
    SeReference::from_header(&hdr).allow_attestation_phkh(Sha256Digest(se.phkh()))
}

/// Builds a request for `hosts`, has `se`'s Ultravisor answer it with `user_data`.
fn round_trip(
    se: &EmulatedSe,
    hosts: Vec<HostKey>,
    user_data: &[u8],
) -> (Result<SeAttestationResponse, String>, SeRequestSecrets) {
    let rng = SystemRandom::new();
    let secrets = SeRequestSecrets::generate(AttestationFlags::TRUSTEE, &rng).unwrap();
    let arcb = build_arcb(&secrets, &P521HostKeyWrap::new(hosts).unwrap(), &rng).unwrap();
    let resp = se
        .attest(&arcb, user_data, secrets.measurement_size(), secrets.additional_size())
        .map(|uv| SeAttestationResponse {
            measurement: uv.measurement,
            additional_data: uv.additional_data,
            user_data: user_data.to_vec(),
            cuid: uv.config_uid,
            encr_measurement_key: vec![1],
            encr_request_nonce: vec![2],
            image_hdr_tags: se.boot_hdr_tags(),
        })
        .map_err(|e| e.to_string());
    (resp, secrets)
}

#[test]
fn the_host_key_document_chains_to_the_emulated_root_only() {
    let se = emulated();
    let key = host_key(se);
    assert_eq!(key.root(), HostKeyRoot::Emulated);
    assert_eq!(key.phkh(), se.phkh());
    // The image header the emulator writes parses, and its key slot is this host's.
    let hdr = parse_se_header(se.header()).unwrap();
    assert!(hdr.has_host_key(&Sha256Digest(se.phkh())));
    assert_eq!(hdr.boot_hdr_tags(), se.boot_hdr_tags().to_bytes());

    // Another platform's root does not anchor this HKD.
    let other = EmulatedSe::generate().unwrap();
    let e = authority(&other).with_cert(se.signing_der()).unwrap().verify(se.hkd_der(), now()).unwrap_err();
    assert!(matches!(e, HostKeyError::NoIssuer { .. }), "{e}");
    // Without the signing key certificate there is no issuer.
    let e = HostKeyAuthority::new()
        .with_root(se.root_der(), HostKeyRoot::Emulated)
        .unwrap()
        .verify(se.hkd_der(), now())
        .unwrap_err();
    assert!(matches!(e, HostKeyError::NoIssuer { .. }), "{e}");
    // Outside the validity period.
    let e = authority(se).verify(se.hkd_der(), now() + 20 * 365 * 86_400).unwrap_err();
    assert!(matches!(e, HostKeyError::Expired { .. }), "{e}");
    // The root is not a host-key document (not P-521), and the signing key is not either.
    let e = authority(se).verify(se.signing_der(), now()).unwrap_err();
    assert!(matches!(e, HostKeyError::NotP521 { .. }), "{e}");
    // A flipped bit in the HKD's signed part breaks its signature.
    let mut tampered = se.hkd_der().to_vec();
    let at = tampered.len() - 200;
    tampered[at] ^= 1;
    assert!(authority(se).verify(&tampered, now()).is_err());
    // Garbage is a parse error.
    let e = authority(se).verify(b"not a certificate", now()).unwrap_err();
    assert!(matches!(e, HostKeyError::Parse { .. }), "{e}");
}

#[test]
fn a_request_for_this_host_is_answered_and_verifies() {
    let se = emulated();
    let rd = [0x5A; 64];
    let (resp, secrets) = round_trip(se, vec![host_key(se)], &rd);
    let resp = resp.unwrap();
    let verified = verify_se_response(&resp, &secrets, &reference(se), Some(&rd)).unwrap();
    assert_eq!(verified.report_data(), &rd[..]);
    let claims = verified.claims();
    assert_eq!(claims["se.attestation_phkh"], hex::encode(se.phkh()), "{claims}");
    assert_eq!(claims["se.image_phkh"], hex::encode(se.phkh()), "{claims}");

    // Other report data than expected.
    let e = verify_se_response(&resp, &secrets, &reference(se), Some(&[0x5B; 64])).unwrap_err();
    assert!(matches!(e, SeVerifyError::ReportDataMismatch), "{e}");
    // Another request's secrets (a replayed response).
    let (_, fresh) = round_trip(se, vec![host_key(se)], &rd);
    let e = verify_se_response(&resp, &fresh, &reference(se), Some(&rd)).unwrap_err();
    assert!(matches!(e, SeVerifyError::HmacMismatch), "{e}");
    // Another image's reference values.
    let other = EmulatedSe::generate().unwrap();
    let e = verify_se_response(&resp, &secrets, &reference(&other), Some(&rd)).unwrap_err();
    assert!(matches!(e, SeVerifyError::ImageTagNotAllowed { .. }), "{e}");
}

#[test]
fn a_request_for_other_hosts_cannot_be_answered() {
    let se = emulated();
    let other = EmulatedSe::generate().unwrap();
    let (resp, _) = round_trip(se, vec![host_key(&other)], &[1; 64]);
    let e = resp.unwrap_err();
    assert!(e.contains("no key slot for this host"), "{e}");
    // Both hosts named: this one answers.
    let (resp, secrets) = round_trip(se, vec![host_key(&other), host_key(se)], &[1; 64]);
    verify_se_response(&resp.unwrap(), &secrets, &reference(se), Some(&[1; 64])).unwrap();
    // A saved and reloaded platform is the same machine.
    let dir = tempfile::tempdir().unwrap();
    se.save(dir.path()).unwrap();
    let back = EmulatedSe::load(dir.path()).unwrap();
    assert_eq!(back.phkh(), se.phkh());
    assert_eq!(back.hkd_der(), se.hkd_der());
    let (resp, secrets) = round_trip(&back, vec![host_key(se)], &[2; 64]);
    verify_se_response(&resp.unwrap(), &secrets, &reference(se), Some(&[2; 64])).unwrap();
}

#[test]
fn malformed_requests_are_refused() {
    let se = emulated();
    for bad in [&b""[..], &[0u8; 10][..], &[0xFF; 600][..]] {
        assert!(se.attest(bad, &[], 64, 64).is_err());
    }
    let rng = SystemRandom::new();
    let secrets = SeRequestSecrets::generate(AttestationFlags::TRUSTEE, &rng).unwrap();
    let mut arcb = build_arcb(&secrets, &P521HostKeyWrap::new(vec![host_key(se)]).unwrap(), &rng).unwrap();
    assert!(se.attest(&arcb, &[0; 257], 64, 64).unwrap_err().to_string().contains("256"));
    assert!(se.attest(&arcb, &[], 32, 64).is_err());
    let last = arcb.len() - 1;
    arcb[last] ^= 1;
    let e = se.attest(&arcb, &[], 64, 64).unwrap_err().to_string();
    assert!(e.contains("authentication failed"), "{e}");
    assert!(matches!(P521HostKeyWrap::new(Vec::new()), Err(HostKeyError::NoHosts)));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

    /// Any bytes, and the real HKD with any byte changed, are refused or accepted without a
    /// panic; a changed byte is never accepted as a different host.
    #[test]
    fn host_key_documents_never_panic(
        data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
        at in 0usize..4096,
        xor in 1u8..=255,
    ) {
        let se = emulated();
        let a = authority(se);
        let _ = a.verify(&data, now());
        let mut hkd = se.hkd_der().to_vec();
        let i = at % hkd.len();
        hkd[i] ^= xor;
        if let Ok(k) = a.verify(&hkd, now()) {
            // Only bytes outside what the signature covers (the outer framing) may change.
            proptest::prop_assert_eq!(k.phkh(), se.phkh());
        }
        let _ = se.attest(&data, &[], 64, 64);
    }
}

/// `emulate serve --tee se`: the endpoint answers a call over a stream exactly as the machine
/// does, refuses bare report data, and refuses malformed calls with an error reply.
#[test]
fn the_endpoint_answers_over_a_socket_as_the_machine_does() {
    use base64::Engine;
    use cloister_emulate::service::{
        MAX_ARCB, SeEndpoint, UvRequest, answer_with, request, serve_endpoint, uv_request,
    };
    let se = std::sync::Arc::new(EmulatedSe::generate().unwrap());
    let rng = SystemRandom::new();
    let secrets = SeRequestSecrets::generate(AttestationFlags::TRUSTEE, &rng).unwrap();
    let arcb = build_arcb(&secrets, &P521HostKeyWrap::new(vec![host_key(&se)]).unwrap(), &rng).unwrap();
    let call = UvRequest {
        arcb: arcb.clone(),
        user_data: vec![9; 64],
        measurement_len: secrets.measurement_size(),
        additional_len: secrets.additional_size(),
    };
    let direct = se.attest(&arcb, &[9; 64], secrets.measurement_size(), secrets.additional_size()).unwrap();
    let endpoint = SeEndpoint { platform: se.clone() };
    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    let server = std::thread::spawn(move || serve_endpoint(&endpoint, b));
    assert_eq!(uv_request(&a, &call).unwrap(), direct);
    let e = request(&a, &[0; 64]).unwrap_err();
    assert!(e.contains("is an IBM SE machine"), "{e}");
    let e = uv_request(&a, &UvRequest { measurement_len: 32, ..call.clone() }).unwrap_err();
    assert!(e.contains("measurement buffer"), "{e}");
    drop(a);
    server.join().unwrap().unwrap();

    let endpoint = SeEndpoint { platform: se };
    let big = base64::engine::general_purpose::STANDARD.encode(vec![0u8; MAX_ARCB + 1]);
    for bad in [
        r#"{"uv_attest": {}}"#.to_owned(),
        r#"{"uv_attest": {"arcb": "!", "user_data": "", "measurement_len": 64, "additional_len": 0}}"#.to_owned(),
        r#"{"uv_attest": {"arcb": "", "user_data": "zz", "measurement_len": 64, "additional_len": 0}}"#.to_owned(),
        r#"{"uv_attest": {"arcb": "", "user_data": "", "measurement_len": -1, "additional_len": 0}}"#.to_owned(),
        format!(r#"{{"uv_attest": {{"arcb": "{big}", "user_data": "", "measurement_len": 64, "additional_len": 0}}}}"#),
        r#"{"uv_attest": {"arcb": "AAAA", "user_data": "", "measurement_len": 64, "additional_len": 0}}"#.to_owned(),
    ] {
        let reply = answer_with(&endpoint, &bad);
        assert!(reply.get("error").is_some(), "{bad}: {reply}");
    }
}
