//! Throughput and latency of the key broker's attestation flow on loopback.
//!
//! An in-process `cloister-kbs` (plain HTTP, `FsStore` in a temporary directory, `/auth` rate
//! limit off) serves `cloister-kbs-client`s attesting with the emulated SEV-SNP platform. Client
//! and server run in the same process on separate Tokio runtimes (two workers each), so on a
//! small machine they share the cores.
//!
//! The run prints, in order:
//! 1. Criterion group `flow`: a full auth + attest + resource flow with a fresh client (P-256
//!    TEE key), a resource fetch with a cached Bearer token, and the physical floor of a flow —
//!    the server verifying one emulated SNP report (chain cached) and the client signing one.
//! 2. A sequential timing breakdown of one flow (HTTP steps, the broker without HTTP, and its
//!    components), with the ratios of the flow to the floor.
//! 3. A load phase: C concurrent clients (4, 16 and 64 for full flows; 16 and 64 for Bearer
//!    fetches) looping, with the goals judged both as measured and for the server alone.
//! 4. The same load driven by a minimal HTTP/1.1 client (wrk-style: one keep-alive connection,
//!    no pool or timers; the protocol steps, TEE key, evidence and decryption, are still done),
//!    which leaves the cores to the server; the goals are judged as measured.
//!
//! `cargo bench -p cloister-kbs --bench flow`; `CLOISTER_BENCH_QUICK=1` makes everything short
//! (Criterion: 10 samples, 1 s; load: 1 s per point) for CI smoke tests. `CLOISTER_BENCH_LOAD_SECS=N`
//! sets the length of each load point; `CLOISTER_BENCH_ONLY=load` skips Criterion and the
//! breakdown (`=breakdown` skips Criterion only).
//!
//! Because the load generator shares the cores, each load point also reports the CPU time of the
//! server's threads per operation and what that makes the server's own capacity on the machine's
//! cores (cores ÷ server CPU per operation): the rate the server would sustain with the clients
//! elsewhere. The emulated PSP signs reports on a thread of its own, as the firmware runs on its
//! own processor, so the client's CPU per flow is what the client library itself costs; it is
//! compared with the server's (the goal: the client adds at most 10%).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD as B64URL};
use cloister_emulate::snp::{EmulatedSnp, SnpReportRequest};
use cloister_evidence::snp::Product;
use cloister_kbs::broker::{Credential, ResourcePath};
use cloister_kbs::evidence::Verifiers;
use cloister_kbs::server::{bind, prepare, serve};
use cloister_kbs::store::{Durability, Namespace};
use cloister_kbs::{Broker, Config, FsStore, ResourceStore};
use cloister_kbs_client::{Attester, ClientOptions, KbsClient, TeeKeyKind};
use cloister_kbs_protocol::{HashAlgorithm, TeeKeyPair, jwe, runtime_data_digest};
use cloister_policy::{Policy, builtin};
use cloister_verifier::appraisal::{AppraisalInput, AttestationPolicy, appraise};
use cloister_verifier::ear::{Ear, EarSigner, TrustedKeys, verify_jws};
use cloister_verifier::snp::{SnpCertificates, SnpVerifier, TrustAnchors, VerifyOptions};
use criterion::{Criterion, black_box};
use serde_json::{Value, json};
use tokio::runtime::Runtime;

/// The allocator of the `cloister-kbs` and `cloister` binaries, so that the in-process server
/// and clients allocate as the real ones do.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const MEASUREMENT: [u8; 48] = [0x5a; 48];
const RESOURCE: &str = "app/key/1";
const SECRET: &[u8] = b"emulated secret\x00\xff";

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// Short runs for CI (`CLOISTER_BENCH_QUICK=1`, or Criterion's `--test` mode).
fn quick() -> bool {
    std::env::var("CLOISTER_BENCH_QUICK").is_ok_and(|v| v == "1" || v == "true")
        || std::env::args().any(|a| a == "--test")
}

/// `CLOISTER_BENCH_ONLY`: `load` (load phase only), `breakdown` (breakdown and load), unset: all.
fn only() -> Option<String> {
    std::env::var("CLOISTER_BENCH_ONLY").ok().filter(|v| !v.is_empty())
}

fn runtime(name: &str) -> Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).thread_name(name).enable_all().build().unwrap()
}

/// The in-process broker.
struct Server {
    url: String,
    broker: Arc<Broker>,
    dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    fn start(rt: &Runtime, platform: &EmulatedSnp) -> Server {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let ark = dir.path().join("emulated-ark.der");
        std::fs::write(&ark, platform.ark_der()).unwrap();
        // max_sessions is raised so that the load phase measures the flow, not the session cap.
        let toml = format!(
            "[http_server]\nsockets = [\"127.0.0.1:0\"]\ninsecure_http = true\nauth_rate_limit = 0\n\
             max_sessions = 100000000\n\
             [[attestation_service.verifier.snp_emulated_roots]]\ncert = \"{}\"\nsha256 = \"{}\"\nproduct = \"Milan\"\n",
            ark.display(),
            platform.ark_sha256_hex()
        );
        let config = Config::from_toml(&toml).unwrap();
        let prepared = prepare(&config, &dir.path().join("data")).unwrap();
        let broker = prepared.state.broker.clone();
        let listeners = bind(&config).unwrap();
        let url = format!("http://{}", listeners[0].local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = rt.spawn(async move {
            serve(prepared, listeners, async move {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        // Policies, reference value and the secret, through the broker's admin operations.
        let att =
            json!({"type": "rego", "policy_id": "default", "policy": B64URL.encode(builtin::ATTESTATION_EMULATED_CPU)});
        broker.set_attestation_policy(att.to_string().as_bytes()).unwrap();
        let res = json!({"policy": B64URL.encode(builtin::RESOURCE_EMULATED)});
        broker.set_resource_policy(res.to_string().as_bytes()).unwrap();
        let refs = json!({"snp_launch_measurement": [hex::encode(MEASUREMENT)]});
        broker.register_reference_values(refs.to_string().as_bytes(), now()).unwrap();
        broker.set_resource(&ResourcePath::parse(RESOURCE).unwrap(), SECRET).unwrap();
        Server { url, broker, dir, stop: Some(tx), task: Some(task) }
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("emulated-ark.der")
    }

    fn stop(mut self, rt: &Runtime) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = rt.block_on(t);
        }
    }
}

/// Name of the emulated PSP's thread.
const PSP_THREAD: &str = "emulated-psp";

/// Wall time spent waiting for the emulated PSP (request sent to report received), in ns: the
/// TEE's part of a round trip, which real hardware spends on its own processor.
static PSP_WAIT_NS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The emulated SNP platform as a guest sees real hardware: the PSP, a processor of its own,
/// signs reports on its own thread ([`PSP_THREAD`], one request at a time like the firmware)
/// while the guest waits, so its CPU is counted apart from the client's. The client side
/// builds the evidence JSON as `EmulatedSnpAttester` does.
struct PspAttester {
    requests: std::sync::mpsc::Sender<(SnpReportRequest, std::sync::mpsc::SyncSender<Vec<u8>>)>,
    cert_table: Vec<u8>,
}

impl PspAttester {
    fn new(platform: Arc<EmulatedSnp>) -> PspAttester {
        let (tx, rx) = std::sync::mpsc::channel::<(SnpReportRequest, std::sync::mpsc::SyncSender<Vec<u8>>)>();
        let cert_table = platform.cert_table();
        std::thread::Builder::new()
            .name(PSP_THREAD.into())
            .spawn(move || {
                for (req, reply) in rx {
                    let _ = reply.send(platform.report(&req).unwrap());
                }
            })
            .unwrap();
        PspAttester { requests: tx, cert_table }
    }
}

impl Attester for PspAttester {
    fn tee(&self) -> cloister_kbs_protocol::Tee {
        cloister_kbs_protocol::Tee::Snp
    }

    fn evidence(&self, digest: &[u8]) -> Result<Value, cloister_kbs_client::AttesterError> {
        let rd = cloister_kbs_protocol::binding::fit::<64>(digest);
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let asked = Instant::now();
        self.requests.send((SnpReportRequest::new(rd).with_measurement(MEASUREMENT), tx)).unwrap();
        let report = rx.recv().unwrap();
        PSP_WAIT_NS.fetch_add(asked.elapsed().as_nanos() as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(json!({"report": STANDARD.encode(report), "cert_table": STANDARD.encode(&self.cert_table)}))
    }
}

fn client(url: &str, attester: &Arc<dyn Attester>) -> KbsClient {
    KbsClient::new(url, attester.clone(), ClientOptions { key: TeeKeyKind::P256, ..ClientOptions::default() }).unwrap()
}

async fn full_flow(url: &str, attester: &Arc<dyn Attester>) {
    let c = client(url, attester);
    let s = c.get_resource(RESOURCE).await.unwrap();
    assert_eq!(&s[..], SECRET);
}

/// A minimal HTTP/1.1 client, as load generators such as wrk or hey are: one keep-alive
/// connection, each request written whole, each response read by its `Content-Length`. No pool,
/// no per-request timer, no URL parsing: what a request costs the client is its two system calls
/// and a few string operations, so the server's throughput shows with the load generator on the
/// same cores. The protocol steps are the real ones (fresh TEE key, evidence, JWE decrypted).
struct RawHttp {
    stream: tokio::net::TcpStream,
    host: String,
    buf: Vec<u8>,
}

/// A response: status, the `kbs-session-id` cookie if set, and the body.
struct RawResponse {
    status: u16,
    cookie: Option<String>,
    body: Vec<u8>,
}

impl RawHttp {
    async fn connect(url: &str) -> RawHttp {
        let host = url.trim_start_matches("http://").to_owned();
        let stream = tokio::net::TcpStream::connect(&host).await.unwrap();
        stream.set_nodelay(true).unwrap();
        RawHttp { stream, host, buf: Vec::with_capacity(16 * 1024) }
    }

    async fn send(&mut self, method: &str, path: &str, header: Option<(&str, &str)>, body: &[u8]) -> RawResponse {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut req = format!("{method} {path} HTTP/1.1\r\nhost: {}\r\ncontent-length: {}\r\n", self.host, body.len());
        if let Some((name, value)) = header {
            req.push_str(name);
            req.push_str(": ");
            req.push_str(value);
            req.push_str("\r\n");
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body);
        self.stream.write_all(&bytes).await.unwrap();
        self.buf.clear();
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 8192];
            let n = self.stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed mid-response");
            self.buf.extend_from_slice(&chunk[..n]);
        };
        let head = std::str::from_utf8(&self.buf[..head_end]).unwrap().to_owned();
        let mut lines = head.split("\r\n");
        let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse::<u16>().unwrap();
        let (mut len, mut cookie) = (None, None);
        for line in lines {
            let Some((name, value)) = line.split_once(':') else { continue };
            let value = value.trim();
            assert!(
                !name.eq_ignore_ascii_case("transfer-encoding"),
                "the raw client reads Content-Length bodies only, got {value}"
            );
            if name.eq_ignore_ascii_case("content-length") {
                len = Some(value.parse::<usize>().unwrap());
            } else if name.eq_ignore_ascii_case("set-cookie") {
                cookie = value.split(';').next().map(str::to_owned);
            }
        }
        let len = len.expect("response without Content-Length");
        while self.buf.len() < head_end + len {
            let mut chunk = [0u8; 8192];
            let n = self.stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed mid-body");
            self.buf.extend_from_slice(&chunk[..n]);
        }
        RawResponse { status, cookie, body: self.buf[head_end..head_end + len].to_vec() }
    }
}

/// `/auth` and `/attest` over `c` with a fresh P-256 TEE key; returns the session cookie, the
/// token and the key. The evidence is produced off the async workers, as `KbsClient` does.
async fn raw_attest(c: &mut RawHttp, attester: &Arc<dyn Attester>) -> Option<(String, String, TeeKeyPair)> {
    let key = TeeKeyPair::generate_p256().unwrap();
    let r = c.send("POST", "/kbs/v0/auth", None, AUTH_BODY.as_bytes()).await;
    if r.status != 200 {
        return None;
    }
    let cookie = r.cookie?;
    let nonce = serde_json::from_slice::<Value>(&r.body).ok()?["nonce"].as_str()?.to_owned();
    let (a, k) = (attester.clone(), key.public().clone());
    let body = tokio::task::spawn_blocking(move || {
        let d = runtime_data_digest(&nonce, &k, "", HashAlgorithm::Sha384);
        let evidence = a.evidence(&d).unwrap();
        json!({"init-data": null, "runtime-data": {"nonce": nonce, "tee-pubkey": k},
               "tee-evidence": {"primary_evidence": evidence, "additional_evidence": ""}})
        .to_string()
    })
    .await
    .unwrap();
    let r = c.send("POST", "/kbs/v0/attest", Some(("cookie", &cookie)), body.as_bytes()).await;
    if r.status != 200 {
        return None;
    }
    let token = serde_json::from_slice::<Value>(&r.body).ok()?["token"].as_str()?.to_owned();
    Some((cookie, token, key))
}

/// One whole flow with the raw client on a new connection: auth, attest, the resource with the
/// session cookie, decrypted and compared.
async fn raw_flow(url: &str, attester: &Arc<dyn Attester>) -> bool {
    let mut c = RawHttp::connect(url).await;
    let Some((cookie, _, key)) = raw_attest(&mut c, attester).await else { return false };
    let r = c.send("GET", &format!("/kbs/v0/resource/{RESOURCE}"), Some(("cookie", &cookie)), b"").await;
    r.status == 200
        && serde_json::from_slice::<cloister_kbs_protocol::Response>(&r.body)
            .is_ok_and(|jwe| key.decrypt(&jwe).is_ok_and(|s| &s[..] == SECRET))
}

/// Everything the floor benchmarks and the breakdown need, prepared once.
struct Floor {
    platform: Arc<EmulatedSnp>,
    verifier: SnpVerifier,
    certs: SnpCertificates,
    report: Vec<u8>,
    request: SnpReportRequest,
}

impl Floor {
    fn new(platform: Arc<EmulatedSnp>) -> Floor {
        let anchors =
            TrustAnchors::empty().with_root(Product::Milan, platform.ark_der(), &platform.ark_sha256_hex()).unwrap();
        let verifier = SnpVerifier::new(anchors);
        let certs = SnpCertificates::from_cert_table(&platform.cert_table()).unwrap();
        let request = SnpReportRequest::new([7; 64]).with_measurement(MEASUREMENT);
        let report = platform.report(&request).unwrap();
        let f = Floor { platform, verifier, certs, report, request };
        // Warm-up: the chain is verified once and cached.
        f.verify();
        assert_eq!(f.verifier.cache_len(), 1);
        f
    }

    fn verify(&self) {
        black_box(self.verifier.verify(&self.report, &self.certs, &VerifyOptions::at(now())).unwrap());
    }

    fn sign(&self) -> Vec<u8> {
        self.platform.report(&self.request).unwrap()
    }
}

fn criterion_benches(c: &mut Criterion, crt: &Runtime, url: &str, attester: &Arc<dyn Attester>, floor: &Floor) {
    let mut g = c.benchmark_group("flow");
    g.bench_function("full_flow_emulated_snp_p256", |b| b.iter(|| crt.block_on(full_flow(url, attester))));
    let cached = client(url, attester);
    crt.block_on(cached.attest()).unwrap();
    g.bench_function("resource_cached_bearer", |b| {
        b.iter(|| black_box(crt.block_on(cached.get_resource(RESOURCE)).unwrap()))
    });
    g.bench_function("floor_server_snp_verify_cached_chain", |b| b.iter(|| floor.verify()));
    g.bench_function("floor_client_emulated_report_sign", |b| b.iter(|| black_box(floor.sign())));
    g.finish();
}

/// Median of `n` timed runs of `f` (after two untimed ones).
fn median_of(n: usize, mut f: impl FnMut()) -> Duration {
    f();
    f();
    let mut v: Vec<Duration> = (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    v.sort();
    v[v.len() / 2]
}

/// Like [`median_of`], with an untimed `setup` whose output the timed part consumes.
fn median_with<S>(n: usize, mut setup: impl FnMut() -> S, mut f: impl FnMut(S)) -> Duration {
    let mut v: Vec<Duration> = (0..n + 2)
        .map(|_| {
            let s = setup();
            let t = Instant::now();
            f(s);
            t.elapsed()
        })
        .collect();
    v.drain(..2);
    v.sort();
    v[v.len() / 2]
}

fn us(d: Duration) -> String {
    format!("{:>9.1} µs", d.as_secs_f64() * 1e6)
}

/// An attest body for a fresh session of `broker` (untimed preparation).
fn attest_body(nonce: &str, key: &TeeKeyPair, attester: &Arc<dyn Attester>) -> String {
    let d = runtime_data_digest(nonce, key.public(), "", HashAlgorithm::Sha384);
    let evidence = attester.evidence(&d).unwrap();
    json!({"init-data": null, "runtime-data": {"nonce": nonce, "tee-pubkey": key.public()},
           "tee-evidence": {"primary_evidence": evidence, "additional_evidence": ""}})
    .to_string()
}

const AUTH_BODY: &str = r#"{"version":"0.4.0","tee":"snp","extra-params":{"supported-hash-algorithms":["sha384"]}}"#;

/// Sequential timings of the pieces of one flow; returns nothing, prints a table.
fn breakdown(srt: &Runtime, crt: &Runtime, srv: &Server, attester: &Arc<dyn Attester>, floor: &Floor) {
    let n = if quick() { 30 } else { 300 };
    let url = srv.url.as_str();
    let broker = &srv.broker;
    let path = ResourcePath::parse(RESOURCE).unwrap();
    let q = BTreeMap::new();
    println!("\n== Sequential breakdown (median of {n}; one client, idle server) ==");

    // The floor and the flows, measured the same way so that their ratios are comparable.
    let verify = median_of(n * 4, || floor.verify());
    let sign = median_of(n * 4, || {
        black_box(floor.sign());
    });
    let flow = median_of(n, || crt.block_on(full_flow(url, attester)));
    let cached = client(url, attester);
    crt.block_on(cached.attest()).unwrap();
    let fetch = median_of(n * 2, || {
        black_box(crt.block_on(cached.get_resource(RESOURCE)).unwrap());
    });
    // What the client adds to a round trip: the wall time of sequential flows (a fresh client,
    // key and connection each, as a booting guest) minus the server's own handling time (its
    // request-duration histogram) minus the wait for the emulated PSP. The rest is the client
    // library, both sides' kernel TCP and the server's HTTP parsing: an upper bound. The same for
    // the minimal client (the wrk-style one below, doing the same protocol steps) is what any
    // client pays on this machine; the difference is the client library's own share.
    let (kbs, raw) = client_added(crt, srv, n, url, attester);
    for (what, a) in [("KbsClient", &kbs), ("minimal client", &raw)] {
        println!(
            "  round trip, {what:<14}: {:.0} µs per flow = server handling {:.0} + emulated PSP {:.0} + client and \
             transport {:.0} µs ({:.1}%)",
            a.wall,
            a.server,
            a.psp,
            a.added(),
            100.0 * a.added() / a.server
        );
    }
    // The physical floor under both: a flow is a TCP connect and three request/response round
    // trips between the two runtimes' threads.
    let (rtt, connect) = loopback_floor(srt, crt, n * 2);
    let transport = connect + 3.0 * rtt;
    println!(
        "  floor: loopback TCP between the runtimes: connect {connect:.0} µs, 1-byte round trip {rtt:.0} µs; \
         connect + 3 round trips = {transport:.0} µs = {:.1}% of the server's handling",
        100.0 * transport / kbs.server
    );
    println!(
        "  goal: the client adds <= 10% to the server's processing time: {:.1}%, {}",
        100.0 * kbs.added() / kbs.server,
        if kbs.added() <= 0.10 * kbs.server { "MET" } else { "NOT MET" }
    );
    let own = kbs.added() - raw.added();
    println!(
        "      of which beyond the minimal client (the library's own share): {own:.0} µs = {:.1}%: {}",
        100.0 * own / kbs.server,
        if own <= 0.10 * kbs.server { "within 10%" } else { "over 10%" }
    );
    let floor_sum = verify + sign;
    println!("  floor: server SNP verify (chain cached)   {}", us(verify));
    println!("  floor: client emulated report signing     {}", us(sign));
    println!("  floor: sum                                {}", us(floor_sum));
    println!(
        "  full flow (fresh KbsClient, P-256)        {}   = {:.1}x the floor sum, {:.1}x the server verify",
        us(flow),
        flow.as_secs_f64() / floor_sum.as_secs_f64(),
        flow.as_secs_f64() / verify.as_secs_f64()
    );
    println!(
        "  resource fetch, cached Bearer             {}   = {:.1}x the server verify",
        us(fetch),
        fetch.as_secs_f64() / verify.as_secs_f64()
    );

    // HTTP, step by step, over one keep-alive connection.
    println!("  -- over HTTP (keep-alive reqwest client) --");
    let http = reqwest::Client::new();
    let healthz = median_of(n * 2, || {
        crt.block_on(async { http.get(format!("{url}/healthz")).send().await.unwrap().bytes().await.unwrap() });
    });
    println!("  GET /healthz (HTTP round-trip floor)      {}", us(healthz));
    let auth_http = median_of(n, || {
        crt.block_on(async {
            let r = http.post(format!("{url}/kbs/v0/auth")).body(AUTH_BODY).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.bytes().await.unwrap();
        });
    });
    println!("  POST /auth                                {}", us(auth_http));
    let mut token = String::new();
    let attest_http = median_with(
        n,
        || {
            crt.block_on(async {
                let r = http.post(format!("{url}/kbs/v0/auth")).body(AUTH_BODY).send().await.unwrap();
                let cookie = r.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
                let nonce = r.json::<Value>().await.unwrap()["nonce"].as_str().unwrap().to_owned();
                let key = TeeKeyPair::generate_p256().unwrap();
                let body = attest_body(&nonce, &key, attester);
                (cookie, body)
            })
        },
        |(cookie, body)| {
            token = crt.block_on(async {
                let r = http.post(format!("{url}/kbs/v0/attest")).header("cookie", cookie).body(body).send().await;
                let r = r.unwrap();
                assert_eq!(r.status(), 200);
                r.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned()
            });
        },
    );
    println!("  POST /attest (evidence ready)             {}", us(attest_http));
    let key_gen = median_of(n * 4, || {
        black_box(TeeKeyPair::generate_p256().unwrap());
    });
    let client_new = median_of(n, || {
        black_box(client(url, attester));
    });
    println!(
        "  client: KbsClient::new (reqwest + P-256)  {}   (TeeKeyPair::generate_p256 alone {})",
        us(client_new),
        us(key_gen)
    );
    let evidence = median_of(n * 2, || {
        black_box(attester.evidence(&[9; 48]).unwrap());
    });
    println!("  client: attester.evidence (sign + JSON)   {}", us(evidence));

    // The broker without HTTP.
    println!("  -- broker without HTTP (same FsStore) --");
    let b_auth = median_of(n, || {
        black_box(broker.auth(AUTH_BODY.as_bytes(), now()).unwrap());
    });
    println!("  Broker::auth                              {}", us(b_auth));
    let mut tee_key = None;
    let b_attest = median_with(
        n,
        || {
            let (id, ch, _) = broker.auth(AUTH_BODY.as_bytes(), now()).unwrap();
            let key = TeeKeyPair::generate_p256().unwrap();
            let body = attest_body(&ch.nonce, &key, attester);
            (id, body, key)
        },
        |(id, body, key)| {
            token = broker.attest(&id, body.as_bytes(), now()).unwrap();
            tee_key = Some(key);
        },
    );
    println!("  Broker::attest                            {}", us(b_attest));
    let cred = Credential::Bearer(token.clone());
    let b_get = median_of(n * 2, || {
        black_box(broker.get_resource(&cred, &path, &q, now()).unwrap());
    });
    println!("  Broker::get_resource (Bearer)             {}", us(b_get));

    // Components of Broker::attest and Broker::get_resource.
    println!("  -- components --");
    let cfg = Config::from_toml(&format!(
        "[[attestation_service.verifier.snp_emulated_roots]]\ncert = \"{}\"\nsha256 = \"{}\"\nproduct = \"Milan\"\n",
        srv.config_path().display(),
        floor.platform.ark_sha256_hex()
    ))
    .unwrap();
    let verifiers = Verifiers::from_config(&cfg.attestation_service.verifier).unwrap();
    let ev = attester.evidence(&[3; 48]).unwrap();
    let ev_text = ev.to_string();
    let parse = median_of(n * 2, || {
        black_box(serde_json::from_str::<Value>(&ev_text).unwrap());
    });
    println!("  parse evidence JSON ({:>5} bytes)         {}", ev_text.len(), us(parse));
    let full_verify = median_of(n * 2, || {
        black_box(verifiers.verify(cloister_kbs_protocol::Tee::Snp, &ev, now()).unwrap());
    });
    println!("  Verifiers::verify (base64, cert table, SNP){}", us(full_verify));
    let verified = verifiers.verify(cloister_kbs_protocol::Tee::Snp, &ev, now()).unwrap();
    let refs_t = median_of(n * 2, || {
        black_box(cloister_kbs::rvps::all(broker.store().as_ref(), now()).unwrap());
    });
    println!("  rvps::all (list + read reference values)  {}", us(refs_t));
    let refs = cloister_kbs::rvps::all(broker.store().as_ref(), now()).unwrap();
    let apolicy = AttestationPolicy::new("default", builtin::ATTESTATION_EMULATED_CPU).unwrap();
    let key = tee_key.unwrap();
    let input = AppraisalInput {
        tee: verified.tee_key.to_owned(),
        claims: verified.claims.clone(),
        report_data: Some(STANDARD.encode([3u8; 48])),
        init_data: None,
        init_data_claims: None,
        runtime_data_claims: Some(json!({"nonce": "n", "tee-pubkey": key.public()})),
    };
    let appraisal = median_of(n, || {
        black_box(appraise(&apolicy, &input, &refs).unwrap());
    });
    println!("  appraise (attestation Rego)               {}", us(appraisal));
    let submod = appraise(&apolicy, &input, &refs).unwrap();
    let (signer, _) = EarSigner::generate().unwrap();
    let ear = Ear::new(now(), 300, submod);
    let ear_sign = median_of(n * 2, || {
        black_box(signer.sign(&ear).unwrap());
    });
    println!("  EAR sign (ES256 + JSON)                   {}", us(ear_sign));
    let fs = FsStore::open(srv.dir.path().join("bench-store")).unwrap();
    let mut i = 0u64;
    let put = median_of(n * 2, || {
        i += 1;
        fs.put(Namespace::Session, &format!("{i:032x}"), &[b'x'; 300], Durability::Relaxed).unwrap();
    });
    let get = median_of(n * 2, || {
        black_box(fs.get(Namespace::Session, &format!("{:032x}", i / 2 + 1)).unwrap());
    });
    println!("  FsStore put (Relaxed, session-sized)      {}", us(put));
    println!("  FsStore get                               {}", us(get));
    let trusted = TrustedKeys { jwks: vec![broker.token_jwk().clone()], insecure_header_jwk: false };
    let jws = median_of(n * 2, || {
        black_box(verify_jws(&token, &trusted, now()).unwrap());
    });
    println!("  verify_jws (token, ES256)                 {}", us(jws));
    let claims = verify_jws(&token, &trusted, now()).unwrap();
    let rpolicy = Policy::new("resource", builtin::RESOURCE_EMULATED).unwrap();
    let data = json!({"plugin": "resource", "resource-path": path.0, "query": {}});
    assert!(rpolicy.allows(&claims, &data).unwrap());
    let allows = median_of(n, || {
        black_box(rpolicy.allows(&claims, &data).unwrap());
    });
    println!("  resource Rego (Policy::allows)            {}", us(allows));
    let enc = median_of(n * 2, || {
        black_box(jwe::encrypt(key.public(), SECRET).unwrap());
    });
    println!("  JWE encrypt (ECDH-ES+A256KW)              {}", us(enc));
    let msg = jwe::encrypt(key.public(), SECRET).unwrap();
    let dec = median_of(n * 2, || {
        black_box(key.decrypt(&msg).unwrap());
    });
    println!("  JWE decrypt (client)                      {}", us(dec));
}

/// Per-flow wall time of `n` sequential flows and how it splits (µs).
struct Added {
    wall: f64,
    server: f64,
    psp: f64,
}

impl Added {
    /// What is neither the server's handling nor the emulated PSP: client and transport.
    fn added(&self) -> f64 {
        self.wall - self.server - self.psp
    }
}

impl std::ops::AddAssign for Added {
    fn add_assign(&mut self, o: Added) {
        self.wall += o.wall;
        self.server += o.server;
        self.psp += o.psp;
    }
}

/// One flow and how its wall time splits (µs).
fn one_added<Fut: std::future::Future<Output = ()>>(crt: &Runtime, srv: &Server, flow: Fut) -> Added {
    let (server0, requests0) = srv.broker.metrics.request_durations();
    let psp0 = PSP_WAIT_NS.load(std::sync::atomic::Ordering::Relaxed);
    let t = Instant::now();
    crt.block_on(flow);
    let wall = t.elapsed().as_secs_f64();
    let (server1, requests1) = srv.broker.metrics.request_durations();
    let psp = (PSP_WAIT_NS.load(std::sync::atomic::Ordering::Relaxed) - psp0) as f64 * 1e-9;
    assert_eq!(requests1 - requests0, 3, "three requests per flow");
    Added { wall: wall * 1e6, server: (server1 - server0) * 1e6, psp: psp * 1e6 }
}

/// `n` sequential flows of each client, alternating so that the machine's drifts hit both
/// alike; the per-flow means of `KbsClient`'s and the minimal client's.
fn client_added(crt: &Runtime, srv: &Server, n: usize, url: &str, attester: &Arc<dyn Attester>) -> (Added, Added) {
    let zero = || Added { wall: 0.0, server: 0.0, psp: 0.0 };
    let (mut kbs, mut raw) = (zero(), zero());
    for _ in 0..n {
        kbs += one_added(crt, srv, full_flow(url, attester));
        raw += one_added(crt, srv, async { assert!(raw_flow(url, attester).await) });
    }
    let mean = |a: Added| Added { wall: a.wall / n as f64, server: a.server / n as f64, psp: a.psp / n as f64 };
    (mean(kbs), mean(raw))
}

/// Median 1-byte round trip and median connect+accept (µs) over loopback TCP, from a task on
/// `crt` to an echo task on `srt`: what any client's requests cost in transport on this machine.
fn loopback_floor(srt: &Runtime, crt: &Runtime, n: usize) -> (f64, f64) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = srt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    let echo = srt.spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            s.set_nodelay(true).unwrap();
            tokio::spawn(async move {
                let mut b = [0u8; 1];
                while let Ok(1) = s.read(&mut b).await {
                    if s.write_all(&b).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let connect = median_of(n, || {
        crt.block_on(async {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            // Connected once the echo task answers: accepted, as a server must.
            s.set_nodelay(true).unwrap();
            s.write_all(b"c").await.unwrap();
            let mut b = [0u8; 1];
            s.read_exact(&mut b).await.unwrap();
        })
    });
    let mut s = crt.block_on(tokio::net::TcpStream::connect(addr)).unwrap();
    s.set_nodelay(true).unwrap();
    let rtt = median_of(n, || {
        crt.block_on(async {
            s.write_all(b"r").await.unwrap();
            let mut b = [0u8; 1];
            s.read_exact(&mut b).await.unwrap();
        })
    });
    echo.abort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    // The connect sample includes one round trip; report the connect alone.
    (us(rtt), (us(connect) - us(rtt)).max(0.0))
}

/// CPU seconds used so far: user and system time of the server runtime's threads and of the
/// client runtime's threads (workers and blocking threads alike), and the whole process (Linux
/// `/proc`; zeros elsewhere). Threads are told apart by their names.
#[derive(Clone, Copy, Default)]
struct Cpu {
    server: [f64; 2],
    client: [f64; 2],
    /// The emulated PSP's thread (see [`PspAttester`]).
    psp: f64,
    process: f64,
}

impl std::ops::Sub for Cpu {
    type Output = Cpu;
    fn sub(self, o: Cpu) -> Cpu {
        Cpu {
            server: [self.server[0] - o.server[0], self.server[1] - o.server[1]],
            client: [self.client[0] - o.client[0], self.client[1] - o.client[1]],
            psp: self.psp - o.psp,
            process: self.process - o.process,
        }
    }
}

impl Cpu {
    fn server(&self) -> f64 {
        self.server[0] + self.server[1]
    }

    fn client(&self) -> f64 {
        self.client[0] + self.client[1]
    }
}

fn cpu_split() -> Cpu {
    const TICK: f64 = 0.01; // USER_HZ is 100 on Linux
    let ticks = |stat: &str| -> Option<(String, [f64; 2])> {
        let (head, rest) = stat.rsplit_once(')')?;
        let name = head.split_once('(')?.1.to_owned();
        let f: Vec<&str> = rest.split_whitespace().collect();
        // After "pid (comm)": state is field 0 here; utime and stime are fields 11 and 12.
        let user = f.get(11)?.parse::<f64>().ok()?;
        let sys = f.get(12)?.parse::<f64>().ok()?;
        Some((name, [user * TICK, sys * TICK]))
    };
    let mut out = Cpu::default();
    if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
        for e in dir.flatten() {
            if let Some((name, t)) = std::fs::read_to_string(e.path().join("stat")).ok().as_deref().and_then(ticks) {
                let side = if name.starts_with("kbs-server") {
                    &mut out.server
                } else if name.starts_with("kbs-client") {
                    &mut out.client
                } else {
                    if name.starts_with(PSP_THREAD) {
                        out.psp += t[0] + t[1];
                    }
                    continue;
                };
                side[0] += t[0];
                side[1] += t[1];
            }
        }
    }
    if let Some((_, t)) = std::fs::read_to_string("/proc/self/stat").ok().as_deref().and_then(ticks) {
        out.process = t[0] + t[1];
    }
    out
}

/// Result of one load point.
struct Load {
    ops: usize,
    errors: usize,
    elapsed: Duration,
    lat: Vec<Duration>,
    /// CPU seconds during the point.
    cpu: Cpu,
}

impl Load {
    fn pct(&self, p: f64) -> Duration {
        if self.lat.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.lat.len() as f64 * p).ceil() as usize).clamp(1, self.lat.len()) - 1;
        self.lat[i]
    }

    fn rate(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }
}

/// `concurrency` tasks looping `op` for `dur`.
fn run_load<F, Fut>(crt: &Runtime, concurrency: usize, dur: Duration, op: F) -> Load
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let op = Arc::new(op);
    let cpu0 = cpu_split();
    let mut load = crt.block_on(async move {
        let start = Instant::now();
        let deadline = start + dur;
        let tasks: Vec<_> = (0..concurrency)
            .map(|i| {
                let op = op.clone();
                tokio::spawn(async move {
                    let (mut lat, mut errors) = (Vec::new(), 0usize);
                    while Instant::now() < deadline {
                        let t = Instant::now();
                        if op(i).await {
                            lat.push(t.elapsed());
                        } else {
                            errors += 1;
                        }
                    }
                    (lat, errors)
                })
            })
            .collect();
        let (mut lat, mut errors) = (Vec::new(), 0);
        for t in tasks {
            let (l, e) = t.await.unwrap();
            lat.extend(l);
            errors += e;
        }
        let elapsed = start.elapsed();
        lat.sort();
        Load { ops: lat.len(), errors, elapsed, lat, cpu: Cpu::default() }
    });
    load.cpu = cpu_split() - cpu0;
    load
}

fn print_load(what: &str, c: usize, l: &Load) {
    println!(
        "  {what:<22} C={c:<3} {:>8.0}/s   p50 {:>7.2} ms   p99 {:>7.2} ms   max {:>7.2} ms   ({} ok, {} errors, {:.1} s)",
        l.rate(),
        l.pct(0.50).as_secs_f64() * 1e3,
        l.pct(0.99).as_secs_f64() * 1e3,
        l.lat.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        l.ops,
        l.errors,
        l.elapsed.as_secs_f64()
    );
    let per_op = |t: f64| t / l.ops.max(1) as f64 * 1e6;
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64;
    println!(
        "      CPU: {:.2} of the cores busy; per op {:.0} µs (server threads {:.0} µs = {:.0} user + {:.0} system, \
         client threads {:.0} µs = {:.0} user + {:.0} system)",
        l.cpu.process / l.elapsed.as_secs_f64(),
        per_op(l.cpu.process),
        per_op(l.cpu.server()),
        per_op(l.cpu.server[0]),
        per_op(l.cpu.server[1]),
        per_op(l.cpu.client()),
        per_op(l.cpu.client[0]),
        per_op(l.cpu.client[1])
    );
    if l.cpu.server() > 0.0 {
        println!(
            "      server alone: {:.3} ms CPU per op = {:.0} ops/s on {cores:.0} cores",
            per_op(l.cpu.server()) / 1e3,
            server_alone_rate(l)
        );
    }
}

/// What the server's threads would sustain on all cores: cores ÷ server CPU per operation.
fn server_alone_rate(l: &Load) -> f64 {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64;
    if l.cpu.server() > 0.0 { cores * l.ops as f64 / l.cpu.server() } else { 0.0 }
}

fn load_phase(crt: &Runtime, url: &str, attester: &Arc<dyn Attester>) {
    let secs = std::env::var("CLOISTER_BENCH_LOAD_SECS")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0);
    let dur = Duration::from_secs_f64(secs.unwrap_or(if quick() { 1.0 } else { 5.0 }));
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    println!(
        "\n== Load ({:.0} s per point; {cores} cores shared by client and server in one process: \
         server runtime 2 workers, client runtime 2 workers) ==",
        dur.as_secs_f64()
    );
    for c in [4usize, 16, 64] {
        let (u, a) = (url.to_owned(), attester.clone());
        let l = run_load(crt, c, dur, move |_| {
            let (u, a) = (u.clone(), a.clone());
            async move {
                let c = client(&u, &a);
                matches!(c.get_resource(RESOURCE).await, Ok(s) if &s[..] == SECRET)
            }
        });
        print_load("full flow (new client)", c, &l);
        let per_op = |t: f64| t / l.ops.max(1) as f64 * 1e6;
        let share = l.cpu.client() / l.cpu.server().max(f64::MIN_POSITIVE);
        println!(
            "      client: {:.0} µs CPU per flow = {:.1}% of the server's {:.0} µs (user space: {:.0} µs = {:.1}% of \
             {:.0} µs); the emulated PSP's signing: {:.0} µs",
            per_op(l.cpu.client()),
            100.0 * share,
            per_op(l.cpu.server()),
            per_op(l.cpu.client[0]),
            100.0 * l.cpu.client[0] / l.cpu.server[0].max(f64::MIN_POSITIVE),
            per_op(l.cpu.server[0]),
            per_op(l.cpu.psp),
        );
        println!(
            "      goal: the client adds <= 10% to the server's CPU: {}",
            if share <= 0.10 { "MET" } else { "NOT MET" }
        );
        let ok = l.rate() >= 1000.0 && l.pct(0.99) <= Duration::from_millis(20) && l.errors == 0;
        println!("      goal >= 1000 flows/s and p99 <= 20 ms: {}", if ok { "MET" } else { "NOT MET" });
        let alone = server_alone_rate(&l);
        println!(
            "      goal >= 1000 flows/s by the server alone (clients elsewhere): {}",
            if alone >= 1000.0 && l.errors == 0 { "MET" } else { "NOT MET" }
        );
    }
    for c in [16usize, 64] {
        let clients: Vec<Arc<KbsClient>> = (0..c)
            .map(|_| {
                let k = client(url, attester);
                crt.block_on(k.attest()).unwrap();
                Arc::new(k)
            })
            .collect();
        let clients = Arc::new(clients);
        let l = run_load(crt, c, dur, move |i| {
            let k = clients[i].clone();
            async move { matches!(k.get_resource(RESOURCE).await, Ok(s) if &s[..] == SECRET) }
        });
        print_load("fetch (cached Bearer)", c, &l);
        println!(
            "      goal >= 10000 fetches/s: {}",
            if l.rate() >= 10_000.0 && l.errors == 0 { "MET" } else { "NOT MET" }
        );
        println!(
            "      goal >= 10000 fetches/s by the server alone (clients elsewhere): {}",
            if server_alone_rate(&l) >= 10_000.0 && l.errors == 0 { "MET" } else { "NOT MET" }
        );
    }
    raw_load_phase(crt, url, attester, dur);
}

/// The same operations driven by [`RawHttp`], the wrk-style load generator.
fn raw_load_phase(crt: &Runtime, url: &str, attester: &Arc<dyn Attester>, dur: Duration) {
    println!("\n== Load with a minimal HTTP/1.1 load generator (wrk-style, same process and cores) ==");
    for c in [4usize, 8, 16, 64] {
        let (u, a) = (url.to_owned(), attester.clone());
        let l = run_load(crt, c, dur, move |_| {
            let (u, a) = (u.clone(), a.clone());
            async move { raw_flow(&u, &a).await }
        });
        print_load("full flow (raw client)", c, &l);
        let ok = l.rate() >= 1000.0 && l.errors == 0;
        println!("      goal >= 1000 flows/s, measured: {}", if ok { "MET" } else { "NOT MET" });
        let ok = ok && l.pct(0.99) <= Duration::from_millis(20);
        println!("      goal >= 1000 flows/s and p99 <= 20 ms, measured: {}", if ok { "MET" } else { "NOT MET" });
    }
    for c in [16usize, 64] {
        // Each task attests once on its connection, then fetches with its Bearer token; every
        // 64th response is decrypted and compared (wrk reads no bodies at all).
        let sessions: Vec<_> = (0..c)
            .map(|_| {
                crt.block_on(async {
                    let mut conn = RawHttp::connect(url).await;
                    let (_, token, key) = raw_attest(&mut conn, attester).await.unwrap();
                    Arc::new(tokio::sync::Mutex::new((conn, format!("Bearer {token}"), key, 0u64)))
                })
            })
            .collect();
        let sessions = Arc::new(sessions);
        let l = run_load(crt, c, dur, move |i| {
            let s = sessions[i].clone();
            async move {
                let mut guard = s.lock().await;
                let (conn, bearer, key, n) = &mut *guard;
                let bearer = bearer.clone();
                let r = conn
                    .send("GET", &format!("/kbs/v0/resource/{RESOURCE}"), Some(("authorization", &bearer)), b"")
                    .await;
                *n += 1;
                r.status == 200
                    && (*n % 64 != 0
                        || serde_json::from_slice::<cloister_kbs_protocol::Response>(&r.body)
                            .is_ok_and(|jwe| key.decrypt(&jwe).is_ok_and(|s| &s[..] == SECRET)))
            }
        });
        print_load("fetch (raw client)", c, &l);
        let ok = l.rate() >= 10_000.0 && l.errors == 0;
        println!("      goal >= 10000 fetches/s, measured: {}", if ok { "MET" } else { "NOT MET" });
    }
}

fn main() {
    let t = Instant::now();
    let platform = Arc::new(EmulatedSnp::generate(Product::Milan).unwrap());
    println!("emulated SNP platform generated in {:.1} s (once)", t.elapsed().as_secs_f64());
    let srt = runtime("kbs-server");
    let crt = runtime("kbs-client");
    let srv = Server::start(&srt, &platform);
    let attester: Arc<dyn Attester> = Arc::new(PspAttester::new(platform.clone()));
    // Sanity: one flow must succeed before anything is measured.
    crt.block_on(full_flow(&srv.url, &attester));
    let floor = Floor::new(platform.clone());

    if only().is_none() {
        let mut c = Criterion::default();
        if quick() {
            c = c.sample_size(10).measurement_time(Duration::from_secs(1)).warm_up_time(Duration::from_millis(500));
        }
        let mut c = c.configure_from_args();
        criterion_benches(&mut c, &crt, &srv.url, &attester, &floor);
        c.final_summary();
    }

    if std::env::args().any(|a| a == "--list") {
        srv.stop(&srt);
        return;
    }
    if only().as_deref() != Some("load") {
        breakdown(&srt, &crt, &srv, &attester, &floor);
    }
    load_phase(&crt, &srv.url, &attester);
    srv.stop(&srt);
}
