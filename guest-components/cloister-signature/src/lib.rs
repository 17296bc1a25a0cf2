//! Image signature policy for the guest: decides, before any layer is fetched, whether an image
//! may be used, by evaluating a containers-policy.json (`docker` transport) against the image's
//! signatures.
//!
//! * Policy: `default` and `transports.docker` scopes, most specific scope first
//!   (`host/repo:tag`, `host/repo`, parent namespaces, `host`, `*.domain`, `transports.docker[""]`,
//!   `default`); every requirement of the chosen scope must accept. Requirements: `reject`,
//!   `insecureAcceptAnything`, `signedBy` (GPG keys) and `sigstoreSigned` (cosign public keys),
//!   with all `signedIdentity` rules. CoCo extension: a `keyPath` may be a `kbs:///repo/type/tag`
//!   resource fetched through the caller's [`KeySource`].
//! * Simple signing: OpenPGP signed messages (gpg / skopeo output) verified with rpgp, payload
//!   `atomic container signature`; signatures from a lookaside store configured by registries.d
//!   ([`LookasideSignatureSource`]).
//! * Cosign: ECDSA P-256 / SHA-256 over the exact payload, payload
//!   `cosign container image signature`; signatures supplied by the caller.
//!
//! What it trusts: the policy document, the key material it names (files, inline data, or
//! whatever the caller's [`KeySource`] returns for `kbs://` URIs, i.e. the attested key broker),
//! the registries.d configuration, and the caller's word that `manifest_digest` is the SHA-256 of
//! the manifest bytes it will actually use (and, for digest references, that they match the
//! requested digest). It does not trust signatures, their payloads, the signature stores or the
//! registry: every signature is verified cryptographically before its payload is parsed, and its
//! claims (manifest digest, identity) are then checked against the policy.
//!
//! It fails closed: an unparseable policy, a key that cannot be fetched or parsed, a signature
//! store that cannot be read, an unsupported feature (Fulcio, Rekor, X.509) or an unexpected
//! input is a [`PolicyError`], never an acceptance. Errors say which scope and requirement
//! refused, and why each signature was rejected.
//!
//! Identity rules follow containers/image, with one documented extension: cosign writes a
//! repository-only identity (`host/repo`), which containers/image never matches under the default
//! `matchRepoDigestOrExact`; here it matches an image referenced by digest (the digest itself is
//! checked against the signed manifest digest), while an image referenced only by tag still needs
//! `matchRepository` or `exactRepository` in the policy (and is refused with a hint saying so).
//! An [`ImageIdentity`] with both a tag and a digest is evaluated as `repo@digest`; policy scopes
//! are looked up for the digest form first, then the tag form.
//!
//! OpenPGP support: whatever rpgp verifies (tested here: RSA and Ed25519 keys from gpg, primary
//! keys and signing subkeys, armored and binary); uncompressed, ZIP and ZLIB messages. BZip2-compressed messages are refused (rpgp is built
//! without bzip2); gpg only produces them when asked to.
//!
//! Entry point: [`evaluate`] with a [`Policy`] from [`Policy::from_json`].
#![forbid(unsafe_code)]

pub mod cosign;
pub mod error;
mod evaluate;
pub mod identity;
pub mod lookaside;
pub mod payload;
pub mod policy;
pub mod simple;
mod source;

pub use error::{DenyReason, MatchedScope, PolicyError, SignatureRejection, SourceError};
pub use evaluate::{Acceptance, Decision, MAX_SIGNATURES, evaluate};
pub use identity::{DockerReference, ImageIdentity, ReferenceError, SignedIdentity};
pub use lookaside::{LookasideError, LookasideFetcher, LookasideSignatureSource, RegistriesD};
pub use policy::{GpgKeyType, KeySpec, Policy, Requirement, SignedBy, SigstoreSigned, SigstoreTrust};
pub use source::{BoxFuture, CosignSignature, FsKeySource, KeySource, MAX_KEY_SIZE, NoSignatures, SignatureSource};
