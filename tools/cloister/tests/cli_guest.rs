//! Guest-side commands on a machine without a TEE: clear one-line errors, exit 1, no panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn cloister(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_cloister")).args(args).output().unwrap()
}

#[test]
fn no_tee_means_a_clear_error() {
    if std::path::Path::new("/sys/kernel/config/tsm/report").is_dir() {
        return; // running inside a TEE guest
    }
    let o = cloister(&["evidence", "get", "--report-data", "00"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("configfs-tsm") && err.contains("does not exist"), "{err}");
    assert!(!err.contains("panicked"));
    let o = cloister(&["kbs", "--url", "http://127.0.0.1:9", "attest"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("configfs-tsm"));
}

#[test]
fn bad_arguments_are_refused() {
    let o = cloister(&["evidence", "get", "--report-data", "zz"]);
    assert_eq!(o.status.code(), Some(1));
    let o = cloister(&["evidence", "get", "--report-data", &"00".repeat(65)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("at most 64"));
    // https without a pin or CA is refused before any connection.
    let o = cloister(&["kbs", "--url", "https://127.0.0.1:9", "attest", "--tee", "sample"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--cert-sha256"));
    // A KBS that is not there: transport error, exit 1.
    let o = cloister(&["kbs", "--url", "http://127.0.0.1:9", "attest", "--tee", "sample"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot reach the KBS"));
}

#[test]
fn named_hardware_tees_say_which_device_is_missing() {
    if std::path::Path::new("/sys/kernel/config/tsm/report").is_dir() || std::path::Path::new("/dev/tdx_guest").exists()
    {
        return; // running inside a TEE guest
    }
    let o = cloister(&["kbs", "--url", "http://127.0.0.1:9", "attest", "--tee", "tdx", "--qgs", "unix:/nonexistent"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no Tdx guest device") && err.contains("/dev/tdx_guest does not exist"), "{err}");
    let o = cloister(&["kbs", "--url", "http://127.0.0.1:9", "attest", "--tee", "tdx", "--qgs", "tcp:1"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--qgs must be vsock:CID:PORT or unix:PATH"));
}

/// `cloister emulate qgs` speaks Intel's QGS protocol: a TDREPORT of the saved emulated platform
/// comes back as a quote that verifies under the emulated root; another platform's report gets
/// a QGS error code.
#[test]
fn emulated_qgs_quotes_td_reports() {
    use std::io::{BufRead, Write};

    use cloister_emulate::tdx::{EmulatedTdx, TdxQuoteRequest};
    use cloister_evidence::tdx::qgs;

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("platform");
    let o = cloister(&["emulate", "init", "--dir", d.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let sock = dir.path().join("qgs.sock");
    let mut server = Command::new(env!("CARGO_BIN_EXE_cloister"))
        .args(["emulate", "qgs", "--dir", d.to_str().unwrap(), "--socket", sock.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(server.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert!(line.starts_with("serving"), "{line}");

    let platform = EmulatedTdx::load(&d).unwrap();
    let ask = |report: &[u8]| {
        let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
        s.write_all(&qgs::encode_get_quote_request(report, &[]).unwrap()).unwrap();
        qgs::decode_get_quote_response(&qgs::read_message(&mut s).unwrap())
    };
    let req = TdxQuoteRequest { mr_td: cloister_evidence::tdx::Bytes([3; 48]), ..TdxQuoteRequest::new([5; 64]) };
    let quote = ask(&platform.td_report(&req)).unwrap().quote;
    let collateral =
        cloister_verifier::tdx::TdxCollateral::from_json(platform.collateral_json().unwrap().as_bytes()).unwrap();
    let verifier = cloister_verifier::tdx::TdxVerifier::new(
        cloister_verifier::tdx::TdxTrustAnchors::empty().with_root(platform.root_der()).unwrap(),
        cloister_verifier::tdx::TdxVerifyOptions::default(),
    );
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let claims = verifier.verify(&quote, Some(&collateral), now).unwrap().claims();
    assert_eq!(claims["mr_td"], hex::encode([3; 48]));
    assert_eq!(claims["report_data"], hex::encode([5; 64]));

    let foreign = EmulatedTdx::generate().unwrap().td_report(&req);
    let err = ask(&foreign).unwrap_err();
    assert_eq!(err, qgs::QgsError::Service { code: qgs::QGS_ERROR_UNEXPECTED });
    let _ = server.kill();
    let _ = server.wait();
}
