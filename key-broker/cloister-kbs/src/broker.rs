//! The key broker's logic, independent of HTTP: sessions, attestation, tokens, the resource
//! policy, resources and the admin operations. Every method takes `now` (UNIX seconds) so that
//! tests control time.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD as B64URL};
use cloister_kbs_protocol::binding::{HashAlgorithm, fit, runtime_data_digest};
use cloister_kbs_protocol::initdata::InitData;
use cloister_kbs_protocol::{Attestation, Challenge, PROTOCOL_VERSION, Request, Response, Tee, TeePubKey, jwe};
use cloister_policy::Policy;
use cloister_verifier::appraisal::{AppraisalInput, AttestationPolicy, appraise};
use cloister_verifier::ear::{Ear, EarSigner, TrustedKeys, VerifiedToken, VerifiedTokens};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::{KbsError, StoreError};
use crate::evidence::Verifiers;
use crate::metrics::Metrics;
use crate::rvps;
use crate::store::{Durability, Namespace, ResourceStore, Stamp};

/// Store key of the resource policy.
pub const RESOURCE_POLICY_KEY: &str = "resource-policy";

/// A protocol session: in the store (shared by the replicas using it) or in the broker's memory
/// (see [`BrokerSettings::shared_sessions`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Session {
    /// The TEE named in `/auth`.
    pub tee: Tee,
    /// The challenge nonce.
    pub nonce: String,
    /// UNIX expiry.
    pub expires: u64,
    /// The token once attested.
    #[serde(default)]
    pub token: Option<String>,
}

/// How a resource request authenticates.
#[derive(Debug, Clone)]
pub enum Credential {
    /// The session cookie.
    Session(String),
    /// `Authorization: Bearer`.
    Bearer(String),
    /// Both (cookie first; an expired cookie falls back to the token).
    Both(String, String),
}

/// A validated `<repo>/<type>/<tag>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourcePath(pub [String; 3]);

impl ResourcePath {
    /// Checks the three segments (`[A-Za-z0-9_-][A-Za-z0-9_.-]*` each).
    pub fn parse(path: &str) -> Result<Self, KbsError> {
        let segs: Vec<&str> = path.split('/').collect();
        let [a, b, c] = segs.as_slice() else {
            return Err(KbsError::InvalidRequestPath(format!("{path:?} is not <repo>/<type>/<tag>")));
        };
        for s in [a, b, c] {
            let mut chars = s.chars();
            let ok_first = chars.next().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            let ok_rest = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
            if !ok_first || !ok_rest || s.len() > 36 {
                return Err(KbsError::InvalidRequestPath(format!("segment {s:?} of {path:?} is not allowed")));
            }
        }
        Ok(Self([a.to_string(), b.to_string(), c.to_string()]))
    }

    /// `repo/type/tag`.
    pub fn key(&self) -> String {
        self.0.join("/")
    }
}

/// Settings the broker needs (from the configuration).
#[derive(Debug, Clone)]
pub struct BrokerSettings {
    /// Session lifetime, seconds.
    pub session_lifetime: u64,
    /// Token lifetime, seconds.
    pub token_lifetime: u64,
    /// Extra keys trusted for Bearer tokens.
    pub trusted_jwks: Vec<Value>,
    /// Trust the token header's key (development only).
    pub insecure_header_jwk: bool,
    /// Keep protocol sessions in the store, where every replica using it sees them; otherwise
    /// they live in this process's memory (one broker, or replicas behind sticky sessions).
    pub shared_sessions: bool,
}

/// How many verified tokens a broker remembers (a few MiB at most).
const VERIFIED_TOKEN_CAPACITY: usize = 4096;

struct Compiled<T> {
    source: Vec<u8>,
    /// The stored record's stamp when `source` was read from it, if the store has stamps.
    stamp: Option<Stamp>,
    value: Arc<T>,
}

/// The broker.
pub struct Broker {
    store: Arc<dyn ResourceStore>,
    verifiers: Verifiers,
    signer: EarSigner,
    trusted: TrustedKeys,
    /// Tokens already verified under `trusted` (or signed here).
    verified_tokens: VerifiedTokens,
    settings: BrokerSettings,
    resource_policy: RwLock<BTreeMap<String, Compiled<Policy>>>,
    attestation_policies: RwLock<BTreeMap<String, Compiled<AttestationPolicy>>>,
    rng: SystemRandom,
    /// Seals IBM SE request secrets into the challenge (key derived from the token signer, so
    /// replicas sharing the signer verify each other's sessions).
    se_sealer: Option<cloister_verifier::se::SeSecretSealer>,
    sessions: std::sync::atomic::AtomicUsize,
    /// Sessions of this process when they are not shared through the store.
    local_sessions: Option<Mutex<HashMap<String, Session>>>,
    /// Counters.
    pub metrics: Metrics,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker").field("verifiers", &self.verifiers).finish_non_exhaustive()
    }
}

fn serde_err(e: serde_json::Error) -> KbsError {
    KbsError::Serde(e.to_string())
}

/// A token's TEE public key, looked up where trustee looks (first hit wins).
pub fn tee_pubkey_of(claims: &Value) -> Option<&Value> {
    const PATHS: [&str; 5] = [
        "/tdx/attester_runtime_data/tee-pubkey",
        "/tdx/attester_user_data/tee-pubkey",
        "/customized_claims/runtime_data/tee-pubkey",
        "/submods/cpu0/ear.veraison.annotated-evidence/runtime_data_claims/tee-pubkey",
        "/tee-pubkey",
    ];
    PATHS.iter().find_map(|p| claims.pointer(p))
}

impl Broker {
    /// A broker over `store` with the given verifiers and token signer.
    pub fn new(
        store: Arc<dyn ResourceStore>,
        verifiers: Verifiers,
        signer: EarSigner,
        settings: BrokerSettings,
    ) -> Self {
        let mut jwks = vec![signer.public_jwk().clone()];
        jwks.extend(settings.trusted_jwks.iter().cloned());
        let trusted = TrustedKeys { jwks, insecure_header_jwk: settings.insecure_header_jwk };
        let mut seal_key = signer.derive_key(b"cloister-kbs/se-request-secrets/v1");
        let se_sealer = cloister_verifier::se::SeSecretSealer::new(&seal_key).ok();
        seal_key.fill(0);
        let local_sessions = (!settings.shared_sessions).then(|| Mutex::new(HashMap::new()));
        Self {
            store,
            verifiers,
            signer,
            trusted,
            verified_tokens: VerifiedTokens::new(VERIFIED_TOKEN_CAPACITY),
            settings,
            resource_policy: RwLock::new(BTreeMap::new()),
            attestation_policies: RwLock::new(BTreeMap::new()),
            rng: SystemRandom::new(),
            se_sealer,
            sessions: std::sync::atomic::AtomicUsize::new(0),
            local_sessions,
            metrics: Metrics::default(),
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn ResourceStore> {
        &self.store
    }

    /// The token signer's public JWK.
    pub fn token_jwk(&self) -> &Value {
        self.signer.public_jwk()
    }

    fn random_bytes<const N: usize>(&self) -> Result<[u8; N], KbsError> {
        let mut b = [0u8; N];
        self.rng.fill(&mut b).map_err(|_| KbsError::Internal("no randomness".into()))?;
        Ok(b)
    }

    fn load_session(&self, id: &str) -> Result<Session, KbsError> {
        if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(KbsError::SessionNotFound(id.chars().take(40).collect()));
        }
        if let Some(local) = &self.local_sessions {
            let table = local.lock().unwrap_or_else(PoisonError::into_inner);
            return table.get(id).cloned().ok_or_else(|| KbsError::SessionNotFound(id.to_owned()));
        }
        let bytes = self.store.get(Namespace::Session, id)?.ok_or_else(|| KbsError::SessionNotFound(id.to_owned()))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| StoreError::Corrupt { what: format!("session {id}"), detail: e.to_string() }.into())
    }

    fn save_session(&self, id: &str, s: &Session) -> Result<(), KbsError> {
        if let Some(local) = &self.local_sessions {
            local.lock().unwrap_or_else(PoisonError::into_inner).insert(id.to_owned(), s.clone());
            return Ok(());
        }
        let bytes = serde_json::to_vec(s).map_err(serde_err)?;
        Ok(self.store.put(Namespace::Session, id, &bytes, Durability::Relaxed)?)
    }

    /// `POST /kbs/v0/auth`: returns (session id, challenge, expiry).
    pub fn auth(&self, body: &[u8], now: u64) -> Result<(String, Challenge, u64), KbsError> {
        let req: Request = serde_json::from_slice(body).map_err(serde_err)?;
        if req.version != PROTOCOL_VERSION {
            return Err(KbsError::ProtocolVersion(format!(
                "client speaks {:?}, this KBS {PROTOCOL_VERSION}",
                req.version
            )));
        }
        let (nonce, extra_params) = match req.tee {
            Tee::Snp | Tee::Tdx | Tee::Sample => {
                (STANDARD.encode(self.random_bytes::<32>()?), Value::String(String::new()))
            }
            // SE's challenge is a verifier-built attestation request, and its binding SHA-512.
            Tee::Se => {
                let sealer = self.se_sealer.as_ref().ok_or_else(|| KbsError::Internal("no SE sealing key".into()))?;
                let request = self.verifiers.se_challenge(sealer).map_err(KbsError::Attestation)?;
                (request, json!({"selected-hash-algorithm": "sha512"}))
            }
            other => {
                return Err(KbsError::Attestation(format!(
                    "TEE {other} is not supported by this key broker (snp, tdx, se, sample)"
                )));
            }
        };
        let id = hex::encode(self.random_bytes::<16>()?);
        let expires = now + self.settings.session_lifetime;
        self.save_session(&id, &Session { tee: req.tee, nonce: nonce.clone(), expires, token: None })?;
        self.sessions.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok((id, Challenge { nonce, extra_params }, expires))
    }

    fn attestation_policy(&self, id: &str) -> Result<Arc<AttestationPolicy>, KbsError> {
        let builtin = || match id {
            "default" => Ok(cloister_policy::builtin::ATTESTATION_DEFAULT_CPU),
            _ => Err(KbsError::PolicyEngine(format!("no attestation policy {id:?}"))),
        };
        self.compiled(&self.attestation_policies, Namespace::AttestationPolicy, id, builtin, |text| {
            AttestationPolicy::new(id, text).map_err(|e| KbsError::PolicyEngine(e.to_string()))
        })
    }

    /// The compiled form of the policy stored at `ns`/`key` (`builtin` when there is none),
    /// compiled again only when its text changed. With a store that has [`Stamp`]s an unchanged
    /// record is not even read: the stamp is taken before the read, so a write racing with it
    /// leaves a stale stamp (read again next time), never a stale policy.
    fn compiled<T>(
        &self,
        cache: &RwLock<BTreeMap<String, Compiled<T>>>,
        ns: Namespace,
        key: &str,
        builtin: impl FnOnce() -> Result<&'static str, KbsError>,
        build: impl FnOnce(&str) -> Result<T, KbsError>,
    ) -> Result<Arc<T>, KbsError> {
        let stamp = self.store.stamp(ns, key)?;
        if stamp.is_some()
            && let Some(c) = cache.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(key)
            && c.stamp == stamp
        {
            return Ok(c.value.clone());
        }
        let source: Vec<u8> = match self.store.get(ns, key)? {
            Some(b) => b.to_vec(),
            None => builtin()?.as_bytes().to_vec(),
        };
        if let Some(c) = cache.write().unwrap_or_else(std::sync::PoisonError::into_inner).get_mut(key)
            && c.source == source
        {
            c.stamp = stamp;
            return Ok(c.value.clone());
        }
        let text = std::str::from_utf8(&source).map_err(|_| KbsError::PolicyEngine("policy is not UTF-8".into()))?;
        let value = Arc::new(build(text)?);
        cache
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key.to_owned(), Compiled { source, stamp, value: value.clone() });
        Ok(value)
    }

    /// `POST /kbs/v0/attest` for session `id`: returns the token.
    pub fn attest(&self, id: &str, body: &[u8], now: u64) -> Result<String, KbsError> {
        let mut session = self.load_session(id)?;
        if now >= session.expires {
            return Err(KbsError::SessionExpired(now - session.expires));
        }
        if let Some(t) = &session.token {
            return Ok(t.clone());
        }
        let att: Attestation = serde_json::from_slice(body).map_err(serde_err)?;
        if att.runtime_data.nonce != session.nonce {
            return Err(KbsError::NonceMismatch);
        }
        if !att.tee_evidence.additional_evidence.is_empty() {
            return Err(KbsError::Attestation("additional device evidence is not supported yet".into()));
        }
        let init = match &att.init_data {
            Some(i) => {
                Some(InitData::from_message(&i.format, &i.body).map_err(|e| KbsError::Attestation(e.to_string()))?)
            }
            None => None,
        };
        // Runtime-data binding: H(JCS({additional-evidence, nonce, tee-pubkey})) in report data,
        // H = SHA-512 for SE (its challenge's selected algorithm), SHA-384 otherwise.
        let digest = runtime_data_digest(
            &att.runtime_data.nonce,
            &att.runtime_data.tee_pubkey,
            &att.tee_evidence.additional_evidence,
            if session.tee == Tee::Se { HashAlgorithm::Sha512 } else { HashAlgorithm::Sha384 },
        );
        let evidence = &att.tee_evidence.primary_evidence;
        let verified = match (session.tee, &self.se_sealer) {
            (Tee::Se, Some(sealer)) => self.verifiers.verify_se(evidence, &session.nonce, sealer, &digest),
            (Tee::Se, None) => Err("no SE sealing key".into()),
            (tee, _) => self.verifiers.verify(tee, evidence, now),
        }
        .map_err(KbsError::Attestation)?;
        let bound = match session.tee {
            Tee::Sample => verified.report_data == digest,
            _ => verified.report_data[..] == fit::<64>(&digest)[..],
        };
        if !bound {
            return Err(KbsError::Attestation(
                "report data is not H(JCS({additional-evidence, nonce, tee-pubkey})): the evidence is not bound to this \
                 session's nonce and TEE key"
                    .into(),
            ));
        }
        // Initdata binding: its digest must be what the host launched the guest with.
        if let Some(init) = &init {
            let want: Vec<u8> = match session.tee {
                Tee::Snp => init.snp_host_data().to_vec(),
                Tee::Tdx => init.tdx_mr_config_id().to_vec(),
                _ => Vec::new(),
            };
            if !want.is_empty() && verified.config_field != want {
                return Err(KbsError::Attestation(format!(
                    "initdata digest {} does not match the evidence's {} {}",
                    hex::encode(&init.digest),
                    if session.tee == Tee::Snp { "HOST_DATA" } else { "MRCONFIGID" },
                    hex::encode(&verified.config_field)
                )));
            }
        }
        let policy = self.attestation_policy("default")?;
        let refs = rvps::all(self.store.as_ref(), now)?;
        let input = AppraisalInput {
            tee: verified.tee_key.to_owned(),
            claims: verified.claims,
            report_data: Some(STANDARD.encode(&digest)),
            init_data: init.as_ref().map(|i| hex::encode(&i.digest)),
            init_data_claims: init.as_ref().map(InitData::claims),
            runtime_data_claims: Some(json!({
                "nonce": att.runtime_data.nonce,
                "tee-pubkey": serde_json::to_value(&att.runtime_data.tee_pubkey).map_err(serde_err)?,
            })),
        };
        let submod = appraise(&policy, &input, &refs).map_err(|e| KbsError::PolicyEngine(e.to_string()))?;
        tracing::info!(session = id, tee = verified.tee_key, status = submod.status.as_str(), "attested");
        let mut ear = Ear::new(now, self.settings.token_lifetime, submod);
        ear.issuer = "cloister-kbs".into();
        let token = self.signer.sign(&ear).map_err(|e| KbsError::Internal(e.to_string()))?;
        self.verified_tokens.remember_signed(&token, now);
        session.token = Some(token.clone());
        self.save_session(id, &session)?;
        Ok(token)
    }

    fn token_claims(&self, cred: &Credential, now: u64) -> Result<Arc<VerifiedToken>, KbsError> {
        let from_session = |id: &str| -> Result<String, KbsError> {
            let s = self.load_session(id)?;
            if now >= s.expires {
                return Err(KbsError::SessionExpired(now - s.expires));
            }
            s.token.ok_or(KbsError::SessionNotAttested)
        };
        let token = match cred {
            Credential::Session(id) => from_session(id)?,
            Credential::Bearer(t) => t.clone(),
            Credential::Both(id, t) => from_session(id).unwrap_or_else(|_| t.clone()),
        };
        self.verified_tokens.verify(&token, &self.trusted, now).map_err(|e| KbsError::TokenVerifier(e.to_string()))
    }

    fn resource_policy(&self) -> Result<Arc<Policy>, KbsError> {
        let builtin = || Ok(cloister_policy::builtin::RESOURCE_DEFAULT);
        self.compiled(&self.resource_policy, Namespace::Kbs, RESOURCE_POLICY_KEY, builtin, |text| {
            Policy::new("resource", text.to_owned()).map_err(|e| KbsError::PolicyEngine(e.to_string()))
        })
    }

    /// Evaluates the resource policy; on denial the detail names the policy's `deny_reasons`
    /// (when it defines them) or says that `allow` was not true.
    pub fn decide(
        &self,
        token: &VerifiedToken,
        path: &ResourcePath,
        query: &BTreeMap<String, String>,
    ) -> Result<(), KbsError> {
        let policy = self.resource_policy()?;
        let data = json!({"plugin": "resource", "resource-path": path.0, "query": query});
        self.metrics.inc(&self.metrics.policy_evaluations);
        let claims = token.claims();
        // Approvals are remembered per (token, request) by a deterministic policy: a cached
        // Bearer token asking for the same resource again is answered without re-evaluating.
        let allowed = match token.id() {
            Some(id) => {
                let mut h = ring::digest::Context::new(&ring::digest::SHA256);
                h.update(id);
                h.update(data.to_string().as_bytes());
                let mut key = [0u8; 32];
                key.copy_from_slice(h.finish().as_ref());
                policy.allows_memo(key, token.policy_input(), &data)
            }
            None => policy.allows_input(token.policy_input(), &data),
        }
        .map_err(|e| {
            self.metrics.inc(&self.metrics.policy_errors);
            KbsError::PolicyEngine(e.to_string())
        })?;
        if allowed {
            self.metrics.inc(&self.metrics.policy_approvals);
            return Ok(());
        }
        self.metrics.inc(&self.metrics.policy_violations);
        let reasons = policy.eval_rule("deny_reasons", claims, &data).unwrap_or(Value::Null);
        let detail = match reasons {
            Value::Array(a) if !a.is_empty() => a
                .iter()
                .map(|r| r.as_str().map(str::to_owned).unwrap_or_else(|| r.to_string()))
                .collect::<Vec<_>>()
                .join("; "),
            _ => "data.policy.allow is not true for this token and resource".into(),
        };
        Err(KbsError::PolicyDeny(detail))
    }

    /// `GET /kbs/v0/resource/<path>`: the JWE of the resource.
    pub fn get_resource(
        &self,
        cred: &Credential,
        path: &ResourcePath,
        query: &BTreeMap<String, String>,
        now: u64,
    ) -> Result<Response, KbsError> {
        let token = self.token_claims(cred, now)?;
        let key_value = tee_pubkey_of(token.claims()).ok_or_else(|| KbsError::TeeKey("no tee-pubkey claim".into()))?;
        let key: TeePubKey =
            serde_json::from_value(key_value.clone()).map_err(|e| KbsError::TeeKey(format!("tee-pubkey: {e}")))?;
        self.decide(&token, path, query)?;
        let secret = self
            .store
            .get(Namespace::Repository, &path.key())?
            .ok_or_else(|| KbsError::ResourceNotFound(path.key()))?;
        self.metrics.inc(&self.metrics.resource_reads);
        jwe::encrypt(&key, &secret).map_err(|e| KbsError::Jwe(e.to_string()))
    }

    /// Admin: stores a resource (durably, before returning).
    pub fn set_resource(&self, path: &ResourcePath, value: &[u8]) -> Result<(), KbsError> {
        self.store.put(Namespace::Repository, &path.key(), value, Durability::Durable)?;
        self.metrics.inc(&self.metrics.resource_writes);
        tracing::info!(resource = %path.key(), len = value.len(), "resource stored");
        Ok(())
    }

    /// Admin: deletes a resource.
    pub fn delete_resource(&self, path: &ResourcePath) -> Result<(), KbsError> {
        if !self.store.delete(Namespace::Repository, &path.key())? {
            return Err(KbsError::ResourceNotFound(path.key()));
        }
        self.metrics.inc(&self.metrics.resource_deletes);
        tracing::info!(resource = %path.key(), "resource deleted");
        Ok(())
    }

    /// Admin: `{"policy": "<base64url Rego>"}` → resource policy (compiled before storing).
    pub fn set_resource_policy(&self, body: &[u8]) -> Result<(), KbsError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Upload {
            policy: String,
        }
        let u: Upload = serde_json::from_slice(body).map_err(serde_err)?;
        let text = decode_policy(&u.policy)?;
        Policy::new("resource", text.clone()).map_err(|e| KbsError::InvalidUpload(e.to_string()))?;
        self.store.put(Namespace::Kbs, RESOURCE_POLICY_KEY, text.as_bytes(), Durability::Durable)?;
        tracing::info!("resource policy replaced");
        Ok(())
    }

    /// Admin: the resource policy in effect (`{"policy": "<base64url>"}`).
    pub fn get_resource_policy(&self) -> Result<Value, KbsError> {
        let p = self.resource_policy()?;
        Ok(json!({"policy": B64URL.encode(p.source())}))
    }

    /// Admin: `{"type":"rego","policy_id":…,"policy":"<base64url>"}` → attestation policy.
    pub fn set_attestation_policy(&self, body: &[u8]) -> Result<(), KbsError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Upload {
            #[serde(rename = "type", default = "rego")]
            kind: String,
            policy_id: String,
            policy: String,
        }
        fn rego() -> String {
            "rego".into()
        }
        let u: Upload = serde_json::from_slice(body).map_err(serde_err)?;
        if u.kind != "rego" {
            return Err(KbsError::InvalidUpload(format!("policy type {:?} is not rego", u.kind)));
        }
        if u.policy_id.is_empty()
            || u.policy_id.len() > 64
            || !u.policy_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(KbsError::InvalidUpload(format!("policy id {:?} is not [A-Za-z0-9_-]{{1,64}}", u.policy_id)));
        }
        let text = decode_policy(&u.policy)?;
        AttestationPolicy::new(&u.policy_id, &text).map_err(|e| KbsError::InvalidUpload(e.to_string()))?;
        self.store.put(Namespace::AttestationPolicy, &u.policy_id, text.as_bytes(), Durability::Durable)?;
        tracing::info!(policy_id = %u.policy_id, "attestation policy replaced");
        Ok(())
    }

    /// Admin: registers reference values (RVPS message, or `cloister measure` JSON).
    pub fn register_reference_values(&self, body: &[u8], now: u64) -> Result<Vec<String>, KbsError> {
        let v: Value = serde_json::from_slice(body).map_err(serde_err)?;
        let values = if v.get("payload").is_some() { rvps::parse_message(body)? } else { rvps::named_values(&v)? };
        rvps::register(self.store.as_ref(), values, now, rvps::DEFAULT_LIFETIME_SECS)
    }

    /// Admin: one reference value.
    pub fn reference_value(&self, name: &str, now: u64) -> Result<Vec<Value>, KbsError> {
        if name.is_empty() || name.len() > 100 {
            return Err(KbsError::ReferenceValueNotFound(name.chars().take(40).collect()));
        }
        rvps::query(self.store.as_ref(), name, now)?.ok_or_else(|| KbsError::ReferenceValueNotFound(name.to_owned()))
    }

    /// Admin debug: evaluates the resource policy for `claims` (a token's claims or a token)
    /// and a path, returning the decision and the policy's `deny_reasons`.
    pub fn explain(&self, body: &[u8], now: u64) -> Result<Value, KbsError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Ask {
            #[serde(default)]
            token: Option<String>,
            #[serde(default)]
            claims: Option<Value>,
            path: String,
            #[serde(default)]
            query: BTreeMap<String, String>,
        }
        let ask: Ask = serde_json::from_slice(body).map_err(serde_err)?;
        let claims = match (ask.token, ask.claims) {
            (Some(t), _) => self.token_claims(&Credential::Bearer(t), now)?,
            (None, Some(c)) => Arc::new(VerifiedToken::from_claims(c)),
            (None, None) => return Err(KbsError::Serde("give a token or claims".into())),
        };
        let path = ResourcePath::parse(&ask.path)?;
        let decision = self.decide(&claims, &path, &ask.query);
        let policy = self.resource_policy()?;
        let data = json!({"plugin": "resource", "resource-path": path.0, "query": ask.query});
        let reasons = policy.eval_rule("deny_reasons", claims.claims(), &data).unwrap_or(Value::Null);
        Ok(json!({
            "allow": decision.is_ok(),
            "detail": decision.err().map(|e| e.to_string()),
            "deny_reasons": reasons,
            "statuses": claims.claims().get("submods").and_then(Value::as_object).map(|m| m.iter().map(|(k, v)| (k.clone(), v.get("ear.status").cloned().unwrap_or(Value::Null))).collect::<serde_json::Map<_, _>>()),
        }))
    }

    /// Sessions created by this process since the last sweep plus those found then (a bound
    /// for the session table, not an exact count).
    pub fn session_count_hint(&self) -> usize {
        if let Some(local) = &self.local_sessions {
            return local.lock().unwrap_or_else(PoisonError::into_inner).len();
        }
        self.sessions.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Deletes expired sessions; returns how many.
    pub fn sweep_sessions(&self, now: u64) -> Result<usize, KbsError> {
        if let Some(local) = &self.local_sessions {
            let mut table = local.lock().unwrap_or_else(PoisonError::into_inner);
            let before = table.len();
            table.retain(|_, s| now < s.expires);
            self.sessions.store(table.len(), std::sync::atomic::Ordering::Relaxed);
            return Ok(before - table.len());
        }
        // A session expires `session_lifetime` after `/auth`, and its record is last written no
        // earlier than that: records untouched for longer are expired. Stores that can select by
        // write time do it in one statement instead of reading every session.
        if let Some((deleted, remaining)) =
            self.store.sweep_untouched(Namespace::Session, self.settings.session_lifetime + 1)?
        {
            self.sessions.store(remaining, std::sync::atomic::Ordering::Relaxed);
            return Ok(deleted);
        }
        let mut n = 0;
        let ids = self.store.list(Namespace::Session)?;
        let total = ids.len();
        for id in ids {
            let expired = match self.load_session(&id) {
                Ok(s) => now >= s.expires,
                Err(_) => true,
            };
            if expired && self.store.delete(Namespace::Session, &id)? {
                n += 1;
            }
        }
        self.sessions.store(total - n, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
}

fn decode_policy(b64: &str) -> Result<String, KbsError> {
    let bytes = B64URL
        .decode(b64.trim())
        .map_err(|e| KbsError::InvalidUpload(format!("policy is not base64url without padding: {e}")))?;
    String::from_utf8(bytes).map_err(|_| KbsError::InvalidUpload("policy is not UTF-8".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::VerifierConfig;
    use crate::store::MemoryStore;
    use cloister_kbs_protocol::TeeKeyPair;
    use std::io::Write;

    fn broker() -> Broker {
        broker_with(true)
    }

    /// A broker on `store` with a fresh signer and 300 s sessions and tokens.
    fn broker_on(store: Arc<dyn ResourceStore>, shared_sessions: bool) -> Broker {
        let (signer, _) = EarSigner::generate().unwrap();
        let settings = BrokerSettings {
            session_lifetime: 300,
            token_lifetime: 300,
            trusted_jwks: vec![],
            insecure_header_jwk: false,
            shared_sessions,
        };
        Broker::new(store, Verifiers::from_config(&VerifierConfig::default()).unwrap(), signer, settings)
    }

    fn broker_with(shared_sessions: bool) -> Broker {
        let b = broker_on(Arc::new(MemoryStore::default()), shared_sessions);
        b.store
            .put(
                Namespace::Kbs,
                RESOURCE_POLICY_KEY,
                cloister_policy::builtin::RESOURCE_ALLOW_ALL.as_bytes(),
                Durability::Durable,
            )
            .unwrap();
        b
    }

    fn attestation(nonce: &str, key: &TeeKeyPair) -> Vec<u8> {
        let d = runtime_data_digest(nonce, key.public(), "", HashAlgorithm::Sha384);
        json!({"init-data": null, "runtime-data": {"nonce": nonce, "tee-pubkey": key.public()},
               "tee-evidence": {"primary_evidence": {"svn": "1", "report_data": STANDARD.encode(d)}, "additional_evidence": ""}})
        .to_string()
        .into_bytes()
    }

    const AUTH: &[u8] = br#"{"version":"0.4.0","tee":"sample","extra-params":""}"#;

    /// Two replicas on one on-disk store: a policy one of them replaces is in force at the other
    /// on its next decision (the compiled policy is kept only while the record's stamp holds).
    #[test]
    fn a_policy_replaced_by_another_replica_is_in_force_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let replica = || broker_on(Arc::new(crate::store::FsStore::open(dir.path()).unwrap()), true);
        let (a, b) = (replica(), replica());
        let token = VerifiedToken::from_claims(json!({"submods": {}}));
        let path = ResourcePath::parse("a/b/c").unwrap();
        let q = BTreeMap::new();
        let upload = |p: &str| json!({"policy": B64URL.encode(p)}).to_string().into_bytes();
        for (policy, allowed) in [
            (cloister_policy::builtin::RESOURCE_ALLOW_ALL, true),
            (cloister_policy::builtin::RESOURCE_DENY_ALL, false),
            (cloister_policy::builtin::RESOURCE_ALLOW_ALL, true),
        ] {
            a.set_resource_policy(&upload(policy)).unwrap();
            for _ in 0..2 {
                let d = b.decide(&token, &path, &q);
                assert_eq!(d.is_ok(), allowed, "{d:?}");
            }
        }
        // Deleted: the built-in default (which refuses these claims) is in force again.
        a.store.delete(Namespace::Kbs, RESOURCE_POLICY_KEY).unwrap();
        assert!(matches!(b.decide(&token, &path, &q), Err(KbsError::PolicyDeny(_))));
    }

    #[test]
    fn sessions_and_tokens_expire() {
        for shared in [true, false] {
            sessions_and_tokens_expire_with(shared);
        }
    }

    fn sessions_and_tokens_expire_with(shared: bool) {
        let b = broker_with(shared);
        let key = TeeKeyPair::generate_p256().unwrap();
        let (id, ch, exp) = b.auth(AUTH, 1_000).unwrap();
        assert_eq!(exp, 1_300);
        assert!(matches!(b.attest(&id, &attestation(&ch.nonce, &key), 1_300), Err(KbsError::SessionExpired(0))));
        let (id, ch, _) = b.auth(AUTH, 2_000).unwrap();
        let token = b.attest(&id, &attestation(&ch.nonce, &key), 2_000).unwrap();
        // Attesting again returns the same token (trustee behaviour).
        assert_eq!(b.attest(&id, &attestation(&ch.nonce, &key), 2_001).unwrap(), token);
        b.set_resource(&ResourcePath::parse("a/b/c").unwrap(), b"s").unwrap();
        let path = ResourcePath::parse("a/b/c").unwrap();
        let q = BTreeMap::new();
        assert!(b.get_resource(&Credential::Bearer(token.clone()), &path, &q, 2_299).is_ok());
        assert!(matches!(
            b.get_resource(&Credential::Bearer(token), &path, &q, 2_300),
            Err(KbsError::TokenVerifier(_))
        ));
        // An expired cookie falls back to the Bearer token; an expired cookie alone fails.
        assert!(matches!(
            b.get_resource(&Credential::Session(id.clone()), &path, &q, 2_300),
            Err(KbsError::SessionExpired(_))
        ));
        // Sessions are in the store only when shared.
        assert_eq!(b.store.list(Namespace::Session).unwrap().len(), if shared { 2 } else { 0 });
        assert_eq!(b.session_count_hint(), 2);
        // Swept.
        assert_eq!(b.sweep_sessions(3_000).unwrap(), 2);
        assert_eq!(b.session_count_hint(), 0);
        assert!(matches!(b.attest(&id, &[], 3_000), Err(KbsError::SessionNotFound(_))));
    }

    #[derive(Clone, Default)]
    struct Buf(Arc<std::sync::Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn resources_never_reach_the_logs() {
        let buf = Buf::default();
        let w = buf.clone();
        let sub =
            tracing_subscriber::fmt().with_max_level(tracing::Level::TRACE).with_writer(move || w.clone()).finish();
        tracing::subscriber::with_default(sub, || {
            let b = broker();
            let key = TeeKeyPair::generate_p256().unwrap();
            let secret = b"SECRET-7f3a9c-DO-NOT-LOG";
            let path = ResourcePath::parse("app/key/1").unwrap();
            b.set_resource(&path, secret).unwrap();
            let (id, ch, _) = b.auth(AUTH, 1_000).unwrap();
            b.attest(&id, &attestation(&ch.nonce, &key), 1_000).unwrap();
            let jwe = b.get_resource(&Credential::Session(id), &path, &BTreeMap::new(), 1_001).unwrap();
            assert_eq!(&key.decrypt(&jwe).unwrap()[..], secret);
        });
        let logs = String::from_utf8_lossy(&buf.0.lock().unwrap()).into_owned();
        assert!(logs.contains("resource stored"), "logging was captured: {logs}");
        assert!(!logs.contains("SECRET-7f3a9c"), "a resource leaked into the logs");
    }

    #[test]
    fn resource_paths() {
        assert!(ResourcePath::parse("default/key/1").is_ok());
        assert!(ResourcePath::parse("a..b/c/d").is_ok());
        for bad in ["a/b", "a/b/c/d", "../b/c", "a/./c", "a/b/", ".a/b/c", "a/b/c d", "a/b/\u{e9}"] {
            assert!(matches!(ResourcePath::parse(bad), Err(KbsError::InvalidRequestPath(_))), "{bad}");
        }
    }

    #[test]
    fn tee_pubkey_lookup_order() {
        let c = json!({"tee-pubkey": 1, "submods": {"cpu0": {"ear.veraison.annotated-evidence": {"runtime_data_claims": {"tee-pubkey": 2}}}}});
        assert_eq!(tee_pubkey_of(&c), Some(&json!(2)));
        assert_eq!(tee_pubkey_of(&json!({"tee-pubkey": 1})), Some(&json!(1)));
        assert_eq!(tee_pubkey_of(&json!({})), None);
    }
}
