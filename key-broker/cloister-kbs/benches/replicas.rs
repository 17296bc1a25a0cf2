//! Flows per second: two key-broker replicas on one PostgreSQL database against one replica on
//! the embedded on-disk store, in the same run (the replicated-store issue's goal: ≥ 0.8×).
//!
//! Everything is in one process on loopback: a throw-away PostgreSQL cluster (Debian's
//! `postgresql`, as in `tests/postgres.rs`), the servers on one Tokio runtime with two workers
//! (the single replica gets the same runtime to itself), and the clients on another. Each flow
//! is auth → attest → resource (cookie) → resource (Bearer) with a fresh P-256 TEE key and
//! emulated SNP evidence; with two replicas every step goes to the other replica than the step
//! before, so every step depends on state the other replica wrote.
//!
//! Prints a Criterion group (one flow, sequential) and a load table (C concurrent flows for a
//! few seconds) with the ratio. `CLOISTER_BENCH_QUICK=1` shortens everything.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/common/flows.rs"]
mod flows;
#[path = "../tests/common/pg.rs"]
mod pg;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use cloister_emulate::snp::EmulatedSnp;
use cloister_evidence::snp::Product;
use cloister_kbs::Config;
use cloister_kbs::broker::ResourcePath;
use cloister_kbs::server::{bind, prepare, serve};
use cloister_kbs_client::{Attester, EmulatedSnpAttester};
use cloister_policy::builtin;
use criterion::Criterion;
use flows::{MEASUREMENT, RESOURCE, SECRET, flow};
use serde_json::json;
use tokio::runtime::Runtime;

fn quick() -> bool {
    std::env::var("CLOISTER_BENCH_QUICK").is_ok_and(|v| v == "1" || v == "true")
        || std::env::args().any(|a| a == "--test")
}

fn runtime(name: &str) -> Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).thread_name(name).enable_all().build().unwrap()
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// Starts one in-process replica with `storage` TOML on `rt`; provisions it when `provision`.
fn replica(
    rt: &Runtime,
    dir: &std::path::Path,
    name: &str,
    storage: &str,
    platform: &EmulatedSnp,
    provision: bool,
) -> String {
    let ark = dir.join("emulated-ark.der");
    std::fs::write(&ark, platform.ark_der()).unwrap();
    let toml = format!(
        "[http_server]\nsockets = [\"127.0.0.1:0\"]\ninsecure_http = true\nauth_rate_limit = 0\nmax_sessions = 100000000\n\
         {storage}[[attestation_service.verifier.snp_emulated_roots]]\ncert = \"{}\"\nsha256 = \"{}\"\nproduct = \"Milan\"\n",
        ark.display(),
        platform.ark_sha256_hex()
    );
    let config = Config::from_toml(&toml).unwrap();
    let prepared = prepare(&config, &dir.join(format!("{name}-data"))).unwrap();
    let broker = prepared.state.broker.clone();
    let listeners = bind(&config).unwrap();
    let url = format!("http://{}", listeners[0].local_addr().unwrap());
    rt.spawn(async move { serve(prepared, listeners, std::future::pending()).await.unwrap() });
    if provision {
        let att =
            json!({"type": "rego", "policy_id": "default", "policy": B64URL.encode(builtin::ATTESTATION_EMULATED_CPU)});
        broker.set_attestation_policy(att.to_string().as_bytes()).unwrap();
        let res = json!({"policy": B64URL.encode(builtin::RESOURCE_EMULATED)});
        broker.set_resource_policy(res.to_string().as_bytes()).unwrap();
        let refs = json!({"snp_launch_measurement": [hex::encode(MEASUREMENT)]});
        broker.register_reference_values(refs.to_string().as_bytes(), now()).unwrap();
        broker.set_resource(&ResourcePath::parse(RESOURCE).unwrap(), SECRET).unwrap();
    }
    url
}

struct Load {
    flows: u64,
    errors: u64,
    secs: f64,
    first_error: Option<String>,
}

/// `c` tasks looping whole flows over `urls` for `dur`.
fn load(crt: &Runtime, urls: &[String], att: &Arc<dyn Attester>, c: usize, dur: Duration) -> Load {
    crt.block_on(async {
        let http = reqwest::Client::new();
        let stop = Arc::new(AtomicBool::new(false));
        let (ok, bad) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let first = Arc::new(std::sync::Mutex::new(None));
        let t = Instant::now();
        let tasks: Vec<_> = (0..c)
            .map(|i| {
                let (http, urls, att, stop, ok, bad, first) =
                    (http.clone(), urls.to_vec(), att.clone(), stop.clone(), ok.clone(), bad.clone(), first.clone());
                tokio::spawn(async move {
                    let mut n = i;
                    while !stop.load(Ordering::Relaxed) {
                        match flow(&http, &urls, n % urls.len(), &att).await {
                            Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                            Err(e) => {
                                first.lock().unwrap().get_or_insert(e);
                                bad.fetch_add(1, Ordering::Relaxed)
                            }
                        };
                        n += 1;
                    }
                })
            })
            .collect();
        tokio::time::sleep(dur).await;
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.await.unwrap();
        }
        Load {
            flows: ok.load(Ordering::Relaxed),
            errors: bad.load(Ordering::Relaxed),
            secs: t.elapsed().as_secs_f64(),
            first_error: first.lock().unwrap().take(),
        }
    })
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let Some(pg) = pg::PgServer::start() else { return };
    let platform = Arc::new(EmulatedSnp::generate(Product::Milan).unwrap());
    let att: Arc<dyn Attester> = Arc::new(EmulatedSnpAttester::new(platform.clone(), MEASUREMENT, [0; 32]));
    let dir = tempfile::tempdir().unwrap();
    let (srt_fs, srt_pg, crt) = (runtime("kbs-fs"), runtime("kbs-pg"), runtime("clients"));

    let fs_url = vec![replica(&srt_fs, dir.path(), "fs", "", &platform, true)];
    let storage = pg::storage_toml(&pg, &dir.path().join("store.key"), &[0x33; 32]);
    let a = replica(&srt_pg, dir.path(), "a", &storage, &platform, true);
    let b = replica(&srt_pg, dir.path(), "b", &storage, &platform, false);
    let pg_urls = vec![a, b];
    let http = reqwest::Client::new();
    for urls in [&fs_url, &pg_urls] {
        crt.block_on(flow(&http, urls, 0, &att)).unwrap();
    }

    let mut c = Criterion::default();
    if quick() {
        c = c.sample_size(10).measurement_time(Duration::from_secs(1)).warm_up_time(Duration::from_millis(500));
    }
    let mut c = c.configure_from_args();
    {
        let mut g = c.benchmark_group("replicas");
        g.bench_function("flow_embedded_store_one_replica", |bch| {
            bch.iter(|| crt.block_on(flow(&http, &fs_url, 0, &att)).unwrap())
        });
        g.bench_function("flow_postgres_two_replicas_alternating", |bch| {
            bch.iter(|| crt.block_on(flow(&http, &pg_urls, 0, &att)).unwrap())
        });
        g.finish();
    }
    c.final_summary();

    let dur = if quick() { Duration::from_secs(1) } else { Duration::from_secs(5) };
    println!("\n== Load: concurrent whole flows for {:.0} s per point (one process, 2 cores) ==", dur.as_secs_f64());
    for (k, conc) in [16usize, 64].into_iter().enumerate() {
        // Alternate the order so neither side always runs second (on a warmer machine).
        let (fs, pgl) = if k % 2 == 0 {
            let fs = load(&crt, &fs_url, &att, conc, dur);
            (fs, load(&crt, &pg_urls, &att, conc, dur))
        } else {
            let pgl = load(&crt, &pg_urls, &att, conc, dur);
            (load(&crt, &fs_url, &att, conc, dur), pgl)
        };
        let (rf, rp) = (fs.flows as f64 / fs.secs, pgl.flows as f64 / pgl.secs);
        println!("  C={conc:<3} embedded store, 1 replica   {rf:>7.1} flows/s  errors {}", fs.errors);
        println!("  C={conc:<3} PostgreSQL, 2 replicas       {rp:>7.1} flows/s  errors {}", pgl.errors);
        println!(
            "        ratio {:.2}x (goal >= 0.8x): {}",
            rp / rf,
            if rp / rf >= 0.8 && pgl.errors == 0 { "MET" } else { "NOT MET" }
        );
        for e in [fs.first_error, pgl.first_error].into_iter().flatten() {
            println!("        first error: {e}");
        }
    }
}
