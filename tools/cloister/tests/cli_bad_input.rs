//! Bad input to `cloister measure`: exit code 1, exactly one line on stderr naming the problem,
//! nothing on stdout, never a panic. Self-contained (builds its own inputs).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::Path;
use std::process::Command;

fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cloister")).args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_rejected(args: &[&str], needle: &str) {
    let (code, stdout, stderr) = run(args);
    assert_eq!(code, Some(1), "{args:?}: stderr {stderr}");
    assert!(stdout.is_empty(), "{args:?}: stdout {stdout}");
    assert_eq!(stderr.lines().count(), 1, "{args:?}: want one line, got {stderr:?}");
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    assert!(stderr.contains(needle), "{args:?}: {stderr:?} should mention {needle:?}");
}

/// A minimal well-formed image: 8 KiB with a footer table holding the SEV-ES reset block.
fn tiny_firmware(dir: &Path) -> String {
    let mut img = vec![0u8; 8192];
    let footer_guid = [0xde, 0x82, 0xb5, 0x96, 0xb2, 0x1f, 0xf7, 0x45, 0xba, 0xea, 0xa3, 0x66, 0xc5, 0x5a, 0x08, 0x2d];
    let reset_guid = [0xde, 0x71, 0xf7, 0x00, 0x7e, 0x1a, 0xcb, 0x4f, 0x89, 0x0e, 0x68, 0xc7, 0x7e, 0x2f, 0xb4, 0x4e];
    let mut table = Vec::new();
    table.extend_from_slice(&0x80b004u32.to_le_bytes());
    table.extend_from_slice(&22u16.to_le_bytes());
    table.extend_from_slice(&reset_guid);
    table.extend_from_slice(&((table.len() + 18) as u16).to_le_bytes());
    table.extend_from_slice(&footer_guid);
    let end = img.len() - 32;
    img[end - table.len()..end].copy_from_slice(&table);
    let p = dir.join("tiny.fd");
    std::fs::write(&p, img).unwrap();
    p.to_str().unwrap().to_owned()
}

#[test]
fn well_formed_tiny_image_measures() {
    let dir = tempfile::tempdir().unwrap();
    let fw = tiny_firmware(dir.path());
    let (code, stdout, stderr) =
        run(&["measure", "--mode", "snp", "--vcpus", "2", "--vcpu-type", "EPYC-v4", "--ovmf", &fw]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout.trim().len(), 96);
    assert!(stdout.trim().chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
}

#[test]
fn truncated_and_garbage_firmware() {
    let dir = tempfile::tempdir().unwrap();
    let fw = tiny_firmware(dir.path());
    let bytes = std::fs::read(&fw).unwrap();
    let truncated = dir.path().join("truncated.fd");
    std::fs::write(&truncated, &bytes[..6000]).unwrap();
    let t = truncated.to_str().unwrap();
    assert_rejected(&["measure", "--mode", "snp", "--vcpus", "1", "--vcpu-type", "EPYC", "--ovmf", t], "firmware");
    let tiny = dir.path().join("tiny.bin");
    std::fs::write(&tiny, b"garbage").unwrap();
    let t = tiny.to_str().unwrap();
    assert_rejected(&["measure", "--mode", "snp", "--vcpus", "1", "--vcpu-type", "EPYC", "--ovmf", t], "too small");
    // Garbage with a valid footer but an SEV metadata offset pointing outside the file.
    let mut img = bytes.clone();
    let meta_guid = [0x66, 0x65, 0x88, 0xdc, 0x4a, 0x98, 0x98, 0x47, 0xa7, 0x5e, 0x55, 0x85, 0xa7, 0xbf, 0x67, 0xcc];
    let end = img.len() - 32;
    // Replace the reset-block entry (same size) by a metadata entry with a huge offset.
    let entry_start = end - 18 - 22;
    img[entry_start..entry_start + 4].copy_from_slice(&0xffff_0000u32.to_le_bytes());
    img[entry_start + 6..entry_start + 22].copy_from_slice(&meta_guid);
    let bad = dir.path().join("badmeta.fd");
    std::fs::write(&bad, img).unwrap();
    let b = bad.to_str().unwrap();
    assert_rejected(&["measure", "--mode", "snp", "--vcpus", "1", "--vcpu-type", "EPYC", "--ovmf", b], "SEV metadata");
}

#[test]
fn kernel_without_sev_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let fw = tiny_firmware(dir.path());
    let k = dir.path().join("k");
    std::fs::write(&k, b"kernel").unwrap();
    let k = k.to_str().unwrap();
    for mode in ["snp", "seves", "sev"] {
        assert_rejected(
            &["measure", "--mode", mode, "--vcpus", "1", "--vcpu-type", "EPYC", "--ovmf", &fw, "--kernel", k],
            "measured direct boot",
        );
    }
}

#[test]
fn bad_vcpu_options() {
    let dir = tempfile::tempdir().unwrap();
    let fw = tiny_firmware(dir.path());
    let base = ["measure", "--mode", "snp", "--ovmf", fw.as_str()];
    let with = |extra: &[&'static str]| -> Vec<String> {
        base.iter().map(|s| s.to_string()).chain(extra.iter().map(|s| s.to_string())).collect()
    };
    let check = |extra: &[&'static str], needle: &str| {
        let a = with(extra);
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        assert_rejected(&refs, needle);
    };
    check(&["--vcpus", "1", "--vcpu-type", "Skylake"], "unknown vCPU type 'Skylake'");
    check(&["--vcpus", "0", "--vcpu-type", "EPYC"], "at least 1");
    check(&["--vcpus", "1"], "--vcpu-type");
    check(&["--vcpu-type", "EPYC"], "--vcpus");
    check(&["--vcpus", "-3", "--vcpu-type", "EPYC"], "'-3'");
    check(&["--vcpus", "many", "--vcpu-type", "EPYC"], "--vcpus");
    check(&["--vcpus", "1", "--vcpu-type", "EPYC", "--vmm-type", "xen"], "unknown VMM type");
    check(&["--vcpus", "1", "--vcpu-family", "25"], "--vcpu-model");
    check(&["--vcpus", "1", "--vcpu-type", "EPYC", "--snp-ovmf-hash", "abcd"], "hex digits");
    check(&["--vcpus", "1", "--vcpu-type", "EPYC", "--guest-features", "zz"], "integer");
}

#[test]
fn unreadable_files_and_usage() {
    let dir = tempfile::tempdir().unwrap();
    let fw = tiny_firmware(dir.path());
    assert_rejected(
        &["measure", "--mode", "snp", "--vcpus", "1", "--vcpu-type", "EPYC", "--ovmf", "/nonexistent/OVMF.fd"],
        "cannot read firmware '/nonexistent/OVMF.fd'",
    );
    assert_rejected(
        &["measure", "--mode", "sev", "--ovmf", &fw, "--kernel", "/nonexistent/vmlinuz"],
        "cannot read kernel",
    );
    let d = dir.path().to_str().unwrap();
    assert_rejected(
        &["measure", "--mode", "snp", "--vcpus", "1", "--vcpu-type", "EPYC", "--ovmf", d],
        "cannot read firmware",
    );
    assert_rejected(&["measure", "--mode", "bogus", "--ovmf", &fw], "invalid value 'bogus'");
    assert_rejected(&["measure", "--ovmf", &fw], "--mode");
    assert_rejected(&["measure", "--mode", "sev", "--ovmf", &fw, "--initrd", &fw], "--kernel required");
}
