//! Why a pull failed. Every variant names what was wrong and where; none carries secrets.

use std::path::PathBuf;

use crate::digest::Digest;

/// Why an image could not be pulled, verified, decrypted or unpacked.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The image reference does not parse.
    #[error("image reference {reference:?}: {why}")]
    BadReference {
        /// As given.
        reference: String,
        /// What is wrong.
        why: String,
    },
    /// A digest string is not `sha256:<64 lowercase hex>`.
    #[error("digest {0:?} is not sha256:<64 lowercase hex>")]
    BadDigest(String),
    /// A manifest, index or config is malformed or unsupported.
    #[error("manifest: {0}")]
    BadManifest(String),
    /// An index has no entry for this platform.
    #[error("the image index has no manifest for {want} (it has: {have:?})")]
    NoPlatform {
        /// Wanted os/arch.
        want: String,
        /// Offered.
        have: Vec<String>,
    },
    /// The registry could not be reached, or the connection broke and retries ran out.
    #[error("registry {url}: {why}")]
    Transport {
        /// The URL requested.
        url: String,
        /// What happened.
        why: String,
    },
    /// The registry stopped sending data for longer than the read timeout.
    #[error("registry {url}: no data for {secs} s (timed out)")]
    Timeout {
        /// The URL requested.
        url: String,
        /// The timeout.
        secs: u64,
    },
    /// The registry answered with an error status.
    #[error("registry {url}: HTTP {status}{}", if .detail.is_empty() { String::new() } else { format!(": {}", .detail) })]
    Status {
        /// The URL requested.
        url: String,
        /// HTTP status.
        status: u16,
        /// The registry's error text, shortened.
        detail: String,
    },
    /// The registry demanded credentials we do not have, or refused ours.
    #[error("registry {registry}: authentication failed: {why}")]
    Auth {
        /// host[:port].
        registry: String,
        /// What happened.
        why: String,
    },
    /// Content does not match its digest.
    #[error("{what}: digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// Which blob.
        what: String,
        /// Declared.
        expected: Digest,
        /// Computed.
        actual: Digest,
    },
    /// Content is not the size its descriptor declares.
    #[error("{what}: size mismatch: the descriptor declares {declared} bytes, the registry sent {actual}{}", if *.more { " or more" } else { "" })]
    SizeMismatch {
        /// Which blob.
        what: String,
        /// Declared.
        declared: u64,
        /// Received.
        actual: u64,
        /// At least `actual` (the stream was cut off when it passed the declared size).
        more: bool,
    },
    /// The signature policy refused the image (or could not be evaluated: fail closed).
    #[error("signature policy: {0}")]
    Policy(String),
    /// A layer could not be decrypted.
    // The cause is in the message (not chained), so `{:#}` does not print it twice.
    #[error("layer {layer}: decryption: {cause}")]
    Decrypt {
        /// Layer digest.
        layer: Digest,
        /// Why.
        cause: cloister_ocicrypt::OcicryptError,
    },
    /// An encrypted layer was found and no decryption key is configured.
    #[error("layer {0} is encrypted and no decryption key or key provider is configured")]
    EncryptedNoKey(Digest),
    /// A layer's decompression failed.
    #[error("layer {layer}: {compression} decompression failed: {why}")]
    Decompress {
        /// Layer digest.
        layer: Digest,
        /// gzip / zstd.
        compression: &'static str,
        /// Why.
        why: String,
    },
    /// A tar entry is unsafe or malformed.
    #[error("layer {layer}: tar entry {entry:?}: {why}")]
    UnsafeEntry {
        /// Layer digest.
        layer: Digest,
        /// Entry path as in the archive.
        entry: String,
        /// What is wrong.
        why: String,
    },
    /// The tar stream is malformed.
    #[error("layer {layer}: malformed tar: {why}")]
    BadTar {
        /// Layer digest.
        layer: Digest,
        /// What is wrong.
        why: String,
    },
    /// The config's diff_ids don't line up with the manifest's layers.
    #[error("the image config lists {diff_ids} diff_ids for {layers} layers")]
    LayerCount {
        /// diff_ids.
        diff_ids: usize,
        /// layers.
        layers: usize,
    },
    /// A secret (credentials, policy, keys) could not be fetched.
    #[error("{what}: {why}")]
    Resource {
        /// What was being fetched.
        what: String,
        /// Why it failed.
        why: String,
    },
    /// Configuration error (bad CA file, bad auth.json…).
    #[error("configuration: {0}")]
    Config(String),
    /// Local filesystem error.
    #[error("{}: {error}", .path.display())]
    Io {
        /// Where.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The destination exists and is not an empty directory.
    #[error("{}: exists and is not an empty directory (refusing to overwrite)", .0.display())]
    DestinationExists(PathBuf),
}

impl ImageError {
    /// An I/O error at `path`.
    pub fn io(path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        Self::Io { path: path.into(), error }
    }
}
