//! Property tests of the SEV-SNP report parser: it never panics, rejects every malformed input
//! with a typed [`SnpReportError`], and `to_bytes` / `from_bytes` round-trip.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cloister_evidence::snp::{
    AttestationReport, ChipId, Cpuid, FamilyId, FirmwareVersion, GuestPolicy, HostData, ImageId, KeyDigest, KeyInfo,
    Measurement, PlatformInfo, REPORT_SIZE, ReportData, ReportFields, ReportId, ReportSignature, SnpReportError,
    TcbVersion,
};
use proptest::prelude::*;

fn bytes<const N: usize>() -> impl Strategy<Value = [u8; N]> {
    proptest::collection::vec(any::<u8>(), N).prop_map(|v| {
        let mut a = [0u8; N];
        a.copy_from_slice(&v);
        a
    })
}

fn version(b: [u8; 3]) -> FirmwareVersion {
    FirmwareVersion { build: b[0], minor: b[1], major: b[2] }
}

/// Fields consistent with their version (CPUID from v3, mitigation vectors from v5), signature
/// scalars of at most 48 bytes: what the strict parser accepts.
fn arb_fields() -> impl Strategy<Value = ReportFields> {
    let head = (
        2u32..=5,
        any::<u32>(),
        any::<u64>(),
        any::<[u8; 16]>(),
        any::<[u8; 16]>(),
        any::<u32>(),
        any::<[u8; 8]>(),
        any::<u64>(),
        any::<u32>(),
    );
    let body = (
        bytes::<64>(),
        bytes::<48>(),
        any::<[u8; 32]>(),
        bytes::<48>(),
        bytes::<48>(),
        any::<[u8; 32]>(),
        any::<[u8; 32]>(),
        any::<[u8; 8]>(),
        any::<[u8; 3]>(),
    );
    let tail = (
        bytes::<64>(),
        any::<[u8; 8]>(),
        any::<[u8; 3]>(),
        any::<[u8; 3]>(),
        any::<[u8; 8]>(),
        any::<(u64, u64)>(),
        bytes::<48>(),
        bytes::<48>(),
    );
    (head, body, tail).prop_map(|(h, b, t)| {
        let (ver, guest_svn, policy, family_id, image_id, vmpl, current_tcb, platform_info, key_info) = h;
        let (report_data, measurement, host_data, id_key, author_key, report_id, report_id_ma, reported_tcb, cpuid) = b;
        let (chip_id, committed_tcb, cur_ver, com_ver, launch_tcb, mit, r, s) = t;
        let mut signature = ReportSignature::default();
        signature.r[..48].copy_from_slice(&r);
        signature.s[..48].copy_from_slice(&s);
        ReportFields {
            version: ver,
            guest_svn,
            policy: GuestPolicy(policy),
            family_id: FamilyId(family_id),
            image_id: ImageId(image_id),
            vmpl,
            signature_algo: 1,
            current_tcb: TcbVersion(current_tcb),
            platform_info: PlatformInfo(platform_info),
            key_info: KeyInfo(key_info),
            report_data: ReportData(report_data),
            measurement: Measurement(measurement),
            host_data: HostData(host_data),
            id_key_digest: KeyDigest(id_key),
            author_key_digest: KeyDigest(author_key),
            report_id: ReportId(report_id),
            report_id_ma: ReportId(report_id_ma),
            reported_tcb: TcbVersion(reported_tcb),
            cpuid: (ver >= 3).then_some(Cpuid { family: cpuid[0], model: cpuid[1], stepping: cpuid[2] }),
            chip_id: ChipId(chip_id),
            committed_tcb: TcbVersion(committed_tcb),
            current_version: version(cur_ver),
            committed_version: version(com_ver),
            launch_tcb: TcbVersion(launch_tcb),
            launch_mit_vector: (ver >= 5).then_some(mit.0),
            current_mit_vector: (ver >= 5).then_some(mit.1),
            signature,
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn round_trip(fields in arb_fields()) {
        let bytes = fields.to_bytes();
        let report = AttestationReport::from_bytes(&bytes).unwrap();
        prop_assert_eq!(report.fields(), &fields);
        prop_assert_eq!(report.raw(), &bytes);
        prop_assert_eq!(report.to_bytes(), bytes);
        prop_assert_eq!(report.signed_bytes(), &bytes[..0x2A0]);
        prop_assert_eq!(AttestationReport::from_fields(&fields).unwrap(), report.clone());
        prop_assert_eq!(AttestationReport::from_bytes_lenient(&bytes).unwrap(), report);
        let json = serde_json::to_string(&fields).unwrap();
        let back: ReportFields = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(back, fields);
    }

    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..3000)) {
        for parse in [AttestationReport::from_bytes, AttestationReport::from_bytes_lenient] {
            match parse(&data) {
                Ok(r) => {
                    prop_assert_eq!(data.len(), REPORT_SIZE);
                    prop_assert_eq!(&r.raw()[..], &data[..]);
                }
                Err(SnpReportError::WrongLength { actual }) => {
                    prop_assert_eq!(actual, data.len());
                    prop_assert_ne!(actual, REPORT_SIZE);
                }
                Err(_) => prop_assert_eq!(data.len(), REPORT_SIZE),
            }
        }
    }

    #[test]
    fn random_full_size_reports_are_typed(mut data in proptest::collection::vec(any::<u8>(), REPORT_SIZE), v in 2u32..=5) {
        data[..4].copy_from_slice(&v.to_le_bytes());
        data[0x34..0x38].copy_from_slice(&1u32.to_le_bytes());
        // Random bytes fill the reserved fields: strict parsing refuses, lenient parsing accepts
        // and keeps the bytes as received.
        let strict = AttestationReport::from_bytes(&data);
        let is_reserved = matches!(strict, Err(SnpReportError::ReservedNotZero { .. }));
        prop_assert!(is_reserved);
        let lenient = AttestationReport::from_bytes_lenient(&data).unwrap();
        prop_assert_eq!(&lenient.raw()[..], &data[..]);
        prop_assert_eq!(lenient.version, v);
        prop_assert_eq!(lenient.cpuid.is_some(), v >= 3);
        prop_assert_eq!(lenient.launch_mit_vector.is_some(), v >= 5);
    }

    #[test]
    fn truncated_oversized_and_wrong_versions(
        fields in arb_fields(), cut in 0usize..REPORT_SIZE, extra in 1usize..64, bad_version in any::<u32>(),
        bad_algo in any::<u32>(), pos in 0usize..REPORT_SIZE,
    ) {
        let bytes = fields.to_bytes();
        prop_assert_eq!(
            AttestationReport::from_bytes(&bytes[..cut]),
            Err(SnpReportError::WrongLength { actual: cut })
        );
        let mut long = bytes.to_vec();
        long.extend(std::iter::repeat_n(0u8, extra));
        prop_assert_eq!(
            AttestationReport::from_bytes(&long),
            Err(SnpReportError::WrongLength { actual: REPORT_SIZE + extra })
        );
        let mut b = bytes;
        b[..4].copy_from_slice(&bad_version.to_le_bytes());
        let r = AttestationReport::from_bytes_lenient(&b);
        if (2..=5).contains(&bad_version) {
            prop_assert!(r.is_ok());
        } else {
            prop_assert_eq!(r, Err(SnpReportError::UnsupportedVersion(bad_version)));
        }
        let mut b = bytes;
        b[0x34..0x38].copy_from_slice(&bad_algo.to_le_bytes());
        let r = AttestationReport::from_bytes(&b);
        if bad_algo == 1 {
            prop_assert!(r.is_ok());
        } else {
            prop_assert_eq!(r, Err(SnpReportError::UnsupportedSignatureAlgorithm(bad_algo)));
        }
        // Any single-byte change parses to a report whose raw bytes are exactly the input.
        let mut b = bytes;
        b[pos] ^= 0xff;
        if let Ok(r) = AttestationReport::from_bytes_lenient(&b) {
            prop_assert_eq!(&r.raw()[..], &b[..]);
        }
    }
}
