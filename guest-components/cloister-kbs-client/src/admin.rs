//! The admin side of the KBS API (what trustee's `kbs-client config …` does): resources,
//! policies and reference values, authorised by an admin token minted per call from an admin
//! private key (Ed25519 or P-256 PKCS#8).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD as B64URL};
use cloister_kbs_protocol::admin::AdminSigningKey;
use http::{Method, header};
use serde_json::{Value, json};

use crate::client::{ClientError, TrustMode, refusal};
use crate::transport::{Body, Transport};

/// How long one admin exchange may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// An admin client.
pub struct AdminClient {
    http: Transport,
    key: AdminSigningKey,
}

impl std::fmt::Debug for AdminClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminClient").field("kbs", &self.http).finish_non_exhaustive()
    }
}

impl AdminClient {
    /// A client for `url` signing with `key_pem` (PKCS#8). The URL and trust follow the same
    /// rule as [`crate::KbsClient`]: `https://` needs a pinned certificate or a CA, and a
    /// configured certificate or CA is never dropped for `http://`.
    pub fn new(url: &str, key_pem: &[u8], trust: &TrustMode) -> Result<Self, ClientError> {
        let key = AdminSigningKey::from_pkcs8(key_pem).map_err(|e| ClientError::Config(format!("admin key: {e}")))?;
        Ok(Self { http: Transport::new(url, trust, TIMEOUT)?, key })
    }

    fn token(&self) -> Result<String, ClientError> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        self.key.mint("admin", now, 300).map_err(|e| ClientError::Config(e.to_string()))
    }

    /// One authorised exchange; the reply's JSON (`null` for an empty or non-JSON body).
    async fn send(&self, method: Method, path: &str, body: Option<Body>) -> Result<Value, ClientError> {
        let bearer = format!("Bearer {}", self.token()?);
        let reply = self.http.send(method, path, Some((header::AUTHORIZATION, bearer.as_str())), body, None).await?;
        if !reply.status.is_success() {
            return Err(refusal(&reply));
        }
        Ok(serde_json::from_slice(&reply.body).unwrap_or(Value::Null))
    }

    /// Stores a resource at `repo/type/tag`.
    pub async fn set_resource(&self, path: &str, value: &[u8]) -> Result<(), ClientError> {
        let path = format!("/kbs/v0/resource/{}", path.trim_start_matches('/'));
        let body = Body { content_type: "application/octet-stream", bytes: value.to_vec() };
        self.send(Method::POST, &path, Some(body)).await?;
        Ok(())
    }

    /// Deletes a resource.
    pub async fn delete_resource(&self, path: &str) -> Result<(), ClientError> {
        self.send(Method::DELETE, &format!("/kbs/v0/resource/{}", path.trim_start_matches('/')), None).await?;
        Ok(())
    }

    /// Replaces the resource policy (Rego text).
    pub async fn set_resource_policy(&self, rego: &str) -> Result<(), ClientError> {
        let body = json!({"policy": B64URL.encode(rego)});
        self.send(Method::POST, "/kbs/v0/resource-policy", Some(Body::json(&body)?)).await?;
        Ok(())
    }

    /// Replaces an attestation policy (Rego text).
    pub async fn set_attestation_policy(&self, id: &str, rego: &str) -> Result<(), ClientError> {
        let body = json!({"type": "rego", "policy_id": id, "policy": B64URL.encode(rego)});
        self.send(Method::POST, "/kbs/v0/attestation-policy", Some(Body::json(&body)?)).await?;
        Ok(())
    }

    /// Registers `{name: [values]}` as an RVPS `sample` message.
    pub async fn set_reference_values(&self, values: &Value) -> Result<Value, ClientError> {
        let body = json!({"version": "0.1.0", "type": "sample", "payload": STANDARD.encode(values.to_string())});
        self.send(Method::POST, "/kbs/v0/reference-value", Some(Body::json(&body)?)).await
    }

    /// Registers the JSON printed by `cloister measure --output json`.
    pub async fn set_reference_values_from_measurement(&self, measure_json: &Value) -> Result<Value, ClientError> {
        self.send(Method::POST, "/kbs/v0/reference-value", Some(Body::json(measure_json)?)).await
    }

    /// Reads a reference value.
    pub async fn reference_value(&self, name: &str) -> Result<Value, ClientError> {
        self.send(Method::GET, &format!("/kbs/v0/reference-value/{name}"), None).await
    }

    /// Asks the KBS to explain its resource-policy decision for a token and path.
    pub async fn explain(&self, token: &str, path: &str) -> Result<Value, ClientError> {
        let body = json!({"token": token, "path": path.trim_start_matches('/')});
        self.send(Method::POST, "/kbs/v0/debug/explain", Some(Body::json(&body)?)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The admin client follows the protocol client's URL rule: TLS is never dropped.
    #[test]
    fn a_pinned_certificate_is_never_dropped_for_plain_http() {
        let (_, pem) = AdminSigningKey::generate().unwrap();
        let e = AdminClient::new("http://kbs.example", pem.as_bytes(), &TrustMode::Pinned([1; 32])).unwrap_err();
        assert!(matches!(&e, ClientError::Config(m) if m.contains("refusing to drop TLS")), "{e}");
        let e = AdminClient::new("https://kbs.example", pem.as_bytes(), &TrustMode::PlainHttpOnly).unwrap_err();
        assert!(matches!(&e, ClientError::Config(m) if m.contains("https needs")), "{e}");
        AdminClient::new("http://127.0.0.1:8080", pem.as_bytes(), &TrustMode::PlainHttpOnly).unwrap();
    }
}
