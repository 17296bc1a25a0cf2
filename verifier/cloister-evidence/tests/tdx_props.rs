//! Property tests of the DCAP quote parser and serialiser: random quotes of every version and body
//! type round-trip byte for byte; truncated, oversized, mis-versioned and random inputs are typed
//! errors, never panics; trailing bytes are tolerated and counted. With `CLOISTER_FIXTURES` set,
//! the real TDX/SGX samples round-trip too and serve as seeds for mutation.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use cloister_evidence::tdx::*;
use proptest::prelude::*;

/// Header bytes for a version / TEE type with the ECDSA P-256 key type and Intel's vendor ID.
fn header(version: u16, tee: u32, rest: &[u8; 4], user_data: &[u8; 20]) -> Vec<u8> {
    let mut h = Vec::with_capacity(HEADER_LEN);
    h.extend_from_slice(&version.to_le_bytes());
    h.extend_from_slice(&ATTESTATION_KEY_ECDSA_P256.to_le_bytes());
    h.extend_from_slice(&tee.to_le_bytes());
    h.extend_from_slice(rest);
    h.extend_from_slice(&INTEL_QE_VENDOR_ID);
    h.extend_from_slice(user_data);
    h
}

/// Random signature data in the layout of `version` (3: flat; 4/5: type-6 wrapper).
#[derive(Debug, Clone)]
struct SigParts {
    sig: Vec<u8>,
    qe_report: Vec<u8>,
    qe_sig: Vec<u8>,
    auth: Vec<u8>,
    cert_type: u16,
    cert: Vec<u8>,
}

fn sig_parts() -> impl Strategy<Value = SigParts> {
    (
        prop::collection::vec(any::<u8>(), 128),
        prop::collection::vec(any::<u8>(), ENCLAVE_REPORT_LEN),
        prop::collection::vec(any::<u8>(), 64),
        prop::collection::vec(any::<u8>(), 0..80),
        any::<u16>(),
        prop::collection::vec(any::<u8>(), 0..300),
    )
        .prop_map(|(sig, qe_report, qe_sig, auth, cert_type, cert)| SigParts {
            sig,
            qe_report,
            qe_sig,
            auth,
            cert_type,
            cert,
        })
}

fn encode_sig(p: &SigParts, version: u16) -> Vec<u8> {
    let mut qe = Vec::new();
    qe.extend_from_slice(&p.qe_report);
    qe.extend_from_slice(&p.qe_sig);
    qe.extend_from_slice(&(p.auth.len() as u16).to_le_bytes());
    qe.extend_from_slice(&p.auth);
    qe.extend_from_slice(&p.cert_type.to_le_bytes());
    qe.extend_from_slice(&(p.cert.len() as u32).to_le_bytes());
    qe.extend_from_slice(&p.cert);
    let mut out = p.sig.clone();
    if version == 3 {
        out.extend_from_slice(&qe);
    } else {
        out.extend_from_slice(&CERT_DATA_QE_REPORT.to_le_bytes());
        out.extend_from_slice(&(qe.len() as u32).to_le_bytes());
        out.extend_from_slice(&qe);
    }
    out
}

/// (version, TEE type, v5 body type or None, body length).
fn layout() -> impl Strategy<Value = (u16, u32, Option<u16>, usize)> {
    prop_oneof![
        Just((3u16, TEE_TYPE_SGX, None, ENCLAVE_REPORT_LEN)),
        Just((4, TEE_TYPE_TDX, None, TD_REPORT10_LEN)),
        Just((4, TEE_TYPE_SGX, None, ENCLAVE_REPORT_LEN)),
        Just((5, TEE_TYPE_SGX, Some(BODY_TYPE_SGX), ENCLAVE_REPORT_LEN)),
        Just((5, TEE_TYPE_TDX, Some(BODY_TYPE_TD10), TD_REPORT10_LEN)),
        Just((5, TEE_TYPE_TDX, Some(BODY_TYPE_TD15), TD_REPORT15_LEN)),
        Just((5, TEE_TYPE_TDX, Some(BODY_TYPE_TD15_EX), TD_REPORT15_EX_LEN)),
    ]
}

/// A random, well-formed quote encoding (without trailing bytes).
fn quote_bytes() -> impl Strategy<Value = Vec<u8>> {
    (layout(), any::<[u8; 4]>(), any::<[u8; 20]>(), prop::collection::vec(any::<u8>(), TD_REPORT15_EX_LEN), sig_parts())
        .prop_map(|((version, tee, body_type, len), rest, user, body, sig)| {
            let mut q = header(version, tee, &rest, &user);
            if let Some(t) = body_type {
                q.extend_from_slice(&t.to_le_bytes());
                q.extend_from_slice(&(len as u32).to_le_bytes());
            }
            q.extend_from_slice(&body[..len]);
            let s = encode_sig(&sig, version);
            q.extend_from_slice(&(s.len() as u32).to_le_bytes());
            q.extend_from_slice(&s);
            q
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// to_bytes(parse(b)) == b, and parse(to_bytes(q)) == q, also through `Quote::new`.
    #[test]
    fn round_trip(bytes in quote_bytes()) {
        let q = Quote::parse(&bytes).unwrap();
        prop_assert_eq!(q.encoded_len(), bytes.len());
        prop_assert_eq!(q.trailing_len(), 0);
        prop_assert_eq!(q.to_bytes().unwrap(), bytes.clone());
        let rebuilt = Quote::new(*q.header(), *q.body(), q.signature_data().clone()).unwrap();
        prop_assert_eq!(&rebuilt, &q);
        prop_assert_eq!(q.signed_bytes(), &bytes[..q.signed_bytes().len()]);
        prop_assert_eq!(q.qe_report_bytes().to_vec(), q.signature_data().qe_report.to_bytes());
        prop_assert_eq!(q.signed_bytes().len(), HEADER_LEN + if q.header().version == 5 { BODY_DESCRIPTOR_LEN } else { 0 } + q.body().len());
        // The body and header serialise on their own as well.
        prop_assert_eq!(q.header().to_bytes(), bytes[..HEADER_LEN].to_vec());
        let body = q.body().to_bytes();
        prop_assert_eq!(&bytes[q.signed_bytes().len() - body.len()..q.signed_bytes().len()], body.as_slice());
        if let QuoteBody::Td10(td) = q.body() {
            prop_assert_eq!(TdReport10::from_bytes(&body).unwrap(), *td);
        }
        // Serde round trip of the parsed parts.
        let json = serde_json::to_string(q.body()).unwrap();
        prop_assert_eq!(serde_json::from_str::<QuoteBody>(&json).unwrap(), *q.body());
        let json = serde_json::to_string(q.signature_data()).unwrap();
        prop_assert_eq!(&serde_json::from_str::<QuoteSignatureData>(&json).unwrap(), q.signature_data());
    }

    /// Every strict prefix is a typed error.
    #[test]
    fn truncation_is_an_error(bytes in quote_bytes(), cut in any::<prop::sample::Index>()) {
        let cut = cut.index(bytes.len());
        prop_assert!(Quote::parse(&bytes[..cut]).is_err());
    }

    /// Bytes after the signature data are tolerated and counted; the quote is unchanged.
    #[test]
    fn trailing_bytes_are_ignored(bytes in quote_bytes(), tail in prop::collection::vec(any::<u8>(), 1..100)) {
        let q = Quote::parse(&bytes).unwrap();
        let mut longer = bytes.clone();
        longer.extend_from_slice(&tail);
        let p = Quote::parse(&longer).unwrap();
        prop_assert_eq!(p.trailing_len(), tail.len());
        prop_assert_eq!(p.to_bytes().unwrap(), bytes);
        prop_assert_eq!(p.signature_data(), q.signature_data());
    }

    /// Unaccounted bytes inside the declared signature data are an error.
    #[test]
    fn padding_inside_signature_data_is_an_error(bytes in quote_bytes(), extra in 1u32..50) {
        let q = Quote::parse(&bytes).unwrap();
        let at = q.signed_bytes().len();
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
        let mut b = bytes.clone();
        b[at..at + 4].copy_from_slice(&(len + extra).to_le_bytes());
        b.extend(std::iter::repeat_n(0u8, extra as usize));
        let r = Quote::parse(&b).map(|_| ());
        prop_assert!(matches!(r, Err(QuoteError::UnusedBytes { .. })), "{:?}", r);
    }

    /// Oversized length fields are truncation errors, not allocations or panics.
    #[test]
    fn oversized_lengths_are_errors(bytes in quote_bytes(), len in any::<u32>()) {
        let q = Quote::parse(&bytes).unwrap();
        let at = q.signed_bytes().len();
        let declared = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
        prop_assume!(len > declared);
        let mut b = bytes.clone();
        b[at..at + 4].copy_from_slice(&len.to_le_bytes());
        let r = Quote::parse(&b).map(|_| ());
        prop_assert!(matches!(r, Err(QuoteError::Truncated { .. })), "{:?}", r);
    }

    /// Wrong versions, key types, TEE types, body types and sizes are typed errors.
    #[test]
    fn wrong_header_values_are_errors(bytes in quote_bytes(), version in any::<u16>(), key in any::<u16>(), tee in any::<u32>()) {
        let mut b = bytes.clone();
        b[0..2].copy_from_slice(&version.to_le_bytes());
        if !(3..=5).contains(&version) {
            prop_assert_eq!(Quote::parse(&b).unwrap_err(), QuoteError::UnsupportedVersion(version));
        }
        let mut b = bytes.clone();
        b[2..4].copy_from_slice(&key.to_le_bytes());
        if key != ATTESTATION_KEY_ECDSA_P256 {
            prop_assert_eq!(Quote::parse(&b).unwrap_err(), QuoteError::UnsupportedKeyType(key));
        }
        let mut b = bytes.clone();
        b[4..8].copy_from_slice(&tee.to_le_bytes());
        if tee != TEE_TYPE_SGX && tee != TEE_TYPE_TDX {
            let r = Quote::parse(&b).map(|_| ());
            prop_assert!(matches!(r, Err(QuoteError::UnsupportedTeeType { .. })), "{:?}", r);
        }
        if u16::from_le_bytes([bytes[0], bytes[1]]) == 5 {
            let mut b = bytes.clone();
            let size = u32::from_le_bytes(b[50..54].try_into().unwrap()) ^ 1;
            b[50..54].copy_from_slice(&size.to_le_bytes());
            let r = Quote::parse(&b).map(|_| ());
            prop_assert!(matches!(r, Err(QuoteError::BodySize { .. })), "{:?}", r);
            let mut b = bytes.clone();
            b[48..50].copy_from_slice(&(9u16 + version % 7).to_le_bytes());
            prop_assert!(matches!(Quote::parse(&b), Err(QuoteError::UnsupportedBodyType(_))));
        }
    }

    /// Arbitrary bytes never panic.
    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2000), version in 3u16..=5, tdx in any::<bool>()) {
        let _ = Quote::parse(&bytes);
        let mut b = bytes;
        if b.len() >= 8 {
            b[0..2].copy_from_slice(&version.to_le_bytes());
            b[2..4].copy_from_slice(&2u16.to_le_bytes());
            b[4..8].copy_from_slice(&(if tdx { TEE_TYPE_TDX } else { TEE_TYPE_SGX }).to_le_bytes());
        }
        let _ = Quote::parse(&b);
        let _ = EnclaveReport::from_bytes(&b);
        let _ = TdReport10::from_bytes(&b);
        let _ = QuoteHeader::from_bytes(&b);
    }

    /// Random edits of real quotes never panic (seeds from the fixtures, if available).
    #[test]
    fn mutated_real_quotes_never_panic(which in 0usize..16, edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6), cut in any::<prop::sample::Index>()) {
        let samples = real_quotes();
        if samples.is_empty() {
            return Ok(());
        }
        let (_, bytes) = &samples[which % samples.len()];
        let mut b = bytes.clone();
        for (i, x) in edits {
            let i = i.index(b.len());
            b[i] ^= x;
        }
        let cut = cut.index(b.len() + 1);
        let _ = Quote::parse(&b[..cut]);
        let _ = Quote::parse(&b);
    }
}

fn real_quotes() -> &'static [(String, Vec<u8>)] {
    static Q: std::sync::OnceLock<Vec<(String, Vec<u8>)>> = std::sync::OnceLock::new();
    Q.get_or_init(|| {
        let Some(root) = std::env::var_os("CLOISTER_FIXTURES").filter(|p| !p.is_empty()) else { return Vec::new() };
        let root = PathBuf::from(root).join("evidence");
        [
            "dcap-qvl/tdx_quote",
            "go-tdx-guest/quote_v5_sample.dat",
            "dcap-qvl/tdx_quote_td15ex",
            "trustee-tdx/tdx_quote_4.dat",
            "go-tdx-guest/tdx_prod_quote_SPR_E4.dat",
            "trustee-tdx/tdx_quote_5.dat",
            "dcap-qvl/tdx_quote_outdated",
            "dcap-qvl/tdx-quote-hex.bin",
            "dcap-qvl/quote-from-tappd.bin",
            "trustee-tdx/tdx_quote_6.dat",
            "trustee-az-tdx-vtpm/td-quote.bin",
            "go-tdx-guest/ccel/cos-113-tdx-quote.dat",
            "dcap-qvl/sgx_quote",
            "trustee-tdx/occlum_quote.dat",
        ]
        .iter()
        .map(|f| (f.to_string(), std::fs::read(root.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"))))
        .collect()
    })
}

#[test]
fn real_quotes_parse_and_round_trip() {
    if std::env::var_os("CLOISTER_FIXTURES").is_none() {
        eprintln!("skipping real_quotes_parse_and_round_trip: CLOISTER_FIXTURES is not set");
        return;
    }
    // (file, version, v5 body type, trailing bytes)
    let expected: &[(&str, u16, u16, usize)] = &[
        ("dcap-qvl/tdx_quote", 4, BODY_TYPE_TD10, 70),
        ("go-tdx-guest/quote_v5_sample.dat", 5, BODY_TYPE_TD15, 0),
        ("dcap-qvl/tdx_quote_td15ex", 5, BODY_TYPE_TD15_EX, 0),
        ("trustee-tdx/tdx_quote_4.dat", 4, BODY_TYPE_TD10, 0),
        ("go-tdx-guest/tdx_prod_quote_SPR_E4.dat", 4, BODY_TYPE_TD10, 39),
        ("go-tdx-guest/ccel/cos-113-tdx-quote.dat", 4, BODY_TYPE_TD10, 3065),
        ("dcap-qvl/sgx_quote", 3, BODY_TYPE_SGX, 0),
        ("trustee-tdx/occlum_quote.dat", 3, BODY_TYPE_SGX, 0),
    ];
    for (name, bytes) in real_quotes() {
        let q = Quote::parse(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(q.to_bytes().unwrap(), bytes[..q.encoded_len()], "{name}");
        assert_eq!(q.encoded_len() + q.trailing_len(), bytes.len(), "{name}");
        assert_eq!(q.header().qe_vendor_id.0, INTEL_QE_VENDOR_ID, "{name}");
        assert_eq!(q.signature_data().certification.cert_type, CERT_DATA_PCK_CHAIN, "{name}");
        assert_eq!(q.signature_data().qe_auth_data.len(), 32, "{name}");
        if let Some(&(_, version, body_type, trailing)) = expected.iter().find(|e| e.0 == name) {
            assert_eq!(
                (q.header().version, q.body().body_type(), q.trailing_len()),
                (version, body_type, trailing),
                "{name}"
            );
        }
    }
    let t1 = &real_quotes()[0].1;
    let q = Quote::parse(t1).unwrap();
    let td = q.td10().unwrap();
    assert_eq!(
        td.mr_td.to_hex(),
        "91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7"
    );
    assert_eq!(td.tee_tcb_svn.to_hex(), "06010300000000000000000000000000");
    assert!(td.td_attributes.sept_ve_disable() && !td.td_attributes.debug());
    let t4 = Quote::parse(&real_quotes()[3].1).unwrap();
    assert!(t4.td10().unwrap().td_attributes.debug());
    let x1 = Quote::parse(&real_quotes()[12].1).unwrap();
    let sgx = x1.body().sgx().unwrap();
    assert_eq!(sgx.mr_enclave.to_hex(), "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb");
    assert!(x1.td10().is_none() && !x1.is_tdx());
    // Fixed-size types: hex round trip and length checks.
    assert_eq!(Mr48::from_hex(&td.mr_td.to_hex()).unwrap(), td.mr_td);
    assert!(Mr48::from_hex("00").is_err());
    assert!(ReportData::from_slice(&[0; 63]).is_none());
}

// TDREPORT (`/dev/tdx_guest`) and QGS messages.
proptest! {
    #[test]
    fn td_reports_round_trip(mut bytes in prop::collection::vec(any::<u8>(), tdreport::TD_REPORT_LEN)) {
        bytes[0] = tdreport::REPORT_TYPE_TDX;
        let r = tdreport::TdReport::from_bytes(&bytes).unwrap();
        let encoded = r.to_bytes();
        prop_assert_eq!(&encoded[..], &bytes[..]);
        let body = r.to_td10_body();
        prop_assert_eq!(body.report_data.as_ref(), &bytes[0x80..0xC0]);
    }

    #[test]
    fn qgs_messages_round_trip(id in prop::collection::vec(any::<u8>(), 0..64), quote in prop::collection::vec(any::<u8>(), 1..4096)) {
        let framed = qgs::encode_get_quote_response(qgs::QGS_SUCCESS, &id, &quote).unwrap();
        let n = qgs::frame_length([framed[0], framed[1], framed[2], framed[3]]).unwrap();
        prop_assert_eq!(n, framed.len() - 4);
        let r = qgs::decode_get_quote_response(&framed[4..]).unwrap();
        prop_assert_eq!(r.selected_id, id);
        prop_assert_eq!(r.quote, quote.clone());
        let framed = qgs::encode_get_quote_request(&quote, &[]).unwrap();
        prop_assert_eq!(qgs::decode_get_quote_request(&framed[4..]).unwrap().report, quote);
    }

    #[test]
    fn random_bytes_are_never_a_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = tdreport::TdReport::from_bytes(&bytes);
        let _ = qgs::decode_get_quote_response(&bytes);
        let _ = qgs::decode_get_quote_request(&bytes);
    }

    #[test]
    fn truncated_responses_are_errors(cut in 0usize..40) {
        let framed = qgs::encode_get_quote_response(qgs::QGS_SUCCESS, &[], &[7u8; 16]).unwrap();
        let msg = &framed[4..];
        prop_assume!(cut < msg.len());
        prop_assert!(qgs::decode_get_quote_response(&msg[..cut]).is_err());
    }
}
