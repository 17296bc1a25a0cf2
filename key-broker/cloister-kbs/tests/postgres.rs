//! Replicas on one PostgreSQL database (Debian's `postgresql`, started per test on loopback):
//! two real `cloister-kbs` processes serve every step of a client's flow alternately, share
//! their keys, see each other's policy changes at once, survive the loss of either replica,
//! answer 503 while the database is down and resume by themselves when it is back; nothing
//! acknowledged is lost and no row holds a plaintext secret.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use cloister_kbs_client::{Attester, EmulatedSnpAttester};
use cloister_kbs_protocol::admin::AdminSigningKey;
use cloister_policy::builtin;
use common::flows::{AUTH_BODY, MEASUREMENT, RESOURCE, SECRET, flow};
use common::pg::{PgServer, storage_toml};
use serde_json::{Value, json};

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// One `cloister-kbs` process.
struct Replica {
    child: Child,
    url: String,
    stderr: PathBuf,
}

impl Replica {
    fn start(dir: &Path, name: &str, storage: &str) -> Result<Replica, String> {
        let p = common::platform();
        let ark = dir.join("emulated-ark.der");
        std::fs::write(&ark, p.ark_der()).unwrap();
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "[http_server]\nsockets = [\"127.0.0.1:0\"]\ninsecure_http = true\nauth_rate_limit = 0\n\
                 max_sessions = 100000000\n{storage}\
                 [[attestation_service.verifier.snp_emulated_roots]]\ncert = \"{}\"\nsha256 = \"{}\"\nproduct = \"Milan\"\n",
                ark.display(),
                p.ark_sha256_hex()
            ),
        )
        .unwrap();
        let stderr = dir.join(format!("{name}.stderr"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_cloister-kbs"))
            .arg("--config-file")
            .arg(&config)
            .arg("--data-dir")
            .arg(dir.join(format!("{name}-data")))
            .arg("--admin-key-out")
            .arg(dir.join(format!("{name}-admin.pem")))
            .env("CLOISTER_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let url = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(u) = line.strip_prefix("listening on ") {
                        break u.to_owned();
                    }
                }
                _ => {
                    let _ = child.wait();
                    return Err(std::fs::read_to_string(&stderr).unwrap_or_default());
                }
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Ok(Replica { child, url, stderr })
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

fn attester() -> Arc<dyn Attester> {
    Arc::new(EmulatedSnpAttester::new(common::platform(), MEASUREMENT, [0; 32]))
}

fn admin_token(key: &AdminSigningKey) -> String {
    key.mint("admin", now(), 600).unwrap()
}

async fn admin_post(http: &reqwest::Client, url: &str, token: &str, path: &str, body: Vec<u8>) -> reqwest::Response {
    http.post(format!("{url}{path}")).bearer_auth(token).body(body).send().await.unwrap()
}

/// Emulated-SNP attestation policy, a resource policy requiring affirming emulated evidence,
/// the reference measurement and the secret, all through `url`.
async fn provision(http: &reqwest::Client, url: &str, token: &str) {
    let att =
        json!({"type": "rego", "policy_id": "default", "policy": B64URL.encode(builtin::ATTESTATION_EMULATED_CPU)});
    let res = json!({"policy": B64URL.encode(builtin::RESOURCE_EMULATED)});
    let refs = json!({"snp_launch_measurement": [hex::encode(MEASUREMENT)]});
    for (path, body) in [
        ("/kbs/v0/attestation-policy", att.to_string().into_bytes()),
        ("/kbs/v0/resource-policy", res.to_string().into_bytes()),
        ("/kbs/v0/reference-value", refs.to_string().into_bytes()),
        (&format!("/kbs/v0/resource/{RESOURCE}"), SECRET.to_vec()),
    ] {
        let r = admin_post(http, url, token, path, body).await;
        assert_eq!(r.status(), 200, "{path}: {}", r.text().await.unwrap());
    }
}

struct Setup {
    pg: PgServer,
    dir: tempfile::TempDir,
    storage: String,
}

fn setup() -> Option<Setup> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pg = PgServer::start()?;
    let dir = tempfile::tempdir().unwrap();
    let storage = storage_toml(&pg, &dir.path().join("store.key"), &[0x11; 32]);
    Some(Setup { pg, dir, storage })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_serve_one_flow_alternately_and_survive_losing_one() {
    let Some(s) = setup() else { return };
    // Both replicas start together on an empty database: exactly one generates the shared
    // admin and token keys, the other adopts them.
    let (a, b) = tokio::join!(
        tokio::task::spawn_blocking({
            let (d, st) = (s.dir.path().to_owned(), s.storage.clone());
            move || Replica::start(&d, "a", &st)
        }),
        tokio::task::spawn_blocking({
            let (d, st) = (s.dir.path().to_owned(), s.storage.clone());
            move || Replica::start(&d, "b", &st)
        }),
    );
    let (mut a, b) = (a.unwrap().unwrap(), b.unwrap().unwrap());
    let keys: Vec<PathBuf> =
        ["a", "b"].iter().map(|n| s.dir.path().join(format!("{n}-admin.pem"))).filter(|p| p.exists()).collect();
    assert_eq!(keys.len(), 1, "exactly one replica generated the admin key");
    let admin = AdminSigningKey::from_pkcs8(&std::fs::read(&keys[0]).unwrap()).unwrap();
    let token = admin_token(&admin);
    let http = reqwest::Client::new();
    let urls = vec![a.url.clone(), b.url.clone()];
    // Provision through A; the admin key works on B too.
    provision(&http, &a.url, &token).await;
    let r = http.get(format!("{}/kbs/v0/resource-policy", b.url)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 200);

    // 200 concurrent flows, every step on the other replica than the one before.
    let att = attester();
    let t = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..200 {
        let (http, urls, att) = (http.clone(), urls.clone(), att.clone());
        tasks.push(tokio::spawn(async move { flow(&http, &urls, i % 2, &att).await }));
    }
    let mut errors = Vec::new();
    for t in tasks {
        if let Err(e) = t.await.unwrap() {
            errors.push(e);
        }
    }
    assert!(
        errors.is_empty(),
        "{} of 200 flows failed, first: {}\nA: {}\nB: {}",
        errors.len(),
        errors[0],
        a.log(),
        b.log()
    );
    println!("200 concurrent alternating flows in {:.2} s", t.elapsed().as_secs_f64());

    // Kill A in the middle of a second wave: clients fall over to B and every flow completes,
    // including those whose session A created.
    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..120 {
        let (http, urls, att, done) = (http.clone(), urls.clone(), att.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let r = flow(&http, &urls, i % 2, &att).await;
            done.fetch_add(1, Ordering::Relaxed);
            r
        }));
    }
    while done.load(Ordering::Relaxed) < 30 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    a.kill();
    let in_flight = 120 - done.load(Ordering::Relaxed);
    let mut errors = Vec::new();
    for t in tasks {
        if let Err(e) = t.await.unwrap() {
            errors.push(e);
        }
    }
    assert!(in_flight > 0, "the replica was killed mid-load");
    assert!(errors.is_empty(), "{} flows failed after A died, first: {}\nB: {}", errors.len(), errors[0], b.log());
    println!("killed A with {in_flight} of 120 flows in flight: all completed on B");
    let r = http.get(format!("{}/healthz", b.url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_set_through_one_replica_denies_through_the_other_within_a_second() {
    let Some(s) = setup() else { return };
    let a = Replica::start(s.dir.path(), "a", &s.storage).unwrap();
    let b = Replica::start(s.dir.path(), "b", &s.storage).unwrap();
    let admin = AdminSigningKey::from_pkcs8(&std::fs::read(s.dir.path().join("a-admin.pem")).unwrap()).unwrap();
    assert!(!s.dir.path().join("b-admin.pem").exists(), "B adopted A's admin key");
    let token = admin_token(&admin);
    let http = reqwest::Client::new();
    provision(&http, &a.url, &token).await;
    let urls = vec![a.url.clone(), b.url.clone()];
    let att = attester();
    let ear = flow(&http, &urls, 0, &att).await.unwrap();
    // A Bearer fetch on B works, then the resource policy is replaced through A.
    let fetch = |url: String| {
        let (http, ear) = (http.clone(), ear.clone());
        async move { http.get(format!("{url}/kbs/v0/resource/{RESOURCE}")).bearer_auth(ear).send().await.unwrap() }
    };
    assert_eq!(fetch(b.url.clone()).await.status(), 200);
    let deny = json!({"policy": B64URL.encode(builtin::RESOURCE_DENY_ALL)}).to_string().into_bytes();
    let r = admin_post(&http, &a.url, &token, "/kbs/v0/resource-policy", deny).await;
    assert_eq!(r.status(), 200);
    let set = Instant::now();
    let r = loop {
        let r = fetch(b.url.clone()).await;
        if r.status() != 200 || set.elapsed() > Duration::from_secs(1) {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let took = set.elapsed();
    assert_eq!(r.status(), 403, "B still releases {took:?} after A changed the policy");
    assert!(took < Duration::from_secs(1));
    let body: Value = r.json().await.unwrap();
    assert!(body["type"].as_str().unwrap().ends_with("PolicyDeny"), "{body}");
    println!("B enforced A's new policy after {took:?}");
    // Deleting through B is seen by A.
    let r = http.delete(format!("{}/kbs/v0/resource/{RESOURCE}", b.url)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let allow = json!({"policy": B64URL.encode(builtin::RESOURCE_ALLOW_ALL)}).to_string().into_bytes();
    assert_eq!(admin_post(&http, &b.url, &token, "/kbs/v0/resource-policy", allow).await.status(), 200);
    let r = fetch(a.url.clone()).await;
    assert_eq!(r.status(), 404, "{}", r.text().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_gives_503_loses_nothing_and_recovers_without_restart() {
    let Some(s) = setup() else { return };
    let kbs = Replica::start(s.dir.path(), "a", &s.storage).unwrap();
    let admin = AdminSigningKey::from_pkcs8(&std::fs::read(s.dir.path().join("a-admin.pem")).unwrap()).unwrap();
    let token = admin_token(&admin);
    let http = reqwest::Client::new();
    provision(&http, &kbs.url, &token).await;
    let urls = vec![kbs.url.clone()];
    let att = attester();
    flow(&http, &urls, 0, &att).await.unwrap();

    // Load: flows and admin writes of distinct values; PostgreSQL stops in the middle.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let statuses = Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::<u16, usize>::new()));
    let mut tasks = Vec::new();
    for w in 0..6 {
        let (http, url, token, stop, acked, statuses) =
            (http.clone(), kbs.url.clone(), token.clone(), stop.clone(), acked.clone(), statuses.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = w;
            while !stop.load(Ordering::Relaxed) {
                let value = format!("value-{i}-").repeat(200).into_bytes();
                let r = http
                    .post(format!("{url}/kbs/v0/resource/outage/k/{i}"))
                    .bearer_auth(&token)
                    .body(value)
                    .send()
                    .await
                    .unwrap();
                *statuses.lock().unwrap().entry(r.status().as_u16()).or_default() += 1;
                if r.status() == 200 {
                    acked.lock().unwrap().push(i);
                } else {
                    assert_eq!(r.status(), 503, "{}", r.text().await.unwrap());
                }
                i += 6;
            }
        }));
    }
    for _ in 0..2 {
        let (http, urls, att, stop, statuses) =
            (http.clone(), urls.clone(), att.clone(), stop.clone(), statuses.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Err(e) = flow(&http, &urls, 0, &att).await {
                    assert!(e.contains("503"), "a flow failed otherwise than 503: {e}");
                    *statuses.lock().unwrap().entry(503).or_default() += 1;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    tokio::task::block_in_place(|| s.pg.pg_ctl_stop());
    tokio::time::sleep(Duration::from_millis(500)).await;

    // While the database is down: unhealthy, and requests are refused with a clear 503.
    let r = http.get(format!("{}/healthz", kbs.url)).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert!(body["type"].as_str().unwrap().ends_with("StorageUnavailable"), "{body}");
    assert!(body["detail"].as_str().unwrap().contains("PostgreSQL"), "{body}");
    let r = http.post(format!("{}/kbs/v0/auth", kbs.url)).body(AUTH_BODY).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let r = http.get(format!("{}/kbs/v0/resource/{RESOURCE}", kbs.url)).bearer_auth("x.y.z").send().await.unwrap();
    assert!(r.status() == 401 || r.status() == 503, "{}", r.status());

    tokio::task::block_in_place(|| s.pg.pg_ctl_start());
    // Service resumes without restarting the key broker.
    let back = Instant::now();
    loop {
        let r = http.get(format!("{}/healthz", kbs.url)).send().await.unwrap();
        if r.status() == 200 {
            break;
        }
        assert!(back.elapsed() < Duration::from_secs(10), "still unhealthy: {}", r.text().await.unwrap());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    flow(&http, &urls, 0, &att).await.unwrap();
    let statuses = statuses.lock().unwrap().clone();
    assert!(statuses.get(&503).copied().unwrap_or(0) > 0, "the outage was seen: {statuses:?}");
    println!("statuses during the run: {statuses:?}; healthy again {:?} after restart", back.elapsed());

    // Every acknowledged write is there, whole.
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 10);
    for i in &acked {
        let r = http
            .get(format!("{}/kbs/v0/resource/outage/k/{i}", kbs.url))
            .bearer_auth(flow(&http, &urls, 0, &att).await.unwrap())
            .send()
            .await
            .unwrap();
        // The emulated resource policy releases any resource to affirming evidence.
        assert_eq!(r.status(), 200, "acknowledged write {i} is missing");
        if *i > 30 {
            break; // a sample is enough for the HTTP path; the SQL check below covers all
        }
    }
    let rows = s.pg.query_bytes("SELECT key::bytea FROM kbs_records WHERE namespace = 'repository'").await;
    let keys: std::collections::BTreeSet<String> = rows.into_iter().map(|k| String::from_utf8(k).unwrap()).collect();
    for i in &acked {
        assert!(keys.contains(&format!("outage/k/{i}")), "acknowledged write {i} is missing");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_are_sealed_and_a_wrong_key_fails_at_start() {
    let Some(s) = setup() else { return };
    let kbs = Replica::start(s.dir.path(), "a", &s.storage).unwrap();
    let admin = AdminSigningKey::from_pkcs8(&std::fs::read(s.dir.path().join("a-admin.pem")).unwrap()).unwrap();
    let http = reqwest::Client::new();
    provision(&http, &kbs.url, &admin_token(&admin)).await;
    drop(kbs);
    // No value in the database contains the secret or a PEM/PKCS#8 key in clear.
    let values = s.pg.query_bytes("SELECT value FROM kbs_records").await;
    assert!(values.len() >= 5, "resource, policies, reference value and keys are stored");
    for v in &values {
        assert!(!v.windows(SECRET.len()).any(|w| w == SECRET), "a row holds the secret in clear");
        assert!(!v.windows(10).any(|w| w == b"-----BEGIN"), "a row holds a PEM in clear");
        assert!(!v.windows(7).any(|w| w == b"package"), "a row holds a Rego policy in clear");
    }
    // Another key: the broker refuses to start and says why.
    let other = storage_toml(&s.pg, &s.dir.path().join("other.key"), &[0x22; 32]);
    let err = Replica::start(s.dir.path(), "c", &other).err().expect("start with the wrong key must fail");
    assert!(err.contains("storage encryption key"), "{err}");
    // A bad URL is a clear start-up error too.
    let bad = s.storage.replace(&s.pg.url(), "postgresql://postgres@127.0.0.1:1/none?sslmode=disable");
    let err = Replica::start(s.dir.path(), "d", &bad).err().expect("no database, no start");
    assert!(err.contains("storage unavailable") && err.contains("PostgreSQL"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_untouched_for_their_lifetime_are_swept_in_one_statement() {
    use cloister_kbs::store::{Durability, Namespace, PgOptions, PgStore, ResourceStore};
    let Some(s) = setup() else { return };
    let options = PgOptions {
        url: s.pg.url(),
        encryption_key: zeroize::Zeroizing::new([0x44; 32]),
        pool_size: 2,
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
        ca_certs_pem: None,
    };
    let store = tokio::task::block_in_place(|| PgStore::open(&options)).unwrap();
    tokio::task::block_in_place(|| {
        for i in 0..5 {
            store.put(Namespace::Session, &format!("s{i}"), b"{}", Durability::Relaxed).unwrap();
        }
        store.put(Namespace::Repository, "r/t/old", b"kept", Durability::Durable).unwrap();
    });
    // Age three sessions (and the resource) by ten minutes, as if written then.
    let (client, conn) = tokio_postgres::connect(&s.pg.url(), tokio_postgres::NoTls).await.unwrap();
    let t = tokio::spawn(conn);
    client
        .execute(
            "UPDATE kbs_records SET updated_at = now() - interval '10 minutes'
             WHERE key IN ('s0', 's1', 's2', 'r/t/old')",
            &[],
        )
        .await
        .unwrap();
    drop(client);
    let _ = t.await;
    let swept = tokio::task::block_in_place(|| store.sweep_untouched(Namespace::Session, 301)).unwrap();
    assert_eq!(swept, Some((3, 2)));
    tokio::task::block_in_place(|| {
        assert_eq!(store.list(Namespace::Session).unwrap(), vec!["s3".to_owned(), "s4".to_owned()]);
        assert_eq!(&store.get(Namespace::Repository, "r/t/old").unwrap().unwrap()[..], b"kept");
        store.health().unwrap();
    });
}
