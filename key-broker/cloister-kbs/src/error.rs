//! Errors, each with an HTTP status and a stable `type` name for the `ErrorInformation` body.
//!
//! Status policy (see `docs/kbs.md`): 400 malformed request, 401 unauthenticated (no, unknown,
//! expired or unverifiable session/token/evidence — CoCo clients re-attest on 401), 403 policy
//! denial (re-attesting would not help, so it must not be 401), 404 unknown resource or path,
//! 413 body too large, 429 rate limited, 503 session table full, 500 server faults.

use axum::http::StatusCode;
use cloister_kbs_protocol::{ERROR_TYPE_PREFIX, ErrorInformation};

/// Configuration problems (start-up only).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not TOML or an unknown key.
    #[error("configuration: {0}")]
    Parse(String),
    /// A value out of range or unsupported.
    #[error("configuration: {0}")]
    Invalid(String),
    /// A file could not be read.
    #[error("cannot read {path}: {error}")]
    Io {
        /// Path.
        path: String,
        /// OS error.
        error: String,
    },
}

/// Storage failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An I/O error.
    #[error("storage I/O on {path}: {error}")]
    Io {
        /// Path.
        path: String,
        /// OS error.
        error: String,
    },
    /// A key that cannot be stored (too long or empty).
    #[error("storage key {0:?} is not valid")]
    BadKey(String),
    /// The store cannot be reached (database down, connection lost, timeout). Nothing was
    /// changed by the failed operation that is not also reported as done.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The store is misconfigured (bad URL, bad key, schema newer than this binary).
    #[error("storage configuration: {0}")]
    Config(String),
    /// Stored data could not be decoded.
    #[error("stored {what} is corrupt: {detail}")]
    Corrupt {
        /// Which record.
        what: String,
        /// Why.
        detail: String,
    },
}

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum KbsError {
    /// The body is not the expected JSON.
    #[error("malformed request body: {0}")]
    Serde(String),
    /// Protocol version other than 0.4.0.
    #[error("KBS client protocol version mismatch: {0}")]
    ProtocolVersion(String),
    /// Path shape is wrong.
    #[error("invalid request path: {0}")]
    InvalidRequestPath(String),
    /// The first path segment names no plugin.
    #[error("no plugin named {0:?} (only \"resource\")")]
    PluginNotFound(String),
    /// No session cookie and no Bearer token.
    #[error("no attestation token: send the kbs-session-id cookie of an attested session or Authorization: Bearer")]
    TokenNotFound,
    /// Unknown session id.
    #[error("unknown session {0}: run /auth again")]
    SessionNotFound(String),
    /// Session past its lifetime.
    #[error("session expired {0} s ago: run /auth again")]
    SessionExpired(u64),
    /// The session has not been attested yet.
    #[error("session is not attested yet: POST /kbs/v0/attest first")]
    SessionNotAttested,
    /// The attestation's nonce is not the session's.
    #[error("runtime-data nonce does not match the challenge of this session (replayed or foreign nonce)")]
    NonceMismatch,
    /// Evidence failed verification or binding.
    #[error("attestation failed: {0}")]
    Attestation(String),
    /// A token failed verification.
    #[error("token verification failed: {0}")]
    TokenVerifier(String),
    /// The token carries no usable TEE public key.
    #[error("the token carries no usable tee-pubkey: {0}")]
    TeeKey(String),
    /// The resource policy said no.
    #[error("access denied by policy: {0}")]
    PolicyDeny(String),
    /// The policy could not be evaluated.
    #[error("policy engine: {0}")]
    PolicyEngine(String),
    /// The resource does not exist.
    #[error("resource {0} not found")]
    ResourceNotFound(String),
    /// Reference value not found or expired.
    #[error("reference value {0:?} not found or expired")]
    ReferenceValueNotFound(String),
    /// Admin authentication failed.
    #[error("admin authentication failed: {0}")]
    AdminAuth(String),
    /// Admin token valid but not allowed here.
    #[error("admin access denied: {0}")]
    AdminForbidden(String),
    /// A policy or reference value upload is invalid.
    #[error("invalid upload: {0}")]
    InvalidUpload(String),
    /// JWE creation failed.
    #[error("cannot encrypt to the TEE key: {0}")]
    Jwe(String),
    /// Body larger than the configured limit.
    #[error("request body exceeds the {0}-byte limit")]
    PayloadTooLarge(usize),
    /// Too many `/auth` requests from one address.
    #[error("too many /auth requests from this address; retry later")]
    RateLimited,
    /// Session table full.
    #[error("too many open sessions; retry later")]
    TooManySessions,
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Anything else on the server side.
    #[error("internal error: {0}")]
    Internal(String),
}

impl KbsError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        use KbsError::*;
        match self {
            Serde(_) | ProtocolVersion(_) | InvalidUpload(_) | Jwe(_) | TeeKey(_) => StatusCode::BAD_REQUEST,
            InvalidRequestPath(_) | PluginNotFound(_) | ResourceNotFound(_) | ReferenceValueNotFound(_) => {
                StatusCode::NOT_FOUND
            }
            TokenNotFound | SessionNotFound(_) | SessionExpired(_) | SessionNotAttested | NonceMismatch
            | Attestation(_) | TokenVerifier(_) | AdminAuth(_) => StatusCode::UNAUTHORIZED,
            PolicyDeny(_) | AdminForbidden(_) => StatusCode::FORBIDDEN,
            PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            RateLimited => StatusCode::TOO_MANY_REQUESTS,
            TooManySessions | Store(StoreError::Unavailable(_)) => StatusCode::SERVICE_UNAVAILABLE,
            PolicyEngine(_) | Store(_) | Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The variant name used in the `type` URL (trustee's names where it has one).
    pub fn kind(&self) -> &'static str {
        use KbsError::*;
        match self {
            Serde(_) => "SerdeError",
            ProtocolVersion(_) => "RcarAuthFailed",
            InvalidRequestPath(_) => "InvalidRequestPath",
            PluginNotFound(_) => "PluginNotFound",
            TokenNotFound => "TokenNotFound",
            SessionNotFound(_) => "SessionNotFound",
            SessionExpired(_) => "SessionExpired",
            SessionNotAttested => "SessionNotAttested",
            NonceMismatch => "RcarAttestFailed",
            Attestation(_) => "AttestationError",
            TokenVerifier(_) => "TokenVerifierError",
            TeeKey(_) => "TeePubKeyError",
            PolicyDeny(_) => "PolicyDeny",
            PolicyEngine(_) => "PolicyEngine",
            ResourceNotFound(_) => "ResourceNotFound",
            ReferenceValueNotFound(_) => "ReferenceValueNotFound",
            AdminAuth(_) => "AdminAuth",
            AdminForbidden(_) => "AdminAuth",
            InvalidUpload(_) => "InvalidUpload",
            Jwe(_) => "JweError",
            PayloadTooLarge(_) => "PayloadTooLarge",
            RateLimited => "RateLimited",
            TooManySessions => "TooManySessions",
            Store(StoreError::Unavailable(_)) => "StorageUnavailable",
            Store(_) => "StorageError",
            Internal(_) => "InternalError",
        }
    }

    /// The wire body.
    pub fn info(&self) -> ErrorInformation {
        ErrorInformation { error_type: format!("{ERROR_TYPE_PREFIX}{}", self.kind()), detail: self.to_string() }
    }
}
