//! The one error type of this crate.
//!
//! Messages name what was wrong and where (annotation, JWE member, provider, key description) but
//! never carry key material, private options or decrypted bytes.

use std::sync::Arc;

/// Why an encrypted layer could not be parsed, its key unwrapped, or its content verified.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum OcicryptError {
    /// A layer annotation is not what ocicrypt writes (bad base64 or JSON).
    #[error("annotation {annotation}: {reason}")]
    Annotation {
        /// The annotation key.
        annotation: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An encrypted layer has no `org.opencontainers.image.enc.pubopts` annotation.
    #[error("encrypted layer has no org.opencontainers.image.enc.pubopts annotation (no HMAC to verify against)")]
    MissingPublicOptions,
    /// The public options name a layer cipher other than `AES_256_CTR_HMAC_SHA256`.
    #[error("unsupported layer cipher {0:?} (only AES_256_CTR_HMAC_SHA256 is supported)")]
    UnsupportedCipher(String),
    /// The public or private options JSON is malformed.
    #[error("layer cipher options: {0}")]
    Options(String),
    /// A JWE is malformed or uses something outside the ocicrypt profile.
    #[error("JWE: {0}")]
    Jwe(String),
    /// A private or public key could not be parsed.
    #[error("key: {0}")]
    Key(String),
    /// A key provider failed, or returned something that is not the protocol's JSON.
    #[error("key provider {provider}: {reason}")]
    KeyProvider {
        /// The provider's configured name.
        provider: String,
        /// What went wrong.
        reason: String,
    },
    /// A key provider's transport (`grpc`, `ttrpc`, …) is not implemented by this crate.
    #[error("key provider {provider}: transport {transport:?} is not supported (only \"cmd\")")]
    UnsupportedTransport {
        /// The provider's configured name.
        provider: String,
        /// The transport named in the configuration.
        transport: String,
    },
    /// The key provider configuration file is malformed.
    #[error("key provider configuration: {0}")]
    Config(String),
    /// A key-provider protocol message is malformed.
    #[error("key provider protocol: {0}")]
    Protocol(String),
    /// An `attestation-agent` annotation packet is malformed or unsupported.
    #[error("attestation-agent annotation packet: {0}")]
    Packet(String),
    /// A key id (`kid`) is not a KBS resource URI of the accepted forms.
    #[error("key id {0:?} is not a KBS resource (kbs:///repo/type/tag)")]
    BadKeyId(String),
    /// The key-encryption key could not be fetched.
    #[error("fetching the key-encryption key {uri}: {reason}")]
    Kek {
        /// The resource URI.
        uri: String,
        /// Why.
        reason: String,
    },
    /// The layer is encrypted only to recipients for which no key or provider is configured.
    #[error("no key configured for any recipient of the layer (recipients: {recipients}; configured: {configured})")]
    NoKeyForRecipients {
        /// The key-wrapping schemes present on the layer (e.g. `jwe (1)`, `provider.attestation-agent (1)`).
        recipients: String,
        /// What the decrypt configuration offers.
        configured: String,
    },
    /// Keys or providers matched recipients, but none could unwrap the layer key.
    #[error("no configured key could unwrap the layer key; tried: {}", .attempts.join("; "))]
    UnwrapFailed {
        /// One line per attempt: which key or provider, which recipient, and why it failed.
        attempts: Vec<String>,
    },
    /// The HMAC over the ciphertext does not match the public options (tampered, truncated, or
    /// the wrong key).
    #[error("layer HMAC mismatch: the ciphertext was modified, truncated, or decrypted with the wrong key")]
    HmacMismatch,
    /// The ciphertext length differs from the descriptor's size.
    #[error("layer ciphertext is {actual} bytes, the descriptor says {expected}")]
    SizeMismatch {
        /// From the descriptor.
        expected: u64,
        /// Read.
        actual: u64,
    },
    /// The SHA-256 of the decrypted layer differs from the private options' `digest`.
    #[error("decrypted layer digest {actual} does not match the private options' digest {expected}")]
    DigestMismatch {
        /// From the private options.
        expected: String,
        /// Computed over the plaintext.
        actual: String,
    },
    /// Randomness or a primitive failed.
    #[error("crypto failure: {0}")]
    Crypto(&'static str),
    /// Reading or writing a stream or file failed.
    #[error("I/O: {0}")]
    Io(#[source] Arc<std::io::Error>),
}

impl From<std::io::Error> for OcicryptError {
    fn from(e: std::io::Error) -> Self {
        OcicryptError::Io(Arc::new(e))
    }
}

impl OcicryptError {
    /// Wraps the error into an `io::Error` of kind `InvalidData` (or the original I/O error), so
    /// `Read` implementations can return it and callers can `downcast` it back.
    pub fn into_io(self) -> std::io::Error {
        match self {
            OcicryptError::Io(e) => std::io::Error::new(e.kind(), OcicryptError::Io(e)),
            other => std::io::Error::new(std::io::ErrorKind::InvalidData, other),
        }
    }

    /// If `e` wraps an [`OcicryptError`] (as [`crate::LayerDecryptReader`] returns them), that error.
    pub fn from_io(e: &std::io::Error) -> Option<&OcicryptError> {
        e.get_ref().and_then(|inner| inner.downcast_ref::<OcicryptError>())
    }
}
