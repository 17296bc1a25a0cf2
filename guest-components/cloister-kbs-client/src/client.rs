//! The RCAR client.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use cloister_kbs_protocol::binding::{HashAlgorithm, runtime_data_digest};
use cloister_kbs_protocol::{
    Attestation, AttestationToken, Challenge, CompositeEvidence, ErrorInformation, InitData, PROTOCOL_VERSION, Request,
    Response, RuntimeData, SESSION_COOKIE, Tee, TeeKeyPair,
};
use http::{Method, StatusCode, header};
use serde_json::{Value, json};
use tokio::sync::Mutex;
use zeroize::Zeroizing;

use crate::attester::{Attester, AttesterError};
use crate::transport::{Body, Reply, Transport};

/// Client failures.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Connection or TLS failure.
    #[error("cannot reach the KBS: {0}")]
    Transport(String),
    /// The KBS answered with an error body.
    #[error("KBS refused ({status}) {kind}: {detail}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// Error type name.
        kind: String,
        /// The KBS's explanation.
        detail: String,
    },
    /// The KBS answered something that is not the protocol.
    #[error("KBS sent an invalid {what}: {detail}")]
    Protocol {
        /// Which message.
        what: &'static str,
        /// Why it is invalid.
        detail: String,
    },
    /// The resource JWE could not be opened.
    #[error("cannot decrypt the resource: {0}")]
    Jwe(#[from] cloister_kbs_protocol::JweError),
    /// The attester failed.
    #[error(transparent)]
    Attester(#[from] AttesterError),
    /// Bad client configuration.
    #[error("client configuration: {0}")]
    Config(String),
}

impl ClientError {
    /// The HTTP status of a refusal.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Which TEE key to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TeeKeyKind {
    /// EC P-256, `ECDH-ES+A256KW` (CoCo default).
    #[default]
    P256,
    /// EC P-521.
    P521,
    /// RSA-2048, `RSA-OAEP-256`.
    Rsa2048,
}

/// How the KBS's TLS certificate is trusted.
#[derive(Debug, Clone, Default)]
pub enum TrustMode {
    /// Plain `http://` only (development).
    #[default]
    PlainHttpOnly,
    /// Exactly this certificate (SHA-256 of its DER).
    Pinned([u8; 32]),
    /// These CA certificates (DER).
    Ca(Vec<Vec<u8>>),
}

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// TEE key type.
    pub key: TeeKeyKind,
    /// TLS trust.
    pub trust: TrustMode,
    /// Initdata TOML sent with the attestation.
    pub init_data: Option<String>,
    /// Attempts of the handshake (with backoff).
    pub handshake_attempts: u32,
    /// Per-request timeout.
    pub timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            key: TeeKeyKind::P256,
            trust: TrustMode::PlainHttpOnly,
            init_data: None,
            handshake_attempts: 3,
            timeout: Duration::from_secs(30),
        }
    }
}

struct Cached {
    token: String,
    exp: u64,
}

/// A KBS client bound to one attester and one TEE key.
pub struct KbsClient {
    http: Transport,
    attester: Arc<dyn Attester>,
    key: TeeKeyPair,
    opts: ClientOptions,
    token: Mutex<Option<Cached>>,
}

impl std::fmt::Debug for KbsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KbsClient").field("kbs", &self.http).finish_non_exhaustive()
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The KBS's refusal: its `{"type","detail"}` error body, or the start of whatever it sent.
pub(crate) fn refusal(reply: &Reply) -> ClientError {
    let status = reply.status.as_u16();
    match serde_json::from_slice::<ErrorInformation>(&reply.body) {
        Ok(e) => ClientError::Refused { status, kind: e.kind().to_owned(), detail: e.detail },
        Err(_) => ClientError::Refused {
            status,
            kind: "Unknown".into(),
            detail: String::from_utf8_lossy(&reply.body[..reply.body.len().min(200)]).into_owned(),
        },
    }
}

/// Largest SE challenge accepted (an attestation request with 255 key slots is about 30 KiB).
const MAX_SE_CHALLENGE: usize = 64 * 1024;

/// The runtime-data hash: the challenge's `selected-hash-algorithm` if it names one, else
/// SHA-512 for SE and SHA-384 for every other TEE.
fn challenge_hash(extra_params: &Value, tee: Tee) -> Result<HashAlgorithm, ClientError> {
    match extra_params.get("selected-hash-algorithm") {
        Some(Value::String(name)) => HashAlgorithm::from_name(name).ok_or_else(|| ClientError::Protocol {
            what: "challenge",
            detail: format!("unsupported selected-hash-algorithm {name:?}"),
        }),
        Some(_) => {
            Err(ClientError::Protocol { what: "challenge", detail: "selected-hash-algorithm is not a string".into() })
        }
        None if tee == Tee::Se => Ok(HashAlgorithm::Sha512),
        None => Ok(HashAlgorithm::Sha384),
    }
}

/// The `exp` claim of a JWT, without verifying it (the KBS verifies; this is only for caching).
fn token_exp(token: &str) -> Option<u64> {
    /// Only `exp`: the other claims are skipped, not built into a tree.
    #[derive(serde::Deserialize)]
    struct Times {
        exp: Option<u64>,
    }
    let payload = token.split('.').nth(1)?;
    serde_json::from_slice::<Times>(&B64URL.decode(payload).ok()?).ok()?.exp
}

impl KbsClient {
    /// A client for the KBS at `url` (e.g. `https://kbs.example:8080`).
    pub fn new(url: &str, attester: Arc<dyn Attester>, opts: ClientOptions) -> Result<Self, ClientError> {
        let http = Transport::new(url, &opts.trust, opts.timeout)?;
        let key = match opts.key {
            TeeKeyKind::P256 => TeeKeyPair::generate_p256()?,
            TeeKeyKind::P521 => TeeKeyPair::generate_p521()?,
            TeeKeyKind::Rsa2048 => TeeKeyPair::generate_rsa(2048)?,
        };
        Ok(Self { http, attester, key, opts, token: Mutex::new(None) })
    }

    /// Runs `/auth` + `/attest` and returns the new token (also cached).
    pub async fn attest(&self) -> Result<String, ClientError> {
        let mut last = None;
        for attempt in 0..self.opts.handshake_attempts.max(1) {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 << attempt.min(5))).await;
            }
            match self.handshake().await {
                Ok(t) => return Ok(t),
                // Refusals are final: the evidence will not get better by retrying.
                Err(e @ ClientError::Refused { .. }) => return Err(e),
                Err(e @ (ClientError::Attester(_) | ClientError::Config(_) | ClientError::Jwe(_))) => return Err(e),
                Err(e) => {
                    tracing::debug!(attempt, error = %e, "handshake failed, retrying");
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| ClientError::Config("no attempts".into())))
    }

    async fn handshake(&self) -> Result<String, ClientError> {
        let req = Request {
            version: PROTOCOL_VERSION.into(),
            tee: self.attester.tee(),
            extra_params: json!({"supported-hash-algorithms": [if self.attester.tee() == Tee::Se { "sha512" } else { "sha384" }]}),
        };
        let reply =
            self.http.send(Method::POST, "/kbs/v0/auth", None, Some(Body::json(&req)?), Some(SESSION_COOKIE)).await?;
        if !reply.status.is_success() {
            return Err(refusal(&reply));
        }
        let cookie = reply
            .cookie
            .ok_or(ClientError::Protocol { what: "auth response", detail: "no kbs-session-id cookie".into() })?;
        let challenge: Challenge = serde_json::from_slice(&reply.body)
            .map_err(|e| ClientError::Protocol { what: "challenge", detail: e.to_string() })?;
        // SE's nonce is the verifier's attestation request (an ARCB per host: a few KiB).
        let tee = self.attester.tee();
        let max_nonce = if tee == Tee::Se { MAX_SE_CHALLENGE } else { 1024 };
        if challenge.nonce.is_empty() || challenge.nonce.len() > max_nonce {
            return Err(ClientError::Protocol { what: "challenge", detail: "nonce empty or oversized".into() });
        }
        let algorithm = challenge_hash(&challenge.extra_params, tee)?;
        let digest = runtime_data_digest(&challenge.nonce, self.key.public(), "", algorithm);
        let attester = self.attester.clone();
        let nonce = challenge.nonce.clone();
        let evidence = tokio::task::spawn_blocking(move || attester.challenge_evidence(&nonce, &digest))
            .await
            .map_err(|e| ClientError::Config(e.to_string()))??;
        let att = Attestation {
            init_data: self.opts.init_data.as_ref().map(|b| InitData { format: "toml".into(), body: b.clone() }),
            runtime_data: RuntimeData { nonce: challenge.nonce, tee_pubkey: self.key.public().clone() },
            tee_evidence: CompositeEvidence { primary_evidence: evidence, additional_evidence: String::new() },
        };
        let reply = self
            .http
            .send(
                Method::POST,
                "/kbs/v0/attest",
                Some((header::COOKIE, cookie.as_str())),
                Some(Body::json(&att)?),
                None,
            )
            .await?;
        if !reply.status.is_success() {
            return Err(refusal(&reply));
        }
        let t: AttestationToken = serde_json::from_slice(&reply.body)
            .map_err(|e| ClientError::Protocol { what: "attestation token", detail: e.to_string() })?;
        let exp = token_exp(&t.token).ok_or(ClientError::Protocol { what: "token", detail: "no exp claim".into() })?;
        *self.token.lock().await = Some(Cached { token: t.token.clone(), exp });
        Ok(t.token)
    }

    async fn cached_token(&self) -> Result<String, ClientError> {
        self.ensure_token().await.map(|(t, _)| t)
    }

    /// The cached token while it is valid for at least five more seconds, else a new one from
    /// `/auth` + `/attest`; the flag says whether this call attested.
    pub async fn ensure_token(&self) -> Result<(String, bool), ClientError> {
        if let Some(c) = self.token.lock().await.as_ref()
            && c.exp > now() + 5
        {
            return Ok((c.token.clone(), false));
        }
        self.attest().await.map(|t| (t, true))
    }

    /// Fetches and decrypts `repo/type/tag` (or a `kbs:///repo/type/tag` URI) with a Bearer
    /// token, attesting first when there is no valid token and once more on a 401.
    pub async fn get_resource(&self, path: &str) -> Result<Zeroizing<Vec<u8>>, ClientError> {
        let path = path.strip_prefix("kbs://").map(|p| p.split_once('/').map(|x| x.1).unwrap_or(p)).unwrap_or(path);
        let path = path.trim_start_matches('/');
        let mut retried = false;
        loop {
            let token = self.cached_token().await?;
            let bearer = format!("Bearer {token}");
            let reply = self
                .http
                .send(
                    Method::GET,
                    &format!("/kbs/v0/resource/{path}"),
                    Some((header::AUTHORIZATION, bearer.as_str())),
                    None,
                    None,
                )
                .await?;
            if reply.status == StatusCode::UNAUTHORIZED && !retried {
                retried = true;
                *self.token.lock().await = None;
                continue;
            }
            if !reply.status.is_success() {
                return Err(refusal(&reply));
            }
            let jwe: Response = serde_json::from_slice(&reply.body)
                .map_err(|e| ClientError::Protocol { what: "resource JWE", detail: e.to_string() })?;
            return Ok(self.key.decrypt(&jwe)?);
        }
    }

    /// The cached token, if any.
    pub async fn token(&self) -> Option<String> {
        self.token.lock().await.as_ref().map(|c| c.token.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_exp_reads_only_a_whole_exp() {
        let token = |claims: &str| format!("e30.{}.sig", B64URL.encode(claims));
        assert_eq!(
            token_exp(&token(r#"{"eat_profile":"x","submods":{"cpu0":{}},"exp":1767225600}"#)),
            Some(1767225600)
        );
        for bad in [r#"{"iat":1}"#, r#"{"exp":"1767225600"}"#, r#"{"exp":1.5}"#, r#"{"exp":-1}"#, "not json"] {
            assert_eq!(token_exp(&token(bad)), None, "{bad}");
        }
        assert_eq!(token_exp("no-dots"), None);
        assert_eq!(token_exp("a.!!!.c"), None);
    }
}
