//! TDX MRTD and RTMR replay against the shared fixtures (`$CLOISTER_FIXTURES`, normally
//! `/work/shared/fixtures`). Every test prints a skip message and passes when the variable is unset.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use cloister_measure::Sha384Digest;
use cloister_measure::rtmr::{self, EV_NO_ACTION};
use cloister_measure::tdx::{self, MetadataLocation, PageOrder, TdvfSectionType, TdxError};

fn fixtures(test: &str) -> Option<PathBuf> {
    match std::env::var_os("CLOISTER_FIXTURES") {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
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

/// `(firmware, expected, extra)` of a `tdx:mrtd` row of `measure/cases.tsv`, by id.
fn tdx_case(root: &std::path::Path, id: &str) -> (String, Sha384Digest, String) {
    let text = String::from_utf8(read(root, "measure/cases.tsv")).expect("cases.tsv is UTF-8");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("header").split('\t').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap_or_else(|| panic!("no column {name}"));
    let (c_id, c_mode, c_fw, c_exp, c_extra) = (col("id"), col("mode"), col("firmware"), col("expected"), col("extra"));
    for line in lines {
        let f: Vec<&str> = line.split('\t').collect();
        if f.get(c_id) == Some(&id) {
            assert_eq!(f[c_mode], "tdx:mrtd", "{id} mode");
            let expected = Sha384Digest::from_hex(f[c_exp]).expect("expected is 96 hex digits");
            return (f[c_fw].to_string(), expected, f[c_extra].to_string());
        }
    }
    panic!("case {id} not found in cases.tsv");
}

fn check_mrtd_case(id: &str, order: PageOrder, extra_mentions: &str) {
    let Some(root) = fixtures(id) else { return };
    let (fw, expected, extra) = tdx_case(&root, id);
    assert!(extra.contains(extra_mentions), "{id}: extra column {extra:?} no longer names {extra_mentions}");
    let image = read(&root, &format!("firmware/{fw}"));
    assert_eq!(tdx::mrtd(&image, order).expect("mrtd"), expected, "{id} ({fw}, {order})");
}

#[test]
fn tdx01_single_pass() {
    check_mrtd_case("TDX01", PageOrder::SinglePass, "single-pass");
}

#[test]
fn tdx02_two_pass() {
    check_mrtd_case("TDX02", PageOrder::TwoPass, "two-pass");
}

#[test]
fn inteltdx_metadata_matches_provenance() {
    let Some(root) = fixtures("inteltdx_metadata_matches_provenance") else {
        return;
    };
    let image = read(&root, "firmware/debian-sid/OVMF.inteltdx.ms.fd");
    let meta = tdx::parse_tdvf(&image).expect("parse");
    assert_eq!(meta.location, MetadataLocation::FooterTable);
    assert_eq!(image.len() - meta.descriptor_offset, 0xa00);
    let got: Vec<(TdvfSectionType, u32, u32, u64, u64, u32)> = meta
        .sections
        .iter()
        .map(|s| (s.section_type, s.data_offset, s.raw_data_size, s.memory_address, s.memory_data_size, s.attributes.0))
        .collect();
    use TdvfSectionType::*;
    assert_eq!(
        got,
        vec![
            (Bfv, 0x84000, 0x37c000, 0xffc8_4000, 0x37c000, 1),
            (Cfv, 0, 0x84000, 0xffc0_0000, 0x84000, 0),
            (TempMem, 0, 0, 0x81_0000, 0x10000, 0),
            (TempMem, 0, 0, 0x80_b000, 0x2000, 0),
            (TdHob, 0, 0, 0x80_9000, 0x2000, 0),
            (TempMem, 0, 0, 0x80_0000, 0x6000, 0),
        ]
    );
}

#[test]
fn bookworm_unified_ovmf_mrtd() {
    let Some(root) = fixtures("bookworm_unified_ovmf_mrtd") else {
        return;
    };
    let image = read(&root, "firmware/debian-bookworm/OVMF.fd");
    let meta = tdx::parse_tdvf(&image).expect("parse");
    assert_eq!(meta.sections.len(), 6);
    assert_eq!(meta.sections[0].section_type, TdvfSectionType::Bfv);
    assert_eq!(meta.sections[0].memory_address, 0xffe2_0000);
    let a = tdx::mrtd(&image, PageOrder::SinglePass).expect("single-pass");
    let b = tdx::mrtd(&image, PageOrder::TwoPass).expect("two-pass");
    assert_ne!(a, b);
    eprintln!("bookworm OVMF.fd MRTD interleaved {a}, add-then-extend {b}");
}

#[test]
fn split_ovmf_code_images_are_rejected() {
    let Some(root) = fixtures("split_ovmf_code_images_are_rejected") else {
        return;
    };
    // OVMF_CODE.fd carries the unified image's TDX metadata: its BFV points past the end.
    let image = read(&root, "firmware/debian-bookworm/OVMF_CODE.fd");
    let err = tdx::mrtd(&image, PageOrder::SinglePass).expect_err("OVMF_CODE.fd must be rejected");
    assert_eq!(
        err,
        TdxError::RawDataOutsideFile { index: 0, data_offset: 0x20000, raw_data_size: 0x1e0000, file_len: 0x1e0000 }
    );
    assert!(err.to_string().contains("split OVMF_CODE"), "{err}");
    // OVMF_CODE_4M.fd (SMM build) has no TDX metadata at all.
    let image = read(&root, "firmware/debian-bookworm/OVMF_CODE_4M.fd");
    assert_eq!(tdx::mrtd(&image, PageOrder::SinglePass), Err(TdxError::NoTdxMetadata));
    assert_eq!(tdx::parse_tdvf(&image), Err(TdxError::NoTdxMetadata));
}

/// Quote v4: 48-byte header, then the TD 1.0 report body (evidence-formats.md §2.2).
const BODY: usize = 48;
const MRTD_AT: usize = BODY + 136;
const RTMR0_AT: usize = BODY + 328;
const T12_MRTD: &str =
    "dae67181d3d65e073ad8f95b7907d5e927bfe9761c9ff3e9b89734a45d8954dba41394c7717cb2735396c1d04231f94a";

fn quote_rtmrs(quote: &[u8]) -> [Sha384Digest; 4] {
    assert_eq!(u16::from_le_bytes([quote[0], quote[1]]), 4, "quote version");
    assert_eq!(u32::from_le_bytes([quote[4], quote[5], quote[6], quote[7]]), 0x81, "TEE type TDX");
    core::array::from_fn(|i| Sha384Digest::from_slice(&quote[RTMR0_AT + 48 * i..RTMR0_AT + 48 * (i + 1)]).unwrap())
}

#[test]
fn t12_ccel_replay_matches_quote() {
    let Some(root) = fixtures("t12_ccel_replay_matches_quote") else {
        return;
    };
    let log_bytes = read(&root, "evidence/go-tdx-guest/ccel/ccel_data.dat");
    let quote = read(&root, "evidence/go-tdx-guest/ccel/cos-113-tdx-quote.dat");

    let mrtd = Sha384Digest::from_slice(&quote[MRTD_AT..MRTD_AT + 48]).unwrap();
    assert_eq!(mrtd.to_hex(), T12_MRTD);
    let quoted = quote_rtmrs(&quote);
    assert_eq!(quoted[3], Sha384Digest::ZERO, "RTMR3 is zero in T12");

    let log = rtmr::parse_event_log(&log_bytes).expect("parse CCEL log");
    assert_eq!(log.events.len(), 43);
    assert_eq!(log.spec_id.algorithms.len(), 1);
    assert!(log.events.iter().all(|e| (1..=3).contains(&e.mr_index)));
    assert_eq!(log.replay(), quoted);

    // Descriptions work on every real event and name the expected things.
    let described: Vec<String> = log.events.iter().map(|e| format!("{} {}", e.type_name(), e.describe())).collect();
    assert!(described[0].starts_with("EV_EFI_HANDOFF_TABLES2 \"TdxTable\""), "{}", described[0]);
    assert!(described.iter().any(|d| d.starts_with("EV_EFI_VARIABLE_DRIVER_CONFIG SecureBoot [")));
    assert!(described.iter().any(|d| d.starts_with("EV_SEPARATOR separator")));
    assert!(described.iter().any(|d| d.contains("Exit Boot Services Returned with Success")));
    for d in &described {
        assert!(!d.contains('\n'), "{d}");
    }

    // The ACPI table that points at this log.
    let table = rtmr::parse_ccel_table(&read(&root, "evidence/go-tdx-guest/ccel/ccel_table.dat")).expect("CCEL table");
    assert_eq!(table.cc_type, rtmr::CcelTable::CC_TYPE_TDX);
    assert_eq!((table.log_area_min_len, table.log_area_start), (0x40000, 0xbedb_f000));
    assert_eq!(table.log_area_min_len as usize, log_bytes.len());
}

#[test]
fn t12_flipping_any_digest_byte_breaks_replay() {
    let Some(root) = fixtures("t12_flipping_any_digest_byte_breaks_replay") else {
        return;
    };
    let log_bytes = read(&root, "evidence/go-tdx-guest/ccel/ccel_data.dat");
    let quoted = quote_rtmrs(&read(&root, "evidence/go-tdx-guest/ccel/cos-113-tdx-quote.dat"));
    let log = rtmr::parse_event_log(&log_bytes).expect("parse");
    let mut checked = 0;
    for (n, e) in log.events.iter().enumerate() {
        if e.event_type == EV_NO_ACTION {
            continue;
        }
        // Single-algorithm log: u32 index, u32 type, u32 count, u16 algorithm, then the digest.
        let at = e.offset + 14;
        assert_eq!(&log_bytes[at..at + 48], e.digest.unwrap().as_bytes(), "event {n} digest location");
        for byte in [0, 17, 47] {
            let mut bad = log_bytes.clone();
            bad[at + byte] ^= 0x01;
            let replayed = rtmr::parse_event_log(&bad).expect("still parses").replay();
            assert_ne!(replayed, quoted, "event {n} byte {byte}");
            let rtmr = e.rtmr().unwrap();
            assert_ne!(replayed[rtmr], quoted[rtmr]);
        }
        checked += 1;
    }
    assert_eq!(checked, 43);
}
