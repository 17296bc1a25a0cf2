//! `cloister verify` and `cloister evidence show` on real evidence (fixtures S1, S2, T1 of
//! `fixtures/evidence/PROVENANCE.md`): exit 0 verified, 2 rejected with one line naming the check,
//! 1 for I/O errors. Skips without `CLOISTER_FIXTURES`.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;

fn evidence() -> Option<PathBuf> {
    let p = std::env::var_os("CLOISTER_FIXTURES").map(|p| PathBuf::from(p).join("evidence"));
    if p.is_none() {
        eprintln!("skipping: CLOISTER_FIXTURES is not set");
    }
    p
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cloister")).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn snp_verdicts() {
    let Some(e) = evidence() else { return };
    let p = |f: &str| e.join(f).display().to_string();
    let (code, out, err) = run(&[
        "verify",
        "snp",
        "--report",
        &p("virtee-sev/report_milan.bin"),
        "--vcek",
        &p("virtee-sev/vcek_milan.der"),
        "--chain",
        &p("virtee-sev/cert_chain_milan"),
        "--now",
        "1767225600",
        "--output",
        "json",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(
            "7a1e5c266c0108dbc9bb94fa926951320940915d0aafb42464bd88b579ea158d3e1a0dc39b2c60bd95b9c480cd81841f"
        )
    );

    // S2: debug policy, rejected by default, accepted with --allow-debug.
    let s2 = [
        "verify",
        "snp",
        "--report",
        &p("go-sev-guest/attestation.bin"),
        "--vcek",
        &p("go-sev-guest/vcek.testcer"),
        "--chain",
        &p("go-sev-guest/milan.testcer"),
        "--now",
        "1767225600",
    ];
    let (code, _, err) = run(&s2);
    assert_eq!(code, 2);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("rejected: debug:"), "{err}");
    let mut allowed = s2.to_vec();
    allowed.push("--allow-debug");
    assert_eq!(run(&allowed).0, 0);

    // One flipped byte of the signed report: rejected (signature).
    let mut bytes = std::fs::read(e.join("virtee-sev/report_milan.bin")).unwrap();
    bytes[0x90] ^= 1;
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("r.bin");
    std::fs::write(&bad, bytes).unwrap();
    let (code, _, err) = run(&[
        "verify",
        "snp",
        "--report",
        bad.to_str().unwrap(),
        "--vcek",
        &p("virtee-sev/vcek_milan.der"),
        "--chain",
        &p("virtee-sev/cert_chain_milan"),
        "--now",
        "1767225600",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.starts_with("rejected: "), "{err}");

    let (code, _, err) = run(&["verify", "snp", "--report", "/nonexistent", "--vcek", "/nonexistent"]);
    assert_eq!(code, 1, "{err}");
}

#[test]
fn tdx_verdicts() {
    let Some(e) = evidence() else { return };
    let p = |f: &str| e.join(f).display().to_string();
    let base = [
        "verify",
        "tdx",
        "--quote",
        &p("dcap-qvl/tdx_quote"),
        "--collateral",
        &p("dcap-qvl/tdx_quote_collateral.json"),
    ];
    let mut at = base.to_vec();
    at.extend(["--now", "1751624191", "--output", "json"]);
    let (code, out, err) = run(&at);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(
            "91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7"
        )
    );
    // Today the collateral has expired: rejected, naming the date check.
    let (code, _, err) = run(&base);
    assert_eq!(code, 2);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("rejected: "), "{err}");
}

#[test]
fn evidence_show() {
    let Some(e) = evidence() else { return };
    let (code, out, _) = run(&["evidence", "show", e.join("virtee-sev/report_milan.bin").to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(out.starts_with("SEV-SNP attestation report"));
    let (code, out, _) = run(&["evidence", "show", e.join("dcap-qvl/tdx_quote").to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(out.starts_with("DCAP quote"));
    let (code, _, err) = run(&["evidence", "show", e.join("PROVENANCE.md").to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
}
