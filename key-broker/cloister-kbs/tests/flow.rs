//! End-to-end protocol tests: an in-process `cloister-kbs` on loopback and the guest-side
//! `cloister-kbs-client`, with CoCo's `sample` TEE and the emulated SNP platform.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use cloister_kbs_client::{
    Attester, AttesterError, ClientError, ClientOptions, EmulatedSnpAttester, KbsClient, SampleAttester, TeeKeyKind,
};
use cloister_kbs_protocol::Tee;
use cloister_policy::builtin;
use common::{Kbs, platform};
use serde_json::{Value, json};

const MEASUREMENT: [u8; 48] = [0x5a; 48];

fn client(kbs: &Kbs, attester: Arc<dyn Attester>, key: TeeKeyKind) -> KbsClient {
    KbsClient::new(&kbs.url, attester, ClientOptions { key, ..ClientOptions::default() }).unwrap()
}

/// The claims of the client's cached token.
async fn token_claims(c: &KbsClient) -> Value {
    let token = c.token().await.unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token.split('.').nth(1).unwrap()).unwrap(),
    )
    .unwrap()
}

/// `POST /kbs/v0/auth` for `tee`: the session cookie and the challenge.
async fn auth(http: &reqwest::Client, url: &str, tee: &str) -> (String, Value) {
    let body = json!({"version": "0.4.0", "tee": tee, "extra-params": ""}).to_string();
    let r = http.post(format!("{url}/kbs/v0/auth")).body(body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let set_cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(set_cookie.contains("Expires="));
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    (cookie, r.json().await.unwrap())
}

fn refused(e: &ClientError) -> (u16, String, String) {
    match e {
        ClientError::Refused { status, kind, detail } => (*status, kind.clone(), detail.clone()),
        other => panic!("expected a refusal, got {other}"),
    }
}

async fn emulated_kbs(dir: &std::path::Path) -> Kbs {
    let kbs = Kbs::start(dir, "", true).await;
    kbs.set_attestation_policy(builtin::ATTESTATION_EMULATED_CPU).await;
    kbs.set_resource_policy(builtin::RESOURCE_EMULATED).await;
    let refs = json!({"snp_launch_measurement": [hex::encode(MEASUREMENT)]}).to_string();
    assert_eq!(kbs.admin_post("/kbs/v0/reference-value", refs).await.status(), 200);
    kbs.set_resource("app/key/1", b"emulated secret\x00\xff").await;
    kbs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_tee_every_key_type_and_default_policy_denies() {
    let dir = tempfile::tempdir().unwrap();
    let kbs = Kbs::start(dir.path(), "", false).await;
    kbs.set_resource("default/key/1", b"top secret").await;
    // Default policy: the sample TEE is attested but denied, with the reason.
    let c = client(&kbs, Arc::new(SampleAttester), TeeKeyKind::P256);
    let e = c.get_resource("kbs:///default/key/1").await.unwrap_err();
    let (status, kind, detail) = refused(&e);
    assert_eq!((status, kind.as_str()), (403, "PolicyDeny"));
    assert!(detail.contains("sample evidence"), "{detail}");
    // allow_all releases to every key type, cookie-less Bearer mode.
    kbs.set_resource_policy(builtin::RESOURCE_ALLOW_ALL).await;
    for key in [TeeKeyKind::P256, TeeKeyKind::P521, TeeKeyKind::Rsa2048] {
        let c = client(&kbs, Arc::new(SampleAttester), key);
        assert_eq!(&c.get_resource("default/key/1").await.unwrap()[..], b"top secret");
        // A second fetch reuses the cached token.
        let t = c.token().await.unwrap();
        assert_eq!(&c.get_resource("default/key/1").await.unwrap()[..], b"top secret");
        assert_eq!(c.token().await.unwrap(), t);
    }
    // Unknown resource: 404, not 401 (no pointless re-attestation).
    let e = c.get_resource("default/key/none").await.unwrap_err();
    assert_eq!(refused(&e).0, 404);
    // The broker remembers approvals per token and request, but only for the policy that gave
    // them: the same cached token asking the same thing under a new policy is refused.
    let c = client(&kbs, Arc::new(SampleAttester), TeeKeyKind::P256);
    assert_eq!(&c.get_resource("default/key/1").await.unwrap()[..], b"top secret");
    kbs.set_resource_policy(builtin::RESOURCE_DENY_ALL).await;
    let e = c.get_resource("default/key/1").await.unwrap_err();
    assert_eq!(refused(&e).0, 403, "{e}");
    kbs.set_resource_policy(builtin::RESOURCE_ALLOW_ALL).await;
    assert_eq!(&c.get_resource("default/key/1").await.unwrap()[..], b"top secret");
    kbs.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emulated_snp_released_only_with_trusted_root_and_matching_measurement() {
    let dir = tempfile::tempdir().unwrap();
    let kbs = emulated_kbs(dir.path()).await;
    let good = EmulatedSnpAttester::new(platform(), MEASUREMENT, [0; 32]);
    let c = client(&kbs, Arc::new(good), TeeKeyKind::P256);
    assert_eq!(&c.get_resource("app/key/1").await.unwrap()[..], b"emulated secret\x00\xff");
    let claims = token_claims(&c).await;
    let sub = &claims["submods"]["cpu0"];
    assert_eq!(sub["ear.status"], "affirming");
    assert_eq!(sub["ear.veraison.annotated-evidence"]["emulated_snp"]["measurement"], hex::encode(MEASUREMENT));
    assert!(
        sub["ear.veraison.annotated-evidence"].get("snp").is_none(),
        "emulated evidence must never be labelled snp"
    );

    // Wrong measurement: attested (warning), then denied by policy with the reason.
    let bad = EmulatedSnpAttester::new(platform(), [0x01; 48], [0; 32]);
    let e = client(&kbs, Arc::new(bad), TeeKeyKind::P256).get_resource("app/key/1").await.unwrap_err();
    let (status, kind, detail) = refused(&e);
    assert_eq!((status, kind.as_str()), (403, "PolicyDeny"));
    assert!(detail.contains("not affirming"), "{detail}");

    // The default policies (installed fresh) deny the emulated TEE.
    kbs.set_resource_policy(builtin::RESOURCE_DEFAULT).await;
    let good = EmulatedSnpAttester::new(platform(), MEASUREMENT, [0; 32]);
    let e = client(&kbs, Arc::new(good), TeeKeyKind::P256).get_resource("app/key/1").await.unwrap_err();
    let (status, _, detail) = refused(&e);
    assert_eq!(status, 403);
    assert!(detail.contains("emulated_snp"), "{detail}");
    kbs.stop().await;

    // A broker that does not name the emulated root refuses the evidence itself.
    let dir2 = tempfile::tempdir().unwrap();
    let plain = Kbs::start(dir2.path(), "", false).await;
    let good = EmulatedSnpAttester::new(platform(), MEASUREMENT, [0; 32]);
    let e = client(&plain, Arc::new(good), TeeKeyKind::P256).attest().await.unwrap_err();
    let (status, kind, detail) = refused(&e);
    assert_eq!((status, kind.as_str()), (401, "AttestationError"));
    assert!(detail.contains("root"), "{detail}");
    plain.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initdata_must_match_host_data() {
    let dir = tempfile::tempdir().unwrap();
    let kbs = emulated_kbs(dir.path()).await;
    let initdata = "version = \"0.1.0\"\nalgorithm = \"sha384\"\n[data]\n\"policy.rego\" = \"package agent_policy\"\n";
    let digest = cloister_kbs_protocol::HashAlgorithm::Sha384.digest(initdata.as_bytes());
    let host_data: [u8; 32] = digest[..32].try_into().unwrap();
    let opts = |init: &str| ClientOptions { init_data: Some(init.to_owned()), ..ClientOptions::default() };
    let bound = EmulatedSnpAttester::new(platform(), MEASUREMENT, host_data);
    let c = KbsClient::new(&kbs.url, Arc::new(bound.clone()), opts(initdata)).unwrap();
    assert_eq!(&c.get_resource("app/key/1").await.unwrap()[..], b"emulated secret\x00\xff");
    // The same guest presenting different initdata than it was launched with.
    let other = initdata.replace("agent_policy", "other_policy");
    let c = KbsClient::new(&kbs.url, Arc::new(bound), opts(&other)).unwrap();
    let (status, kind, detail) = refused(&c.attest().await.unwrap_err());
    assert_eq!((status, kind.as_str()), (401, "AttestationError"));
    assert!(detail.contains("HOST_DATA"), "{detail}");
    kbs.stop().await;
}

/// An attester that binds the wrong digest (e.g. hashes only {nonce, tee-pubkey}).
struct Unbound;
impl Attester for Unbound {
    fn tee(&self) -> Tee {
        Tee::Sample
    }
    fn evidence(&self, digest: &[u8]) -> Result<Value, AttesterError> {
        let mut d = digest.to_vec();
        d[0] ^= 1;
        Ok(json!({"svn": "1", "report_data": STANDARD.encode(d)}))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_refusals_are_specific() {
    let dir = tempfile::tempdir().unwrap();
    let kbs = Kbs::start(dir.path(), "", false).await;
    kbs.set_resource_policy(builtin::RESOURCE_ALLOW_ALL).await;
    kbs.set_resource("default/key/1", b"s").await;
    let http = reqwest::Client::new();
    let url = &kbs.url;

    // report_data not bound to the tee-pubkey and nonce.
    let (status, kind, detail) =
        refused(&client(&kbs, Arc::new(Unbound), TeeKeyKind::P256).attest().await.unwrap_err());
    assert_eq!((status, kind.as_str()), (401, "AttestationError"));
    assert!(detail.contains("not bound"), "{detail}");

    // Version mismatch and malformed JSON: 400.
    let r = http
        .post(format!("{url}/kbs/v0/auth"))
        .body(r#"{"version":"0.3.0","tee":"sample","extra-params":""}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("RcarAuthFailed"));
    let r = http.post(format!("{url}/kbs/v0/auth")).body("{not json").send().await.unwrap();
    assert_eq!(r.status(), 400);

    // A foreign nonce: session A's cookie with session B's nonce.
    let (cookie_a, _) = auth(&http, url, "sample").await;
    let (_cookie_b, challenge_b) = auth(&http, url, "sample").await;
    assert_eq!(challenge_b["extra-params"], "");
    let nonce_b = challenge_b["nonce"].as_str().unwrap().to_owned();
    let key = cloister_kbs_protocol::TeeKeyPair::generate_p256().unwrap();
    let attest_body = |nonce: &str| {
        let d = cloister_kbs_protocol::runtime_data_digest(
            nonce,
            key.public(),
            "",
            cloister_kbs_protocol::HashAlgorithm::Sha384,
        );
        json!({"init-data": null, "runtime-data": {"nonce": nonce, "tee-pubkey": key.public()},
               "tee-evidence": {"primary_evidence": {"svn": "1", "report_data": STANDARD.encode(d)}, "additional_evidence": ""}})
        .to_string()
    };
    let r = http
        .post(format!("{url}/kbs/v0/attest"))
        .header("cookie", &cookie_a)
        .body(attest_body(&nonce_b))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("RcarAttestFailed"));
    // Unknown session.
    let r = http
        .post(format!("{url}/kbs/v0/attest"))
        .header("cookie", "kbs-session-id=00000000000000000000000000000000")
        .body(attest_body(&nonce_b))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("SessionNotFound"));

    // A token signed by another key (well-formed EAR, foreign signer).
    let (foreign, _) = cloister_verifier::ear::EarSigner::generate().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let sub = cloister_verifier::ear::Submod {
        status: cloister_verifier::ear::Status::Affirming,
        trust_vector: Default::default(),
        policy_id: "default".into(),
        annotated_evidence: json!({"snp": {}, "runtime_data_claims": {"tee-pubkey": key.public()}}),
    };
    let forged = foreign.sign(&cloister_verifier::ear::Ear::new(now, 300, sub)).unwrap();
    let r = http.get(format!("{url}/kbs/v0/resource/default/key/1")).bearer_auth(&forged).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("TokenVerifierError"));
    // No credentials at all.
    let r = http.get(format!("{url}/kbs/v0/resource/default/key/1")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("TokenNotFound"));
    // Paths and plugins.
    let r = http.get(format!("{url}/kbs/v0/resource/a/b")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.text().await.unwrap().contains("InvalidRequestPath"));
    let r = http.get(format!("{url}/kbs/v0/nebula-ca/x")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.text().await.unwrap().contains("PluginNotFound"));
    // Oversized body: 413 (limit 2 MiB by default). The server then closes that connection
    // without reading the rest, so use a client of its own (a pooled connection could be reused).
    let once = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let r = once.post(format!("{url}/kbs/v0/auth")).body(vec![b' '; 3 << 20]).send().await.unwrap();
    assert_eq!(r.status(), 413);
    // Admin endpoints without, or with a bad, admin token.
    let r = http.post(format!("{url}/kbs/v0/resource/default/key/1")).body("x").send().await.unwrap();
    assert_eq!(r.status(), 401);
    let (other, _) = cloister_kbs_protocol::admin::AdminSigningKey::generate().unwrap();
    let r = http
        .post(format!("{url}/kbs/v0/resource/default/key/1"))
        .bearer_auth(other.mint("admin", now, 60).unwrap())
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .post(format!("{url}/kbs/v0/resource/default/key/1"))
        .bearer_auth(kbs.admin.mint("reader", now, 60).unwrap())
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // Policy uploads are checked: standard base64 and broken Rego are refused, the old policy stays.
    let r = kbs
        .admin_post(
            "/kbs/v0/resource-policy",
            json!({"policy": STANDARD.encode("package policy\nallow := true\n")}).to_string(),
        )
        .await;
    assert_eq!(r.status(), 400, "padded standard base64 must be refused");
    let r = kbs
        .admin_post("/kbs/v0/resource-policy", json!({"policy": "cGFja2FnZSBwb2xpY3kKYWxsb3cgOj0gKA"}).to_string())
        .await;
    assert_eq!(r.status(), 400);
    // Metrics and health.
    let m = http.get(format!("{url}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(m.contains("kbs_auth_requests_total") && m.contains("kbs_policy_evaluations_total"));
    assert_eq!(http.get(format!("{url}/healthz")).send().await.unwrap().status(), 200);
    kbs.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_sessions_through_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("shared-store");
    let extra = format!(
        "[storage_backend]\nstorage_type = \"LocalFs\"\nsessions = \"store\"\n[storage_backend.backends.local_fs]\ndir_path = \"{}\"\n",
        store.display()
    );
    // Both replicas need the same token key so either can verify the other's tokens.
    let signer_dir = dir.path().join("a");
    let a = Kbs::start(&signer_dir, &extra, false).await;
    a.set_resource_policy(builtin::RESOURCE_ALLOW_ALL).await;
    a.set_resource("default/key/1", b"shared").await;
    let b_dir = dir.path().join("b");
    std::fs::create_dir_all(b_dir.join("data")).unwrap();
    std::fs::copy(signer_dir.join("data/token-signer.pk8"), b_dir.join("data/token-signer.pk8")).unwrap();
    std::fs::copy(signer_dir.join("data/admin.pub"), b_dir.join("data/admin.pub")).unwrap();
    std::fs::copy(signer_dir.join("admin-key.pem"), b_dir.join("admin-key.pem")).unwrap();
    let b = Kbs::start(&b_dir, &extra, false).await;

    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/kbs/v0/auth", a.url))
        .body(r#"{"version":"0.4.0","tee":"sample","extra-params":""}"#)
        .send()
        .await
        .unwrap();
    let cookie = r.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    let nonce = r.json::<Value>().await.unwrap()["nonce"].as_str().unwrap().to_owned();
    let key = cloister_kbs_protocol::TeeKeyPair::generate_p256().unwrap();
    let d = cloister_kbs_protocol::runtime_data_digest(
        &nonce,
        key.public(),
        "",
        cloister_kbs_protocol::HashAlgorithm::Sha384,
    );
    let body = json!({"init-data": null, "runtime-data": {"nonce": nonce, "tee-pubkey": key.public()},
        "tee-evidence": {"primary_evidence": {"svn": "1", "report_data": STANDARD.encode(d)}, "additional_evidence": ""}});
    // Attest at B with A's session, fetch at A with the cookie only.
    let r = http
        .post(format!("{}/kbs/v0/attest", b.url))
        .header("cookie", &cookie)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let r =
        http.get(format!("{}/kbs/v0/resource/default/key/1", a.url)).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let jwe: cloister_kbs_protocol::Response = r.json().await.unwrap();
    assert_eq!(&key.decrypt(&jwe).unwrap()[..], b"shared");
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_clients() {
    let dir = tempfile::tempdir().unwrap();
    let kbs = emulated_kbs(dir.path()).await;
    let mut tasks = Vec::new();
    for i in 0..200 {
        let url = kbs.url.clone();
        tasks.push(tokio::spawn(async move {
            let att = EmulatedSnpAttester::new(platform(), MEASUREMENT, [0; 32]);
            let c = KbsClient::new(&url, Arc::new(att), ClientOptions::default()).unwrap();
            let s = c.get_resource("app/key/1").await.map_err(|e| format!("client {i}: {e}"))?;
            if &s[..] != b"emulated secret\x00\xff" {
                return Err(format!("client {i}: wrong secret"));
            }
            Ok::<(), String>(())
        }));
    }
    let mut errors = Vec::new();
    for t in tasks {
        if let Err(e) = t.await.unwrap() {
            errors.push(e);
        }
    }
    assert!(errors.is_empty(), "{} failures, first: {:?}", errors.len(), errors.first());
    kbs.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emulated_tdx_through_the_same_checks() {
    use cloister_emulate::tdx::EmulatedTdx;
    use cloister_kbs_client::EmulatedTdxAttester;
    let dir = tempfile::tempdir().unwrap();
    let tdx = Arc::new(EmulatedTdx::generate().unwrap());
    let root = dir.path().join("tdx-root.der");
    std::fs::write(&root, tdx.root_der()).unwrap();
    let coll = dir.path().join("tdx-collateral.json");
    std::fs::write(&coll, tdx.collateral_json().unwrap()).unwrap();
    let extra = format!(
        "[[attestation_service.verifier.tdx_emulated_roots]]\ncert = \"{}\"\nsha256 = \"{}\"\ncollateral = \"{}\"\n",
        root.display(),
        tdx.root_sha256_hex(),
        coll.display()
    );
    let kbs = Kbs::start(dir.path(), &extra, false).await;
    kbs.set_attestation_policy(builtin::ATTESTATION_EMULATED_CPU).await;
    kbs.set_resource_policy(builtin::RESOURCE_EMULATED).await;
    let mr_td = [0x7d; 48];
    let refs = json!({"mr_td": [hex::encode(mr_td)]}).to_string();
    assert_eq!(kbs.admin_post("/kbs/v0/reference-value", refs).await.status(), 200);
    kbs.set_resource("app/key/tdx", b"tdx secret").await;
    let c = client(&kbs, Arc::new(EmulatedTdxAttester::new(tdx.clone(), mr_td, [0; 48])), TeeKeyKind::P256);
    assert_eq!(&c.get_resource("app/key/tdx").await.unwrap()[..], b"tdx secret");
    let claims = token_claims(&c).await;
    let ev = &claims["submods"]["cpu0"]["ear.veraison.annotated-evidence"];
    assert_eq!(ev["emulated_tdx"]["mr_td"], hex::encode(mr_td));
    assert!(ev.get("tdx").is_none());
    // Wrong MRTD: denied by policy.
    let c = client(&kbs, Arc::new(EmulatedTdxAttester::new(tdx, [0; 48], [0; 48])), TeeKeyKind::P256);
    assert_eq!(refused(&c.get_resource("app/key/tdx").await.unwrap_err()).0, 403);
    kbs.stop().await;
}

/// Emulated SNP evidence without a certificate table: the broker fetches the VCEK and chain from
/// a KDS (here a local stand-in serving the emulated platform's certificates) and caches them.
struct NoTable(EmulatedSnpAttester);
impl Attester for NoTable {
    fn tee(&self) -> Tee {
        Tee::Snp
    }
    fn evidence(&self, digest: &[u8]) -> Result<Value, AttesterError> {
        let mut v = self.0.evidence(digest)?;
        v.as_object_mut().unwrap().remove("cert_table");
        Ok(v)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snp_certificates_fetched_from_kds_and_cached() {
    let p = platform();
    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (vcek, chain) = (p.vcek_der().to_vec(), p.cert_chain_pem());
    let h = hits.clone();
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let (vcek, chain, h) = (vcek.clone(), chain.clone(), h.clone());
        async move {
            h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let path = uri.path().to_owned();
            if path == "/vcek/v1/Milan/cert_chain" {
                (axum::http::StatusCode::OK, chain.into_bytes())
            } else if path.starts_with("/vcek/v1/Milan/") {
                (axum::http::StatusCode::OK, vcek)
            } else {
                (axum::http::StatusCode::NOT_FOUND, Vec::new())
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let kds = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("kds-cache");
    let extra = format!(
        "[attestation_service.verifier]\nsnp_kds_fetch = true\nsnp_kds_url = \"{kds}\"\nsnp_cert_cache = \"{}\"\n",
        cache.display()
    );
    let kbs = Kbs::start(dir.path(), &extra, true).await;
    kbs.set_resource_policy(builtin::RESOURCE_ALLOW_ALL).await;
    kbs.set_resource("app/key/1", b"fetched").await;
    for _ in 0..2 {
        let att = NoTable(EmulatedSnpAttester::new(platform(), MEASUREMENT, [0; 32]));
        let c = client(&kbs, Arc::new(att), TeeKeyKind::P256);
        assert_eq!(&c.get_resource("app/key/1").await.unwrap()[..], b"fetched");
    }
    // VCEK + chain fetched once, then served from the cache directory.
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert!(cache.join("Milan/vcek/cert_chain.pem").is_file());
    kbs.stop().await;
}

/// IBM SE with the emulated machine: the `/auth` challenge is an attestation request encrypted
/// to the configured host-key document, the guest's Ultravisor answers it with the SHA-512
/// runtime-data digest as user data, and the broker checks the answer against the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emulated_se_answers_the_brokers_request() {
    use cloister_emulate::se::EmulatedSe;
    use cloister_kbs_client::SeAttester;
    use cloister_kbs_protocol::{HashAlgorithm, TeeKeyPair, runtime_data_digest};
    let dir = tempfile::tempdir().unwrap();
    let se = Arc::new(EmulatedSe::generate().unwrap());
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p.display().to_string()
    };
    let root_sha = hex::encode(ring::digest::digest(&ring::digest::SHA256, se.root_der()));
    let extra = format!(
        "[attestation_service.verifier.se]\nhost_key_documents = [\"{}\"]\ncerts = [\"{}\"]\nimage_header = \"{}\"\n\
         [[attestation_service.verifier.se.emulated_roots]]\ncert = \"{}\"\nsha256 = \"{root_sha}\"\n",
        write("hkd.der", se.hkd_der()),
        write("signing.der", se.signing_der()),
        write("hdr.bin", se.header()),
        write("root.der", se.root_der()),
    );
    let kbs = Kbs::start(dir.path(), &extra, false).await;
    kbs.set_resource("app/key/se", b"se secret").await;

    // Default policies: emulated SE evidence verifies but is never released.
    let c = client(&kbs, Arc::new(SeAttester::emulated(se.clone())), TeeKeyKind::P256);
    assert_eq!(refused(&c.get_resource("app/key/se").await.unwrap_err()).0, 403);

    // The emulated policies and the image's tag as a reference value: released.
    kbs.set_attestation_policy(builtin::ATTESTATION_EMULATED_CPU).await;
    kbs.set_resource_policy(builtin::RESOURCE_EMULATED).await;
    let tag = hex::encode(se.boot_hdr_tags().tag);
    let refs = json!({"se.tag": [tag]}).to_string();
    assert_eq!(kbs.admin_post("/kbs/v0/reference-value", refs).await.status(), 200);
    let c = client(&kbs, Arc::new(SeAttester::emulated(se.clone())), TeeKeyKind::P256);
    assert_eq!(&c.get_resource("app/key/se").await.unwrap()[..], b"se secret");
    let claims = token_claims(&c).await;
    let ev = &claims["submods"]["cpu0"]["ear.veraison.annotated-evidence"];
    assert_eq!(ev["emulated_se"]["se.tag"], tag, "{claims}");
    assert_eq!(ev["emulated_se"]["se.attestation_phkh"], hex::encode(se.phkh()));
    assert!(ev.get("se").is_none());

    // A machine whose host key was not configured cannot open the request.
    let other = Arc::new(EmulatedSe::generate().unwrap());
    let c = client(&kbs, Arc::new(SeAttester::emulated(other)), TeeKeyKind::P256);
    let e = c.get_resource("app/key/se").await.unwrap_err().to_string();
    assert!(e.contains("no key slot for this host"), "{e}");

    // By hand: the answer to one session's request, presented in another session.
    let http = reqwest::Client::new();
    let (_, ch1) = auth(&http, &kbs.url, "se").await;
    let (cookie2, ch2) = auth(&http, &kbs.url, "se").await;
    assert_eq!(ch2["extra-params"]["selected-hash-algorithm"], "sha512");
    let nonce1 = ch1["nonce"].as_str().unwrap().to_owned();
    let nonce2 = ch2["nonce"].as_str().unwrap().to_owned();
    let key = TeeKeyPair::generate_p256().unwrap();
    let attester = SeAttester::emulated(se.clone());
    let attest = |nonce: String, evidence: Value| {
        let body = json!({"init-data": null, "runtime-data": {"nonce": nonce, "tee-pubkey": key.public()},
                          "tee-evidence": {"primary_evidence": evidence, "additional_evidence": ""}});
        http.post(format!("{}/kbs/v0/attest", kbs.url)).header("cookie", &cookie2).body(body.to_string()).send()
    };
    let digest2 = runtime_data_digest(&nonce2, key.public(), "", HashAlgorithm::Sha512);
    let stale = attester.challenge_evidence(&nonce1, &digest2).unwrap();
    let r = attest(nonce2.clone(), stale).await.unwrap();
    assert_eq!(r.status(), 401);
    let text = r.text().await.unwrap();
    assert!(text.contains("answers another attestation request"), "{text}");
    // The right request, but user data bound with SHA-384 instead of the challenge's SHA-512.
    let digest384 = runtime_data_digest(&nonce2, key.public(), "", HashAlgorithm::Sha384);
    let wrong_hash = attester.challenge_evidence(&nonce2, &digest384).unwrap();
    let r = attest(nonce2.clone(), wrong_hash).await.unwrap();
    assert_eq!(r.status(), 401);
    let text = r.text().await.unwrap();
    assert!(text.contains("report_data"), "{text}");
    // And the right answer is accepted in the same session.
    let good = attester.challenge_evidence(&nonce2, &digest2).unwrap();
    assert_eq!(attest(nonce2, good).await.unwrap().status(), 200);
    kbs.stop().await;
}
