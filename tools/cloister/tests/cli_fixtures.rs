//! The fixture cases of `fixtures/measure/cases.tsv` through the `cloister` binary (the library
//! tests cover the same values in-process; this checks the command line maps flags to them), and
//! the T12 event-log replay. Skips with a message without `CLOISTER_FIXTURES`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn fixtures() -> Option<PathBuf> {
    let p = std::env::var_os("CLOISTER_FIXTURES").map(PathBuf::from);
    if p.is_none() {
        eprintln!("skipping: CLOISTER_FIXTURES is not set");
    }
    p
}

/// The synthetic initrd of gen-inputs.py: SHA-256 counter stream of seed "initrd".
fn write_synth(dir: &Path, name: &str, seed: &[u8], size: usize) -> PathBuf {
    use cloister_measure::digest::Sha256;
    let mut out = Vec::with_capacity(size + 32);
    let mut i = 0u64;
    while out.len() < size {
        let mut h = Sha256::new();
        h.update(seed);
        h.update(&i.to_le_bytes());
        out.extend_from_slice(h.finish().as_bytes());
        i += 1;
    }
    out.truncate(size);
    let p = dir.join(name);
    std::fs::write(&p, out).unwrap();
    p
}

#[test]
fn cases_through_the_cli() {
    let Some(root) = fixtures() else { return };
    let fw = root.join("firmware");
    let tmp = tempfile::tempdir().unwrap();
    let initrd = write_synth(tmp.path(), "initrd-synth.img", b"initrd", 4_194_427);
    let kernel = write_synth(tmp.path(), "kernel-synth.bin", b"kernel", 1_048_576);
    let text = std::fs::read_to_string(root.join("measure/cases.tsv")).unwrap();
    let mut ran = 0;
    for line in text.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let c: Vec<&str> = line.split('\t').collect();
        let (id, mode, firmware, vcpus, vtype, vmm, feats, k, i, append, expected, extra) =
            (c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8], c[9], c[10], c[11]);
        if k.starts_with("vmlinuz") {
            eprintln!("{id}: needs the Debian kernel file (not shipped); covered by the library test");
            continue;
        }
        let mut args: Vec<String> = vec!["measure".into(), "--ovmf".into(), fw.join(firmware).display().to_string()];
        let mut push = |a: &str, b: &str| {
            args.push(a.to_owned());
            args.push(b.to_owned());
        };
        if mode == "tdx:mrtd" {
            push("--mode", "tdx");
            let order = if extra.contains("two-pass") { "add-then-extend" } else { "interleaved" };
            push("--tdx-page-order", order);
        } else {
            push("--mode", mode);
        }
        if vcpus != "-" {
            push("--vcpus", vcpus);
        }
        match vtype {
            "-" => {}
            s if s.starts_with("0x") => push("--vcpu-sig", s),
            s => push("--vcpu-type", s),
        }
        if vmm != "-" {
            push("--vmm-type", vmm);
        }
        if feats != "-" {
            push("--guest-features", feats);
        }
        let input = |n: &str| match n {
            "kernel-synth.bin" => kernel.display().to_string(),
            "initrd-synth.img" => initrd.display().to_string(),
            other => other.to_owned(),
        };
        if k != "-" {
            push("--kernel", &input(k));
        }
        if i != "-" {
            push("--initrd", &input(i));
        }
        if append != "-" {
            push("--append", append);
        }
        if mode.starts_with("snp") || mode.starts_with("sev") {
            let mut e = extra.split_whitespace().filter(|s| *s != "-");
            while let (Some(f), Some(v)) = (e.next(), e.next()) {
                let v = if f == "--svsm" { fw.join(v).display().to_string() } else { v.to_owned() };
                push(f, &v);
            }
        }
        let out = Command::new(env!("CARGO_BIN_EXE_cloister")).args(&args).output().unwrap();
        assert!(out.status.success(), "{id}: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), expected, "{id}: {args:?}");
        ran += 1;
    }
    assert!(ran >= 20, "only {ran} cases ran");
}

#[test]
fn t12_event_log_replays_to_the_quoted_rtmrs() {
    let Some(root) = fixtures() else { return };
    let log = root.join("evidence/go-tdx-guest/ccel/ccel_data.dat");
    let out = Command::new(env!("CARGO_BIN_EXE_cloister"))
        .args(["measure", "rtmr", "--event-log", log.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    // RTMR values stated for T12 in fixtures/evidence/PROVENANCE.md (the tdx_fixtures test in
    // cloister-measure also reads them out of the quote itself).
    assert!(text.contains(
        "rtmr0 3fa2f61f395b7f5feefb4ec2df61297f109ad8abcd6410c1b7df60f21f37b19297fc35e544039c7e1edece752afd17f6"
    ));
    assert!(text.contains(
        "rtmr1 f62dbc072bd5d3f3438b7b35c39a727f5aea2ffc2473f43723953f530daf62504f0a7944aa62c41a86e8a878c2b122c1"
    ));
    assert!(text.contains(
        "rtmr2 4969684dc87381fc3b3134176c8d8806eaf0a901859f5f70cfae8d17714b46c10a8de219048c9fc09f11f381a6fbe7c1"
    ));
    assert!(text.contains(&format!("rtmr3 {}", "0".repeat(96))));
}

#[test]
fn split_code_file_is_not_a_tdvf_input() {
    let Some(root) = fixtures() else { return };
    let fw = root.join("firmware/debian-bookworm/OVMF_CODE.fd");
    let out = Command::new(env!("CARGO_BIN_EXE_cloister"))
        .args(["measure", "--mode", "tdx", "--ovmf", fw.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("outside"), "{err}");
}
