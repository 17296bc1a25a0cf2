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
