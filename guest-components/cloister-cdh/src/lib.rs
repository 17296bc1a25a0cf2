//! The confidential data hub (CDH) of a Cloister guest: the one place workloads ask for secrets.
//!
//! * [`Cdh::get_resource`]: `kbs:///repo/type/tag` → the secret, fetched from the key broker
//!   with the guest's attestation (token cached by the KBS client).
//! * [`Cdh::unseal_secret`]: CoCo sealed secrets, `sealed.<compact JWS>`. The JWS must be ES256
//!   and verify under the public key (a P-256 JWK) that the KBS holds at the header's `kid`
//!   resource — so only a secret sealed by the tenant's signing key is honoured, and the key
//!   itself is released only to an attested guest. Payload `{"version":"0.1.0","type":"vault",
//!   "provider":"kbs","name":"kbs:///…"}` names the KBS resource holding the plaintext.
//!   `envelope` secrets are refused with a typed error (not supported yet).
//!
//! **What it trusts:** the key broker reached through the KBS client's pinned TLS, and nothing
//! in the sealed secret until its signature verifies. Plaintexts are returned in zeroizing
//! buffers and never logged.
#![forbid(unsafe_code)]

pub mod api;

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use cloister_kbs_client::{ClientError, KbsClient};
use ring::signature;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use zeroize::Zeroizing;

/// The prefix of sealed secrets.
pub const SEALED_PREFIX: &str = "sealed.";

/// Why a secret could not be delivered.
#[derive(Debug, thiserror::Error)]
pub enum CdhError {
    /// The resource URI is not `kbs:///repo/type/tag`.
    #[error("resource URI {0:?} is not kbs:///<repo>/<type>/<tag>")]
    BadUri(String),
    /// The key broker refused or could not be reached.
    #[error(transparent)]
    Kbs(#[from] ClientError),
    /// The sealed secret is malformed.
    #[error("sealed secret: {0}")]
    Malformed(String),
    /// The signature does not verify under the key named by `kid`.
    #[error("sealed secret signature does not verify under {kid}")]
    Signature {
        /// The signing key's resource.
        kid: String,
    },
    /// A valid but unsupported secret type or provider.
    #[error("sealed secret {0} is not supported")]
    Unsupported(String),
}

/// A sealed secret's payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SealedPayload {
    /// `0.1.0`.
    pub version: String,
    /// `vault` or `envelope`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `kbs` (others: `aliyun`, `aws`, … not supported).
    pub provider: String,
    /// For `vault`: the KBS resource URI holding the secret.
    #[serde(default)]
    pub name: Option<String>,
    /// Provider settings.
    #[serde(default)]
    pub provider_settings: Value,
    /// Annotations.
    #[serde(default)]
    pub annotations: Value,
}

fn check_uri(uri: &str) -> Result<String, CdhError> {
    let path = uri.strip_prefix("kbs://").ok_or_else(|| CdhError::BadUri(uri.to_owned()))?;
    // kbs://<host ignored>/repo/type/tag
    let path = path.split_once('/').map(|x| x.1).ok_or_else(|| CdhError::BadUri(uri.to_owned()))?;
    let segs: Vec<&str> = path.split('/').collect();
    if segs.len() != 3 || segs.iter().any(|s| s.is_empty() || *s == "." || *s == "..") {
        return Err(CdhError::BadUri(uri.to_owned()));
    }
    Ok(path.to_owned())
}

/// The data hub.
#[derive(Debug, Clone)]
pub struct Cdh {
    kbs: Arc<KbsClient>,
}

impl Cdh {
    /// A hub fetching through `kbs`.
    pub fn new(kbs: Arc<KbsClient>) -> Self {
        Self { kbs }
    }

    /// `kbs:///repo/type/tag` → the secret.
    pub async fn get_resource(&self, uri: &str) -> Result<Zeroizing<Vec<u8>>, CdhError> {
        let path = check_uri(uri)?;
        Ok(self.kbs.get_resource(&path).await?)
    }

    /// `sealed.<JWS>` → the secret.
    pub async fn unseal_secret(&self, sealed: &str) -> Result<Zeroizing<Vec<u8>>, CdhError> {
        let (kid, payload) = self.verify_sealed(sealed).await?;
        if payload.version != "0.1.0" {
            return Err(CdhError::Unsupported(format!("version {:?}", payload.version)));
        }
        match (payload.kind.as_str(), payload.provider.as_str()) {
            ("vault", "kbs") => {
                let name = payload.name.ok_or_else(|| CdhError::Malformed("vault secret without a name".into()))?;
                tracing::debug!(%kid, %name, "unsealing a vault secret");
                self.get_resource(&name).await
            }
            (kind, provider) => Err(CdhError::Unsupported(format!("type {kind:?} with provider {provider:?}"))),
        }
    }

    async fn verify_sealed(&self, sealed: &str) -> Result<(String, SealedPayload), CdhError> {
        let jws = sealed
            .trim()
            .strip_prefix(SEALED_PREFIX)
            .ok_or_else(|| CdhError::Malformed("no \"sealed.\" prefix".into()))?;
        let mut parts = jws.split('.');
        let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(CdhError::Malformed("not a compact JWS (three parts)".into()));
        };
        let header: Value = B64URL
            .decode(h)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| CdhError::Malformed("header is not base64url JSON".into()))?;
        if header.get("alg").and_then(Value::as_str) != Some("ES256") {
            return Err(CdhError::Unsupported(format!(
                "signature algorithm {}",
                header.get("alg").unwrap_or(&Value::Null)
            )));
        }
        let kid = header
            .get("kid")
            .and_then(Value::as_str)
            .ok_or_else(|| CdhError::Malformed("header has no kid (the signing key's kbs:/// URI)".into()))?
            .to_owned();
        let sig = B64URL.decode(s).map_err(|_| CdhError::Malformed("signature is not base64url".into()))?;
        // The tenant's verification key, released by the KBS only to an attested guest.
        let jwk_bytes = self.get_resource(&kid).await?;
        let jwk: Value = serde_json::from_slice(&jwk_bytes)
            .map_err(|_| CdhError::Malformed(format!("the key at {kid} is not a JWK")))?;
        let coord = |n: &str| jwk.get(n).and_then(Value::as_str).and_then(|v| B64URL.decode(v).ok());
        let (Some(x), Some(y)) = (coord("x"), coord("y")) else {
            return Err(CdhError::Malformed(format!("the key at {kid} is not a P-256 JWK")));
        };
        if jwk.get("crv").and_then(Value::as_str) != Some("P-256") || x.len() != 32 || y.len() != 32 {
            return Err(CdhError::Malformed(format!("the key at {kid} is not a P-256 JWK")));
        }
        let point = [&[4u8][..], &x, &y].concat();
        let signed = &jws.as_bytes()[..h.len() + 1 + p.len()];
        signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, &point)
            .verify(signed, &sig)
            .map_err(|_| CdhError::Signature { kid: kid.clone() })?;
        let payload: SealedPayload = B64URL
            .decode(p)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| CdhError::Malformed("payload is not a sealed-secret JSON".into()))?;
        Ok((kid, payload))
    }
}

/// Seals a `vault` reference with an ES256 key (PKCS#8 P-256): `sealed.<JWS>` whose `kid` is the
/// KBS resource holding the matching public JWK. (What a tenant's tooling does.)
pub fn seal_vault(pkcs8: &[u8], kid: &str, name: &str) -> Result<String, CdhError> {
    let rng = ring::rand::SystemRandom::new();
    let key = signature::EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, &rng)
        .map_err(|_| CdhError::Malformed("signing key is not PKCS#8 P-256".into()))?;
    let header = serde_json::json!({"alg": "ES256", "kid": kid});
    let payload = SealedPayload {
        version: "0.1.0".into(),
        kind: "vault".into(),
        provider: "kbs".into(),
        name: Some(name.to_owned()),
        provider_settings: serde_json::json!({}),
        annotations: serde_json::json!({}),
    };
    let body = serde_json::to_string(&payload).map_err(|e| CdhError::Malformed(e.to_string()))?;
    let input = format!("{}.{}", B64URL.encode(header.to_string()), B64URL.encode(body));
    let sig = key.sign(&rng, input.as_bytes()).map_err(|_| CdhError::Malformed("signing failed".into()))?;
    Ok(format!("{SEALED_PREFIX}{input}.{}", B64URL.encode(sig.as_ref())))
}

/// The public JWK of a PKCS#8 P-256 key (to store in the KBS at the `kid` path).
pub fn public_jwk(pkcs8: &[u8]) -> Result<Value, CdhError> {
    use ring::signature::KeyPair;
    let rng = ring::rand::SystemRandom::new();
    let key = signature::EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, &rng)
        .map_err(|_| CdhError::Malformed("signing key is not PKCS#8 P-256".into()))?;
    let pt = key.public_key().as_ref();
    Ok(
        serde_json::json!({"kty": "EC", "crv": "P-256", "x": B64URL.encode(&pt[1..33]), "y": B64URL.encode(&pt[33..65])}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris() {
        assert_eq!(check_uri("kbs:///a/b/c").unwrap(), "a/b/c");
        assert_eq!(check_uri("kbs://kbs.example:8080/a/b/c").unwrap(), "a/b/c");
        for bad in ["a/b/c", "kbs:///a/b", "kbs:///a/b/c/d", "kbs:///a/../c", "http:///a/b/c", "kbs://"] {
            assert!(check_uri(bad).is_err(), "{bad}");
        }
    }
}
