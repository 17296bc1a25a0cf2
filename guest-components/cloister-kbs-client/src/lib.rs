//! The guest side of the CoCo KBS protocol 0.4.0: an [`Attester`] produces evidence whose report
//! data binds the KBS nonce and the guest's TEE key; [`KbsClient`] runs the RCAR handshake
//! (`/auth` → `/attest`), caches the token until it expires, re-attests on 401 and unwraps the
//! JWE of each resource with its private TEE key.
//!
//! **What it trusts:** the KBS only through TLS — the system roots, a configured CA, or a pinned
//! certificate (SHA-256 of the KBS certificate, as initdata carries it). Everything the KBS
//! returns is parsed as untrusted input; a secret is only ever returned to the caller, never
//! logged or written anywhere.
// `unsafe` is allowed only in `sys` (the guest-device ioctls), each use with a SAFETY comment.
#![deny(unsafe_code)]

pub mod admin;
pub mod attester;
mod client;
pub mod seguest;
pub mod sevguest;
mod sys;
pub mod tdxguest;
mod tls;
mod transport;
pub mod tsm;

pub use admin::AdminClient;
pub use attester::{
    Attester, AttesterError, EmulatedPortAttester, EmulatedSnpAttester, EmulatedSocketAttester, EmulatedTdxAttester,
    SampleAttester, detect as detect_attester,
};
pub use client::{ClientError, ClientOptions, KbsClient, TeeKeyKind, TrustMode};
pub use seguest::{EmulatedSocketUv, SeAttester};
pub use sevguest::SevGuestAttester;
pub use tdxguest::TdxGuestAttester;
pub use tsm::TsmAttester;
