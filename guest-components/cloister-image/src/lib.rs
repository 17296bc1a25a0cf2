//! Guest-side OCI image pull for Cloister: the guest, not the host, fetches its container images,
//! checks them and unpacks them.
//!
//! * [`registry`]: the OCI distribution API over HTTPS (webpki roots + extra CAs) or, for hosts
//!   named insecure, plain HTTP; anonymous, Basic and Bearer-token auth; retries and resumable
//!   blob downloads.
//! * [`manifest`]: OCI and Docker manifests, indexes (platform selection) and configs.
//! * [`signature`]: the containers-policy.json signature policy, checked on the top-level
//!   manifest digest before any layer is fetched (cosign signatures read from the registry,
//!   simple signing from lookaside stores).
//! * [`pipeline`]: per layer, one streaming pass: download → blob digest → ocicrypt decryption
//!   (AES-256-CTR + HMAC-SHA256, key unwrapped by JWE or a key provider such as the KBS) →
//!   gzip/zstd → diff_id → [`unpack`] (safe, overlay-format layer directory).
//! * [`merge`]: layer directories flattened into a rootfs with overlayfs semantics.
//! * [`pull`]: the orchestration, with bounded concurrency and a content-addressed layer store.
//!
//! **What it trusts:** nothing the registry or the host sends until it matches a digest that
//! chains up to the top-level manifest, and that manifest only as far as the signature policy
//! (when configured) accepts it. The policy, credentials and decryption keys come from the caller
//! (in a confidential guest: from the key broker after attestation). Memory stays bounded: no
//! layer is ever held whole in memory.
#![forbid(unsafe_code)]

pub mod digest;
pub mod error;
pub mod layout;
pub mod manifest;
pub mod merge;
pub mod overlay;
pub mod pipeline;
pub mod pull;
pub mod reference;
pub mod registry;
pub mod secrets;
pub mod signature;
pub mod unpack;

pub use digest::Digest;
pub use error::ImageError;
pub use pull::{PullOptions, PulledImage, Puller};
pub use reference::Reference;
pub use registry::{Credentials, Registry, RegistryOptions};
