//! Errors. Every way the policy can fail to accept an image is an error: the caller never gets a
//! "maybe". Messages name the policy scope, the requirement and, for signatures, why each one was
//! refused (no key material or secrets are ever part of a message).

use std::fmt;

use crate::identity::ReferenceError;

/// Why the image may not be used (or why the policy could not be evaluated: both deny).
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The policy document is not valid JSON or does not have the containers-policy.json shape.
    #[error("policy: cannot parse: {0}")]
    Parse(String),
    /// The policy parsed but is not acceptable (e.g. an empty requirement list, two key sources).
    #[error("policy: invalid: {0}")]
    Invalid(String),
    /// The image reference given by the caller is not a valid docker reference.
    #[error(transparent)]
    InvalidReference(#[from] ReferenceError),
    /// The manifest digest given by the caller is not `sha256:<64 lowercase hex>`.
    #[error("manifest digest {0:?} is not of the form sha256:<64 lowercase hex digits>")]
    InvalidManifestDigest(String),
    /// The policy scope that applies to the image has no requirements (containers semantics: an
    /// error, never "accept").
    #[error("policy scope {scope} has no requirements")]
    EmptyRequirements {
        /// The scope that matched.
        scope: MatchedScope,
    },
    /// A requirement did not accept the image.
    #[error("image {image} rejected by policy scope {scope}, requirement #{index} ({requirement}): {reason}")]
    Denied {
        /// The image, as a docker reference.
        image: String,
        /// The scope whose requirements applied.
        scope: MatchedScope,
        /// Position of the refusing requirement in the scope's list (0-based).
        index: usize,
        /// The requirement type (`reject`, `signedBy`, `sigstoreSigned`).
        requirement: &'static str,
        /// Why (boxed to keep the error small).
        #[source]
        reason: Box<DenyReason>,
    },
}

/// Why one requirement refused the image.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DenyReason {
    /// The requirement is `{"type": "reject"}`.
    #[error("the policy rejects these images")]
    Reject,
    /// A signature was required and the signature source returned none.
    #[error("a signature was required, but no signature exists")]
    NoSignatures,
    /// Signatures exist and none was accepted; the reason for each.
    #[error("none of the {} signature(s) were accepted: {}", .0.len(), Rejections(.0))]
    NoneAccepted(Vec<SignatureRejection>),
    /// The trusted key could not be obtained (file missing, KBS unreachable, …).
    #[error("trusted key {key} could not be fetched: {reason}")]
    KeyUnavailable {
        /// Where the key was to come from (path, `kbs://` URI, or `keyData`).
        key: String,
        /// Why.
        reason: String,
    },
    /// The trusted key was obtained but is not usable (not parseable, wrong type, no usable keys).
    #[error("trusted key {key} is unusable: {reason}")]
    InvalidKey {
        /// Where the key came from.
        key: String,
        /// Why.
        reason: String,
    },
    /// The signature source failed (store unreadable, registry error, too many signatures).
    #[error("{kind} signatures could not be read: {reason}")]
    SignatureSource {
        /// `simple signing` or `cosign`.
        kind: &'static str,
        /// Why.
        reason: String,
    },
    /// The requirement uses a feature this guest implementation does not have (Fulcio, Rekor,
    /// X.509 key types): fail closed.
    #[error("unsupported in the guest: {0}")]
    Unsupported(String),
}

/// Why one signature was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureRejection {
    /// 1-based position in the list the signature source returned.
    pub index: usize,
    /// Why.
    pub reason: String,
}

impl fmt::Display for SignatureRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "signature {}: {}", self.index, self.reason)
    }
}

struct Rejections<'a>(&'a [SignatureRejection]);

impl fmt::Display for Rejections<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// Which part of the policy applied to the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MatchedScope {
    /// A scope under `transports.docker` (the key as written in the policy).
    Docker(String),
    /// The transport-wide default `transports.docker[""]`.
    DockerDefault,
    /// The top-level `default`.
    Default,
}

impl fmt::Display for MatchedScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Docker(s) => write!(f, "transports.docker[{s:?}]"),
            Self::DockerDefault => f.write_str("transports.docker[\"\"]"),
            Self::Default => f.write_str("default"),
        }
    }
}

/// An error from a caller-supplied source ([`crate::KeySource`], [`crate::SignatureSource`],
/// [`crate::LookasideFetcher`]). Becomes a deny with the message attached.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SourceError {
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl SourceError {
    /// An error with a message only.
    pub fn new(message: impl Into<String>) -> Self {
        Self { message: message.into(), source: None }
    }

    /// An error with a message and an underlying cause (the cause's text is appended to the message).
    pub fn with_source(message: impl Into<String>, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        let message = format!("{}: {source}", message.into());
        Self { message, source: Some(Box::new(source)) }
    }

    /// The message (including the cause, if any).
    pub fn message(&self) -> &str {
        &self.message
    }
}
