//! The launch measurement the launcher computes for what it launches, checked against
//! sev-snp-measure 0.0.13 / td-shim values recorded in `$CLOISTER_FIXTURES/measure/cases.tsv`
//! (skipped without `CLOISTER_FIXTURES`), and against the Debian `ovmf` package's
//! `/usr/share/ovmf/OVMF.fd` (skipped if not installed).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::{Path, PathBuf};

use cloister_launcher::{
    Accel, EmulatedConfig, InitDataSource, LaunchMeasurement, MeasureError, SnpConfig, TdxConfig, TeeKind, VmConfig,
    expected_measurement,
};

/// sev-snp-measure 0.0.13 `--mode snp --vcpus 1 --vcpu-type EPYC-v4 --ovmf OVMF.fd` on Debian
/// bookworm's OVMF.fd 2022.11-6+deb12u2 (case S01 of the fixtures).
const S01: &str = "11570979c77a0adb515761a702527c8b9e11554e730552621d950988613a3a75c6ff1703f540bd22a9beede8fe7a97e3";
const BOOKWORM_OVMF_SHA256: &str = "7b456907dd0786d415999e801a1ac4637b8ed4d7cf5378cfc6edbe5e574dd773";

fn fixtures() -> Option<PathBuf> {
    match std::env::var_os("CLOISTER_FIXTURES") {
        Some(p) => Some(PathBuf::from(p)),
        None => {
            eprintln!("skipping: CLOISTER_FIXTURES is not set");
            None
        }
    }
}

/// (id → (columns)) from cases.tsv.
fn case(fx: &Path, id: &str) -> Vec<String> {
    let text = std::fs::read_to_string(fx.join("measure/cases.tsv")).unwrap();
    text.lines()
        .map(|l| l.split('\t').map(str::to_owned).collect::<Vec<_>>())
        .find(|c| c.first().map(String::as_str) == Some(id))
        .unwrap_or_else(|| panic!("case {id} not in cases.tsv"))
}

fn snp_cfg(name: &str, firmware: PathBuf, kernel: PathBuf, vcpus: u32) -> VmConfig {
    let mut c = VmConfig::new(name, kernel, "/nonexistent/run");
    c.vcpus = vcpus;
    c.accel = Accel::Auto;
    c.firmware = Some(firmware);
    c.tee = TeeKind::SevSnp(SnpConfig::default());
    c
}

fn snp_value(m: &LaunchMeasurement) -> String {
    match m {
        LaunchMeasurement::Snp(s) => s.measurement.to_hex(),
        other => panic!("not SNP: {other:?}"),
    }
}

#[test]
fn debian_ovmf_matches_sev_snp_measure() {
    let ovmf = Path::new("/usr/share/ovmf/OVMF.fd");
    let Ok(bytes) = std::fs::read(ovmf) else {
        eprintln!("skipping: /usr/share/ovmf/OVMF.fd not found (Debian package `ovmf`)");
        return;
    };
    let mut c = snp_cfg("ovmf", ovmf.into(), "/nonexistent/kernel".into(), 1);
    // Debian's generic OVMF.fd has no SNP_KERNEL_HASHES section: no measured direct boot.
    if let TeeKind::SevSnp(s) = &mut c.tee {
        s.kernel_hashes = false;
    }
    let m = expected_measurement(&c).unwrap();
    if cloister_measure::digest::sha256(&bytes).to_hex() == BOOKWORM_OVMF_SHA256 {
        assert_eq!(snp_value(&m), S01);
    } else {
        eprintln!("note: /usr/share/ovmf/OVMF.fd is not the bookworm build: comparing with the library only");
    }
    // Same inputs through the library directly.
    let fw = cloister_measure::FirmwareImage::parse(&bytes).unwrap();
    let p = cloister_measure::snp::SnpParams::qemu(1, cloister_measure::snp::vcpu_type_sig("EPYC-v4").unwrap());
    assert_eq!(snp_value(&m), cloister_measure::snp::launch_digest(&fw, &p).unwrap().to_hex());
    let json = m.to_json();
    assert_eq!(json["tee"], "snp");
    assert_eq!(json["measurement"], snp_value(&m));

    // With kernel hashes on, this firmware cannot do measured direct boot: a typed error.
    let c = snp_cfg("ovmf", ovmf.into(), ovmf.into(), 1);
    let e = expected_measurement(&c).unwrap_err();
    assert!(matches!(e, MeasureError::Snp(cloister_measure::Error::KernelHashesUnsupported { .. })), "{e}");
}

#[test]
fn kernel_hashes_cases_u01_u04() {
    let Some(fx) = fixtures() else { return };
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, b"").unwrap();
    for id in ["U01", "U04"] {
        let c = case(&fx, id);
        let (fw, vcpus, append, expected) = (&c[2], c[3].parse::<u32>().unwrap(), &c[9], &c[10]);
        assert_eq!(c[4], "EPYC-v4");
        assert_eq!(c[6], "0x1");
        let mut cfg = snp_cfg(id, fx.join("firmware").join(fw), empty.clone(), vcpus);
        cfg.initrd = Some(empty.clone());
        cfg.cmdline = if append == "-" { String::new() } else { append.clone() };
        let m = expected_measurement(&cfg).unwrap();
        assert_eq!(&snp_value(&m), expected, "{id}");

        // The emulated platform reports the same value for the same inputs.
        let mut emu = cfg.clone();
        emu.firmware = None;
        emu.tee = TeeKind::EmulatedSnp(EmulatedConfig {
            endpoint: "/nonexistent/psp.sock".into(),
            reference_firmware: cfg.firmware.clone(),
            snp: SnpConfig::default(),
        });
        let m = expected_measurement(&emu).unwrap();
        assert_eq!(&snp_value(&m), expected, "{id} emulated");
        assert!(matches!(m, LaunchMeasurement::Snp(ref s) if s.emulated));
    }
}

#[test]
fn s05_real_kernel_when_available() {
    let Some(fx) = fixtures() else { return };
    let kernel = std::env::var_os("CLOISTER_TEST_KERNEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/boot/vmlinuz-6.1.0-56-cloud-amd64"));
    let Ok(kbytes) = std::fs::read(&kernel) else {
        eprintln!("skipping S05: {} not found (linux-image-6.1.0-56-cloud-amd64)", kernel.display());
        return;
    };
    if cloister_measure::digest::sha256(&kbytes).to_hex()
        != "51349501a3d1ff83836437d2b365fd2d57f2feb8642d315e5181dec23d4c3275"
    {
        eprintln!("skipping S05: {} is not the kernel of the fixture", kernel.display());
        return;
    }
    let c = case(&fx, "S05");
    // initrd-synth.img: block(i) = SHA-256("initrd" ‖ i as u64 LE), truncated to 4 MiB + 123.
    let dir = tempfile::tempdir().unwrap();
    let initrd = dir.path().join("initrd-synth.img");
    let size = 4 * 1024 * 1024 + 123;
    let mut data = Vec::with_capacity(size + 32);
    let mut i = 0u64;
    while data.len() < size {
        let mut seed = b"initrd".to_vec();
        seed.extend_from_slice(&i.to_le_bytes());
        data.extend_from_slice(cloister_measure::digest::sha256(&seed).as_bytes());
        i += 1;
    }
    data.truncate(size);
    std::fs::write(&initrd, &data).unwrap();
    let mut cfg = snp_cfg("s05", fx.join("firmware").join(&c[2]), kernel, 1);
    cfg.initrd = Some(initrd);
    cfg.cmdline = c[9].clone();
    // initdata only sets HOST_DATA; it must not change MEASUREMENT.
    cfg.initdata = Some(InitDataSource::Digest(vec![7; 48]));
    let m = expected_measurement(&cfg).unwrap();
    assert_eq!(snp_value(&m), c[10]);
    let LaunchMeasurement::Snp(s) = &m else { unreachable!() };
    assert_eq!(s.host_data, Some([7; 32]));
    assert_eq!(
        s.kernel_hashes.unwrap().initrd.to_hex(),
        "f00cc1852688d2a956baf9ad5f4d4c45a7c561128a20af1e3b6f13eae41ec000"
    );
}

#[test]
fn tdx_mrtd_tdx01() {
    let Some(fx) = fixtures() else { return };
    let c = case(&fx, "TDX01");
    let fw = fx.join("firmware").join(&c[2]);
    let mut cfg = VmConfig::new("tdx", "/nonexistent/kernel", "/nonexistent/run");
    cfg.firmware = Some(fw.clone());
    cfg.initdata = Some(InitDataSource::Digest(vec![9; 48]));
    cfg.tee = TeeKind::Tdx(TdxConfig::default());
    let m = expected_measurement(&cfg).unwrap();
    let LaunchMeasurement::Tdx(t) = &m else { panic!("{m:?}") };
    assert_eq!(t.mrtd.to_hex(), c[10]);
    assert_eq!(t.mrconfigid, Some([9; 48]));
    assert_eq!(m.to_json()["measurement"], c[10]);

    cfg.firmware = None;
    cfg.tee = TeeKind::EmulatedTdx(EmulatedConfig {
        endpoint: "/nonexistent".into(),
        reference_firmware: Some(fw),
        snp: SnpConfig::default(),
    });
    assert_eq!(expected_measurement(&cfg).unwrap().hex().unwrap(), c[10]);
}

#[test]
fn plain_vm_measures_nothing_and_missing_files_are_typed() {
    let c = VmConfig::new("plain", "/nonexistent/kernel", "/nonexistent/run");
    assert_eq!(expected_measurement(&c).unwrap(), LaunchMeasurement::None);
    let c = snp_cfg("x", "/nonexistent/OVMF.fd".into(), "/nonexistent/kernel".into(), 1);
    let e = expected_measurement(&c).unwrap_err();
    assert!(matches!(e, MeasureError::Read { what: "firmware", .. }), "{e}");
    let mut c = VmConfig::new("emu", "/nonexistent/kernel", "/nonexistent/run");
    c.tee = TeeKind::EmulatedSnp(EmulatedConfig {
        endpoint: "/nonexistent".into(),
        reference_firmware: None,
        snp: SnpConfig::default(),
    });
    assert!(matches!(expected_measurement(&c), Err(MeasureError::NoFirmware { .. })));
}
