//! The admin side of the KBS API (what trustee's `kbs-client config …` does): resources,
//! policies and reference values, authorised by an admin token minted per call from an admin
//! private key (Ed25519 or P-256 PKCS#8).

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD as B64URL};
use cloister_kbs_protocol::ErrorInformation;
use cloister_kbs_protocol::admin::AdminSigningKey;
use serde_json::{Value, json};

use crate::client::{ClientError, TrustMode};

/// An admin client.
pub struct AdminClient {
    http: reqwest::Client,
    base: String,
    key: AdminSigningKey,
}

impl std::fmt::Debug for AdminClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminClient").field("base", &self.base).finish_non_exhaustive()
    }
}

impl AdminClient {
    /// A client for `url` signing with `key_pem` (PKCS#8).
    pub fn new(url: &str, key_pem: &[u8], trust: &TrustMode) -> Result<Self, ClientError> {
        let key = AdminSigningKey::from_pkcs8(key_pem).map_err(|e| ClientError::Config(format!("admin key: {e}")))?;
        let base = url.trim_end_matches('/').to_owned();
        let http = crate::client::http_client(&base, trust, std::time::Duration::from_secs(30))?;
        Ok(Self { http, base, key })
    }

    fn token(&self) -> Result<String, ClientError> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        self.key.mint("admin", now, 300).map_err(|e| ClientError::Config(e.to_string()))
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<Value, ClientError> {
        let resp = req.bearer_auth(self.token()?).send().await.map_err(crate::client::transport)?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(crate::client::transport)?;
        if !status.is_success() {
            return Err(match serde_json::from_slice::<ErrorInformation>(&body) {
                Ok(e) => ClientError::Refused { status: status.as_u16(), kind: e.kind().to_owned(), detail: e.detail },
                Err(_) => ClientError::Refused {
                    status: status.as_u16(),
                    kind: "Unknown".into(),
                    detail: String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
                },
            });
        }
        Ok(serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    /// Stores a resource at `repo/type/tag`.
    pub async fn set_resource(&self, path: &str, value: &[u8]) -> Result<(), ClientError> {
        let url = format!("{}/kbs/v0/resource/{}", self.base, path.trim_start_matches('/'));
        self.send(self.http.post(url).header("content-type", "application/octet-stream").body(value.to_vec())).await?;
        Ok(())
    }

    /// Deletes a resource.
    pub async fn delete_resource(&self, path: &str) -> Result<(), ClientError> {
        let url = format!("{}/kbs/v0/resource/{}", self.base, path.trim_start_matches('/'));
        self.send(self.http.delete(url)).await?;
        Ok(())
    }

    /// Replaces the resource policy (Rego text).
    pub async fn set_resource_policy(&self, rego: &str) -> Result<(), ClientError> {
        let body = json!({"policy": B64URL.encode(rego)});
        self.send(self.http.post(format!("{}/kbs/v0/resource-policy", self.base)).json(&body)).await?;
        Ok(())
    }

    /// Replaces an attestation policy (Rego text).
    pub async fn set_attestation_policy(&self, id: &str, rego: &str) -> Result<(), ClientError> {
        let body = json!({"type": "rego", "policy_id": id, "policy": B64URL.encode(rego)});
        self.send(self.http.post(format!("{}/kbs/v0/attestation-policy", self.base)).json(&body)).await?;
        Ok(())
    }

    /// Registers `{name: [values]}` as an RVPS `sample` message.
    pub async fn set_reference_values(&self, values: &Value) -> Result<Value, ClientError> {
        let body = json!({"version": "0.1.0", "type": "sample", "payload": STANDARD.encode(values.to_string())});
        self.send(self.http.post(format!("{}/kbs/v0/reference-value", self.base)).json(&body)).await
    }

    /// Registers the JSON printed by `cloister measure --output json`.
    pub async fn set_reference_values_from_measurement(&self, measure_json: &Value) -> Result<Value, ClientError> {
        self.send(self.http.post(format!("{}/kbs/v0/reference-value", self.base)).json(measure_json)).await
    }

    /// Reads a reference value.
    pub async fn reference_value(&self, name: &str) -> Result<Value, ClientError> {
        self.send(self.http.get(format!("{}/kbs/v0/reference-value/{name}", self.base))).await
    }

    /// Asks the KBS to explain its resource-policy decision for a token and path.
    pub async fn explain(&self, token: &str, path: &str) -> Result<Value, ClientError> {
        let body = json!({"token": token, "path": path.trim_start_matches('/')});
        self.send(self.http.post(format!("{}/kbs/v0/debug/explain", self.base)).json(&body)).await
    }
}
