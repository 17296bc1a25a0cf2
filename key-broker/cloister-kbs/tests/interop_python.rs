//! Interop with peers written only from the protocol notes (tests/interop, Python +
//! `cryptography`): their client against our key broker, and our client against their KBS.
//! Needs `CLOISTER_PYTHON` (a python with `cryptography`); skips without it unless `CI` is set.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;

use cloister_kbs_client::{ClientError, ClientOptions, KbsClient, SampleAttester, TeeKeyKind};
use common::Kbs;

fn python() -> Option<String> {
    match std::env::var("CLOISTER_PYTHON") {
        Ok(p) => Some(p),
        Err(_) if std::env::var_os("CI").is_some() => panic!("CLOISTER_PYTHON must be set in CI"),
        Err(_) => {
            eprintln!("skipping: CLOISTER_PYTHON is not set (a python with the cryptography package)");
            None
        }
    }
}

fn interop_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_against_cloister_kbs() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let kbs = Kbs::start(dir.path(), "", false).await;
    kbs.set_resource_policy(cloister_policy::builtin::RESOURCE_ALLOW_ALL).await;
    let secret = b"interop \x00\x01\xfe\xff secret";
    kbs.set_resource("default/key/k1", secret).await;
    for key in ["ec-p256", "ec-p521", "rsa"] {
        for bearer in [false, true] {
            let out = dir.path().join(format!("out-{key}-{bearer}"));
            let mut cmd = tokio::process::Command::new(&py);
            cmd.arg(interop_dir().join("kbs_client.py"))
                .args(["--url", &kbs.url, "--resource", "default/key/k1", "--key", key, "--tee", "sample", "--out"])
                .arg(&out);
            if bearer {
                cmd.arg("--bearer");
            }
            let o = cmd.output().await.unwrap();
            assert!(o.status.success(), "{key} bearer={bearer}: {}", String::from_utf8_lossy(&o.stderr));
            assert_eq!(std::fs::read(&out).unwrap(), secret, "{key} bearer={bearer}");
        }
    }
    // Their client sees our precise refusals: a missing resource is 404.
    let o = tokio::process::Command::new(&py)
        .arg(interop_dir().join("kbs_client.py"))
        .args(["--url", &kbs.url, "--resource", "default/key/missing", "--expect-status", "404"])
        .output()
        .await
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // And a tampered nonce is refused at /attest.
    let o = tokio::process::Command::new(&py)
        .arg(interop_dir().join("kbs_client.py"))
        .args(["--url", &kbs.url, "--resource", "default/key/k1", "--tamper-nonce"])
        .output()
        .await
        .unwrap();
    assert!(!o.status.success());
    kbs.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloister_client_against_python_kbs() {
    let Some(py) = python() else { return };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let res = dir.path().join("res");
    std::fs::create_dir_all(res.join("default/key")).unwrap();
    std::fs::write(res.join("default/key/k1"), b"from python\x00").unwrap();
    let mut child = Command::new(&py)
        .arg(interop_dir().join("kbs_server.py"))
        .args(["--port", "0", "--allow-sample", "--missing-status", "404", "--resources"])
        .arg(&res)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let port = loop {
        let l = lines.next().expect("python KBS exited").unwrap();
        if let Some(p) = l.strip_prefix("listening on ") {
            break p.trim().to_owned();
        }
    };
    let url = format!("http://127.0.0.1:{port}");
    for key in [TeeKeyKind::P256, TeeKeyKind::P521, TeeKeyKind::Rsa2048] {
        let c =
            KbsClient::new(&url, Arc::new(SampleAttester), ClientOptions { key, ..ClientOptions::default() }).unwrap();
        assert_eq!(&c.get_resource("kbs:///default/key/k1").await.unwrap()[..], b"from python\x00", "{key:?}");
        let e = c.get_resource("default/key/none").await.unwrap_err();
        assert!(matches!(e, ClientError::Refused { status: 404, .. }), "{e}");
    }
    child.kill().unwrap();
    child.wait().unwrap();
}
