//! Shared harness: an in-process key broker on a free loopback port, with an admin key.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

pub mod flows;
pub mod pg;

use std::path::Path;
use std::sync::{Arc, OnceLock};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use cloister_emulate::snp::EmulatedSnp;
use cloister_evidence::snp::Product;
use cloister_kbs::Config;
use cloister_kbs::server::{bind, prepare, serve};
use cloister_kbs_protocol::admin::AdminSigningKey;

/// One emulated Milan platform per test binary (RSA-4096 key generation takes seconds).
pub fn platform() -> Arc<EmulatedSnp> {
    static P: OnceLock<Arc<EmulatedSnp>> = OnceLock::new();
    P.get_or_init(|| Arc::new(EmulatedSnp::generate(Product::Milan).unwrap())).clone()
}

pub struct Kbs {
    pub url: String,
    pub admin: AdminSigningKey,
    pub http: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Kbs {
    /// Starts a broker with `extra` TOML appended to a plain-HTTP, port-0 configuration. With
    /// `trust_emulated`, the emulated platform's root is configured.
    pub async fn start(dir: &Path, extra: &str, trust_emulated: bool) -> Kbs {
        // reqwest is built without a default TLS provider; tests use ring.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut toml =
            String::from("[http_server]\nsockets = [\"127.0.0.1:0\"]\ninsecure_http = true\nauth_rate_limit = 0\n");
        toml.push_str(extra);
        if trust_emulated {
            let p = platform();
            let ark = dir.join("emulated-ark.der");
            std::fs::write(&ark, p.ark_der()).unwrap();
            toml.push_str(&format!(
                "\n[[attestation_service.verifier.snp_emulated_roots]]\ncert = \"{}\"\nsha256 = \"{}\"\nproduct = \"Milan\"\n",
                ark.display(),
                p.ark_sha256_hex()
            ));
        }
        let config = Config::from_toml(&toml).unwrap();
        let data = dir.join("data");
        let prepared = tokio::task::block_in_place(|| prepare(&config, &data)).unwrap();
        let key_path = dir.join("admin-key.pem");
        if let Some(pem) = &prepared.new_admin_key {
            std::fs::write(&key_path, pem.as_bytes()).unwrap();
        }
        let admin = AdminSigningKey::from_pkcs8(&std::fs::read(&key_path).unwrap()).unwrap();
        let listeners = bind(&config).unwrap();
        let url = format!("http://{}", listeners[0].local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            serve(prepared, listeners, async move {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        Kbs { url, admin, http: reqwest::Client::new(), stop: Some(tx), task: Some(task) }
    }

    pub fn admin_token(&self) -> String {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        self.admin.mint("admin", now, 300).unwrap()
    }

    pub async fn admin_post(&self, path: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.http.post(format!("{}{path}", self.url)).bearer_auth(self.admin_token()).body(body).send().await.unwrap()
    }

    pub async fn set_resource(&self, path: &str, value: &[u8]) {
        let r = self.admin_post(&format!("/kbs/v0/resource/{path}"), value.to_vec()).await;
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }

    pub async fn set_resource_policy(&self, rego: &str) {
        let body = serde_json::json!({"policy": B64URL.encode(rego)}).to_string();
        let r = self.admin_post("/kbs/v0/resource-policy", body).await;
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }

    pub async fn set_attestation_policy(&self, rego: &str) {
        let body =
            serde_json::json!({"type": "rego", "policy_id": "default", "policy": B64URL.encode(rego)}).to_string();
        let r = self.admin_post("/kbs/v0/attestation-policy", body).await;
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}
