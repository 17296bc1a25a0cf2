//! EAR attestation results (draft-ietf-rats-ear) with AR4SI trustworthiness vectors, serialised
//! as ES256-signed JWTs in the shape trustee emits.
//!
//! Output uses the dotted claim names of the `ear` crate 0.5 that trustee and its policies use
//! (`ear.status`, `ear.trustworthiness-vector`, `ear.appraisal-policy-id`, …, submodules named
//! `cpu0`, …); input accepts both those and the underscore names of draft -04 (`ear_status`, …).
//!
//! **What it trusts:** a token is only believed after its ES256 signature verifies with a key the
//! caller trusts and its `exp` has not passed; the key embedded in the JOSE header is used only
//! when the caller explicitly opts into `insecure_header_jwk` (development).

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair};
use serde_json::{Map, Value, json};

/// The `eat_profile` trustee uses (and we emit).
pub const PROFILE_TRUSTEE: &str = "tag:github.com,2024:confidential-containers/Trustee";
/// The draft -04 profile (accepted on input).
pub const PROFILE_DRAFT04: &str = "tag:ietf.org,2026:rats/ear#04";

/// Why a token could not be produced or accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EarError {
    /// Not three base64url parts.
    #[error("token is not a compact JWS (header.payload.signature)")]
    Malformed,
    /// A part is not valid base64url / JSON.
    #[error("token {part} is not valid base64url JSON")]
    BadPart {
        /// `header`, `payload` or `signature`.
        part: &'static str,
    },
    /// Only ES256 is accepted.
    #[error("token algorithm '{0}' is not accepted (only ES256)")]
    Algorithm(String),
    /// No trusted key verified the signature.
    #[error("token signature does not verify with any trusted key")]
    Signature,
    /// `exp` has passed.
    #[error("token expired at {exp} (now {now})")]
    Expired {
        /// Expiry.
        exp: u64,
        /// Now.
        now: u64,
    },
    /// `iat` is in the future.
    #[error("token issued in the future ({iat} > now {now})")]
    NotYetValid {
        /// Issue time.
        iat: u64,
        /// Now.
        now: u64,
    },
    /// Claims do not have the EAR shape.
    #[error("token claims are not an EAR: {0}")]
    Shape(&'static str),
    /// The signing key is unusable.
    #[error("signing key: {0}")]
    Key(&'static str),
}

/// AR4SI trust tiers, ordered from least to most severe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// No claim was made.
    None,
    /// The evidence supports trust.
    Affirming,
    /// Something is unexpected but not disqualifying.
    Warning,
    /// The evidence contradicts trust.
    Contraindicated,
}

impl Status {
    /// The tier of one trust-claim value (`ear` crate rule: −1..1 none, −32..31 affirming,
    /// −96..95 warning, else contraindicated).
    pub fn of_claim(v: i8) -> Status {
        match v {
            -1..=1 => Status::None,
            -32..=31 => Status::Affirming,
            -96..=95 => Status::Warning,
            _ => Status::Contraindicated,
        }
    }

    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::None => "none",
            Status::Affirming => "affirming",
            Status::Warning => "warning",
            Status::Contraindicated => "contraindicated",
        }
    }

    fn parse(s: &str) -> Option<Status> {
        Some(match s {
            "none" => Status::None,
            "affirming" => Status::Affirming,
            "warning" => Status::Warning,
            "contraindicated" => Status::Contraindicated,
            _ => return None,
        })
    }
}

/// Names of the eight AR4SI trustworthiness claims, in order.
pub const TRUST_CLAIMS: [&str; 8] = [
    "instance-identity",
    "configuration",
    "executables",
    "file-system",
    "hardware",
    "runtime-opaque",
    "storage-opaque",
    "sourced-data",
];

/// Well-known AR4SI values.
pub mod claim {
    /// No claim.
    pub const NONE: i8 = 0;
    /// Verifier malfunction.
    pub const VERIFIER_MALFUNCTION: i8 = -1;
    /// Genuine, approved (hardware 2, configuration 2).
    pub const APPROVED: i8 = 2;
    /// Only approved executables were loaded at boot (executables 3).
    pub const APPROVED_BOOT: i8 = 3;
    /// Unrecognised executables (executables 33).
    pub const UNRECOGNIZED_EXECUTABLES: i8 = 33;
    /// Security-relevant configuration unavailable (configuration 36).
    pub const CONFIG_UNAVAILABLE: i8 = 36;
    /// Hardware not recognised but should be (hardware 97).
    pub const UNRECOGNIZED_HARDWARE: i8 = 97;
    /// Cryptographic validation of the evidence failed.
    pub const CRYPTO_FAILED: i8 = 99;
}

/// An AR4SI trustworthiness vector (values in [`TRUST_CLAIMS`] order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TrustVector(pub [i8; 8]);

impl TrustVector {
    /// Sets a claim by name; unknown names are ignored and reported as `false`.
    pub fn set(&mut self, name: &str, v: i8) -> bool {
        match TRUST_CLAIMS.iter().position(|n| *n == name) {
            Some(i) => {
                self.0[i] = v;
                true
            }
            None => false,
        }
    }

    /// A claim by name.
    pub fn get(&self, name: &str) -> Option<i8> {
        TRUST_CLAIMS.iter().position(|n| *n == name).map(|i| self.0[i])
    }

    /// The worst tier among the claims.
    pub fn status(&self) -> Status {
        self.0.iter().map(|v| Status::of_claim(*v)).max().unwrap_or(Status::None)
    }

    /// `{"instance-identity": 0, …}`.
    pub fn to_json(&self) -> Value {
        Value::Object(TRUST_CLAIMS.iter().zip(self.0).map(|(n, v)| ((*n).to_owned(), json!(v))).collect())
    }

    fn from_json(v: &Value) -> Result<Self, EarError> {
        let obj = v.as_object().ok_or(EarError::Shape("trustworthiness vector is not an object"))?;
        let mut tv = TrustVector::default();
        for (k, v) in obj {
            let n = v.as_i64().and_then(|n| i8::try_from(n).ok()).ok_or(EarError::Shape("trust claim out of range"))?;
            // Accept both the hyphenated AR4SI names and underscore spellings.
            tv.set(&k.replace('_', "-"), n);
        }
        Ok(tv)
    }
}

/// One appraised attester (`submods.cpu0`).
#[derive(Debug, Clone, PartialEq)]
pub struct Submod {
    /// The overall status (normally `trust_vector.status()`).
    pub status: Status,
    /// The trustworthiness vector.
    pub trust_vector: TrustVector,
    /// The appraisal policy that produced it.
    pub policy_id: String,
    /// TEE claims and runtime data, as policies see them (`ear.veraison.annotated-evidence`).
    pub annotated_evidence: Value,
}

/// An attestation result.
#[derive(Debug, Clone, PartialEq)]
pub struct Ear {
    /// `eat_profile`.
    pub profile: String,
    /// Issued at (UNIX seconds).
    pub iat: u64,
    /// Expires at (UNIX seconds).
    pub exp: u64,
    /// `iss`.
    pub issuer: String,
    /// `ear.verifier-id` build.
    pub verifier_build: String,
    /// `ear.verifier-id` developer.
    pub verifier_developer: String,
    /// Submodules by name.
    pub submods: BTreeMap<String, Submod>,
}

impl Ear {
    /// A result for one submodule `cpu0`, issued at `iat`, valid for `lifetime` seconds.
    pub fn new(iat: u64, lifetime: u64, submod: Submod) -> Self {
        Ear {
            profile: PROFILE_TRUSTEE.to_owned(),
            iat,
            exp: iat.saturating_add(lifetime),
            issuer: "cloister-verifier".to_owned(),
            verifier_build: concat!("cloister-verifier ", env!("CARGO_PKG_VERSION")).to_owned(),
            verifier_developer: "https://cloister.invalid".to_owned(),
            submods: BTreeMap::from([("cpu0".to_owned(), submod)]),
        }
    }

    /// The claims object with trustee's (dotted) names.
    pub fn to_claims(&self) -> Value {
        let submods: Map<String, Value> = self
            .submods
            .iter()
            .map(|(k, s)| {
                (
                    k.clone(),
                    json!({
                        "ear.status": s.status.as_str(),
                        "ear.trustworthiness-vector": s.trust_vector.to_json(),
                        "ear.appraisal-policy-id": s.policy_id,
                        "ear.veraison.annotated-evidence": s.annotated_evidence,
                    }),
                )
            })
            .collect();
        json!({
            "eat_profile": self.profile,
            "iat": self.iat,
            "exp": self.exp,
            "iss": self.issuer,
            "ear.verifier-id": {"developer": self.verifier_developer, "build": self.verifier_build},
            "submods": submods,
        })
    }

    /// Reads claims in either spelling (dotted names of `ear` 0.5 / trustee, or underscore names of
    /// draft -04 with a policy-id list).
    pub fn from_claims(v: &Value) -> Result<Self, EarError> {
        let get =
            |o: &Value, dotted: &str, under: &str| -> Option<Value> { o.get(dotted).or_else(|| o.get(under)).cloned() };
        let profile = v.get("eat_profile").and_then(Value::as_str).ok_or(EarError::Shape("no eat_profile"))?;
        let iat = v.get("iat").and_then(Value::as_u64).ok_or(EarError::Shape("no iat"))?;
        let exp = v.get("exp").and_then(Value::as_u64).unwrap_or(u64::MAX);
        let vid = get(v, "ear.verifier-id", "ear_verifier_id").unwrap_or(Value::Null);
        let submods_v = v.get("submods").and_then(Value::as_object).ok_or(EarError::Shape("no submods"))?;
        let mut submods = BTreeMap::new();
        for (name, s) in submods_v {
            let status = get(s, "ear.status", "ear_status")
                .and_then(|x| x.as_str().and_then(Status::parse))
                .ok_or(EarError::Shape("submodule without a valid status"))?;
            let trust_vector = match get(s, "ear.trustworthiness-vector", "ear_trustworthiness_vector") {
                Some(tv) => TrustVector::from_json(&tv)?,
                None => TrustVector::default(),
            };
            let policy_id = match get(s, "ear.appraisal-policy-id", "ear_appraisal_policy_ids") {
                Some(Value::String(p)) => p,
                Some(Value::Array(a)) => a.first().and_then(Value::as_str).unwrap_or_default().to_owned(),
                _ => String::new(),
            };
            let annotated_evidence =
                get(s, "ear.veraison.annotated-evidence", "ear_veraison_annotated_evidence").unwrap_or(Value::Null);
            submods.insert(name.clone(), Submod { status, trust_vector, policy_id, annotated_evidence });
        }
        Ok(Ear {
            profile: profile.to_owned(),
            iat,
            exp,
            issuer: v.get("iss").and_then(Value::as_str).unwrap_or_default().to_owned(),
            verifier_build: vid.get("build").and_then(Value::as_str).unwrap_or_default().to_owned(),
            verifier_developer: vid.get("developer").and_then(Value::as_str).unwrap_or_default().to_owned(),
            submods,
        })
    }
}

/// An ES256 token signer (P-256 key; PKCS#8 so it can be persisted).
pub struct EarSigner {
    key: EcdsaKeyPair,
    jwk: Value,
    rng: SystemRandom,
    /// HMAC-SHA256 of a fixed label under the PKCS#8 document: the root of
    /// [`EarSigner::derive_key`].
    derive_root: [u8; 32],
}

impl Drop for EarSigner {
    fn drop(&mut self) {
        self.derive_root.fill(0);
        std::hint::black_box(&self.derive_root);
    }
}

impl std::fmt::Debug for EarSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EarSigner").field("jwk", &self.jwk).finish_non_exhaustive()
    }
}

/// The public JWK of an uncompressed P-256 point (`04 ‖ x ‖ y`).
pub fn p256_jwk(point: &[u8]) -> Option<Value> {
    if point.len() != 65 || point[0] != 4 {
        return None;
    }
    Some(json!({
        "kty": "EC", "crv": "P-256", "alg": "ES256",
        "x": B64URL.encode(&point[1..33]), "y": B64URL.encode(&point[33..65]),
    }))
}

fn jwk_point(jwk: &Value) -> Option<Vec<u8>> {
    if jwk.get("kty")?.as_str()? != "EC" || jwk.get("crv")?.as_str()? != "P-256" {
        return None;
    }
    let x = B64URL.decode(jwk.get("x")?.as_str()?).ok()?;
    let y = B64URL.decode(jwk.get("y")?.as_str()?).ok()?;
    if x.len() != 32 || y.len() != 32 {
        return None;
    }
    Some([&[4u8][..], &x, &y].concat())
}

impl EarSigner {
    /// A fresh key; returns the signer and its PKCS#8 document (persist it to keep tokens valid
    /// across restarts).
    pub fn generate() -> Result<(Self, Vec<u8>), EarError> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| EarError::Key("cannot generate a P-256 key"))?;
        let signer = Self::from_pkcs8(pkcs8.as_ref())?;
        Ok((signer, pkcs8.as_ref().to_vec()))
    }

    /// From a PKCS#8 P-256 private key.
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, EarError> {
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, &rng)
            .map_err(|_| EarError::Key("not a PKCS#8 P-256 private key"))?;
        let jwk = p256_jwk(key.public_key().as_ref()).ok_or(EarError::Key("unexpected public key encoding"))?;
        let root =
            ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, pkcs8), b"cloister/ear-signer/derive/v1");
        let mut derive_root = [0u8; 32];
        derive_root.copy_from_slice(root.as_ref());
        Ok(EarSigner { key, jwk, rng, derive_root })
    }

    /// A 32-byte symmetric key for `label`, derived from the signing key: every replica that
    /// shares the signing key derives the same key (used to seal state the broker hands out and
    /// must read back, such as IBM SE request secrets). Different labels give independent keys.
    pub fn derive_key(&self, label: &[u8]) -> [u8; 32] {
        let tag = ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &self.derive_root), label);
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// The public key as a JWK (what verifiers trust).
    pub fn public_jwk(&self) -> &Value {
        &self.jwk
    }

    /// Signs `ear` as a compact JWS (`{"alg":"ES256","typ":"JWT","jwk":…}`).
    pub fn sign(&self, ear: &Ear) -> Result<String, EarError> {
        let header = json!({"alg": "ES256", "typ": "JWT", "jwk": self.jwk});
        let input = format!("{}.{}", B64URL.encode(header.to_string()), B64URL.encode(ear.to_claims().to_string()));
        let sig = self.key.sign(&self.rng, input.as_bytes()).map_err(|_| EarError::Key("signing failed"))?;
        Ok(format!("{input}.{}", B64URL.encode(sig.as_ref())))
    }
}

/// Which keys a token may be signed with.
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    /// Trusted P-256 JWKs.
    pub jwks: Vec<Value>,
    /// Development only: trust the key carried in the token header.
    pub insecure_header_jwk: bool,
}

/// Verifies an ES256 compact JWS and returns its claims JSON (signature and time checked).
pub fn verify_jws(token: &str, keys: &TrustedKeys, now: u64) -> Result<Value, EarError> {
    let mut parts = token.trim().split('.');
    let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(EarError::Malformed);
    };
    let decode_json = |part: &'static str, t: &str| -> Result<Value, EarError> {
        let bytes = B64URL.decode(t).map_err(|_| EarError::BadPart { part })?;
        serde_json::from_slice(&bytes).map_err(|_| EarError::BadPart { part })
    };
    let header = decode_json("header", h)?;
    let alg = header.get("alg").and_then(Value::as_str).unwrap_or_default();
    if alg != "ES256" {
        return Err(EarError::Algorithm(alg.to_owned()));
    }
    let sig = B64URL.decode(s).map_err(|_| EarError::BadPart { part: "signature" })?;
    let signed = &token.trim().as_bytes()[..h.len() + 1 + p.len()];
    let mut candidates: Vec<Vec<u8>> = keys.jwks.iter().filter_map(jwk_point).collect();
    if keys.insecure_header_jwk {
        candidates.extend(header.get("jwk").and_then(jwk_point));
    }
    let ok = candidates.iter().any(|point| {
        signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point).verify(signed, &sig).is_ok()
    });
    if !ok {
        return Err(EarError::Signature);
    }
    let claims = decode_json("payload", p)?;
    check_token_times(&claims, now)?;
    Ok(claims)
}

/// The time checks of a token's claims: `exp` passed, or `iat` more than a minute ahead (the
/// clock skew allowed between replicas).
fn check_token_times(claims: &Value, now: u64) -> Result<(), EarError> {
    if let Some(exp) = claims.get("exp").and_then(Value::as_u64)
        && now >= exp
    {
        return Err(EarError::Expired { exp, now });
    }
    if let Some(iat) = claims.get("iat").and_then(Value::as_u64)
        && iat > now.saturating_add(60)
    {
        return Err(EarError::NotYetValid { iat, now });
    }
    Ok(())
}

/// Tokens whose signature has been verified (or that this process signed itself), keyed by the
/// SHA-256 of the exact token text, so that a client presenting the same Bearer token again costs
/// a hash and a lookup instead of an ECDSA verification. The time checks ([`verify_jws`]'s `exp`
/// and `iat`) run on every use; an entry is only ever the result of a successful verification
/// under the same [`TrustedKeys`] (one cache per key set). Bounded: when full, expired entries
/// are dropped, then everything.
#[derive(Debug)]
pub struct VerifiedTokens {
    entries: std::sync::Mutex<std::collections::HashMap<[u8; 32], std::sync::Arc<VerifiedToken>>>,
    capacity: usize,
}

/// A token's claims after verification, with their policy-engine form made on first use (the
/// resource policy evaluates the same claims on every request the token is used for).
#[derive(Debug)]
pub struct VerifiedToken {
    claims: Value,
    input: std::sync::OnceLock<cloister_policy::PolicyInput>,
    /// SHA-256 of the token these claims were verified from.
    id: Option<[u8; 32]>,
}

impl VerifiedToken {
    /// Claims given directly (the admin decision-debugging endpoint), not from a token.
    pub fn from_claims(claims: Value) -> Self {
        Self { claims, input: std::sync::OnceLock::new(), id: None }
    }

    fn from_token(claims: Value, id: [u8; 32]) -> Self {
        Self { claims, input: std::sync::OnceLock::new(), id: Some(id) }
    }

    /// SHA-256 of the token the claims come from (`None` for claims given directly): a name
    /// for exactly these claims, e.g. to remember policy decisions about them.
    pub fn id(&self) -> Option<&[u8; 32]> {
        self.id.as_ref()
    }

    /// The claims.
    pub fn claims(&self) -> &Value {
        &self.claims
    }

    /// The claims as a policy input, converted once.
    pub fn policy_input(&self) -> &cloister_policy::PolicyInput {
        self.input.get_or_init(|| cloister_policy::PolicyInput::new(&self.claims))
    }
}

impl PartialEq for VerifiedToken {
    fn eq(&self, other: &Self) -> bool {
        self.claims == other.claims
    }
}

impl VerifiedTokens {
    /// A cache of at most `capacity` tokens.
    pub fn new(capacity: usize) -> Self {
        Self { entries: std::sync::Mutex::default(), capacity }
    }

    fn key(token: &str) -> [u8; 32] {
        let d = ring::digest::digest(&ring::digest::SHA256, token.trim().as_bytes());
        let mut k = [0u8; 32];
        k.copy_from_slice(d.as_ref());
        k
    }

    fn insert(&self, key: [u8; 32], token: std::sync::Arc<VerifiedToken>, now: u64) {
        let mut map = self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= self.capacity {
            map.retain(|_, c| check_token_times(&c.claims, now).is_ok());
            if map.len() >= self.capacity {
                map.clear();
            }
        }
        map.insert(key, token);
    }

    /// Records a token this process has just signed with one of the trusted keys (its claims are
    /// read from its own payload, exactly as [`verify_jws`] would return them).
    pub fn remember_signed(&self, token: &str, now: u64) {
        let claims = token
            .trim()
            .split('.')
            .nth(1)
            .and_then(|p| B64URL.decode(p).ok())
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
        if let Some(claims) = claims
            && self.capacity > 0
        {
            let key = Self::key(token);
            self.insert(key, std::sync::Arc::new(VerifiedToken::from_token(claims, key)), now);
        }
    }

    /// [`verify_jws`], answered from the cache when this exact token was verified before.
    pub fn verify(&self, token: &str, keys: &TrustedKeys, now: u64) -> Result<std::sync::Arc<VerifiedToken>, EarError> {
        let key = Self::key(token);
        let hit = self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&key).cloned();
        if let Some(t) = hit {
            check_token_times(&t.claims, now)?;
            return Ok(t);
        }
        let t = std::sync::Arc::new(VerifiedToken::from_token(verify_jws(token, keys, now)?, key));
        if self.capacity > 0 {
            self.insert(key, t.clone(), now);
        }
        Ok(t)
    }
}

/// Verifies a token and reads it as an EAR.
pub fn verify_ear(token: &str, keys: &TrustedKeys, now: u64) -> Result<Ear, EarError> {
    Ear::from_claims(&verify_jws(token, keys, now)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Ear {
        let mut tv = TrustVector::default();
        tv.set("hardware", 2);
        tv.set("executables", 3);
        tv.set("configuration", 2);
        Ear::new(
            1_700_000_000,
            300,
            Submod {
                status: tv.status(),
                trust_vector: tv,
                policy_id: "default".into(),
                annotated_evidence: json!({"snp": {"measurement": "abc"}, "report_data": "AA=="}),
            },
        )
    }

    #[test]
    fn tiers() {
        assert_eq!(Status::of_claim(0), Status::None);
        assert_eq!(Status::of_claim(-1), Status::None);
        assert_eq!(Status::of_claim(2), Status::Affirming);
        assert_eq!(Status::of_claim(-32), Status::Affirming);
        assert_eq!(Status::of_claim(33), Status::Warning);
        assert_eq!(Status::of_claim(-96), Status::Warning);
        assert_eq!(Status::of_claim(96), Status::Contraindicated);
        assert_eq!(Status::of_claim(-97), Status::Contraindicated);
        assert_eq!(TrustVector::default().status(), Status::None);
        let mut tv = TrustVector::default();
        tv.set("hardware", 2);
        assert_eq!(tv.status(), Status::Affirming);
        tv.set("executables", 33);
        assert_eq!(tv.status(), Status::Warning);
        tv.set("configuration", 99);
        assert_eq!(tv.status(), Status::Contraindicated);
    }

    #[test]
    fn sign_verify_round_trip_and_shape() {
        let (signer, pkcs8) = EarSigner::generate().unwrap();
        let ear = sample();
        let token = signer.sign(&ear).unwrap();
        let keys = TrustedKeys { jwks: vec![signer.public_jwk().clone()], insecure_header_jwk: false };
        let back = verify_ear(&token, &keys, 1_700_000_100).unwrap();
        assert_eq!(back, ear);
        let claims = verify_jws(&token, &keys, 1_700_000_100).unwrap();
        assert_eq!(claims["submods"]["cpu0"]["ear.status"], "affirming");
        assert_eq!(claims["submods"]["cpu0"]["ear.trustworthiness-vector"]["executables"], 3);
        // The persisted key signs verifiably after a restart.
        let again = EarSigner::from_pkcs8(&pkcs8).unwrap();
        assert!(verify_ear(&again.sign(&ear).unwrap(), &keys, 1_700_000_100).is_ok());
    }

    #[test]
    fn rejections() {
        let (signer, _) = EarSigner::generate().unwrap();
        let (other, _) = EarSigner::generate().unwrap();
        let token = signer.sign(&sample()).unwrap();
        let trusted = TrustedKeys { jwks: vec![signer.public_jwk().clone()], insecure_header_jwk: false };
        let wrong = TrustedKeys { jwks: vec![other.public_jwk().clone()], insecure_header_jwk: false };
        assert_eq!(verify_ear(&token, &wrong, 1_700_000_100), Err(EarError::Signature));
        // The header key is trusted only when explicitly allowed.
        assert_eq!(verify_ear(&token, &TrustedKeys::default(), 1_700_000_100), Err(EarError::Signature));
        let insecure = TrustedKeys { jwks: vec![], insecure_header_jwk: true };
        assert!(verify_ear(&token, &insecure, 1_700_000_100).is_ok());
        assert_eq!(
            verify_ear(&token, &trusted, 1_700_000_300),
            Err(EarError::Expired { exp: 1_700_000_300, now: 1_700_000_300 })
        );
        assert!(matches!(verify_ear(&token, &trusted, 1_600_000_000), Err(EarError::NotYetValid { .. })));
        assert_eq!(verify_ear("a.b", &trusted, 0), Err(EarError::Malformed));
        // Any altered byte of the signed part breaks the signature.
        let mut bytes = token.clone().into_bytes();
        let i = bytes.iter().position(|b| *b == b'.').unwrap() + 5;
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).unwrap();
        assert!(verify_ear(&tampered, &trusted, 1_700_000_100).is_err());
        // alg "none" is refused.
        let none = format!("{}.{}.", B64URL.encode(r#"{"alg":"none"}"#), token.split('.').nth(1).unwrap());
        assert_eq!(verify_ear(&none, &insecure, 1_700_000_100), Err(EarError::Algorithm("none".into())));
    }

    #[test]
    fn accepts_draft04_spelling() {
        let v = json!({
            "eat_profile": PROFILE_DRAFT04,
            "iat": 10,
            "ear_verifier_id": {"developer": "d", "build": "b"},
            "submods": {"cpu0": {
                "ear_status": "warning",
                "ear_trustworthiness_vector": {"executables": 33, "hardware": 2},
                "ear_appraisal_policy_ids": ["p1", "p2"],
            }}
        });
        let ear = Ear::from_claims(&v).unwrap();
        let s = &ear.submods["cpu0"];
        assert_eq!(s.status, Status::Warning);
        assert_eq!(s.trust_vector.get("executables"), Some(33));
        assert_eq!(s.policy_id, "p1");
        assert_eq!(ear.verifier_build, "b");
    }

    /// RFC 7515 Appendix A.3: the published ES256 example verifies with its published key.
    #[test]
    fn rfc7515_es256_example() {
        let jwk = json!({"kty": "EC", "crv": "P-256",
            "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
            "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"});
        let token = concat!(
            "eyJhbGciOiJFUzI1NiJ9",
            ".",
            "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ",
            ".",
            "DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q"
        );
        let keys = TrustedKeys { jwks: vec![jwk], insecure_header_jwk: false };
        let claims = verify_jws(token, &keys, 1_300_000_000).unwrap();
        assert_eq!(claims["iss"], "joe");
        assert_eq!(
            verify_jws(token, &keys, 1_300_819_380),
            Err(EarError::Expired { exp: 1_300_819_380, now: 1_300_819_380 })
        );
    }

    #[test]
    fn verified_tokens_cache_only_good_tokens_and_recheck_time() {
        let (signer, _) = EarSigner::generate().unwrap();
        let keys = TrustedKeys { jwks: vec![signer.public_jwk().clone()], insecure_header_jwk: false };
        let token = signer.sign(&sample()).unwrap();
        let cache = VerifiedTokens::new(2);
        let now = 1_700_000_100;
        let first = cache.verify(&token, &keys, now).unwrap();
        assert_eq!(*first.claims(), verify_jws(&token, &keys, now).unwrap());
        // Cached: the same claims, the time still checked on every use.
        assert_eq!(*cache.verify(&token, &keys, now).unwrap(), *first);
        assert!(matches!(cache.verify(&token, &keys, 1_700_000_300), Err(EarError::Expired { .. })));
        assert!(matches!(cache.verify(&token, &keys, 1_600_000_000), Err(EarError::NotYetValid { .. })));
        // A forged signature is refused every time (never cached).
        let mut forged = token.clone();
        forged.pop();
        forged.push(if token.ends_with('A') { 'B' } else { 'A' });
        for _ in 0..2 {
            assert!(cache.verify(&forged, &keys, now).is_err());
        }
        // A token by another key is refused even when the cache is warm.
        let (other, _) = EarSigner::generate().unwrap();
        let foreign = other.sign(&sample()).unwrap();
        assert_eq!(cache.verify(&foreign, &keys, now), Err(EarError::Signature));
        // A token signed here is remembered with the claims verify_jws would give.
        let own = signer.sign(&sample()).unwrap();
        cache.remember_signed(&own, now);
        assert_eq!(*cache.verify(&own, &keys, now).unwrap().claims(), verify_jws(&own, &keys, now).unwrap());
        // Bounded.
        for _ in 0..5 {
            cache.remember_signed(&signer.sign(&sample()).unwrap(), now);
        }
        assert!(cache.entries.lock().unwrap().len() <= 2);
    }
}
