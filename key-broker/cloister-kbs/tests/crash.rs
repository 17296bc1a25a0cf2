//! Crash safety: the real `cloister-kbs` binary is killed with SIGKILL during a burst of admin
//! writes, restarted on the same data directory, and every acknowledged write must be intact
//! (and no record may be torn).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use cloister_kbs::store::{FsStore, Namespace, ResourceStore};
use cloister_kbs_client::{ClientOptions, KbsClient, SampleAttester};
use cloister_kbs_protocol::admin::AdminSigningKey;

fn value_for(i: usize) -> Vec<u8> {
    // 16 KiB, distinct per key, so a torn write cannot look complete.
    (0..16 * 1024).map(|j| ((i * 31 + j * 7) % 251) as u8).collect()
}

fn start(dir: &Path) -> (Child, String) {
    let config = dir.join("kbs.toml");
    std::fs::write(&config, "[http_server]\nsockets = [\"127.0.0.1:0\"]\ninsecure_http = true\nauth_rate_limit = 0\n")
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_cloister-kbs"))
        .arg("--config-file")
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--admin-key-out")
        .arg(dir.join("admin.pem"))
        .env("CLOISTER_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = loop {
        let line = lines.next().expect("server exited").unwrap();
        if let Some(u) = line.strip_prefix("listening on ") {
            break u.to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (child, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_admin_writes_loses_nothing_acknowledged() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let (mut child, url) = start(dir.path());
    let admin = AdminSigningKey::from_pkcs8(&std::fs::read(dir.path().join("admin.pem")).unwrap()).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let token = admin.mint("admin", now, 600).unwrap();
    let http = reqwest::Client::new();
    let policy = serde_json::json!({"policy": B64URL.encode(cloister_policy::builtin::RESOURCE_ALLOW_ALL)}).to_string();
    let r = http.post(format!("{url}/kbs/v0/resource-policy")).bearer_auth(&token).body(policy).send().await.unwrap();
    assert_eq!(r.status(), 200);

    let acked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..8 {
        let (http, url, token, acked, stop) = (http.clone(), url.clone(), token.clone(), acked.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut i = w;
            while !stop.load(Ordering::Relaxed) {
                let r = http
                    .post(format!("{url}/kbs/v0/resource/crash/k/{i}"))
                    .bearer_auth(&token)
                    .body(value_for(i))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 200 => acked.lock().unwrap().push(i),
                    _ => {}
                }
                i += 8;
            }
        }));
    }
    // Let the burst run, then kill the server mid-write.
    while acked.lock().unwrap().len() < 150 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 150);

    // No torn records: every record present is complete (acknowledged or not).
    let store = FsStore::open(dir.path().join("data/store")).unwrap();
    let keys = store.list(Namespace::Repository).unwrap();
    for k in &keys {
        let i: usize = k.rsplit('/').next().unwrap().parse().unwrap();
        assert_eq!(&store.get(Namespace::Repository, k).unwrap().unwrap()[..], &value_for(i)[..], "{k} is torn");
    }
    drop(store);

    // Restart and read every acknowledged write back through the protocol.
    let (mut child, url) = start(dir.path());
    let c = KbsClient::new(&url, Arc::new(SampleAttester), ClientOptions::default()).unwrap();
    for i in &acked {
        let v = c.get_resource(&format!("crash/k/{i}")).await.unwrap();
        assert_eq!(&v[..], &value_for(*i)[..], "acknowledged write {i} lost or changed");
    }
    child.kill().unwrap();
    child.wait().unwrap();
}
